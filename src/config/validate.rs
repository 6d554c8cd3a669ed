//! [`Settings::validate`]: every value that parses but makes no sense is refused, naming its key.

use std::time::Duration;

use super::*;

impl Settings {
    /// Checks every value that parses but makes no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, reason: reason.into() })
        }
        if self.server.host.trim().is_empty() {
            return bad("server.host", "must not be empty");
        }
        if self.server.body_limit_bytes < 1024 {
            return bad("server.body_limit_bytes", "must be at least 1024");
        }
        if self.server.request_timeout_secs == 0 {
            return bad("server.request_timeout_secs", "must be at least 1");
        }
        if self.server.header_read_timeout_secs == 0 {
            return bad("server.header_read_timeout_secs", "must be at least 1");
        }
        if self.server.idle_timeout_secs == 0 {
            return bad("server.idle_timeout_secs", "must be at least 1");
        }
        if self.server.write_timeout_secs == 0 {
            return bad("server.write_timeout_secs", "must be at least 1");
        }
        if self.server.max_connections > 1_000_000 {
            return bad(
                "server.max_connections",
                "must be 0 (derived from the open-file limit) or at most 1000000",
            );
        }
        if self.server.max_in_flight_requests > 1_000_000 {
            return bad("server.max_in_flight_requests", "must be 0 (no limit) or at most 1000000");
        }
        if self.server.max_queued_requests > 1_000_000 {
            return bad("server.max_queued_requests", "must be at most 1000000");
        }
        if self.server.queue_wait_ms > self.server.request_timeout_secs.saturating_mul(1000) {
            return bad(
                "server.queue_wait_ms",
                "must be at most server.request_timeout_secs (in milliseconds)",
            );
        }
        if !(256..=HYPER_MAX_URI_BYTES).contains(&self.server.max_uri_bytes) {
            return bad("server.max_uri_bytes", "must be between 256 and 65534");
        }
        if !(1024..=1024 * 1024).contains(&self.server.max_header_bytes) {
            return bad("server.max_header_bytes", "must be between 1024 and 1048576");
        }
        if !(8..=1000).contains(&self.server.max_headers) {
            return bad("server.max_headers", "must be between 8 and 1000");
        }
        if let Err(reason) = self.server.trusted_proxy_networks() {
            return bad("server.trusted_proxies", reason);
        }
        let url = self.database.url.expose();
        let known_scheme = ["sqlite:", "postgres://", "postgresql://"].iter().any(|s| url.starts_with(s));
        if !url.is_empty() && !known_scheme {
            return bad("database.url", "must start with sqlite:, postgres:// or postgresql://");
        }
        if self.database.connect_timeout_secs == 0 {
            return bad("database.connect_timeout_secs", "must be at least 1");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        let auth = &self.auth;
        if auth.issuer.is_empty() {
            return bad("auth.issuer", "must not be empty");
        }
        if auth.audience.is_empty() {
            return bad("auth.audience", "must not be empty");
        }
        if !(10..=86_400).contains(&auth.access_ttl_secs) {
            return bad("auth.access_ttl_secs", "must be between 10 and 86400");
        }
        if auth.refresh_ttl_secs < auth.access_ttl_secs {
            return bad("auth.refresh_ttl_secs", "must be at least auth.access_ttl_secs");
        }
        if auth.login_burst == 0 {
            return bad("auth.login_burst", "must be at least 1");
        }
        if auth.login_per_minute == 0 {
            return bad("auth.login_per_minute", "must be at least 1");
        }
        if auth.hashing_concurrency > 1024 {
            return bad("auth.hashing_concurrency", "must be between 0 (one per core) and 1024");
        }
        if auth.hashing_wait_ms >= self.server.request_timeout_secs.saturating_mul(1000) {
            return bad("auth.hashing_wait_ms", "must be less than server.request_timeout_secs");
        }
        if auth.password_min_score > PASSWORD_MAX_SCORE {
            return bad("auth.password_min_score", "must be between 0 and 4 (zxcvbn's scale)");
        }
        if !(10..=60_000).contains(&auth.revocation_poll_ms) {
            return bad("auth.revocation_poll_ms", "must be between 10 and 60000");
        }
        if auth.revocation_max_entries == 0 {
            return bad("auth.revocation_max_entries", "must be at least 1");
        }
        match auth.algorithm {
            JwtAlgorithm::HS256 => {
                let len = auth.jwt_secret.expose().len();
                if len > 0 && len < 32 {
                    return bad("auth.jwt_secret", "must be at least 32 bytes");
                }
                if self.environment.is_production() {
                    if len == 0 {
                        return bad(
                            "auth.jwt_secret",
                            "is required in production (generate one with `openssl rand -base64 48`)",
                        );
                    }
                    let bits = estimated_entropy_bits(auth.jwt_secret.expose().as_bytes());
                    if bits < MIN_SECRET_BITS {
                        return bad(
                            "auth.jwt_secret",
                            format!(
                                "is too predictable for production (about {bits:.0} bits estimated, \
                                 {MIN_SECRET_BITS:.0} needed): generate one with `openssl rand -base64 48`"
                            ),
                        );
                    }
                }
            }
            JwtAlgorithm::EdDSA | JwtAlgorithm::RS256 => {
                if auth.private_key_path.is_empty() {
                    return bad("auth.private_key_path", "is required for EdDSA and RS256");
                }
                if auth.public_key_path.is_empty() {
                    return bad("auth.public_key_path", "is required for EdDSA and RS256");
                }
            }
        }
        if self.environment.is_production() && self.chaos.enabled {
            return bad("chaos.enabled", "must be false in production");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad("log.level", "is not a valid filter directive (e.g. \"info,castwork=debug\")");
        }
        if self.health.probe_interval_ms < 10 {
            return bad("health.probe_interval_ms", "must be at least 10");
        }
        if self.health.probe_timeout_ms == 0 {
            return bad("health.probe_timeout_ms", "must be at least 1");
        }
        self.validate_queue()?;
        self.inference.validate()?;
        let sup = &self.supervision;
        if sup.within_secs == 0 {
            return bad("supervision.within_secs", "must be at least 1");
        }
        if sup.backoff_max_ms < sup.backoff_initial_ms {
            return bad("supervision.backoff_max_ms", "must be at least supervision.backoff_initial_ms");
        }
        if let Err(e) = Backoff::new(
            Duration::from_millis(sup.backoff_initial_ms),
            Duration::from_millis(sup.backoff_max_ms),
            2.0,
            0.5,
        ) {
            return bad("supervision.backoff_initial_ms", e.to_string());
        }
        if sup.ask_timeout_ms == 0 {
            return bad("supervision.ask_timeout_ms", "must be at least 1");
        }
        if sup.start_timeout_ms == 0 {
            return bad("supervision.start_timeout_ms", "must be at least 1");
        }
        let cache = &self.cache;
        if !(1..=1024).contains(&cache.shards) {
            return bad("cache.shards", "must be between 1 and 1024");
        }
        if cache.l1_max_bytes < 64 * 1024 {
            return bad("cache.l1_max_bytes", "must be at least 65536");
        }
        if cache.l1_max_entries == 0 {
            return bad("cache.l1_max_entries", "must be at least 1");
        }
        if cache.bypass_max_in_flight > 10_000 {
            return bad("cache.bypass_max_in_flight", "must be at most 10000 (0: database.max_connections)");
        }
        if cache.bypass_max_queued > 1_000_000 {
            return bad("cache.bypass_max_queued", "must be at most 1000000");
        }
        if cache.load_timeout_ms == 0 {
            return bad("cache.load_timeout_ms", "must be at least 1");
        }
        if !(0.0..=0.5).contains(&cache.ttl_jitter) {
            return bad("cache.ttl_jitter", "must be between 0 and 0.5");
        }
        if !(cache.xfetch_beta.is_finite() && cache.xfetch_beta >= 0.0) {
            return bad("cache.xfetch_beta", "must be a number at least 0");
        }
        for (key, secs) in [
            ("cache.item_ttl_secs", cache.item_ttl_secs),
            ("cache.list_ttl_secs", cache.list_ttl_secs),
            ("cache.search_ttl_secs", cache.search_ttl_secs),
            ("cache.categories_ttl_secs", cache.categories_ttl_secs),
            ("cache.trending_ttl_secs", cache.trending_ttl_secs),
            ("cache.summary_ttl_secs", cache.summary_ttl_secs),
            ("cache.negative_ttl_secs", cache.negative_ttl_secs),
        ] {
            if secs == 0 {
                return bad(key, "must be at least 1");
            }
        }
        let redis_url = cache.redis.url.expose();
        if !redis_url.is_empty() && !redis_url.starts_with("redis://") {
            return bad("cache.redis.url", "must start with redis:// (TLS, rediss://, is not supported)");
        }
        if cache.redis.pool_size == 0 {
            return bad("cache.redis.pool_size", "must be at least 1");
        }
        if cache.redis.read_batches_in_flight == 0 {
            return bad("cache.redis.read_batches_in_flight", "must be at least 1");
        }
        if !(1..=1_000_000).contains(&cache.redis.max_queued_reads) {
            return bad("cache.redis.max_queued_reads", "must be between 1 and 1000000");
        }
        if cache.redis.timeout_ms == 0 {
            return bad("cache.redis.timeout_ms", "must be at least 1");
        }
        if let Err(reason) = cache.redis.breaker.to_config().validate() {
            return bad("cache.redis.breaker", reason);
        }
        if self.explore.views_flush_ms < 10 {
            return bad("explore.views_flush_ms", "must be at least 10");
        }
        let half_life = self.explore.trend_half_life_hours;
        if !(half_life.is_finite() && half_life > 0.0) {
            return bad("explore.trend_half_life_hours", "must be a number greater than 0");
        }
        if self.explore.view_dedup_max_entries < 2 {
            return bad("explore.view_dedup_max_entries", "must be at least 2");
        }
        if !(1..=256).contains(&self.explore.semantic_batch_max) {
            return bad("explore.semantic_batch_max", "must be between 1 and 256");
        }
        if self.explore.semantic_queue_capacity == 0 {
            return bad("explore.semantic_queue_capacity", "must be at least 1");
        }
        if self.explore.semantic_sync_secs == 0 {
            return bad("explore.semantic_sync_secs", "must be at least 1");
        }
        Ok(())
    }
}

impl Settings {
    /// `[queue]` and `[backup]`.
    fn validate_queue(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, reason: reason.into() })
        }
        let queue = &self.queue;
        let url = queue.amqp_url.expose();
        if !(url.is_empty() || url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return bad(
                "queue.amqp_url",
                "must start with amqp:// or amqps:// (or be empty: embedded delivery)",
            );
        }
        if queue.prefix.is_empty()
            || queue.prefix.len() > 64
            || !queue.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad("queue.prefix", "must be 1 to 64 characters of letters, digits, '-', '_' and '.'");
        }
        if !(1..=256).contains(&queue.workers) {
            return bad("queue.workers", "must be between 1 and 256");
        }
        if queue.prefetch == 0 {
            return bad("queue.prefetch", "must be at least 1");
        }
        if !(1..=100).contains(&queue.max_attempts) {
            return bad("queue.max_attempts", "must be between 1 and 100");
        }
        if queue.retry_delays_ms.is_empty()
            || queue.retry_delays_ms.len() > 16
            || queue.retry_delays_ms.iter().any(|&ms| ms == 0 || ms > 7 * 86_400_000)
        {
            return bad("queue.retry_delays_ms", "must list 1 to 16 delays, each between 1 ms and 7 days");
        }
        if queue.delivery_limit == 0 {
            return bad("queue.delivery_limit", "must be at least 1");
        }
        if queue.progress_interval_ms == 0 {
            return bad("queue.progress_interval_ms", "must be at least 1");
        }
        if queue.job_timeout_secs == 0 {
            return bad("queue.job_timeout_secs", "must be at least 1");
        }
        if queue.outbox_poll_ms < 10 {
            return bad("queue.outbox_poll_ms", "must be at least 10");
        }
        if !(1..=10_000).contains(&queue.outbox_batch) {
            return bad("queue.outbox_batch", "must be between 1 and 10000");
        }
        if parse_span(&queue.outbox_retention).is_none() {
            return bad("queue.outbox_retention", "must be a number and a unit: s, m, h or d (e.g. \"7d\")");
        }
        if parse_span(&queue.job_retention).is_none() {
            return bad("queue.job_retention", "must be a number and a unit: s, m, h or d (e.g. \"30d\")");
        }
        if queue.reconnect_initial_ms == 0 || queue.reconnect_max_ms < queue.reconnect_initial_ms {
            return bad(
                "queue.reconnect_max_ms",
                "must be at least queue.reconnect_initial_ms, which must be at least 1",
            );
        }
        if !(2..=16 * 1024 * 1024).contains(&queue.max_payload_bytes) {
            return bad("queue.max_payload_bytes", "must be between 2 and 16777216");
        }
        if queue.max_pending_jobs == 0 {
            return bad("queue.max_pending_jobs", "must be at least 1");
        }
        if self.environment.is_production() && queue.test_jobs {
            return bad("queue.test_jobs", "must be false in production");
        }
        let mut names = std::collections::HashSet::new();
        for schedule in &queue.schedules {
            if schedule.name.is_empty() || !names.insert(schedule.name.as_str()) {
                return bad(
                    "queue.schedules",
                    format!("names must be unique and not empty: {:?}", schedule.name),
                );
            }
            if let Err(reason) = schedule.parse_cron() {
                return bad(
                    "queue.schedules",
                    format!("{}: cron {:?}: {reason}", schedule.name, schedule.cron),
                );
            }
            // the kind is checked against the registered handlers when the queue starts
        }
        if self.environment.is_production() && self.backup.encryption_key.is_empty() {
            return bad(
                "backup.encryption_key",
                "is required in production: backups hold every user's password hash",
            );
        }
        Ok(())
    }
}
