//! `ent-origin`: a stand-in ENT backend with knobs (latency per path, login capacity and cost,
//! health that can be made to fail), and counters that tests and benchmarks read back.
//!
//! The request path only touches atomics (and one shard of a sharded set for request ids), so the
//! origin sustains tens of thousands of requests per second on loopback. It logs nothing per
//! request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use clap::Parser;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The body of the 503 answered beyond `--login-capacity` concurrent logins.
pub const LOGIN_QUOTA_BODY: &str = "connection quota reached, wait for others to log out";

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
        self.logins_total.store(0, Relaxed);
        self.login_rejected.store(0, Relaxed);
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
        let now = g.fetch_add(1, Relaxed) + 1;
        max.fetch_max(now, Relaxed);
        Gauge(g)
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
        return control(&st, req.method(), ctl);
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
        return login(&st, req).await;
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
    echo(&st, req).await
}

/// The echo every other request gets: what the origin received.
async fn echo(st: &OriginState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
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
    let mut body_len: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => body_len += b.len() as u64,
            Err(_) => return text(StatusCode::BAD_REQUEST, "body read error\n"),
        }
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
    if !st.login_cost.is_zero() {
        tokio::time::sleep(st.login_cost).await;
    }
    let r = echo(st, req).await;
    if r.status() == StatusCode::OK {
        c.logins_total.fetch_add(1, Relaxed);
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

fn control(st: &OriginState, method: &Method, what: &str) -> Response {
    match (method.as_str(), what) {
        ("GET", "stats") => json(StatusCode::OK, &st.stats()),
        ("POST", "reset") => {
            st.c.reset();
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
}
