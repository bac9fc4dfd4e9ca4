//! The edge of the proxy: one client connection from accept to close, around pingora's HTTP
//! handling. The connection is counted against the caps from accept, its TLS handshake is
//! Rempart's own (timed by `server.tls_handshake_timeout`, failures counted, not logged), and
//! the connection guard watches it from then on; HTTP/1 requests are handed to pingora only
//! once their head is complete. An HTTP/1 connection idle between two requests is parked
//! without its task (`parking`) and served again from here when its next request comes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::v2;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};
use pingora::protocols::{
    Digest, GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, Ssl, Stream,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use tokio::io::AsyncWriteExt;

use super::direct::{self, Direct};
use super::early;
use super::parking::{self, Kept};
use super::streams::{self, StreamClient};
use crate::forwarded::{canonical, RequestIds};
use crate::proxy::RempartProxy;
use crate::runtime::Runtime;
use crate::shield::connections::ConnectionSlot;
use crate::shield::guard::{self, Control, Guard, GuardSettings, Wait};
use crate::telemetry::Metrics;

/// Client connection buffers: no read buffer below pingora's own (an idle keep-alive
/// connection then holds no request-sized buffer; pingora's default is 64 KiB per connection),
/// and pingora's 1460-byte write buffer, which joins a response's head and small body in one
/// write.
pub const CLIENT_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: Some(1460),
};

/// A listening address and, for a TLS listener, its acceptor.
pub struct EdgeListener {
    pub address: SocketAddr,
    pub tls: Option<Arc<Acceptor>>,
}

/// Serves every request of a connection with the proxy, counting the connection while open.
pub struct Edge {
    proxy: Arc<HttpProxy<RempartProxy>>,
    /// Ids of the requests answered early (`early`).
    request_ids: RequestIds,
    runtime: Arc<Runtime>,
    listeners: Vec<EdgeListener>,
}

impl Edge {
    pub fn new(
        proxy: HttpProxy<RempartProxy>,
        runtime: Arc<Runtime>,
        listeners: Vec<EdgeListener>,
    ) -> Self {
        Edge {
            proxy: Arc::new(proxy),
            request_ids: RequestIds::new(),
            runtime,
            listeners,
        }
    }

    /// pingora serving the request whose head the guard holds. Its session is made here,
    /// outside the connection's future, which would keep room for it for the connection's
    /// whole life.
    fn serve<'a>(
        &'a self,
        guard: Box<Guard>,
        persisted: Option<HttpPersistentSettings>,
        shutdown: &'a ShutdownWatch,
        settings: guard::GuardSettings,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'a>> {
        let mut session = ServerSession::new_http1(guard);
        // Pipelined requests are served in order: what pingora reads past a request's end
        // comes back in its persistent settings, and goes back to the guard.
        session.set_pipelining_enabled(true);
        match persisted {
            Some(settings) => settings.apply_to_session(&mut session),
            None => session.set_keepalive_reuses_remaining(
                self.proxy
                    .server_options()
                    .and_then(|o| o.keepalive_request_limit),
            ),
        }
        if *shutdown.borrow() || self.runtime.is_draining() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(settings.keepalive_timeout.as_secs().max(1)));
        }
        self.proxy.process_new_http(session, shutdown)
    }

    /// An HTTP/2 connection: pingora's handshake and stream accept loop, every stream in its
    /// own task on this worker thread (`streams`).
    async fn serve_h2(
        self: &Arc<Self>,
        guard: Box<Guard>,
        peer: Option<SocketAddr>,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) {
        let digest = Arc::new(Digest {
            ssl_digest: guard.get_ssl_digest(),
            timing_digest: guard.get_timing_digest(),
            proxy_digest: guard.get_proxy_digest(),
            socket_digest: guard.get_socket_digest(),
        });
        let connection = match v2::server::handshake(guard, self.proxy.h2_options()).await {
            Ok(connection) => connection,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 handshake failed");
                return;
            }
        };
        let idle_timeout = self.proxy.server_options().and_then(|o| o.h2_idle_timeout);
        v2::server::accept_downstream_sessions(
            connection,
            digest,
            shutdown.clone(),
            idle_timeout,
            |session, busy| {
                let edge = self.clone();
                let shutdown = shutdown.clone();
                // On this thread: its pool of upstream connections is the one to use.
                tokio::spawn(async move {
                    let _busy = busy;
                    edge.serve_stream(session, peer, tls, &shutdown).await;
                });
            },
        )
        .await;
    }

    /// One HTTP/2 stream: a request without a body is offered to the edge's answers and
    /// forwarding as the HTTP/1 head it stands for; anything else is pingora's.
    async fn serve_stream(
        &self,
        session: v2::server::HttpSession,
        peer: Option<SocketAddr>,
        tls: bool,
        shutdown: &ShutdownWatch,
    ) {
        let head = (session.is_body_done() && !*shutdown.borrow())
            .then(|| streams::h1_head(session.req_header()))
            .flatten();
        if let Some(head) = head {
            let answer = match early::answer(&self.runtime, &self.request_ids, &head, peer) {
                Some(early) => Some(early),
                None => match direct::plan(&self.runtime, &self.request_ids, &head, peer, tls) {
                    Some(Direct::Answer(early)) => Some(early),
                    Some(Direct::Forward(plan)) => {
                        let mut client = StreamClient::new(session);
                        Box::pin(direct::forward(&self.runtime, plan, &mut client)).await;
                        client.finish().await;
                        return;
                    }
                    None => None,
                },
            };
            if let Some(early) = answer {
                let mut client = StreamClient::new(session);
                if client.write_all(&early.bytes).await.is_ok() {
                    client.finish().await;
                }
                return;
            }
        }
        let session = ServerSession::new_http2(session);
        Box::pin(self.proxy.process_new_http(session, shutdown)).await;
    }

    pub(super) fn metrics(&self) -> &Arc<Metrics> {
        &self.runtime.metrics
    }

    /// HTTP/1, as pingora's connection loop does it, except that Rempart waits for each
    /// request's head itself (a small wait, not pingora's whole request state), and parks the
    /// connection when it stays idle (plain TCP only: a TLS session cannot leave its task).
    #[allow(clippy::too_many_arguments)]
    async fn serve_h1(
        self: &Arc<Self>,
        mut guard: Box<Guard>,
        mut control: Arc<Control>,
        mut held: Held,
        peer_address: Option<SocketAddr>,
        tls: bool,
        settings: GuardSettings,
        mut first: bool,
        mut persisted: Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) {
        // Known by its peer address while served, so that a request can end it.
        let shield_state = self.runtime.shield_state.clone();
        let register = |control: &Arc<Control>| {
            peer_address.map(|peer| shield_state.guards.register(peer, control.clone(), false))
        };
        let mut registered = register(&control);
        let mut park = (!tls && peer_address.is_some()).then_some(parking::PARK_AFTER);
        loop {
            match guard.wait_request_or_idle(first, shutdown, park).await {
                Wait::Head => {}
                Wait::Close => return,
                Wait::Idle(keepalive_until) => {
                    // (Parking is asked only with a peer address.)
                    let Some(peer) = peer_address else {
                        return;
                    };
                    let stream = match guard.into_stream() {
                        Ok(stream) => stream,
                        Err(back) => {
                            // Something of a request is there after all: it waits on here.
                            guard = back;
                            park = None;
                            continue;
                        }
                    };
                    drop(registered);
                    let kept = Kept {
                        peer,
                        keepalive_until,
                        persisted: persisted.map(Box::new),
                        held,
                    };
                    let Some((stream, kept)) = self.park(stream, kept, shutdown) else {
                        return;
                    };
                    // It could not be parked: it waits on in this task, guarded again.
                    (guard, control) = self.guard_stream(stream, kept.keepalive_until);
                    registered = register(&control);
                    persisted = kept.persisted.map(|p| *p);
                    held = kept.held;
                    park = None;
                    continue;
                }
            }
            first = false;
            // A banned or limited client is answered from its head, without a pingora session.
            let early = guard.complete_head().and_then(|head| {
                early::answer(&self.runtime, &self.request_ids, head, peer_address)
            });
            // A plain request (no body, or a small one of known length) is forwarded by the
            // edge itself, when nothing in it needs pingora's session.
            let early = match early {
                Some(early) => Some(early),
                None if *shutdown.borrow() => None,
                None => match guard.complete_head().and_then(|head| {
                    direct::plan(&self.runtime, &self.request_ids, head, peer_address, tls)
                }) {
                    Some(Direct::Answer(early)) => Some(early),
                    Some(Direct::Forward(plan)) => {
                        guard.answered_head();
                        // Boxed: a forwarding's state lives while it runs, not in every idle
                        // connection's future.
                        let forwarded =
                            Box::pin(direct::forward(&self.runtime, plan, &mut guard)).await;
                        if !forwarded {
                            return;
                        }
                        continue;
                    }
                    None => None,
                },
            };
            if let Some(early) = early {
                guard.answered_head();
                let written = guard.write_all(&early.bytes).await.and(guard.flush().await);
                if written.is_err() || early.close {
                    return;
                }
                continue;
            }
            let served = guard::with_connection(
                control.clone(),
                self.serve(guard, persisted.take(), shutdown, settings),
            )
            .await;
            let Some(served) = served else {
                return;
            };
            let (stream, mut next) = served.consume();
            let Some(back) = guard::from_stream(stream) else {
                return;
            };
            guard = back;
            if let Some(prefix) = next.as_mut().and_then(|n| n.take_pipelined_prefix()) {
                guard.unread(&prefix);
            }
            persisted = next;
        }
    }

    /// Park an idle plain connection (`parking`). None: parked (or its socket failed); else
    /// the stream, which this task goes on serving (something was left in its buffers, or the
    /// worker's table refused it).
    fn park(
        self: &Arc<Self>,
        stream: Stream,
        kept: Kept,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, Kept)> {
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => l4,
            Err(_) => {
                tracing::error!("a plain listener's connection is not a TCP stream");
                return None;
            }
        };
        let socket = match (*l4).into_idle_tcp() {
            Ok(tcp) => tcp.into_std(),
            Err(l4) => return Some((Box::new(l4), kept)),
        };
        let socket = match socket {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(error = %e, "cannot park an idle connection");
                return None;
            }
        };
        let (socket, kept) = *parking::park(self, shutdown, socket, kept).err()?;
        match tokio::net::TcpStream::from_std(socket) {
            Ok(socket) => Some((self.stream_again(socket, kept.peer), kept)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot serve an idle connection on");
                None
            }
        }
    }

    /// A parked connection with bytes to read (`parking`), served again in a new task.
    pub(super) async fn resume(
        self: Arc<Self>,
        socket: tokio::net::TcpStream,
        kept: Kept,
        shutdown: ShutdownWatch,
    ) {
        let stream = self.stream_again(socket, kept.peer);
        let (guard, control) = self.guard_stream(stream, kept.keepalive_until);
        let settings = guard.settings();
        self.serve_h1(
            guard,
            control,
            kept.held,
            Some(kept.peer),
            false,
            settings,
            false,
            kept.persisted.map(|p| *p),
            &shutdown,
        )
        .await;
    }

    /// The stream of a connection taken out of it between two requests, made again as its
    /// listener made it.
    fn stream_again(&self, socket: tokio::net::TcpStream, peer: SocketAddr) -> Stream {
        let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&socket));
        let _ = digest.peer_addr.set(Some(peer.into()));
        let mut stream = L4Stream::from(socket);
        stream.set_buffer(CLIENT_BUFFERS);
        stream.set_socket_digest(digest);
        Box::new(stream)
    }

    /// The guard of a connection between two requests, as `process_new` made it (with the
    /// settings in force now), its keep-alive ending at `keepalive_until`.
    fn guard_stream(
        &self,
        stream: Stream,
        keepalive_until: tokio::time::Instant,
    ) -> (Box<Guard>, Arc<Control>) {
        let settings = self.runtime.load().shield.guard;
        let report: Arc<dyn guard::GuardReport> = self.runtime.metrics.clone();
        let (guard, control) = Guard::resumed(stream, settings, report, keepalive_until);
        (Box::new(guard), control)
    }

    /// The TLS acceptor of the listener a connection came in on (None: plain HTTP).
    fn acceptor(&self, stream: &Stream) -> Option<Arc<Acceptor>> {
        if self.listeners.iter().all(|l| l.tls.is_none()) {
            return None;
        }
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())?;
        let exact = self.listeners.iter().find(|l| l.address == local);
        let listener = exact.or_else(|| {
            self.listeners
                .iter()
                .find(|l| l.address.port() == local.port() && l.address.ip().is_unspecified())
        })?;
        listener.tls.clone()
    }
}

/// What an open connection holds from accept to close, wherever it waits: its place in the
/// connection caps and its count among open connections.
pub struct Held {
    _slot: Option<ConnectionSlot>,
    _open: OpenConnection,
}

/// A connection counted in `rempart_connections_active`.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let metrics = &self.runtime.metrics;
        let snapshot = self.runtime.load();
        let shield = &snapshot.shield;

        // The caps, from accept: the accept filter refused what it could before this task
        // existed; every connection is counted here before any TLS work.
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let slot = match peer.map(canonical) {
            Some(ip) => {
                let table = &shield.state.connections;
                match table.open(shield.client_key(ip), shield.caps(ip)) {
                    Ok(slot) => Some(slot),
                    Err(refusal) => {
                        shield.count_connection_refusal(refusal);
                        return None;
                    }
                }
            }
            None => None,
        };
        metrics.connections_active.inc();
        let held = Held {
            _slot: slot,
            _open: OpenConnection(metrics.clone()),
        };
        let settings = shield.guard;
        let handshake_timeout = shield.tls_handshake_timeout;
        drop(snapshot);

        let acceptor = self.acceptor(&stream);
        let tls = acceptor.is_some();
        let stream: Stream = match acceptor {
            None => stream,
            Some(acceptor) => {
                // pingora hands TCP connections over as its L4 stream, which TLS wraps.
                let Ok(tcp) = stream.into_any().downcast::<L4Stream>() else {
                    tracing::error!("a TLS listener's connection is not a TCP stream");
                    return None;
                };
                // Boxed: the handshake's state is large and lives only while it runs; the
                // connection's own future stays small for as long as it is open (idle).
                let handshake = Box::pin(tokio::time::timeout(
                    handshake_timeout,
                    acceptor.tls_handshake(*tcp),
                ));
                match handshake.await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        count_closed(metrics, "tls_handshake_error");
                        return None;
                    }
                    Err(_) => {
                        count_closed(metrics, "tls_handshake_timeout");
                        return None;
                    }
                }
            }
        };

        let report: Arc<dyn guard::GuardReport> = metrics.clone();
        // Made in a box at once: a local Guard would keep its room in this (long-lived) future.
        let (guard, control) = {
            let (guard, control) = Guard::new(stream, settings, report);
            (Box::new(guard), control)
        };
        let peer_address = stream_peer(&guard);
        if guard.is_h2() {
            // HTTP/2: pingora's connection handling, the guard watching its frames; each
            // stream served by the edge when it can be, by pingora's proxy otherwise. Known
            // by its peer address while open, so that a request or a reload can end it.
            let shield_state = self.runtime.shield_state.clone();
            let _registered =
                peer_address.map(|peer| shield_state.guards.register(peer, control, true));
            let _held = held;
            // Boxed: the HTTP/2 connection's state is no part of an HTTP/1 connection's future.
            Box::pin(self.serve_h2(guard, peer_address, tls, shutdown)).await;
            return None;
        }
        self.serve_h1(
            guard,
            control,
            held,
            peer_address,
            tls,
            settings,
            true,
            None,
            shutdown,
        )
        .await;
        None
    }

    /// pingora's clean-up would abort the reading of request heads at shutdown; Rempart lets
    /// heads under way finish (their answer closes the connection) and closes idle connections
    /// itself.
    async fn cleanup(&self) {}
}

fn stream_peer(guard: &Guard) -> Option<SocketAddr> {
    guard
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
}

fn count_closed(metrics: &Metrics, reason: &str) {
    metrics
        .connections_closed_total
        .with_label_values(&[reason])
        .inc();
}
