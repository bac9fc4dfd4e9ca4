//! Upstreams: datacenters in priority order, their servers, and the choice of a server for
//! one try of a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;
use prometheus::IntCounter;

use crate::config;
use crate::telemetry::Metrics;

/// How one try at a server ended, for `rempart_upstream_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500 came back.
    Ok,
    /// The server answered 5xx.
    Http5xx,
    /// The request never reached the server: connection refused, unreachable, connect timeout.
    ConnectError,
    /// The server was reached, then the exchange failed (reset, protocol error).
    Error,
    /// The server was reached and did not answer in time.
    Timeout,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Http5xx,
        Outcome::ConnectError,
        Outcome::Error,
        Outcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Http5xx => "http_5xx",
            Outcome::ConnectError => "connect_error",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One upstream server and its live counters. Shared by every snapshot that keeps it.
pub struct Server {
    pub address: SocketAddr,
    /// A ready peer with the upstream's timeouts; cloned for each try.
    pub peer: HttpPeer,
    pub in_flight: AtomicI64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    outcomes: [IntCounter; 5],
}

impl Server {
    fn new(
        address: SocketAddr,
        timeouts: &config::UpstreamTimeouts,
        outcomes: [IntCounter; 5],
    ) -> Self {
        let mut peer = HttpPeer::new(address, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(timeouts.connect);
        options.total_connection_timeout = Some(timeouts.connect);
        options.read_timeout = Some(timeouts.response);
        options.write_timeout = Some(timeouts.response);
        options.idle_timeout = Some(timeouts.idle);
        Server {
            address,
            peer,
            in_flight: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            outcomes,
        }
    }

    /// Count the end of one try at this server.
    pub fn record(&self, outcome: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome != Outcome::Ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
    }
}

/// Marks a server busy with one try for as long as it lives.
pub struct InFlight(Arc<Server>);

impl InFlight {
    pub fn start(server: Arc<Server>) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(server)
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Datacenter {
    pub name: String,
    pub servers: Vec<Arc<Server>>,
    next: AtomicUsize,
}

/// An upstream as one configuration generation defines it.
pub struct Upstream {
    pub name: String,
    pub datacenters: Vec<Datacenter>,
    pub config: config::Upstream,
}

/// The server chosen for one try.
pub struct Pick {
    pub datacenter: usize,
    pub server: Arc<Server>,
}

impl Upstream {
    pub fn new(config: &config::Upstream, metrics: &Metrics) -> Self {
        let outcomes = |dc: &str| {
            Outcome::ALL.map(|outcome| {
                metrics.upstream_requests_total.with_label_values(&[
                    config.name.as_str(),
                    dc,
                    outcome.as_str(),
                ])
            })
        };
        Upstream {
            name: config.name.clone(),
            datacenters: config
                .datacenters
                .iter()
                .map(|dc| Datacenter {
                    name: dc.name.clone(),
                    servers: dc
                        .servers
                        .iter()
                        .map(|address| {
                            Arc::new(Server::new(*address, &config.timeouts, outcomes(&dc.name)))
                        })
                        .collect(),
                    next: AtomicUsize::new(0),
                })
                .collect(),
            config: config.clone(),
        }
    }

    /// The datacenter that receives traffic.
    pub fn active_datacenter(&self) -> usize {
        0
    }

    /// Round-robin over the active datacenter's servers, skipping those this request already
    /// tried. None when every server has been tried.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Pick> {
        let index = self.active_datacenter();
        let dc = self.datacenters.get(index)?;
        let count = dc.servers.len();
        if count == 0 {
            return None;
        }
        let start = dc.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &dc.servers[(start + offset) % count])
            .find(|server| !tried.contains(&server.address))
            .map(|server| Pick {
                datacenter: index,
                server: server.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn upstream(servers: &[&str]) -> Upstream {
        let metrics = Metrics::new().unwrap();
        Upstream::new(
            &config::Upstream {
                name: "ent".into(),
                datacenters: vec![config::Datacenter {
                    name: "dc-a".into(),
                    servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
                }],
                min_healthy: config::MinHealthy::Count(1),
                health_check: config::HealthCheck {
                    path: "/healthz".into(),
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_millis(500),
                    rise: 2,
                    fall: 2,
                },
                outlier: config::Outlier {
                    consecutive_failures: 3,
                    eject_for: Duration::from_secs(10),
                },
                failback_after: Duration::from_secs(30),
                when_all_down: config::WhenAllDown::Maintenance,
                timeouts: config::UpstreamTimeouts {
                    connect: Duration::from_secs(1),
                    response: Duration::from_secs(30),
                    idle: Duration::from_secs(60),
                    per_try: None,
                },
                retries: config::Retries {
                    attempts: 2,
                    budget: 0.2,
                },
            },
            &metrics,
        )
    }

    #[test]
    fn round_robin_skips_tried_servers() {
        let up = upstream(&["127.0.0.1:1", "127.0.0.1:2"]);
        let first = up.pick(&[]).unwrap().server.address;
        let second = up.pick(&[]).unwrap().server.address;
        assert_ne!(first, second);
        let other = up.pick(&[first]).unwrap().server.address;
        assert_ne!(other, first);
        assert!(up.pick(&[first, second]).is_none());
    }
}
