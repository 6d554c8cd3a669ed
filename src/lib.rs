//! castwork: a backend built as a tree of supervised actors.
//!
//! # Module map
//! | module | what lives there |
//! |---|---|
//! | [`config`] | layered configuration (`config/default.toml` < `config/$CASTWORK_ENV.toml` < `CASTWORK_*`), validation, secrets |
//! | [`telemetry`] | tracing subscriber and the Prometheus recorder |
//! | [`metrics`] | every metric name, and the helpers that emit them |
//! | [`db`] | connection (SQLite default, PostgreSQL), migrations, entities, private data files, which errors mean unavailable |
//! | [`auth`] | users, argon2id passwords (bounded hashing, strength policy), JWT access tokens, rotating refresh tokens, login slow-down, the revoked-session deny-list |
//! | [`supervision`] | restart strategies, intensity, backoff, circuit breaker, the generic supervisor, the tree snapshot |
//! | [`explore`] | the catalogue: typed queries, reads, writes, import, trending, the cached reads |
//! | [`cache`] | the sharded Explore cache: routing, L2 over Redis, generations, value format |
//! | [`outbox`] | the transactional outbox written with every item change |
//! | [`http`] | the axum router, one file per API area, the error model |
//! | [`server`] | the HTTP/1 accept loop: connection cap, header-read and idle timeouts, open-file limit |
//! | [`startup`] | [`startup::Application`]: build a node, run it, shut it down gracefully |
//! | [`cli`] | the `castwork` command line |
//!
//! A request flows: axum handler → (auth middleware) → ask an actor through its
//! [`supervision::slot::ActorSlot`] with a deadline → map the answer or the
//! timeout to HTTP in [`http::error`].

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod explore;
pub mod health;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod runtime;
pub mod server;
pub mod startup;
pub mod supervision;
pub mod telemetry;
