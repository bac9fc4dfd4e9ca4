//! The edge of the proxy: one client connection from accept to close, around pingora's HTTP
//! handling, so that connections can be counted while they live.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::proxy::RempartProxy;
use crate::telemetry::Metrics;

/// Serves every request of a connection with the proxy, counting the connection while open.
pub struct Edge {
    proxy: Arc<HttpProxy<RempartProxy>>,
    metrics: Arc<Metrics>,
}

impl Edge {
    pub fn new(proxy: HttpProxy<RempartProxy>, metrics: Arc<Metrics>) -> Self {
        Edge {
            proxy: Arc::new(proxy),
            metrics,
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
        self.metrics.connections_active.inc();
        let _open = ConnectionGuard(&self.metrics);
        // Keep-alive: pingora hands the connection back after each request until it closes.
        let mut next = Some(stream);
        while let Some(stream) = next {
            next = self.proxy.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}
