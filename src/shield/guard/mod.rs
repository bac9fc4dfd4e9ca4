//! The connection guard: what one client connection may hold and for how long, whatever its
//! protocol. It wraps the client stream (inside TLS, so it sees HTTP bytes) and enforces:
//!
//! - HTTP/1: the whole request head within `header_timeout` (from the first byte of the request,
//!   or from accept for the first one) and within `max_header_bytes`, leading empty lines
//!   counted; a head is handed to pingora only once complete, so a slow or oversized head never
//!   reaches the parser, which would buffer up to 1 MiB of it; the idle time between keep-alive
//!   requests (`keepalive_timeout`); the idle time of an upgraded connection
//!   (`upgrade_idle_timeout`).
//! - HTTP/2: the preface, SETTINGS and first HEADERS within `header_timeout` of the handshake,
//!   every later header block within `header_timeout` of its first byte, and floods of frames
//!   that carry no request (`h2`); an offending connection gets a GOAWAY, written between two of
//!   the server's frames, and is closed.
//!
//! The guard shares a [`Control`] with whoever owns the connection: the edge (keep-alive), the
//! pipeline (upgrade, deny) and the drain (heads in progress).

mod control;
pub mod h1;
pub mod h2;
mod registry;

pub use control::{current, with_connection, CloseReason, Control, GuardReport};
use control::{BODY, HEAD, UPGRADED};
pub use registry::{Registered, Registry};

use std::future::Future;
use std::io::{Error, ErrorKind};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use h1::{HeadScanner, Scan};
use h2::{FrameReader, FrameWriter};

/// The limits a guard enforces, from `server:`.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub upgrade_idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// How a wait for an HTTP/1 request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A whole request head is there.
    Head,
    /// The connection is to be closed.
    Close,
    /// A keep-alive connection stayed idle for the time asked (`wait_request_or_idle`): no
    /// byte of a new request, nothing buffered. Its keep-alive ends at this instant.
    Idle(Instant),
}

/// What the guard writes when it ends a connection, and how far it got.
struct Closing {
    reason: CloseReason,
    /// Bytes to write first (a 408, a 431, a GOAWAY), possibly none.
    out: Vec<u8>,
    written: usize,
    /// HTTP/2: give up on a GOAWAY after this (the server is in the middle of a frame).
    give_up: Instant,
    done: bool,
}

enum Protocol {
    H1 {
        scanner: HeadScanner,
        /// Head bytes read but not yet given to pingora (a head is given whole), then what
        /// follows them in the same reads.
        stash: Vec<u8>,
        /// The stash holds a complete head.
        complete: bool,
        /// Some of the head was given to pingora (it parsed from there).
        delivered: bool,
    },
    H2 {
        reader: FrameReader,
        writer: FrameWriter,
        /// The deadline was armed for the head under way.
        timing: bool,
    },
}

/// A client connection under the guard.
pub struct Guard {
    inner: Stream,
    protocol: Protocol,
    settings: GuardSettings,
    control: Arc<Control>,
    /// Where the counts go, and whether a head is counted there.
    report: Report,
    sleep: Pin<Box<Sleep>>,
    /// When the running deadline expires; None: no deadline.
    deadline: Option<Instant>,
    /// Upgraded connections: the last byte in either direction.
    last_activity: Instant,
    /// A request head was handed to pingora on this connection.
    served: bool,
    /// The end of the keep-alive wait, while a shorter idle wait runs before it
    /// (`wait_request_or_idle`), or that a resumed connection still has.
    keepalive_until: Option<Instant>,
    closing: Option<Closing>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("inner", &self.inner)
            .field("deadline", &self.deadline)
            .finish()
    }
}

const ANSWER_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 99\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n408 header_timeout\nLa requ\xc3\xaate est arriv\xc3\xa9e trop lentement. / The request head arrived too slowly.\n";
const ANSWER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 80\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n431 headers_too_large\nEn-t\xc3\xaates trop volumineux. / Request headers too large.\n";

/// Bytes read at once while a head is stashed.
const READ_CHUNK: usize = 4096;

/// During a drain, how long a connection that has not sent its first request yet may take to
/// start it (at most its head deadline) before it is closed without a word.
const FIRST_HEAD_DRAIN_WAIT: Duration = Duration::from_secs(2);

fn aborted(reason: CloseReason) -> Error {
    Error::new(ErrorKind::ConnectionAborted, reason.as_str())
}

impl Guard {
    /// Guard a new connection (after its TLS handshake). The first head's deadline runs from
    /// now.
    pub fn new(
        inner: Stream,
        settings: GuardSettings,
        report: Arc<dyn GuardReport>,
    ) -> (Guard, Arc<Control>) {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        Self::with_protocol(inner, h2, settings, report)
    }

    fn with_protocol(
        inner: Stream,
        h2: bool,
        settings: GuardSettings,
        report: Arc<dyn GuardReport>,
    ) -> (Guard, Arc<Control>) {
        let now = Instant::now();
        let deadline = now + settings.header_timeout;
        let protocol = if h2 {
            Protocol::H2 {
                reader: FrameReader::new(settings.max_header_bytes),
                writer: FrameWriter::default(),
                timing: true,
            }
        } else {
            Protocol::H1 {
                scanner: HeadScanner::new(),
                stash: Vec::new(),
                complete: false,
                delivered: false,
            }
        };
        let control = Arc::new(Control::new());
        let guard = Guard {
            inner,
            protocol,
            settings,
            control: control.clone(),
            report: Report {
                to: report,
                head_counted: false,
            },
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline: Some(deadline),
            last_activity: now,
            served: false,
            keepalive_until: None,
            closing: None,
        };
        (guard, control)
    }

    /// Guard a keep-alive connection again, between two requests, after it was parked idle
    /// (`into_stream`): its next wait is for a request after one already served, until its
    /// keep-alive ends at `keepalive_until`.
    pub fn resumed(
        inner: Stream,
        settings: GuardSettings,
        report: Arc<dyn GuardReport>,
        keepalive_until: Instant,
    ) -> (Guard, Arc<Control>) {
        let (mut guard, control) = Self::with_protocol(inner, false, settings, report);
        guard.served = true;
        guard.keepalive_until = Some(keepalive_until);
        (guard, control)
    }

    /// The stream of an idle HTTP/1 keep-alive connection (after `Wait::Idle`), out of its
    /// guard; the guard back if anything of a request is there.
    pub fn into_stream(self: Box<Self>) -> Result<Stream, Box<Self>> {
        match &self.protocol {
            Protocol::H1 { stash, scanner, .. }
                if stash.is_empty()
                    && scanner.bytes() == 0
                    && self.closing.is_none()
                    && !self.report.head_counted => {}
            _ => return Err(self),
        }
        let guard = *self;
        Ok(guard.inner)
    }

    /// The limits this guard enforces.
    pub fn settings(&self) -> GuardSettings {
        self.settings
    }

    /// Whether this is an HTTP/2 connection.
    pub fn is_h2(&self) -> bool {
        matches!(self.protocol, Protocol::H2 { .. })
    }

    fn set_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            if self.deadline != Some(at) {
                self.sleep.as_mut().reset(at);
            }
        }
        self.deadline = at;
    }

    /// Whether the running deadline has passed (registers the timer when it has not).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.is_some() && self.sleep.as_mut().poll(cx).is_ready()
    }

    fn count_head(&mut self, on: bool) {
        if on != self.report.head_counted {
            self.report.head_counted = on;
            let delta = if on { 1 } else { -1 };
            self.report
                .to
                .heads_in_progress()
                .fetch_add(delta, Ordering::AcqRel);
        }
    }

    /// Start ending the connection for `reason`.
    fn close(&mut self, reason: CloseReason) {
        if self.closing.is_some() {
            return;
        }
        self.count_head(false);
        self.report.to.closed(reason);
        let out = match (&self.protocol, reason) {
            (
                Protocol::H1 {
                    scanner, delivered, ..
                },
                CloseReason::HeaderTimeout,
            ) if scanner.bytes() > 0 && !*delivered => {
                self.report.to.answered(reason);
                ANSWER_408.to_vec()
            }
            (Protocol::H1 { delivered, .. }, CloseReason::HeadersTooLarge) if !*delivered => {
                self.report.to.answered(reason);
                ANSWER_431.to_vec()
            }
            (Protocol::H2 { reader, .. }, reason) => {
                let code = match reason {
                    CloseReason::H2HeaderTimeout | CloseReason::KeepaliveTimeout => h2::NO_ERROR,
                    CloseReason::H2BadPreface => h2::PROTOCOL_ERROR,
                    _ => h2::ENHANCE_YOUR_CALM,
                };
                h2::goaway(reader.last_stream, code).to_vec()
            }
            _ => Vec::new(),
        };
        tracing::debug!(reason = reason.as_str(), "closing a client connection");
        self.deadline = None;
        self.closing = Some(Closing {
            reason,
            out,
            written: 0,
            give_up: Instant::now() + h2::GOAWAY_GRACE,
            done: false,
        });
    }

    /// A close requested through the control. An HTTP/1 request under way finishes first
    /// (its answer closes the connection); the close comes before the next one.
    fn take_kill(&mut self) {
        let code = self.control.kill.load(Ordering::Acquire);
        if code != 0 && !self.is_h2() && self.control.phase.load(Ordering::Acquire) == BODY {
            return;
        }
        if code != 0 && self.closing.is_none() {
            if let Some(reason) = CloseReason::from_u8(code) {
                self.close(reason);
            }
        }
    }

    /// Write what the closing has to say; Ready once it is written (or cannot be).
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(closing) = self.closing.as_mut() else {
            return Poll::Ready(());
        };
        if closing.done {
            return Poll::Ready(());
        }
        if let Protocol::H2 { writer, .. } = &self.protocol {
            if !writer.at_boundary() && closing.written == 0 {
                // The server is in the middle of a frame: let it finish (poll_write lets
                // through the rest of that frame only), for a while.
                if Instant::now() >= closing.give_up {
                    closing.done = true;
                    return Poll::Ready(());
                }
                self.sleep.as_mut().reset(closing.give_up);
                if self.sleep.as_mut().poll(cx).is_ready() {
                    closing.done = true;
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
        }
        while closing.written < closing.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &closing.out[closing.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    closing.done = true;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => closing.written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                closing.done = true;
                Poll::Ready(())
            }
        }
    }

    /// What reads answer once the connection is being closed: nothing more (an EOF) while
    /// pingora has seen none of the current head, so that it closes without a word, else an
    /// error.
    fn closed_read(&self) -> Poll<std::io::Result<()>> {
        let reason = self
            .closing
            .as_ref()
            .map_or(CloseReason::HeaderTimeout, |c| c.reason);
        match &self.protocol {
            Protocol::H1 { delivered, .. } if !*delivered => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(aborted(reason))),
        }
    }

    /// HTTP/1 keep-alive and the first request: wait until a whole request head has arrived
    /// (it is kept, and given to pingora on its first read), within `header_timeout` once its
    /// first byte came and `keepalive_timeout` before. `first`: the connection's first request,
    /// whose head deadline started at accept. False: the connection is to be closed (the
    /// client left, a deadline passed, the head is too large, or the process drains and no
    /// head is under way).
    pub async fn wait_request(
        &mut self,
        first: bool,
        draining: &tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        self.wait_request_or_idle(first, draining, None).await == Wait::Head
    }

    /// `wait_request`, except that a keep-alive connection (not `first`) that stays idle for
    /// `idle`, with no byte of a new request, ends the wait as `Wait::Idle` (its keep-alive
    /// deadline not passed yet).
    pub async fn wait_request_or_idle(
        &mut self,
        first: bool,
        draining: &tokio::sync::watch::Receiver<bool>,
        idle: Option<Duration>,
    ) -> Wait {
        if !first {
            self.control.phase.store(HEAD, Ordering::Release);
            let mut leftover = false;
            if let Protocol::H1 {
                scanner,
                stash,
                complete,
                delivered,
            } = &mut self.protocol
            {
                *scanner = HeadScanner::new();
                *complete = false;
                *delivered = false;
                // Bytes of the next request read with the previous one stay, and are scanned.
                leftover = !stash.is_empty();
            }
            let now = Instant::now();
            let until = self
                .keepalive_until
                .take()
                .unwrap_or(now + self.settings.keepalive_timeout);
            match idle.map(|idle| now + idle) {
                Some(idle_at) if idle_at < until && !leftover => {
                    self.keepalive_until = Some(until);
                    self.set_deadline(Some(idle_at));
                }
                _ => self.set_deadline(Some(until)),
            }
            if leftover && !self.scan_from(0) {
                return Wait::Close;
            }
        }
        let mut draining = draining.clone();
        loop {
            let drain_now = *draining.borrow();
            let outcome = std::future::poll_fn(|cx| self.poll_head(cx, drain_now));
            tokio::select! {
                ready = outcome => return ready,
                changed = draining.changed(), if !drain_now => {
                    if changed.is_err() {
                        return Wait::Close;
                    }
                }
            }
        }
    }

    /// HTTP/1: the complete request head waiting to be handed over, if there is one.
    pub fn complete_head(&self) -> Option<&[u8]> {
        match &self.protocol {
            Protocol::H1 {
                scanner,
                stash,
                complete: true,
                delivered: false,
            } => stash.get(..scanner.bytes()),
            _ => None,
        }
    }

    /// HTTP/1: the complete head was answered by the edge itself: it leaves the stash (what
    /// followed it stays, for the next request) and the connection is between requests, as
    /// after a request served by pingora.
    pub fn answered_head(&mut self) {
        if let Protocol::H1 {
            scanner,
            stash,
            complete: true,
            delivered: false,
        } = &mut self.protocol
        {
            let bytes = scanner.bytes().min(stash.len());
            stash.drain(..bytes);
            if stash.is_empty() {
                *stash = Vec::new();
            }
            self.control.phase.store(BODY, Ordering::Release);
            self.count_head(false);
            self.deadline = None;
            self.served = true;
        }
    }

    /// HTTP/1: bytes of the next request that pingora read with the previous one (a pipelined
    /// request), put back in front of the stash, where the next `wait_request` scans them as
    /// any head: with its deadline and its size limit.
    pub fn unread(&mut self, bytes: &[u8]) {
        if let Protocol::H1 { stash, .. } = &mut self.protocol {
            stash.splice(0..0, bytes.iter().copied());
        }
    }

    /// Scan the stashed bytes from `from` on (they just arrived); false when the connection is
    /// to be closed.
    fn scan_from(&mut self, from: usize) -> bool {
        let Protocol::H1 {
            scanner,
            stash,
            complete,
            ..
        } = &mut self.protocol
        else {
            return true;
        };
        let was_empty = scanner.bytes() == 0;
        let ended = *complete || matches!(scanner.feed(&stash[from..]), Scan::Ends(_));
        *complete = ended;
        let bytes = scanner.bytes();
        if was_empty && bytes > 0 {
            self.count_head(true);
            // A head under way: no idle end to the wait any more.
            self.keepalive_until = None;
            // After a keep-alive wait, the head has its own deadline from its first byte;
            // the first head's deadline started at accept.
            if self.served {
                self.set_deadline(Some(Instant::now() + self.settings.header_timeout));
            }
        }
        if bytes > self.settings.max_header_bytes {
            self.close(CloseReason::HeadersTooLarge);
            return false;
        }
        true
    }

    /// Read more of the head into the stash (its spare room: the bytes are copied once, into
    /// pingora's buffer when the head is complete). The number of bytes read, 0 at the end of
    /// the stream.
    fn read_into_stash(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Protocol::H1 { stash, .. } = &mut self.protocol else {
            return Poll::Ready(Ok(0));
        };
        // Into uninitialised spare room: nothing is zeroed first.
        stash.reserve(READ_CHUNK);
        let result = tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, stash);
        if stash.is_empty() {
            // Nothing kept while idle.
            *stash = Vec::new();
        }
        result
    }

    /// Poll until the stash holds a whole head.
    fn poll_head(&mut self, cx: &mut Context<'_>, draining: bool) -> Poll<Wait> {
        loop {
            if self.closing.is_some() {
                return self.poll_closing(cx).map(|()| Wait::Close);
            }
            self.take_kill();
            if self.closing.is_some() {
                continue;
            }
            let (complete, started) = match &self.protocol {
                Protocol::H1 {
                    complete, scanner, ..
                } => (*complete, scanner.bytes() > 0),
                Protocol::H2 { .. } => return Poll::Ready(Wait::Head),
            };
            if complete {
                return Poll::Ready(Wait::Head);
            }
            if draining && !started {
                if self.served {
                    // An idle keep-alive connection: closed, its client opens another; unless
                    // its next request is in the socket already (sent before the drain, or
                    // read only now by a connection served again after a park): that head
                    // is under way, and finishes.
                    let before = match &self.protocol {
                        Protocol::H1 { stash, .. } => stash.len(),
                        Protocol::H2 { .. } => 0,
                    };
                    match self.read_into_stash(cx) {
                        Poll::Ready(Ok(n)) if n > 0 => {
                            self.scan_from(before);
                            // As a first head at a drain: a moment, not a whole head deadline.
                            let limit = Instant::now() + FIRST_HEAD_DRAIN_WAIT;
                            if self.deadline.is_none_or(|at| at > limit) {
                                self.set_deadline(Some(limit));
                            }
                            continue;
                        }
                        _ => {
                            self.count_head(false);
                            return Poll::Ready(Wait::Close);
                        }
                    }
                }
                // A connection accepted before the drain whose first request has not been read:
                // it is on its way, often already in the socket. Closing now would reset the
                // client (and an upgrade's old process would drop requests the new one never
                // sees): wait a moment for the head, counted in what the drain waits for.
                self.count_head(true);
                let limit = Instant::now() + FIRST_HEAD_DRAIN_WAIT;
                if self.deadline.is_none_or(|at| at > limit) {
                    self.set_deadline(Some(limit));
                }
            }
            self.control.waker.register(cx.waker());
            if self.deadline_passed(cx) {
                if let (false, Some(until)) = (started, self.keepalive_until.take()) {
                    // The idle time asked passed, not the keep-alive.
                    self.deadline = None;
                    return Poll::Ready(Wait::Idle(until));
                }
                // A head under way gets a 408; a connection that sent nothing is closed without
                // a word (as NGINX does), counted as a header timeout when it never sent a
                // request, else as the end of a keep-alive wait.
                let reason = if started || !self.served {
                    CloseReason::HeaderTimeout
                } else {
                    CloseReason::KeepaliveTimeout
                };
                self.close(reason);
                continue;
            }
            let before = match &self.protocol {
                Protocol::H1 { stash, .. } => stash.len(),
                Protocol::H2 { .. } => 0,
            };
            match self.read_into_stash(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    self.count_head(false);
                    return Poll::Ready(Wait::Close);
                }
                Poll::Ready(Ok(0)) => {
                    // The client closed the connection.
                    self.count_head(false);
                    return Poll::Ready(Wait::Close);
                }
                Poll::Ready(Ok(_)) => {
                    if !self.scan_from(before) {
                        continue;
                    }
                }
            }
        }
    }

    /// HTTP/1 reads by pingora: the stashed head first, then the connection.
    fn poll_read_h1(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let phase = self.control.phase.load(Ordering::Acquire);
        if let Protocol::H1 {
            stash,
            complete,
            delivered,
            ..
        } = &mut self.protocol
        {
            if !stash.is_empty() {
                let n = stash.len().min(buf.remaining());
                buf.put_slice(&stash[..n]);
                stash.drain(..n);
                *delivered = true;
                if *complete {
                    if stash.is_empty() {
                        // Nothing kept between requests.
                        *stash = Vec::new();
                    }
                    if phase == HEAD {
                        self.control.phase.store(BODY, Ordering::Release);
                        self.count_head(false);
                        self.deadline = None;
                        self.served = true;
                    }
                }
                return Poll::Ready(Ok(()));
            }
        }
        match phase {
            HEAD => {
                // pingora reads a head the edge did not wait for (it should not happen): wait
                // for it here, whole, then hand it over.
                match self.poll_head(cx, false) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Wait::Head) => self.poll_read_h1(cx, buf),
                    Poll::Ready(Wait::Close | Wait::Idle(_)) => self.closed_read(),
                }
            }
            UPGRADED => {
                if self.deadline.is_none() {
                    self.set_deadline(Some(Instant::now() + self.settings.upgrade_idle_timeout));
                }
                if self.upgrade_idle(cx) {
                    self.close(CloseReason::UpgradeIdle);
                    return self.closed_read();
                }
                let before = buf.filled().len();
                let result = Pin::new(&mut self.inner).poll_read(cx, buf);
                if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                result
            }
            _ => Pin::new(&mut self.inner).poll_read(cx, buf),
        }
    }

    /// Upgraded connections: whether they have been quiet for `upgrade_idle_timeout` (the
    /// timer is moved on to the last activity when it was not).
    fn upgrade_idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if !self.deadline_passed(cx) {
                return false;
            }
            let due = self.last_activity + self.settings.upgrade_idle_timeout;
            if due <= Instant::now() {
                return true;
            }
            self.set_deadline(Some(due));
        }
    }

    /// HTTP/2 reads by h2: every frame header is looked at.
    fn poll_read_h2(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.deadline_passed(cx) {
            self.close(CloseReason::H2HeaderTimeout);
            return Pin::new(self).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let now = Instant::now();
            let Protocol::H2 { reader, timing, .. } = &mut self.protocol else {
                return result;
            };
            if let Err(abuse) = reader.feed(&buf.filled()[before..], now) {
                // h2 sees none of it: the connection ends here.
                buf.set_filled(before);
                self.close(CloseReason::of(abuse));
                return Pin::new(self).poll_read(cx, buf);
            }
            let in_head = reader.in_head();
            let was_timing = std::mem::replace(timing, in_head);
            match (was_timing, in_head) {
                (false, true) => {
                    self.set_deadline(Some(now + self.settings.header_timeout));
                }
                (true, false) => self.deadline = None,
                _ => {}
            }
        }
        result
    }
}

impl AsyncRead for Guard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.control.waker.register(cx.waker());
        this.take_kill();
        if this.closing.is_some() {
            return match this.poll_closing(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => this.closed_read(),
            };
        }
        if this.is_h2() {
            this.poll_read_h2(cx, buf)
        } else {
            this.poll_read_h1(cx, buf)
        }
    }
}

impl AsyncWrite for Guard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.take_kill();
        if let Some(reason) = this.closing.as_ref().map(|c| c.reason) {
            let at_boundary = match &this.protocol {
                Protocol::H2 { writer, .. } => writer.at_boundary(),
                Protocol::H1 { .. } => true,
            };
            if at_boundary || this.closing.as_ref().is_some_and(|c| c.done) {
                return match this.poll_closing(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(aborted(reason))),
                };
            }
            // HTTP/2: finish the frame being written, nothing more.
            let n = match &this.protocol {
                Protocol::H2 { writer, .. } => writer.rest_of_frame(buf.len()),
                Protocol::H1 { .. } => buf.len(),
            };
            return this.write_through(cx, &buf[..n]);
        }
        if this.control.phase.load(Ordering::Relaxed) == UPGRADED {
            this.last_activity = Instant::now();
        }
        this.write_through(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.closing.is_some() || this.control.kill.load(Ordering::Relaxed) != 0 {
            // Frame by frame while closing.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return Pin::new(this).poll_write(cx, first);
        }
        if this.control.phase.load(Ordering::Relaxed) == UPGRADED {
            this.last_activity = Instant::now();
        }
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(mut n)), Protocol::H2 { writer, .. }) = (&result, &mut this.protocol)
        {
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                writer.wrote(&b[..take]);
                n -= take;
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Guard {
    fn write_through(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Protocol::H2 { writer, .. }) = (&result, &mut self.protocol) {
            writer.wrote(&buf[..*n]);
        }
        result
    }
}

/// Where a guard's counts go, and whether a head of its connection is counted in
/// `heads_in_progress` (no longer once the guard is gone).
struct Report {
    to: Arc<dyn GuardReport>,
    /// Counted in `heads_in_progress`.
    head_counted: bool,
}

impl Drop for Report {
    fn drop(&mut self) {
        if self.head_counted {
            self.to.heads_in_progress().fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[async_trait]
impl Shutdown for Guard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guard {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guard {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guard {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Guard {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Guard {}

/// Take a guard back from the stream pingora returns after a request.
pub fn from_stream(stream: Stream) -> Option<Box<Guard>> {
    stream.into_any().downcast::<Guard>().ok()
}

#[cfg(test)]
mod tests;
