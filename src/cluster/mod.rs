//! The cluster: Rempart nodes that share their limits, bans and login queues through one Redis
//! or Valkey store, each falling back to its share when the store is away.
//!
//! - [`Cluster`]: the link to the store (up or down, one log line per change), the nodes alive
//!   by their heartbeats, the metrics; read by requests through the runtime.
//! - `link`: the background service that connects, beats, probes a store that went away and
//!   brings the node back into cluster mode.
//! - `limits`: `scope: cluster` limits, GCRA in the store on its clock, every cluster limit of a
//!   request in one script call.
//! - `bans`: bans written to the store and published; every node keeps all of them in memory,
//!   so that a ban check costs no round trip.
//! - `slots`: the login queues' slots as leases held by live nodes, shared among the nodes
//!   with people waiting.
//!
//! Nothing here answers a request by itself: when the store does not answer within
//! `cluster.timeout`, the caller decides alone with its share (a limit's rate divided by the live
//! nodes, a queue's concurrency likewise).

pub mod bans;
pub mod limits;
pub mod link;
pub mod slots;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use hmac::{Hmac, Mac};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use redis::aio::MultiplexedConnection;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::config;

/// A key derived from the cluster's secret for one use (`label`): HMAC-SHA256.
pub fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return [0; 32],
    };
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The cluster's series in the process's registry.
pub struct ClusterMetrics {
    pub store_up: IntGauge,
    pub nodes: IntGauge,
    /// By operation: limit, ban, heartbeat, slots, ticket.
    pub round_trip: HistogramVec,
    pub errors: IntCounterVec,
    /// Decisions taken alone because the store was away: limit, queue.
    pub fallbacks: IntCounterVec,
    /// Cluster-limit refusals answered from the local cache of refused keys.
    pub refused_locally: IntCounter,
    /// Ban changes that could not be written (queue full); the ban holds on this node.
    pub bans_unshared: IntCounter,
    limit_round_trip: Histogram,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let store_up = IntGauge::new(
            "rempart_cluster_store_up",
            "1 while the cluster's store answers, 0 while this node decides alone",
        )?;
        let nodes = IntGauge::new(
            "rempart_cluster_nodes",
            "Nodes alive by their heartbeat in the store (the last count known)",
        )?;
        let round_trip = HistogramVec::new(
            HistogramOpts::new(
                "rempart_cluster_store_round_trip_seconds",
                "Round trips to the cluster's store, by operation",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["op"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "rempart_cluster_store_errors_total",
                "Calls to the cluster's store that failed or timed out, by operation",
            ),
            &["op"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "rempart_cluster_fallbacks_total",
                "Decisions this node took alone, with its share, because the store was away",
            ),
            &["what"],
        )?;
        let refused_locally = IntCounter::new(
            "rempart_cluster_refused_locally_total",
            "Requests refused by a cluster limit without asking the store (key known refused)",
        )?;
        let bans_unshared = IntCounter::new(
            "rempart_cluster_bans_unshared_total",
            "Ban changes not written to the store (too many waiting); they hold on this node",
        )?;
        registry.register(Box::new(store_up.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        registry.register(Box::new(round_trip.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(refused_locally.clone()))?;
        registry.register(Box::new(bans_unshared.clone()))?;
        for what in ["limit", "queue"] {
            fallbacks.with_label_values(&[what]);
        }
        for op in ["limit", "ban", "heartbeat", "slots", "ticket"] {
            errors.with_label_values(&[op]);
        }
        let limit_round_trip = round_trip.with_label_values(&["limit"]);
        Ok(ClusterMetrics {
            store_up,
            nodes,
            round_trip,
            errors,
            fallbacks,
            refused_locally,
            bans_unshared,
            limit_round_trip,
        })
    }
}

/// What `/status` says of the link.
#[derive(Debug, Clone)]
struct LinkState {
    /// Since when the link is as it is.
    since: SystemTime,
    /// Why the store was last found away.
    last_error: Option<String>,
    /// The nodes alive at the last heartbeat.
    nodes: Vec<String>,
}

/// The node's link to the store, shared by every request and background task.
pub struct Cluster {
    pub settings: config::Cluster,
    client: redis::Client,
    /// None until connected, and after the connection broke.
    conn: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    live_nodes: AtomicUsize,
    state: Mutex<LinkState>,
    pub metrics: ClusterMetrics,
    /// Woken when a request found the store away, so that the link probes it now.
    probe: Notify,
    pub(crate) bans: bans::Outbox,
    pub(crate) slots: slots::Slots,
    keys: Keys,
}

/// The store's keys and channels, under `key_prefix`.
struct Keys {
    nodes: String,
    bans: String,
    ban_clients: String,
    ban_channel: String,
    limit: String,
    queue: String,
}

impl Cluster {
    pub fn new(settings: config::Cluster, registry: &Registry) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(settings.store.0.as_str()).map_err(ClusterError::Url)?;
        let metrics = ClusterMetrics::new(registry).map_err(ClusterError::Metrics)?;
        let prefix = &settings.key_prefix;
        let keys = Keys {
            nodes: format!("{prefix}:nodes"),
            bans: format!("{prefix}:bans"),
            ban_clients: format!("{prefix}:bans:clients"),
            ban_channel: format!("{prefix}:bans:changes"),
            limit: format!("{prefix}:limit:"),
            queue: format!("{prefix}:queue:"),
        };
        Ok(Arc::new(Cluster {
            client,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            live_nodes: AtomicUsize::new(1),
            state: Mutex::new(LinkState {
                since: SystemTime::now(),
                last_error: Some("not connected yet".to_string()),
                nodes: Vec::new(),
            }),
            metrics,
            probe: Notify::new(),
            bans: bans::Outbox::new(),
            slots: slots::Slots::default(),
            keys,
            settings,
        }))
    }

    /// Whether the store answered last time (requests ask it only then).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The nodes alive at the last heartbeat, this one included: the divisor of a node's share.
    pub fn live_nodes(&self) -> usize {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }

    /// A connection to the store while it is up.
    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.load().as_deref().cloned()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store did not answer `op`: decide alone from now on, until the link's probe finds it
    /// again. One log line when the link changes.
    pub(crate) fn went_away(&self, op: &str, why: String) {
        self.metrics.errors.with_label_values(&[op]).inc();
        if self.up.swap(false, Ordering::Relaxed) {
            self.metrics.store_up.set(0);
            tracing::warn!(
                op,
                error = %why,
                nodes = self.live_nodes(),
                "cluster store away: this node decides alone with its share"
            );
            let mut state = self.lock_state();
            state.since = SystemTime::now();
            state.last_error = Some(why);
            drop(state);
            self.probe.notify_one();
        } else {
            self.lock_state().last_error = Some(why);
        }
    }

    /// The store answered the link's probe: back in cluster mode.
    fn came_back(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            self.metrics.store_up.set(1);
            let mut state = self.lock_state();
            state.since = SystemTime::now();
            state.last_error = None;
            drop(state);
            tracing::info!(
                nodes = self.live_nodes(),
                "cluster store reachable: limits, bans and queues shared again"
            );
        }
    }

    fn set_nodes(&self, nodes: Vec<String>) {
        let count = nodes.len().max(1);
        self.live_nodes.store(count, Ordering::Relaxed);
        self.metrics.nodes.set(count as i64);
        self.lock_state().nodes = nodes;
    }

    /// Run one call with the request-path timeout, timing it; Err: the store is away (already
    /// recorded).
    pub(crate) async fn call<T, F>(&self, op: &'static str, timeout: Duration, f: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, f).await;
        let elapsed = started.elapsed().as_secs_f64();
        if op == "limit" {
            self.metrics.limit_round_trip.observe(elapsed);
        } else {
            self.metrics
                .round_trip
                .with_label_values(&[op])
                .observe(elapsed);
        }
        match outcome {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.went_away(op, e.to_string());
                None
            }
            Err(_) => {
                self.went_away(op, format!("no answer within {} ms", timeout.as_millis()));
                None
            }
        }
    }

    /// What `/status` shows.
    pub fn status(&self) -> serde_json::Value {
        let state = self.lock_state().clone();
        serde_json::json!({
            "node_id": self.settings.node_id,
            "store": config::without_password(&self.settings.store.0),
            "store_up": self.is_up(),
            "since": crate::telemetry::rfc3339(state.since),
            "last_error": state.last_error,
            "nodes": state.nodes,
            "live_nodes": self.live_nodes(),
            "timeout_ms": self.settings.timeout.as_secs_f64() * 1000.0,
            "heartbeat_ms": self.settings.heartbeat.as_millis() as u64,
            "queues": self.slots.status(),
        })
    }
}

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.store: {0}")]
    Url(#[source] redis::RedisError),
    #[error("cluster metrics: {0}")]
    Metrics(#[source] prometheus::Error),
}
