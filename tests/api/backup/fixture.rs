//! The fixture of the backup tests: a database with rows in every table, every
//! row read back through the entities, and archives read and altered by hand.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use castwork::backup::{self, BackupError, BackupOptions, Progress};
use castwork::config::Secret;
use castwork::db::entities::{
    item, item_tag, job, job_schedule_run, lease, outbox, refresh_token, revoked_session, user,
};
use castwork::explore::import::{ImportOptions, SAMPLE_CATALOG, import_reader};
use chrono::{Duration as Span, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, NotSet, QueryOrder, Set,
    Statement,
};
use tokio_util::sync::CancellationToken;

/// Items seeded from the embedded sample (its first lines).
pub const ITEMS: usize = 300;

pub fn options(dir: &Path, key: Option<&str>) -> BackupOptions {
    BackupOptions { dir: dir.join("backups"), key: key.map(Secret::new), keep: 0 }
}

pub fn no_progress() -> impl FnMut(Progress) + Send {
    |_| {}
}

pub async fn backup(db: &DatabaseConnection, options: &BackupOptions) -> backup::BackupSummary {
    backup::create(db, options, &mut no_progress(), &CancellationToken::new()).await.unwrap()
}

pub async fn restore(
    db: &DatabaseConnection,
    archive: &Path,
    key: Option<&str>,
) -> Result<backup::RestoreSummary, BackupError> {
    backup::restore(db, archive, key, &mut no_progress(), &CancellationToken::new()).await
}

/// The first `ITEMS` lines of the sample catalogue, plus a row in every other table.
pub async fn seed(db: &DatabaseConnection) {
    let mut lines = Vec::new();
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(SAMPLE_CATALOG));
    for line in reader.lines().take(ITEMS) {
        lines.extend_from_slice(line.unwrap().as_bytes());
        lines.push(b'\n');
    }
    let changes = castwork::explore::change::change_bus();
    let cursor = std::io::Cursor::new(lines);
    let summary = import_reader(
        db,
        &changes,
        cursor,
        &ImportOptions { batch_size: 128, ..ImportOptions::default() },
        &(),
    )
    .await
    .unwrap();
    assert_eq!(summary.inserted, ITEMS as u64);
    let first: item::Model =
        item::Entity::find().order_by_asc(item::Column::Id).one(db).await.unwrap().unwrap();
    let mut viewed: item::ActiveModel = first.into();
    viewed.views = Set(42);
    viewed.trend = Set(3.25);
    viewed.update(db).await.unwrap();

    let now = Utc::now();
    for (i, role) in ["admin", "viewer"].into_iter().enumerate() {
        let id = uuid::Uuid::new_v4().to_string();
        user::ActiveModel {
            id: Set(id.clone()),
            username: Set(format!("user{i}")),
            password_hash: Set("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
            role: Set(role.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
        refresh_token::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            user_id: Set(id),
            family_id: Set(format!("family-{i}")),
            token_hash: Set(format!("{i:064x}")),
            expires_at: Set(now + Span::days(14)),
            used_at: Set(None),
            revoked_at: Set((i == 1).then_some(now)),
            created_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
    }
    for sid in ["s1", "s2", "s3"] {
        let row = revoked_session::ActiveModel {
            id: NotSet,
            sid: Set(sid.to_owned()),
            expires_at: Set(now + Span::minutes(15)),
            revoked_at: Set(now),
        };
        row.insert(db).await.unwrap();
    }
    let job_id = uuid::Uuid::new_v4().to_string();
    job::ActiveModel {
        id: Set(job_id.clone()),
        kind: Set("backup".to_owned()),
        payload: Set(serde_json::json!({"note": "ünïcode \"quoted\"", "n": [1, 2.5, null]})),
        state: Set("succeeded".to_owned()),
        attempts: Set(1),
        max_attempts: Set(5),
        processed: Set(10),
        total: Set(None),
        message: Set(Some("done".to_owned())),
        // a JSON document `null` is not SQL NULL
        checkpoint: Set(Some(serde_json::Value::Null)),
        result: Set(None),
        last_error: Set(None),
        created_by: Set("user0".to_owned()),
        idempotency_key: Set(Some("k-1".to_owned())),
        cancel_requested: Set(true),
        locked_by: Set(Some("node-a".to_owned())),
        locked_until: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
        started_at: Set(Some(now)),
        finished_at: Set(Some(now)),
        run_after: Set(None),
    }
    .insert(db)
    .await
    .unwrap();
    job_schedule_run::ActiveModel {
        schedule: Set("nightly-backup".to_owned()),
        tick: Set(now),
        job_id: Set(job_id),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    lease::ActiveModel {
        name: Set("outbox-relay".to_owned()),
        holder: Set("node-a".to_owned()),
        expires_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
}

/// Every row of every table, as the entities read them.
#[derive(Debug, PartialEq)]
pub struct Rows {
    pub users: Vec<user::Model>,
    pub refresh_tokens: Vec<refresh_token::Model>,
    pub revoked_sessions: Vec<revoked_session::Model>,
    pub items: Vec<item::Model>,
    pub item_tags: Vec<item_tag::Model>,
    pub outbox: Vec<outbox::Model>,
    pub jobs: Vec<job::Model>,
    pub job_schedule_runs: Vec<job_schedule_run::Model>,
    pub leases: Vec<lease::Model>,
}

pub async fn rows(db: &DatabaseConnection) -> Rows {
    Rows {
        users: user::Entity::find().order_by_asc(user::Column::Id).all(db).await.unwrap(),
        refresh_tokens: refresh_token::Entity::find()
            .order_by_asc(refresh_token::Column::Id)
            .all(db)
            .await
            .unwrap(),
        revoked_sessions: revoked_session::Entity::find()
            .order_by_asc(revoked_session::Column::Id)
            .all(db)
            .await
            .unwrap(),
        items: item::Entity::find().order_by_asc(item::Column::Id).all(db).await.unwrap(),
        item_tags: item_tag::Entity::find()
            .order_by_asc(item_tag::Column::ItemId)
            .order_by_asc(item_tag::Column::Tag)
            .all(db)
            .await
            .unwrap(),
        outbox: outbox::Entity::find().order_by_asc(outbox::Column::Seq).all(db).await.unwrap(),
        jobs: job::Entity::find().order_by_asc(job::Column::Id).all(db).await.unwrap(),
        job_schedule_runs: job_schedule_run::Entity::find().all(db).await.unwrap(),
        leases: lease::Entity::find().all(db).await.unwrap(),
    }
}

/// `(table, rows, sha256)` from an unencrypted archive's manifest.
pub fn digests(archive: &Path) -> Vec<(String, u64, String)> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut first = tar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some("manifest.json"));
    let manifest: serde_json::Value = serde_json::from_reader(&mut first).unwrap();
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_owned();
            (name, t["rows"].as_u64().unwrap(), t["sha256"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Rewrites an unencrypted archive entry by entry: `change(path, bytes)` returns the new bytes.
pub fn rewrite(archive: &Path, mut change: impl FnMut(&str, Vec<u8>) -> Vec<u8>) -> PathBuf {
    let out = archive.with_extension("altered.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&out).unwrap());
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let bytes = change(&path, bytes);
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        builder.append_data(&mut header, &path, bytes.as_slice()).unwrap();
    }
    builder.finish().unwrap();
    out
}

pub fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

pub fn gzip(text: &str) -> Vec<u8> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    out.write_all(text.as_bytes()).unwrap();
    out.finish().unwrap()
}

/// Items whose title or abstract matches `word`, through the engine's full-text index.
pub async fn search_count(db: &DatabaseConnection, word: &str) -> i64 {
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => {
            format!("SELECT COUNT(*) FROM items WHERE search @@ plainto_tsquery('english', '{word}')")
        }
        _ => format!(
            "SELECT COUNT(*) FROM items_fts JOIN items ON items.rowid = items_fts.rowid WHERE items_fts MATCH '{word}'"
        ),
    };
    let row =
        db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    row.try_get_by_index(0).unwrap()
}

pub async fn assert_empty(db: &DatabaseConnection) {
    let rows = rows(db).await;
    assert!(rows.users.is_empty() && rows.items.is_empty() && rows.outbox.is_empty(), "{rows:?}");
}
