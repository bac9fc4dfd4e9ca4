//! The admin service: health, readiness, status, metrics and configuration, on its own port
//! and its own runtime, apart from the proxy path.

mod history;
mod queues;
mod schedule;
mod shield;
mod status;
mod upstreams;

use std::net::TcpListener as StdTcpListener;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::runtime::Runtime;

/// Errors of the admin API, each with its status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if matches!(self, AdminError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"rempart\""),
            );
        }
        response
    }
}

/// The admin HTTP application.
pub fn router(runtime: Arc<Runtime>) -> Router {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/status", get(status::status))
        .route("/history", get(history::history))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/reload", post(reload))
        .merge(upstreams::routes())
        .merge(shield::routes())
        .merge(queues::routes())
        .route_layer(middleware::from_fn_with_state(
            runtime.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(dashboard))
        .merge(guarded)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            runtime.clone(),
            browser_guard,
        ))
        .with_state(runtime)
}

/// What a web page in an operator's browser could otherwise do to the admin API: a
/// cross-origin POST (drain a datacenter) or, through DNS rebinding, reading `/status` and
/// `/config` under its own name. Every call but `/healthz` must name the admin host by IP
/// literal, `localhost` or a name of `admin.allowed_hosts`; a call with an `Origin` must come
/// from the admin host itself; and without a token, a call that changes something must carry
/// `X-Rempart-Admin: 1` (which no form or simple request can send).
async fn browser_guard(
    State(runtime): State<Arc<Runtime>>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    if request.uri().path() == "/healthz" {
        return Ok(next.run(request).await);
    }
    let snapshot = runtime.load();
    let admin = &snapshot.config.admin;
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &admin.allowed_hosts) {
        return Err(AdminError::Forbidden(format!(
            "Host {host:?} is not the admin address (use its IP, localhost, or list the name in admin.allowed_hosts)"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !same {
            return Err(AdminError::Forbidden(format!(
                "cross-origin admin call from {origin:?} refused"
            )));
        }
    }
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if changes
        && admin.token.is_none()
        && headers
            .get("x-rempart-admin")
            .is_none_or(|v| v.as_bytes() != b"1")
    {
        return Err(AdminError::Forbidden(
            "without admin.token, a call that changes something needs the header X-Rempart-Admin: 1".into(),
        ));
    }
    Ok(next.run(request).await)
}

/// Whether a `Host` header names the admin API: an IP literal (no DNS name can be rebound to
/// it), `localhost`, or an allowed name; any port.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    if name.is_empty() {
        return false;
    }
    let name = name.to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

async fn not_found(request: Request) -> AdminError {
    AdminError::NotFound(request.uri().path().to_string())
}

/// When `admin.token` is set, every call but `/healthz` needs `Authorization: Bearer TOKEN`.
async fn require_token(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let snapshot = runtime.load();
    if let Some(token) = &snapshot.config.admin.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        if !constant_time_eq(presented, token.0.as_bytes()) {
            return Err(AdminError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Compare without returning early on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// The dashboard: one self-contained page (no outside assets). It holds no data itself, so it
/// is served without the token; the `/status` calls it makes need it.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(runtime): State<Arc<Runtime>>) -> (StatusCode, &'static str) {
    if runtime.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if runtime.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(runtime): State<Arc<Runtime>>) -> Result<Response, AdminError> {
    let body = runtime
        .metrics
        .render()
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// `POST /reload`: 200 with the new generation, or 400 with every error (nothing changes).
async fn reload(State(runtime): State<Arc<Runtime>>) -> Response {
    let outcome = tokio::task::spawn_blocking(move || crate::reload::reload(&runtime)).await;
    match outcome {
        Ok(Ok(reloaded)) => Json(serde_json::json!({
            "generation": reloaded.generation,
            "needs_restart": reloaded.needs_restart,
        }))
        .into_response(),
        Ok(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": "the configuration has errors; nothing changed",
                "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        Err(e) => AdminError::Internal(e.to_string()).into_response(),
    }
}

async fn config(State(runtime): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    Json(runtime.load().config.masked.clone())
}

/// Runs the admin application as a pingora background service, on a listener bound before
/// start-up so that a taken port stops the process before anything runs.
pub struct AdminService {
    runtime: Arc<Runtime>,
    listener: Mutex<Option<StdTcpListener>>,
}

impl AdminService {
    /// `listener` is None during an upgrade: the service binds `admin.address` itself as soon
    /// as the old process has released it.
    pub fn new(runtime: Arc<Runtime>, listener: Option<StdTcpListener>) -> Self {
        AdminService {
            runtime,
            listener: Mutex::new(listener),
        }
    }
}

/// How long the new process of an upgrade waits for the old one to release the admin address,
/// beyond the old one's grace period: pingora's hand-over delay (5 s) and a margin.
const ADMIN_RELEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Bind the admin address, waiting up to `patience` for a previous process to release it (it
/// holds it until it exits: its hand-over delay, then its drain).
async fn bind_when_free(
    address: std::net::SocketAddr,
    patience: std::time::Duration,
) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let listener = match self.listener.lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        let bound = match listener {
            Some(listener) => listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(listener)),
            None => {
                let (address, patience) = {
                    let snapshot = self.runtime.load();
                    let config = &snapshot.config;
                    (
                        config.admin.address,
                        config.server.grace_period + ADMIN_RELEASE_MARGIN,
                    )
                };
                bind_when_free(address, patience).await
            }
        };
        let listener = match bound {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                std::process::exit(1);
            }
        };
        // The admin keeps answering while the proxy drains (`/readyz` says 503 then); it
        // ends with the process.
        if let Err(e) = axum::serve(listener, router(self.runtime.clone())).await {
            tracing::error!(error = %e, "admin service stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_cannot_be_rebound() {
        let none: Vec<String> = vec![];
        assert!(host_allowed("127.0.0.1:9901", &none));
        assert!(host_allowed("[::1]:9901", &none));
        assert!(host_allowed("localhost:9901", &none));
        assert!(host_allowed("LOCALHOST", &none));
        assert!(!host_allowed("evil.example", &none));
        assert!(!host_allowed("evil.example:9901", &none));
        assert!(!host_allowed("", &none));
        assert!(!host_allowed("[evil]:1", &none));
        let ops = vec!["edge-1.ops.example".to_string()];
        assert!(host_allowed("edge-1.ops.example:9901", &ops));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
