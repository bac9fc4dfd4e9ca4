//! Active health checks: the per-server health state machine (unknown, up, down with `rise` and
//! `fall`), the HTTP probe, and the background service that schedules probes with jitter and
//! re-evaluates datacenters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Upstream;
use crate::config;
use crate::runtime::Runtime;

/// What the checks and live traffic say about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No check has passed yet and no live request succeeded: receives no traffic.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
}

/// Health of one server. Checks of a server run one at a time; live traffic only moves it
/// from unknown to up (compare-and-swap), so the counters need no lock.
#[derive(Default)]
pub struct HealthState {
    health: AtomicU8,
    passes: AtomicU32,
    failures: AtomicU32,
}

impl HealthState {
    pub fn get(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub fn is_up(&self) -> bool {
        self.get() == Health::Up
    }

    /// Whether anything is known yet: a check passed or failed, or a live request succeeded.
    pub fn checked(&self) -> bool {
        self.get() != Health::Unknown || self.failures.load(Ordering::Relaxed) > 0
    }

    /// Record one check. Returns the new health when it flipped: unknown becomes up on the first
    /// pass, down becomes up after `rise` passes in a row, up or unknown become down after `fall`
    /// failures in a row.
    pub fn observe_check(&self, passed: bool, rise: u32, fall: u32) -> Option<Health> {
        let current = self.get();
        let next = if passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self
                .passes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            match current {
                Health::Unknown => Some(Health::Up),
                Health::Down if passes >= rise.max(1) => Some(Health::Up),
                _ => None,
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self
                .failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            match current {
                Health::Up | Health::Unknown if failures >= fall.max(1) => Some(Health::Down),
                _ => None,
            }
        }?;
        self.health.store(next as u8, Ordering::Relaxed);
        Some(next)
    }

    /// A live request succeeded: an unknown server counts as up. True when it flipped.
    pub fn observe_live_success(&self) -> bool {
        // A plain load first: the compare-and-swap (a write) happens once per server, not on
        // every successful request.
        if self.get() != Health::Unknown {
            return false;
        }
        self.health
            .compare_exchange(
                Health::Unknown as u8,
                Health::Up as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

// The discriminants are stored in the atomic.
const _: () = {
    assert!(Health::Unknown as u8 == 0);
    assert!(Health::Up as u8 == 1);
    assert!(Health::Down as u8 == 2);
};

/// Asks a server whether it is healthy. The boundary where tests plug a fake.
#[async_trait]
pub trait Probe: Send + Sync {
    /// True when the server answered the check with 2xx or 3xx within `check.timeout`.
    async fn check(&self, address: SocketAddr, check: &config::HealthCheck) -> bool;
}

/// `GET path` over a fresh HTTP/1.1 connection (`Connection: close`), the whole exchange
/// within the check's timeout; passes on a 2xx or 3xx status line.
pub struct HttpProbe;

#[async_trait]
impl Probe for HttpProbe {
    async fn check(&self, address: SocketAddr, check: &config::HealthCheck) -> bool {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: rempart-health-check\r\nConnection: close\r\n\r\n",
                check.path
            );
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 16];
            let mut read = 0;
            while read < 12 {
                let n = stream.read(&mut head[read..]).await?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            Ok::<_, std::io::Error>(status_passes(&head[..read]))
        };
        matches!(
            tokio::time::timeout(check.timeout, exchange).await,
            Ok(Ok(true))
        )
    }
}

/// Whether an HTTP/1.x status line starts with a 2xx or 3xx status.
fn status_passes(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.")
        && head.get(8) == Some(&b' ')
        && matches!(head.get(9), Some(b'2') | Some(b'3'))
}

/// The delay until the next check: `interval` ± 10 %, so checks of many servers spread out.
pub fn next_delay(interval: Duration) -> Duration {
    let jitter = rand::rng().random_range(0.9..1.1);
    interval.mul_f64(jitter)
}

/// The first checks of a process are spread over this much time at most.
pub const FIRST_CHECK_SPREAD: Duration = Duration::from_millis(50);

/// The delay of a server's first check: a small random part of the interval (at most
/// `FIRST_CHECK_SPREAD`), so servers are known soon after start without all being checked at
/// the same instant. Requests wait for these checks (see `Upstream::first_checks_pending`).
fn first_delay(interval: Duration) -> Duration {
    let spread = interval.min(FIRST_CHECK_SPREAD);
    spread.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// Run the checks that are due on every server of `upstream`; each check runs in its own task
/// and re-evaluates the upstream when the server's health flips.
pub fn run_due_checks(upstream: &Arc<Upstream>, probe: &Arc<dyn Probe>) {
    let clock = upstream.clock;
    let now = clock.now_ms();
    let check = &upstream.config.health_check;
    for (dc_index, dc) in upstream.datacenters.iter().enumerate() {
        for (server_index, server) in dc.servers.iter().enumerate() {
            let state = &server.state;
            let next = state.next_check_ms.load(Ordering::Relaxed);
            if next == 0 {
                let first = first_delay(check.interval).as_millis() as u64;
                state
                    .next_check_ms
                    .store(now + first.max(1), Ordering::Relaxed);
                continue;
            }
            if next > now || state.checking.swap(true, Ordering::AcqRel) {
                continue;
            }
            let upstream = upstream.clone();
            let probe = probe.clone();
            tokio::spawn(async move {
                let Some(server) = upstream
                    .datacenters
                    .get(dc_index)
                    .and_then(|dc| dc.servers.get(server_index))
                else {
                    return;
                };
                let check = &upstream.config.health_check;
                let passed = probe.check(server.address, check).await;
                let state = &server.state;
                if let Some(health) = state.health.observe_check(passed, check.rise, check.fall) {
                    upstream.server_health_changed(dc_index, server, health);
                }
                let next = upstream.clock.now_ms() + next_delay(check.interval).as_millis() as u64;
                state.next_check_ms.store(next, Ordering::Relaxed);
                state.checking.store(false, Ordering::Release);
            });
        }
    }
}

/// How often the checker looks for due checks and re-evaluates datacenters (ejections end on
/// their own; this notices it).
const TICK: Duration = Duration::from_millis(50);

/// The background service of active health checks and datacenter evaluation. It reads the
/// snapshot in force at each tick, so a reload changes what it checks at once.
pub struct HealthChecks {
    runtime: Arc<Runtime>,
    probe: Arc<dyn Probe>,
}

impl HealthChecks {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        HealthChecks {
            runtime,
            probe: Arc::new(HttpProbe),
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.runtime.load();
            for upstream in &snapshot.upstreams {
                run_due_checks(upstream, &self.probe);
                upstream.evaluate();
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_unknown_then_up_on_first_pass() {
        let h = HealthState::default();
        assert_eq!(h.get(), Health::Unknown);
        assert_eq!(h.observe_check(true, 3, 2), Some(Health::Up));
        assert_eq!(h.observe_check(true, 3, 2), None);
        assert!(h.is_up());
    }

    #[test]
    fn fall_then_rise() {
        let h = HealthState::default();
        h.observe_check(true, 2, 3);
        assert_eq!(h.observe_check(false, 2, 3), None);
        assert_eq!(h.observe_check(false, 2, 3), None);
        // A pass in between restarts the count.
        assert_eq!(h.observe_check(true, 2, 3), None);
        assert_eq!(h.observe_check(false, 2, 3), None);
        assert_eq!(h.observe_check(false, 2, 3), None);
        assert_eq!(h.observe_check(false, 2, 3), Some(Health::Down));
        assert_eq!(h.observe_check(false, 2, 3), None);
        assert_eq!(h.observe_check(true, 2, 3), None);
        assert_eq!(h.get(), Health::Down);
        assert_eq!(h.observe_check(true, 2, 3), Some(Health::Up));
    }

    #[test]
    fn unknown_goes_down_after_fall_and_live_success_only_lifts_unknown() {
        let h = HealthState::default();
        assert_eq!(h.observe_check(false, 2, 2), None);
        assert_eq!(h.get(), Health::Unknown);
        assert!(!h.is_up());
        assert_eq!(h.observe_check(false, 2, 2), Some(Health::Down));
        assert!(!h.observe_live_success());
        assert_eq!(h.get(), Health::Down);

        let fresh = HealthState::default();
        assert!(fresh.observe_live_success());
        assert!(fresh.is_up());
        assert!(!fresh.observe_live_success());
    }

    #[test]
    fn status_lines() {
        assert!(status_passes(b"HTTP/1.1 200 OK"));
        assert!(status_passes(b"HTTP/1.0 302 Found"));
        assert!(!status_passes(b"HTTP/1.1 503 Service"));
        assert!(!status_passes(b"HTTP/1.1 404 Not"));
        assert!(!status_passes(b"garbage"));
        assert!(!status_passes(b""));
    }

    #[test]
    fn jitter_stays_near_the_interval() {
        for _ in 0..100 {
            let d = next_delay(Duration::from_secs(1));
            assert!(d >= Duration::from_millis(900) && d <= Duration::from_millis(1100));
            assert!(first_delay(Duration::from_secs(1)) <= FIRST_CHECK_SPREAD);
        }
    }
}
