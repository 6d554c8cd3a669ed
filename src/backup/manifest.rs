//! `manifest.json`, the archive's first entry: what the archive holds and how to
//! check it. One entry per table file, in restore order (parents first).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::BackupError;
use super::schema::{Column, is_plain_name};

/// The archive format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's path in the archive.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Largest manifest read (a forged size cannot make a restore allocate more).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The archive's table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    /// `sqlite` or `postgres`: where the rows came from (any engine restores them).
    pub engine: String,
    /// The castwork version that wrote it.
    #[serde(default)]
    pub castwork_version: String,
    /// Name of the last migration applied to the source database.
    pub schema_version: String,
    /// One per table, in restore order.
    pub tables: Vec<TableEntry>,
}

/// One table's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    /// Rows in the file (one JSON object per line).
    pub rows: u64,
    /// Lower-case hex SHA-256 of the file's uncompressed JSON Lines.
    pub sha256: String,
    /// Path in the archive: `tables/<name>.jsonl.gz`.
    pub file: String,
    /// The columns each row holds, with their archive [`Kind`](super::schema::Kind)s.
    pub columns: Vec<Column>,
}

/// The archive path of table `name`'s rows.
pub fn table_file(name: &str) -> String {
    format!("tables/{name}.jsonl.gz")
}

impl Manifest {
    /// Total rows over every table.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Checks that this build can restore the archive: a known format, a schema
    /// version among `known_migrations` (this build's migrations, oldest first), and
    /// well-formed entries.
    pub fn check(&self, known_migrations: &[String]) -> Result<(), BackupError> {
        if self.format != FORMAT {
            return Err(BackupError::UnsupportedFormat(format!(
                "archive format {} (this build reads format {FORMAT})",
                self.format
            )));
        }
        if !known_migrations.contains(&self.schema_version) {
            return Err(BackupError::NewerSchema {
                archive: self.schema_version.clone(),
                latest: known_migrations.last().cloned().unwrap_or_default(),
            });
        }
        let mut seen = BTreeSet::new();
        for table in &self.tables {
            let bad = |what: &str| BackupError::Tampered(format!("manifest entry {:?}: {what}", table.name));
            if !is_plain_name(&table.name) {
                return Err(bad("not a plain table name"));
            }
            if !seen.insert(table.name.as_str()) {
                return Err(bad("listed twice"));
            }
            if table.file != table_file(&table.name) {
                return Err(bad("unexpected file name"));
            }
            if table.sha256.len() != 64
                || !table.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(bad("sha256 is not 64 lower-case hex digits"));
            }
            if table.columns.is_empty() {
                return Err(bad("no columns"));
            }
            let mut columns = BTreeSet::new();
            if !table.columns.iter().all(|c| columns.insert(c.name.as_str())) {
                return Err(bad("a column is listed twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::schema::Kind;

    fn known() -> Vec<String> {
        vec!["m1_users".to_owned(), "m2_items".to_owned()]
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            created_at: "2026-01-01T00:00:00Z".to_owned(),
            engine: "sqlite".to_owned(),
            castwork_version: "0.1.0".to_owned(),
            schema_version: "m2_items".to_owned(),
            tables: vec![TableEntry {
                name: "items".to_owned(),
                rows: 2,
                sha256: "ab".repeat(32),
                file: table_file("items"),
                columns: vec![Column { name: "id".to_owned(), kind: Kind::Text }],
            }],
        }
    }

    #[test]
    fn a_good_manifest_passes_and_round_trips_as_json() {
        let m = manifest();
        m.check(&known()).unwrap();
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""columns":[{"name":"id","type":"text"}]"#), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        assert_eq!(m.total_rows(), 2);
    }

    #[test]
    fn a_newer_schema_is_refused_naming_both_versions() {
        let mut m = manifest();
        m.schema_version = "m3_future".to_owned();
        let err = m.check(&known()).unwrap_err();
        assert!(matches!(err, BackupError::NewerSchema { .. }));
        let text = err.to_string();
        assert!(text.contains("m3_future") && text.contains("m2_items"), "{text}");
    }

    #[test]
    fn another_format_is_refused() {
        let mut m = manifest();
        m.format = 2;
        assert!(matches!(m.check(&known()), Err(BackupError::UnsupportedFormat(_))));
    }

    #[test]
    fn malformed_entries_are_refused() {
        let cases: [fn(&mut TableEntry); 5] = [
            |t| t.name = "../etc".to_owned(),
            |t| t.file = "tables/other.jsonl.gz".to_owned(),
            |t| t.sha256 = "xyz".to_owned(),
            |t| t.columns.clear(),
            |t| t.columns.push(t.columns[0].clone()),
        ];
        for (i, spoil) in cases.iter().enumerate() {
            let mut m = manifest();
            spoil(&mut m.tables[0]);
            assert!(matches!(m.check(&known()), Err(BackupError::Tampered(_))), "case {i}");
        }
        let mut twice = manifest();
        twice.tables.push(twice.tables[0].clone());
        assert!(matches!(twice.check(&known()), Err(BackupError::Tampered(_))));
    }
}
