//! `ent-origin`: a stand-in ENT backend with knobs (latency per path, login capacity, cost and
//! saturation, login outcome and session cookie, a concurrency limit, health that can be made to
//! fail, a record of what was received), and counters that tests and benchmarks read back.
//!
//! The request path only touches atomics (and one shard of a sharded set for request ids), so the
//! origin sustains tens of thousands of requests per second on loopback. It logs nothing per
//! request. `--record-requests` adds one short mutex-protected push per request.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use clap::Parser;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The body of the 503 answered beyond `--login-capacity` concurrent logins.
pub const LOGIN_QUOTA_BODY: &str = "connection quota reached, wait for others to log out";
/// The body of the 401 answered to a login whose password is `wrong`.
pub const LOGIN_FAILED_BODY: &str = "invalid credentials";
/// The body of the 503 answered beyond `--max-in-flight` concurrent requests.
pub const BUSY_BODY: &str = "busy";
/// How many requests `--record-requests` keeps (the oldest go first).
pub const RECORD_CAPACITY: usize = 20_000;
/// A login reads at most this much of its body to decide (the rest is still read and counted).
const LOGIN_BODY_KEEP: usize = 64 * 1024;

/// Command line of `ent-origin`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ent-origin",
    about = "A stand-in ENT backend for Rempart's tests and benchmarks"
)]
pub struct OriginArgs {
    /// Address to listen on, e.g. 127.0.0.1:18081.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name reported in every echo and in the stats.
    #[arg(long, default_value = "origin")]
    pub name: String,
    /// PREFIX=DURATION: requests whose path starts with PREFIX wait DURATION first (repeatable).
    #[arg(long = "latency", value_parser = parse_latency)]
    pub latency: Vec<(String, Duration)>,
    /// At most this many concurrent /auth/login requests; beyond, 503 (default: unlimited).
    #[arg(long)]
    pub login_capacity: Option<u64>,
    /// Time a /auth/login request takes (e.g. 200ms).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub login_cost: Duration,
    /// K: the n-th concurrent login (n = logins in flight at its arrival, itself included) takes
    /// login-cost × (1 + max(0, n − K)): a backend whose throughput collapses beyond K.
    #[arg(long, value_name = "K")]
    pub login_saturate: Option<u64>,
    /// Cookie set by a successful /auth/login: NAME=<random hex>; Path=/; HttpOnly ("" sets none).
    #[arg(long, value_name = "NAME", default_value = "ENTSESSION", value_parser = parse_cookie_name)]
    pub session_cookie: String,
    /// Keep the last 20,000 requests (not /healthz), read back with GET /__origin/requests.
    #[arg(long)]
    pub record_requests: bool,
    /// Refuse with 503 "busy" any request but /healthz beyond N concurrent ones (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: Option<u64>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// `250ms`, `2s`, `1m`, `1h`, `1500us` (a bare number is milliseconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "ms" => n / 1000.0,
        "us" => n / 1_000_000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_latency(s: &str) -> Result<(String, Duration), String> {
    let (prefix, d) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected PREFIX=DURATION, got {s:?}"))?;
    if !prefix.starts_with('/') {
        return Err(format!("the prefix must start with '/', got {prefix:?}"));
    }
    Ok((prefix.to_string(), parse_duration(d)?))
}

/// A cookie name (an RFC 6265 token), or "" for no cookie.
fn parse_cookie_name(s: &str) -> Result<String, String> {
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("invalid cookie name {s:?}"))
    }
}

/// What a login of the n-th concurrent login costs: `cost × (1 + max(0, n − K))` with
/// `--login-saturate K`, else `cost`.
fn login_cost_for(cost: Duration, saturate: Option<u64>, n: u64) -> Duration {
    match saturate {
        None => cost,
        Some(k) => {
            let factor = n.saturating_sub(k).saturating_add(1);
            cost.saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        }
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value (`+` is a space).
fn form_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Whether a login body says the password is `wrong`: a form (`application/x-www-form-urlencoded`)
/// or JSON object (`application/json`, `*+json`) with a field `password` whose value is `wrong`.
fn wrong_password(content_type: Option<&str>, body: &[u8]) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" {
        body.split(|b| *b == b'&').any(|kv| {
            let (k, v) = match kv.iter().position(|b| *b == b'=') {
                Some(i) => (&kv[..i], &kv[i + 1..]),
                None => (kv, &b""[..]),
            };
            form_decode(k) == b"password" && form_decode(v) == b"wrong"
        })
    } else if media == "application/json" || media.ends_with("+json") {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("password")?.as_str().map(|p| p == "wrong"))
            .unwrap_or(false)
    } else {
        false
    }
}

/// What `GET /__origin/stats` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OriginStats {
    pub name: String,
    /// Requests received (control calls under /__origin/ excluded; /healthz included).
    pub requests_total: u64,
    /// By method, e.g. {"GET": 10, "POST": 2}.
    pub by_method: BTreeMap<String, u64>,
    /// By first path segment, e.g. {"/healthz": 3, "/auth": 2, "/": 1}.
    pub by_path: BTreeMap<String, u64>,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub login_in_flight: u64,
    pub login_max_in_flight: u64,
    /// Logins served (200).
    pub logins_total: u64,
    /// Logins refused with 503 beyond --login-capacity.
    pub login_rejected: u64,
    /// Logins answered 401 (password `wrong`).
    #[serde(default)]
    pub logins_failed: u64,
    /// Requests refused with 503 "busy" beyond --max-in-flight.
    #[serde(default)]
    pub refused_busy: u64,
    /// Like `in_flight` / `max_in_flight`, without the health checks (`/healthz`): what
    /// --max-in-flight limits. The peak counts the requests refused as busy too.
    #[serde(default)]
    pub in_flight_excluding_health: u64,
    #[serde(default)]
    pub max_in_flight_excluding_health: u64,
    /// Distinct X-Request-Id values seen.
    pub request_ids: u64,
    /// Requests whose X-Request-Id had been seen before.
    pub duplicate_request_ids: u64,
    /// Requests without an X-Request-Id.
    pub missing_request_ids: u64,
    /// Whether /healthz currently answers 200.
    pub healthy: bool,
}

impl OriginStats {
    /// Requests other than health checks (`/healthz`).
    pub fn requests_excluding_health(&self) -> u64 {
        self.requests_total - self.by_path.get("/healthz").copied().unwrap_or(0)
    }
    /// Requests counted for a first path segment such as "/slow".
    pub fn path(&self, top: &str) -> u64 {
        self.by_path.get(top).copied().unwrap_or(0)
    }
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
const ID_SHARDS: usize = 64;
/// Beyond this many distinct first path segments, the others are counted under "(other)".
const MAX_PATH_KEYS: usize = 1024;

struct Counters {
    requests_total: AtomicU64,
    by_method: [AtomicU64; METHODS.len() + 1],
    by_path: RwLock<HashMap<String, Arc<AtomicU64>>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    login_in_flight: AtomicU64,
    login_max_in_flight: AtomicU64,
    logins_total: AtomicU64,
    login_rejected: AtomicU64,
    logins_failed: AtomicU64,
    refused_busy: AtomicU64,
    /// Requests in flight other than `/healthz`.
    app_in_flight: AtomicU64,
    max_app_in_flight: AtomicU64,
    /// 64-bit hashes of the X-Request-Id values seen, sharded by hash.
    ids: Vec<Mutex<HashSet<u64>>>,
    duplicate_ids: AtomicU64,
    missing_ids: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            requests_total: AtomicU64::new(0),
            by_method: Default::default(),
            by_path: RwLock::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            login_in_flight: AtomicU64::new(0),
            login_max_in_flight: AtomicU64::new(0),
            logins_total: AtomicU64::new(0),
            login_rejected: AtomicU64::new(0),
            logins_failed: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            app_in_flight: AtomicU64::new(0),
            max_app_in_flight: AtomicU64::new(0),
            ids: (0..ID_SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            duplicate_ids: AtomicU64::new(0),
            missing_ids: AtomicU64::new(0),
        }
    }

    fn count_path(&self, path: &str) {
        let top = top_segment(path);
        if let Some(c) = self.by_path.read().unwrap().get(top) {
            c.fetch_add(1, Relaxed);
            return;
        }
        let mut map = self.by_path.write().unwrap();
        let key = if map.len() >= MAX_PATH_KEYS && !map.contains_key(top) {
            "(other)"
        } else {
            top
        };
        map.entry(key.to_string())
            .or_default()
            .fetch_add(1, Relaxed);
    }

    fn count_request_id(&self, headers: &HeaderMap) {
        match headers.get("x-request-id") {
            None => {
                self.missing_ids.fetch_add(1, Relaxed);
            }
            Some(v) => {
                let h = fnv1a(v.as_bytes());
                let shard = &self.ids[(h as usize) % ID_SHARDS];
                if !shard.lock().unwrap().insert(h) {
                    self.duplicate_ids.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn reset(&self) {
        self.requests_total.store(0, Relaxed);
        for m in &self.by_method {
            m.store(0, Relaxed);
        }
        self.by_path.write().unwrap().clear();
        // In-flight gauges stay (requests are still running); their maxima restart from them.
        self.max_in_flight
            .store(self.in_flight.load(Relaxed), Relaxed);
        self.login_max_in_flight
            .store(self.login_in_flight.load(Relaxed), Relaxed);
        self.max_app_in_flight
            .store(self.app_in_flight.load(Relaxed), Relaxed);
        self.logins_total.store(0, Relaxed);
        self.login_rejected.store(0, Relaxed);
        self.logins_failed.store(0, Relaxed);
        self.refused_busy.store(0, Relaxed);
        for s in &self.ids {
            s.lock().unwrap().clear();
        }
        self.duplicate_ids.store(0, Relaxed);
        self.missing_ids.store(0, Relaxed);
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// "/auth/login" -> "/auth"; "/" -> "/"; "/healthz" -> "/healthz".
fn top_segment(path: &str) -> &str {
    match path[1.min(path.len())..].find('/') {
        Some(i) => &path[..i + 1],
        None => path,
    }
}

/// Decrements a gauge when dropped (also when the client goes away mid-request).
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn enter(g: &'a AtomicU64, max: &AtomicU64) -> Self {
        Self::enter_counted(g, max).0
    }

    /// Enter, and say how many are in (this one included).
    fn enter_counted(g: &'a AtomicU64, max: &AtomicU64) -> (Self, u64) {
        let now = g.fetch_add(1, Relaxed) + 1;
        max.fetch_max(now, Relaxed);
        (Gauge(g), now)
    }
}

/// One request as `--record-requests` saw it (`GET /__origin/requests`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The `X-Request-Id` header, "" when absent.
    pub request_id: String,
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `X-Test-Id` header, when present.
    #[serde(default)]
    pub test_id: Option<String>,
    /// Milliseconds since the origin started, when the request head arrived.
    pub at_ms: u64,
    /// The origin produced its answer (after reading the body, for the handlers that read it:
    /// the echo, /auth/login). False while in progress, or when the client went away first.
    pub completed: bool,
    /// The status answered, 0 until completed.
    #[serde(default)]
    pub status: u16,
}

/// The last `cap` requests received, oldest first; each has a sequence number (its position in
/// the stream of all requests recorded) so that one can be marked completed after others came.
struct Ring {
    cap: usize,
    /// Sequence number of `items[0]`.
    first_seq: u64,
    items: VecDeque<ReceivedRequest>,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            cap,
            first_seq: 0,
            items: VecDeque::new(),
        }
    }

    /// Add one; its sequence number.
    fn push(&mut self, r: ReceivedRequest) -> u64 {
        if self.items.len() >= self.cap {
            self.items.pop_front();
            self.first_seq += 1;
        }
        self.items.push_back(r);
        self.first_seq + self.items.len() as u64 - 1
    }

    /// Mark one completed, unless it has left the ring (evicted or cleared).
    fn complete(&mut self, seq: u64, status: u16) {
        let Some(i) = seq.checked_sub(self.first_seq) else {
            return;
        };
        if let Some(r) = self.items.get_mut(i as usize) {
            r.completed = true;
            r.status = status;
        }
    }

    fn clear(&mut self) {
        self.first_seq += self.items.len() as u64;
        self.items.clear();
    }

    /// Those of `method` (any case), or all.
    fn list(&self, method: Option<&str>) -> Vec<ReceivedRequest> {
        self.items
            .iter()
            .filter(|r| method.is_none_or(|m| r.method.eq_ignore_ascii_case(m)))
            .cloned()
            .collect()
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Random session identifiers: 128 bits of SipHash, keyed at random, of a counter.
struct SessionIds {
    keys: RandomState,
    next: AtomicU64,
}

impl SessionIds {
    fn new() -> Self {
        SessionIds {
            keys: RandomState::new(),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Relaxed);
        let a = self.keys.hash_one((n, 0u8));
        let b = self.keys.hash_one((n, 1u8));
        format!("{a:016x}{b:016x}")
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct OriginState {
    name: String,
    latency: Vec<(String, Duration)>,
    login_capacity: Option<u64>,
    login_cost: Duration,
    login_saturate: Option<u64>,
    /// The cookie a successful login sets, if any.
    session_cookie: Option<String>,
    session_ids: SessionIds,
    max_in_flight: Option<u64>,
    /// With --record-requests.
    recorded: Option<Mutex<Ring>>,
    started: Instant,
    healthy: AtomicBool,
    /// When not 0, every request but `/healthz` is answered with this status.
    forced_status: AtomicU16,
    c: Counters,
}

impl OriginState {
    fn stats(&self) -> OriginStats {
        let c = &self.c;
        let mut by_method = BTreeMap::new();
        for (i, m) in c.by_method.iter().enumerate() {
            let n = m.load(Relaxed);
            if n > 0 {
                by_method.insert(METHODS.get(i).copied().unwrap_or("OTHER").to_string(), n);
            }
        }
        let by_path = c
            .by_path
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect();
        OriginStats {
            name: self.name.clone(),
            requests_total: c.requests_total.load(Relaxed),
            by_method,
            by_path,
            in_flight: c.in_flight.load(Relaxed),
            max_in_flight: c.max_in_flight.load(Relaxed),
            login_in_flight: c.login_in_flight.load(Relaxed),
            login_max_in_flight: c.login_max_in_flight.load(Relaxed),
            logins_total: c.logins_total.load(Relaxed),
            login_rejected: c.login_rejected.load(Relaxed),
            logins_failed: c.logins_failed.load(Relaxed),
            refused_busy: c.refused_busy.load(Relaxed),
            in_flight_excluding_health: c.app_in_flight.load(Relaxed),
            max_in_flight_excluding_health: c.max_app_in_flight.load(Relaxed),
            request_ids: c.ids.iter().map(|s| s.lock().unwrap().len() as u64).sum(),
            duplicate_request_ids: c.duplicate_ids.load(Relaxed),
            missing_request_ids: c.missing_ids.load(Relaxed),
            healthy: self.healthy.load(Relaxed),
        }
    }
}

type Shared = Arc<OriginState>;

/// The axum application of an origin (useful to embed one in a test process).
pub fn app(args: &OriginArgs) -> Router {
    let state = Arc::new(OriginState {
        name: args.name.clone(),
        latency: args.latency.clone(),
        login_capacity: args.login_capacity,
        login_cost: args.login_cost,
        login_saturate: args.login_saturate,
        session_cookie: Some(args.session_cookie.clone()).filter(|n| !n.is_empty()),
        session_ids: SessionIds::new(),
        max_in_flight: args.max_in_flight,
        recorded: args
            .record_requests
            .then(|| Mutex::new(Ring::new(RECORD_CAPACITY))),
        started: Instant::now(),
        healthy: AtomicBool::new(true),
        forced_status: AtomicU16::new(0),
        c: Counters::new(),
    });
    Router::new().fallback(handle).with_state(state)
}

/// Run the origin until the process ends (builds its own tokio runtime with `--workers` threads).
pub fn run(args: OriginArgs) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app(&args)).await
    })
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: &impl Serialize) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

async fn handle(State(st): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if let Some(ctl) = path.strip_prefix("/__origin/") {
        return control(&st, req.method(), ctl, req.uri().query().unwrap_or(""));
    }

    let c = &st.c;
    c.requests_total.fetch_add(1, Relaxed);
    let mi = METHODS
        .iter()
        .position(|m| *m == req.method().as_str())
        .unwrap_or(METHODS.len());
    c.by_method[mi].fetch_add(1, Relaxed);
    c.count_path(&path);
    c.count_request_id(req.headers());
    let _in_flight = Gauge::enter(&c.in_flight, &c.max_in_flight);
    if path == "/healthz" {
        return serve(&st, req, &path).await;
    }

    let seq = st.recorded.as_ref().map(|ring| {
        let h = req.headers();
        let r = ReceivedRequest {
            request_id: header_str(h, "x-request-id").unwrap_or_default(),
            method: req.method().as_str().to_string(),
            path: path.clone(),
            test_id: header_str(h, "x-test-id"),
            at_ms: st.started.elapsed().as_millis() as u64,
            completed: false,
            status: 0,
        };
        ring.lock().unwrap().push(r)
    });
    let (_app, n) = Gauge::enter_counted(&c.app_in_flight, &c.max_app_in_flight);
    let r = match st.max_in_flight {
        Some(max) if n > max => {
            c.refused_busy.fetch_add(1, Relaxed);
            text(StatusCode::SERVICE_UNAVAILABLE, BUSY_BODY)
        }
        _ => serve(&st, req, &path).await,
    };
    if let (Some(ring), Some(seq)) = (&st.recorded, seq) {
        ring.lock().unwrap().complete(seq, r.status().as_u16());
    }
    r
}

async fn serve(st: &OriginState, req: Request, path: &str) -> Response {
    for (prefix, d) in &st.latency {
        if path.starts_with(prefix.as_str()) {
            tokio::time::sleep(*d).await;
            break;
        }
    }

    let forced = st.forced_status.load(Relaxed);
    if forced != 0 && path != "/healthz" {
        if let Ok(code) = StatusCode::from_u16(forced) {
            return text(code, format!("forced status {forced} from {}\n", st.name));
        }
    }
    if path == "/healthz" {
        return if st.healthy.load(Relaxed) {
            text(StatusCode::OK, "ok")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "failing")
        };
    }
    if path == "/ws" {
        let (mut parts, _body) = req.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.on_upgrade(ws_echo),
            Err(rejection) => rejection.into_response(),
        };
    }
    if path == "/auth/login" && (req.method() == Method::POST || req.method() == Method::GET) {
        return login(st, req).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok());
        return match code {
            Some(code) if code.as_u16() >= 200 => {
                text(code, format!("status {} from {}\n", code.as_u16(), st.name))
            }
            _ => text(StatusCode::BAD_REQUEST, "bad status code\n"),
        };
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<usize>() {
            Ok(n) if n <= 1 << 30 => {
                let mut r = Response::new(Body::from(Bytes::from(vec![b'x'; n])));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            _ => text(StatusCode::BAD_REQUEST, "bad byte count\n"),
        };
    }
    if path == "/slow" {
        let ms = req
            .uri()
            .query()
            .and_then(|q| query_param(q, "ms"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    echo(st, req).await
}

/// Read the whole body, keeping its first `keep` bytes: (kept, total length); None on a read error.
async fn read_body(body: Body, keep: usize) -> Option<(Vec<u8>, u64)> {
    let mut kept = Vec::new();
    let mut len: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let b = chunk.ok()?;
        len += b.len() as u64;
        let take = keep.saturating_sub(kept.len()).min(b.len());
        kept.extend_from_slice(&b[..take]);
    }
    Some((kept, len))
}

/// The echo every other request gets: what the origin received.
async fn echo(st: &OriginState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match read_body(body, 0).await {
        Some((_, body_len)) => echo_answer(st, &parts, body_len),
        None => text(StatusCode::BAD_REQUEST, "body read error\n"),
    }
}

fn echo_answer(st: &OriginState, parts: &Parts, body_len: u64) -> Response {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in parts.headers.iter() {
        let v = String::from_utf8_lossy(v.as_bytes());
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    let version = match parts.version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    };
    let v = serde_json::json!({
        "origin": st.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body_len": body_len,
        "version": version,
    });
    json(StatusCode::OK, &v)
}

async fn login(st: &OriginState, req: Request) -> Response {
    let c = &st.c;
    let now = c.login_in_flight.fetch_add(1, Relaxed) + 1;
    if let Some(cap) = st.login_capacity {
        if now > cap {
            c.login_in_flight.fetch_sub(1, Relaxed);
            c.login_rejected.fetch_add(1, Relaxed);
            return text(StatusCode::SERVICE_UNAVAILABLE, LOGIN_QUOTA_BODY);
        }
    }
    c.login_max_in_flight.fetch_max(now, Relaxed);
    let _login = Gauge(&c.login_in_flight);
    // The body is read once: its first 64 KiB decide the outcome, its length goes in the echo.
    let (parts, body) = req.into_parts();
    let Some((kept, body_len)) = read_body(body, LOGIN_BODY_KEEP).await else {
        return text(StatusCode::BAD_REQUEST, "body read error\n");
    };
    let cost = login_cost_for(st.login_cost, st.login_saturate, now);
    if !cost.is_zero() {
        tokio::time::sleep(cost).await;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if wrong_password(content_type, &kept) {
        c.logins_failed.fetch_add(1, Relaxed);
        return text(StatusCode::UNAUTHORIZED, LOGIN_FAILED_BODY);
    }
    let mut r = echo_answer(st, &parts, body_len);
    c.logins_total.fetch_add(1, Relaxed);
    if let Some(name) = &st.session_cookie {
        let cookie = format!("{name}={}; Path=/; HttpOnly", st.session_ids.next());
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

async fn ws_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => Message::Binary(b),
            Message::Ping(p) => Message::Pong(p),
            Message::Pong(_) => continue,
            Message::Close(f) => {
                let _ = socket.send(Message::Close(f)).await;
                return;
            }
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

fn control(st: &OriginState, method: &Method, what: &str, query: &str) -> Response {
    match (method.as_str(), what) {
        ("GET", "stats") => json(StatusCode::OK, &st.stats()),
        ("GET", "requests") => match &st.recorded {
            Some(ring) => {
                let list = ring.lock().unwrap().list(query_param(query, "method"));
                json(StatusCode::OK, &list)
            }
            None => text(
                StatusCode::CONFLICT,
                "requests are not recorded: start ent-origin with --record-requests\n",
            ),
        },
        ("POST", "reset") => {
            st.c.reset();
            if let Some(ring) = &st.recorded {
                ring.lock().unwrap().clear();
            }
            text(StatusCode::OK, "reset\n")
        }
        ("POST", "health/fail") => {
            st.healthy.store(false, Relaxed);
            text(StatusCode::OK, "health failing\n")
        }
        ("POST", "health/ok") => {
            st.healthy.store(true, Relaxed);
            text(StatusCode::OK, "health ok\n")
        }
        ("POST", "answer/normal") => {
            st.forced_status.store(0, Relaxed);
            text(StatusCode::OK, "answering normally\n")
        }
        ("POST", w) if w.starts_with("answer/") => match w["answer/".len()..].parse::<u16>() {
            Ok(code) if (200..600).contains(&code) => {
                st.forced_status.store(code, Relaxed);
                text(StatusCode::OK, format!("answering {code}\n"))
            }
            _ => text(StatusCode::BAD_REQUEST, "bad status code\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "unknown control call\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_millis(15));
        assert!(parse_duration("2x").is_err());
        assert_eq!(
            parse_latency("/auth/login=200ms").unwrap(),
            ("/auth/login".to_string(), Duration::from_millis(200))
        );
        assert!(parse_latency("auth=1s").is_err());
    }

    #[test]
    fn segments() {
        assert_eq!(top_segment("/"), "/");
        assert_eq!(top_segment("/healthz"), "/healthz");
        assert_eq!(top_segment("/auth/login"), "/auth");
        assert_eq!(top_segment("/a/"), "/a");
    }

    #[test]
    fn cookie_names() {
        assert_eq!(parse_cookie_name("ENTSESSION").unwrap(), "ENTSESSION");
        assert_eq!(parse_cookie_name("JSESSIONID_2").unwrap(), "JSESSIONID_2");
        assert_eq!(parse_cookie_name("").unwrap(), "", "empty: no cookie");
        for bad in ["a b", "a=b", "a;b", "é", "a\"b", "a,b"] {
            assert!(parse_cookie_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn saturated_login_cost() {
        let c = Duration::from_millis(100);
        assert_eq!(login_cost_for(c, None, 50), c);
        assert_eq!(login_cost_for(c, Some(4), 1), c);
        assert_eq!(login_cost_for(c, Some(4), 4), c);
        assert_eq!(login_cost_for(c, Some(4), 5), c * 2);
        assert_eq!(login_cost_for(c, Some(4), 10), c * 7);
        assert_eq!(login_cost_for(c, Some(0), 1), c * 2);
        assert_eq!(login_cost_for(Duration::ZERO, Some(1), 100), Duration::ZERO);
        // No overflow.
        assert_eq!(
            login_cost_for(c, Some(0), u64::MAX),
            c.saturating_mul(u32::MAX)
        );
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode(b"a+b%20c%3D"), b"a b c=");
        assert_eq!(form_decode(b"100%"), b"100%");
        assert_eq!(form_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(form_decode(b"%77rong"), b"wrong");
    }

    #[test]
    fn wrong_passwords() {
        let form = Some("application/x-www-form-urlencoded");
        assert!(wrong_password(form, b"username=u&password=wrong"));
        assert!(wrong_password(form, b"password=wrong"));
        assert!(wrong_password(form, b"pass%77ord=%77rong&x"));
        assert!(wrong_password(
            Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
            b"password=wrong"
        ));
        assert!(!wrong_password(form, b"username=u&password=p"));
        assert!(!wrong_password(form, b"username=wrong"));
        assert!(!wrong_password(form, b"password=wrongish"));
        assert!(!wrong_password(form, b"password"));
        assert!(!wrong_password(form, b""));

        let js = Some("application/json");
        assert!(wrong_password(
            js,
            br#"{"username":"u","password":"wrong"}"#
        ));
        assert!(wrong_password(
            Some("application/vnd.ent+json; charset=utf-8"),
            br#"{"password":"wrong"}"#
        ));
        assert!(!wrong_password(js, br#"{"password":"right"}"#));
        assert!(!wrong_password(js, br#"{"password":null}"#));
        assert!(!wrong_password(js, br#"{"user":{"password":"wrong"}}"#));
        assert!(!wrong_password(js, br#"["password","wrong"]"#));
        assert!(!wrong_password(js, br#"{"password":"wrong""#), "truncated");

        // Only a form or JSON decides.
        assert!(!wrong_password(None, b"password=wrong"));
        assert!(!wrong_password(Some("text/plain"), b"password=wrong"));
    }

    fn received(method: &str, path: &str) -> ReceivedRequest {
        ReceivedRequest {
            method: method.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ring_keeps_the_last_and_completes_by_sequence() {
        let mut ring = Ring::new(3);
        let a = ring.push(received("GET", "/a"));
        let b = ring.push(received("POST", "/b"));
        ring.complete(b, 200);
        assert_eq!((a, b), (0, 1));
        let paths = |r: &Ring| r.list(None).into_iter().map(|x| x.path).collect::<Vec<_>>();
        let c = ring.push(received("GET", "/c"));
        let d = ring.push(received("get", "/d"));
        assert_eq!(paths(&ring), ["/b", "/c", "/d"], "/a evicted");
        ring.complete(a, 200); // evicted: nothing happens
        ring.complete(d, 503);
        let l = ring.list(None);
        assert!(l[0].completed && l[0].status == 200);
        assert!(!l[1].completed && l[1].status == 0);
        assert!(l[2].completed && l[2].status == 503);
        assert_eq!(ring.list(Some("GET")).len(), 2, "method in any case");
        assert_eq!(ring.list(Some("post")).len(), 1);
        assert!(ring.list(Some("PUT")).is_empty());

        // A request that was in flight across a reset does not mark a new one.
        ring.clear();
        assert!(ring.list(None).is_empty());
        let e = ring.push(received("GET", "/e"));
        ring.complete(c, 200);
        assert!(!ring.list(None)[0].completed);
        ring.complete(e, 200);
        assert!(ring.list(None)[0].completed);
    }

    #[test]
    fn received_requests_parse_without_the_optional_fields() {
        let r: ReceivedRequest = serde_json::from_str(
            r#"{"request_id":"r","method":"GET","path":"/","at_ms":3,"completed":true}"#,
        )
        .unwrap();
        assert_eq!(r.test_id, None);
        assert_eq!(r.status, 0);
        // And older stats, without the new counters.
        let s: OriginStats = serde_json::from_value(serde_json::json!({
            "name": "o", "requests_total": 1, "by_method": {}, "by_path": {}, "in_flight": 0,
            "max_in_flight": 1, "login_in_flight": 0, "login_max_in_flight": 0,
            "logins_total": 0, "login_rejected": 0, "request_ids": 0,
            "duplicate_request_ids": 0, "missing_request_ids": 1, "healthy": true
        }))
        .unwrap();
        assert_eq!((s.logins_failed, s.refused_busy), (0, 0));
    }

    #[test]
    fn session_ids_are_hex_and_distinct() {
        let ids = SessionIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn new_flags_parse_and_default_off() {
        let a = OriginArgs::try_parse_from(["ent-origin", "--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(a.session_cookie, "ENTSESSION");
        assert_eq!(a.login_saturate, None);
        assert!(!a.record_requests);
        assert_eq!(a.max_in_flight, None);
        let a = OriginArgs::try_parse_from([
            "ent-origin",
            "--listen",
            "127.0.0.1:1",
            "--session-cookie",
            "",
            "--login-saturate",
            "4",
            "--record-requests",
            "--max-in-flight",
            "4",
        ])
        .unwrap();
        assert_eq!(a.session_cookie, "");
        assert_eq!(a.login_saturate, Some(4));
        assert!(a.record_requests);
        assert_eq!(a.max_in_flight, Some(4));
        let bad = |extra: &[&str]| {
            let mut v = vec!["ent-origin", "--listen", "127.0.0.1:1"];
            v.extend_from_slice(extra);
            OriginArgs::try_parse_from(v).is_err()
        };
        assert!(bad(&["--max-in-flight", "0"]));
        assert!(bad(&["--session-cookie", "a b"]));
        assert!(bad(&["--login-saturate", "-1"]));
    }
}
