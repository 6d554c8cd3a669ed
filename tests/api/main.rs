//! castwork's integration tests: real HTTP against a node on port 0, a fresh
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]
//! database per test (a temp SQLite file or a UUID-named PostgreSQL database).

mod helpers;
/// Runs a test once per backend (`castwork::db::testing`).
pub(crate) use castwork::on_both_backends as both;
mod support;

mod auth;
mod backup;
mod cache;
mod cache_backpressure;
mod chaos;
mod config;
mod degraded;
mod docs;
mod drain;
mod edge;
mod errors;
mod explore;
mod files;
mod health;
mod import;
mod inference;
mod items;
mod jobs_api;
mod jobs_kinds;
mod login_hardening;
mod openapi;
mod openapi_rules;
mod proxy_smoke;
mod queue_amqp;
mod queue_events;
mod redis_outage;
mod revocation_sync;
mod semantic;
mod sessions;
mod views;
