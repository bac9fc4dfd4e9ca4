//! Early answers: the HTTP/1 request of a banned client, or one its route's limits refuse on
//! the client address alone, is answered by the edge from its head, before pingora parses it
//! into a session. A flood from a banned or limited address then costs a head parse into a
//! stack array and one write per request instead of a whole proxy session.
//!
//! The answer is the one the pipeline gives (`banned` 403 or `rate_limited` 429, `Retry-After`,
//! `RateLimit`, the same body), with the same metrics, ban accounting and access-log line. It is
//! given only when the pipeline would have reached the ban check: any request the pipeline
//! would answer otherwise first (a denied address, an oversized or malformed head, a path
//! refused by normalisation, no route, an allowed address), that a limit needs more of to
//! decide (a header, a cookie, a field, the cluster's store, dry_run), that its limits let
//! through, or that this reader does not handle (HTTP/1.0, chunked bodies, absolute-form
//! targets, more than `MAX_HEADERS` headers) goes to pingora as before. Heads are read only while
//! a ban is in force or a limit refused within the last second.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Method;

use super::classify::host_of;
use crate::answer::{Answer, Reason};
use crate::forwarded::{self, RequestIds, X_REQUEST_ID};
use crate::runtime::{Runtime, Snapshot};
use crate::shield::{banned_answer, RequestState};
use crate::telemetry::AccessRecord;

/// Headers a head may have to be answered early (more go to pingora, which takes up to 256).
const MAX_HEADERS: usize = 64;

/// An answer written by the edge.
pub struct EarlyAnswer {
    /// The response, head and body, as it goes on the wire.
    pub bytes: Vec<u8>,
    /// Close the connection after it (a body left unread, `Connection: close`, a drain).
    pub close: bool,
}

/// The request's parts the answer needs, borrowed from the head.
struct Head<'h> {
    method: Method,
    path: &'h str,
    host: Option<&'h str>,
    accept: Option<&'h [u8]>,
    accept_language: Option<&'h [u8]>,
    request_id: Option<&'h [u8]>,
    content_length: Option<u64>,
    wants_close: bool,
}

/// The early answer to this head, if the client is banned or its route's limits refuse it on
/// its address, and the pipeline would have reached the ban check. `head` is a complete HTTP/1
/// request head (leading empty lines allowed).
pub fn answer(
    runtime: &Runtime,
    request_ids: &RequestIds,
    head: &[u8],
    peer: Option<SocketAddr>,
) -> Option<EarlyAnswer> {
    // No ban in force and no limit refusing lately (the usual case): nothing to look at, no
    // snapshot loaded.
    let state = &runtime.shield_state;
    let ban_possible = state.bans.active() > 0;
    let refusing = state.refusing();
    if !ban_possible && !refusing {
        return None;
    }
    let started = Instant::now();
    let peer_ip = forwarded::canonical(peer?.ip());
    let snapshot = runtime.load();
    let shield = &snapshot.shield;
    let server = &snapshot.config.server;
    let peer_trusted = forwarded::is_trusted(peer_ip, &server.trusted_proxies);
    let mut ban = None;
    if !peer_trusted {
        // The client is the peer: its ban is known before the head is read.
        if ban_possible {
            ban = shield.ban_in_force(peer_ip);
        }
        if ban.is_none() && !refusing {
            return None;
        }
    }

    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let request = parse_head(head, &mut headers, server.max_header_bytes)?;
    let client_ip = if peer_trusted {
        let xff = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value);
        forwarded::client_ip(peer_ip, xff, &server.trusted_proxies)
    } else {
        peer_ip
    };
    if shield.denied(peer_ip) || shield.denied(client_ip) {
        return None;
    }
    if peer_trusted && ban_possible {
        ban = shield.ban_in_force(client_ip);
    }
    if ban.is_none() && !refusing {
        return None;
    }
    let parsed = read_head(&request)?;
    if parsed
        .content_length
        .is_some_and(|len| len > server.max_body_bytes)
    {
        return None;
    }
    let raw_path = parsed.path.split('?').next().unwrap_or("");
    let normalized = crate::path::normalize(raw_path, server.path_normalization).ok()?;
    // Without a Host header, pingora's parser decides what the request is.
    let host = host_of(parsed.host?);
    let route = snapshot.route(&host, &normalized.route_key, &parsed.method)?;

    // The ban first, then the route's limits, as `Shield::admit` decides.
    let mut refused = RequestState::default();
    let mut answer = match ban {
        Some(left) => banned_answer(left),
        None => {
            let limits = &snapshot.routes.get(route)?.route.limits;
            shield.refuse_from_address(limits, client_ip, &mut refused)?
        }
    };
    let has_body = parsed.content_length.is_some_and(|len| len > 0);
    answer.close = has_body || parsed.wants_close || runtime.is_draining();
    let (bytes, status) = wire(
        &answer,
        &parsed.method,
        parsed.accept,
        parsed.accept_language,
    );

    account(
        runtime,
        &snapshot,
        route,
        Logged {
            started,
            reason: answer.reason,
            limit: refused.limit.as_deref(),
            client_ip,
            method: parsed.method.as_str(),
            host: &host,
            path: raw_path,
            status,
            request_id: parsed
                .request_id
                .filter(|id| peer_trusted && forwarded::acceptable_request_id(id)),
            request_ids,
        },
    );
    Some(EarlyAnswer {
        bytes,
        close: answer.close,
    })
}

/// A complete HTTP/1.1 head (leading empty lines allowed) of at most `max_bytes`, parsed in
/// place into `headers`; None for anything else, which pingora's parser then decides.
pub(super) fn parse_head<'h, 'b>(
    head: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
    max_bytes: usize,
) -> Option<httparse::Request<'h, 'b>> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n')?;
    // The header array is left uninitialised: httparse fills what it parses.
    let mut request = httparse::Request::new(&mut []);
    // The parse must end where the guard's scanner ended the head: anything else is pingora's.
    match request.parse_with_uninit_headers(&head[start..], headers) {
        Ok(httparse::Status::Complete(len)) if start + len == head.len() => {}
        _ => return None,
    }
    if request.version != Some(1) || head.len() > max_bytes {
        return None;
    }
    Some(request)
}

/// An answer of Rempart's as it goes on the wire to an HTTP/1.1 client, head and body (no body
/// to a HEAD), with its status ([`Answer::write_h1`]).
pub(super) fn wire(
    answer: &Answer,
    method: &Method,
    accept: Option<&[u8]>,
    accept_language: Option<&[u8]>,
) -> (Vec<u8>, u16) {
    let mut bytes = Vec::with_capacity(384);
    let status = answer.write_h1(*method == Method::HEAD, accept, accept_language, &mut bytes);
    (bytes, status)
}

/// The request's parts the answer needs; None when this reader leaves the request to pingora.
fn read_head<'h>(request: &httparse::Request<'_, 'h>) -> Option<Head<'h>> {
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let path = request.path?;
    if !path.starts_with('/') {
        return None;
    }
    let mut head = Head {
        method,
        path,
        host: None,
        accept: None,
        accept_language: None,
        request_id: None,
        content_length: None,
        wants_close: false,
    };
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if head.host.is_some() {
                return None;
            }
            head.host = Some(std::str::from_utf8(header.value).ok()?);
        } else if name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(header.value)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()?;
            if head.content_length.is_some_and(|before| before != len) {
                return None;
            }
            head.content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            head.wants_close |= header
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("accept") {
            head.accept.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("accept-language") {
            head.accept_language.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case(X_REQUEST_ID.as_str()) {
            head.request_id.get_or_insert(header.value);
        }
    }
    Some(head)
}

/// What the log line of an early answer says.
pub(super) struct Logged<'a> {
    pub(super) started: Instant,
    pub(super) reason: Reason,
    pub(super) limit: Option<&'a str>,
    pub(super) client_ip: IpAddr,
    pub(super) method: &'a str,
    pub(super) host: &'a str,
    pub(super) path: &'a str,
    pub(super) status: u16,
    /// The id a trusted proxy gave the request, if acceptable; else one is made for the log.
    pub(super) request_id: Option<&'a [u8]>,
    pub(super) request_ids: &'a RequestIds,
}

/// The metrics and the access-log line of an early answer, as the pipeline's `logging` writes
/// them for the same answer.
pub(super) fn account(
    runtime: &Runtime,
    snapshot: &Arc<Snapshot>,
    route: usize,
    logged: Logged<'_>,
) {
    let metrics = &runtime.metrics;
    metrics.count_generated(logged.reason);
    metrics.requests_answered.fetch_add(1, Ordering::Relaxed);
    let elapsed: Duration = logged.started.elapsed();
    let compiled = snapshot.routes.get(route);
    if let Some(compiled) = compiled {
        compiled.metrics.count(logged.status);
        compiled.metrics.duration.observe(elapsed.as_secs_f64());
    }
    if !runtime.access_log.enabled() {
        return;
    }
    let request_id = match logged.request_id {
        Some(id) => String::from_utf8_lossy(id).into_owned(),
        None => logged.request_ids.next(),
    };
    let upstream = compiled.and_then(|r| snapshot.upstreams.get(r.route.upstream));
    let record = AccessRecord {
        time: SystemTime::now(),
        client_ip: Some(logged.client_ip),
        method: logged.method,
        host: logged.host,
        path: logged.path,
        status: logged.status,
        route: compiled.map_or("", |r| r.route.name.as_str()),
        upstream: upstream.map_or("", |u| u.name.as_str()),
        datacenter: "",
        server: None,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_ms: None,
        queue_ms: None,
        retries: 0,
        reason: Some(logged.reason.as_str()),
        limit: logged.limit,
        request_id: &request_id,
    };
    runtime.log_access(&record);
}
