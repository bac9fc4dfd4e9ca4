//! Telemetry: the Prometheus registry with every `rempart_` series, and the JSON access log
//! (its line: `line`).

mod line;

pub use line::AccessRecord;

use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::answer::Reason;
use crate::config::AccessLogTarget;

/// Buckets of `rempart_request_duration_seconds`, from 1 ms to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric Rempart exports, registered in one registry served by the admin `/metrics`.
pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub responses_generated_total: IntCounterVec,
    /// `responses_generated_total`'s series by reason, each looked up once, at its first use
    /// (`count_generated`): refusals under a flood count without a label look-up.
    generated: [OnceLock<IntCounter>; Reason::COUNT],
    pub upstream_requests_total: IntCounterVec,
    pub connections_active: IntGauge,
    /// Idle keep-alive connections parked without a task (`proxy::parking`).
    pub connections_parked: IntGauge,
    pub config_generation: IntGauge,
    pub config_reloads_total: IntCounterVec,
    pub upstream_server_up: IntGaugeVec,
    pub datacenter_active: IntGaugeVec,
    pub failovers_total: IntCounterVec,
    pub retries_total: IntCounterVec,
    pub queue_waiting: IntGaugeVec,
    pub queue_in_flight: IntGaugeVec,
    pub queue_limit: IntGaugeVec,
    pub queue_wait_seconds: HistogramVec,
    pub queue_outcomes_total: IntCounterVec,
    /// Shield: requests refused (or, in dry_run, that would have been) by each limit.
    pub rate_limited_total: IntCounterVec,
    /// Shield: keys each limit tracks (updated by the sweep).
    pub limit_keys: IntGaugeVec,
    /// Shield: client addresses banned now.
    pub bans_active: IntGauge,
    /// Shield: connections refused at accept, by reason.
    pub connections_refused_total: IntCounterVec,
    /// Client connections Rempart closed itself, by reason (deadlines, floods, TLS handshakes).
    pub connections_closed_total: IntCounterVec,
    /// HTTP/1 request heads being read now (the drain lets them finish).
    pub heads_in_progress: AtomicI64,
    /// Requests between their first byte and their log line; the graceful drain waits on it.
    pub requests_in_flight: AtomicI64,
    /// Requests answered, all routes together, and those answered 5xx (for the dashboard's
    /// requests/s and error rate).
    pub requests_answered: AtomicU64,
    pub responses_5xx: AtomicU64,
    /// Access-log lines dropped because the writer could not keep up.
    pub access_log_dropped: AtomicU64,
    /// The same, for Prometheus.
    pub access_log_dropped_total: IntCounter,
    /// 1 for the scheduled overlays in force, 0 for the others, by overlay.
    pub schedule_overlay_active: IntGaugeVec,
}

impl Metrics {
    /// One more answer Rempart generated itself, for `reason`
    /// (`rempart_responses_generated_total{reason}`).
    pub fn count_generated(&self, reason: Reason) {
        match self.generated.get(reason as usize) {
            Some(series) => series
                .get_or_init(|| {
                    self.responses_generated_total
                        .with_label_values(&[reason.as_str()])
                })
                .inc(),
            None => self
                .responses_generated_total
                .with_label_values(&[reason.as_str()])
                .inc(),
        }
    }

    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests_total = IntCounterVec::new(
            Opts::new(
                "rempart_requests_total",
                "Requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "rempart_request_duration_seconds",
                "Time from the request head to the end of the response, by route",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        let responses_generated_total = IntCounterVec::new(
            Opts::new(
                "rempart_responses_generated_total",
                "Answers written by Rempart itself, by reason",
            ),
            &["reason"],
        )?;
        let upstream_requests_total = IntCounterVec::new(
            Opts::new(
                "rempart_upstream_requests_total",
                "Requests sent to upstream servers, by outcome",
            ),
            &["upstream", "datacenter", "outcome"],
        )?;
        let connections_active = IntGauge::new(
            "rempart_connections_active",
            "Client connections currently open",
        )?;
        let connections_parked = IntGauge::new(
            "rempart_connections_parked",
            "Idle HTTP/1 keep-alive connections parked until their next request (counted in rempart_connections_active too)",
        )?;
        let config_generation = IntGauge::new(
            "rempart_config_generation",
            "Generation of the configuration in force (1 at start, +1 per successful reload or schedule change)",
        )?;
        let config_reloads_total = IntCounterVec::new(
            Opts::new(
                "rempart_config_reloads_total",
                "Configuration reloads, by result",
            ),
            &["result"],
        )?;
        let upstream_server_up = IntGaugeVec::new(
            Opts::new(
                "rempart_upstream_server_up",
                "1 when the server counts as up, else 0",
            ),
            &["upstream", "datacenter", "server"],
        )?;
        let datacenter_active = IntGaugeVec::new(
            Opts::new(
                "rempart_datacenter_active",
                "1 for the datacenter that receives the upstream's traffic",
            ),
            &["upstream", "datacenter"],
        )?;
        let failovers_total = IntCounterVec::new(
            Opts::new(
                "rempart_failovers_total",
                "Changes of the active datacenter (failovers and failbacks), by upstream, from, to",
            ),
            &["upstream", "from", "to"],
        )?;
        let retries_total = IntCounterVec::new(
            Opts::new(
                "rempart_retries_total",
                "Retries made, by upstream and kind (connect, error, timeout, status)",
            ),
            &["upstream", "kind"],
        )?;
        let queue_waiting = IntGaugeVec::new(
            Opts::new("rempart_queue_waiting", "Requests waiting in a login queue"),
            &["queue"],
        )?;
        let queue_in_flight = IntGaugeVec::new(
            Opts::new(
                "rempart_queue_in_flight",
                "Requests of a login queue in flight to the upstream",
            ),
            &["queue"],
        )?;
        let queue_limit = IntGaugeVec::new(
            Opts::new(
                "rempart_queue_limit",
                "Concurrency limit of a login queue (moves when adaptive)",
            ),
            &["queue"],
        )?;
        let queue_wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                "rempart_queue_wait_seconds",
                "Time spent in a login queue, by admitted and waiting-room requests",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["queue"],
        )?;
        let queue_outcomes_total = IntCounterVec::new(
            Opts::new(
                "rempart_queue_outcomes_total",
                "Arrivals at a login queue by outcome: admitted, waiting_room, queue_full, abandoned",
            ),
            &["queue", "outcome"],
        )?;
        registry.register(Box::new(queue_waiting.clone()))?;
        registry.register(Box::new(queue_in_flight.clone()))?;
        registry.register(Box::new(queue_limit.clone()))?;
        registry.register(Box::new(queue_wait_seconds.clone()))?;
        registry.register(Box::new(queue_outcomes_total.clone()))?;
        let rate_limited_total = IntCounterVec::new(
            Opts::new(
                "rempart_rate_limited_total",
                "Requests refused by a limit (in dry_run: that would have been), by limit",
            ),
            &["limit"],
        )?;
        let limit_keys = IntGaugeVec::new(
            Opts::new("rempart_limit_keys", "Keys a limit tracks, by limit"),
            &["limit"],
        )?;
        let bans_active = IntGauge::new("rempart_bans_active", "Client addresses banned now")?;
        let connections_refused_total = IntCounterVec::new(
            Opts::new(
                "rempart_connections_refused_total",
                "Connections refused at accept (denied, max_connections, max_connections_per_ip)",
            ),
            &["reason"],
        )?;
        let connections_closed_total = IntCounterVec::new(
            Opts::new(
                "rempart_connections_closed_total",
                "Client connections closed by Rempart, by reason (header_timeout, keepalive_timeout, tls_handshake_timeout, h2_control_flood, ...)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(connections_closed_total.clone()))?;
        let access_log_dropped_total = IntCounter::new(
            "rempart_access_log_dropped_total",
            "Access-log lines dropped because the queue to the writer was full (4 MiB)",
        )?;
        registry.register(Box::new(access_log_dropped_total.clone()))?;
        let schedule_overlay_active = IntGaugeVec::new(
            Opts::new(
                "rempart_schedule_overlay_active",
                "1 while a scheduled overlay is in force, else 0, by overlay",
            ),
            &["overlay"],
        )?;
        registry.register(Box::new(schedule_overlay_active.clone()))?;
        registry.register(Box::new(rate_limited_total.clone()))?;
        registry.register(Box::new(limit_keys.clone()))?;
        registry.register(Box::new(bans_active.clone()))?;
        registry.register(Box::new(connections_refused_total.clone()))?;
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(request_duration_seconds.clone()))?;
        registry.register(Box::new(responses_generated_total.clone()))?;
        registry.register(Box::new(upstream_requests_total.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        registry.register(Box::new(connections_parked.clone()))?;
        registry.register(Box::new(config_generation.clone()))?;
        registry.register(Box::new(config_reloads_total.clone()))?;
        // Both series exist from the start, so that an alert on errors sees a rise from 0.
        for result in ["ok", "error"] {
            config_reloads_total.with_label_values(&[result]);
        }
        registry.register(Box::new(upstream_server_up.clone()))?;
        registry.register(Box::new(datacenter_active.clone()))?;
        registry.register(Box::new(failovers_total.clone()))?;
        registry.register(Box::new(retries_total.clone()))?;
        Ok(Metrics {
            registry,
            requests_total,
            request_duration_seconds,
            responses_generated_total,
            generated: [const { OnceLock::new() }; Reason::COUNT],
            upstream_requests_total,
            connections_active,
            connections_parked,
            config_generation,
            config_reloads_total,
            upstream_server_up,
            datacenter_active,
            failovers_total,
            retries_total,
            queue_waiting,
            queue_in_flight,
            queue_limit,
            queue_wait_seconds,
            queue_outcomes_total,
            rate_limited_total,
            limit_keys,
            bans_active,
            connections_refused_total,
            connections_closed_total,
            heads_in_progress: AtomicI64::new(0),
            requests_in_flight: AtomicI64::new(0),
            requests_answered: AtomicU64::new(0),
            responses_5xx: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
            access_log_dropped_total,
            schedule_overlay_active,
        })
    }

    /// The Prometheus text exposition of every registered series.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// A route's metric handles, resolved once per configuration generation so that a request
/// never looks a label set up in the registry's map.
pub struct RouteMetrics {
    pub duration: Histogram,
    route: String,
    requests_total: IntCounterVec,
    by_status: Box<[OnceLock<IntCounter>]>,
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        RouteMetrics {
            duration: metrics.request_duration_seconds.with_label_values(&[route]),
            route: route.to_string(),
            requests_total: metrics.requests_total.clone(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Count one answered request with this status.
    pub fn count(&self, status: u16) {
        let counter = match self.by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(cell) => cell.get_or_init(|| {
                self.requests_total
                    .with_label_values(&[self.route.as_str(), &status.to_string()])
            }),
            None => {
                // Outside 100..600: never cached, counted under its own label.
                self.requests_total
                    .with_label_values(&[self.route.as_str(), &status.to_string()])
                    .inc();
                return;
            }
        };
        counter.inc();
    }
}

/// How long the access-log writer waits after emptying its line, for more lines to gather (a
/// line reaches the file within this much of its request, plus the write).
const ACCESS_LOG_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Lines waiting for the writer before new ones are dropped (and counted).
const ACCESS_LOG_BACKLOG: usize = 65_536;
/// Bytes of lines waiting for the writer before new ones are dropped (and counted).
pub const ACCESS_LOG_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Fields of a line are cut to these lengths (in bytes; the cut ends in `...`), so that one
/// line stays under about 2 KiB whatever a client sends.
pub const LOGGED_PATH_BYTES: usize = 1024;
pub const LOGGED_HOST_BYTES: usize = 255;

/// `s` cut to at most `max` bytes (on a character boundary, ending in `...` when cut).
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub(3);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...", &s[..end]))
}

/// The access log: request tasks hand finished lines to one writer thread through a lock-free
/// channel bounded in lines and in bytes, so a slow terminal or disk never stalls a request
/// and never grows memory.
pub struct AccessLog {
    target: AccessLogTarget,
    sender: Option<SyncSender<String>>,
    receiver: Mutex<Option<Receiver<String>>>,
    /// Bytes queued for the writer now.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AccessLog {
    pub fn new(target: AccessLogTarget) -> Self {
        if target == AccessLogTarget::Off {
            return AccessLog {
                target,
                sender: None,
                receiver: Mutex::new(None),
                queued: Default::default(),
            };
        }
        let (sender, receiver) = sync_channel(ACCESS_LOG_BACKLOG);
        AccessLog {
            target,
            sender: Some(sender),
            receiver: Mutex::new(Some(receiver)),
            queued: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Queue one record; returns false when it had to be dropped.
    pub fn write(&self, record: &AccessRecord<'_>) -> bool {
        let Some(sender) = &self.sender else {
            return true;
        };
        let line = record.to_line();
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > ACCESS_LOG_BUFFER_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        match sender.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                false
            }
        }
    }

    /// Start the writer thread. Called once, after any daemon fork; later calls do nothing.
    pub fn start_writer(&self) -> std::io::Result<()> {
        let receiver = match self.receiver.lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        let Some(receiver) = receiver else {
            return Ok(());
        };
        let mut out: Box<dyn Write + Send> = match &self.target {
            AccessLogTarget::Off => return Ok(()),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let queued = self.queued.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Ok(line) = receiver.recv() {
                    buf.extend_from_slice(line.as_bytes());
                    // Batch whatever else is already waiting, then write once.
                    while buf.len() < 60 * 1024 {
                        match receiver.try_recv() {
                            Ok(line) => buf.extend_from_slice(line.as_bytes()),
                            Err(_) => break,
                        }
                    }
                    queued.fetch_sub(buf.len(), Ordering::AcqRel);
                    if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                        // Nowhere to report to but stderr; keep serving.
                        eprintln!("rempart: cannot write the access log");
                    }
                    let drained = buf.len() < 60 * 1024;
                    buf.clear();
                    if drained {
                        // The line is empty: a short pause lets the next lines gather, so that
                        // under load the requests' sends find the writer awake (no wake-up, a
                        // system call, per line) and the file gets one write per batch.
                        std::thread::sleep(ACCESS_LOG_PAUSE);
                    }
                }
            })?;
        Ok(())
    }
}

/// The time now as RFC 3339 UTC with milliseconds, e.g. `2026-11-29T10:18:41.123Z`.
pub fn rfc3339_now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let now = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let millis = now.subsec_millis();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Current value of the in-flight request counter.
pub fn in_flight(metrics: &Metrics) -> i64 {
    metrics.requests_in_flight.load(Ordering::Acquire)
}

/// Requests in flight plus request heads being read: what a drain waits for.
pub fn busy(metrics: &Metrics) -> i64 {
    metrics.requests_in_flight.load(Ordering::Acquire)
        + metrics.heads_in_progress.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(18_723), (2021, 4, 6));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn route_metrics_count_by_status() {
        let metrics = Metrics::new().expect("registry");
        let route = RouteMetrics::new(&metrics, "login");
        route.count(200);
        route.count(200);
        route.count(404);
        route.count(999);
        assert_eq!(
            metrics
                .requests_total
                .with_label_values(&["login", "200"])
                .get(),
            2
        );
        assert_eq!(
            metrics
                .requests_total
                .with_label_values(&["login", "999"])
                .get(),
            1
        );
        let text = String::from_utf8(metrics.render().expect("render")).expect("utf8");
        assert!(text.contains("rempart_requests_total{route=\"login\",status=\"404\"} 1"));
    }

    #[test]
    fn long_fields_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("/short", 10), "/short");
        let long = "/é".repeat(1000);
        let clipped = clip(&long, LOGGED_PATH_BYTES);
        assert!(clipped.len() <= LOGGED_PATH_BYTES);
        assert!(clipped.ends_with("..."));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let log = AccessLog::new(AccessLogTarget::Stdout);
        let path = "p".repeat(LOGGED_PATH_BYTES);
        let record = AccessRecord {
            time: std::time::SystemTime::now(),
            client_ip: None,
            method: "GET",
            host: "",
            path: &path,
            status: 200,
            route: "",
            upstream: "",
            datacenter: "",
            server: None,
            duration_ms: 0.0,
            upstream_ms: None,
            queue_ms: None,
            retries: 0,
            reason: None,
            limit: None,
            request_id: "",
        };
        // No writer runs: the queue fills up to its byte budget, not to its line count.
        let written = (0..ACCESS_LOG_BACKLOG)
            .take_while(|_| log.write(&record))
            .count();
        assert!(written < ACCESS_LOG_BACKLOG);
        let queued = log.queued.load(Ordering::Relaxed);
        assert!(queued <= ACCESS_LOG_BUFFER_BYTES, "{queued}");
        assert!(queued > ACCESS_LOG_BUFFER_BYTES - 2 * 1024, "{queued}");
    }
}
