//! castwork: a backend built as a tree of supervised actors.
//!
//! # Module map
//! Folders by concern: each concern owns its actors, its subtree (`tree.rs`,
//! `child_spec()`) and the probes of its dependencies; [`runtime`] only assembles
//! them. Imports flow one way: [`http`] → [`runtime`] → concerns ([`explore`] →
//! [`cache`]; [`auth`] → [`cache::redis`]; [`cache`] → [`health::probe`]) →
//! [`supervision`], [`db`], [`config`], [`metrics`] (docs/adr/0007-layout-by-concern.md).
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | layered configuration (`config/default.toml` < `config/$CASTWORK_ENV.toml` < `CASTWORK_*`), validation, secrets |
//! | [`telemetry`] | tracing subscriber and the Prometheus recorder |
//! | [`metrics`] | every metric name, and the helpers that emit them |
//! | [`db`] | connection (SQLite default, PostgreSQL), migrations, entities, private data files, which errors mean unavailable |
//! | [`auth`] | users, argon2id passwords (bounded hashing, strength policy), JWT access tokens, rotating refresh tokens, login slow-down, the revoked-session deny-list and the RevocationSync actor |
//! | [`supervision`] | restart strategies and policies, intensity, backoff, circuit breaker, the generic supervisor (dynamic children, async starts), lifecycle events and the down set, the tree snapshot, [`supervision::root::RootTree`] (the root, tracked tasks, chaos, the draining shutdown) |
//! | [`events`] | the in-process event bus: inline and buffered subscribers, bounded, isolated from each other |
//! | [`health`] | the `Probe` trait, the database probe, the HealthActor and its subtree |
//! | [`inference`] | generation and embeddings: the `LlmBackend` trait, the local (candle) and OpenAI-compatible backends, the InferenceActor pools, routing and fallbacks, batching, the response cache, token budgets |
//! | [`explore`] | the catalogue: typed queries, reads, writes, import, trending, the cached reads; the ViewCounter and its subtree; [`explore::ItemChange`] and its bus |
//! | [`cache`] | the sharded Explore cache: the shard actors, the listener, the L2 reader, its subtree, L2 over Redis and its probe, generations, value format |
//! | [`runtime`] | [`runtime::Runtime`]: assembles the concerns' subtrees and probes into a node's actor tree |
//! | [`outbox`] | the transactional outbox written with every item change (payload: [`explore::ItemChange`]) |
//! | [`backup`] | online backups of the database (one consistent snapshot, a tar of JSON Lines per table, sealed with XChaCha20-Poly1305 when a key is set), retention, verified restores |
//! | [`http`] | the axum router, one file per API area, the error model |
//! | [`server`] | the HTTP/1 accept loop: connection cap, header-read and idle timeouts, open-file limit |
//! | [`startup`] | [`startup::Application`]: build a node, run it, shut it down gracefully |
//! | [`cli`] | the `castwork` command line; [`cli::jobs`]: the client of a running node's jobs API (`castwork jobs ...`) |
//!
//! A request flows: axum handler → (auth middleware) → ask an actor through its
//! [`supervision::slot::ActorSlot`] with a deadline → map the answer or the
//! timeout to HTTP in [`http::error`].

pub mod auth;
pub mod backup;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod events;
pub mod explore;
pub mod health;
pub mod http;
pub mod inference;
pub mod metrics;
pub mod outbox;
pub mod queue;
pub mod runtime;
pub mod server;
pub mod startup;
pub mod supervision;
pub mod telemetry;
