//! The one task that feeds the history: every second it reads the counters and gauges Rempart
//! already keeps (requests and 5xx answered, answers by reason, bans, the request-duration
//! histogram, each login queue) and hands them to the timeline. It adds nothing to the
//! request path; its own cost is a few atomic loads, one collection of two metric families
//! and one short hold of each queue's lock a second.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::core::Collector;

use super::latency::Buckets;
use super::timeline::{QueueReading, Reading, TOP_TENANTS};
use crate::runtime::Runtime;

/// Read what the history records, now.
pub fn read(runtime: &Runtime) -> Reading {
    let metrics = &runtime.metrics;
    let answers = metrics
        .responses_generated_total
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .filter_map(|metric| {
            let reason = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "reason")?
                .value()
                .to_string();
            Some((reason, metric.get_counter().value() as u64))
        })
        .collect();
    let latency = Buckets::sum_of(&metrics.request_duration_seconds.collect());
    let bans = &runtime.shield_state.bans;
    let queues = runtime
        .load()
        .queues
        .iter()
        .map(|queue| {
            let sample = queue.core.sample(TOP_TENANTS);
            QueueReading {
                name: queue.name.clone(),
                waiting: sample.waiting as u64,
                in_flight: sample.in_flight as u64,
                limit: sample.limit as u64,
                admitted: sample.admitted,
                top_tenants: sample.top_tenants,
            }
        })
        .collect();
    Reading {
        requests: metrics.requests_answered.load(Ordering::Relaxed),
        errors_5xx: metrics.responses_5xx.load(Ordering::Relaxed),
        answers,
        bans_made: bans.made(),
        bans_active: bans.active() as u64,
        latency,
        queues,
    }
}

/// Whole seconds in `d`, to the nearest.
fn rounded_seconds(d: Duration) -> u64 {
    (d.as_millis().saturating_add(500) / 1000) as u64
}

/// The background service that samples once a second.
pub struct Sampler {
    runtime: Arc<Runtime>,
}

impl Sampler {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Sampler { runtime }
    }
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let started = tokio::time::Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        // A late tick is not made up by a burst: the timeline spreads it over the seconds.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let tick = rounded_seconds(started.elapsed());
                    let unix = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, rounded_seconds);
                    let reading = read(&self.runtime);
                    self.runtime.history.record(tick, unix, reading);
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
