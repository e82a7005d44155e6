//! Metrics through the [`metrics`](https://docs.rs/metrics) facade: exporter-agnostic, as
//! `tracing` is for logs. Install any recorder (Prometheus, StatsD, OpenTelemetry, ...) and
//! the numbers below flow to it.
//!
//! Recorded only with the crate feature `metrics` (the `token-store` facade forwards it).
//! Without it every function here is an empty inline function: nothing is compiled in.
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | [`OPERATIONS`] | counter | `backend`, `operation`, `outcome` | store calls through [`layers::Metrics`](crate::layers) |
//! | [`OPERATION_DURATION`] | histogram (s) | `backend`, `operation`, `outcome` | their latency |
//! | [`REFRESHES`] | counter | `backend`, `outcome` ([`RefreshOutcome`]) | refreshes of expiring tokens by [`TokenManager`](crate::TokenManager) and the rmcp adapter |
//! | [`LEASE_WAIT`] | histogram (s) | `backend`, `outcome` (`acquired`, `adopted`, `timeout`, `error`) | time spent taking a refresh lease |
//! | [`LEASE_TAKEOVERS`] | counter | `backend` | expired leases of dead holders replaced |
//!
//! Labels are only the backend, the operation and the outcome: never a key, user, URL or
//! token, so series stay few and carry nothing sensitive. `docs/metrics.md` has the full
//! tables, outcome meanings and alert examples.

use crate::store::TokenStore;

/// Counter of store calls: `backend`, `operation` (`get`, `put`, `delete`, `list`),
/// `outcome` (`ok`, `miss`, `conflict`, `unavailable`, `corrupt`, `integrity`, `permission`,
/// `too_large`, `config`, `other`).
pub const OPERATIONS: &str = "token_store_operations_total";
/// Histogram of store call latency in seconds, with the labels of [`OPERATIONS`].
pub const OPERATION_DURATION: &str = "token_store_operation_duration_seconds";
/// Counter of refreshes of expiring tokens: `backend`, `outcome` ([`RefreshOutcome`]).
pub const REFRESHES: &str = "token_store_refreshes_total";
/// Histogram of the time spent taking a refresh lease, in seconds: `backend`, `outcome`
/// (`acquired`, `adopted` (the holder's fresh token arrived first), `timeout`, `error`).
pub const LEASE_WAIT: &str = "token_store_lease_wait_seconds";
/// Counter of leases taken over from a holder that died (an expired or unreadable lease
/// record replaced): `backend`.
pub const LEASE_TAKEOVERS: &str = "token_store_lease_takeovers_total";

/// How a refresh of an expiring token ended: the `outcome` label of [`REFRESHES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// This process refreshed and stored the new token.
    Refreshed,
    /// Another process (or writer) refreshed first; its token was used.
    Adopted,
    /// The authorization server rejected the refresh token: the user must log in again.
    Rejected,
    /// The refresh failed in a way that may pass (network, 5xx, timeout); tokens kept.
    Transient,
    /// Nothing to refresh with (no record, or no refresh token): login required.
    LoginRequired,
    /// The store failed, or the refresh lease could not be taken in time.
    Error,
}

impl RefreshOutcome {
    /// The label value: `refreshed`, `adopted`, `rejected`, `transient`, `login_required`,
    /// `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::Adopted => "adopted",
            RefreshOutcome::Rejected => "rejected",
            RefreshOutcome::Transient => "transient",
            RefreshOutcome::LoginRequired => "login_required",
            RefreshOutcome::Error => "error",
        }
    }
}

/// Registers the descriptions and units of every metric with the installed recorder (an
/// exporter shows them, e.g. as Prometheus `# HELP` lines). Call once after installing it.
#[inline]
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_histogram};
        describe_counter!(OPERATIONS, Unit::Count, "Token store calls by outcome");
        describe_histogram!(
            OPERATION_DURATION,
            Unit::Seconds,
            "Token store call latency"
        );
        describe_counter!(
            REFRESHES,
            Unit::Count,
            "Refreshes of expiring tokens by outcome"
        );
        describe_histogram!(
            LEASE_WAIT,
            Unit::Seconds,
            "Time spent taking a refresh lease"
        );
        describe_counter!(
            LEASE_TAKEOVERS,
            Unit::Count,
            "Refresh leases taken over from a holder that died"
        );
    }
}

/// Counts one refresh of an expiring token of `store` ([`REFRESHES`]). For refresh layers
/// built outside this crate (the rmcp adapter); [`TokenManager`](crate::TokenManager) counts
/// its own.
#[inline]
pub fn record_refresh(store: &TokenStore, outcome: RefreshOutcome) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REFRESHES, "backend" => store.backend(), "outcome" => outcome.as_str())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (store, outcome);
}

/// How taking a lease ended: the `outcome` label of [`LEASE_WAIT`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum LeaseWait {
    Acquired,
    Adopted,
    Timeout,
    Error,
}

/// When a timed operation started; nothing at all without the feature.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Stopwatch {
    #[inline]
    pub(crate) fn start() -> Self {
        Stopwatch {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn seconds(self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Records the time spent taking a lease ([`LEASE_WAIT`]).
#[inline]
pub(crate) fn lease_wait(store: &TokenStore, outcome: LeaseWait, since: Stopwatch) {
    #[cfg(feature = "metrics")]
    {
        let outcome = match outcome {
            LeaseWait::Acquired => "acquired",
            LeaseWait::Adopted => "adopted",
            LeaseWait::Timeout => "timeout",
            LeaseWait::Error => "error",
        };
        ::metrics::histogram!(LEASE_WAIT, "backend" => store.backend(), "outcome" => outcome)
            .record(since.seconds());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (store, outcome, since);
}

/// Counts a lease taken over from a dead holder ([`LEASE_TAKEOVERS`]).
#[inline]
pub(crate) fn lease_takeover(store: &TokenStore) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(LEASE_TAKEOVERS, "backend" => store.backend()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = store;
}
