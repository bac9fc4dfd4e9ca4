//! Upstreams: datacenters in priority order, their servers, and the choice of a server for
//! one try of a request (active datacenter first, then the others), fed by active health
//! checks (`health`), passive ejection (`outlier`), the failback rule (`failback`) and the
//! retry rules (`retry`), over state that outlives configuration generations (`state`).

pub mod failback;
pub mod health;
pub mod outlier;
pub mod retry;
pub mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use prometheus::{IntCounter, IntGauge};

use crate::config;
use crate::telemetry::Metrics;
use failback::{Change, DcView};
use health::Health;
use outlier::Failure;
use retry::{Attempt, NoRetry, RetryKind};
pub use state::{Clock, DatacenterState, Registry, ServerState, UpstreamState};

/// How one try at a server ended, for `rempart_upstream_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500 came back.
    Ok,
    /// The server answered 5xx.
    Http5xx,
    /// The request never reached the server: connection refused, unreachable, connect timeout.
    ConnectError,
    /// The server was reached, then the exchange failed (reset, protocol error).
    Error,
    /// The server was reached and did not answer in time.
    Timeout,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Http5xx,
        Outcome::ConnectError,
        Outcome::Error,
        Outcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Http5xx => "http_5xx",
            Outcome::ConnectError => "connect_error",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The retry kind of a failed try (None for a usable answer).
    pub fn retry_kind(self) -> Option<RetryKind> {
        match self {
            Outcome::Ok => None,
            Outcome::Http5xx => Some(RetryKind::Status),
            Outcome::ConnectError => Some(RetryKind::Connect),
            Outcome::Error => Some(RetryKind::Error),
            Outcome::Timeout => Some(RetryKind::Timeout),
        }
    }
}

/// Whether a status counts as the server failing (outlier detection, retries): 502, 503, 504.
pub fn is_failure_status(status: u16) -> bool {
    (502..=504).contains(&status)
}

/// One upstream server in one configuration generation; its state is shared by every
/// generation that keeps the server.
pub struct Server {
    pub address: SocketAddr,
    /// A ready peer with the upstream's timeouts; cloned for each try.
    pub peer: HttpPeer,
    pub state: Arc<ServerState>,
    outcomes: [IntCounter; 5],
    up_gauge: IntGauge,
}

impl Server {
    /// Count the end of one try at this server.
    fn record(&self, outcome: Outcome) {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        if outcome != Outcome::Ok {
            self.state.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
    }
}

/// Marks a server busy with one try for as long as it lives.
pub struct InFlight(Arc<Server>);

impl InFlight {
    pub fn start(server: Arc<Server>) -> Self {
        server.state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(server)
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Datacenter {
    pub name: String,
    pub servers: Vec<Arc<Server>>,
    pub state: Arc<DatacenterState>,
    /// Usable servers needed for the datacenter to be up (`min_healthy`).
    pub min_healthy: usize,
    next: AtomicUsize,
    active_gauge: IntGauge,
}

/// An upstream as one configuration generation defines it.
pub struct Upstream {
    pub name: String,
    pub datacenters: Vec<Datacenter>,
    pub config: config::Upstream,
    pub clock: Clock,
    pub state: Arc<UpstreamState>,
    retries: [IntCounter; 4],
    /// `failovers[from][to]`.
    failovers: Vec<Vec<IntCounter>>,
}

/// The server chosen for one try.
pub struct Pick {
    pub datacenter: usize,
    pub server: Arc<Server>,
}

/// The outcome of choosing a server.
pub enum Choice {
    Server(Pick),
    /// Every datacenter is down and `when_all_down` is `maintenance`.
    AllDown,
    /// Every server that may take the request has been tried.
    Exhausted,
}

impl Upstream {
    pub fn new(config: &config::Upstream, metrics: &Metrics, registry: &Registry) -> Self {
        let name = config.name.as_str();
        let datacenters = config
            .datacenters
            .iter()
            .map(|dc| {
                let outcomes = || {
                    Outcome::ALL.map(|outcome| {
                        metrics.upstream_requests_total.with_label_values(&[
                            name,
                            dc.name.as_str(),
                            outcome.as_str(),
                        ])
                    })
                };
                let servers = dc
                    .servers
                    .iter()
                    .map(|address| {
                        Arc::new(Server {
                            address: *address,
                            peer: peer(*address, &config.timeouts),
                            state: registry.server(name, *address),
                            outcomes: outcomes(),
                            up_gauge: metrics.upstream_server_up.with_label_values(&[
                                name,
                                dc.name.as_str(),
                                &address.to_string(),
                            ]),
                        })
                    })
                    .collect::<Vec<_>>();
                let min_healthy = match config.min_healthy {
                    config::MinHealthy::Count(n) => n,
                    config::MinHealthy::Share(share) => {
                        (share * servers.len() as f64).ceil() as usize
                    }
                }
                .max(1);
                Datacenter {
                    name: dc.name.clone(),
                    state: registry.datacenter(name, &dc.name),
                    min_healthy,
                    next: AtomicUsize::new(0),
                    active_gauge: metrics
                        .datacenter_active
                        .with_label_values(&[name, dc.name.as_str()]),
                    servers,
                }
            })
            .collect::<Vec<_>>();
        let failovers = config
            .datacenters
            .iter()
            .map(|from| {
                config
                    .datacenters
                    .iter()
                    .map(|to| {
                        metrics.failovers_total.with_label_values(&[
                            name,
                            from.name.as_str(),
                            to.name.as_str(),
                        ])
                    })
                    .collect()
            })
            .collect();
        Upstream {
            name: config.name.clone(),
            datacenters,
            config: config.clone(),
            clock: registry.clock,
            state: registry.upstream(name),
            retries: RetryKind::ALL.map(|kind| {
                metrics
                    .retries_total
                    .with_label_values(&[name, kind.as_str()])
            }),
            failovers,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The datacenter that receives traffic, None when every datacenter is down.
    pub fn active_datacenter(&self) -> Option<usize> {
        self.datacenters
            .iter()
            .position(|dc| dc.state.active.load(Ordering::Relaxed))
    }

    /// Datacenters in the order a request tries them: the active one, then the others that are
    /// up, then the rest, each group in priority order.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let active = self.active_datacenter();
        let n = self.datacenters.len();
        let up = move |i: usize| self.datacenters[i].state.is_up();
        active
            .into_iter()
            .chain((0..n).filter(move |&i| Some(i) != active && up(i)))
            .chain((0..n).filter(move |&i| Some(i) != active && !up(i)))
    }

    /// Whether no server has had a health check yet (the process or this upstream just
    /// started): requests wait a moment for the first checks instead of getting the
    /// maintenance answer.
    pub fn first_checks_pending(&self) -> bool {
        self.datacenters
            .iter()
            .flat_map(|dc| &dc.servers)
            .all(|server| !server.state.health.checked())
    }

    /// How long a request waits for the first health checks at start.
    pub fn first_checks_wait(&self) -> Duration {
        self.config.health_check.timeout + health::FIRST_CHECK_SPREAD + Duration::from_millis(100)
    }

    /// Whether every datacenter is down.
    pub fn all_down(&self) -> bool {
        !self.datacenters.iter().any(|dc| dc.state.is_up())
    }

    /// Choose a server for the next try: round-robin over the usable servers of the active
    /// datacenter this request has not tried, then the other datacenters. When every
    /// datacenter is down: the maintenance answer, or (`try_all`) every server not drained.
    pub fn pick(&self, tried: &[SocketAddr], now_ms: u64) -> Choice {
        self.choose(tried, now_ms, true)
    }

    /// Whether a server this request has not tried could take it.
    pub fn has_another(&self, tried: &[SocketAddr], now_ms: u64) -> bool {
        matches!(self.choose(tried, now_ms, false), Choice::Server(_))
    }

    fn choose(&self, tried: &[SocketAddr], now_ms: u64, advance: bool) -> Choice {
        let try_all = self.all_down();
        if try_all && self.config.when_all_down == config::WhenAllDown::Maintenance {
            return Choice::AllDown;
        }
        for index in self.order() {
            let dc = &self.datacenters[index];
            let count = dc.servers.len();
            if count == 0 {
                continue;
            }
            let start = if advance {
                dc.next.fetch_add(1, Ordering::Relaxed)
            } else {
                dc.next.load(Ordering::Relaxed)
            };
            let found = (0..count)
                .map(|offset| &dc.servers[(start + offset) % count])
                .find(|server| {
                    !tried.contains(&server.address)
                        && if try_all {
                            !server.state.drained.load(Ordering::Relaxed)
                        } else {
                            server.state.usable(now_ms)
                        }
                });
            if let Some(server) = found {
                return Choice::Server(Pick {
                    datacenter: index,
                    server: server.clone(),
                });
            }
        }
        Choice::Exhausted
    }

    /// A new request for this upstream (the retry budget counts it).
    pub fn record_request(&self, now_ms: u64) {
        self.state.budget.record_request(now_ms);
    }

    /// Whether a failed try is retried (SPEC section 4); counts the retry when it is.
    pub fn decide_retry(&self, attempt: &Attempt, now_ms: u64) -> Result<(), NoRetry> {
        retry::decide(
            attempt,
            &self.state.budget,
            now_ms,
            self.config.retries.budget,
        )?;
        if let Some(counter) = self.retries.get(attempt.kind as usize) {
            counter.inc();
        }
        Ok(())
    }

    /// The end of one try: counters, then outlier detection and "first success" for health.
    /// `blame_server` is false for failures caused by the client (it went away).
    pub fn observe(
        &self,
        datacenter: usize,
        server: &Server,
        outcome: Outcome,
        status: Option<u16>,
        blame_server: bool,
    ) {
        server.record(outcome);
        let failure = match outcome {
            Outcome::ConnectError => Some(Failure::Connect),
            Outcome::Timeout | Outcome::Error => blame_server.then_some(Failure::Server),
            Outcome::Http5xx if status.is_some_and(is_failure_status) => Some(Failure::Server),
            Outcome::Ok | Outcome::Http5xx => None,
        };
        let state = &server.state;
        let Some(failure) = failure else {
            if outcome == Outcome::Ok || outcome == Outcome::Http5xx {
                state.ejection.on_success();
                if state.health.observe_live_success() {
                    tracing::info!(
                        upstream = %self.name,
                        datacenter = self.dc_name(datacenter),
                        server = %server.address,
                        "server up (first success on live traffic)"
                    );
                    self.evaluate();
                }
            }
            return;
        };
        let outlier = &self.config.outlier;
        let now = self.now_ms();
        if let Some(duration) = state.ejection.on_failure(
            failure,
            now,
            outlier.consecutive_failures,
            outlier.eject_for,
        ) {
            tracing::warn!(
                upstream = %self.name,
                datacenter = self.dc_name(datacenter),
                server = %server.address,
                after = outlier.consecutive_failures,
                kind = failure.as_str(),
                eject_for = ?duration,
                times = state.ejection.view(now).count,
                "server ejected"
            );
            self.evaluate();
        }
    }

    fn dc_name(&self, index: usize) -> &str {
        self.datacenters
            .get(index)
            .map_or("", |dc| dc.name.as_str())
    }

    /// A health check flipped a server's health.
    pub(crate) fn server_health_changed(&self, datacenter: usize, server: &Server, health: Health) {
        let dc = self.dc_name(datacenter);
        match health {
            Health::Up => {
                tracing::info!(upstream = %self.name, datacenter = dc, server = %server.address, "server up")
            }
            _ => {
                tracing::warn!(upstream = %self.name, datacenter = dc, server = %server.address, "server down (health check)")
            }
        }
        self.evaluate();
    }

    /// What the servers of a datacenter say right now.
    pub fn dc_view(&self, index: usize, now_ms: u64) -> DcView {
        let Some(dc) = self.datacenters.get(index) else {
            return DcView {
                up: false,
                known_down: false,
                pending: false,
            };
        };
        let drained = dc.state.drained.load(Ordering::Relaxed);
        let usable = dc.servers.iter().filter(|s| s.state.usable(now_ms)).count();
        let known_down = drained
            || dc.servers.iter().any(|s| {
                s.state.health.get() == Health::Down || s.state.ejection.is_ejected(now_ms)
            });
        let pending = !drained
            && !dc.servers.is_empty()
            && dc.servers.iter().all(|s| !s.state.health.checked());
        DcView {
            up: !drained && usable >= dc.min_healthy,
            known_down,
            pending,
        }
    }

    /// Re-evaluate which datacenters are up and which one is active; log and count the
    /// changes; refresh the gauges. Called by the background tick, on health flips, ejections
    /// and drains.
    pub fn evaluate(&self) {
        let mut last_active = self
            .state
            .evaluation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = self.now_ms();
        let views: Vec<DcView> = (0..self.datacenters.len())
            .map(|i| self.dc_view(i, now))
            .collect();
        let states: Vec<&DatacenterState> = self
            .datacenters
            .iter()
            .map(|dc| dc.state.as_ref())
            .collect();
        let changes = failback::evaluate(&states, &views, now, self.config.failback_after);
        for change in changes {
            match change {
                Change::Up(i) => {
                    tracing::info!(upstream = %self.name, datacenter = self.dc_name(i), "datacenter up")
                }
                Change::Down(i) => {
                    tracing::warn!(upstream = %self.name, datacenter = self.dc_name(i), "datacenter down")
                }
                Change::Active { from, to } => {
                    let from = from.or_else(|| {
                        let name = last_active.as_deref()?;
                        self.datacenters.iter().position(|dc| dc.name == name)
                    });
                    self.log_switch(from, to);
                    if let Some(to) = to {
                        *last_active = Some(self.dc_name(to).to_string());
                    }
                }
            }
        }
        for dc in &self.datacenters {
            dc.active_gauge
                .set(i64::from(dc.state.active.load(Ordering::Relaxed)));
            for server in &dc.servers {
                server.up_gauge.set(i64::from(server.state.usable(now)));
            }
        }
    }

    fn log_switch(&self, from: Option<usize>, to: Option<usize>) {
        match (from, to) {
            (Some(from), Some(to)) if from != to => {
                if let Some(counter) = self.failovers.get(from).and_then(|row| row.get(to)) {
                    counter.inc();
                }
                let what = if to < from { "failback" } else { "failover" };
                tracing::warn!(
                    upstream = %self.name,
                    from = self.dc_name(from),
                    to = self.dc_name(to),
                    "datacenter {what}"
                );
            }
            (_, Some(to)) => {
                tracing::info!(upstream = %self.name, datacenter = self.dc_name(to), "datacenter active")
            }
            (_, None) => tracing::error!(
                upstream = %self.name,
                when_all_down = ?self.config.when_all_down,
                "every datacenter is down"
            ),
        }
    }

    /// For `/status`: how long before datacenter `index` (up, better than the active one) takes
    /// the traffic back.
    pub fn failback_remaining(&self, index: usize, now_ms: u64) -> Option<Duration> {
        let dc = self.datacenters.get(index)?;
        failback::failback_remaining(&dc.state, now_ms, self.config.failback_after)
    }
}

/// The peer template of a server: every timeout set (pingora has no defaults).
fn peer(address: SocketAddr, timeouts: &config::UpstreamTimeouts) -> HttpPeer {
    let mut peer = HttpPeer::new(address, false, String::new());
    let options = &mut peer.options;
    options.connection_timeout = Some(timeouts.connect);
    options.total_connection_timeout = Some(timeouts.connect);
    options.read_timeout = Some(timeouts.response);
    options.write_timeout = Some(timeouts.response);
    options.idle_timeout = Some(timeouts.idle);
    peer
}

#[cfg(test)]
mod tests;
