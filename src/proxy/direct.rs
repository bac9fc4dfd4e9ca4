//! Direct forwarding: a plain HTTP/1.1 request without a body or with a `Content-Length` body
//! the replay buffer holds, on a route whose limits read only the client address, is forwarded
//! by the edge itself, from the head the guard read, over a per-thread
//! pool of upstream connections (`upstream::pool`), without a pingora session, its header maps
//! or its per-request future. Its body is read whole before the request goes upstream (a client
//! that trickles it holds no server connection), under the body rules (`body_min_rate`, the
//! stall timeout: 408). On a login-queue route it then takes its place in line as in the
//! pipeline (`LoginQueue::entrant` and `LoginQueue::admit`: the waiting room, passes,
//! tickets, the poll, a client that leaves the line), its connection read meanwhile to see it
//! leave (what it sends is kept for its next request).
//!
//! It is the pipeline's request, decided the same way: the same route, shield admission
//! (`Shield::admit_from_address`), choice of server and datacenter (`Upstream::choose`),
//! timeouts (`connect`, `response` per read, `per_try`), retries and their budget (a request
//! sent again only when `retry::safe_to_resend` says so), outcome accounting (outlier
//! detection, cuts of tries to a server declared down), forwarding headers
//! (`forwarded::edit_upstream`), answers of Rempart's, metrics and access-log line.
//! On the wire it does what pingora's HTTP/1 proxy does (hop-by-hop request headers removed,
//! the response's `Date` and `Connection` set, a body without length sent chunked, a chunked
//! body decoded and encoded again without its extensions and trailers, `Content-Length`
//! dropped beside `Transfer-Encoding`), with the same bounds (response heads of at most 1 MiB
//! and 256 headers, a length that must be digits, a malformed response answered 502).
//!
//! Anything else goes to pingora as before, decided from the head before anything is charged
//! or sent: another method or version, a chunked or larger body, an upgrade, `Expect`, a
//! `Connection` header naming other headers, an unusual target or Host, more than
//! `MAX_HEADERS` headers, a denied address, a head the pipeline would refuse (too large, a path
//! normalisation refuses, no route), a limit keyed by anything but the address, a drain.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BufMut;
use http::{HeaderName, Method};
use pingora::protocols::l4::ext::TcpKeepalive;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::classify::host_of;
use super::context::RequestGuard;
use super::early::{self, EarlyAnswer, Logged};
use crate::answer::{Answer, Page, Reason};
use crate::forwarded::{self, EditSink, Hop, RequestIds, X_REQUEST_ID};
use crate::pages::Builtin;
use crate::queue::{self, Admission, Entrant, LoginQueue, QueueRequest};
use crate::runtime::{Runtime, Snapshot};
use crate::shield::body::BODY_STALL;
use crate::shield::RequestState;
use crate::telemetry::AccessRecord;
use crate::upstream::pool::{self, ConnectFailure};
use crate::upstream::retry::{self, Replay, RetryKind, Tally, REPLAY_BUFFER_BYTES};
use crate::upstream::{self, Choice, InFlight, Outcome, Upstream};

/// Request headers a head may have to be forwarded directly.
const MAX_HEADERS: usize = 64;
/// Bytes a target may have to be forwarded directly.
const MAX_TARGET: usize = 8192;
/// Headers a response head may have (pingora's bound).
const MAX_RESPONSE_HEADERS: usize = 256;
/// Bytes a response head may take (pingora's bound).
const MAX_RESPONSE_HEAD: usize = 1_048_575;
/// Bytes read from the server at once.
const READ_BYTES: usize = 16 * 1024;
/// Bytes a chunk-size line (with its extensions) or a body's trailers may take.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Seconds a client is asked to wait when every datacenter is down (as the pipeline).
const MAINTENANCE_RETRY_AFTER: u64 = 30;

/// Request headers that are the hop's own, never sent upstream (pingora's list).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// What the edge does with a complete request head.
pub enum Direct {
    /// Forwarded by the edge.
    Forward(Box<Plan>),
    /// Refused by the shield: the answer to write.
    Answer(EarlyAnswer),
}

/// A request the edge forwards itself, taken from its head.
pub struct Plan {
    started: Instant,
    snapshot: Arc<Snapshot>,
    route: usize,
    upstream: Arc<Upstream>,
    /// The parts the log and the answers read (the path as received, `Accept`,
    /// `Accept-Language`), then from `head_start` on the request as it goes upstream: its head,
    /// then its body once read.
    wire: Vec<u8>,
    head_start: usize,
    /// The body's length (Content-Length), read whole before the request goes upstream.
    body_len: usize,
    /// The request can be sent again (`retry::safe_to_resend`).
    safe: bool,
    path: Range<usize>,
    accept: Option<Range<usize>>,
    accept_language: Option<Range<usize>>,
    method: Method,
    host: String,
    client_ip: IpAddr,
    request_id: String,
    /// The client did not ask to close.
    keep_alive: bool,
    shield: RequestState,
    /// A login-queue route's queue, and what it read of the head.
    queue: Option<(Arc<LoginQueue>, Entrant)>,
    queue_state: queue::RequestState,
}

/// The head as the login queue reads it.
struct HeadView<'h> {
    is_get: bool,
    path: &'h str,
    query: Option<&'h str>,
    headers: &'h [httparse::Header<'h>],
}

impl QueueRequest for HeadView<'_> {
    fn is_get(&self) -> bool {
        self.is_get
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn cookie_lines(&self) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .map(|h| h.value)
    }

    fn path(&self) -> &str {
        self.path
    }

    fn query(&self) -> Option<&str> {
        self.query
    }
}

/// The client connection as direct forwarding uses it: read, written, and given back bytes
/// read past the request (a pipelined one, read while the request waited in a login queue).
pub trait Client: AsyncRead + AsyncWrite + Unpin {
    fn unread(&mut self, bytes: &[u8]);
}

impl Client for Box<crate::shield::guard::Guard> {
    fn unread(&mut self, bytes: &[u8]) {
        crate::shield::guard::Guard::unread(self, bytes);
    }
}

/// Bytes read from a client while its request waits in a login queue, at most.
const MAX_READ_WHILE_WAITING: usize = 16 * 1024;

/// Resolves when the client closes its connection while its request waits; what it sends
/// meanwhile (a pipelined request) is kept in `pending`, up to `MAX_READ_WHILE_WAITING`, then
/// no longer read (the wait ends with its hold).
async fn client_leaves<C: Client>(client: &mut C, pending: &mut Vec<u8>) {
    loop {
        if pending.len() >= MAX_READ_WHILE_WAITING {
            return std::future::pending().await;
        }
        let left = (MAX_READ_WHILE_WAITING - pending.len()) as u64;
        let mut limited = (&mut *client).take(left);
        match limited.read_buf(pending).await {
            // A close after a pipelined request is its end of input, not a departure: the
            // requests are served, as the pipeline does (it stops watching at the first byte).
            Ok(0) if !pending.is_empty() => return std::future::pending().await,
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// How the edge takes this head: None leaves it to pingora. `head` is a complete HTTP/1 head
/// (leading empty lines allowed), `tls` whether the client connection is TLS.
pub fn plan(
    runtime: &Runtime,
    request_ids: &RequestIds,
    head: &[u8],
    peer: Option<SocketAddr>,
    tls: bool,
) -> Option<Direct> {
    let started = Instant::now();
    if runtime.is_draining() {
        return None;
    }
    let peer_ip = forwarded::canonical(peer?.ip());
    let snapshot = runtime.load();
    let server = &snapshot.config.server;

    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let request = early::parse_head(head, &mut headers, server.max_header_bytes)?;
    let method = match request.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    };
    let target = request.path?;
    // Unreserved, sub-delims, ':', '@', '/', '?', '%': what every parser takes as it is.
    let plain_target = target.starts_with('/')
        && target.len() <= MAX_TARGET
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b));
    if !plain_target {
        return None;
    }
    let headers: &[httparse::Header<'_>] = request.headers;
    let mut host = None;
    let mut keep_alive = true;
    let mut accept = None;
    let mut accept_language = None;
    let mut request_id = None;
    let mut content_length: Option<u64> = None;
    let mut idempotency_key = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            let plain = !header.value.is_empty()
                && header
                    .value
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
            if host.is_some() || !plain {
                return None;
            }
            host = Some(std::str::from_utf8(header.value).ok()?);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // One length, of digits only: anything else is pingora's to refuse.
            // Leading zeros too: every parser reads them alike, but nothing needs them.
            let digits = !header.value.is_empty() && header.value.iter().all(u8::is_ascii_digit);
            let padded = header.value.len() > 1 && header.value.first() == Some(&b'0');
            if content_length.is_some() || !digits || padded || header.value.len() > 19 {
                return None;
            }
            content_length = Some(
                header
                    .value
                    .iter()
                    .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            idempotency_key = true;
        } else if name.eq_ignore_ascii_case("accept") {
            accept.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("accept-language") {
            accept_language.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case(X_REQUEST_ID.as_str()) {
            request_id.get_or_insert(header.value);
        }
    }
    let host_value = host?;
    // A body is read whole before the request goes upstream: one the replay buffer holds,
    // within max_body_bytes (a larger one is pingora's, streamed, or refused with 413).
    let body_len = content_length.unwrap_or(0);
    if body_len > server.max_body_bytes || body_len > REPLAY_BUFFER_BYTES as u64 {
        return None;
    }
    // The head's size as the pipeline counts it (`classify::head_bytes`).
    let counted = headers.iter().fold(target.len() + 16, |sum, h| {
        sum + h.name.len() + h.value.len() + 4
    });
    if counted > server.max_header_bytes {
        return None;
    }

    let trusted = &server.trusted_proxies;
    let peer_trusted = forwarded::is_trusted(peer_ip, trusted);
    let client_ip = if peer_trusted {
        let xff = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value);
        forwarded::client_ip(peer_ip, xff, trusted)
    } else {
        peer_ip
    };
    let shield = &snapshot.shield;
    if shield.denied(peer_ip) || shield.denied(client_ip) {
        return None;
    }
    let raw_path = target.split('?').next().unwrap_or("");
    let normalized = crate::path::normalize(raw_path, server.path_normalization).ok()?;
    let host = host_of(host_value);
    let route = snapshot.route(&host, &normalized.route_key, &method)?;
    let compiled = snapshot.routes.get(route)?;
    if !shield.decides_from_address(&compiled.route.limits) {
        return None;
    }
    let queue = match compiled.route.login_queue {
        Some(index) => Some(snapshot.queues.get(index)?.clone()),
        None => None,
    };
    let upstream = snapshot.upstreams.get(compiled.route.upstream)?.clone();
    let safe = retry::safe_to_resend_keyed(&method, idempotency_key, compiled.route.resend);
    let mut edits = WireEdits::new();
    forwarded::edit_upstream(
        headers,
        &Hop {
            peer: peer_ip,
            peer_trusted,
            client_ip,
            tls,
            host: Some(host_value.as_bytes()),
        },
        server.forwarded,
        &mut edits,
    );
    if edits.overflowed {
        edits.give_back();
        return None;
    }

    // From here on the request is the edge's: the shield decides (and charges) it.
    let mut state = RequestState::default();
    if let Some(mut answer) =
        shield.admit_from_address(&compiled.route.limits, client_ip, &mut state)
    {
        // A body left unread closes the connection.
        answer.close |= !keep_alive || body_len > 0;
        let (bytes, status) = early::wire(&answer, &method, accept, accept_language);
        let trusted_id =
            request_id.filter(|id| peer_trusted && forwarded::acceptable_request_id(id));
        early::account(
            runtime,
            &snapshot,
            route,
            Logged {
                started,
                reason: answer.reason,
                limit: state.limit.as_deref(),
                client_ip,
                method: method.as_str(),
                host: &host,
                path: raw_path,
                status,
                request_id: trusted_id,
                request_ids,
            },
        );
        return Some(Direct::Answer(EarlyAnswer {
            bytes,
            close: answer.close,
        }));
    }

    // A login-queue route: what the queue reads of the head (tenant, pass, ticket, poll).
    let mut queue_state = queue::RequestState::default();
    let queue = queue.map(|queue| {
        let view = HeadView {
            is_get: method == Method::GET,
            path: raw_path,
            query: target.split_once('?').map(|(_, q)| q),
            headers,
        };
        let entrant = queue.entrant(&view, &host, Some(client_ip), tls, &mut queue_state);
        (queue, entrant)
    });

    let request_id = match request_id {
        Some(id) if peer_trusted && forwarded::acceptable_request_id(id) => {
            String::from_utf8_lossy(id).into_owned()
        }
        _ => request_ids.next(),
    };

    let mut wire = Vec::with_capacity(head.len() + 256 + body_len as usize);
    let mut keep = |bytes: &[u8]| {
        let at = wire.len();
        wire.extend_from_slice(bytes);
        at..wire.len()
    };
    let path = keep(raw_path.as_bytes());
    let accept = accept.map(&mut keep);
    let accept_language = accept_language.map(&mut keep);
    let head_start = wire.len();
    wire.extend_from_slice(method.as_str().as_bytes());
    wire.push(b' ');
    match &normalized.forward {
        std::borrow::Cow::Owned(path) => {
            wire.extend_from_slice(path.as_bytes());
            if let Some((_, query)) = target.split_once('?') {
                wire.push(b'?');
                wire.extend_from_slice(query.as_bytes());
            }
        }
        std::borrow::Cow::Borrowed(_) => wire.extend_from_slice(target.as_bytes()),
    }
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    for header in headers {
        let name = header.name;
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || name.eq_ignore_ascii_case(X_REQUEST_ID.as_str())
            || edits.edits(name)
        {
            continue;
        }
        push_line(&mut wire, name.as_bytes(), header.value);
    }
    wire.extend_from_slice(&edits.lines);
    edits.give_back();
    push_line(&mut wire, b"X-Request-Id", request_id.as_bytes());
    wire.extend_from_slice(b"\r\n");

    Some(Direct::Forward(Box::new(Plan {
        started,
        snapshot,
        route,
        upstream,
        wire,
        head_start,
        body_len: body_len as usize,
        safe,
        path,
        accept,
        accept_language,
        method,
        host,
        client_ip,
        request_id,
        keep_alive,
        shield: state,
        queue,
        queue_state,
    })))
}

fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Forwarding edits (`forwarded::edit_upstream`) as the edge writes them: the names edited,
/// whose incoming lines are not forwarded, and the lines set, in order.
struct WireEdits {
    names: [Option<HeaderName>; MAX_EDITS],
    count: usize,
    lines: Vec<u8>,
    /// More edits than `MAX_EDITS` (never, by the rules): the request goes to pingora.
    overflowed: bool,
}

/// Edits a request can get: X-Forwarded-For, -Proto, -Host, `Forwarded`, `X-Real-IP` and each
/// unvouched header once.
const MAX_EDITS: usize = 5 + forwarded::UNVOUCHED.len();

impl WireEdits {
    fn new() -> Self {
        WireEdits {
            names: [const { None }; MAX_EDITS],
            count: 0,
            lines: spare::take(256),
            overflowed: false,
        }
    }

    fn record(&mut self, name: &HeaderName) {
        match self.names.get_mut(self.count) {
            Some(slot) => {
                *slot = Some(name.clone());
                self.count += 1;
            }
            None => self.overflowed = true,
        }
    }

    /// Whether an incoming header of this name is edited.
    fn edits(&self, name: &str) -> bool {
        self.names[..self.count]
            .iter()
            .flatten()
            .any(|edited| name.eq_ignore_ascii_case(edited.as_str()))
    }

    fn give_back(self) {
        spare::give(self.lines);
    }
}

impl EditSink for WireEdits {
    fn set(&mut self, name: &HeaderName, value: &[u8]) {
        self.record(name);
        push_line(&mut self.lines, titled(name.as_str()).as_bytes(), value);
    }

    fn remove(&mut self, name: &HeaderName) {
        self.record(name);
    }
}

/// The values of the header `name` in a head (its lines after the first).
fn header_values<'h>(head: &'h [u8], name: &'h str) -> impl Iterator<Item = &'h [u8]> {
    head.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (line_name, value) = line.split_at(colon);
        line_name
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| value.get(1..).unwrap_or_default().trim_ascii())
    })
}

/// The name of a header Rempart sets, as pingora writes it.
fn titled(name: &str) -> &str {
    match name {
        "x-forwarded-for" => "X-Forwarded-For",
        "x-forwarded-proto" => "X-Forwarded-Proto",
        "x-forwarded-host" => "X-Forwarded-Host",
        "x-real-ip" => "X-Real-IP",
        "forwarded" => "Forwarded",
        other => other,
    }
}

/// How one try ended before anything went to the client.
enum TryError {
    Connect(ConnectFailure),
    /// Writing the request or reading the response failed (reset, closed, malformed).
    Exchange(&'static str),
    /// No response bytes within the read timeout.
    TimedOut,
    /// The client left while an interim answer (1xx) was written to it.
    ClientGone,
}

impl std::fmt::Display for TryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TryError::Connect(e) => e.fmt(f),
            TryError::Exchange(what) => f.write_str(what),
            TryError::TimedOut => f.write_str("no response in time"),
            TryError::ClientGone => f.write_str("the client left"),
        }
    }
}

impl TryError {
    fn outcome(&self) -> Outcome {
        match self {
            TryError::Connect(_) => Outcome::ConnectError,
            TryError::Exchange(_) | TryError::ClientGone => Outcome::Error,
            TryError::TimedOut => Outcome::Timeout,
        }
    }

    /// The answer's reason when this error ends the request (as `reason_of` decides it).
    fn reason(&self) -> Reason {
        match self {
            TryError::Connect(ConnectFailure::TimedOut) | TryError::TimedOut => {
                Reason::UpstreamTimeout
            }
            _ => Reason::UpstreamError,
        }
    }
}

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the server closes: sent chunked to the client.
    UntilClose,
    /// Until the server closes, with a coding the client reads as sent (a `Transfer-Encoding`
    /// that is not chunked): the client connection closes after it.
    RawUntilClose,
}

/// A response head read from the server, and what was read past it.
struct ResponseHead {
    status: u16,
    interim: bool,
    /// Bytes of the head in the buffer.
    len: usize,
    framing: Framing,
    /// The server keeps the connection open after this response.
    server_keeps: bool,
    /// The head as it goes to the client (without `Connection`, added when sent).
    client_head: Vec<u8>,
}

/// What the end of the request says for the log.
struct Ending {
    status: u16,
    reason: Option<Reason>,
}

/// The state of the request's tries.
struct Tries {
    tried: Vec<SocketAddr>,
    tally: Tally,
    /// The request can be sent again (`Plan::safe`).
    safe: bool,
    datacenter: Option<usize>,
    current: Option<InFlight>,
    try_started: Option<Instant>,
    upstream_ms: Option<f64>,
    /// A try was cut because its server went down.
    cut: bool,
    /// An interim answer (1xx) went to the client: the response has started.
    interim_sent: bool,
}

impl Tries {
    fn end_try(&mut self, upstream: &Upstream, outcome: Outcome, status: Option<u16>, blame: bool) {
        if let (Some(in_flight), Some(dc)) = (self.current.take(), self.datacenter) {
            upstream.observe(dc, in_flight.server(), outcome, status, blame);
        }
        if let Some(started) = self.try_started.take() {
            self.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    fn retry(&mut self, upstream: &Upstream, kind: RetryKind) -> bool {
        let replay = Replay {
            safe: self.safe,
            // The whole body is kept with the head.
            body_replayable: true,
            response_started: self.interim_sent,
        };
        self.tally.retry(upstream, kind, replay, &self.tried)
    }
}

/// Forward the planned request and write its response to the client. False: the client
/// connection is to be closed.
pub async fn forward<C>(runtime: &Runtime, mut plan: Box<Plan>, client: &mut C) -> bool
where
    C: Client,
{
    let _counted = RequestGuard::new(runtime.metrics.clone());
    let upstream = plan.upstream.clone();
    let mut tries = Tries {
        tried: Vec::new(),
        tally: Tally::default(),
        safe: plan.safe,
        datacenter: None,
        current: None,
        try_started: None,
        upstream_ms: None,
        cut: false,
        interim_sent: false,
    };
    if plan.body_len > 0 {
        if let Err(failure) = read_body(&mut plan, client).await {
            let ending = match failure {
                Some(reason) => fail(runtime, &plan, reason, client).await,
                // The client left: nobody to answer.
                None => Ending {
                    status: 0,
                    reason: None,
                },
            };
            log(runtime, &mut plan, &tries, &upstream, &ending);
            return false;
        }
    }
    if let Some((queue, entrant)) = plan.queue.take() {
        let mut pending = Vec::new();
        let admission = queue
            .admit(entrant, &mut plan.queue_state, || {
                Some(client_leaves(client, &mut pending))
            })
            .await;
        if !pending.is_empty() {
            client.unread(&pending);
        }
        match admission {
            Admission::Admitted => {}
            Admission::Answer(mut answer) => {
                // The waiting room, a full line, a poll's turn: the connection stays open.
                answer.close |= !plan.keep_alive || runtime.is_draining();
                let close = answer.close;
                let (ending, delivered) = write_answer(runtime, &plan, answer, client, close).await;
                log(runtime, &mut plan, &tries, &upstream, &ending);
                // An answer that did not go out whole ends the connection too.
                return delivered && !close;
            }
            Admission::Gone => {
                let ending = Ending {
                    status: 0,
                    reason: None,
                };
                log(runtime, &mut plan, &tries, &upstream, &ending);
                return false;
            }
        }
    }
    let start_ms = upstream.now_ms();
    upstream.record_request(start_ms);
    // The first choice is made at the request's start; a retry's at its own time.
    let mut first_now = Some(start_ms);
    let keep_alive = plan.keep_alive;
    let (ending, keep) = loop {
        let now = first_now.take().unwrap_or_else(|| upstream.now_ms());
        let pick = match upstream.choose(&tries.tried, now).await {
            Choice::Server(pick) => pick,
            Choice::AllDown => {
                let mut answer = Answer::new(Reason::Maintenance);
                answer.retry_after = Some(MAINTENANCE_RETRY_AFTER);
                let configured = plan.snapshot.config.pages.maintenance.as_ref();
                answer.page = Some(match configured {
                    Some(page) => Page::Configured(page.html.clone()),
                    None => Page::Builtin(Builtin::Maintenance {
                        retry_after: MAINTENANCE_RETRY_AFTER,
                    }),
                });
                break (
                    answer_client(runtime, &plan, answer, client, true).await,
                    false,
                );
            }
            Choice::Busy => {
                break (
                    fail(runtime, &plan, Reason::NoUpstream, client).await,
                    false,
                )
            }
            Choice::Exhausted if tries.tried.is_empty() => {
                break (
                    fail(runtime, &plan, Reason::NoUpstream, client).await,
                    false,
                )
            }
            Choice::Exhausted => {
                break (
                    fail(runtime, &plan, Reason::UpstreamError, client).await,
                    false,
                )
            }
        };
        let timeouts = &upstream.config.timeouts;
        let mut read_timeout = timeouts.response;
        let mut in_flight = pick.in_flight;
        tries.tried.push(pick.server.address);
        tries.datacenter = Some(pick.datacenter);
        if let Some(per_try) = timeouts.per_try {
            let last = tries.tally.reached >= upstream.config.retries.attempts
                || !upstream.has_another(&tries.tried, now);
            if tries.safe && !last {
                read_timeout = per_try.min(timeouts.response);
                in_flight.per_try = true;
            }
        }
        let per_try = in_flight.per_try;
        tries.current = Some(in_flight);
        tries.try_started = Some(Instant::now());

        let server = pick.server.address;
        let keepalive = upstream
            .config
            .timeouts
            .unacked
            .map(upstream::transport::keepalive);
        let exchange = send_and_read_head(
            &plan,
            server,
            &mut tries,
            timeouts.connect,
            keepalive.as_ref(),
            read_timeout,
            timeouts.response,
            client,
        )
        .await;
        let (stream, mut buffer, mut head) = match exchange {
            Ok(ok) => ok,
            Err(TryError::ClientGone) => {
                // The client's side failed: nobody to blame, nothing to retry or answer.
                tries.end_try(&upstream, Outcome::Error, None, false);
                break (
                    Ending {
                        status: 0,
                        reason: None,
                    },
                    false,
                );
            }
            Err(e) => {
                tracing::debug!(%server, error = %e, "a try failed");
                let outcome = e.outcome();
                tries.cut |= tries.current.as_ref().is_some_and(InFlight::was_cut);
                // A `per_try` expiry says the server is slow, not that it failed.
                let blame = !(per_try && outcome == Outcome::Timeout);
                tries.end_try(&upstream, outcome, None, blame);
                let kind = outcome.retry_kind().unwrap_or(RetryKind::Error);
                if tries.retry(&upstream, kind) {
                    continue;
                }
                let reason = if tries.cut {
                    Reason::UpstreamDown
                } else {
                    e.reason()
                };
                if tries.interim_sent {
                    // The response has started: the connection closes, without an answer.
                    break (
                        Ending {
                            status: 0,
                            reason: Some(reason),
                        },
                        false,
                    );
                }
                break (fail(runtime, &plan, reason, client).await, false);
            }
        };
        if (500..600).contains(&head.status) {
            tries.end_try(&upstream, Outcome::Http5xx, Some(head.status), true);
            if upstream::is_failure_status(head.status) && tries.retry(&upstream, RetryKind::Status)
            {
                // Nothing went to the client yet: this answer is dropped, another server tried.
                drop(stream);
                continue;
            }
        } else {
            tries.end_try(&upstream, Outcome::Ok, Some(head.status), true);
        }
        let status = head.status;
        if plan.queue_state.holds_slot() {
            // The queue's cookies: a pass earned, a ticket spent.
            let cookies = plan
                .queue_state
                .answer_cookies(status, header_values(&head.client_head, "set-cookie"));
            for cookie in cookies {
                push_line(&mut head.client_head, b"Set-Cookie", cookie.as_bytes());
            }
        }
        let relayed = relay(
            stream,
            &mut buffer,
            head,
            keep_alive && !runtime.is_draining(),
            read_timeout,
            client,
        )
        .await;
        if let Some(stream) = relayed.reusable {
            pool::put(server, stream, timeouts.idle, Instant::now());
        }
        spare::give(buffer);
        break (
            Ending {
                status,
                reason: relayed.failure,
            },
            relayed.client_keeps,
        );
    };
    log(runtime, &mut plan, &tries, &upstream, &ending);
    keep
}

/// Read the request body whole after its head, with the pipeline's rules: a read that brings
/// nothing for `BODY_STALL`, or a body slower than `body_min_rate` after its grace time, is
/// answered 408 (`Some(reason)`); a client that leaves is not answered (`None`). Nothing past
/// the body is read: a pipelined request stays for the next turn.
async fn read_body<C>(plan: &mut Plan, client: &mut C) -> Result<(), Option<Reason>>
where
    C: AsyncRead + Unpin,
{
    let end = plan.wire.len() + plan.body_len;
    plan.wire.reserve(plan.body_len);
    while plan.wire.len() < end {
        let left = (end - plan.wire.len()) as u64;
        let mut limited = (&mut *client).take(left);
        match tokio::time::timeout(BODY_STALL, limited.read_buf(&mut plan.wire)).await {
            Err(_) => return Err(Some(Reason::BodyTooSlow)),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(None),
            Ok(Ok(_)) => {}
        }
        let read = (plan.body_len - (end - plan.wire.len())) as u64;
        let checked =
            plan.snapshot
                .shield
                .check_body(read, plan.started.elapsed(), plan.wire.len() >= end);
        if let Err(e) = checked {
            return Err(Some(match e.etype() {
                pingora::ErrorType::HTTPStatus(413) => Reason::BodyTooLarge,
                _ => Reason::BodyTooSlow,
            }));
        }
    }
    Ok(())
}

/// Connect (or take a pooled connection), send the head, read the final response head; 1xx
/// answers on the way go to the client.
#[allow(clippy::too_many_arguments)]
async fn send_and_read_head<C>(
    plan: &Plan,
    server: SocketAddr,
    tries: &mut Tries,
    connect_timeout: Duration,
    keepalive: Option<&TcpKeepalive>,
    read_timeout: Duration,
    write_timeout: Duration,
    client: &mut C,
) -> Result<(TcpStream, Vec<u8>, ResponseHead), TryError>
where
    C: AsyncWrite + Unpin,
{
    // A pooled connection the server closed just as it was taken fails before any byte of a
    // response: a request that can be sent again is, on a new connection to the same server,
    // once (pingora's own rule for reused connections); one that cannot (a POST) fails, as in
    // the pipeline. Not when the try was cut: its server is down, and the pipeline's rules
    // decide.
    let now = tries.try_started.unwrap_or_else(Instant::now);
    if let Some(stream) = pool::take(server, now) {
        match exchange(plan, stream, tries, read_timeout, write_timeout, client).await {
            Err(Failed {
                answered: false,
                error: TryError::Exchange(_),
            }) if tries.safe && !tries.current.as_ref().is_some_and(InFlight::was_cut) => {}
            other => return other.map_err(|f| f.error),
        }
    }
    let stream = pool::connect(server, connect_timeout, keepalive)
        .await
        .map_err(TryError::Connect)?;
    // An abandoned request is dropped by the kernel, never delivered later.
    upstream::transport::abortive_close(std::os::fd::AsRawFd::as_raw_fd(&stream));
    exchange(plan, stream, tries, read_timeout, write_timeout, client)
        .await
        .map_err(|f| f.error)
}

/// A try that failed on a connection, and whether any response byte had come.
struct Failed {
    answered: bool,
    error: TryError,
}

/// Send the head on this connection and read the final response head.
async fn exchange<C>(
    plan: &Plan,
    mut stream: TcpStream,
    tries: &mut Tries,
    read_timeout: Duration,
    write_timeout: Duration,
    client: &mut C,
) -> Result<(TcpStream, Vec<u8>, ResponseHead), Failed>
where
    C: AsyncWrite + Unpin,
{
    let fail = |error| Failed {
        answered: false,
        error,
    };
    if let Some(current) = tries.current.as_mut() {
        current.connected(std::os::fd::AsRawFd::as_raw_fd(&stream));
    }
    match tokio::time::timeout(
        write_timeout,
        stream.write_all(plan.wire.get(plan.head_start..).unwrap_or_default()),
    )
    .await
    {
        Err(_) => return Err(fail(TryError::TimedOut)),
        Ok(Err(_)) => return Err(fail(TryError::Exchange("writing the request failed"))),
        Ok(Ok(())) => {}
    }
    let head_request = plan.method == Method::HEAD;
    let mut buffer = spare::take(READ_BYTES);
    let mut answered = false;
    loop {
        let failed = move |error| Failed { answered, error };
        // Heads already read (several 1xx and the final one may come in one read).
        while !buffer.is_empty() {
            match parse_response(&buffer, head_request).map_err(failed)? {
                None => break,
                Some(head) if head.interim => {
                    // 100 Continue, 103 Early Hints: passed on as they came.
                    let forwarded = client.write_all(&head.client_head).await.is_ok()
                        && client.flush().await.is_ok();
                    buffer.drain(..head.len);
                    if !forwarded {
                        return Err(failed(TryError::ClientGone));
                    }
                    tries.interim_sent = true;
                }
                Some(head) => return Ok((stream, buffer, head)),
            }
        }
        if buffer.len() >= MAX_RESPONSE_HEAD {
            return Err(failed(TryError::Exchange("the response head is too large")));
        }
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(READ_BYTES.min(MAX_RESPONSE_HEAD - buffer.len()).max(1));
        }
        match tokio::time::timeout(read_timeout, stream.read_buf(&mut buffer)).await {
            Err(_) => return Err(failed(TryError::TimedOut)),
            Ok(Err(_)) => return Err(failed(TryError::Exchange("reading the response failed"))),
            Ok(Ok(0)) => {
                return Err(failed(TryError::Exchange(
                    "the server closed the connection",
                )))
            }
            Ok(Ok(_)) => answered = true,
        }
    }
}

/// The response head at the start of `buffer`, if complete.
fn parse_response(buffer: &[u8], head_request: bool) -> Result<Option<ResponseHead>, TryError> {
    // Left uninitialised (8 KiB): httparse fills what it parses.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    let len = match config.parse_response_with_uninit_headers(&mut response, buffer, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(TryError::Exchange("a malformed response head")),
    };
    let status = response.code.ok_or(TryError::Exchange("no status"))?;
    let version = response.version.unwrap_or(1);
    let interim = (100..200).contains(&status) && status != 101;
    let headers: &[httparse::Header<'_>] = response.headers;

    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut chunked = false;
    let mut coded = false;
    let mut server_close = false;
    let mut server_keep_alive = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            for part in header.value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                let digits = !part.is_empty() && part.iter().all(u8::is_ascii_digit);
                let value = std::str::from_utf8(part)
                    .ok()
                    .and_then(|p| p.parse::<u64>().ok());
                match value {
                    Some(v) if digits && length.is_none_or(|l| l == v) => length = Some(v),
                    _ => bad_length = true,
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            chunked = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            let value = header.value.trim_ascii();
            server_keep_alive |= value.eq_ignore_ascii_case(b"keep-alive");
            server_close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    // Beside Transfer-Encoding, Content-Length is dropped, whatever it says.
    if bad_length && !coded {
        return Err(TryError::Exchange("an invalid Content-Length"));
    }
    if status < 100 {
        return Err(TryError::Exchange("a status below 100"));
    }
    if status == 101 {
        return Err(TryError::Exchange("an upgrade the request did not ask for"));
    }
    let framing = if interim || status == 204 || status == 304 || head_request {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if coded {
        Framing::RawUntilClose
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    let server_keeps = !server_close
        && !interim
        && status != 101
        && if version == 0 {
            server_keep_alive && !coded
        } else {
            true
        }
        && !matches!(framing, Framing::UntilClose | Framing::RawUntilClose)
        // A length beside a coding is ambiguous framing (RFC 9112, 6.3): not trusted again.
        && !(coded && (length.is_some() || bad_length));

    // Room for the body bytes read with the head, which follow it to the client.
    let mut client_head = spare::take(buffer.len() + 128);
    let rechunk = framing == Framing::UntilClose;
    client_head.extend_from_slice(if version == 0 && !rechunk {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    let mut code = itoa::Buffer::new();
    client_head.extend_from_slice(code.format(status).as_bytes());
    client_head.push(b' ');
    client_head.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    client_head.extend_from_slice(b"\r\n");
    for header in headers {
        let name = header.name;
        let dropped = !interim
            && (name.eq_ignore_ascii_case("date")
                || name.eq_ignore_ascii_case("connection")
                || (coded && name.eq_ignore_ascii_case("content-length")));
        if dropped {
            continue;
        }
        client_head.extend_from_slice(name.as_bytes());
        client_head.extend_from_slice(b": ");
        // A folded line goes on as one line.
        if memchr::memchr2(b'\r', b'\n', header.value).is_some() {
            client_head.extend(header.value.iter().map(|&b| {
                if b == b'\r' || b == b'\n' {
                    b' '
                } else {
                    b
                }
            }));
        } else {
            client_head.extend_from_slice(header.value);
        }
        client_head.extend_from_slice(b"\r\n");
    }
    if !interim {
        if rechunk {
            client_head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        client_head.put_slice(b"Date: ");
        client_head.put_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
        client_head.put_slice(b"\r\n");
    } else {
        client_head.extend_from_slice(b"\r\n");
    }
    Ok(Some(ResponseHead {
        status,
        interim,
        len,
        framing,
        server_keeps,
        client_head,
    }))
}

/// How the relay of a response ended.
struct Relayed {
    /// The server connection, when it can take another request.
    reusable: Option<TcpStream>,
    /// The client connection can take another request.
    client_keeps: bool,
    /// Why the body stopped short, when the server's side failed (for the log).
    failure: Option<Reason>,
}

/// Send the response head and body to the client.
async fn relay<C>(
    mut stream: TcpStream,
    buffer: &mut Vec<u8>,
    mut head: ResponseHead,
    keep_alive: bool,
    read_timeout: Duration,
    client: &mut C,
) -> Relayed
where
    C: AsyncWrite + Unpin,
{
    let client_keeps = keep_alive && head.framing != Framing::RawUntilClose;
    head.client_head.extend_from_slice(if client_keeps {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    buffer.drain(..head.len);
    let failed = |failure| Relayed {
        reusable: None,
        client_keeps: false,
        failure,
    };
    let bad = Some(Reason::UpstreamError);
    let mut out = head.client_head;
    let mut body = Body::new(head.framing);
    let mut done = body.take(buffer, &mut out);
    let Ok(mut finished) = done else {
        let _ = client.write_all(&out).await;
        return failed(bad);
    };
    loop {
        if !out.is_empty() {
            if client.write_all(&out).await.is_err() {
                return failed(None);
            }
            out.clear();
        }
        if finished {
            break;
        }
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(READ_BYTES);
        }
        let read = tokio::time::timeout(read_timeout, read_some(&mut stream, buffer)).await;
        let ended = match read {
            Ok(Ok(0)) => true,
            Ok(Ok(_)) => false,
            Err(_) => {
                // The body stops here: what went out stays, the client connection closes.
                let _ = client.flush().await;
                return failed(Some(Reason::UpstreamTimeout));
            }
            Ok(Err(_)) => {
                let _ = client.flush().await;
                return failed(bad);
            }
        };
        if ended {
            match body.end(&mut out) {
                Ok(()) => {
                    if client.write_all(&out).await.is_err() {
                        return failed(None);
                    }
                    let _ = client.flush().await;
                    return Relayed {
                        reusable: None,
                        client_keeps: client_keeps && body.is_framed_for_client(),
                        failure: None,
                    };
                }
                Err(()) => {
                    let _ = client.flush().await;
                    return failed(bad);
                }
            }
        }
        done = body.take(buffer, &mut out);
        match done {
            Ok(f) => finished = f,
            Err(()) => {
                let _ = client.write_all(&out).await;
                let _ = client.flush().await;
                return failed(bad);
            }
        }
    }
    spare::give(out);
    if client.flush().await.is_err() {
        return failed(None);
    }
    // Bytes past the end of the response: the connection is not to be trusted again.
    let reusable = (head.server_keeps && buffer.is_empty()).then_some(stream);
    Relayed {
        reusable,
        client_keeps,
        failure: None,
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    stream.read_buf(buffer).await
}

/// Buffers of a worker thread kept between requests (the server's bytes, what goes to the
/// client): a request takes them instead of allocating 16 KiB. A few per thread, none larger
/// than `KEPT_BYTES`, so a response that needed a large one does not keep it.
mod spare {
    use std::cell::RefCell;

    const KEPT: usize = 4;
    const KEPT_BYTES: usize = 64 * 1024;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer with room for at least `bytes`.
    pub(super) fn take(bytes: usize) -> Vec<u8> {
        let kept = SPARE.with(|spare| spare.borrow_mut().pop());
        match kept {
            Some(mut buffer) => {
                buffer.reserve(bytes);
                buffer
            }
            None => Vec::with_capacity(bytes),
        }
    }

    /// A buffer done with, kept for the next request when there is room.
    pub(super) fn give(mut buffer: Vec<u8>) {
        if buffer.capacity() > KEPT_BYTES {
            return;
        }
        buffer.clear();
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEPT {
                spare.push(buffer);
            }
        });
    }
}

/// A response body on its way: how much is left, and what the client is sent.
struct Body {
    framing: Framing,
    left: u64,
    chunk: ChunkState,
    trailers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Body {
    fn new(framing: Framing) -> Self {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: ChunkState::Size,
            trailers: 0,
        }
    }

    /// Whether the client can tell where this body ended (it can keep its connection).
    fn is_framed_for_client(&self) -> bool {
        self.framing != Framing::RawUntilClose
    }

    /// Move what `input` holds of the body into `out` (as the client is sent it); true when
    /// the body is complete. What follows the body stays in `input`.
    fn take(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, ()> {
        match self.framing {
            Framing::None => Ok(true),
            Framing::Length(_) => {
                let n = (input.len() as u64).min(self.left) as usize;
                out.extend_from_slice(&input[..n]);
                input.drain(..n);
                self.left -= n as u64;
                Ok(self.left == 0)
            }
            Framing::RawUntilClose => {
                out.extend_from_slice(input);
                input.clear();
                Ok(false)
            }
            Framing::UntilClose => {
                if !input.is_empty() {
                    push_chunk(out, input);
                    input.clear();
                }
                Ok(false)
            }
            Framing::Chunked => {
                let consumed = self.dechunk(input, out)?;
                input.drain(..consumed);
                Ok(self.chunk == ChunkState::Done)
            }
        }
    }

    /// The server closed: the end of a body read until close, an error for any other.
    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        match self.framing {
            Framing::UntilClose => {
                out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            Framing::RawUntilClose => Ok(()),
            _ => Err(()),
        }
    }

    /// Decode chunks from `input` into `out`, encoded again; the bytes consumed.
    fn dechunk(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ()> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.chunk {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        at += n;
                        self.chunk = ChunkState::Trailers;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        self.chunk = ChunkState::Data(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_CHUNK_LINE => return Ok(at),
                    _ => return Err(()),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = (rest.len() as u64).min(left) as usize;
                    push_chunk(out, &rest[..n]);
                    at += n;
                    self.chunk = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(());
                    }
                    at += 2;
                    self.chunk = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Trailer lines are read and dropped (as pingora does), then the end.
                    let Some(line) = rest.iter().position(|&b| b == b'\n') else {
                        if self.trailers + rest.len() > MAX_TRAILERS {
                            return Err(());
                        }
                        return Ok(at);
                    };
                    self.trailers += line + 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(());
                    }
                    let empty = line == 0 || (line == 1 && rest[0] == b'\r');
                    at += line + 1;
                    if empty {
                        out.extend_from_slice(b"0\r\n\r\n");
                        self.chunk = ChunkState::Done;
                    }
                }
            }
        }
    }
}

fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    let _ = write!(out, "{:X}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Answer the client with one of Rempart's answers (it closes the connection).
async fn fail<C>(runtime: &Runtime, plan: &Plan, reason: Reason, client: &mut C) -> Ending
where
    C: AsyncWrite + Unpin,
{
    let mut answer = Answer::new(reason);
    if reason == Reason::NoUpstream {
        answer.retry_after = Some(5);
    }
    answer_client(runtime, plan, answer, client, true).await
}

/// Write one of Rempart's answers. `close`: the connection closes after it (always after a
/// failed proxy attempt, as in the pipeline).
async fn answer_client<C>(
    runtime: &Runtime,
    plan: &Plan,
    answer: Answer,
    client: &mut C,
    close: bool,
) -> Ending
where
    C: AsyncWrite + Unpin,
{
    write_answer(runtime, plan, answer, client, close).await.0
}

/// [`answer_client`], and whether the answer reached the client whole.
async fn write_answer<C>(
    runtime: &Runtime,
    plan: &Plan,
    mut answer: Answer,
    client: &mut C,
    close: bool,
) -> (Ending, bool)
where
    C: AsyncWrite + Unpin,
{
    answer.close = close;
    runtime.metrics.count_generated(answer.reason);
    let part = |range: &Option<Range<usize>>| range.clone().and_then(|r| plan.wire.get(r));
    let accept = part(&plan.accept);
    let accept_language = part(&plan.accept_language);
    let (bytes, status) = early::wire(&answer, &plan.method, accept, accept_language);
    let delivered = client.write_all(&bytes).await.is_ok() && client.flush().await.is_ok();
    let ending = Ending {
        status,
        reason: Some(answer.reason),
    };
    (ending, delivered)
}

/// The metrics and access-log line of a forwarded request, as the pipeline's `logging`.
fn log(runtime: &Runtime, plan: &mut Plan, tries: &Tries, upstream: &Upstream, ending: &Ending) {
    let elapsed = plan.started.elapsed();
    if plan.queue_state.holds_slot() {
        // The slot goes back, with the server's latency as a sample for the adaptive limit.
        let datacenter = tries
            .datacenter
            .and_then(|dc| upstream.datacenters.get(dc))
            .map(|dc| dc.name.as_str());
        plan.queue_state
            .finish(tries.upstream_ms, ending.status, datacenter);
    }
    let metrics = &runtime.metrics;
    metrics.requests_answered.fetch_add(1, Ordering::Relaxed);
    if ending.status >= 500 {
        metrics.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let route = plan.snapshot.routes.get(plan.route);
    if let Some(route) = route {
        route.metrics.count(ending.status);
        route.metrics.duration.observe(elapsed.as_secs_f64());
    }
    if !runtime.access_log.enabled() {
        return;
    }
    let datacenter = tries
        .datacenter
        .and_then(|dc| upstream.datacenters.get(dc))
        .map_or("", |dc| dc.name.as_str());
    let path = plan
        .wire
        .get(plan.path.clone())
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("");
    let record = AccessRecord {
        time: SystemTime::now(),
        client_ip: Some(plan.client_ip),
        method: plan.method.as_str(),
        host: &plan.host,
        path,
        status: ending.status,
        route: route.map_or("", |r| r.route.name.as_str()),
        upstream: upstream.name.as_str(),
        datacenter,
        server: tries.tried.last().copied(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_ms: tries.upstream_ms,
        queue_ms: plan.queue_state.queue_ms(),
        retries: tries.tally.retries,
        reason: ending.reason.map(Reason::as_str),
        limit: plan
            .shield
            .limit
            .as_deref()
            .or(plan.shield.dry_run.as_deref()),
        request_id: &plan.request_id,
    };
    runtime.log_access(&record);
}
