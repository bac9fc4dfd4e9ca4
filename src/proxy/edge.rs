//! The edge of the proxy: one client connection from accept to close, around pingora's HTTP
//! handling: the connection is counted against the caps while open, and each HTTP/1 request
//! head must arrive within `server.header_timeout`.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::forwarded::canonical;
use crate::proxy::RempartProxy;
use crate::runtime::Runtime;
use crate::shield::deadline::HeadDeadline;
use crate::telemetry::Metrics;

/// Serves every request of a connection with the proxy, counting the connection while open.
pub struct Edge {
    proxy: Arc<HttpProxy<RempartProxy>>,
    runtime: Arc<Runtime>,
}

impl Edge {
    pub fn new(proxy: HttpProxy<RempartProxy>, runtime: Arc<Runtime>) -> Self {
        Edge {
            proxy: Arc::new(proxy),
            runtime,
        }
    }
}

struct ConnectionGuard<'a>(&'a Metrics);

impl Drop for ConnectionGuard<'_> {
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

        // The caps, exactly: the accept filter refused what it could before TLS; connections
        // that were in their TLS handshake meanwhile are counted here.
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match peer.map(canonical) {
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
        let _open = ConnectionGuard(metrics);

        let header_timeouts = shield.header_timeout_counter();
        let (stream, watch) = HeadDeadline::wrap(
            stream,
            shield.header_timeout,
            Box::new(move || {
                header_timeouts.inc();
                tracing::debug!("request head not complete within header_timeout: closing");
            }),
        );
        drop(snapshot);

        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2: pingora's own connection handling (no HTTP/1 heads to watch).
            let mut next = Some(stream);
            while let Some(stream) = next {
                next = self.proxy.process_new(stream, shutdown).await;
            }
            return None;
        }

        // HTTP/1, as pingora's connection loop does it, re-arming the head deadline for each
        // request on a kept-alive connection.
        let mut session = ServerSession::new_http1(stream);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(60));
        }
        session.set_keepalive_reuses_remaining(
            self.proxy
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut result = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            watch.rearm();
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.proxy.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
