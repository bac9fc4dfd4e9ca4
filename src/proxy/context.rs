//! What Rempart knows about one request, from its head to its log line, and the count of
//! requests in flight it keeps while alive.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;

use crate::answer::Reason;
use crate::runtime::Snapshot;
use crate::telemetry::Metrics;
use crate::upstream::retry::{Replay, RetryKind, Tally};
use crate::upstream::{InFlight, Outcome, Upstream};

use super::classify::body_fits_replay_buffer;

/// Counts a request in flight for as long as its context lives.
pub struct RequestGuard(Arc<Metrics>);

impl RequestGuard {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.requests_in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(metrics)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What Rempart knows about one request, from its head to its log line.
pub struct RequestCtx {
    pub(super) _guard: RequestGuard,
    pub(super) started: Instant,
    /// Loaded once in `request_filter`; the whole request runs under it.
    pub(super) snapshot: Option<Arc<Snapshot>>,
    pub(super) peer_ip: Option<IpAddr>,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) peer_trusted: bool,
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) request_id: String,
    pub(super) route: Option<usize>,
    /// Set when Rempart answered itself.
    pub(super) reason: Option<Reason>,
    /// Datacenter (index in the snapshot's upstream) of the current or last try.
    pub(super) datacenter: Option<usize>,
    pub(super) current: Option<InFlight>,
    pub(super) tried: Vec<SocketAddr>,
    /// The retries made.
    pub(super) tally: Tally,
    /// The request may be sent again (idempotent method or `Idempotency-Key`).
    pub(super) safe_to_resend: bool,
    /// `upstream_response_filter` turned a 502-504 answer into a retry.
    pub(super) retrying_status: bool,
    /// No datacenter was up: the answer is the maintenance page.
    pub(super) all_down: bool,
    pub(super) try_started: Option<Instant>,
    pub(super) upstream_ms: Option<f64>,
    /// The shield's view of this request (the limit that refused it).
    pub(super) shield: crate::shield::RequestState,
    /// The login queue's view of this request (admission permit, ticket, pass).
    pub(super) queue: crate::queue::RequestState,
    pub(super) queue_ms: Option<f64>,
    /// The connection was upgraded (101): its bytes are no request body any more.
    pub(super) upgraded: bool,
    /// The normalised path to send upstream, when it differs from the one received.
    pub(super) forward_path: Option<String>,
    /// A try was cut because its server went down.
    pub(super) cut: bool,
    /// When the body started to count toward `body_min_rate`: after the login queue.
    pub(super) body_clock: Option<Instant>,
}

impl RequestCtx {
    pub(super) fn upstream(&self) -> Option<Arc<Upstream>> {
        let snapshot = self.snapshot.as_ref()?;
        let route = snapshot.routes.get(self.route?)?;
        snapshot.upstreams.get(route.route.upstream).cloned()
    }

    /// Close the current try with this outcome; `blame_server` is false when the failure came
    /// from the client side.
    pub(super) fn end_try(&mut self, outcome: Outcome, status: Option<u16>, blame_server: bool) {
        if let Some(in_flight) = self.current.take() {
            if let (Some(upstream), Some(dc)) = (self.upstream(), self.datacenter) {
                upstream.observe(dc, in_flight.server(), outcome, status, blame_server);
            }
        }
        if let Some(started) = self.try_started.take() {
            self.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// Decide whether the try that just failed is retried, and count it.
    pub(super) fn retry(&mut self, session: &Session, kind: RetryKind) -> bool {
        let Some(upstream) = self.upstream() else {
            return false;
        };
        let replay = Replay {
            safe: self.safe_to_resend,
            body_replayable: body_fits_replay_buffer(session.req_header())
                && !session.as_ref().retry_buffer_truncated(),
            response_started: session.response_written().is_some(),
        };
        self.tally.retry(&upstream, kind, replay, &self.tried)
    }
}
