//! Scheduled policies: named overlays of limits and login-queue settings, in force at the times
//! their windows give in one time zone, put in force through the same snapshot swap as a
//! reload (a queued client keeps its place, tickets stay valid, bans stay, buckets of limits
//! whose definition did not change stay).
//!
//! - [`calendar`]: when (pure functions of an instant: in force at `t`, the next change);
//! - [`overlay`]: what (the fields an overlay sets, applied to the base file);
//! - [`clock`]: the time schedules read (the system's, or shifted for end-to-end tests);
//! - [`Scheduler`]: the background task that sleeps until the next change (a minute at most)
//!   and asks the runtime to swap; a reload wakes it to compute again.

pub mod calendar;
pub mod clock;
pub mod overlay;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Schedules;
use crate::runtime::Runtime;

/// The longest the scheduler sleeps: a wall clock stepped (NTP, a suspended machine) is noticed
/// within this.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// `t` in `tz` to the second, RFC 3339 with the zone's offset: `2027-09-06T07:40:00+02:00`.
pub fn local_text(tz: &TimeZone, t: Timestamp) -> String {
    let t = Timestamp::from_second(t.as_second()).unwrap_or(t);
    t.display_with_offset(tz.to_offset(t)).to_string()
}

/// The names of `indexes` in `schedules.overlays`.
pub fn names(schedules: &Schedules, indexes: &[usize]) -> Vec<String> {
    indexes
        .iter()
        .filter_map(|&i| schedules.overlays.get(i))
        .map(|o| o.name.clone())
        .collect()
}

/// What begins and ends at a change from `before` to `after`.
pub fn begins_ends(before: &[usize], after: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let begins = after
        .iter()
        .copied()
        .filter(|i| !before.contains(i))
        .collect();
    let ends = before
        .iter()
        .copied()
        .filter(|i| !after.contains(i))
        .collect();
    (begins, ends)
}

/// One line on what schedules do from `now`, for `rempart -t` and the start-up log:
/// `in force now: none; next change 2027-09-06T07:40:00+02:00 (Europe/Paris): school_morning begins`.
pub fn describe(schedules: &Schedules, now: Timestamp) -> String {
    let tz = &schedules.time_zone;
    let active = calendar::active_at(tz, &schedules.windows, now);
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut line = format!(
        "schedules ({}, now {}): in force now: {}",
        schedules.time_zone_name,
        local_text(tz, now),
        list(names(schedules, &active))
    );
    match calendar::next_change(tz, &schedules.windows, now) {
        Some(change) => {
            let (begins, ends) = begins_ends(&active, &change.active);
            let mut what = Vec::new();
            if !begins.is_empty() {
                what.push(format!("{} begins", names(schedules, &begins).join(", ")));
            }
            if !ends.is_empty() {
                what.push(format!("{} ends", names(schedules, &ends).join(", ")));
            }
            line.push_str(&format!(
                "; next change {}: {}",
                local_text(tz, change.at),
                what.join(", ")
            ));
        }
        None => line.push_str("; no change ahead"),
    }
    line
}

/// The background task that puts overlays in force when their windows begin and end.
pub struct Scheduler {
    runtime: Arc<Runtime>,
}

impl Scheduler {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Scheduler { runtime }
    }
}

#[async_trait]
impl BackgroundService for Scheduler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.runtime.clock.shifted() {
            tracing::warn!(
                now = %self.runtime.clock.now(),
                "{} is set: schedules read a shifted clock (a testing aid; nothing else is shifted)",
                clock::CLOCK_ENV
            );
        }
        if let Some(schedules) = &self.runtime.load().base.schedules {
            tracing::info!("{}", describe(schedules, self.runtime.clock.now()));
        }
        loop {
            // The swap compiles a snapshot: off the async threads, as a reload is.
            let runtime = self.runtime.clone();
            let next = tokio::task::spawn_blocking(move || runtime.apply_schedule())
                .await
                .unwrap_or(Some(MAX_SLEEP));
            // Wake a millisecond after the change, so that the window's edge has been reached.
            let sleep = next.map(|d| (d + Duration::from_millis(1)).min(MAX_SLEEP));
            tokio::select! {
                () = async {
                    match sleep {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = self.runtime.schedule_changed.notified() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
