//! The `castwork` command line: `serve` (default), `migrate`, `config`, `user add`, `token`, `import`,
//! `backup`, `restore`,
//! and `jobs` ([`jobs`]: a client of a running node).

pub mod jobs;

use std::io::{Read, Write};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use tokio_util::sync::CancellationToken;

use crate::auth::{AuthService, JwtKeys, Role};
use crate::backup::{self, BackupOptions, report::ProgressReporter};
use crate::config::{Settings, env};
use crate::db;
use crate::explore::import;
use crate::startup::Application;

/// castwork: Explore catalogue, inference and jobs on a tree of supervised actors.
#[derive(Debug, Parser)]
#[command(name = "castwork", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Mint an access and refresh token for a user, for scripting.
    Token {
        #[arg(long)]
        username: String,
    },
    /// Import catalogue items from a JSON Lines file (plain or gzip); re-importing is idempotent.
    Import {
        /// The file, e.g. catalog.jsonl.gz.
        path: std::path::PathBuf,
        /// Lines per transaction.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
    },
    /// Write a backup of the database to <data_dir>/backups (encrypted when backup.encryption_key is set).
    Backup,
    /// Restore a backup into the configured database, which must be empty.
    Restore {
        /// The archive, e.g. data/backups/castwork-20260101T030000.000Z.tar.cwenc.
        archive: std::path::PathBuf,
        /// Read the archive's key from this environment variable (default: backup.encryption_key).
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
    },
    /// List, show, cancel or watch the jobs of a running node (token in CASTWORK_TOKEN).
    Jobs(jobs::JobsArgs),
}

/// `castwork user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password comes from stdin (`--password-stdin`) or CASTWORK_USER_PASSWORD.
    Add {
        #[arg(long)]
        username: String,
        /// viewer, editor or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
    },
}

impl Cli {
    /// Runs the chosen command with already-loaded settings.
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                crate::server::limits::raise_file_limit();
                let app = Application::build(settings).await.context("failed to start castwork")?;
                app.run_until_stopped().await.context("castwork stopped with an error")
            }
            Command::Migrate => {
                let db = db::connect(&settings).await.context("failed to connect to the database")?;
                db::migrate(&db).await.context("failed to migrate")?;
                tracing::info!(backend = db::backend_name(&db), "migrations applied");
                Ok(())
            }
            Command::Config => {
                let text = settings.to_redacted_toml().context("failed to render the configuration")?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "# environment: {}", settings.environment).context("failed to write")?;
                out.write_all(text.as_bytes()).context("failed to write the configuration")
            }
            Command::User { command: UserCommand::Add { username, role, password_stdin } } => {
                let role: Role = role.parse().context("invalid --role")?;
                let password = read_password(password_stdin)?;
                let auth = auth_service(&settings).await?;
                let user = auth
                    .create_user(&username, &password, role)
                    .await
                    .context("failed to create the user")?;
                tracing::info!(username = %user.username, role = %role, "user created");
                Ok(())
            }
            Command::Token { username } => {
                let hs256 = settings.auth.algorithm == crate::config::JwtAlgorithm::HS256;
                if hs256 && settings.auth.jwt_secret.is_empty() {
                    bail!(
                        "auth.jwt_secret is not set: a token minted now would not be accepted by a running service"
                    );
                }
                let auth = auth_service(&settings).await?;
                let pair = auth.mint(&username).await.context("failed to mint a token")?;
                let json = serde_json::to_string_pretty(&pair).context("failed to encode the token")?;
                writeln!(std::io::stdout().lock(), "{json}").context("failed to write the token")
            }
            Command::Jobs(args) => {
                if jobs::run(args).await? {
                    Ok(())
                } else {
                    bail!("the job did not succeed")
                }
            }
            Command::Import { path, batch_size } => {
                let db = db::connect(&settings).await.context("failed to connect to the database")?;
                db::migrate(&db).await.context("failed to migrate")?;
                let options = import::ImportOptions {
                    batch_size: batch_size as usize,
                    ..import::ImportOptions::default()
                };
                // this process's bus has no subscriber: running servers cannot hear it
                let changes = crate::explore::change::change_bus();
                let summary = import::report::import_path_with_progress(&db, &changes, &path, &options)
                    .await
                    // The message already names the file and its cause; keep the chain from repeating them.
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("import failed")?;
                let mut text = import::report::render_summary(&path.display().to_string(), &summary);
                if summary.inserted + summary.updated > 0 {
                    tracing::info!(
                        changed = summary.inserted + summary.updated,
                        "running servers invalidate the changed pages when their outbox relay publishes the changes"
                    );
                    text.push_str(import::report::CACHE_HINT);
                }
                // Rejected lines are reported, not failures: the exit status stays 0.
                std::io::stdout().lock().write_all(text.as_bytes()).context("failed to write the summary")
            }
            Command::Backup => run_backup(&settings).await,
            Command::Restore { archive, key_env } => {
                run_restore(&settings, &archive, key_env.as_deref()).await
            }
        }
    }
}

/// `castwork backup`. The database is not migrated first: a backup taken before an
/// upgrade keeps the schema it was taken at.
async fn run_backup(settings: &Settings) -> anyhow::Result<()> {
    let db = db::connect(settings).await.context("failed to connect to the database")?;
    let options = BackupOptions::from_settings(settings);
    if options.key.is_none() {
        tracing::warn!("backup.encryption_key is empty: the archive is written unencrypted");
    }
    let started = std::time::Instant::now();
    let cancel = CancellationToken::new();
    let mut reporter = ProgressReporter::new("backup");
    let outcome = {
        let mut progress = |p: backup::Progress| reporter.update(&p);
        until_interrupted(backup::create(&db, &options, &mut progress, &cancel), &cancel).await
    };
    reporter.finish();
    let summary = outcome.context("backup failed")?;
    let text = backup::report::render_backup(&summary, started.elapsed());
    std::io::stdout().lock().write_all(text.as_bytes()).context("failed to write the summary")
}

/// `castwork restore ARCHIVE`: migrates the configured database, then restores into it.
async fn run_restore(
    settings: &Settings,
    archive: &std::path::Path,
    key_env: Option<&str>,
) -> anyhow::Result<()> {
    let key = match key_env {
        Some(var) => match std::env::var(var) {
            Ok(key) if !key.is_empty() => Some(key),
            _ => bail!("--key-env {var}: the environment variable {var} is not set"),
        },
        None => {
            let key = &settings.backup.encryption_key;
            (!key.is_empty()).then(|| key.expose().to_owned())
        }
    };
    let db = db::connect(settings).await.context("failed to connect to the database")?;
    db::migrate(&db).await.context("failed to migrate")?;
    let started = std::time::Instant::now();
    let cancel = CancellationToken::new();
    let mut reporter = ProgressReporter::new("restore");
    let outcome = {
        let mut progress = |p: backup::Progress| reporter.update(&p);
        let restoring = backup::restore(&db, archive, key.as_deref(), &mut progress, &cancel);
        until_interrupted(restoring, &cancel).await
    };
    reporter.finish();
    let summary = outcome.with_context(|| format!("failed to restore {}", archive.display()))?;
    let text = backup::report::render_restore(archive, &summary, started.elapsed());
    std::io::stdout().lock().write_all(text.as_bytes()).context("failed to write the summary")
}

/// Runs `job`; Ctrl-C cancels it through `cancel`, and `job` is still awaited so it
/// can clean up (a backup removes its temporary files, a restore rolls back).
async fn until_interrupted<T>(job: impl std::future::Future<Output = T>, cancel: &CancellationToken) -> T {
    tokio::pin!(job);
    tokio::select! {
        out = &mut job => return out,
        _ = tokio::signal::ctrl_c() => {
            tracing::warn!("interrupted: stopping at the next batch");
            cancel.cancel();
        }
    }
    job.await
}

async fn auth_service(settings: &Settings) -> anyhow::Result<AuthService> {
    let db = db::connect(settings).await.context("failed to connect to the database")?;
    db::migrate(&db).await.context("failed to migrate")?;
    let (keys, _) = JwtKeys::from_settings(&settings.auth).context("failed to load the signing keys")?;
    Ok(AuthService::new(db, std::sync::Arc::new(keys), &settings.auth))
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("failed to read the password from stdin")?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        if password.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(password);
    }
    match std::env::var(env::USER_PASSWORD) {
        Ok(password) if !password.is_empty() => Ok(password),
        _ => bail!("give the password on stdin with --password-stdin, or in {}", env::USER_PASSWORD),
    }
}
