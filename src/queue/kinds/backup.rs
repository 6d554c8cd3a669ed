//! `backup`: a consistent online snapshot of the database to
//! `<data_dir>/backups/` ([`crate::backup::create`]), with progress per batch of
//! rows. Payload: `{}`. An attempt that stops leaves no file; the next attempt
//! starts over (a snapshot cannot resume).

use std::sync::Arc;

use futures::future::BoxFuture;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::backup::{self, BackupError, BackupOptions};
use crate::config::Settings;
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler, only_fields};

/// The `backup` kind.
pub struct Backup {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
}

impl JobHandler for Backup {
    fn kind(&self) -> &'static str {
        "backup"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        only_fields(payload, &[])
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        let options = BackupOptions::from_settings(&self.settings);
        let db = self.db.clone();
        Box::pin(async move {
            let (tx, mut rx) = watch::channel(None::<backup::Progress>);
            let cancel = ctx.cancelled().clone();
            let work = async move {
                let mut progress = move |p: backup::Progress| {
                    let _ = tx.send(Some(p));
                };
                backup::create(&db, &options, &mut progress, &cancel).await
            };
            tokio::pin!(work);
            let summary = loop {
                tokio::select! {
                    result = &mut work => break result,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break (&mut work).await;
                        }
                        let latest = rx.borrow_and_update().clone();
                        if let Some(p) = latest {
                            ctx.progress(p.processed, Some(p.total), Some(p.message)).await?;
                        }
                    }
                }
            };
            match summary {
                Ok(summary) => Ok(json!(summary)),
                Err(BackupError::Cancelled) => Err(JobError::Cancelled),
                Err(err) => Err(JobError::Failed(err.to_string())),
            }
        })
    }
}
