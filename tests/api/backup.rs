//! Backups and restores on both engines: every table comes back row for row, the
//! full-text index and the sequences work afterwards, encrypted archives need their
//! key, and altered archives, newer schemas and non-empty targets are refused.

use std::io::BufRead;
use std::path::Path;

use castwork::backup::{self, BackupError, BackupOptions, Progress};
use castwork::db::entities::{item, outbox, revoked_session, user};
use castwork::db::testing::{Backend, TestDatabase, temp_dir};
use castwork::explore::import::SAMPLE_CATALOG;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, NotSet, Set};
use tokio_util::sync::CancellationToken;

use crate::both;

mod fixture;
use fixture::*;

async fn a_backup_restores_into_a_fresh_database_row_for_row(backend: Backend) {
    let (source, db) = TestDatabase::migrated(backend).await;
    seed(&db).await;
    let mut seen = Vec::new();
    let mut progress = |p: Progress| seen.push(p);
    let summary = backup::create(&db, &options(&source.dir, None), &mut progress, &CancellationToken::new())
        .await
        .unwrap();

    let name = summary.path.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("castwork-") && name.ends_with(".tar"), "{name}");
    assert!(!summary.encrypted);
    assert_eq!(summary.bytes, std::fs::metadata(&summary.path).unwrap().len());
    assert_eq!(summary.schema_version, *backup::known_migrations().last().unwrap());
    let tables: Vec<&str> = summary.tables.iter().map(|(name, _)| name.as_str()).collect();
    for table in ["users", "refresh_tokens", "revoked_sessions", "items", "item_tags", "outbox", "jobs"] {
        assert!(tables.contains(&table), "{table} in {tables:?}");
    }
    for left_out in ["seaql_migrations", "items_fts", "items_fts_data"] {
        assert!(!tables.contains(&left_out), "{left_out} is not backed up");
    }
    let position = |t: &str| tables.iter().position(|n| *n == t).unwrap();
    assert!(position("items") < position("item_tags") && position("users") < position("refresh_tokens"));
    let total: u64 = summary.tables.iter().map(|(_, n)| n).sum();
    let last = seen.last().unwrap();
    assert_eq!((last.processed, last.total), (total, total), "progress reaches the total");
    assert!(seen.windows(2).all(|w| w[0].processed <= w[1].processed), "progress only grows");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&summary.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "archives are owner-only");
        let files: Vec<_> = std::fs::read_dir(summary.path.parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file is left: {files:?}");
    }

    let (target, restored_db) = TestDatabase::migrated(backend).await;
    let restored = restore(&restored_db, &summary.path, None).await.unwrap();
    assert_eq!(restored.tables, summary.tables);
    assert_eq!(restored.source_engine, source_engine(backend));
    let before = rows(&db).await;
    assert_eq!(before.items.len(), ITEMS);
    assert_eq!(rows(&restored_db).await, before, "every row comes back");
    // the same rows make the same table digests
    let again = backup(&restored_db, &options(&target.dir, None)).await;
    assert_eq!(digests(&again.path), digests(&summary.path));
    // the full-text index was rebuilt
    for word in ["learning", "quantum", "graph"] {
        assert_eq!(search_count(&restored_db, word).await, search_count(&db, word).await, "{word}");
    }
    assert!(search_count(&restored_db, "learning").await > 0);
    // new ids continue after the restored ones
    let max_seq = before.outbox.iter().map(|o| o.seq).max().unwrap();
    let next = outbox::ActiveModel {
        seq: NotSet,
        id: Set(uuid::Uuid::new_v4().to_string()),
        event_type: Set("test".to_owned()),
        aggregate_id: Set("x".to_owned()),
        payload: Set(serde_json::json!({})),
        created_at: Set(Utc::now()),
        published_at: Set(None),
    }
    .insert(&restored_db)
    .await
    .unwrap();
    assert!(next.seq > max_seq, "{} after {max_seq}", next.seq);
    let session = revoked_session::ActiveModel {
        id: NotSet,
        sid: Set("s4".to_owned()),
        expires_at: Set(Utc::now()),
        revoked_at: Set(Utc::now()),
    };
    assert_eq!(session.insert(&restored_db).await.unwrap().id, 4);
}

fn source_engine(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

async fn an_encrypted_backup_needs_its_key(backend: Backend) {
    let (source, db) = TestDatabase::migrated(backend).await;
    seed(&db).await;
    let summary = backup(&db, &options(&source.dir, Some("correct horse battery staple"))).await;
    assert!(summary.encrypted);
    assert!(summary.path.to_str().unwrap().ends_with(".tar.cwenc"));
    let head = std::fs::read(&summary.path).unwrap();
    assert_eq!(&head[..4], b"CWBK");
    assert!(!head.windows(8).any(|w| w == b"outbox-r"), "nothing readable in the sealed file");

    let (_target, target_db) = TestDatabase::migrated(backend).await;
    let missing = restore(&target_db, &summary.path, None).await.unwrap_err();
    assert!(matches!(missing, BackupError::KeyRequired), "{missing}");
    assert!(missing.to_string().contains("the archive is encrypted"), "{missing}");
    let wrong = restore(&target_db, &summary.path, Some("wrong")).await.unwrap_err();
    assert_eq!(wrong.to_string(), "wrong backup key or corrupted archive");
    assert_empty(&target_db).await;

    let mut flipped = std::fs::read(&summary.path).unwrap();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x20;
    let tampered = source.dir.join("flipped.tar.cwenc");
    std::fs::write(&tampered, flipped).unwrap();
    let refused = restore(&target_db, &tampered, Some("correct horse battery staple")).await.unwrap_err();
    assert!(matches!(refused, BackupError::Tampered(_) | BackupError::WrongKey), "{refused}");
    assert_empty(&target_db).await;

    restore(&target_db, &summary.path, Some("correct horse battery staple")).await.unwrap();
    assert_eq!(rows(&target_db).await, rows(&db).await);
}

async fn an_altered_archive_is_refused_naming_the_table(backend: Backend) {
    let (source, db) = TestDatabase::migrated(backend).await;
    seed(&db).await;
    let summary = backup(&db, &options(&source.dir, None)).await;
    let altered = rewrite(&summary.path, |path, bytes| {
        if path != "tables/items.jsonl.gz" {
            return bytes;
        }
        let text = gunzip(&bytes);
        let (first, rest) = text.split_once('\n').unwrap();
        let mut row: serde_json::Value = serde_json::from_str(first).unwrap();
        row["title"] = serde_json::json!("A title nobody wrote");
        gzip(&format!("{row}\n{rest}"))
    });
    let (_target, target_db) = TestDatabase::migrated(backend).await;
    let refused = restore(&target_db, &altered, None).await.unwrap_err();
    assert!(matches!(&refused, BackupError::Mismatch { table, .. } if table == "items"), "{refused}");
    assert!(refused.to_string().starts_with("table items does not match"), "{refused}");
    assert_empty(&target_db).await;

    let dropped = rewrite(&summary.path, |path, bytes| {
        if path != "tables/users.jsonl.gz" {
            return bytes;
        }
        let text = gunzip(&bytes);
        gzip(text.split_once('\n').unwrap().1)
    });
    let refused = restore(&target_db, &dropped, None).await.unwrap_err();
    assert!(refused.to_string().contains("table users") && refused.to_string().contains("rows"), "{refused}");
    assert_empty(&target_db).await;

    let future = rewrite(&summary.path, |path, bytes| {
        if path != "manifest.json" {
            return bytes;
        }
        let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        manifest["schema_version"] = serde_json::json!("m29990101_000000_from_the_future");
        serde_json::to_vec(&manifest).unwrap()
    });
    let refused = restore(&target_db, &future, None).await.unwrap_err();
    assert!(matches!(refused, BackupError::NewerSchema { .. }), "{refused}");
    assert!(refused.to_string().contains("m29990101_000000_from_the_future"), "{refused}");
}

async fn a_database_that_is_not_empty_is_refused(backend: Backend) {
    let (source, db) = TestDatabase::migrated(backend).await;
    seed(&db).await;
    let summary = backup(&db, &options(&source.dir, None)).await;
    let refused = restore(&db, &summary.path, None).await.unwrap_err();
    let text = refused.to_string();
    assert!(text.starts_with("the database is not empty: "), "{text}");
    assert!(text.contains(&format!("{ITEMS} items, ")) && text.contains(", 2 users, "), "{text}");
    assert!(text.ends_with("; restore into an empty database"), "{text}");
    assert_eq!(rows(&db).await.items.len(), ITEMS, "nothing was touched");
}

async fn cancelling_leaves_nothing_behind(backend: Backend) {
    let (source, db) = TestDatabase::migrated(backend).await;
    seed(&db).await;
    let options = options(&source.dir, Some("k"));
    let cancel = CancellationToken::new();
    let mut stop = |p: Progress| {
        if p.processed > 0 {
            cancel.cancel();
        }
    };
    let cancelled = backup::create(&db, &options, &mut stop, &cancel).await.unwrap_err();
    assert!(matches!(cancelled, BackupError::Cancelled), "{cancelled}");
    let left: Vec<_> = std::fs::read_dir(&options.dir).unwrap().collect();
    assert!(left.is_empty(), "no archive or temporary file: {left:?}");

    let summary = backup(&db, &options).await;
    let (_target, target_db) = TestDatabase::migrated(backend).await;
    let cancel = CancellationToken::new();
    let mut stop = |p: Progress| {
        if p.processed > 0 {
            cancel.cancel();
        }
    };
    let cancelled =
        backup::restore(&target_db, &summary.path, Some("k"), &mut stop, &cancel).await.unwrap_err();
    assert!(matches!(cancelled, BackupError::Cancelled), "{cancelled}");
    assert_empty(&target_db).await;
}

async fn retention_keeps_the_newest_archives(backend: Backend) {
    let (source, db) = TestDatabase::migrated(backend).await;
    let options = BackupOptions { keep: 2, ..options(&source.dir, None) };
    let first = backup(&db, &options).await;
    let second = backup(&db, &options).await;
    assert!(second.pruned.is_empty());
    let third = backup(&db, &options).await;
    assert_eq!(third.pruned, std::slice::from_ref(&first.path));
    assert!(!first.path.exists() && second.path.exists() && third.path.exists());
    // an empty database backs up and restores too
    let (_target, target_db) = TestDatabase::migrated(backend).await;
    let restored = restore(&target_db, &third.path, None).await.unwrap();
    assert!(restored.tables.iter().all(|(_, rows)| *rows == 0));
}

both!(
    a_backup_restores_into_a_fresh_database_row_for_row,
    an_encrypted_backup_needs_its_key,
    an_altered_archive_is_refused_naming_the_table,
    a_database_that_is_not_empty_is_refused,
    cancelling_leaves_nothing_behind,
    retention_keeps_the_newest_archives,
);

/// Items as PostgreSQL keeps them: times to the microsecond (SQLite keeps what it is given).
fn to_micros(mut items: Vec<item::Model>) -> Vec<item::Model> {
    use chrono::SubsecRound;
    for item in &mut items {
        item.created_at = item.created_at.trunc_subsecs(6);
        item.updated_at = item.updated_at.trunc_subsecs(6);
        item.published_at = item.published_at.trunc_subsecs(6);
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_restores_into_postgres_and_back() {
    let (source, db) = TestDatabase::migrated(Backend::Sqlite).await;
    seed(&db).await;
    let summary = backup(&db, &options(&source.dir, None)).await;
    let (pg, pg_db) = TestDatabase::migrated(Backend::Postgres).await;
    let restored = restore(&pg_db, &summary.path, None).await.unwrap();
    assert_eq!(restored.source_engine, "sqlite");
    assert_eq!(restored.tables, summary.tables);
    assert_eq!(to_micros(rows(&pg_db).await.items), to_micros(rows(&db).await.items));
    assert_eq!(search_count(&pg_db, "learning").await, search_count(&db, "learning").await);

    let from_pg = backup(&pg_db, &options(&pg.dir, None)).await;
    let (_back, back_db) = TestDatabase::migrated(Backend::Sqlite).await;
    restore(&back_db, &from_pg.path, None).await.unwrap();
    assert_eq!(to_micros(rows(&back_db).await.items), to_micros(rows(&db).await.items));
    assert_eq!(search_count(&back_db, "learning").await, search_count(&db, "learning").await);
    let names =
        |users: Vec<user::Model>| users.into_iter().map(|u| (u.id, u.username, u.role)).collect::<Vec<_>>();
    assert_eq!(names(rows(&back_db).await.users), names(rows(&db).await.users));
}

/// `castwork backup` and `castwork restore` as an operator runs them.
#[test]
fn the_command_line_backs_up_and_restores() {
    let (from, to) = (temp_dir(), temp_dir());
    let catalogue = from.join("few.jsonl");
    let mut lines = String::new();
    for (i, line) in
        std::io::BufReader::new(flate2::read::GzDecoder::new(SAMPLE_CATALOG)).lines().take(5).enumerate()
    {
        assert!(i < 5);
        lines.push_str(&line.unwrap());
        lines.push('\n');
    }
    std::fs::write(&catalogue, lines).unwrap();
    let castwork = |data_dir: &Path, args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_castwork"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CASTWORK_") {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CASTWORK_DATA_DIR", data_dir)
            .env("CASTWORK_LOG__LEVEL", "warn")
            .env("CASTWORK_BACKUP__ENCRYPTION_KEY", "cli-test-key")
            .env("OTHER_KEY", "cli-test-key")
            .args(args)
            .output()
            .unwrap()
    };
    let imported = castwork(&from, &["import", catalogue.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let made = castwork(&from, &["backup"]);
    let stdout = String::from_utf8(made.stdout).unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let archive = stdout.lines().next().unwrap().strip_prefix("backup written: ").unwrap().to_owned();
    assert!(archive.ends_with(".tar.cwenc") && Path::new(&archive).exists(), "{stdout}");
    assert!(stdout.contains("items") && stdout.contains("sha256"), "{stdout}");

    let restored = castwork(&to, &["restore", &archive, "--key-env", "OTHER_KEY"]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert!(String::from_utf8(restored.stdout).unwrap().starts_with(&format!("restored {archive}\n")));

    let again = castwork(&to, &["restore", &archive]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8(again.stderr).unwrap();
    assert!(stderr.contains("the database is not empty: 5 items"), "{stderr}");
    let _ = std::fs::remove_dir_all(from);
    let _ = std::fs::remove_dir_all(to);
}
