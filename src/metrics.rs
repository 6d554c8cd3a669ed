//! Every metric castwork exports, named once.
//!
//! Names and labels are documented in `docs/OPERATIONS.md`; the helpers below are
//! the only places that emit them, so a name cannot drift between call sites.

use std::collections::HashMap;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::Method;

/// HTTP requests served, by matched route, method and status.
pub const HTTP_REQUESTS_TOTAL: &str = "castwork_http_requests_total";
/// HTTP request latency in seconds, by matched route, method and status.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "castwork_http_request_duration_seconds";
/// Actor restarts performed by a supervisor, by actor name and cause: the failure that led to
/// it (`failed`, `killed`, `stopped`, `start_failed`) or `sibling` (restarted with a failed sibling).
pub const ACTOR_RESTARTS_TOTAL: &str = "castwork_actor_restarts_total";
/// Actor failures seen by a supervisor, by actor name and kind (`failed`: a panic or a handler
/// error, `killed`, `stopped`, `start_failed`).
pub const ACTOR_FAILURES_TOTAL: &str = "castwork_actor_failures_total";
/// 1 while a supervised actor is marked down (past its restart intensity), else 0.
pub const ACTOR_DOWN: &str = "castwork_actor_down";
/// Circuit-breaker state by breaker: 0 closed, 1 half-open, 2 open, 3 forced open.
pub const BREAKER_STATE: &str = "castwork_breaker_state";
/// Circuit-breaker transitions by breaker, from and to.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "castwork_breaker_transitions_total";
/// Calls a breaker refused (open, forced open, or half-open with every probe slot taken), by breaker.
pub const BREAKER_REJECTED_TOTAL: &str = "castwork_breaker_rejected_total";
/// Database pool connections (all, idle), by state.
pub const DB_POOL_CONNECTIONS: &str = "castwork_db_pool_connections";
/// Database pool configured maximum.
pub const DB_POOL_MAX_CONNECTIONS: &str = "castwork_db_pool_max_connections";
/// Health status per component: 0 ok, 1 degraded, 2 down.
pub const HEALTH_STATUS: &str = "castwork_health_status";
/// Health probe latency in seconds, by component.
pub const HEALTH_PROBE_DURATION_SECONDS: &str = "castwork_health_probe_duration_seconds";
/// Logins refused, by reason (`bad_credentials`, `rate_limited`, `busy`, `error`).
pub const AUTH_LOGIN_FAILURES_TOTAL: &str = "castwork_auth_login_failures_total";
/// Login attempts the limiter refused before any password work, by bucket (`username`, `client`).
pub const AUTH_LOGIN_LIMITED_TOTAL: &str = "castwork_auth_login_limited_total";
/// Password verifications run, by outcome (`match`, `mismatch`, `unknown_user`: the dummy
/// verification for a username that does not exist).
pub const AUTH_PASSWORD_VERIFICATIONS_TOTAL: &str = "castwork_auth_password_verifications_total";
/// Time spent waiting for a password-hashing permit, in seconds.
pub const AUTH_HASHING_WAIT_SECONDS: &str = "castwork_auth_hashing_wait_seconds";
/// Requests refused because no hashing permit came free within `auth.hashing_wait_ms`, by
/// operation (`verify`, `hash`).
pub const AUTH_HASHING_BUSY_TOTAL: &str = "castwork_auth_hashing_busy_total";
/// Password-hashing permits, by state (`total`, `in_use`).
pub const AUTH_HASHING_PERMITS: &str = "castwork_auth_hashing_permits";
/// Sessions revoked on this node, by reason (`logout`, `reuse`, `password_change`, `admin`,
/// `user_gone`).
pub const AUTH_SESSIONS_REVOKED_TOTAL: &str = "castwork_auth_sessions_revoked_total";
/// Revoked sessions held in this node's in-memory deny-list.
pub const AUTH_REVOKED_SESSIONS: &str = "castwork_auth_revoked_sessions";
/// Revocations newly applied to this node's deny-list, by source (`local`, `redis`, `poll`,
/// `startup`).
pub const AUTH_REVOCATIONS_APPLIED_TOTAL: &str = "castwork_auth_revocations_applied_total";
/// Failures keeping the deny-list in step, by operation (`publish`, `poll`, `prune`).
pub const AUTH_REVOCATION_ERRORS_TOTAL: &str = "castwork_auth_revocation_errors_total";
/// Access tokens refused although their signature and claims were valid, by reason
/// (`revoked`: their session is on the deny-list; `overflow`: issued before the deny-list
/// overflowed).
pub const AUTH_TOKENS_REFUSED_TOTAL: &str = "castwork_auth_tokens_refused_total";
/// Chaos actions applied, by actor and action.
pub const CHAOS_ACTIONS_TOTAL: &str = "castwork_chaos_actions_total";

/// Requests refused with 503 `overloaded` by the edge's concurrency limit, by reason
/// (`queue_full`: too many already waiting; `queue_timeout`: no turn within `server.queue_wait_ms`).
pub const HTTP_SHED_TOTAL: &str = "castwork_http_shed_total";

/// Counts one request shed at the edge.
pub fn http_shed(reason: &'static str) {
    metrics::counter!(HTTP_SHED_TOTAL, "reason" => reason).increment(1);
}

/// Records one served HTTP request, looking its series up in the registry. The request path
/// goes through [`HttpRequestMetrics`], which looks each series up once.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    HttpRequestHandles::resolve(route, method, status).record(elapsed);
}

/// Records a failure of a supervised actor.
pub fn actor_failure(actor: &str, kind: &'static str) {
    metrics::counter!(ACTOR_FAILURES_TOTAL, "actor" => actor.to_owned(), "kind" => kind).increment(1);
}

/// Records a restart of a supervised actor.
pub fn actor_restart(actor: &str, cause: &'static str) {
    metrics::counter!(ACTOR_RESTARTS_TOTAL, "actor" => actor.to_owned(), "cause" => cause).increment(1);
}

/// Sets whether a supervised actor is down.
pub fn actor_down(actor: &str, down: bool) {
    metrics::gauge!(ACTOR_DOWN, "actor" => actor.to_owned()).set(if down { 1.0 } else { 0.0 });
}

/// Sets a breaker's current state as its numeric code.
pub fn breaker_state(breaker: &str, code: f64) {
    metrics::gauge!(BREAKER_STATE, "breaker" => breaker.to_owned()).set(code);
}

/// Records one breaker transition.
pub fn breaker_transition(breaker: &str, from: &'static str, to: &'static str) {
    metrics::counter!(BREAKER_TRANSITIONS_TOTAL, "breaker" => breaker.to_owned(), "from" => from, "to" => to)
        .increment(1);
}

/// Records one call rejected by a breaker.
pub fn breaker_rejected(breaker: &str) {
    metrics::counter!(BREAKER_REJECTED_TOTAL, "breaker" => breaker.to_owned()).increment(1);
}

/// Sets the database pool gauges.
pub fn db_pool(size: u32, idle: u32, max: u32) {
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "all").set(f64::from(size));
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    metrics::gauge!(DB_POOL_MAX_CONNECTIONS).set(f64::from(max));
}

/// Records a health probe result for a component.
pub fn health_probe(component: &str, status_code: f64, elapsed: Duration) {
    metrics::gauge!(HEALTH_STATUS, "component" => component.to_owned()).set(status_code);
    metrics::histogram!(HEALTH_PROBE_DURATION_SECONDS, "component" => component.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Records a refused login.
pub fn login_failure(reason: &'static str) {
    metrics::counter!(AUTH_LOGIN_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Counts a login attempt refused by the limiter.
pub fn login_limited(bucket: &'static str) {
    metrics::counter!(AUTH_LOGIN_LIMITED_TOTAL, "bucket" => bucket).increment(1);
}

/// Counts one password verification.
pub fn password_verification(outcome: &'static str) {
    metrics::counter!(AUTH_PASSWORD_VERIFICATIONS_TOTAL, "outcome" => outcome).increment(1);
}

/// Records how long a caller waited for a hashing permit.
pub fn hashing_wait(waited: Duration) {
    metrics::histogram!(AUTH_HASHING_WAIT_SECONDS).record(waited.as_secs_f64());
}

/// Counts a request refused for want of a hashing permit.
pub fn hashing_busy(operation: &'static str) {
    metrics::counter!(AUTH_HASHING_BUSY_TOTAL, "operation" => operation).increment(1);
}

/// Sets the hashing permit gauges.
pub fn hashing_permits(total: usize, in_use: usize) {
    metrics::gauge!(AUTH_HASHING_PERMITS, "state" => "total").set(total as f64);
    metrics::gauge!(AUTH_HASHING_PERMITS, "state" => "in_use").set(in_use as f64);
}

/// Counts revoked sessions.
pub fn auth_sessions_revoked(reason: &'static str, count: u64) {
    metrics::counter!(AUTH_SESSIONS_REVOKED_TOTAL, "reason" => reason).increment(count);
}

/// Sets the size of the in-memory deny-list.
pub fn auth_revoked_sessions(len: usize) {
    metrics::gauge!(AUTH_REVOKED_SESSIONS).set(len as f64);
}

/// Counts one revocation newly applied to the deny-list.
pub fn auth_revocation_applied(source: &'static str) {
    metrics::counter!(AUTH_REVOCATIONS_APPLIED_TOTAL, "source" => source).increment(1);
}

/// Counts one failure keeping the deny-list in step.
pub fn auth_revocation_error(op: &'static str) {
    metrics::counter!(AUTH_REVOCATION_ERRORS_TOTAL, "op" => op).increment(1);
}

/// Counts one access token refused by the deny-list.
pub fn auth_token_refused(reason: &'static str) {
    metrics::counter!(AUTH_TOKENS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Records an applied chaos action.
pub fn chaos_action(actor: &str, action: &'static str) {
    metrics::counter!(CHAOS_ACTIONS_TOTAL, "actor" => actor.to_owned(), "action" => action).increment(1);
}

/// Explore read queries that reached the database.
pub const EXPLORE_DB_LOADS_TOTAL: &str = "castwork_explore_db_loads_total";
/// Item detail views received by the ViewCounter, by outcome: `counted`, `duplicate` (the same
/// user viewed the item within `explore.view_dedup_window_secs`), `dropped` (too many items pending).
pub const EXPLORE_VIEWS_TOTAL: &str = "castwork_explore_views_total";
/// (user, item) pairs the ViewCounter remembers to tell repeated views (refreshed every flush tick).
pub const EXPLORE_VIEW_DEDUP_ENTRIES: &str = "castwork_explore_view_dedup_entries";
/// Remembered (user, item) pairs forgotten before their window ended because the table was full.
pub const EXPLORE_VIEW_DEDUP_EVICTIONS_TOTAL: &str = "castwork_explore_view_dedup_evictions_total";
/// View batches flushed to the database, by outcome (`ok`, `error`).
pub const EXPLORE_VIEW_FLUSHES_TOTAL: &str = "castwork_explore_view_flushes_total";
/// Items imported, by outcome (`inserted`, `updated`, `unchanged`, `rejected`).
pub const IMPORT_ITEMS_TOTAL: &str = "castwork_import_items_total";
/// Item summaries served, by outcome: `stored` (already generated), `generated`, `error`.
pub const EXPLORE_SUMMARIES_TOTAL: &str = "castwork_explore_summaries_total";
/// Items embedded and stored, by source: `indexer` (an item change), `request` (related items of
/// an item with no embedding yet), `job` (`embed_items`).
pub const EXPLORE_EMBEDDINGS_TOTAL: &str = "castwork_explore_embeddings_total";
/// Vectors in this node's semantic index.
pub const EXPLORE_SEMANTIC_INDEX_ITEMS: &str = "castwork_explore_semantic_index_items";
/// Bytes the semantic index's vectors hold.
pub const EXPLORE_SEMANTIC_INDEX_BYTES: &str = "castwork_explore_semantic_index_bytes";
/// Item changes through the semantic indexer's queue, by outcome: `applied`, `dropped` (the queue
/// was full; the index is reloaded).
pub const EXPLORE_INDEXER_CHANGES_TOTAL: &str = "castwork_explore_indexer_changes_total";
/// Searches by meaning, by mode (`semantic`, `hybrid`).
pub const EXPLORE_SEMANTIC_SEARCHES_TOTAL: &str = "castwork_explore_semantic_searches_total";

/// Counts one Explore database read.
pub fn explore_db_load() {
    metrics::counter!(EXPLORE_DB_LOADS_TOTAL).increment(1);
}

/// The handle of the view counter for one outcome (`counted`, `duplicate`, `dropped`), for the
/// ViewCounter to keep and increment without a registry lookup per view.
pub fn explore_views_counter(outcome: &'static str) -> metrics::Counter {
    metrics::counter!(EXPLORE_VIEWS_TOTAL, "outcome" => outcome)
}

/// Sets how many (user, item) pairs the ViewCounter remembers.
pub fn explore_view_dedup_entries(entries: usize) {
    metrics::gauge!(EXPLORE_VIEW_DEDUP_ENTRIES).set(entries as f64);
}

/// Counts remembered pairs forgotten early.
pub fn explore_view_dedup_evictions(count: usize) {
    if count > 0 {
        metrics::counter!(EXPLORE_VIEW_DEDUP_EVICTIONS_TOTAL).increment(count as u64);
    }
}

/// Counts one view flush.
pub fn explore_view_flush(outcome: &'static str) {
    metrics::counter!(EXPLORE_VIEW_FLUSHES_TOTAL, "outcome" => outcome).increment(1);
}

/// Counts imported items by outcome.
pub fn import_items(outcome: &'static str, count: u64) {
    metrics::counter!(IMPORT_ITEMS_TOTAL, "outcome" => outcome).increment(count);
}

/// Counts one item summary served (or failed), by outcome.
pub fn explore_summary(outcome: &'static str) {
    metrics::counter!(EXPLORE_SUMMARIES_TOTAL, "outcome" => outcome).increment(1);
}

/// Counts items embedded and stored, by source.
pub fn explore_embeddings(source: &'static str, count: usize) {
    metrics::counter!(EXPLORE_EMBEDDINGS_TOTAL, "source" => source).increment(count as u64);
}

/// Sets the size of the semantic index.
pub fn explore_semantic_index(items: usize, bytes: usize) {
    metrics::gauge!(EXPLORE_SEMANTIC_INDEX_ITEMS).set(items as f64);
    metrics::gauge!(EXPLORE_SEMANTIC_INDEX_BYTES).set(bytes as f64);
}

/// Counts item changes through the semantic indexer, by outcome.
pub fn explore_indexer_changes(outcome: &'static str, count: usize) {
    metrics::counter!(EXPLORE_INDEXER_CHANGES_TOTAL, "outcome" => outcome).increment(count as u64);
}

/// Counts one search by meaning.
pub fn explore_semantic_search(mode: &'static str) {
    metrics::counter!(EXPLORE_SEMANTIC_SEARCHES_TOTAL, "mode" => mode).increment(1);
}

/// Events published on an in-process event bus, by bus (`item_changes`).
pub const EVENTS_PUBLISHED_TOTAL: &str = "castwork_events_published_total";
/// Inline event subscribers cut off, by bus, subscriber and reason (`panic`, `timeout`).
pub const EVENTS_SUBSCRIBER_FAILURES_TOTAL: &str = "castwork_events_subscriber_failures_total";
/// Events a buffered subscriber lost by falling more than the bus's buffer behind, by bus and
/// subscriber.
pub const EVENTS_LAGGED_TOTAL: &str = "castwork_events_lagged_total";

/// Jobs created, by kind.
pub const JOBS_SUBMITTED_TOTAL: &str = "castwork_jobs_submitted_total";
/// Job attempts ended, by kind and outcome (`succeeded`, `retrying`, `failed`, `cancelled`).
pub const JOBS_FINISHED_TOTAL: &str = "castwork_jobs_finished_total";
/// Job attempt duration in seconds, by kind and outcome.
pub const JOB_DURATION_SECONDS: &str = "castwork_job_duration_seconds";
/// JobWorkers running a job now.
pub const JOB_WORKERS_BUSY: &str = "castwork_job_workers_busy";
/// Deliveries of a job another worker holds, put off until its lease runs out.
pub const JOBS_DEFERRED_TOTAL: &str = "castwork_jobs_deferred_total";
/// Job event streams (`GET /api/v1/jobs/{id}/events`) open on this node.
pub const JOB_STREAMS_OPEN: &str = "castwork_job_streams_open";
/// Outbox rows published (their publish confirmed), by route.
pub const OUTBOX_PUBLISHED_TOTAL: &str = "castwork_outbox_published_total";
/// Outbox publishes that failed (the row stays and is tried again).
pub const OUTBOX_PUBLISH_FAILURES_TOTAL: &str = "castwork_outbox_publish_failures_total";
/// Age in seconds of the oldest unpublished outbox row (0 when none).
pub const OUTBOX_LAG_SECONDS: &str = "castwork_outbox_lag_seconds";
/// Unpublished outbox rows.
pub const OUTBOX_UNPUBLISHED_ROWS: &str = "castwork_outbox_unpublished_rows";
/// Rows deleted by retention, by table (`outbox`, `jobs`).
pub const QUEUE_PRUNED_TOTAL: &str = "castwork_queue_pruned_total";
/// Received events, by type and outcome (`applied`, `duplicate`, `undecodable`).
pub const EVENTS_RECEIVED_TOTAL: &str = "castwork_events_received_total";

/// Counts a job created.
pub fn job_submitted(kind: &str) {
    metrics::counter!(JOBS_SUBMITTED_TOTAL, "kind" => kind.to_owned()).increment(1);
}

/// Records an attempt's end.
pub fn job_finished(kind: &str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(JOBS_FINISHED_TOTAL, "kind" => kind.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(JOB_DURATION_SECONDS, "kind" => kind.to_owned(), "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// One more (`1.0`) or one fewer (`-1.0`) busy worker.
pub fn job_workers_busy(delta: f64) {
    metrics::gauge!(JOB_WORKERS_BUSY).increment(delta);
}

/// One more (`1.0`) or one fewer (`-1.0`) open job event stream.
pub fn job_streams_open(delta: f64) {
    metrics::gauge!(JOB_STREAMS_OPEN).increment(delta);
}

/// Counts a delivery put off.
pub fn job_deferred() {
    metrics::counter!(JOBS_DEFERRED_TOTAL).increment(1);
}

/// Counts outbox rows published.
pub fn outbox_published(route: &'static str, count: u64) {
    metrics::counter!(OUTBOX_PUBLISHED_TOTAL, "route" => route).increment(count);
}

/// Counts an outbox publish that failed.
pub fn outbox_publish_failure() {
    metrics::counter!(OUTBOX_PUBLISH_FAILURES_TOTAL).increment(1);
}

/// The outbox's lag and backlog now.
pub fn outbox_lag(seconds: f64, rows: u64) {
    metrics::gauge!(OUTBOX_LAG_SECONDS).set(seconds);
    metrics::gauge!(OUTBOX_UNPUBLISHED_ROWS).set(rows as f64);
}

/// Counts rows deleted by retention.
pub fn queue_pruned(table: &'static str, count: u64) {
    metrics::counter!(QUEUE_PRUNED_TOTAL, "table" => table).increment(count);
}

/// Counts a received event.
pub fn event_received(event_type: &str, outcome: &'static str) {
    metrics::counter!(EVENTS_RECEIVED_TOTAL, "type" => event_type.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Counts a delivery given back.
pub fn amqp_redelivered() {
    metrics::counter!(AMQP_REDELIVERED_TOTAL).increment(1);
}

/// Counts one published event.
pub fn events_published(bus: &'static str) {
    metrics::counter!(EVENTS_PUBLISHED_TOTAL, "bus" => bus).increment(1);
}

/// Counts one inline subscriber cut off.
pub fn events_subscriber_failure(bus: &'static str, subscriber: &str, reason: &'static str) {
    metrics::counter!(
        EVENTS_SUBSCRIBER_FAILURES_TOTAL,
        "bus" => bus, "subscriber" => subscriber.to_owned(), "reason" => reason
    )
    .increment(1);
}

/// Counts events lost by a lagging subscriber.
pub fn events_lagged(bus: &'static str, subscriber: &str, missed: u64) {
    metrics::counter!(EVENTS_LAGGED_TOTAL, "bus" => bus, "subscriber" => subscriber.to_owned())
        .increment(missed);
}

/// Cache lookups by tier (`l1`, `l2`) and outcome (`hit`, `miss`; `bypass` when no shard
/// could answer and the read went straight to the database).
pub const CACHE_LOOKUPS_TOTAL: &str = "castwork_cache_lookups_total";
/// Reads that bypassed the cache because their shard could not answer, by reason
/// (`shard_down`, `shard_unavailable`) and outcome (`loaded`: sent to the database;
/// `rejected`: refused with 503 `overloaded`, the bypass path being full).
pub const CACHE_BYPASS_TOTAL: &str = "castwork_cache_bypass_total";
/// Cache misses that joined a load already in flight (single flight).
pub const CACHE_COALESCED_TOTAL: &str = "castwork_cache_coalesced_total";
/// L1 entries evicted to stay within the byte budget, or refused as too heavy for it.
pub const CACHE_EVICTIONS_TOTAL: &str = "castwork_cache_evictions_total";
/// Time to fill a miss, by tier (`l2`, `loader`).
pub const CACHE_FILL_DURATION_SECONDS: &str = "castwork_cache_fill_duration_seconds";
/// Invalidations by origin (`local`, `remote`) and kind (`item`, `family`, `flush`).
pub const CACHE_INVALIDATIONS_TOTAL: &str = "castwork_cache_invalidations_total";
/// L1 entries across shards (refreshed when `GET /api/v1/admin/cache` is read).
pub const CACHE_L1_ENTRIES: &str = "castwork_cache_l1_entries";
/// L1 bytes across shards.
pub const CACHE_L1_BYTES: &str = "castwork_cache_l1_bytes";

/// Counts a cache lookup.
pub fn cache_lookup(tier: &'static str, outcome: &'static str) {
    cache_lookup_counter(tier, outcome).increment(1);
}

/// The handle of one lookup counter, for a hot path to keep and increment
/// without a registry lookup each time.
pub fn cache_lookup_counter(tier: &'static str, outcome: &'static str) -> metrics::Counter {
    metrics::counter!(CACHE_LOOKUPS_TOTAL, "tier" => tier, "outcome" => outcome)
}

/// Counts a read that bypassed the cache.
pub fn cache_bypass(reason: &'static str, outcome: &'static str) {
    metrics::counter!(CACHE_BYPASS_TOTAL, "reason" => reason, "outcome" => outcome).increment(1);
}

/// Counts a coalesced miss.
pub fn cache_coalesced() {
    metrics::counter!(CACHE_COALESCED_TOTAL).increment(1);
}

/// Counts an L1 eviction.
pub fn cache_eviction() {
    metrics::counter!(CACHE_EVICTIONS_TOTAL).increment(1);
}

/// Records how long filling a miss took at a tier.
pub fn cache_tier_latency(tier: &'static str, elapsed: Duration) {
    cache_tier_latency_histogram(tier).record(elapsed.as_secs_f64());
}

/// The handle of one tier's latency histogram, to record many samples with one lookup.
pub fn cache_tier_latency_histogram(tier: &'static str) -> metrics::Histogram {
    metrics::histogram!(CACHE_FILL_DURATION_SECONDS, "tier" => tier)
}

/// Counts an invalidation.
pub fn cache_invalidation(origin: &'static str, kind: &'static str) {
    metrics::counter!(CACHE_INVALIDATIONS_TOTAL, "origin" => origin, "kind" => kind).increment(1);
}

/// Sets the L1 size gauges.
pub fn cache_l1_size(entries: u64, bytes: u64) {
    metrics::gauge!(CACHE_L1_ENTRIES).set(entries as f64);
    metrics::gauge!(CACHE_L1_BYTES).set(bytes as f64);
}

/// Cache loads that gave no value, by reason: `error` (the loader returned an error),
/// `timeout` (given up at `cache.load_timeout_ms`), `panic` (the loader panicked).
pub const CACHE_LOAD_FAILURES_TOTAL: &str = "castwork_cache_load_failures_total";
/// Misses not queued for the L2 reader, by reason (`queue_full`: `cache.redis.max_queued_reads`
/// were waiting; `reader_down`: the reader was restarting): they went straight to the loader.
pub const CACHE_L2_READS_REFUSED_TOTAL: &str = "castwork_cache_l2_reads_refused_total";
/// Catch-ups after a Redis reconnection (families bumped during the outage pushed to Redis),
/// by outcome: `pushed`, `retry` (Redis refused; tried again later), `gave_up` (left for the
/// next invalidation to take along).
pub const CACHE_RESYNCS_TOTAL: &str = "castwork_cache_resyncs_total";

/// Counts a failed cache load.
pub fn cache_load_failure(reason: &'static str) {
    metrics::counter!(CACHE_LOAD_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Counts a miss the L2 reader did not take.
pub fn cache_l2_read_refused(reason: &'static str) {
    metrics::counter!(CACHE_L2_READS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts one step of a post-outage catch-up.
pub fn cache_resync(outcome: &'static str) {
    metrics::counter!(CACHE_RESYNCS_TOTAL, "outcome" => outcome).increment(1);
}

/// Redis (L2) operations through the breaker, by op (`mget`, `set`, `del`, `incr`, `publish`, and
/// `ping`: the health probe's trial while the breaker is not closed) and outcome (`ok`, `error`,
/// `timeout`, `rejected`: turned away by the breaker). The probe's unguarded `PING` is not counted.
pub const CACHE_REDIS_OPS_TOTAL: &str = "castwork_cache_redis_ops_total";
/// Redis (L2) operation latency in seconds, by op; calls rejected by the breaker are not timed.
pub const CACHE_REDIS_DURATION_SECONDS: &str = "castwork_cache_redis_duration_seconds";

/// Counts one Redis operation and, unless the breaker rejected it, records its latency.
pub fn cache_redis_op(op: &'static str, outcome: &'static str, elapsed: Option<Duration>) {
    metrics::counter!(CACHE_REDIS_OPS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
    if let Some(elapsed) = elapsed {
        metrics::histogram!(CACHE_REDIS_DURATION_SECONDS, "op" => op).record(elapsed.as_secs_f64());
    }
}

/// Client connections open now.
pub const HTTP_CONNECTIONS_OPEN: &str = "castwork_http_connections_open";
/// Client connections accepted.
pub const HTTP_CONNECTIONS_ACCEPTED_TOTAL: &str = "castwork_http_connections_accepted_total";
/// Connections castwork closed before the client did, by reason (`header_timeout`,
/// `idle_timeout`, `evicted`: closed at the connection cap to admit a newer one,
/// `write_timeout`: the client read nothing for `server.write_timeout_secs`).
pub const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "castwork_http_connections_closed_total";
/// Failed accepts, by kind (`fd_limit`: EMFILE/ENFILE, `peer`: reset before accept, `other`).
pub const HTTP_ACCEPT_ERRORS_TOTAL: &str = "castwork_http_accept_errors_total";
/// Requests refused at the edge before routing, by reason (`uri_too_long`, `headers_too_large`).
pub const HTTP_REQUESTS_REFUSED_TOTAL: &str = "castwork_http_requests_refused_total";
/// Incoming `X-Request-Id`s replaced by a generated one (too long, or not visible ASCII).
pub const HTTP_REQUEST_IDS_REPLACED_TOTAL: &str = "castwork_http_request_ids_replaced_total";

/// Counts an accepted connection.
pub fn http_connection_accepted() {
    metrics::counter!(HTTP_CONNECTIONS_ACCEPTED_TOTAL).increment(1);
}

/// Raises the open-connections gauge.
pub fn http_connection_opened() {
    metrics::gauge!(HTTP_CONNECTIONS_OPEN).increment(1.0);
}

/// Lowers the open-connections gauge.
pub fn http_connection_ended() {
    metrics::gauge!(HTTP_CONNECTIONS_OPEN).decrement(1.0);
}

/// Counts a connection castwork closed, by reason.
pub fn http_connection_closed(reason: &'static str) {
    metrics::counter!(HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts a failed accept, by kind.
pub fn http_accept_error(kind: &'static str) {
    metrics::counter!(HTTP_ACCEPT_ERRORS_TOTAL, "kind" => kind).increment(1);
}

/// Counts a request refused before routing, by reason.
pub fn http_request_refused(reason: &'static str) {
    metrics::counter!(HTTP_REQUESTS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts a replaced request id.
pub fn http_request_id_replaced() {
    metrics::counter!(HTTP_REQUEST_IDS_REPLACED_TOTAL).increment(1);
}

/// Messages sent to RabbitMQ, by route (`work`, `retry`, `dead`, `event`).
pub const AMQP_PUBLISHED_TOTAL: &str = "castwork_amqp_published_total";
/// Publishes RabbitMQ confirmed.
pub const AMQP_CONFIRMED_TOTAL: &str = "castwork_amqp_confirmed_total";
/// Publishes RabbitMQ refused (a negative confirm) or returned as unroutable.
pub const AMQP_NACKED_TOTAL: &str = "castwork_amqp_nacked_total";
/// Deliveries received from RabbitMQ, by queue (`work`, `events`).
pub const AMQP_CONSUMED_TOTAL: &str = "castwork_amqp_consumed_total";
/// Deliveries acknowledged to RabbitMQ.
pub const AMQP_ACKED_TOTAL: &str = "castwork_amqp_acked_total";
/// Work deliveries sent on to the dead-letter queue.
pub const AMQP_DEAD_LETTERED_TOTAL: &str = "castwork_amqp_dead_lettered_total";
/// Deliveries RabbitMQ marked as delivered before.
pub const AMQP_REDELIVERED_TOTAL: &str = "castwork_amqp_redelivered_total";
/// 1 while the node is connected to RabbitMQ (topology declared, consumers running), else 0.
pub const AMQP_CONNECTED: &str = "castwork_amqp_connected";
/// Connections to RabbitMQ established again after one was lost.
pub const AMQP_RECONNECTS_TOTAL: &str = "castwork_amqp_reconnects_total";

/// Counts a message sent to RabbitMQ.
pub fn amqp_published(route: &'static str) {
    metrics::counter!(AMQP_PUBLISHED_TOTAL, "route" => route).increment(1);
}

/// Counts a publish confirmed by RabbitMQ.
pub fn amqp_confirmed() {
    metrics::counter!(AMQP_CONFIRMED_TOTAL).increment(1);
}

/// Counts a publish RabbitMQ refused or returned.
pub fn amqp_nacked() {
    metrics::counter!(AMQP_NACKED_TOTAL).increment(1);
}

/// Counts a delivery received, and whether it was a redelivery.
pub fn amqp_consumed(queue: &'static str, redelivered: bool) {
    metrics::counter!(AMQP_CONSUMED_TOTAL, "queue" => queue).increment(1);
    if redelivered {
        metrics::counter!(AMQP_REDELIVERED_TOTAL).increment(1);
    }
}

/// Counts a delivery acknowledged.
pub fn amqp_acked() {
    metrics::counter!(AMQP_ACKED_TOTAL).increment(1);
}

/// Counts a work delivery sent on to the dead-letter queue.
pub fn amqp_dead_lettered() {
    metrics::counter!(AMQP_DEAD_LETTERED_TOTAL).increment(1);
}

/// Sets whether the node is connected to RabbitMQ.
pub fn amqp_connected(connected: bool) {
    metrics::gauge!(AMQP_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// Counts a connection to RabbitMQ established again after one was lost.
pub fn amqp_reconnect() {
    metrics::counter!(AMQP_RECONNECTS_TOTAL).increment(1);
}

/// The request counter and latency histogram of one (route, method, status) series.
#[derive(Clone)]
struct HttpRequestHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpRequestHandles {
    /// Looks both series up in the registry (this builds the label strings).
    fn resolve(route: &str, method: &str, status: u16) -> Self {
        let labels =
            [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
        Self {
            requests: metrics::counter!(HTTP_REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, &labels),
        }
    }

    fn record(&self, elapsed: Duration) {
        self.requests.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// The (method, status) series seen on one route, with their handles.
type RouteSeries = Vec<(Method, u16, HttpRequestHandles)>;

/// [`HTTP_REQUESTS_TOTAL`] and [`HTTP_REQUEST_DURATION_SECONDS`] for the request path: the
/// handles of each (route, method, status) series are looked up in the registry the first time
/// the series is seen and kept, so a request after that builds no label string and takes no
/// registry lock: it reads a copy-on-write map (one atomic load), hashes its route template and
/// scans that route's few (method, status) pairs.
///
/// The map is bounded: at most [`Self::MAX_ROUTES`] routes (route templates and `unmatched`)
/// and [`Self::MAX_SERIES_PER_ROUTE`] (method, status) pairs per route are kept; a series past
/// that (clients inventing methods) is still counted, by a registry lookup per request.
///
/// Handles belong to the recorder installed when they were resolved, so one value of this type
/// should not outlive a change of the global recorder; the router builds one per router.
#[derive(Default)]
pub struct HttpRequestMetrics {
    routes: ArcSwap<HashMap<Box<str>, RouteSeries>>,
}

impl HttpRequestMetrics {
    /// Most routes whose handles are kept.
    pub const MAX_ROUTES: usize = 512;
    /// Most (method, status) pairs whose handles are kept per route.
    pub const MAX_SERIES_PER_ROUTE: usize = 64;

    /// An empty set of handles.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one served request: `route` is the matched route template, or `unmatched`.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let known = self.routes.load();
        let series = known.get(route).and_then(|series| {
            series.iter().find(|(m, s, _)| *s == status && m == method).map(|(_, _, handles)| handles)
        });
        if let Some(handles) = series {
            handles.record(elapsed);
            return;
        }
        let room = match known.get(route) {
            Some(series) => series.len() < Self::MAX_SERIES_PER_ROUTE,
            None => known.len() < Self::MAX_ROUTES,
        };
        drop(known);
        let handles = HttpRequestHandles::resolve(route, method.as_str(), status);
        handles.record(elapsed);
        if room {
            self.remember(route, method, status, handles);
        }
    }

    /// How many series have their handles kept.
    pub fn series(&self) -> usize {
        self.routes.load().values().map(Vec::len).sum()
    }

    fn remember(&self, route: &str, method: &Method, status: u16, handles: HttpRequestHandles) {
        self.routes.rcu(|known| {
            let mut routes = HashMap::clone(known);
            if !routes.contains_key(route) && routes.len() >= Self::MAX_ROUTES {
                return routes;
            }
            let series = routes.entry(Box::from(route)).or_default();
            let seen = series.iter().any(|(m, s, _)| *s == status && m == method);
            if !seen && series.len() < Self::MAX_SERIES_PER_ROUTE {
                series.push((method.clone(), status, handles.clone()));
            }
            routes
        });
    }
}

/// Inference requests ended, by public model, backend (`none` when none served),
/// kind (`chat`, `embed`) and outcome (`ok`, or the error's kind).
pub const INFERENCE_REQUESTS_TOTAL: &str = "castwork_inference_requests_total";
/// Tokens read (`in`: prompts) and generated (`out`), by public model.
pub const INFERENCE_TOKENS_TOTAL: &str = "castwork_inference_tokens_total";
/// Seconds from a generation's start on a worker to its first event, by backend.
pub const INFERENCE_TIME_TO_FIRST_TOKEN_SECONDS: &str = "castwork_inference_time_to_first_token_seconds";
/// Decoding speed of each finished generation (tokens/s), by backend.
pub const INFERENCE_TOKENS_PER_SECOND: &str = "castwork_inference_tokens_per_second";
/// Requests waiting for an InferenceActor, by backend.
pub const INFERENCE_QUEUE_DEPTH: &str = "castwork_inference_queue_depth";
/// Requests (or embedding asks) refused because a backend's queue was full, by backend.
pub const INFERENCE_SHED_TOTAL: &str = "castwork_inference_shed_total";
/// Attempts that failed before the first token and moved on, by backend and kind
/// (`retryable`, `rate_limited`, `timeout`, `truncated`, `fatal`, `worker_lost`).
pub const INFERENCE_ATTEMPT_FAILURES_TOTAL: &str = "castwork_inference_attempt_failures_total";
/// Requests served by another deployment or model than their first choice, by
/// asked model and serving backend.
pub const INFERENCE_FALLBACKS_TOTAL: &str = "castwork_inference_fallbacks_total";
/// Response cache lookups, by outcome (`hit`, `miss`, `bypass`).
pub const INFERENCE_CACHE_TOTAL: &str = "castwork_inference_cache_total";
/// Generations stopped because their client left, by backend.
pub const INFERENCE_CANCELLED_TOTAL: &str = "castwork_inference_cancelled_total";
/// InferenceActors replaced because a request held them past its deadline, by backend.
pub const INFERENCE_STUCK_WORKERS_TOTAL: &str = "castwork_inference_stuck_workers_total";
/// Texts per embedding forward pass, by backend.
pub const INFERENCE_EMBED_BATCH_SIZE: &str = "castwork_inference_embed_batch_size";
/// Requests refused by the per-user token budget, by role.
pub const INFERENCE_BUDGET_EXCEEDED_TOTAL: &str = "castwork_inference_budget_exceeded_total";

/// Counts an inference request's end.
pub fn inference_request(model: &str, backend: &str, kind: &'static str, outcome: &'static str) {
    metrics::counter!(INFERENCE_REQUESTS_TOTAL, "model" => model.to_owned(), "backend" => backend.to_owned(),
        "kind" => kind, "outcome" => outcome)
    .increment(1);
}

/// Counts tokens read or generated.
pub fn inference_tokens(model: &str, direction: &'static str, count: u64) {
    metrics::counter!(INFERENCE_TOKENS_TOTAL, "model" => model.to_owned(), "direction" => direction)
        .increment(count);
}

/// Records a generation's time to first token.
pub fn inference_first_token(backend: &str, elapsed: Duration) {
    metrics::histogram!(INFERENCE_TIME_TO_FIRST_TOKEN_SECONDS, "backend" => backend.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Records a finished generation's decoding speed.
pub fn inference_tokens_per_second(backend: &str, rate: f64) {
    metrics::histogram!(INFERENCE_TOKENS_PER_SECOND, "backend" => backend.to_owned()).record(rate);
}

/// Sets a backend's queue depth.
pub fn inference_queue_depth(backend: &str, depth: usize) {
    metrics::gauge!(INFERENCE_QUEUE_DEPTH, "backend" => backend.to_owned()).set(depth as f64);
}

/// Counts a request shed by a full queue.
pub fn inference_shed(backend: &str) {
    metrics::counter!(INFERENCE_SHED_TOTAL, "backend" => backend.to_owned()).increment(1);
}

/// Counts an attempt that failed before its first token.
pub fn inference_attempt_failed(backend: &str, kind: &'static str) {
    metrics::counter!(INFERENCE_ATTEMPT_FAILURES_TOTAL, "backend" => backend.to_owned(), "kind" => kind)
        .increment(1);
}

/// Counts a request served by a fallback.
pub fn inference_fallback(model: &str, backend: &str) {
    metrics::counter!(INFERENCE_FALLBACKS_TOTAL, "model" => model.to_owned(), "backend" => backend.to_owned())
        .increment(1);
}

/// Counts a response cache lookup.
pub fn inference_cache(outcome: &'static str) {
    metrics::counter!(INFERENCE_CACHE_TOTAL, "outcome" => outcome).increment(1);
}

/// Counts a generation stopped by its client leaving.
pub fn inference_cancelled(backend: &str) {
    metrics::counter!(INFERENCE_CANCELLED_TOTAL, "backend" => backend.to_owned()).increment(1);
}

/// Counts a stuck worker replaced.
pub fn inference_stuck_worker(backend: &str) {
    metrics::counter!(INFERENCE_STUCK_WORKERS_TOTAL, "backend" => backend.to_owned()).increment(1);
}

/// Records an embedding batch's size.
pub fn inference_embed_batch(backend: &str, texts: usize) {
    metrics::histogram!(INFERENCE_EMBED_BATCH_SIZE, "backend" => backend.to_owned()).record(texts as f64);
}

/// Counts a request refused by a token budget.
pub fn inference_budget_exceeded(role: &'static str) {
    metrics::counter!(INFERENCE_BUDGET_EXCEEDED_TOTAL, "role" => role).increment(1);
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// The value of the `castwork_http_requests_total` sample whose labels are `labels`.
    fn requests(rendered: &str, labels: &str) -> Option<u64> {
        let prefix = format!("{HTTP_REQUESTS_TOTAL}{{{labels}}} ");
        rendered.lines().find_map(|line| line.strip_prefix(prefix.as_str())).and_then(|v| v.parse().ok())
    }

    #[test]
    fn http_requests_are_counted_once_per_request_through_handles_kept_per_series() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let http = HttpRequestMetrics::new();
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                http.record("/api/v1/explore/items/{id}", &Method::GET, 200, Duration::from_millis(2));
            }
            http.record("/api/v1/explore/items/{id}", &Method::GET, 404, Duration::from_millis(1));
            http.record("unmatched", &Method::POST, 401, Duration::from_millis(1));
        });
        assert_eq!(http.series(), 3, "one set of handles per (route, method, status)");
        let rendered = handle.render();
        let item = r#"route="/api/v1/explore/items/{id}",method="GET""#;
        assert_eq!(requests(&rendered, &format!(r#"{item},status="200""#)), Some(3), "{rendered}");
        assert_eq!(requests(&rendered, &format!(r#"{item},status="404""#)), Some(1), "{rendered}");
        assert_eq!(
            requests(&rendered, r#"route="unmatched",method="POST",status="401""#),
            Some(1),
            "{rendered}"
        );
        assert!(
            rendered.contains(&format!(r#"{HTTP_REQUEST_DURATION_SECONDS}_count{{{item},status="200"}} 3"#)),
            "{rendered}"
        );
    }

    #[test]
    fn series_past_the_bound_are_still_counted_but_not_kept() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let http = HttpRequestMetrics::new();
        let extra = 5;
        metrics::with_local_recorder(&recorder, || {
            for i in 0..HttpRequestMetrics::MAX_SERIES_PER_ROUTE + extra {
                let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
                http.record("unmatched", &method, 405, Duration::ZERO);
                http.record("unmatched", &method, 405, Duration::ZERO);
            }
        });
        assert_eq!(http.series(), HttpRequestMetrics::MAX_SERIES_PER_ROUTE);
        let last = HttpRequestMetrics::MAX_SERIES_PER_ROUTE + extra - 1;
        let rendered = handle.render();
        assert_eq!(
            requests(&rendered, &format!(r#"route="unmatched",method="M{last}",status="405""#)),
            Some(2),
            "{rendered}"
        );
    }
}
