//! The validated configuration: types that cannot hold a bad value, built from the raw YAML
//! layer by `config::load`. Everything else in Rempart reads these, never the raw YAML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::sign::CertifiedKey;

/// A whole configuration file, validated and with every referenced file loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (as given on the command line).
    pub source: PathBuf,
    pub server: Server,
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    /// In file order; names are unique.
    pub upstreams: Vec<Upstream>,
    /// In file order: first match wins.
    pub routes: Vec<Route>,
    /// In file order; names are unique.
    pub limits: Vec<Limit>,
    pub shield: Shield,
    /// In file order; names are unique.
    pub login_queues: Vec<LoginQueue>,
    pub pages: Pages,
    /// None when the file has no `schedules` section.
    pub schedules: Option<Schedules>,
    /// The configuration as parsed, secrets replaced by `"***"`, for `GET /config`.
    pub masked: serde_json::Value,
    /// Settings that are valid but known to lose requests, one line each
    /// (`FILE:LINE: PATH: message`).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Proxy worker threads (>= 1). Default: 2.
    pub threads: usize,
    /// SIGTERM drain time. Default: 10s.
    pub grace_period: Duration,
    /// Default: empty.
    pub trusted_proxies: Vec<IpNet>,
    /// 1..=128, default 64.
    pub ipv6_prefix: u8,
    /// The whole request head (HTTP/1 head; HTTP/2 preface, SETTINGS and each header block)
    /// within this. Default: 10s.
    pub header_timeout: Duration,
    /// Idle time allowed between two requests of a connection (HTTP/1 keep-alive, HTTP/2 with
    /// no stream open). Default: 60s.
    pub keepalive_timeout: Duration,
    /// A TLS handshake must be over within this from accept. Default: 10s.
    pub tls_handshake_timeout: Duration,
    /// An upgraded connection (WebSocket) quiet in both directions this long is closed.
    /// Default: 10m.
    pub upgrade_idle_timeout: Duration,
    /// Bytes per second. Default: 1 KiB/s.
    pub body_min_rate: u64,
    /// Default: 32 KiB.
    pub max_header_bytes: usize,
    /// Default: 16 MiB.
    pub max_body_bytes: u64,
    /// Default: 20000.
    pub max_connections: usize,
    /// Default: 256.
    pub max_connections_per_ip: usize,
    /// Default: stdout.
    pub access_log: AccessLogTarget,
    /// Reload when the file changes. Default: false.
    pub watch_config: bool,
    /// How request paths are normalised before routes match them. Default: strict.
    pub path_normalization: crate::path::PathMode,
    /// What happens to `Forwarded` and `X-Real-IP` from untrusted peers. Default: strip.
    pub forwarded: crate::forwarded::ForwardedPolicy,
    /// Pid file, upgrade socket and the queues' key, private to Rempart's user. Default:
    /// `/run/rempart` as root, else `$XDG_RUNTIME_DIR/rempart`, else `/tmp/rempart-UID`.
    pub runtime_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// At least one; the first is the default when no name matches the SNI.
    pub certificates: Vec<Certificate>,
    /// Offer HTTP/2 by ALPN. Default: true.
    pub http2: bool,
}

/// A certificate chain and its private key, read and checked to belong together.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The DNS names of the leaf (subjectAltName, else the subject CN), lowercase;
    /// may hold wildcards such as `*.ent.example`.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// Default: 127.0.0.1:9901.
    pub address: SocketAddr,
    /// None when not set or empty.
    pub token: Option<Secret>,
    /// Host names the admin API answers to besides IP literals and `localhost` (lowercase).
    pub allowed_hosts: Vec<String>,
}

/// A string that never shows in logs, `Debug` or `/config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// Priority order; at least one, names unique within the upstream.
    pub datacenters: Vec<Datacenter>,
    /// Default: Count(1).
    pub min_healthy: MinHealthy,
    pub health_check: HealthCheck,
    pub outlier: Outlier,
    /// Default: 30s.
    pub failback_after: Duration,
    /// Default: Maintenance.
    pub when_all_down: WhenAllDown,
    pub timeouts: UpstreamTimeouts,
    pub retries: Retries,
    /// What happens to requests in flight to a server declared down.
    pub on_down: OnDown,
}

#[derive(Debug, Clone)]
pub struct OnDown {
    /// Requests still in flight to a server this long after it was declared down (ejected, or
    /// failing its health check; a drain lets them finish) are cut: idempotent ones are
    /// retried elsewhere, the others answered 502. Default: 1s.
    pub cut_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Datacenter {
    pub name: String,
    /// At least one, no duplicates within the upstream.
    pub servers: Vec<SocketAddr>,
    /// By index of `servers`: requests this server may have in flight at once (HAProxy's
    /// `maxconn`); None: no cap.
    pub max_in_flight: Vec<Option<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinHealthy {
    Count(usize),
    /// 0.0 < share <= 1.0
    Share(f64),
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Default: /healthz
    pub path: String,
    /// Default: 1s
    pub interval: Duration,
    /// Default: 500ms
    pub timeout: Duration,
    /// Default: 2
    pub rise: u32,
    /// Default: 2
    pub fall: u32,
}

#[derive(Debug, Clone)]
pub struct Outlier {
    /// Default: 3
    pub consecutive_failures: u32,
    /// Default: 10s
    pub eject_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAllDown {
    Maintenance,
    TryAll,
}

#[derive(Debug, Clone)]
pub struct UpstreamTimeouts {
    /// Default: 1s
    pub connect: Duration,
    /// Time to wait for response bytes (per read). Default: 30s
    pub response: Duration,
    /// Idle upstream keep-alive connections are closed after this. Default: 60s
    pub idle: Duration,
    /// How long a request that is safe to retry waits on one server before it is tried on another.
    /// Never applied to a request's last try. Default: None (only `response` applies).
    pub per_try: Option<Duration>,
    /// Request bytes a server has not acknowledged for this long end the connection
    /// (`TCP_USER_TIMEOUT`, with TCP keep-alive probes after as long idle): a server that went
    /// dark is noticed within this, while a slow server that acknowledged keeps `response`.
    /// Default: Some(2s); None: off (`unacked: off`).
    pub unacked: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Retries {
    /// Extra tries after the first. Default: 2
    pub attempts: u32,
    /// Share of the last 10 s of requests that may be retries. Default: 0.2
    pub budget: f64,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Lowercase, without port. `*.example.org` matches any subdomain.
    pub host: Option<String>,
    /// Starts with '/'. Default: "/".
    pub path_prefix: String,
    /// Match the prefix without regard to ASCII case (backends that serve `/Auth/Login` as
    /// `/auth/login`). Default: false.
    pub ignore_case: bool,
    /// None: any method.
    pub methods: Option<Vec<http::Method>>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Indexes into `Config::limits`, in the route's order.
    pub limits: Vec<usize>,
    /// Index into `Config::login_queues`.
    pub login_queue: Option<usize>,
    /// Which requests of this route may be sent again after they reached a server.
    pub resend: Resend,
}

/// What a route says of sending its requests again after a server received them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resend {
    /// A request with an `Idempotency-Key` header may be resent (the backend honours it).
    /// Default: false.
    pub idempotency_key: bool,
    /// POST requests may be resent (the route's POSTs are harmless to replay, e.g. a login
    /// form). Default: false.
    pub post: bool,
}

#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub key: LimitKey,
    pub rate: Rate,
    /// >= 1. Default: the rate's count.
    pub burst: u32,
    pub mode: LimitMode,
    /// Default: 1_000_000.
    pub max_keys: usize,
    /// Refusals by this limit count toward a ban of the client_ip. Default: true for
    /// `client_ip` keys only (a refusal by a shared key says nothing about one address).
    pub ban: bool,
    /// Field names (`form:`, `query:`) compared byte for byte. Default: false (any case, as
    /// many backends read them).
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    /// Lowercase header name.
    Header(String),
    Cookie(String),
    Query(String),
    Form(String),
    Global,
    /// Several field sources (header, cookie, query, form): every value found is charged (the
    /// backend may read any of them), and the shared unreadable key too when a source cannot
    /// be read.
    Any(Vec<LimitKey>),
}

/// `count` events per `per`, e.g. 20/min = { count: 20, per: 60s }.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    Enforce,
    DryRun,
}

#[derive(Debug, Clone, Default)]
pub struct Shield {
    pub deny: Vec<IpNet>,
    pub allow: Vec<IpNet>,
    /// None unless `shield.ban` is present.
    pub ban: Option<Ban>,
}

#[derive(Debug, Clone)]
pub struct Ban {
    /// Rate-limit violations (>= 1) that ban a client_ip. Default: 100.
    pub after: u32,
    /// Window in which they are counted. Default: 1m.
    pub within: Duration,
    /// How long the ban lasts (`for` in the file). Default: 10m.
    pub duration: Duration,
    /// Bans kept at most; beyond, the oldest is dropped. Default: 100000.
    pub max_entries: usize,
}

#[derive(Debug, Clone)]
pub struct LoginQueue {
    pub name: String,
    /// Default: 64.
    pub concurrency: usize,
    pub adaptive: Option<Adaptive>,
    /// Default: Header("x-ent-uai").
    pub tenant: TenantSource,
    /// Tenants not listed weigh 1; listed weights are >= 1.
    pub tenant_weights: BTreeMap<String, u32>,
    /// Default: 15s (0 answers with the waiting room at once).
    pub hold: Duration,
    /// Default: 100000
    pub max_waiting: usize,
    /// Default: 20
    pub per_client_waiting: usize,
    /// When an admitted request earns a pass, and what a pass may do.
    pub pass: PassRule,
    /// Default: 2m
    pub ticket_ttl: Duration,
    /// HMAC keys of tickets and passes: the first signs, all verify (rotation). Empty: a key
    /// kept in `server.runtime_dir`, generated once.
    pub secrets: Vec<Secret>,
    /// The tenants the operator knows; None: any name opens a tenant (capped per client).
    pub tenants: Option<KnownTenants>,
    /// Without a tenant list: tenants one client_ip may have in line at once; its requests
    /// naming more go to the `unknown` tenant. Default: 2.
    pub max_tenants_per_client: usize,
}

/// The tenants a queue knows: every other name (or none) is the one `unknown` tenant.
#[derive(Debug, Clone)]
pub struct KnownTenants {
    /// Tenant code to weight (>= 1).
    pub weights: std::sync::Arc<std::collections::HashMap<String, u32>>,
    /// Weight of the `unknown` tenant. Default: 1.
    pub unknown_weight: u32,
    /// The file the list came from, if any (reloaded with the configuration).
    pub file: Option<PathBuf>,
}

/// The pass: a signed cookie that lets a user in the middle of a login past the line.
#[derive(Debug, Clone)]
pub struct PassRule {
    /// Statuses of the answer that earn a pass, as inclusive ranges. Default: 200-399.
    pub on_status: Vec<(u16, u16)>,
    /// And only when the answer sets this cookie (a session cookie on a successful login).
    pub on_cookie: Option<String>,
    /// Default: 10m (`pass_ttl` in older files).
    pub ttl: Duration,
    /// A pass used more often than this in a minute is ignored (the request queues as any).
    /// Default: 30.
    pub max_uses_per_minute: u32,
    /// Requests with a pass take at most this share of the concurrency while others wait
    /// (at least one slot). Default: 0.5.
    pub max_share: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Adaptive {
    /// 1 <= min <= max; `LoginQueue::concurrency` lies in min..=max.
    pub min: usize,
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    Host,
    Header(String),
    Cookie(String),
    Query(String),
    /// 1-based segment of the path: `/uai/0123456A/...` with 2 gives `0123456A`.
    PathSegment(usize),
}

#[derive(Debug, Clone, Default)]
pub struct Pages {
    pub waiting_room: Option<Page>,
    pub maintenance: Option<Page>,
}

/// An HTML page read at load time.
#[derive(Debug, Clone)]
pub struct Page {
    pub path: PathBuf,
    pub html: Arc<str>,
}

/// `schedules`: overlays of limits and queue settings, in force at the times their windows say.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// Default: Europe/Paris.
    pub time_zone: jiff::tz::TimeZone,
    /// The zone's name as written (`Europe/Paris`).
    pub time_zone_name: String,
    /// In file order; names are unique.
    pub overlays: Vec<Overlay>,
    /// In file order; each names an overlay.
    pub windows: Vec<crate::schedule::calendar::Window>,
}

/// A named set of changes to the base file's limits and login queues. Two overlays that can be
/// in force at once never change the same field (checked at load).
#[derive(Debug, Clone)]
pub struct Overlay {
    pub name: String,
    pub login_queues: Vec<QueueOverlay>,
    pub limits: Vec<LimitOverlay>,
}

/// What an overlay changes in one login queue; None: unchanged.
#[derive(Debug, Clone)]
pub struct QueueOverlay {
    /// Index into `Config::login_queues`.
    pub queue: usize,
    /// Only for a queue without `adaptive`.
    pub concurrency: Option<usize>,
    /// Only for an adaptive queue: both bounds in force (one the overlay leaves out is the
    /// queue's own), min <= max.
    pub adaptive: Option<Adaptive>,
    pub hold: Option<Duration>,
    pub max_waiting: Option<usize>,
    pub per_client_waiting: Option<usize>,
}

/// What an overlay changes in one limit; None: unchanged.
#[derive(Debug, Clone)]
pub struct LimitOverlay {
    /// Index into `Config::limits`.
    pub limit: usize,
    pub rate: Option<Rate>,
    /// >= 1. With `rate` and no burst of its own: the rate's count, as for a limit.
    pub burst: Option<u32>,
    pub mode: Option<LimitMode>,
    pub ban: Option<bool>,
}
