//! What a backup contains, discovered from the database's own catalogue rather than
//! listed by hand: every application table (not `seaql_migrations`, not SQLite's
//! own tables, not full-text indexes and their shadow tables), its columns and the
//! portable [`Kind`] of each, its primary key, and the order that puts every table
//! after the tables its foreign keys point to.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use serde::{Deserialize, Serialize};

use super::BackupError;

/// The migrator's bookkeeping table: not backed up (the manifest records its
/// latest entry as `schema_version`).
pub const MIGRATIONS_TABLE: &str = "seaql_migrations";

/// How a column's values are written in an archive, the same for both engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A JSON string.
    Text,
    /// A JSON number; a 32-bit column on PostgreSQL (SQLite's integers are all 64-bit).
    Int32,
    /// A JSON number.
    Int64,
    /// A JSON number; `"NaN"`, `"Infinity"` or `"-Infinity"` as a string.
    Double,
    /// `true` or `false`.
    Bool,
    /// The JSON document as a string of JSON text (so that a document `null` and SQL
    /// NULL stay apart).
    Json,
    /// An RFC 3339 UTC string, e.g. `2025-06-01T12:00:00.123456Z`.
    Timestamp,
    /// Standard base64.
    Bytes,
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
}

/// A table as the backup sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// Stored columns in table order (generated columns left out: they are computed again).
    pub columns: Vec<Column>,
    /// Primary key columns in key order; rows are written in this order.
    pub primary_key: Vec<String>,
}

impl Table {
    /// `SELECT <columns> FROM <table> ORDER BY <primary key>`.
    pub fn select_sql(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
        let order: Vec<String> = if self.primary_key.is_empty() {
            (1..=self.columns.len()).map(|i| i.to_string()).collect()
        } else {
            self.primary_key.iter().map(|c| quote(c)).collect()
        };
        format!("SELECT {} FROM {} ORDER BY {}", columns.join(", "), quote(&self.name), order.join(", "))
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The database's application tables, parents before children.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: Vec<Table>,
    /// SQLite FTS5 tables, rebuilt after a restore.
    pub fts_tables: Vec<String>,
}

impl Schema {
    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// A double-quoted SQL identifier (the same on both engines).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Table names become file names in the archive: only ASCII letters, digits and `_`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

async fn rows<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<sea_orm::QueryResult>, BackupError> {
    let backend = db.get_database_backend();
    Ok(db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?)
}

fn text(row: &sea_orm::QueryResult, index: usize) -> Result<String, BackupError> {
    Ok(row.try_get_by_index::<Option<String>>(index)?.unwrap_or_default())
}

/// Reads the schema of the database `db` is connected to (inside the caller's
/// transaction when `db` is one, so that it matches the snapshot).
pub async fn discover<C: ConnectionTrait>(db: &C) -> Result<Schema, BackupError> {
    match db.get_database_backend() {
        DbBackend::Sqlite => discover_sqlite(db).await,
        DbBackend::Postgres => discover_postgres(db).await,
        other => Err(BackupError::Unsupported(format!("backups of a {other:?} database"))),
    }
}

async fn discover_sqlite<C: ConnectionTrait>(db: &C) -> Result<Schema, BackupError> {
    let listed =
        rows(db, "SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE type = 'table'", vec![]).await?;
    let mut plain = Vec::new();
    let mut virtual_tables = Vec::new();
    let mut fts_tables = Vec::new();
    for row in &listed {
        let (name, sql) = (text(row, 0)?, text(row, 1)?.to_ascii_lowercase());
        if sql.starts_with("create virtual table") {
            if sql.contains("using fts5") {
                fts_tables.push(name.clone());
            }
            virtual_tables.push(name);
        } else {
            plain.push(name);
        }
    }
    // A virtual table's shadow tables are named `<virtual table>_<suffix>`.
    plain.retain(|name| {
        !name.starts_with("sqlite_")
            && name != MIGRATIONS_TABLE
            && !virtual_tables.iter().any(|v| name.starts_with(&format!("{v}_")))
    });
    let mut tables = Vec::new();
    let mut parents = BTreeMap::new();
    for name in plain {
        let info = rows(
            db,
            "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid",
            vec![name.clone().into()],
        )
        .await?;
        let mut columns = Vec::new();
        let mut key = Vec::new();
        for row in &info {
            let hidden: i64 = row.try_get_by_index(3)?;
            if hidden != 0 {
                continue; // generated or hidden: not stored data
            }
            let (column, declared) = (text(row, 0)?, text(row, 1)?);
            let kind = sqlite_kind(&declared).ok_or_else(|| BackupError::UnsupportedColumn {
                table: name.clone(),
                column: column.clone(),
                declared: declared.clone(),
            })?;
            let pk: i64 = row.try_get_by_index(2)?;
            if pk > 0 {
                key.push((pk, column.clone()));
            }
            columns.push(Column { name: column, kind });
        }
        key.sort();
        let fks =
            rows(db, "SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)", vec![name.clone().into()])
                .await?;
        let referenced: BTreeSet<String> = fks.iter().map(|r| text(r, 0)).collect::<Result<_, _>>()?;
        parents.insert(name.clone(), referenced);
        tables.push(Table { name, columns, primary_key: key.into_iter().map(|(_, c)| c).collect() });
    }
    Ok(Schema { tables: order_by_dependencies(tables, &parents)?, fts_tables })
}

/// The portable kind of a SQLite column, from its declared type (as sea-query
/// writes them: `text`, `integer`, `double`, `boolean`, `jsonb_text`,
/// `timestamp_with_timezone_text`, ...).
fn sqlite_kind(declared: &str) -> Option<Kind> {
    let declared = declared.to_ascii_lowercase();
    let base = declared.split('(').next().unwrap_or_default().trim();
    Some(match base {
        "json_text" | "jsonb_text" | "json" | "jsonb" => Kind::Json,
        "timestamp_with_timezone_text" => Kind::Timestamp,
        "boolean" | "bool" => Kind::Bool,
        "integer" | "int" | "bigint" | "smallint" | "tinyint" => Kind::Int64,
        "double" | "float" | "real" | "double precision" => Kind::Double,
        "text" | "varchar" | "char" | "string" | "uuid_text" | "enum_text" | "clob" => Kind::Text,
        "blob" | "binary" | "varbinary" => Kind::Bytes,
        _ => return None,
    })
}

async fn discover_postgres<C: ConnectionTrait>(db: &C) -> Result<Schema, BackupError> {
    let listed = rows(
        db,
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
        vec![],
    )
    .await?;
    let mut tables = Vec::new();
    let mut parents = BTreeMap::new();
    for row in &listed {
        let name = text(row, 0)?;
        if name == MIGRATIONS_TABLE {
            continue;
        }
        let info = rows(
            db,
            "SELECT column_name::text, data_type::text, is_generated::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            vec![name.clone().into()],
        )
        .await?;
        let mut columns = Vec::new();
        for row in &info {
            if text(row, 2)? == "ALWAYS" {
                continue; // a generated column (items.search): computed again on insert
            }
            let (column, declared) = (text(row, 0)?, text(row, 1)?);
            let kind = postgres_kind(&declared).ok_or_else(|| BackupError::UnsupportedColumn {
                table: name.clone(),
                column: column.clone(),
                declared: declared.clone(),
            })?;
            columns.push(Column { name: column, kind });
        }
        let key = rows(
            db,
            "SELECT kcu.column_name::text FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
             AND kcu.constraint_schema = tc.constraint_schema AND kcu.table_name = tc.table_name \
             WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema() \
             AND tc.table_name = $1 ORDER BY kcu.ordinal_position",
            vec![name.clone().into()],
        )
        .await?;
        let fks = rows(
            db,
            "SELECT DISTINCT ccu.table_name::text FROM information_schema.table_constraints tc \
             JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name \
             AND ccu.constraint_schema = tc.constraint_schema \
             WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema() AND tc.table_name = $1",
            vec![name.clone().into()],
        )
        .await?;
        let referenced: BTreeSet<String> = fks.iter().map(|r| text(r, 0)).collect::<Result<_, _>>()?;
        parents.insert(name.clone(), referenced);
        let primary_key = key.iter().map(|r| text(r, 0)).collect::<Result<_, _>>()?;
        tables.push(Table { name, columns, primary_key });
    }
    Ok(Schema { tables: order_by_dependencies(tables, &parents)?, fts_tables: Vec::new() })
}

/// The portable kind of a PostgreSQL column, from `information_schema.columns.data_type`.
fn postgres_kind(data_type: &str) -> Option<Kind> {
    Some(match data_type {
        "text" | "character varying" | "character" | "uuid" => Kind::Text,
        "smallint" | "integer" => Kind::Int32,
        "bigint" => Kind::Int64,
        "double precision" | "real" => Kind::Double,
        "boolean" => Kind::Bool,
        "json" | "jsonb" => Kind::Json,
        "timestamp with time zone" => Kind::Timestamp,
        "bytea" => Kind::Bytes,
        _ => return None,
    })
}

/// Sorts `tables` so that each comes after the tables it references (by name
/// otherwise, so the order is stable). A reference to itself is allowed; a cycle
/// between tables is refused (its rows could not be inserted table by table).
fn order_by_dependencies(
    mut tables: Vec<Table>,
    parents: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<Table>, BackupError> {
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for table in &tables {
        if !is_plain_name(&table.name) {
            return Err(BackupError::Unsupported(format!(
                "table name {:?} (backups need ASCII letters, digits and _)",
                table.name
            )));
        }
    }
    let names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        let ready = tables.iter().position(|t| {
            parents
                .get(&t.name)
                .into_iter()
                .flatten()
                .all(|p| p == &t.name || placed.contains(p) || !names.contains(p))
        });
        let Some(index) = ready else {
            let left: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            return Err(BackupError::Unsupported(format!(
                "foreign keys that form a cycle between tables {}",
                left.join(", ")
            )));
        };
        let table = tables.remove(index);
        placed.insert(table.name.clone());
        ordered.push(table);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table { name: name.to_owned(), columns: vec![], primary_key: vec![] }
    }

    #[test]
    fn parents_come_before_children() {
        let parents = BTreeMap::from([
            ("item_tags".to_owned(), BTreeSet::from(["items".to_owned()])),
            ("refresh_tokens".to_owned(), BTreeSet::from(["users".to_owned()])),
            ("users".to_owned(), BTreeSet::from(["users".to_owned()])),
        ]);
        let tables = ["refresh_tokens", "item_tags", "users", "items", "jobs"].map(table).to_vec();
        let ordered: Vec<String> =
            order_by_dependencies(tables, &parents).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(ordered, ["items", "item_tags", "jobs", "users", "refresh_tokens"]);
    }

    #[test]
    fn cycles_and_odd_names_are_refused() {
        let parents = BTreeMap::from([
            ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
            ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
        ]);
        assert!(order_by_dependencies(vec![table("a"), table("b")], &parents).is_err());
        assert!(order_by_dependencies(vec![table("../x")], &BTreeMap::new()).is_err());
    }

    #[test]
    fn declared_types_map_to_kinds() {
        assert_eq!(sqlite_kind("jsonb_text"), Some(Kind::Json));
        assert_eq!(sqlite_kind("timestamp_with_timezone_text"), Some(Kind::Timestamp));
        assert_eq!(sqlite_kind("INTEGER"), Some(Kind::Int64));
        assert_eq!(sqlite_kind("varchar(64)"), Some(Kind::Text));
        assert_eq!(sqlite_kind("timestamp_text"), None, "a time without a zone is not portable");
        assert_eq!(postgres_kind("integer"), Some(Kind::Int32));
        assert_eq!(postgres_kind("tsvector"), None);
    }

    #[test]
    fn selects_in_primary_key_order() {
        let t = Table {
            name: "item_tags".to_owned(),
            columns: vec![
                Column { name: "item_id".to_owned(), kind: Kind::Text },
                Column { name: "tag".to_owned(), kind: Kind::Text },
            ],
            primary_key: vec!["item_id".to_owned(), "tag".to_owned()],
        };
        assert_eq!(t.select_sql(), r#"SELECT "item_id", "tag" FROM "item_tags" ORDER BY "item_id", "tag""#);
    }
}
