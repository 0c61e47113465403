//! Every metric the crate records: its name, type, unit, labels and the SLI it serves. The guide's
//! table (`docs::metrics`) is checked against this list, and [`describe`] hands it to the recorder.

/// What kind of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// As the guide's table writes it.
    #[cfg(test)]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// `seconds`, or `""` for a count.
    pub(crate) unit: &'static str,
    /// The tests hold the guide's table and every recorded series to these.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) labels: &'static [&'static str],
    pub(crate) help: &'static str,
}

macro_rules! catalogue {
    ($($ident:ident = $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal;)*) => {
        // Each set of features records a part of them.
        $(#[allow(dead_code)] pub(crate) const $ident: &str = $name;)*
        /// Every metric, in the order of the guide's table.
        pub(crate) const ALL: &[Spec] = &[
            $(Spec { name: $name, kind: Kind::$kind, unit: $unit, labels: &[$($label),*], help: $help },)*
        ];
    };
}

catalogue! {
    STORE_CALLS = "credswap_store_calls_total", Counter, "", ["cache", "provider", "operation", "outcome"],
        "Calls to the secret store, by operation (probe, fetch, renew) and outcome (ok or the error kind).";
    STORE_CALL_DURATION = "credswap_store_call_duration_seconds", Histogram, "seconds", ["cache", "provider", "operation", "outcome"],
        "How long each call to the secret store took.";
    CACHE_HITS = "credswap_cache_hits_total", Counter, "", ["cache"],
        "Reads answered from the cache without waiting for the store.";
    CACHE_MISSES = "credswap_cache_misses_total", Counter, "", ["cache"],
        "Reads that waited for the store (missing or expired entries).";
    CACHE_COALESCED = "credswap_cache_coalesced_waits_total", Counter, "", ["cache"],
        "Of the misses, reads that joined a load already under way instead of calling the store.";
    CACHE_STALE_SERVES = "credswap_cache_stale_serves_total", Counter, "", ["cache"],
        "Reads answered with last-known-good because the store failed.";
    CACHE_NEGATIVE_HITS = "credswap_cache_negative_hits_total", Counter, "", ["cache"],
        "Reads answered with a remembered not-found or access-denied answer, without a store call.";
    CACHE_REFRESH_FAILURES = "credswap_cache_refresh_failures_total", Counter, "", ["cache", "secret", "kind"],
        "Fetches or refreshes that failed, by error kind (throttled counts throttling).";
    CACHE_ENTRIES = "credswap_cache_entries", Gauge, "", ["cache"],
        "Entries the cache holds.";
    CACHE_MAX_STALE = "credswap_cache_max_stale_seconds", Gauge, "seconds", ["cache"],
        "The cache's bound on serving last-known-good past the TTL (max_stale).";
    SECRET_ROTATIONS = "credswap_secret_rotations_total", Counter, "", ["cache", "secret"],
        "Times the cache found a newer version of a secret than the one it held.";
    HANDLE_SWAPS = "credswap_handle_swaps_total", Counter, "", ["cache", "secret"],
        "Times a handle swapped to a new version.";
    HANDLE_UPDATE_LATENCY = "credswap_handle_update_latency_seconds", Histogram, "seconds", ["cache", "secret"],
        "From a version's creation in the store to a handle swapping to it (consumer update latency, first part).";
    SECRET_VERSION_AGE = "credswap_secret_version_age_seconds", Gauge, "seconds", ["cache", "secret"],
        "Age of the version the cache holds, from its creation in the store (when the store says).";
    SECRET_LEASE_REMAINING = "credswap_secret_lease_remaining_seconds", Gauge, "seconds", ["cache", "secret"],
        "Time left on the lease of the credentials the cache holds (leased secrets only).";
    SECRET_STALE = "credswap_secret_stale_seconds", Gauge, "seconds", ["cache", "secret"],
        "How long past its TTL the value held is, while the store cannot confirm it (0 when fresh).";
    LEASE_RENEWALS = "credswap_lease_renewals_total", Counter, "", ["cache", "secret"],
        "Lease renewals that kept the credentials.";
    LEASE_REPLACEMENTS = "credswap_lease_replacements_total", Counter, "", ["cache"],
        "Leased credentials replaced by new ones (the lease could not be renewed far enough).";
    LEASE_EXPIRIES = "credswap_lease_expiries_total", Counter, "", ["cache", "secret"],
        "Leases that ended before new credentials came (a handle serves credentials that no longer work).";
    POOL_AUTH_FAILURES = "credswap_pool_auth_failures_total", Counter, "", ["pool"],
        "Logins the database rejected as authentication failures.";
    POOL_RETRIES = "credswap_pool_retries_total", Counter, "", ["pool"],
        "Connection attempts retried with fresh credentials after such a failure.";
    POOL_FALLBACKS = "credswap_pool_fallbacks_total", Counter, "", ["pool"],
        "Times the pool fell back to the previous credentials (alternating users, inside grace).";
    POOL_EXHAUSTED = "credswap_pool_retries_exhausted_total", Counter, "", ["pool"],
        "Times the retry budget was spent and the caller saw the error.";
    POOL_SWAPS = "credswap_pool_credential_swaps_total", Counter, "", ["pool"],
        "Times new credentials were applied for new connections.";
    POOL_DRAINED = "credswap_pool_connections_drained_total", Counter, "", ["pool"],
        "Connections closed because their credentials passed their drain deadline.";
    POOL_UPDATE_LATENCY = "credswap_pool_update_latency_seconds", Histogram, "seconds", ["pool"],
        "From a version's creation in the store to the pool's first login with it (consumer update latency, end to end).";
    POOL_DRAIN = "credswap_pool_drain_seconds", Histogram, "seconds", ["pool"],
        "From a version's replacement until its last connection in the pool closed (time to retire old credentials).";
    DB_CONNECTIONS = "db_client_connection_count", Gauge, "", ["pool", "state"],
        "OpenTelemetry db.client.connection.count: open connections by state (idle, used).";
    DB_CONNECTIONS_MAX = "db_client_connection_max", Gauge, "", ["pool"],
        "OpenTelemetry db.client.connection.max: the most connections the pool opens.";
    DB_PENDING = "db_client_connection_pending_requests", Gauge, "", ["pool"],
        "OpenTelemetry db.client.connection.pending_requests: callers waiting for a connection.";
    DB_CREATE_TIME = "db_client_connection_create_time_seconds", Histogram, "seconds", ["pool"],
        "OpenTelemetry db.client.connection.create_time: how long opening a connection took.";
    DB_WAIT_TIME = "db_client_connection_wait_time_seconds", Histogram, "seconds", ["pool"],
        "OpenTelemetry db.client.connection.wait_time: how long a caller waited for a connection.";
    ROTATIONS_STARTED = "credswap_rotations_started_total", Counter, "", ["secret"],
        "Rotations that wrote a pending version (their create step was done).";
    ROTATIONS_FINISHED = "credswap_rotations_finished_total", Counter, "", ["secret", "outcome"],
        "Rotations that ended: promoted (done) or undone (rolled_back). Compare with started.";
    ROTATIONS = "credswap_rotations_total", Counter, "", ["secret", "outcome"],
        "Calls of rotate or resume, by outcome (done, already_done, under_way, not_due, rolled_back, failed).";
    ROTATION_DURATION = "credswap_rotation_duration_seconds", Histogram, "seconds", ["secret", "outcome"],
        "How long a whole rotation took.";
    ROTATION_STEPS = "credswap_rotation_steps_total", Counter, "", ["secret", "step", "outcome"],
        "Rotation steps (createSecret, setSecret, testSecret, finishSecret) by outcome.";
    ROTATION_STEP_DURATION = "credswap_rotation_step_duration_seconds", Histogram, "seconds", ["secret", "step"],
        "How long each rotation step took.";
    ROTATION_FAILURES = "credswap_rotation_failures_total", Counter, "", ["secret", "step", "kind"],
        "Steps and rotations that failed, by error kind.";
    ROTATION_ROLLBACKS = "credswap_rotation_rollbacks_total", Counter, "", ["secret"],
        "Rotations undone (a failed test, a secret written meanwhile, an abort).";
    ROTATION_LAST_SUCCESS = "credswap_rotation_last_success_timestamp_seconds", Gauge, "seconds", ["secret"],
        "When the last rotation was promoted, as a Unix time.";
    PUSH_RECEIVED = "credswap_push_announcements_received_total", Counter, "", ["subscriber"],
        "Payloads a push subscriber received.";
    PUSH_APPLIED = "credswap_push_announcements_applied_total", Counter, "", ["subscriber"],
        "Announcements applied: a cache reached the announced version.";
    PUSH_IGNORED = "credswap_push_announcements_ignored_total", Counter, "", ["subscriber"],
        "Announcements for secrets no cache of the subscriber watches.";
    PUSH_REJECTED = "credswap_push_announcements_rejected_total", Counter, "", ["subscriber", "reason"],
        "Payloads refused: malformed, unsigned or forged.";
    PUSH_RECONNECTS = "credswap_push_reconnects_total", Counter, "", ["subscriber"],
        "Successful connections to the broker after the first.";
    PUSH_CONNECTED = "credswap_push_connected", Gauge, "", ["subscriber"],
        "1 while the subscriber is connected to its broker, else 0.";
    PUSH_APPLY_LATENCY = "credswap_push_apply_latency_seconds", Histogram, "seconds", ["subscriber"],
        "From an announcement's sending (or receipt, when the send time is unknown) to a cache holding its version.";
    HTTP_CLIENT_REJECTIONS = "credswap_http_client_rejections_total", Counter, "", ["client"],
        "Responses (401, 403) refusing the credential an HTTP client middleware sent.";
    HTTP_CLIENT_REFRESHES = "credswap_http_client_refreshes_total", Counter, "", ["client"],
        "Refreshes a rejection made the middleware ask for (one per rotation when it works).";
    HTTP_CLIENT_REPLAYS = "credswap_http_client_replays_total", Counter, "", ["client"],
        "Rejected requests sent again with a newer credential.";
    HTTP_CLIENT_UNRESOLVED = "credswap_http_client_unresolved_rejections_total", Counter, "", ["client", "reason"],
        "Rejections returned to the caller: nothing newer in the store, a refresh that failed, or a body that cannot be replayed.";
    HTTP_SERVER_ACCEPTED = "credswap_http_server_accepted_total", Counter, "", ["server", "key"],
        "Requests an API-key layer let through, by the key version they matched (current, previous).";
    HTTP_SERVER_REJECTED = "credswap_http_server_rejected_total", Counter, "", ["server", "reason"],
        "Requests an API-key layer refused: missing, malformed, unknown, previous_expired.";
}

/// Hands every metric's unit and help text to the installed recorder.
pub(crate) fn describe() {
    for spec in ALL {
        let unit = (spec.unit == "seconds").then_some(::metrics::Unit::Seconds);
        match (spec.kind, unit) {
            (Kind::Counter, _) => ::metrics::describe_counter!(spec.name, spec.help),
            (Kind::Gauge, Some(unit)) => ::metrics::describe_gauge!(spec.name, unit, spec.help),
            (Kind::Gauge, None) => ::metrics::describe_gauge!(spec.name, spec.help),
            (Kind::Histogram, Some(unit)) => {
                ::metrics::describe_histogram!(spec.name, unit, spec.help)
            }
            (Kind::Histogram, None) => ::metrics::describe_histogram!(spec.name, spec.help),
        }
    }
}
