//! The history the dashboard draws: the last 15 minutes at one-second resolution, kept in
//! memory in fixed-size rings, and the events marked on them.
//!
//! - `ring.rs`: the fixed-size ring itself.
//! - `timeline.rs`: one point a second (requests, 5xx, answers by reason, bans, latency
//!   percentiles, each queue's depth, admissions and deepest tenants), from counter deltas.
//! - `latency.rs`: p50 and p95 of one second, from the request-duration histogram's buckets.
//! - `events.rs`: failovers, failbacks, reloads, ban waves, queue pauses, drains.
//! - `sampler.rs`: the one task that reads Rempart's existing counters every second.
//!
//! Nothing here runs on the request path: requests only bump the counters they already bump;
//! the sampler reads them once a second, and `GET /history` reads the rings.

pub mod events;
pub mod latency;
pub mod ring;
pub mod sampler;
pub mod timeline;

use std::sync::{Arc, Mutex};

use serde_json::Value;

pub use events::{Event, EventKind, Events};
pub use timeline::{QueueReading, Reading, Timeline, BAN_WAVE_SECONDS, SECONDS};

/// The per-second timeline and the events, owned by the runtime.
#[derive(Default)]
pub struct History {
    timeline: Mutex<Timeline>,
    pub events: Arc<Events>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the sampler's reading of tick `tick` (see [`Timeline::record`]); a ban wave that
    /// starts is marked as an event.
    pub fn record(&self, tick: u64, unix: u64, reading: Reading) {
        let wave = self.timeline().record(tick, unix, reading);
        if let Some(bans) = wave {
            self.events.record(
                EventKind::BanWave,
                &format!("{bans} new bans within {BAN_WAVE_SECONDS} s"),
            );
        }
    }

    /// `GET /history`: the timeline and the events.
    pub fn to_json(&self) -> Value {
        let mut json = self.timeline().to_json();
        let events: Vec<Value> = self.events.list().iter().map(Event::to_json).collect();
        if let Some(object) = json.as_object_mut() {
            object.insert("events".into(), Value::from(events));
        }
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_wave_is_an_event() {
        let history = History::new();
        history.record(0, 100, Reading::default());
        history.record(
            1,
            101,
            Reading {
                bans_made: 50,
                bans_active: 50,
                ..Reading::default()
            },
        );
        let json = history.to_json();
        assert_eq!(json["points"], 1);
        let events = json["events"].as_array().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["kind"], "ban_wave");
        assert_eq!(events[0]["detail"], "50 new bans within 10 s");
    }
}
