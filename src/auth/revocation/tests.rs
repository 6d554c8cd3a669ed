//! [`Revocations`] against a fresh SQLite file per test: two instances on one database stand
//! for two nodes.

use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait};

use super::*;
use crate::db::entities::revoked_session;
use crate::db::testing::TempSqlite;

async fn setup() -> TempSqlite {
    TempSqlite::new().await
}

fn sids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

async fn rows(db: &DatabaseConnection) -> u64 {
    revoked_session::Entity::find().count(db).await.unwrap()
}

#[tokio::test]
async fn a_revocation_is_held_at_once_and_persisted() {
    let test = setup().await;
    let node = Revocations::new(test.db.clone(), 900, 100);
    node.revoke(&sids(&["s1", "s2"]), Reason::Logout).await.unwrap();
    assert!(node.list().contains("s1") && node.list().contains("s2"));
    assert_eq!(rows(&test.db).await, 2);
    // revoking again keeps one row per session
    node.revoke(&sids(&["s1"]), Reason::Admin).await.unwrap();
    assert_eq!(rows(&test.db).await, 2);
}

#[tokio::test]
async fn a_node_started_later_loads_the_list_and_another_polls_it() {
    let test = setup().await;
    let first = Revocations::new(test.db.clone(), 900, 100);
    let second = Revocations::new(test.db.clone(), 900, 100);
    second.load().await.unwrap();
    first.revoke(&sids(&["s1"]), Reason::Logout).await.unwrap();
    assert!(!second.list().contains("s1"), "not before it polls");
    assert_eq!(second.poll().await.unwrap(), 1);
    assert!(second.list().contains("s1"));
    assert_eq!(second.poll().await.unwrap(), 0, "nothing new");

    let restarted = Revocations::new(test.db.clone(), 900, 100);
    assert_eq!(restarted.load().await.unwrap(), 1);
    assert!(restarted.list().contains("s1"));
}

#[tokio::test]
async fn expired_revocations_are_pruned_from_memory_and_the_table() {
    let test = setup().await;
    let node = Revocations::new(test.db.clone(), 900, 100);
    node.revoke(&sids(&["live"]), Reason::Logout).await.unwrap();
    let long_ago = Utc::now() - chrono::TimeDelta::hours(1);
    revoked_session::Entity::insert(revoked_session::ActiveModel {
        sid: Set("expired".to_owned()),
        expires_at: Set(long_ago),
        revoked_at: Set(long_ago),
        ..Default::default()
    })
    .exec(&test.db)
    .await
    .unwrap();
    node.list().insert("expired", u64::try_from(long_ago.timestamp()).unwrap(), 0);
    assert_eq!(rows(&test.db).await, 2);

    // a node starting now does not load what has expired
    let other = Revocations::new(test.db.clone(), 900, 100);
    assert_eq!(other.load().await.unwrap(), 1);
    assert!(!other.list().contains("expired"));

    assert_eq!(node.prune().await.unwrap(), 1);
    assert_eq!(rows(&test.db).await, 1);
    assert!(!node.list().contains("expired"));
    assert!(node.list().contains("live"));
}

#[tokio::test]
async fn announcements_from_other_nodes_are_applied() {
    let test = setup().await;
    let node = Revocations::new(test.db.clone(), 900, 100);
    let until = now_secs() + 900;
    node.apply_remote(&format!(r#"{{"sids":["s1","s2"],"until":{until}}}"#));
    assert!(node.list().contains("s1") && node.list().contains("s2"));
    node.apply_remote("not json");
    node.apply_remote(r#"{"sids":"s3"}"#);
    assert_eq!(node.list().len(), 2);
}

#[tokio::test]
async fn a_full_list_refuses_older_tokens_instead_of_forgetting() {
    let test = setup().await;
    let node = Revocations::new(test.db.clone(), 900, 2);
    let now = now_secs();
    node.revoke(&sids(&["a", "b", "c"]), Reason::Admin).await.unwrap();
    assert_eq!(node.list().len(), 2);
    // "c" is not held, but no token issued up to now is trusted either
    assert_eq!(node.list().check("c", now, now), Err(Refusal::Overflow));
    assert_eq!(rows(&test.db).await, 3, "the table holds every revocation");
}
