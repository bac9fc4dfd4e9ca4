//! Long-lived upstream state kept by stable identity across configuration generations: server
//! health, ejections, drains and counters (by upstream name + server address), datacenter
//! failback state (by upstream + datacenter name), the active datacenter and the retry budget
//! (by upstream name). Snapshots point into this registry; a reload finds its state here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::health::HealthState;
use super::outlier::Ejection;
use super::retry::RetryBudget;

/// Milliseconds on tokio's clock since the registry was made, so tests can pause time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the epoch, starting at 1 (0 means "never" in the state below).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The tokio instant of a time in milliseconds of this clock.
    pub fn instant(&self, ms: u64) -> tokio::time::Instant {
        self.epoch + std::time::Duration::from_millis(ms.saturating_sub(1))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The state of one server that outlives configuration generations.
#[derive(Default)]
pub struct ServerState {
    pub health: HealthState,
    pub ejection: Ejection,
    /// Set by the admin API: no new requests.
    pub drained: AtomicBool,
    pub in_flight: AtomicI64,
    /// Tries sent to this server, and those that did not end with a usable answer.
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// When the next active check is due (clock ms); 0 = as soon as possible.
    pub next_check_ms: AtomicU64,
    /// A check is running (the checker never runs two at once for a server).
    pub checking: AtomicBool,
    /// The tries in flight, by socket, so that they can be cut when the server goes down.
    pub tries: Arc<super::transport::Tries>,
    /// Whether the server was usable at the last evaluation (a flip to unusable schedules the
    /// cut of its tries in flight).
    pub was_usable: AtomicBool,
}

impl ServerState {
    /// Whether new requests may go to this server: up, not ejected, not drained.
    pub fn usable(&self, now_ms: u64) -> bool {
        self.health.is_up()
            && !self.ejection.is_ejected(now_ms)
            && !self.drained.load(Ordering::Relaxed)
    }
}

/// Sentinel of `DatacenterState::up_since_ms`: not up.
pub const NOT_UP: u64 = u64::MAX;

/// The state of one datacenter that outlives configuration generations.
pub struct DatacenterState {
    /// Set by the admin API: the datacenter counts as down, its requests in flight finish.
    pub drained: AtomicBool,
    /// Since when the datacenter has been up (clock ms), `NOT_UP` when it is not.
    pub up_since_ms: AtomicU64,
    /// Whether the datacenter has been seen down (not merely unknown at start): from then on,
    /// traffic returns to it only after `failback_after`.
    pub ever_down: AtomicBool,
    /// Receives the upstream's traffic.
    pub active: AtomicBool,
}

impl Default for DatacenterState {
    fn default() -> Self {
        DatacenterState {
            drained: AtomicBool::new(false),
            up_since_ms: AtomicU64::new(NOT_UP),
            ever_down: AtomicBool::new(false),
            active: AtomicBool::new(false),
        }
    }
}

impl DatacenterState {
    pub fn is_up(&self) -> bool {
        self.up_since_ms.load(Ordering::Relaxed) != NOT_UP
    }
}

/// The state of one upstream that outlives configuration generations.
#[derive(Default)]
pub struct UpstreamState {
    /// Serialises datacenter evaluations (background tick, health flips, ejections, drains);
    /// holds the name of the datacenter last active, for the `from` of the next failover.
    /// Never taken on the request path except when a request ejects a server.
    pub evaluation: Mutex<Option<String>>,
    pub budget: RetryBudget,
    /// Notified when a request ends on a server with `max_in_flight`: room for one more.
    pub room: tokio::sync::Notify,
}

/// Every piece of long-lived upstream state, by stable identity. Owned by `Runtime`; looked up
/// only when a snapshot is compiled (never per request).
#[derive(Default)]
pub struct Registry {
    pub clock: Clock,
    servers: Mutex<HashMap<(String, SocketAddr), Arc<ServerState>>>,
    datacenters: Mutex<HashMap<(String, String), Arc<DatacenterState>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamState>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn server(&self, upstream: &str, address: SocketAddr) -> Arc<ServerState> {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((upstream.to_string(), address))
            .or_default()
            .clone()
    }

    pub fn datacenter(&self, upstream: &str, datacenter: &str) -> Arc<DatacenterState> {
        let mut map = self.datacenters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((upstream.to_string(), datacenter.to_string()))
            .or_default()
            .clone()
    }

    pub fn upstream(&self, upstream: &str) -> Arc<UpstreamState> {
        let mut map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(upstream.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_identity_same_state() {
        let registry = Registry::new();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = registry.server("ent", addr);
        a.drained.store(true, Ordering::Relaxed);
        assert!(registry.server("ent", addr).drained.load(Ordering::Relaxed));
        assert!(!registry
            .server("other", addr)
            .drained
            .load(Ordering::Relaxed));
        let dc = registry.datacenter("ent", "dc-a");
        assert!(Arc::ptr_eq(&dc, &registry.datacenter("ent", "dc-a")));
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_tokio_time() {
        let clock = Clock::new();
        assert_eq!(clock.now_ms(), 1);
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ms(), 1501);
    }
}
