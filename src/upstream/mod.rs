//! Upstreams: datacenters in priority order, their servers, and the choice of a server for
//! one try of a request (active datacenter first, then the others), fed by active health
//! checks (`health`), passive ejection (`outlier`), the failback rule (`failback`) and the
//! retry rules (`retry`), over state that outlives configuration generations (`state`).

pub mod failback;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod retry;
pub mod state;
pub mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::upstreams::peer::HttpPeer;
use prometheus::{IntCounter, IntGauge};

use crate::config;
use crate::history::{EventKind, Events};
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
    /// Requests this server takes at once (`max_in_flight`), None: no cap.
    pub max_in_flight: Option<usize>,
    upstream: Arc<UpstreamState>,
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

impl Server {
    /// Whether one more request fits under `max_in_flight`.
    pub fn has_room(&self) -> bool {
        self.max_in_flight
            .is_none_or(|max| self.state.in_flight.load(Ordering::Acquire) < max as i64)
    }
}

/// Marks a server busy with one try for as long as it lives, and holds the try's socket
/// registration once connected.
pub struct InFlight {
    server: Arc<Server>,
    registration: Option<transport::Registration>,
    /// `per_try` bounds this try's reads.
    pub per_try: bool,
}

impl InFlight {
    /// Count a try at this server, within its `max_in_flight` (None: the server is full).
    pub fn try_start(server: Arc<Server>) -> Option<Self> {
        let state = &server.state;
        match server.max_in_flight {
            None => {
                state.in_flight.fetch_add(1, Ordering::AcqRel);
            }
            Some(max) => {
                state
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max as i64).then_some(n + 1)
                    })
                    .ok()?;
            }
        }
        Some(InFlight {
            server,
            registration: None,
            per_try: false,
        })
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The try's connection is up on socket `fd`: it can be cut from now on.
    pub fn connected(&mut self, fd: std::os::unix::io::RawFd) {
        self.registration = Some(self.server.state.tries.register(fd, self.server.address));
    }

    /// Whether the try was cut because its server went down.
    pub fn was_cut(&self) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| r.cell().was_cut())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.registration = None;
        self.server.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.server.max_in_flight.is_some() {
            self.server.upstream.room.notify_waiters();
        }
    }
}

pub struct Datacenter {
    pub name: String,
    /// The name again, shared (the login queue's per-datacenter limits are keyed by it).
    pub name_arc: Arc<str>,
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
    /// Where failovers, failbacks and "every datacenter down" are marked for the history.
    events: Arc<Events>,
}

/// The server chosen for one try, counted in flight on it.
pub struct Pick {
    pub datacenter: usize,
    pub server: Arc<Server>,
    pub in_flight: InFlight,
}

/// The outcome of choosing a server.
pub enum Choice {
    Server(Pick),
    /// Every datacenter is down and `when_all_down` is `maintenance`.
    AllDown,
    /// Every server that may take the request has been tried.
    Exhausted,
    /// Servers could take it, but all of them are at their `max_in_flight`.
    Busy,
}

impl Upstream {
    pub fn new(
        config: &config::Upstream,
        metrics: &Metrics,
        registry: &Registry,
        events: &Arc<Events>,
    ) -> Self {
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
                let upstream_state = registry.upstream(name);
                let servers = dc
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, address)| {
                        Arc::new(Server {
                            address: *address,
                            peer: peer(*address, &config.timeouts),
                            state: registry.server(name, *address),
                            max_in_flight: dc.max_in_flight.get(i).copied().flatten(),
                            upstream: upstream_state.clone(),
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
                    name_arc: Arc::from(dc.name.as_str()),
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
            events: events.clone(),
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
    /// datacenter this request has not tried and that have room (`max_in_flight`), then the
    /// other datacenters. When every datacenter is down: the maintenance answer, or
    /// (`try_all`) every server not drained. The pick is counted in flight on its server.
    pub fn pick(&self, tried: &[SocketAddr], now_ms: u64) -> Choice {
        let try_all = self.all_down();
        if try_all && self.config.when_all_down == config::WhenAllDown::Maintenance {
            return Choice::AllDown;
        }
        let mut full = false;
        for index in self.order() {
            let dc = &self.datacenters[index];
            let count = dc.servers.len();
            if count == 0 {
                continue;
            }
            let start = dc.next.fetch_add(1, Ordering::Relaxed);
            for offset in 0..count {
                let server = &dc.servers[(start + offset) % count];
                if tried.contains(&server.address) || !server.may_take(try_all, now_ms) {
                    continue;
                }
                match InFlight::try_start(server.clone()) {
                    Some(in_flight) => {
                        return Choice::Server(Pick {
                            datacenter: index,
                            server: server.clone(),
                            in_flight,
                        })
                    }
                    None => full = true,
                }
            }
        }
        if full {
            Choice::Busy
        } else {
            Choice::Exhausted
        }
    }

    /// Whether a server this request has not tried could take it (room or not).
    /// [`Upstream::pick`], waiting where a proxy should rather than answer at once: just
    /// started (or upgraded), for the first health checks instead of the maintenance page;
    /// every server at its `max_in_flight`, for room (as HAProxy's queue does), at most the
    /// connect timeout.
    pub async fn choose(&self, tried: &[SocketAddr], now_ms: u64) -> Choice {
        let mut choice = self.pick(tried, now_ms);
        if matches!(choice, Choice::AllDown) && self.first_checks_pending() {
            let deadline = Instant::now() + self.first_checks_wait();
            while matches!(choice, Choice::AllDown) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
                choice = self.pick(tried, self.now_ms());
            }
        }
        if matches!(choice, Choice::Busy) {
            let deadline = Instant::now() + self.config.timeouts.connect;
            while matches!(choice, Choice::Busy) && Instant::now() < deadline {
                self.wait_for_room(deadline.saturating_duration_since(Instant::now()))
                    .await;
                choice = self.pick(tried, self.now_ms());
            }
        }
        choice
    }

    pub fn has_another(&self, tried: &[SocketAddr], now_ms: u64) -> bool {
        let try_all = self.all_down();
        if try_all && self.config.when_all_down == config::WhenAllDown::Maintenance {
            return false;
        }
        self.datacenters.iter().any(|dc| {
            dc.servers
                .iter()
                .any(|s| !tried.contains(&s.address) && s.may_take(try_all, now_ms))
        })
    }

    /// Whether a server of the active datacenter (or, none being active, any up one) could
    /// take one more request now.
    pub fn has_room(&self, now_ms: u64) -> bool {
        let room = |dc: &Datacenter| {
            dc.servers
                .iter()
                .any(|s| s.state.usable(now_ms) && s.has_room())
        };
        let some = match self.active_datacenter() {
            Some(active) => room(&self.datacenters[active]),
            None => self.datacenters.iter().any(room),
        };
        some || self.all_down()
    }

    /// Wait until a server of this upstream may have room again, at most `limit`.
    pub async fn wait_for_room(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.state.room.notified()).await;
    }

    /// The datacenter a new request would go to, and what its servers can take at once in
    /// total when every usable one has a `max_in_flight` (None: not bounded that way).
    pub fn capacity(&self, now_ms: u64) -> (Option<usize>, Option<usize>) {
        let Some(active) = self.active_datacenter() else {
            return (None, None);
        };
        let dc = &self.datacenters[active];
        let mut total = 0usize;
        for server in dc.servers.iter().filter(|s| s.state.usable(now_ms)) {
            match server.max_in_flight {
                Some(max) => total += max,
                None => return (Some(active), None),
            }
        }
        (Some(active), (total > 0).then_some(total))
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
                    // No datacenter was active: every one was down, or this is the start.
                    let after_outage = from.is_none() && last_active.is_some();
                    let from = from.or_else(|| {
                        let name = last_active.as_deref()?;
                        self.datacenters.iter().position(|dc| dc.name == name)
                    });
                    self.log_switch(from, to, after_outage);
                    if let Some(to) = to {
                        *last_active = Some(self.dc_name(to).to_string());
                    }
                }
            }
        }
        for (i, dc) in self.datacenters.iter().enumerate() {
            dc.active_gauge
                .set(i64::from(dc.state.active.load(Ordering::Relaxed)));
            for server in &dc.servers {
                let usable = server.state.usable(now);
                server.up_gauge.set(i64::from(usable));
                let was = server.state.was_usable.swap(usable, Ordering::AcqRel);
                if was && !usable && !server.state.drained.load(Ordering::Relaxed) {
                    self.schedule_cut(i, server);
                }
            }
        }
    }

    /// A server just went down (ejected or failing its checks; a drain lets requests
    /// finish): the tries in flight to it now are cut after `on_down.cut_after` if it is still
    /// down then. Idempotent ones are retried elsewhere, the others answered 502, and a login
    /// queue slot they hold is freed.
    fn schedule_cut(&self, datacenter: usize, server: &Arc<Server>) {
        if server.state.tries.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mark = server.state.tries.mark();
        let server = server.clone();
        let clock = self.clock;
        let grace = self.config.on_down.cut_after;
        let upstream = self.name.clone();
        let dc = self.dc_name(datacenter).to_string();
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            if server.state.usable(clock.now_ms()) {
                return;
            }
            let cut = server.state.tries.cut_before(mark);
            if cut > 0 {
                tracing::warn!(
                    upstream = %upstream,
                    datacenter = %dc,
                    server = %server.address,
                    requests = cut,
                    "requests in flight to a server that went down were cut"
                );
            }
        });
    }

    /// Log and count a change of the active datacenter, and mark it for the history.
    /// `after_outage`: no datacenter was active just before (every one was down).
    fn log_switch(&self, from: Option<usize>, to: Option<usize>, after_outage: bool) {
        match (from, to) {
            (Some(from), Some(to)) if from != to => {
                if let Some(counter) = self.failovers.get(from).and_then(|row| row.get(to)) {
                    counter.inc();
                }
                let (what, kind) = match (to < from, after_outage) {
                    (true, false) => ("failback", EventKind::Failback),
                    (false, false) => ("failover", EventKind::Failover),
                    (true, true) => ("failback", EventKind::Recovered),
                    (false, true) => ("failover", EventKind::Recovered),
                };
                tracing::warn!(
                    upstream = %self.name,
                    from = self.dc_name(from),
                    to = self.dc_name(to),
                    "datacenter {what}"
                );
                self.events.record(
                    kind,
                    &format!(
                        "{}: {} → {}",
                        self.name,
                        self.dc_name(from),
                        self.dc_name(to)
                    ),
                );
            }
            (_, Some(to)) => {
                tracing::info!(upstream = %self.name, datacenter = self.dc_name(to), "datacenter active");
                // The same datacenter as before every one went down: it is back.
                if after_outage {
                    self.events.record(
                        EventKind::Recovered,
                        &format!("{}: {} active again", self.name, self.dc_name(to)),
                    );
                }
            }
            (_, None) => {
                tracing::error!(
                    upstream = %self.name,
                    when_all_down = ?self.config.when_all_down,
                    "every datacenter is down"
                );
                self.events.record(
                    EventKind::AllDown,
                    &format!("{}: every datacenter is down", self.name),
                );
            }
        }
    }

    /// For `/status`: how long before datacenter `index` (up, better than the active one) takes
    /// the traffic back.
    pub fn failback_remaining(&self, index: usize, now_ms: u64) -> Option<Duration> {
        let dc = self.datacenters.get(index)?;
        failback::failback_remaining(&dc.state, now_ms, self.config.failback_after)
    }
}

impl Server {
    /// Whether this server may take a new request (room aside).
    fn may_take(&self, try_all: bool, now_ms: u64) -> bool {
        if try_all {
            !self.state.drained.load(Ordering::Relaxed)
        } else {
            self.state.usable(now_ms)
        }
    }
}

/// The peer template of a server: every timeout set (pingora has no defaults), and TCP
/// keep-alive with `TCP_USER_TIMEOUT` from `timeouts.unacked`.
fn peer(address: SocketAddr, timeouts: &config::UpstreamTimeouts) -> HttpPeer {
    let mut peer = HttpPeer::new(address, false, String::new());
    let options = &mut peer.options;
    options.connection_timeout = Some(timeouts.connect);
    options.total_connection_timeout = Some(timeouts.connect);
    options.read_timeout = Some(timeouts.response);
    options.write_timeout = Some(timeouts.response);
    options.idle_timeout = Some(timeouts.idle);
    options.tcp_keepalive = timeouts.unacked.map(transport::keepalive);
    peer
}

#[cfg(test)]
mod tests;
