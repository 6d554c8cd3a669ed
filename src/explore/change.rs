//! [`ItemChange`]: one committed item change, the same value in-process (published
//! on the [`ChangeBus`] before the write returns) and in the outbox (its payload).
//!
//! The payload is versioned: `{"v": 1, "id", "version", "before", "after"}`, where
//! `before` and `after` are the item's families (`group`, `category_code`, `tags`)
//! or `null` (`before` on a create, `after` on a delete). A reader refuses a payload
//! with another `v` ([`PayloadError::UnsupportedVersion`]) instead of guessing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{self, Bus};
use crate::outbox::{ITEM_CHANGED, ITEM_DELETED, OutboxEvent};

/// The payload format this build writes and reads.
pub const PAYLOAD_VERSION: u64 = 1;

/// What an item belonged to, for invalidating the pages that may show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Families {
    pub group: String,
    pub category_code: String,
    pub tags: Vec<String>,
}

/// A committed item change: the item's version after it (its last version, for a
/// delete) and its families before (absent on create) and after (absent on delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Payload", try_from = "Payload")]
pub struct ItemChange {
    pub id: String,
    pub version: i64,
    pub before: Option<Families>,
    pub after: Option<Families>,
}

/// The changes one transaction committed: one for an API write, a batch for an import.
pub type ChangeBus = Bus<Vec<ItemChange>>;

/// The bus an [`ExploreService`](super::ExploreService) publishes on; with no
/// subscriber (as in the `castwork` CLI) publishing reaches nobody.
pub fn change_bus() -> ChangeBus {
    Bus::new("item_changes", events::DEFAULT_BUFFER, events::DEFAULT_INLINE_TIMEOUT)
}

/// Why an outbox payload is not an [`ItemChange`].
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload has no numeric `v` field.
    #[error("the item change payload has no version field 'v'")]
    MissingVersion,
    /// The payload was written in a format this build does not know.
    #[error("the item change payload is version {found}; this build reads version {PAYLOAD_VERSION}")]
    UnsupportedVersion { found: u64 },
    /// The payload says version 1 but does not have its shape.
    #[error("malformed item change payload: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The wire form: [`ItemChange`] with its format version.
#[derive(Serialize, Deserialize)]
struct Payload {
    v: u64,
    id: String,
    version: i64,
    before: Option<Families>,
    after: Option<Families>,
}

impl From<ItemChange> for Payload {
    fn from(change: ItemChange) -> Self {
        let ItemChange { id, version, before, after } = change;
        Self { v: PAYLOAD_VERSION, id, version, before, after }
    }
}

impl TryFrom<Payload> for ItemChange {
    type Error = PayloadError;

    fn try_from(payload: Payload) -> Result<Self, PayloadError> {
        let Payload { v, id, version, before, after } = payload;
        if v != PAYLOAD_VERSION {
            return Err(PayloadError::UnsupportedVersion { found: v });
        }
        Ok(Self { id, version, before, after })
    }
}

impl ItemChange {
    /// `item.deleted` when the item is gone, else `item.changed`.
    pub fn event_type(&self) -> &'static str {
        if self.after.is_none() { ITEM_DELETED } else { ITEM_CHANGED }
    }

    /// The outbox event recording this change.
    pub fn to_outbox_event(&self) -> OutboxEvent {
        OutboxEvent {
            event_type: self.event_type(),
            aggregate_id: self.id.clone(),
            // strings and integers only: serializing cannot fail
            payload: serde_json::json!(self),
        }
    }

    /// Reads an outbox payload back, checking its format version first.
    pub fn from_payload(payload: &Value) -> Result<Self, PayloadError> {
        match payload.get("v").and_then(Value::as_u64) {
            None => Err(PayloadError::MissingVersion),
            Some(PAYLOAD_VERSION) => Ok(Self::deserialize(payload)?),
            Some(found) => Err(PayloadError::UnsupportedVersion { found }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn families(category: &str) -> Families {
        Families {
            group: "Computer Science".into(),
            category_code: category.into(),
            tags: vec![category.into()],
        }
    }

    #[test]
    fn a_move_round_trips_through_the_outbox_payload() {
        let change = ItemChange {
            id: "a".into(),
            version: 3,
            before: Some(families("cs.CV")),
            after: Some(families("cs.AI")),
        };
        let event = change.to_outbox_event();
        assert_eq!(event.event_type, ITEM_CHANGED);
        assert_eq!(event.aggregate_id, "a");
        assert_eq!(
            event.payload,
            json!({
                "v": 1, "id": "a", "version": 3,
                "before": { "group": "Computer Science", "category_code": "cs.CV", "tags": ["cs.CV"] },
                "after": { "group": "Computer Science", "category_code": "cs.AI", "tags": ["cs.AI"] },
            })
        );
        assert_eq!(ItemChange::from_payload(&event.payload).unwrap(), change);
        let text = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<ItemChange>(&text).unwrap(), change);
    }

    #[test]
    fn create_and_delete_have_one_side() {
        let created = ItemChange { id: "a".into(), version: 1, before: None, after: Some(families("cs.CV")) };
        let deleted = ItemChange { id: "a".into(), version: 1, before: Some(families("cs.CV")), after: None };
        assert_eq!(created.event_type(), ITEM_CHANGED);
        assert_eq!(deleted.event_type(), ITEM_DELETED);
        for change in [created, deleted] {
            let payload = change.to_outbox_event().payload;
            assert_eq!(ItemChange::from_payload(&payload).unwrap(), change);
        }
    }

    #[test]
    fn another_payload_version_is_refused_clearly() {
        let future = json!({ "v": 2, "id": "a", "revision": "x" });
        let err = ItemChange::from_payload(&future).unwrap_err();
        assert!(matches!(err, PayloadError::UnsupportedVersion { found: 2 }), "{err:?}");
        assert_eq!(err.to_string(), "the item change payload is version 2; this build reads version 1");
        // the same check holds for plain serde
        let v2 = json!({ "v": 2, "id": "a", "version": 1, "before": null, "after": null });
        let err = serde_json::from_value::<ItemChange>(v2).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        // the format before `v` existed carries no version and is refused too
        let unversioned =
            json!({ "id": "a", "version": 1, "category_code": "cs.CV", "group": "g", "tags": [] });
        assert!(matches!(ItemChange::from_payload(&unversioned), Err(PayloadError::MissingVersion)));
        let malformed = json!({ "v": 1, "id": "a" });
        assert!(matches!(ItemChange::from_payload(&malformed), Err(PayloadError::Malformed(_))));
    }
}
