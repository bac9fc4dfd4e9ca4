//! The request pipeline: Rempart's pingora `ProxyHttp` implementation and its per-request
//! context. The hooks follow SPEC section 3: route, then upstream, then response and log.

mod classify;
mod context;
mod direct;
mod early;
pub mod edge;
mod parking;
mod streams;

use classify::{body_fits_replay_buffer, head_bytes, is_tls, outcome_of, reason_of, request_host};
pub use context::{RequestCtx, RequestGuard};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::answer::{Answer, Page, Reason};
use crate::forwarded::{self, RequestIds, X_REQUEST_ID};
use crate::pages::Builtin;
use crate::runtime::Runtime;
use crate::telemetry::AccessRecord;
use crate::upstream::retry::{self, RetryKind};
use crate::upstream::{Choice, Outcome};

/// Rempart's proxy logic, shared by every worker.
pub struct RempartProxy {
    runtime: Arc<Runtime>,
    request_ids: RequestIds,
}

impl RempartProxy {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        RempartProxy {
            runtime,
            request_ids: RequestIds::new(),
        }
    }
}

/// Seconds a client is asked to wait when every datacenter is down.
const MAINTENANCE_RETRY_AFTER: u64 = 30;

/// How much longer than `upgrade_idle_timeout` the upstream side of an upgrade waits for a
/// read: the guard, which sees both directions, closes a quiet connection first.
const UPGRADE_READ_TIMEOUT_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

impl RempartProxy {
    /// Write an answer of Rempart's own and remember why, for metrics and the log.
    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx, mut answer: Answer) {
        ctx.reason = Some(answer.reason);
        if self.runtime.is_draining() {
            answer.close = true;
        }
        // A body left unread would be taken for the next request: close instead.
        let headers = &session.req_header().headers;
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if has_body && !session.is_body_done() {
            answer.close = true;
        }
        self.runtime.metrics.count_generated(answer.reason);
        if let Err(e) = answer.send(session).await {
            tracing::debug!(error = %e, "could not write an answer to the client");
        }
    }
}

#[async_trait]
impl ProxyHttp for RempartProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _guard: RequestGuard::new(self.runtime.metrics.clone()),
            started: Instant::now(),
            snapshot: None,
            peer_ip: None,
            client_ip: None,
            peer_trusted: false,
            tls: false,
            host: String::new(),
            request_id: String::new(),
            route: None,
            reason: None,
            datacenter: None,
            current: None,
            tried: Vec::new(),
            tally: Default::default(),
            safe_to_resend: false,
            retrying_status: false,
            all_down: false,
            try_started: None,
            upstream_ms: None,
            shield: Default::default(),
            queue: Default::default(),
            queue_ms: None,
            upgraded: false,
            forward_path: None,
            cut: false,
            body_clock: None,
        }
    }

    /// Rempart does not recompress what backends send: no downstream modules.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.runtime.load();
        let server = &snapshot.config.server;

        ctx.tls = is_tls(session.digest());
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            let peer = forwarded::canonical(peer.ip());
            ctx.peer_ip = Some(peer);
            ctx.peer_trusted = forwarded::is_trusted(peer, &server.trusted_proxies);
            let xff = session
                .req_header()
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes());
            ctx.client_ip = Some(forwarded::client_ip(peer, xff, &server.trusted_proxies));
        }
        // shield.deny, per request: the peer (a reload may have denied it since the connection
        // opened) and the client behind a trusted proxy.
        let denied = [ctx.peer_ip, ctx.client_ip]
            .into_iter()
            .flatten()
            .any(|ip| snapshot.shield.denied(ip));
        if denied {
            ctx.host = request_host(session.req_header());
            let peer_denied = ctx.peer_ip.is_some_and(|ip| snapshot.shield.denied(ip));
            let shield = snapshot.shield.clone();
            ctx.snapshot = Some(snapshot);
            let mut answer = Answer::new(Reason::Denied);
            answer.close = true;
            self.answer(session, ctx, answer).await;
            if let (true, Some(peer)) =
                (peer_denied, session.client_addr().and_then(|a| a.as_inet()))
            {
                // The connection itself is denied: HTTP/2 gets a GOAWAY after this answer.
                shield
                    .state
                    .guards
                    .close(peer, crate::shield::guard::CloseReason::Denied);
            }
            return Ok(true);
        }
        let req = session.req_header();
        ctx.host = request_host(req);
        ctx.request_id = match req.headers.get(&X_REQUEST_ID) {
            Some(id) if ctx.peer_trusted && forwarded::acceptable_request_id(id.as_bytes()) => {
                String::from_utf8_lossy(id.as_bytes()).into_owned()
            }
            _ => self.request_ids.next(),
        };

        // Conflicting framing (Content-Length with Transfer-Encoding, a final coding other
        // than chunked) is settled by pingora's HTTP/1 parser before this hook: it refuses
        // the request or keeps chunked framing and closes the connection afterwards.
        if head_bytes(req) > server.max_header_bytes {
            ctx.snapshot = Some(snapshot);
            self.answer(session, ctx, Answer::new(Reason::HeadersTooLarge))
                .await;
            return Ok(true);
        }
        let declared_length = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > server.max_body_bytes) {
            ctx.snapshot = Some(snapshot);
            self.answer(session, ctx, Answer::new(Reason::BodyTooLarge))
                .await;
            return Ok(true);
        }

        // The route is matched on the normalised path, and the request goes upstream with the
        // path that matched, so that the origin serves the route Rempart applied.
        let normalized = match crate::path::normalize(req.uri.path(), server.path_normalization) {
            Ok(normalized) => normalized,
            Err(rejection) => {
                ctx.snapshot = Some(snapshot);
                let answer = Answer::new(Reason::PathRejected).detail(rejection.as_str());
                self.answer(session, ctx, answer).await;
                return Ok(true);
            }
        };
        ctx.route = snapshot.route(&ctx.host, &normalized.route_key, &req.method);
        if let std::borrow::Cow::Owned(forward) = normalized.forward {
            ctx.forward_path = Some(forward);
        }
        ctx.snapshot = Some(snapshot);
        if ctx.route.is_none() {
            self.answer(session, ctx, Answer::new(Reason::NoRoute))
                .await;
            return Ok(true);
        }

        // Shield: bans, then the route's limits.
        if let (Some(snapshot), Some(route), Some(client_ip)) =
            (ctx.snapshot.clone(), ctx.route, ctx.client_ip)
        {
            if let Some(compiled) = snapshot.routes.get(route) {
                let refusal = snapshot
                    .shield
                    .admit(&compiled.route.limits, session, client_ip, &mut ctx.shield)
                    .await;
                if let Some(answer) = refusal {
                    self.answer(session, ctx, answer).await;
                    return Ok(true);
                }
            }
        }
        if declared_length.is_some_and(|len| len > 0)
            || session
                .req_header()
                .headers
                .contains_key(header::TRANSFER_ENCODING)
        {
            // A body that stops arriving is cut (408) instead of holding the request.
            session.set_read_timeout(Some(crate::shield::body::BODY_STALL));
        }

        // Login queue: wait for admission on a queue route.
        let queue = ctx.snapshot.as_ref().and_then(|s| {
            let index = s.routes.get(ctx.route?)?.route.login_queue?;
            s.queues.get(index).cloned()
        });
        if let Some(queue) = queue {
            use crate::queue::Admission;
            let admission = queue
                .enter(session, &ctx.host, ctx.client_ip, ctx.tls, &mut ctx.queue)
                .await;
            ctx.queue_ms = ctx.queue.queue_ms();
            match admission {
                Admission::Admitted => ctx.body_clock = Some(Instant::now()),
                Admission::Answer(answer) => {
                    self.answer(session, ctx, answer).await;
                    return Ok(true);
                }
                Admission::Gone => {
                    return Err(Error::explain(
                        ErrorType::ConnectionClosed,
                        "the client left the login queue",
                    )
                    .into_down());
                }
            }
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.upgraded {
            // WebSocket frames: the upgrade idle timeout applies, not the body rules.
            return Ok(());
        }
        if let Some(snapshot) = ctx.snapshot.as_ref() {
            // The body's clock starts when the request leaves the line (a wait in the login
            // queue is not a slow body).
            let since = ctx.body_clock.unwrap_or(ctx.started).elapsed();
            snapshot
                .shield
                .check_body(session.body_bytes_read() as u64, since, end_of_stream)?;
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(upstream) = ctx.upstream() else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "the route has no upstream");
        };
        let now = upstream.now_ms();
        let req = session.req_header();
        if ctx.tried.is_empty() {
            upstream.record_request(now);
            let resend = ctx
                .snapshot
                .as_ref()
                .zip(ctx.route)
                .and_then(|(s, r)| s.routes.get(r))
                .map(|r| r.route.resend)
                .unwrap_or_default();
            ctx.safe_to_resend = retry::safe_to_resend(&req.method, &req.headers, resend);
        }
        let choice = upstream.choose(&ctx.tried, now).await;
        let pick = match choice {
            Choice::Server(pick) => pick,
            Choice::AllDown => {
                ctx.all_down = true;
                return Error::e_explain(ErrorType::HTTPStatus(503), "every datacenter is down");
            }
            Choice::Busy => {
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "every server is at its max_in_flight",
                );
            }
            Choice::Exhausted if ctx.tried.is_empty() => {
                return Error::e_explain(ErrorType::HTTPStatus(503), "no server to send to");
            }
            Choice::Exhausted => {
                return Error::e_explain(ErrorType::HTTPStatus(502), "every server failed");
            }
        };
        let mut peer = Box::new(pick.server.peer.clone());
        let req = session.req_header();
        if session.is_upgrade_req() {
            // An upgraded connection (WebSocket) may stay quiet: the guard closes it after
            // `upgrade_idle_timeout` without traffic either way (and counts it), not the
            // response timeout. The upstream side's read timeout is a second longer, so that
            // the guard's close comes first rather than racing it.
            if let Some(snapshot) = ctx.snapshot.as_ref() {
                peer.options.read_timeout =
                    Some(snapshot.config.server.upgrade_idle_timeout + UPGRADE_READ_TIMEOUT_MARGIN);
            }
        }
        ctx.datacenter = Some(pick.datacenter);
        ctx.tried.push(pick.server.address);
        let mut in_flight = pick.in_flight;
        // A request that can be sent again waits at most `per_try` for each read from this
        // server, then goes to another: a server that hangs does not hold it until the
        // response timeout. Never on its last try, which gets the whole response timeout (a
        // slow answer beats none).
        if let Some(per_try) = upstream.config.timeouts.per_try {
            let last = ctx.tally.reached >= upstream.config.retries.attempts
                || !upstream.has_another(&ctx.tried, now);
            let upgrade = session.is_upgrade_req();
            if ctx.safe_to_resend && body_fits_replay_buffer(req) && !last && !upgrade {
                peer.options.read_timeout = Some(per_try.min(upstream.config.timeouts.response));
                in_flight.per_try = true;
            }
        }
        ctx.current = Some(in_flight);
        ctx.try_started = Some(Instant::now());
        Ok(peer)
    }

    /// A connection to the server is ready: new connections close abortively (a request
    /// abandoned before the server acknowledged it is dropped by the kernel, never delivered
    /// later), and the try is registered so that it can be cut if its server goes down.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !reused {
            crate::upstream::transport::abortive_close(fd);
        }
        if let Some(current) = ctx.current.as_mut() {
            current.connected(fd);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // While the process hands over or drains, answers close their connection so clients
        // move to fresh ones (served by the new process) instead of racing the shutdown.
        if self.runtime.is_draining() {
            session.set_keepalive(None);
        }
        // Who the client is, as Rempart tells the upstream (src/forwarded.rs has the rules):
        // X-Forwarded-For whole plus the peer, -Proto, -Host, and `Forwarded` / `X-Real-IP`
        // stripped or rewritten when they come from an untrusted peer.
        let policy = ctx
            .snapshot
            .as_ref()
            .map_or(Default::default(), |s| s.config.server.forwarded);
        let req = session.req_header();
        let edits = match (ctx.peer_ip, ctx.client_ip) {
            (Some(peer), Some(client_ip)) => {
                let host = req
                    .headers
                    .get(header::HOST)
                    .map(|h| h.as_bytes())
                    .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
                let hop = forwarded::Hop {
                    peer,
                    peer_trusted: ctx.peer_trusted,
                    client_ip,
                    tls: ctx.tls,
                    host,
                };
                forwarded::upstream_edits(&req.headers, &hop, policy)
            }
            // No inet peer (never on TCP listeners): vouch for nothing.
            _ => vec![
                forwarded::HeaderEdit::Remove(header::FORWARDED),
                forwarded::HeaderEdit::Remove(forwarded::X_REAL_IP.clone()),
            ],
        };
        for edit in edits {
            match edit {
                forwarded::HeaderEdit::Remove(name) => {
                    upstream_request.remove_header(&name);
                }
                forwarded::HeaderEdit::Set(name, value) => {
                    upstream_request.insert_header(name, value)?;
                }
            }
        }
        upstream_request.insert_header(X_REQUEST_ID.clone(), ctx.request_id.as_str())?;
        // An HTTP/1.0 request may name no host; HTTP/1.1, which Rempart speaks upstream, must
        // (RFC 9112, section 3.2): the server's address stands in, as NGINX's `$proxy_host`.
        if !upstream_request.headers.contains_key(header::HOST) {
            if let Some(server) = ctx.tried.last() {
                upstream_request.insert_header(header::HOST, server.to_string())?;
            }
        }
        if let Some(path) = &ctx.forward_path {
            let uri = match upstream_request.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let uri = http::Uri::try_from(uri)
                .map_err(|e| Error::because(ErrorType::InternalError, "the normalised path", e))?;
            upstream_request.set_uri(uri);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status;
        // Informational answers (100 Continue) do not end the try; 101 (upgrade) does.
        if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        let code = status.as_u16();
        if !status.is_server_error() {
            ctx.end_try(Outcome::Ok, Some(code), true);
            return Ok(());
        }
        ctx.end_try(Outcome::Http5xx, Some(code), true);
        if crate::upstream::is_failure_status(code) && ctx.retry(session, RetryKind::Status) {
            // Nothing went to the client yet: drop this answer and try another server.
            ctx.retrying_status = true;
            let mut e = Error::explain(
                ErrorType::HTTPStatus(code),
                format!("upstream answered {code}, retrying on another server"),
            );
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && session.is_upgrade_req()
        {
            // From now on the connection carries the upgraded protocol: the guard times its
            // idleness (`upgrade_idle_timeout`), pingora's per-read timeout does not apply.
            ctx.upgraded = true;
            session.set_read_timeout(None);
            if let Some(control) = crate::shield::guard::current() {
                control.upgraded();
            }
        }
        ctx.queue.response(upstream_response);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.end_try(Outcome::ConnectError, None, true);
        // Nothing reached the server: safe to retry for any method, on another server.
        let retry = ctx.retry(session, RetryKind::Connect);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("upstream {peer}"));
        if std::mem::take(&mut ctx.retrying_status) {
            // Decided in upstream_response_filter.
            e.set_retry(true);
            return e;
        }
        let from_upstream = e.esource() == &ErrorSource::Upstream;
        let outcome = outcome_of(&e);
        let (cut, per_try) = ctx
            .current
            .as_ref()
            .map_or((false, false), |c| (c.was_cut(), c.per_try));
        if cut {
            ctx.cut = true;
        }
        // A `per_try` expiry says the server is slow, not that it failed: it ejects nobody
        // (a dark server is ejected by its checks and by unacknowledged bytes).
        let blame = from_upstream && !(per_try && outcome == Outcome::Timeout);
        ctx.end_try(outcome, None, blame);
        let retry = from_upstream
            && outcome
                .retry_kind()
                .is_some_and(|kind| ctx.retry(session, kind));
        e.set_retry(retry);
        e
    }

    /// Retries are counted (`rempart_retries_total{kind}`) and logged with their request (the
    /// access log's `retries`); a warning line per retry would flood the log during an outage.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.current.is_some() {
            ctx.end_try(outcome_of(e), None, e.esource() == &ErrorSource::Upstream);
        }
        // pingora never reuses the client connection after a failed proxy attempt
        // (`can_reuse_downstream` only counts for errors before it): every answer written here
        // says `Connection: close`, so that clients do not send on a closed connection.
        if ctx.all_down {
            let mut answer = Answer::new(Reason::Maintenance);
            answer.retry_after = Some(MAINTENANCE_RETRY_AFTER);
            answer.close = true;
            let configured = ctx
                .snapshot
                .as_ref()
                .and_then(|s| s.config.pages.maintenance.as_ref());
            answer.page = Some(match configured {
                Some(page) => Page::Configured(page.html.clone()),
                None => Page::Builtin(Builtin::Maintenance {
                    retry_after: MAINTENANCE_RETRY_AFTER,
                }),
            });
            self.answer(session, ctx, answer).await;
            return FailToProxy {
                error_code: Reason::Maintenance.status(),
                can_reuse_downstream: false,
            };
        }
        let reason = if ctx.cut && e.esource() == &ErrorSource::Upstream {
            Some(Reason::UpstreamDown)
        } else {
            reason_of(e)
        };
        let Some(reason) = reason else {
            // The client is gone: nothing to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let mut answer = Answer::new(reason);
        // pingora does not reuse a connection after a failed proxy: say so to the client.
        answer.close = true;
        if reason == Reason::NoUpstream {
            answer.retry_after = Some(5);
        }
        let already_answered = session.response_written().is_some();
        if already_answered {
            // Bytes already went to the client: the connection is closed instead.
            ctx.reason = Some(reason);
        } else {
            self.answer(session, ctx, answer).await;
        }
        FailToProxy {
            error_code: reason.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.current = None;
        let status = session
            .response_written()
            .map_or(0, |resp| resp.status.as_u16());
        if ctx.queue.holds_slot() {
            let datacenter = ctx
                .upstream()
                .zip(ctx.datacenter)
                .and_then(|(u, dc)| u.datacenters.get(dc).map(|d| d.name.clone()));
            ctx.queue
                .finish(ctx.upstream_ms, status, datacenter.as_deref());
        }
        let elapsed = ctx.started.elapsed();
        let metrics = &self.runtime.metrics;
        metrics.requests_answered.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            metrics.responses_5xx.fetch_add(1, Ordering::Relaxed);
        }
        let Some(snapshot) = ctx.snapshot.as_ref() else {
            return;
        };
        let route = ctx.route.and_then(|i| snapshot.routes.get(i));
        if let Some(route) = route {
            route.metrics.count(status);
            route.metrics.duration.observe(elapsed.as_secs_f64());
        } else {
            metrics
                .requests_total
                .with_label_values(&["", &status.to_string()])
                .inc();
        }
        if !self.runtime.access_log.enabled() {
            return;
        }
        let upstream = route.and_then(|r| snapshot.upstreams.get(r.route.upstream));
        let datacenter = upstream
            .zip(ctx.datacenter)
            .and_then(|(u, dc)| u.datacenters.get(dc))
            .map_or("", |dc| dc.name.as_str());
        let req = session.req_header();
        let record = AccessRecord {
            time: std::time::SystemTime::now(),
            client_ip: ctx.client_ip,
            method: req.method.as_str(),
            host: &ctx.host,
            path: req.uri.path(),
            status,
            route: route.map_or("", |r| r.route.name.as_str()),
            upstream: upstream.map_or("", |u| u.name.as_str()),
            datacenter,
            server: ctx.tried.last().copied(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_ms: ctx.upstream_ms,
            queue_ms: ctx.queue_ms,
            retries: ctx.tally.retries,
            reason: ctx.reason.map(Reason::as_str),
            limit: ctx
                .shield
                .limit
                .as_deref()
                .or(ctx.shield.dry_run.as_deref()),
            request_id: &ctx.request_id,
        };
        self.runtime.log_access(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port_lowercase() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "ENT.Example.test:8443").unwrap();
        assert_eq!(request_host(&req), "ent.example.test");
        req.insert_header("host", "[::1]:8080").unwrap();
        assert_eq!(request_host(&req), "::1");
        req.insert_header("host", "localhost").unwrap();
        assert_eq!(request_host(&req), "localhost");
    }

    #[test]
    fn connect_errors_are_kept_apart() {
        let refused = Error::new(ErrorType::ConnectRefused);
        assert_eq!(outcome_of(&refused), Outcome::ConnectError);
        let timeout = Error::new(ErrorType::ReadTimedout);
        assert_eq!(outcome_of(&timeout), Outcome::Timeout);
        let upstream_timeout = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(reason_of(&upstream_timeout), Some(Reason::UpstreamTimeout));
        let closed = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(reason_of(&closed), None);
    }
}
