//! Runtime: the compiled configuration as one immutable snapshot behind an `ArcSwap`, and the
//! long-lived state (metrics, access log, certificate resolvers) that snapshots point into.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Method;

use crate::config::{Config, Route};
use crate::history::{Events, History};
use crate::queue::{Capacity, LoginQueue, QueueRegistry};
use crate::shield::{Shield, ShieldState};
use crate::telemetry::{rfc3339_now, AccessLog, Metrics, RouteMetrics};
use crate::tls::SniResolver;
use crate::upstream::{Registry, Upstream};

/// One configuration generation, compiled: what a request reads, loaded once per request.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
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
}

impl Runtime {
    pub fn new(config: Config) -> Result<Arc<Self>, prometheus::Error> {
        Self::with_queue_key(config, rand::random::<[u8; 32]>().to_vec())
    }

    /// A runtime whose login queues without `secrets` sign with `queue_key` (the key kept in
    /// the runtime directory).
    pub fn with_queue_key(
        config: Config,
        queue_key: Vec<u8>,
    ) -> Result<Arc<Self>, prometheus::Error> {
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
        let queues = QueueRegistry::with_key(queue_key);
        let shield_state = Arc::new(ShieldState::default());
        let history = Arc::new(History::new());
        let snapshot = compile(
            Arc::new(config),
            1,
            &metrics,
            &upstreams,
            &queues,
            &shield_state,
            &history.events,
        );
        metrics.config_generation.set(1);
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
        }))
    }

    /// Compile a validated configuration and put it in force for new requests; requests in
    /// flight finish under the snapshot they loaded. Returns the new generation.
    pub fn install(&self, config: Config) -> u64 {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let generation = self.snapshot.load().generation + 1;
        for (listener, resolver) in config.listeners.iter().zip(&self.resolvers) {
            if let (Some(tls), Some(resolver)) = (&listener.tls, resolver) {
                resolver.replace(&tls.certificates);
            }
        }
        let snapshot = compile(
            Arc::new(config),
            generation,
            &self.metrics,
            &self.upstreams,
            &self.queues,
            &self.shield_state,
            &self.history.events,
        );
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        self.metrics.config_generation.set(generation as i64);
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
        generation
    }

    /// The snapshot in force. A request calls this once and keeps the `Arc` to its end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
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

/// Build a snapshot from a validated configuration.
fn compile(
    config: Arc<Config>,
    generation: u64,
    metrics: &Metrics,
    registry: &Registry,
    queues: &QueueRegistry,
    shield_state: &Arc<ShieldState>,
    events: &Arc<Events>,
) -> Snapshot {
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
        loaded_at: rfc3339_now(),
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
