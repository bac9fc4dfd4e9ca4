//! The events the history marks on its curves (failover, failback, reload, ban wave, queue
//! pause and resume, scheduled overlays, drains), with their time, in a bounded ring. They come
//! from the control plane (admin calls, reloads, schedule changes, datacenter evaluations) and
//! the sampler, never from a request that merely passes.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::ring::Ring;
use crate::telemetry::{clip, rfc3339};

/// Events kept; beyond, the oldest is forgotten.
pub const MAX_EVENTS: usize = 256;
/// An event's detail is cut to this many bytes.
pub const MAX_DETAIL_BYTES: usize = 256;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The active datacenter moved to a lower-priority one.
    Failover,
    /// Traffic came back to a better datacenter.
    Failback,
    /// Every datacenter of an upstream is down.
    AllDown,
    /// A datacenter took the traffic again after every one was down.
    Recovered,
    ReloadOk,
    ReloadFailed,
    /// New bans arrived faster than `BAN_WAVE` over `BAN_WAVE_SECONDS`.
    BanWave,
    QueuePause,
    QueueResume,
    /// Scheduled overlays came into force or ended (a new generation, as a reload makes).
    Schedule,
    /// A datacenter or a server drained, or undrained, through the admin API.
    Drain,
    Undrain,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failover => "failover",
            EventKind::Failback => "failback",
            EventKind::AllDown => "all_down",
            EventKind::Recovered => "recovered",
            EventKind::ReloadOk => "reload_ok",
            EventKind::ReloadFailed => "reload_failed",
            EventKind::BanWave => "ban_wave",
            EventKind::QueuePause => "queue_pause",
            EventKind::QueueResume => "queue_resume",
            EventKind::Schedule => "schedule",
            EventKind::Drain => "drain",
            EventKind::Undrain => "undrain",
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// For people: which upstream, datacenter, queue, generation or error.
    pub detail: Box<str>,
}

impl Event {
    pub fn to_json(&self) -> Value {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(self.unix_ms);
        json!({
            "kind": self.kind.as_str(),
            "at": rfc3339(at),
            "t": self.unix_ms as f64 / 1000.0,
            "detail": self.detail.as_ref(),
        })
    }
}

/// The bounded ring of events. Its lock is taken when an event happens and when `/history` is
/// read, never by a request.
pub struct Events {
    ring: Mutex<Ring<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            ring: Mutex::new(Ring::new(MAX_EVENTS)),
        }
    }
}

impl Events {
    /// Record an event that happens now.
    pub fn record(&self, kind: EventKind, detail: &str) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.record_at(kind, unix_ms, detail);
    }

    /// Record an event at a given time (the sampler's, or a test's).
    pub fn record_at(&self, kind: EventKind, unix_ms: u64, detail: &str) {
        let event = Event {
            kind,
            unix_ms,
            detail: clip(detail, MAX_DETAIL_BYTES).into(),
        };
        self.lock().push(event);
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring<Event>> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_count_and_detail() {
        let events = Events::default();
        let long = "é".repeat(1000);
        for i in 0..(MAX_EVENTS as u64 + 10) {
            events.record_at(EventKind::Drain, i, &long);
        }
        let list = events.list();
        assert_eq!(list.len(), MAX_EVENTS);
        assert_eq!(list[0].unix_ms, 10, "the oldest were forgotten");
        assert!(list.iter().all(|e| e.detail.len() <= MAX_DETAIL_BYTES));
        let json = list[0].to_json();
        assert_eq!(json["kind"], "drain");
        assert_eq!(json["t"], 0.01);
        assert_eq!(json["at"], "1970-01-01T00:00:00.010Z");
    }
}
