//! The long-lived state of one queue (its line, in-flight count, limit, pause switch and
//! counters), kept across configuration generations by the [`super::QueueRegistry`], and the
//! admission protocol: arrive, wait (without polling: a oneshot channel per waiter), be handed a
//! [`Slot`], release it.
//!
//! One short mutex per queue guards the scheduler and the counts; it is never held across an
//! await. A slot freed (or a limit raised, or a resume) hands the slot directly to the next
//! waiter under that lock, so admission order is exactly the scheduler's order.
//!
//! What a client cannot do here: hold more than `per_client_waiting` places, open more than
//! `max_tenants_per_client` tenants (without a tenant list), use a pass more than
//! `max_uses_per_minute` times or take more than `max_share` of the slots with passes while
//! others wait, or keep an early place for more than one request with one ticket (a ticket
//! holds one place in line, and is spent once admitted).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::limiter::Limiter;
use crate::cluster::Cluster;

/// What the queue needs to know of the upstream it admits toward: where traffic goes now and
/// what the servers there can take. Implemented over the upstream by the runtime, which binds
/// each queue to the upstream of its routes.
pub trait Capacity: Send + Sync {
    /// The datacenter new requests go to (None: none is up), and what its usable servers take
    /// at once in total when every one has a `max_in_flight` (None: not bounded so).
    fn target(&self) -> (Option<Arc<str>>, Option<usize>);
    /// Whether a server new requests may go to has room (`max_in_flight`).
    fn has_room(&self) -> bool;
}

/// The limits of one queue: one limiter per datacenter (an adaptive limit learns each one's
/// capacity, so that after a failover the concurrency follows the datacenter that takes the
/// traffic), capped by the datacenter's `max_in_flight` total.
struct Limits {
    config: QueueConfig,
    /// Before any datacenter is known (no binding, or nothing up).
    fallback: Limiter,
    by_datacenter: Vec<(Arc<str>, Limiter)>,
}

impl Limits {
    fn new(config: &QueueConfig) -> Self {
        Limits {
            config: config.clone(),
            fallback: Limiter::from_config(config),
            by_datacenter: Vec::new(),
        }
    }

    fn reconfigure(&mut self, config: &QueueConfig) {
        self.config = config.clone();
        self.fallback.reconfigure(config);
        for (_, limiter) in self.by_datacenter.iter_mut() {
            limiter.reconfigure(config);
        }
    }

    fn limiter(&mut self, datacenter: Option<&Arc<str>>) -> &mut Limiter {
        let Some(name) = datacenter else {
            return &mut self.fallback;
        };
        match self.by_datacenter.iter().position(|(n, _)| n == name) {
            Some(i) => &mut self.by_datacenter[i].1,
            None => {
                self.by_datacenter
                    .push((name.clone(), Limiter::from_config(&self.config)));
                let last = self.by_datacenter.len() - 1;
                &mut self.by_datacenter[last].1
            }
        }
    }

    fn peek(&self, datacenter: Option<&Arc<str>>) -> usize {
        datacenter
            .and_then(|name| self.by_datacenter.iter().find(|(n, _)| n == name))
            .map_or(self.fallback.limit(), |(_, l)| l.limit())
    }
}
use super::scheduler::{Class, Key, Scheduler};
use crate::config::LoginQueue as QueueConfig;
use crate::telemetry::Metrics;

/// Metric handles of one queue, resolved once.
pub struct QueueMetrics {
    waiting: IntGauge,
    in_flight: IntGauge,
    limit: IntGauge,
    wait_seconds: Histogram,
    admitted: IntCounter,
    waiting_room: IntCounter,
    queue_full: IntCounter,
    abandoned: IntCounter,
}

impl QueueMetrics {
    pub fn new(metrics: &Metrics, queue: &str) -> Self {
        let outcome = |o: &str| metrics.queue_outcomes_total.with_label_values(&[queue, o]);
        QueueMetrics {
            waiting: metrics.queue_waiting.with_label_values(&[queue]),
            in_flight: metrics.queue_in_flight.with_label_values(&[queue]),
            limit: metrics.queue_limit.with_label_values(&[queue]),
            wait_seconds: metrics.queue_wait_seconds.with_label_values(&[queue]),
            admitted: outcome("admitted"),
            waiting_room: outcome("waiting_room"),
            queue_full: outcome("queue_full"),
            abandoned: outcome("abandoned"),
        }
    }
}

/// The tenant of every name a tenant list does not know (and of requests naming none then),
/// and of a client's requests beyond `max_tenants_per_client`.
pub const UNKNOWN_TENANT: &str = "unknown";

/// Tickets remembered as spent (admitted once): a replay is an arrival like any other.
const SPENT_TICKETS: usize = 100_000;
/// Passes whose uses are counted at once; beyond, a new pass is not honoured this minute.
const COUNTED_PASSES: usize = 100_000;

/// Settings a reload may change.
#[derive(Clone)]
struct Settings {
    weights: Arc<HashMap<String, u32>>,
    unknown_weight: u32,
    max_waiting: usize,
    per_client_waiting: usize,
    /// None when a tenant list names the tenants.
    max_tenants_per_client: Option<usize>,
    pass_share: f64,
    pass_uses_per_minute: u32,
}

struct Waiter {
    tx: oneshot::Sender<Slot>,
    client: Option<IpAddr>,
    /// The tenant line it stands in (None: the passes line).
    tenant: Option<Arc<str>>,
    /// The ticket that gave it its place.
    ticket: Option<u64>,
    pass: bool,
    /// The waiting room's poll ([`QueueCore::poll`]): its ticket is not spent on admission.
    poll: bool,
}

/// Uses of each pass in the current minute.
#[derive(Default)]
struct PassUses {
    minute: u64,
    counts: HashMap<u64, u32>,
}

impl PassUses {
    /// Count one use of pass `id`; false when it is over its uses this minute.
    fn use_once(&mut self, id: u64, minute: u64, max: u32) -> bool {
        if minute != self.minute {
            self.minute = minute;
            self.counts.clear();
            self.counts.shrink_to(1024);
        }
        if !self.counts.contains_key(&id) && self.counts.len() >= COUNTED_PASSES {
            return false;
        }
        let count = self.counts.entry(id).or_insert(0);
        *count += 1;
        *count <= max
    }
}

/// Tickets already admitted once, the oldest forgotten first.
#[derive(Default)]
struct Spent {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl Spent {
    fn insert(&mut self, seq: u64) {
        if self.set.insert(seq) {
            self.order.push_back(seq);
            if self.order.len() > SPENT_TICKETS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

struct State {
    settings: Settings,
    limits: Limits,
    /// The datacenter traffic goes to and its `max_in_flight` total, as of the last look.
    target: (Option<Arc<str>>, Option<usize>),
    in_flight: usize,
    /// Of which admitted with a pass.
    pass_in_flight: usize,
    paused: bool,
    line: Scheduler<Waiter>,
    per_client: HashMap<IpAddr, usize>,
    /// The tenants each client has in line, with how many places.
    client_tenants: HashMap<IpAddr, Vec<(Arc<str>, usize)>>,
    /// Tickets whose place is in line now.
    tickets_in_line: HashSet<u64>,
    spent: Spent,
    pass_uses: PassUses,
    next_id: u64,
    last_seq: u64,
    /// Moving average of upstream latency (seconds), for the wait estimate.
    latency: Option<f64>,
    /// In a cluster: the slots the store allows this node now (None: not known, or the store
    /// is away: the node keeps to its share of the limit).
    shared_allowed: Option<usize>,
    /// In a cluster: the (in flight, desired) the store was last told.
    shared_told: Option<(usize, usize)>,
    /// In a cluster, while the store is being asked: the in-flight count it was sent. The node
    /// admits no more than that meanwhile, so that the store never counts fewer slots than it
    /// has in flight.
    shared_asking: Option<usize>,
}

impl State {
    /// Requests of the queue that may be in flight now: the limit learned for the datacenter
    /// taking the traffic, at most what its servers take at once.
    fn limit(&self) -> usize {
        let learned = self.limits.peek(self.target.0.as_ref());
        match self.target.1 {
            Some(cap) => learned.min(cap.max(1)),
            None => learned,
        }
    }

    /// Slots passes may hold while others wait: `max_share` of the limit, at least one.
    fn pass_cap(&self) -> usize {
        ((self.limit() as f64 * self.settings.pass_share).floor() as usize).max(1)
    }
}

/// Counters shown by `/status`.
#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    timed_out: AtomicU64,
    full: AtomicU64,
    abandoned: AtomicU64,
}

/// One queue's state, shared by every configuration generation that defines it.
pub struct QueueCore {
    pub name: String,
    state: Mutex<State>,
    metrics: QueueMetrics,
    counters: Counters,
    /// The upstream it admits toward.
    capacity: arc_swap::ArcSwapOption<Bound>,
    /// The store whose slots this queue shares with the other nodes' queues of the same name.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
}

/// What a node's line needs of the cluster's slots, for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedDemand {
    pub in_flight: usize,
    /// In flight plus waiting, within this node's limit.
    pub desired: usize,
    /// Tenants waiting: the node's weight when slots are short.
    pub weight: usize,
    /// The queue's limit (`concurrency`, or the limit learned).
    pub capacity: usize,
    pub waiting: usize,
    told: Option<(usize, usize)>,
}

impl SharedDemand {
    /// Whether the store must hear from this queue: people wait (the shares move), or what it
    /// has in flight or wants changed since it was last told.
    pub fn needs_asking(&self) -> bool {
        self.waiting > 0 || self.told != Some((self.in_flight, self.desired))
    }
}

/// Who arrives at the queue.
pub struct Arrival {
    pub tenant: Arc<str>,
    /// The per-client key (None: unknown, or exempt from `per_client_waiting`).
    pub client: Option<IpAddr>,
    /// The id of a valid pass brought along.
    pub pass: Option<u64>,
    /// The arrival sequence of a valid ticket brought back.
    pub ticket_seq: Option<u64>,
}

/// What the queue says to an arrival.
pub enum Entry {
    /// A slot was free.
    Admitted(Slot),
    /// In line: wait on it.
    Waiting(Waiting),
    /// `max_waiting` or `per_client_waiting` reached.
    Full,
}

/// The place of a request whose hold ran out.
#[derive(Debug, Clone)]
pub struct Expired {
    pub position: usize,
    pub eta_seconds: u64,
    pub seq: u64,
}

/// A snapshot of a queue for `/status`.
#[derive(Debug, Clone)]
pub struct QueueStatus {
    pub limit: usize,
    /// The datacenter whose limit applies now.
    pub datacenter: Option<Arc<str>>,
    /// The limit learned for each datacenter seen.
    pub limits_by_datacenter: Vec<(Arc<str>, usize)>,
    pub in_flight: usize,
    pub waiting: usize,
    pub passes_waiting: usize,
    pub tenants_waiting: usize,
    pub top_tenants: Vec<(Arc<str>, usize)>,
    pub paused: bool,
    pub admitted: u64,
    pub timed_out: u64,
    pub queue_full: u64,
    pub abandoned: u64,
    pub latency_ms: Option<f64>,
    pub eta_seconds: u64,
}

/// One queue as the history samples it.
#[derive(Debug, Clone)]
pub struct QueueSample {
    pub waiting: usize,
    pub in_flight: usize,
    pub limit: usize,
    /// Admitted since start.
    pub admitted: u64,
    /// The deepest tenants, deepest first.
    pub top_tenants: Vec<(Arc<str>, usize)>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl QueueCore {
    pub fn new(config: &QueueConfig, metrics: &Metrics) -> Arc<Self> {
        let core = Arc::new(QueueCore {
            name: config.name.clone(),
            state: Mutex::new(State {
                settings: Self::settings(config),
                limits: Limits::new(config),
                target: (None, None),
                in_flight: 0,
                pass_in_flight: 0,
                paused: false,
                line: Scheduler::new(),
                per_client: HashMap::new(),
                client_tenants: HashMap::new(),
                tickets_in_line: HashSet::new(),
                spent: Spent::default(),
                pass_uses: PassUses::default(),
                next_id: 0,
                last_seq: 0,
                latency: None,
                shared_allowed: None,
                shared_told: None,
                shared_asking: None,
            }),
            metrics: QueueMetrics::new(metrics, &config.name),
            counters: Counters::default(),
            capacity: arc_swap::ArcSwapOption::empty(),
            cluster: std::sync::OnceLock::new(),
        });
        core.configure(config);
        core
    }

    fn settings(config: &QueueConfig) -> Settings {
        let weights = match &config.tenants {
            Some(known) => known.weights.clone(),
            None => Arc::new(
                config
                    .tenant_weights
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            ),
        };
        Settings {
            weights,
            unknown_weight: config.tenants.as_ref().map_or(1, |t| t.unknown_weight),
            max_waiting: config.max_waiting,
            per_client_waiting: config.per_client_waiting,
            max_tenants_per_client: config
                .tenants
                .is_none()
                .then_some(config.max_tenants_per_client),
            pass_share: config.pass.max_share,
            pass_uses_per_minute: config.pass.max_uses_per_minute,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counts: keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Apply a (new) configuration of this queue; the line and what it learned stay.
    pub fn configure(self: &Arc<Self>, config: &QueueConfig) {
        let mut state = self.lock();
        state.settings = Self::settings(config);
        state.limits.reconfigure(config);
        self.dispatch(&mut state);
    }

    /// Pause or resume admissions; returns whether the queue was paused before.
    pub fn set_paused(self: &Arc<Self>, paused: bool) -> bool {
        let mut state = self.lock();
        let was = std::mem::replace(&mut state.paused, paused);
        self.dispatch(&mut state);
        was
    }

    /// Hand free slots to waiters, in the scheduler's order. Called under the lock.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        self.look(state);
        while !state.paused
            && state.in_flight < state.limit()
            && self.room()
            && self.shared_room(state)
        {
            let passes_first = state.pass_in_flight < state.pass_cap();
            let Some((_, _, waiter)) = state.line.pop_with(passes_first) else {
                break;
            };
            Self::forget(state, &waiter);
            state.in_flight += 1;
            if waiter.pass {
                state.pass_in_flight += 1;
            }
            match waiter.tx.send(Slot::new(self.clone(), waiter.pass)) {
                Ok(()) if waiter.poll => {}
                Ok(()) => {
                    if let Some(seq) = waiter.ticket {
                        state.spent.insert(seq);
                    }
                    self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                    self.metrics.admitted.inc();
                }
                Err(mut slot) => {
                    // The waiter is gone (its cancellation is waiting for the lock).
                    slot.disarm();
                    state.in_flight -= 1;
                    if waiter.pass {
                        state.pass_in_flight -= 1;
                    }
                }
            }
        }
        if let Some(cluster) = self.cluster.get() {
            // Ask the store again only when what it was told is no longer true: the shares
            // move with time on the slots task's tick, not once per round trip.
            let limit = state.limit();
            let desired = (state.in_flight + state.line.len()).min(limit.max(state.in_flight));
            if !state.line.is_empty() && state.shared_told != Some((state.in_flight, desired)) {
                cluster.slots_wanted();
            }
        }
        self.publish(state);
    }

    /// In a cluster, whether this node may admit one more: within what the store allows it,
    /// or, while that is not known, within its share of the limit (limit / live nodes).
    fn shared_room(&self, state: &State) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return true;
        };
        match state.shared_allowed {
            Some(allowed) if cluster.is_up() => {
                state.in_flight
                    < state
                        .shared_asking
                        .map_or(allowed, |sent| allowed.min(sent))
            }
            _ => {
                let share = (state.limit() / cluster.live_nodes()).max(1);
                let room = state.in_flight < share;
                if room && !state.line.is_empty() {
                    cluster
                        .metrics
                        .fallbacks
                        .with_label_values(&["queue"])
                        .inc();
                }
                room
            }
        }
    }

    /// The store this queue shares its slots through, in a cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Share this queue's slots with the other nodes through `cluster`.
    pub fn join_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// What this node's line needs of the cluster's slots now.
    pub fn shared_demand(&self) -> SharedDemand {
        let mut state = self.lock();
        self.look(&mut state);
        let limit = state.limit();
        let waiting = state.line.len();
        SharedDemand {
            in_flight: state.in_flight,
            desired: (state.in_flight + waiting).min(limit.max(state.in_flight)),
            weight: if waiting > 0 {
                state.line.tenant_count().max(1)
            } else {
                0
            },
            capacity: limit,
            waiting,
            told: state.shared_told,
        }
    }

    /// The store is being asked with `demand`: admit no more than it says meanwhile.
    pub fn begin_asking(&self, demand: &SharedDemand) {
        self.lock().shared_asking = Some(demand.in_flight);
    }

    /// What the store answered to `asked` (None: it is away), then admit what it allows.
    pub fn set_shared(self: &Arc<Self>, allowed: Option<usize>, asked: &SharedDemand) {
        let mut state = self.lock();
        state.shared_asking = None;
        state.shared_allowed = allowed;
        state.shared_told = allowed.map(|_| (asked.in_flight, asked.desired));
        self.dispatch(&mut state);
    }

    fn publish(&self, state: &State) {
        self.metrics.waiting.set(state.line.len() as i64);
        self.metrics.in_flight.set(state.in_flight as i64);
        self.metrics.limit.set(state.limit() as i64);
    }

    /// A waiter leaves the line: its client's counts, its tenant, its ticket.
    fn forget(state: &mut State, waiter: &Waiter) {
        if let Some(seq) = waiter.ticket {
            state.tickets_in_line.remove(&seq);
        }
        let Some(ip) = waiter.client else {
            return;
        };
        if let Some(count) = state.per_client.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                state.per_client.remove(&ip);
            }
        }
        if let (Some(tenant), Some(tenants)) = (&waiter.tenant, state.client_tenants.get_mut(&ip)) {
            if let Some(at) = tenants.iter().position(|(t, _)| t == tenant) {
                tenants[at].1 -= 1;
                if tenants[at].1 == 0 {
                    tenants.swap_remove(at);
                }
            }
            if tenants.is_empty() {
                state.client_tenants.remove(&ip);
            }
        }
    }

    /// The tenant line an arrival stands in: without a tenant list, a client with
    /// `max_tenants_per_client` tenants in line already puts any other one in `unknown`.
    fn tenant_for(state: &State, client: Option<IpAddr>, tenant: Arc<str>) -> Arc<str> {
        let (Some(max), Some(ip)) = (state.settings.max_tenants_per_client, client) else {
            return tenant;
        };
        match state.client_tenants.get(&ip) {
            Some(tenants) if tenants.len() >= max && !tenants.iter().any(|(t, _)| *t == tenant) => {
                Arc::from(UNKNOWN_TENANT)
            }
            _ => tenant,
        }
    }

    /// A request arrives on the queue.
    pub fn arrive(self: &Arc<Self>, arrival: Arrival) -> Entry {
        self.enter(arrival, false)
    }

    /// The waiting room's page asks where its ticket stands. It queues as any arrival, but the
    /// slot it may be handed is not its to keep (the caller releases it at once, and the slot
    /// goes to the next in line), its ticket is not spent, and it is not counted as admitted:
    /// the page then loads its address again, and that request goes in line at the ticket's
    /// place.
    pub fn poll(self: &Arc<Self>, arrival: Arrival) -> Entry {
        self.enter(arrival, true)
    }

    fn enter(self: &Arc<Self>, arrival: Arrival, poll: bool) -> Entry {
        let mut state = self.lock();
        let minute = now_micros() / 60_000_000;
        let max_uses = state.settings.pass_uses_per_minute;
        let pass = arrival
            .pass
            .is_some_and(|id| state.pass_uses.use_once(id, minute, max_uses));
        let tenant = Self::tenant_for(&state, arrival.client, arrival.tenant.clone());
        let class = if pass {
            Class::Pass
        } else {
            Class::Tenant(tenant.clone())
        };
        // A ticket holds one place: not while another request holds it, not once spent.
        let ticket = arrival
            .ticket_seq
            .filter(|seq| !state.tickets_in_line.contains(seq) && !state.spent.set.contains(seq));
        let tenants_waiting = state.line.len() - state.line.passes();
        let nobody_ahead = match class {
            Class::Pass => {
                state.line.passes() == 0
                    && (state.pass_in_flight < state.pass_cap() || tenants_waiting == 0)
            }
            Class::Tenant(_) => {
                tenants_waiting == 0
                    && (state.line.passes() == 0 || state.pass_in_flight >= state.pass_cap())
            }
        };
        self.look(&mut state);
        if !state.paused
            && nobody_ahead
            && state.in_flight < state.limit()
            && self.room()
            && self.shared_room(&state)
        {
            state.in_flight += 1;
            if pass {
                state.pass_in_flight += 1;
            }
            if !poll {
                if let Some(seq) = ticket {
                    state.spent.insert(seq);
                }
                self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                self.metrics.admitted.inc();
                self.metrics.wait_seconds.observe(0.0);
            }
            self.publish(&state);
            return Entry::Admitted(Slot::new(self.clone(), pass));
        }
        let per_client = arrival
            .client
            .map_or(0, |ip| state.per_client.get(&ip).copied().unwrap_or(0));
        if state.line.len() >= state.settings.max_waiting
            || (arrival.client.is_some() && per_client >= state.settings.per_client_waiting)
        {
            drop(state);
            self.counters.full.fetch_add(1, Ordering::Relaxed);
            self.metrics.queue_full.inc();
            return Entry::Full;
        }
        if let Some(ip) = arrival.client {
            *state.per_client.entry(ip).or_insert(0) += 1;
            if !pass {
                let tenants = state.client_tenants.entry(ip).or_default();
                match tenants.iter_mut().find(|(t, _)| *t == tenant) {
                    Some((_, count)) => *count += 1,
                    None => tenants.push((tenant.clone(), 1)),
                }
            }
        }
        let now = now_micros();
        let fresh_seq = now.max(state.last_seq + 1);
        let seq = match ticket {
            Some(seq) if seq <= state.last_seq.max(now) => {
                state.tickets_in_line.insert(seq);
                seq
            }
            _ => {
                state.last_seq = fresh_seq;
                fresh_seq
            }
        };
        let kept_ticket = (Some(seq) == ticket).then_some(seq);
        state.next_id += 1;
        let key = Key {
            seq,
            id: state.next_id,
        };
        let weight = if &*tenant == UNKNOWN_TENANT {
            state.settings.unknown_weight
        } else {
            state
                .settings
                .weights
                .get(tenant.as_ref())
                .copied()
                .unwrap_or(1)
        };
        let (tx, rx) = oneshot::channel();
        state.line.push(
            &class,
            key,
            weight,
            Waiter {
                tx,
                client: arrival.client,
                tenant: (!pass).then(|| tenant.clone()),
                ticket: kept_ticket,
                pass,
                poll,
            },
        );
        self.dispatch(&mut state);
        Entry::Waiting(Waiting {
            core: self.clone(),
            rx,
            class,
            key,
            since: Instant::now(),
            armed: true,
        })
    }

    /// An estimate of the wait, in whole seconds, for the place `position`.
    fn eta(state: &State, position: usize) -> u64 {
        let latency = state.latency.unwrap_or(1.0);
        let limit = state.limit().max(1) as f64;
        (position as f64 * latency / limit).ceil().max(1.0) as u64
    }

    /// Take a waiter out of line. Returns its place when it was still in line.
    fn cancel(&self, class: &Class, key: Key) -> Option<Expired> {
        let mut state = self.lock();
        let position = state.line.position(class, key);
        let waiter = state.line.remove(class, key)?;
        Self::forget(&mut state, &waiter);
        let eta_seconds = Self::eta(&state, position);
        self.publish(&state);
        Some(Expired {
            position,
            eta_seconds,
            seq: key.seq,
        })
    }

    /// A slot comes back, with a latency sample when the upstream answered well, from the
    /// datacenter that answered.
    fn release(
        self: &Arc<Self>,
        sample: Option<Duration>,
        pass: bool,
        datacenter: Option<Arc<str>>,
    ) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if pass {
            state.pass_in_flight = state.pass_in_flight.saturating_sub(1);
        }
        if let Some(latency) = sample {
            let secs = latency.as_secs_f64();
            state.latency = Some(match state.latency {
                Some(avg) => avg + 0.1 * (secs - avg),
                None => secs,
            });
            let in_flight = state.in_flight + 1;
            state
                .limits
                .limiter(datacenter.as_ref())
                .sample(latency, in_flight, Instant::now());
        }
        self.dispatch(&mut state);
    }

    pub fn status(&self, top: usize) -> QueueStatus {
        let mut state = self.lock();
        // An idle queue has not looked at its upstream lately.
        self.look(&mut state);
        self.publish(&state);
        let waiting = state.line.len();
        QueueStatus {
            limit: state.limit(),
            datacenter: state.target.0.clone(),
            limits_by_datacenter: state
                .limits
                .by_datacenter
                .iter()
                .map(|(n, l)| (n.clone(), l.limit()))
                .collect(),
            in_flight: state.in_flight,
            waiting,
            passes_waiting: state.line.passes(),
            tenants_waiting: state.line.tenant_count(),
            top_tenants: state.line.depths(top),
            paused: state.paused,
            admitted: self.counters.admitted.load(Ordering::Relaxed),
            timed_out: self.counters.timed_out.load(Ordering::Relaxed),
            queue_full: self.counters.full.load(Ordering::Relaxed),
            abandoned: self.counters.abandoned.load(Ordering::Relaxed),
            latency_ms: state.latency.map(|s| s * 1000.0),
            eta_seconds: if waiting == 0 {
                0
            } else {
                Self::eta(&state, waiting + 1)
            },
        }
    }

    pub fn limit(&self) -> usize {
        self.lock().limit()
    }

    /// What the history records each second: cheaper than `status` (no gauges published, the
    /// 3 deepest tenants), one short hold of the queue's lock. Like `status`, it refreshes an
    /// idle queue's view of its upstream, so the limit drawn follows a failover.
    pub fn sample(&self, top: usize) -> QueueSample {
        let mut state = self.lock();
        self.look(&mut state);
        QueueSample {
            waiting: state.line.len(),
            in_flight: state.in_flight,
            limit: state.limit(),
            admitted: self.counters.admitted.load(Ordering::Relaxed),
            top_tenants: state.line.depths(top),
        }
    }

    /// Bind the queue to the upstream it admits toward (each configuration generation does).
    pub fn bind(&self, capacity: Option<Arc<dyn Capacity>>) {
        self.capacity.store(capacity.map(|c| Arc::new(Bound(c))));
    }

    /// Admit what the upstream has room for now (called on a short tick: room freed by
    /// requests of other routes is noticed there).
    pub fn poke(self: &Arc<Self>) {
        let mut state = self.lock();
        if !state.line.is_empty() {
            self.dispatch(&mut state);
        }
    }

    /// Update what the queue knows of its upstream's target. Under the lock.
    fn look(&self, state: &mut State) {
        if let Some(bound) = self.capacity.load().as_ref() {
            state.target = bound.0.target();
        }
    }

    /// Whether the upstream has room for one more (always, unbound).
    fn room(&self) -> bool {
        self.capacity
            .load()
            .as_ref()
            .is_none_or(|bound| bound.0.has_room())
    }
}

/// A queue's binding to its upstream.
struct Bound(Arc<dyn Capacity>);

/// A place in line. Dropping it (the client went away) leaves the line at once.
pub struct Waiting {
    core: Arc<QueueCore>,
    rx: oneshot::Receiver<Slot>,
    class: Class,
    key: Key,
    since: Instant,
    armed: bool,
}

impl Waiting {
    /// Wait up to `hold` for a slot; past it, leave the line and say where it was.
    pub async fn wait(mut self, hold: Duration) -> Result<Slot, Expired> {
        let outcome = tokio::time::timeout(hold, &mut self.rx).await;
        let waited = self.since.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(slot)) => {
                self.armed = false;
                self.core.metrics.wait_seconds.observe(waited);
                Ok(slot)
            }
            // The sender never drops without sending while the entry is in line; treat it as
            // the hold running out.
            Ok(Err(_)) | Err(_) => {
                self.armed = false;
                match self.core.cancel(&self.class, self.key) {
                    Some(expired) => {
                        self.core.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                        self.core.metrics.waiting_room.inc();
                        self.core.metrics.wait_seconds.observe(waited);
                        Err(expired)
                    }
                    // Admitted at the last moment: the slot is in the channel.
                    None => match self.rx.try_recv() {
                        Ok(slot) => {
                            self.core.metrics.wait_seconds.observe(waited);
                            Ok(slot)
                        }
                        Err(_) => Err(Expired {
                            position: 1,
                            eta_seconds: 1,
                            seq: self.key.seq,
                        }),
                    },
                }
            }
        }
    }

    /// How long this request has been in line.
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.armed && self.core.cancel(&self.class, self.key).is_some() {
            self.core.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            self.core.metrics.abandoned.inc();
        }
    }
}

/// Permission to have one request in flight to the upstream; released when dropped.
pub struct Slot {
    core: Option<Arc<QueueCore>>,
    /// Admitted with a pass (counted against the passes' share).
    pass: bool,
}

impl Slot {
    fn new(core: Arc<QueueCore>, pass: bool) -> Self {
        Slot {
            core: Some(core),
            pass,
        }
    }

    /// Whether this slot was given to a request with a pass.
    pub fn with_pass(&self) -> bool {
        self.pass
    }

    fn disarm(&mut self) {
        self.core = None;
    }

    /// Release with a latency sample (an answer that was not a 5xx) from `datacenter`.
    pub fn complete(mut self, latency: Option<Duration>, datacenter: Option<Arc<str>>) {
        if let Some(core) = self.core.take() {
            core.release(latency, self.pass, datacenter);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.release(None, self.pass, None);
        }
    }
}
