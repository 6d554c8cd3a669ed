//! Reads and writes of `item_summaries` and `item_embeddings`, and the walks that
//! find items whose summary or embedding is missing or stale.
//!
//! A stored row is current when its model is the configured one and its
//! `text_hash` is that of the item's text now ([`super::text`]). The hash is
//! computed here, not in SQL, so a walk reads items in id order with their stored
//! model and hash beside them (one `LEFT JOIN`) and keeps those that are not current.
//!
//! A write lands only while its item exists (`INSERT ... SELECT ... WHERE EXISTS`),
//! so a summary or embedding computed while its item was being deleted is dropped
//! rather than failing on the foreign key.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use super::text::{ItemText, ModelInput};
use crate::db::entities::{item, item_embedding, item_summary};

/// Ids bound in one `IN (...)` list.
const IDS: usize = 1_000;

/// What was derived from an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    Summary,
    Embedding,
}

impl Derived {
    fn table(self) -> &'static str {
        match self {
            Self::Summary => "item_summaries",
            Self::Embedding => "item_embeddings",
        }
    }

    /// The text the model reads for it.
    pub fn input(self, text: &ItemText) -> ModelInput {
        match self {
            Self::Summary => text.summary_input(),
            Self::Embedding => text.embedding_input(),
        }
    }
}

/// An embedding as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    pub item_id: String,
    pub model: String,
    pub text_hash: String,
    pub vector: Vec<f32>,
}

/// An item whose summary or embedding must be computed, with the text to give the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub input: ModelInput,
}

/// One step of a walk: the items among those read that need work, and where the
/// next step starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    pub pending: Vec<Pending>,
    /// The last id read (`None`: nothing was left to read).
    pub last: Option<String>,
    /// Items read.
    pub scanned: u64,
}

/// `vector` as little-endian `f32` bytes.
pub fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector of `dim` components in `bytes`; `None` when the length does not match.
pub fn decode_vector(bytes: &[u8], dim: usize) -> Option<Vec<f32>> {
    if bytes.len() != dim.checked_mul(4)? {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn decode_row(row: item_embedding::Model) -> Result<StoredEmbedding, DbErr> {
    let dim = usize::try_from(row.dim).unwrap_or(0);
    let vector = decode_vector(&row.vector, dim).ok_or_else(|| {
        DbErr::Type(format!(
            "the embedding of item '{}' has {} bytes for {} dimensions",
            row.item_id,
            row.vector.len(),
            row.dim
        ))
    })?;
    Ok(StoredEmbedding { item_id: row.item_id, model: row.model, text_hash: row.text_hash, vector })
}

/// The title and body of item `id`.
pub async fn item_text<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<ItemText>, DbErr> {
    Ok(item_texts(conn, &[id.to_owned()]).await?.pop())
}

/// The title and body of those of `ids` that exist, in id order.
pub async fn item_texts<C: ConnectionTrait>(conn: &C, ids: &[String]) -> Result<Vec<ItemText>, DbErr> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS) {
        let rows: Vec<(String, String, String)> = item::Entity::find()
            .select_only()
            .columns([item::Column::Id, item::Column::Title, item::Column::Body])
            .filter(item::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .into_tuple()
            .all(conn)
            .await?;
        out.extend(rows.into_iter().map(|(id, title, body)| ItemText { id, title, body }));
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The stored summary of item `id`, current or not.
pub async fn summary<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<item_summary::Model>, DbErr> {
    item_summary::Entity::find_by_id(id.to_owned()).one(conn).await
}

/// Stores (or replaces) a summary; false when its item no longer exists.
pub async fn save_summary<C: ConnectionTrait>(conn: &C, row: &item_summary::Model) -> Result<bool, DbErr> {
    use item_summary::Column as S;
    let values = [
        Expr::val(row.item_id.clone()),
        Expr::val(row.text_hash.clone()),
        Expr::val(row.model.clone()),
        Expr::val(row.summary.clone()),
        Expr::val(row.created_at),
    ];
    let columns = [S::ItemId, S::TextHash, S::Model, S::Summary, S::CreatedAt];
    let upsert = OnConflict::column(S::ItemId).update_columns(columns[1..].iter().copied()).to_owned();
    let mut insert = Query::insert();
    insert
        .into_table(item_summary::Entity)
        .columns(columns)
        .select_from(if_item_exists(&row.item_id, values))
        .map_err(|e| DbErr::Custom(format!("building the summary upsert: {e}")))?
        .on_conflict(upsert);
    Ok(conn.execute(&insert).await?.rows_affected() > 0)
}

/// `SELECT <values> WHERE EXISTS (SELECT 1 FROM items WHERE id = <id>)`.
fn if_item_exists(id: &str, values: impl IntoIterator<Item = Expr>) -> SelectStatement {
    let item =
        Query::select().expr(Expr::val(1)).from(item::Entity).and_where(item::Column::Id.eq(id)).to_owned();
    Query::select().exprs(values).and_where(Expr::exists(item)).to_owned()
}

/// The stored embedding of item `id`, current or not.
pub async fn embedding<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<StoredEmbedding>, DbErr> {
    item_embedding::Entity::find_by_id(id.to_owned()).one(conn).await?.map(decode_row).transpose()
}

/// The stored embeddings by `model` of those of `ids` that have one, in id order.
pub async fn embeddings_of<C: ConnectionTrait>(
    conn: &C,
    model: &str,
    ids: &[String],
) -> Result<Vec<StoredEmbedding>, DbErr> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS) {
        let rows = item_embedding::Entity::find()
            .filter(item_embedding::Column::Model.eq(model))
            .filter(item_embedding::Column::ItemId.is_in(chunk.iter().map(String::as_str)))
            .all(conn)
            .await?;
        for row in rows {
            out.push(decode_row(row)?);
        }
    }
    out.sort_by(|a, b| a.item_id.cmp(&b.item_id));
    Ok(out)
}

/// Stores (or replaces) embeddings in one transaction, at `at`; answers how many
/// landed (those whose item still exists).
pub async fn save_embeddings(
    db: &DatabaseConnection,
    rows: &[StoredEmbedding],
    at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    use item_embedding::Column as E;
    let columns = [E::ItemId, E::Model, E::TextHash, E::Dim, E::Vector, E::UpdatedAt];
    let upsert = OnConflict::column(E::ItemId).update_columns(columns[1..].iter().copied()).to_owned();
    let txn = db.begin().await?;
    let mut saved = 0;
    for row in rows {
        let dim = i32::try_from(row.vector.len())
            .map_err(|_| DbErr::Custom(format!("a vector of {} dimensions", row.vector.len())))?;
        let values = [
            Expr::val(row.item_id.clone()),
            Expr::val(row.model.clone()),
            Expr::val(row.text_hash.clone()),
            Expr::val(dim),
            Expr::val(encode_vector(&row.vector)),
            Expr::val(at),
        ];
        let mut insert = Query::insert();
        insert
            .into_table(item_embedding::Entity)
            .columns(columns)
            .select_from(if_item_exists(&row.item_id, values))
            .map_err(|e| DbErr::Custom(format!("building the embedding upsert: {e}")))?
            .on_conflict(upsert.clone());
        saved += txn.execute(&insert).await?.rows_affected();
    }
    txn.commit().await?;
    Ok(saved)
}

/// At most `limit` embeddings by `model` after item `after`, in id order (the
/// semantic index loads them page by page).
pub async fn embeddings_page<C: ConnectionTrait>(
    conn: &C,
    model: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<StoredEmbedding>, DbErr> {
    let mut query = item_embedding::Entity::find()
        .filter(item_embedding::Column::Model.eq(model))
        .order_by_asc(item_embedding::Column::ItemId)
        .limit(Ord::max(limit, 1));
    if let Some(after) = after {
        query = query.filter(item_embedding::Column::ItemId.gt(after));
    }
    query.all(conn).await?.into_iter().map(decode_row).collect()
}

/// Where a walk of `item_embeddings` by `(updated_at, item_id)` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateMark {
    pub at: DateTime<Utc>,
    pub item_id: String,
}

/// At most `limit` embeddings by `model` written after `after`, in
/// `(updated_at, item_id)` order, each with its mark (nodes pick up the vectors
/// other nodes wrote).
pub async fn embeddings_updated_after<C: ConnectionTrait>(
    conn: &C,
    model: &str,
    after: Option<&UpdateMark>,
    limit: u64,
) -> Result<Vec<(StoredEmbedding, UpdateMark)>, DbErr> {
    use item_embedding::Column as E;
    let mut query = item_embedding::Entity::find()
        .filter(E::Model.eq(model))
        .order_by_asc(E::UpdatedAt)
        .order_by_asc(E::ItemId)
        .limit(Ord::max(limit, 1));
    if let Some(mark) = after {
        query =
            query.filter(sea_orm::Condition::any().add(E::UpdatedAt.gt(mark.at)).add(
                sea_orm::Condition::all().add(E::UpdatedAt.eq(mark.at)).add(E::ItemId.gt(&mark.item_id)),
            ));
    }
    let mut out = Vec::new();
    for row in query.all(conn).await? {
        let mark = UpdateMark { at: row.updated_at, item_id: row.item_id.clone() };
        out.push((decode_row(row)?, mark));
    }
    Ok(out)
}

/// Reads at most `limit` items after `after` in id order, and answers those whose
/// `what` by `model` is missing or stale.
pub async fn scan_pending<C: ConnectionTrait>(
    conn: &C,
    what: Derived,
    model: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Scan, DbErr> {
    let mut query = pending_query(what);
    if let Some(after) = after {
        query.and_where(Expr::col((item::Entity, item::Column::Id)).gt(after));
    }
    query.order_by((item::Entity, item::Column::Id), sea_orm::Order::Asc).limit(Ord::max(limit, 1));
    let rows = conn.query_all(&query).await?;
    let mut scan = Scan::default();
    for row in rows {
        let (text, stored) = read_pending_row(&row)?;
        scan.scanned += 1;
        scan.last = Some(text.id.clone());
        if let Some(pending) = pending_of(what, model, text, stored) {
            scan.pending.push(pending);
        }
    }
    Ok(scan)
}

/// Those of `ids` that exist and whose `what` by `model` is missing or stale, in id order.
pub async fn pending_among<C: ConnectionTrait>(
    conn: &C,
    what: Derived,
    model: &str,
    ids: &[String],
) -> Result<Vec<Pending>, DbErr> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IDS) {
        let mut query = pending_query(what);
        query.and_where(Expr::col((item::Entity, item::Column::Id)).is_in(chunk.iter().map(String::as_str)));
        for row in conn.query_all(&query).await? {
            let (text, stored) = read_pending_row(&row)?;
            out.extend(pending_of(what, model, text, stored));
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// Items with the model and hash of their stored `what`, if any.
fn pending_query(what: Derived) -> SelectStatement {
    let table = what.table();
    Query::select()
        .column((item::Entity, item::Column::Id))
        .column((item::Entity, item::Column::Title))
        .column((item::Entity, item::Column::Body))
        .expr_as(Expr::col((table, "model")), "stored_model")
        .expr_as(Expr::col((table, "text_hash")), "stored_hash")
        .from(item::Entity)
        .left_join(table, Expr::col((table, "item_id")).equals((item::Entity, item::Column::Id)))
        .to_owned()
}

type StoredKey = Option<(String, String)>;

fn read_pending_row(row: &sea_orm::QueryResult) -> Result<(ItemText, StoredKey), DbErr> {
    let text = ItemText {
        id: row.try_get("", "id")?,
        title: row.try_get("", "title")?,
        body: row.try_get("", "body")?,
    };
    let model: Option<String> = row.try_get("", "stored_model")?;
    let hash: Option<String> = row.try_get("", "stored_hash")?;
    Ok((text, model.zip(hash)))
}

fn pending_of(what: Derived, model: &str, text: ItemText, stored: StoredKey) -> Option<Pending> {
    let input = what.input(&text);
    let current = stored.is_some_and(|(m, h)| m == model && h == input.hash);
    (!current).then_some(Pending { id: text.id, input })
}

#[cfg(test)]
mod tests;
