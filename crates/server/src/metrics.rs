//! Prometheus metrics, served at `/metrics` on the HTTP port in the
//! OpenMetrics text format.
//!
//! Calls are counted by [`crate::rpc`] as they finish; the pool, group
//! commit, hashing and readiness figures are read when the metrics are
//! scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::AppState;

/// Labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: String,
    pub method: String,
    pub code: &'static str,
}

/// Labels of a method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

/// Why a call was refused before it ran.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric Roster exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    pub latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub shed: Family<ShedLabels, Counter>,
    pool_connections: Family<StateLabels, Gauge>,
    pool_max: Gauge,
    pool_acquires: Counter,
    pool_wait: Counter<f64, AtomicU64>,
    group_commits: Counter,
    group_commit_inserts: Counter,
    group_commit_alone: Counter,
    hashes: Family<StateLabels, Gauge>,
    ready: Gauge,
    /// One scrape at a time: the pool counters advance by the difference
    /// from their last value.
    scraping: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("roster"),
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            shed: Family::default(),
            pool_connections: Family::default(),
            pool_max: Gauge::default(),
            pool_acquires: Counter::default(),
            pool_wait: Counter::default(),
            group_commits: Counter::default(),
            group_commit_inserts: Counter::default(),
            group_commit_alone: Counter::default(),
            hashes: Family::default(),
            ready: Gauge::default(),
            scraping: std::sync::Mutex::new(()),
        };
        let r = &mut metrics.registry;
        r.register(
            "grpc_requests",
            "gRPC calls finished, by service, method and status code",
            metrics.calls.clone(),
        );
        r.register(
            "grpc_request_duration_seconds",
            "Time from a call's arrival to its last response byte",
            metrics.latency.clone(),
        );
        r.register(
            "grpc_requests_in_flight",
            "gRPC calls being served",
            metrics.in_flight.clone(),
        );
        r.register(
            "grpc_requests_shed",
            "Calls refused before running: overloaded, or the database is down",
            metrics.shed.clone(),
        );
        r.register(
            "db_pool_connections",
            "Open database connections, idle or in use",
            metrics.pool_connections.clone(),
        );
        r.register(
            "db_pool_max_connections",
            "Most connections the pool opens",
            metrics.pool_max.clone(),
        );
        r.register(
            "db_pool_acquires",
            "Connections handed out by the pool",
            metrics.pool_acquires.clone(),
        );
        r.register(
            "db_pool_acquire_wait_seconds",
            "Time spent waiting for pool connections",
            metrics.pool_wait.clone(),
        );
        r.register(
            "db_group_commits",
            "Groups of waiting inserts of new users sent to the database together: one transaction on SQLite, one statement on PostgreSQL",
            metrics.group_commits.clone(),
        );
        r.register(
            "db_group_commit_inserts",
            "Inserts of new users those groups took (the ratio is the mean per group)",
            metrics.group_commit_inserts.clone(),
        );
        r.register(
            "db_group_commit_inserts_alone",
            "Inserts of groups that went to the database one at a time after all: another user held an identifier of the group, a row was refused, or two of them named one identifier",
            metrics.group_commit_alone.clone(),
        );
        r.register(
            "password_hashes",
            "Password hashes waiting for a slot (queued) or running",
            metrics.hashes.clone(),
        );
        r.register(
            "ready",
            "1 when the server is ready for calls (database up, not draining)",
            metrics.ready.clone(),
        );
        metrics
    }
}

/// Moves `counter` up to `total`, a count the store keeps itself.
fn advance(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Metrics {
    /// The metrics in the OpenMetrics text format, with the gauges read
    /// from `state` now.
    pub fn render(&self, state: &AppState) -> String {
        let _one_at_a_time = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = state.users.pool_stats() {
            let gauge = |state| {
                self.pool_connections
                    .get_or_create(&StateLabels { state })
                    .clone()
            };
            gauge("idle").set(i64::from(pool.idle));
            gauge("in_use").set(i64::from(pool.size.saturating_sub(pool.idle)));
            self.pool_max.set(i64::from(pool.max));
            advance(&self.pool_acquires, pool.acquires);
            let waited = pool.acquire_wait_seconds - self.pool_wait.get();
            if waited > 0.0 {
                self.pool_wait.inc_by(waited);
            }
        }
        if let Some(group) = state.users.group_commit_stats() {
            advance(&self.group_commits, group.transactions);
            advance(&self.group_commit_inserts, group.inserts);
            advance(&self.group_commit_alone, group.alone);
        }
        let (queued, running) = state.hasher.queue();
        self.hashes
            .get_or_create(&StateLabels { state: "queued" })
            .set(queued);
        self.hashes
            .get_or_create(&StateLabels { state: "running" })
            .set(running);
        self.ready.set(i64::from(state.readiness.is_ready()));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
