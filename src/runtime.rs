//! Runtime: the compiled configuration as one immutable snapshot behind an `ArcSwap`, and the
//! long-lived state (metrics, access log, certificate resolvers) that snapshots point into.
//!
//! Two things put a new snapshot in force, one at a time, through the same compile and swap: a
//! reload ([`Runtime::install`], a new base file) and a schedule change
//! ([`Runtime::apply_schedule`], the same base file with other overlays in force). Either way,
//! state whose definition did not change carries over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Method;

use crate::cluster::{Cluster, ClusterError};
use crate::config::{Config, Route};
use crate::history::{EventKind, Events, History};
use crate::queue::{Capacity, LoginQueue, QueueRegistry};
use crate::schedule::clock::{Clock, SystemClock};
use crate::schedule::{self, calendar, overlay};
use crate::shield::keys::KeyHasher;
use crate::shield::{Shield, ShieldState};
use crate::telemetry::{rfc3339_now, AccessLog, Metrics, RouteMetrics};
use crate::tls::SniResolver;
use crate::upstream::{Registry, Upstream};

/// One configuration generation, compiled: what a request reads, loaded once per request.
pub struct Snapshot {
    pub generation: u64,
    /// The configuration in force: `base` with the overlays of `overlays` applied.
    pub config: Arc<Config>,
    /// The file as loaded, before any scheduled overlay: what a schedule change starts from.
    pub base: Arc<Config>,
    /// The overlays of `base.schedules` in force in this generation (indexes, ascending).
    pub overlays: Vec<usize>,
    pub loaded_at: String,
    pub routes: Vec<CompiledRoute>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub shield: Arc<Shield>,
    /// By index of `Config::login_queues`.
    pub queues: Vec<Arc<LoginQueue>>,
}

/// A route with its metric handles resolved.
pub struct CompiledRoute {
    pub route: Route,
    pub metrics: RouteMetrics,
}

impl Snapshot {
    /// The first route whose host, path prefix and method all match.
    pub fn route(&self, host: &str, path: &str, method: &Method) -> Option<usize> {
        self.routes
            .iter()
            .position(|compiled| route_matches(&compiled.route, host, path, method))
    }
}

fn route_matches(route: &Route, host: &str, path: &str, method: &Method) -> bool {
    if let Some(pattern) = &route.host {
        let matched = match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => pattern == host,
        };
        if !matched {
            return false;
        }
    }
    let prefix = route.path_prefix.as_bytes();
    let matched = if route.ignore_case {
        path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix)
    } else {
        path.as_bytes().starts_with(prefix)
    };
    if !matched {
        return false;
    }
    match &route.methods {
        Some(methods) => methods.contains(method),
        None => true,
    }
}

/// Why the runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Cluster(#[from] ClusterError),
}

/// Everything that lives as long as the process: the current snapshot and the state that
/// outlives configuration generations.
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    /// Reloads run one at a time (control plane only; requests never take it).
    reload_lock: std::sync::Mutex<()>,
    pub metrics: Arc<Metrics>,
    /// Buckets, bans and open connections: kept across reloads.
    pub shield_state: Arc<ShieldState>,
    pub access_log: Arc<AccessLog>,
    /// Upstream health, ejections, drains and failback state, by stable identity: every
    /// snapshot finds its servers' and datacenters' state here.
    pub upstreams: Arc<Registry>,
    /// One resolver per TLS listener, by listener index.
    pub resolvers: Vec<Option<Arc<SniResolver>>>,
    pub started_at: SystemTime,
    pub started: Instant,
    /// Set once SIGTERM arrived: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// Set once every listener accepts connections.
    pub listening: AtomicBool,
    pub last_reload_error: ArcSwapOption<String>,
    /// Login queue state (lines, limits, pause) that outlives configuration generations.
    pub queues: QueueRegistry,
    /// The last 15 minutes, second by second, and the events marked on them.
    pub history: Arc<History>,
    /// The time schedules read (shifted only by `REMPART_SCHEDULE_CLOCK`, a testing aid).
    pub clock: Arc<dyn Clock>,
    /// Wakes the scheduler after a reload, so that it computes its next change again.
    pub schedule_changed: tokio::sync::Notify,
    /// The link to the other nodes' store, when the file has a `cluster` section (set at
    /// start: a reload cannot change it).
    pub cluster: Option<Arc<Cluster>>,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Arc<Self>, RuntimeError> {
        Self::with_queue_key(config, rand::random::<[u8; 32]>().to_vec())
    }

    /// A runtime whose login queues without `secrets` sign with `queue_key` (the key kept in
    /// the runtime directory).
    pub fn with_queue_key(config: Config, queue_key: Vec<u8>) -> Result<Arc<Self>, RuntimeError> {
        Self::with_clock(config, queue_key, Arc::new(SystemClock))
    }

    /// A runtime whose schedules read `clock`.
    pub fn with_clock(
        config: Config,
        queue_key: Vec<u8>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, RuntimeError> {
        let metrics = Arc::new(Metrics::new()?);
        let access_log = Arc::new(AccessLog::new(config.server.access_log.clone()));
        let resolvers = config
            .listeners
            .iter()
            .map(|listener| {
                listener
                    .tls
                    .as_ref()
                    .map(|tls| Arc::new(SniResolver::new(&tls.certificates)))
            })
            .collect();
        let upstreams = Arc::new(Registry::new());
        // A cluster's nodes compute client keys and sign tickets alike, from the shared secret.
        let (cluster, shield_state, queue_key) = match &config.cluster {
            Some(settings) => {
                let secret = settings.secret.0.as_bytes();
                let mut state = ShieldState::with_hasher(KeyHasher::from_secret(secret));
                let cluster = Cluster::new(settings.clone(), &metrics.registry)?;
                state.cluster = Some(cluster.clone());
                let key = crate::cluster::derive(secret, b"rempart login queue tickets");
                (Some(cluster), state, key.to_vec())
            }
            None => (None, ShieldState::default(), queue_key),
        };
        let shield_state = Arc::new(shield_state);
        let queues = QueueRegistry::with_key(queue_key).in_cluster(cluster.clone());
        let history = Arc::new(History::new());
        let base = Arc::new(config);
        let overlays = overlays_at(&base, clock.as_ref());
        let snapshot = compile(
            Layers {
                base,
                overlays,
                loaded_at: rfc3339_now(),
            },
            1,
            &metrics,
            &upstreams,
            &queues,
            &shield_state,
            &history.events,
        );
        metrics.config_generation.set(1);
        publish_overlays(&metrics, &snapshot);
        Ok(Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(snapshot),
            reload_lock: std::sync::Mutex::new(()),
            metrics,
            shield_state,
            access_log,
            upstreams,
            resolvers,
            started_at: SystemTime::now(),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            last_reload_error: ArcSwapOption::empty(),
            queues,
            history,
            clock,
            schedule_changed: tokio::sync::Notify::new(),
            cluster,
        }))
    }

    /// Compile a validated configuration and put it in force for new requests, with the
    /// overlays its schedules put in force now; requests in flight finish under the snapshot
    /// they loaded. Returns the new generation.
    pub fn install(&self, config: Config) -> u64 {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (listener, resolver) in config.listeners.iter().zip(&self.resolvers) {
            if let (Some(tls), Some(resolver)) = (&listener.tls, resolver) {
                resolver.replace(&tls.certificates);
            }
        }
        let base = Arc::new(config);
        let overlays = overlays_at(&base, self.clock.as_ref());
        let snapshot = self.swap(Layers {
            base,
            overlays,
            loaded_at: rfc3339_now(),
        });
        // HTTP/2 connections from addresses this generation denies get a GOAWAY now; HTTP/1
        // ones are answered 403 and closed at their next request.
        let closed = self
            .shield_state
            .guards
            .close_h2_where(|ip| snapshot.shield.denied(crate::forwarded::canonical(ip)));
        if closed > 0 {
            tracing::info!(
                connections = closed,
                "closing connections from denied addresses"
            );
        }
        self.schedule_changed.notify_one();
        snapshot.generation
    }

    /// Put in force the overlays the schedules give for now, when they differ from those in
    /// force: the same base file, a new generation (state carried over as by a reload). Returns
    /// how long until the next change, None when the file has no schedules or nothing changes
    /// again.
    pub fn apply_schedule(&self) -> Option<std::time::Duration> {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.load();
        let schedules = current.base.schedules.as_ref()?;
        let now = self.clock.now();
        let overlays = calendar::active_at(&schedules.time_zone, &schedules.windows, now);
        if overlays != current.overlays {
            let (begins, ends) = schedule::begins_ends(&current.overlays, &overlays);
            let snapshot = self.swap(Layers {
                base: current.base.clone(),
                overlays: overlays.clone(),
                loaded_at: current.loaded_at.clone(),
            });
            tracing::info!(
                generation = snapshot.generation,
                begins = ?schedule::names(schedules, &begins),
                ends = ?schedule::names(schedules, &ends),
                in_force = ?schedule::names(schedules, &overlays),
                at = %schedule::local_text(&schedules.time_zone, now),
                "schedule: overlays changed"
            );
            let list = |indexes: &[usize]| schedule::names(schedules, indexes).join(", ");
            self.history.events.record(
                EventKind::Schedule,
                &format!(
                    "generation {}: begins [{}], ends [{}]",
                    snapshot.generation,
                    list(&begins),
                    list(&ends)
                ),
            );
        }
        let next = calendar::next_change(&schedules.time_zone, &schedules.windows, now)?;
        Some(
            std::time::Duration::try_from(next.at.duration_since(now))
                .unwrap_or(std::time::Duration::ZERO),
        )
    }

    /// Compile and put in force; under `reload_lock`.
    fn swap(&self, layers: Layers) -> Arc<Snapshot> {
        let generation = self.snapshot.load().generation + 1;
        let snapshot = Arc::new(compile(
            layers,
            generation,
            &self.metrics,
            &self.upstreams,
            &self.queues,
            &self.shield_state,
            &self.history.events,
        ));
        self.snapshot.store(snapshot.clone());
        self.metrics.config_generation.set(generation as i64);
        publish_overlays(&self.metrics, &snapshot);
        snapshot
    }

    /// The snapshot in force. A request calls this once and keeps the `Arc` to its end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Queue one access-log line; a line the queue had no room for is counted as dropped.
    pub fn log_access(&self, record: &crate::telemetry::AccessRecord<'_>) {
        if !self.access_log.write(record) {
            self.metrics
                .access_log_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.metrics.access_log_dropped_total.inc();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire) && !self.is_draining()
    }
}

/// A login queue's view of its upstream: the active datacenter and its servers' room.
struct UpstreamCapacity(Arc<Upstream>);

impl Capacity for UpstreamCapacity {
    fn target(&self) -> (Option<Arc<str>>, Option<usize>) {
        let upstream = &self.0;
        let (active, cap) = upstream.capacity(upstream.now_ms());
        let name = active
            .and_then(|i| upstream.datacenters.get(i))
            .map(|dc| dc.name_arc.clone());
        (name, cap)
    }

    fn has_room(&self) -> bool {
        self.0.has_room(self.0.now_ms())
    }
}

/// A base file and the overlays in force on it.
struct Layers {
    base: Arc<Config>,
    overlays: Vec<usize>,
    /// When the base file was loaded (a schedule change keeps it).
    loaded_at: String,
}

/// The overlays of `base`'s schedules in force now.
fn overlays_at(base: &Config, clock: &dyn Clock) -> Vec<usize> {
    match &base.schedules {
        Some(s) => calendar::active_at(&s.time_zone, &s.windows, clock.now()),
        None => Vec::new(),
    }
}

/// `rempart_schedule_overlay_active{overlay}`: 1 for the overlays in force, 0 for the others.
fn publish_overlays(metrics: &Metrics, snapshot: &Snapshot) {
    metrics.schedule_overlay_active.reset();
    if let Some(s) = &snapshot.base.schedules {
        for (i, o) in s.overlays.iter().enumerate() {
            metrics
                .schedule_overlay_active
                .with_label_values(&[&o.name])
                .set(i64::from(snapshot.overlays.contains(&i)));
        }
    }
}

/// Build a snapshot from a validated configuration and the overlays in force on it.
fn compile(
    layers: Layers,
    generation: u64,
    metrics: &Metrics,
    registry: &Registry,
    queues: &QueueRegistry,
    shield_state: &Arc<ShieldState>,
    events: &Arc<Events>,
) -> Snapshot {
    let Layers {
        base,
        overlays,
        loaded_at,
    } = layers;
    let config = if overlays.is_empty() {
        base.clone()
    } else {
        Arc::new(overlay::apply(&base, &overlays))
    };
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| Arc::new(Upstream::new(u, metrics, registry, events)))
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|route| CompiledRoute {
            route: route.clone(),
            metrics: RouteMetrics::new(metrics, &route.name),
        })
        .collect();
    let shield = Arc::new(Shield::compile(&config, metrics, shield_state));
    let queues: Vec<Arc<LoginQueue>> = LoginQueue::compile_all(&config, metrics, queues)
        .into_iter()
        .map(Arc::new)
        .collect();
    // Each queue admits toward the upstream of the routes that use it (the first one).
    for (index, queue) in queues.iter().enumerate() {
        let upstream = config
            .routes
            .iter()
            .find(|r| r.login_queue == Some(index))
            .and_then(|r| upstreams.get(r.upstream))
            .cloned();
        queue.core.bind(upstream.map(|u| {
            let capacity: Arc<dyn Capacity> = Arc::new(UpstreamCapacity(u));
            capacity
        }));
    }
    Snapshot {
        generation,
        config,
        base,
        overlays,
        loaded_at,
        routes,
        upstreams,
        shield,
        queues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, methods: Option<Vec<Method>>) -> Route {
        Route {
            name: "r".into(),
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            ignore_case: false,
            methods,
            upstream: 0,
            limits: vec![],
            login_queue: None,
            resend: Default::default(),
        }
    }

    #[test]
    fn host_prefix_and_method() {
        let r = route(Some("ent.example.test"), "/auth/", Some(vec![Method::POST]));
        assert!(route_matches(
            &r,
            "ent.example.test",
            "/auth/login",
            &Method::POST
        ));
        assert!(!route_matches(
            &r,
            "ent.example.test",
            "/auth/login",
            &Method::GET
        ));
        assert!(!route_matches(
            &r,
            "other.test",
            "/auth/login",
            &Method::POST
        ));
        assert!(!route_matches(
            &r,
            "ent.example.test",
            "/static",
            &Method::POST
        ));
    }

    #[test]
    fn case_insensitive_prefixes_on_request() {
        let mut r = route(None, "/auth/login", None);
        assert!(!route_matches(&r, "h", "/AUTH/Login", &Method::POST));
        r.ignore_case = true;
        assert!(route_matches(&r, "h", "/AUTH/Login", &Method::POST));
        assert!(route_matches(&r, "h", "/auth/login", &Method::POST));
        assert!(!route_matches(&r, "h", "/auth", &Method::POST));
    }

    /// A clock the test moves.
    struct HandClock(std::sync::Mutex<jiff::Timestamp>);

    impl Clock for HandClock {
        fn now(&self) -> jiff::Timestamp {
            *self.0.lock().unwrap()
        }
    }

    fn paris(s: &str) -> jiff::Timestamp {
        format!("{s}[Europe/Paris]")
            .parse::<jiff::ZonedDateTime>()
            .unwrap()
            .timestamp()
    }

    const SCHEDULED: &str = "listeners: [{address: 127.0.0.1:8080}]
upstreams: {ent: {datacenters: [{name: a, servers: [127.0.0.1:9000]}]}}
routes: [{name: r, match: {path_prefix: /}, upstream: ent, limits: [per_ip], login_queue: q}]
limits: {per_ip: {key: client_ip, rate: 50/s, burst: 200}}
login_queues: {q: {concurrency: 4}}
schedules:
  overlays: {morning: {login_queues: {q: {concurrency: 8}}, limits: {per_ip: {mode: dry_run}}}}
  windows: [{overlay: morning, days: [mon..fri], from: \"07:40\", until: \"09:00\"}]
";

    #[test]
    fn a_schedule_change_swaps_the_overlay_in_and_keeps_the_state() {
        let config =
            crate::config::from_str_with_env(SCHEDULED, std::path::Path::new("t.yaml"), |_| None)
                .expect("valid");
        let clock = Arc::new(HandClock(std::sync::Mutex::new(paris(
            "2027-09-06T07:39:50",
        ))));
        let runtime = Runtime::with_clock(config, vec![7; 32], clock.clone()).unwrap();
        let before = runtime.load();
        assert!(before.overlays.is_empty());
        assert_eq!(before.config.login_queues[0].concurrency, 4);
        // Nothing to change yet: ten seconds to wait.
        assert_eq!(
            runtime.apply_schedule(),
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(runtime.load().generation, before.generation);

        *clock.0.lock().unwrap() = paris("2027-09-06T07:40:00");
        assert_eq!(
            runtime.apply_schedule(),
            Some(std::time::Duration::from_secs(80 * 60))
        );
        let during = runtime.load();
        assert_eq!(during.generation, before.generation + 1);
        assert_eq!(during.overlays, vec![0]);
        assert_eq!(during.config.login_queues[0].concurrency, 8);
        assert_eq!(
            during.base.login_queues[0].concurrency, 4,
            "the base is kept"
        );
        assert_eq!(during.loaded_at, before.loaded_at);
        assert_eq!(during.core_limit(), 8);
        assert!(
            Arc::ptr_eq(&before.queues[0].core, &during.queues[0].core),
            "the queue's line is the same one"
        );
        assert!(
            Arc::ptr_eq(
                &before.shield.limits[0].state,
                &during.shield.limits[0].state
            ),
            "a change of mode keeps the buckets"
        );
        assert_eq!(
            during.shield.limits[0].mode,
            crate::config::LimitMode::DryRun
        );
        let marked: Vec<(&str, String)> = runtime
            .history
            .events
            .list()
            .iter()
            .map(|e| (e.kind.as_str(), e.detail.to_string()))
            .collect();
        assert_eq!(
            marked,
            [(
                "schedule",
                format!(
                    "generation {}: begins [morning], ends []",
                    during.generation
                )
            )],
            "the change is marked on the history, once"
        );

        // A reload recomputes from the new file at once.
        let reloaded = crate::config::from_str_with_env(
            &SCHEDULED.replace("[mon..fri]", "[sat]"),
            std::path::Path::new("t.yaml"),
            |_| None,
        )
        .unwrap();
        runtime.install(reloaded);
        let after = runtime.load();
        assert!(after.overlays.is_empty());
        assert_eq!(after.config.login_queues[0].concurrency, 4);
        assert_eq!(after.core_limit(), 4);
        assert!(Arc::ptr_eq(&before.queues[0].core, &after.queues[0].core));
    }

    impl Snapshot {
        fn core_limit(&self) -> usize {
            self.queues[0].core.status(1).limit
        }
    }

    #[test]
    fn wildcard_host() {
        let r = route(Some("*.ent.example.test"), "/", None);
        assert!(route_matches(
            &r,
            "lycee.ent.example.test",
            "/",
            &Method::GET
        ));
        assert!(!route_matches(&r, "ent.example.test", "/", &Method::GET));
    }
}
