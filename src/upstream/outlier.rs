//! Passive outlier ejection from live traffic: consecutive failures of one kind eject a server
//! for `eject_for`, doubled on each repeat up to 5 minutes. "Never reached the server"
//! (connect refused or timed out) and "the server failed" (reset, response timeout, 502-504)
//! are counted apart.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The longest ejection, whatever the number of repeats.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// The kind of a failed try, as outlier detection and retries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request never reached the server: connection refused, unreachable, connect timeout.
    Connect,
    /// The server was reached and failed: reset, response timeout, 502, 503 or 504.
    Server,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect failures",
            Failure::Server => "server failures",
        }
    }
}

/// Ejection state of one server (atomics; the thread that ejects wins a compare-and-swap).
#[derive(Default)]
pub struct Ejection {
    connect_failures: AtomicU32,
    server_failures: AtomicU32,
    /// End of the current or last ejection (clock ms); 0 = never ejected.
    until_ms: AtomicU64,
    /// Ejections so far.
    count: AtomicU32,
    /// Doublings of the current streak: the next ejection lasts `eject_for << level`.
    level: AtomicU32,
}

/// What `/status` shows of an ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionView {
    pub until_ms: Option<u64>,
    pub count: u32,
    pub consecutive_connect_failures: u32,
    pub consecutive_server_failures: u32,
}

impl Ejection {
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn view(&self, now_ms: u64) -> EjectionView {
        let until = self.until_ms.load(Ordering::Relaxed);
        EjectionView {
            until_ms: (until > now_ms).then_some(until),
            count: self.count.load(Ordering::Relaxed),
            consecutive_connect_failures: self.connect_failures.load(Ordering::Relaxed),
            consecutive_server_failures: self.server_failures.load(Ordering::Relaxed),
        }
    }

    /// A try succeeded: the failure streaks restart.
    pub fn on_success(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
        if self.server_failures.load(Ordering::Relaxed) != 0 {
            self.server_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A try failed. Returns how long the server is now ejected for when this failure ejected
    /// it (`threshold` failures of this kind in a row). Failures of tries that were already under
    /// way when the server was ejected do not eject it again.
    pub fn on_failure(
        &self,
        kind: Failure,
        now_ms: u64,
        threshold: u32,
        eject_for: Duration,
    ) -> Option<Duration> {
        let counter = match kind {
            Failure::Connect => &self.connect_failures,
            Failure::Server => &self.server_failures,
        };
        let previous_until = self.until_ms.load(Ordering::Relaxed);
        if previous_until > now_ms {
            return None;
        }
        let failures = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if failures < threshold.max(1) {
            return None;
        }
        // A repeat within MAX_EJECTION of the end of the last ejection doubles the time;
        // a server that stayed in longer than that starts again from `eject_for`.
        let max = MAX_EJECTION.max(eject_for);
        let repeat = previous_until != 0
            && now_ms.saturating_sub(previous_until) < MAX_EJECTION.as_millis() as u64;
        let level = if repeat {
            self.level.load(Ordering::Relaxed).saturating_add(1).min(16)
        } else {
            0
        };
        let duration = eject_for.saturating_mul(1 << level).min(max);
        let until = now_ms + duration.as_millis() as u64;
        if self
            .until_ms
            .compare_exchange(previous_until, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        self.level.store(level, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.connect_failures.store(0, Ordering::Relaxed);
        self.server_failures.store(0, Ordering::Relaxed);
        Some(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::state::Clock;

    const TEN_S: Duration = Duration::from_secs(10);

    fn fail(e: &Ejection, clock: &Clock, kind: Failure) -> Option<Duration> {
        e.on_failure(kind, clock.now_ms(), 3, TEN_S)
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_success_resets() {
        let clock = Clock::new();
        let e = Ejection::default();
        assert_eq!(fail(&e, &clock, Failure::Server), None);
        assert_eq!(fail(&e, &clock, Failure::Server), None);
        e.on_success();
        assert_eq!(fail(&e, &clock, Failure::Server), None);
        assert_eq!(fail(&e, &clock, Failure::Server), None);
        assert_eq!(fail(&e, &clock, Failure::Server), Some(TEN_S));
        assert!(e.is_ejected(clock.now_ms()));
        // In-flight failures during the ejection change nothing.
        for _ in 0..5 {
            assert_eq!(fail(&e, &clock, Failure::Server), None);
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(e.is_ejected(clock.now_ms()));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!e.is_ejected(clock.now_ms()));
        assert_eq!(e.view(clock.now_ms()).count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn kinds_are_counted_apart() {
        let clock = Clock::new();
        let e = Ejection::default();
        assert_eq!(fail(&e, &clock, Failure::Connect), None);
        assert_eq!(fail(&e, &clock, Failure::Server), None);
        assert_eq!(fail(&e, &clock, Failure::Connect), None);
        assert_eq!(fail(&e, &clock, Failure::Server), None);
        let view = e.view(clock.now_ms());
        assert_eq!(view.consecutive_connect_failures, 2);
        assert_eq!(view.consecutive_server_failures, 2);
        assert_eq!(fail(&e, &clock, Failure::Connect), Some(TEN_S));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_doubles_up_to_five_minutes_then_resets() {
        let clock = Clock::new();
        let e = Ejection::default();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let mut ejected = None;
            for _ in 0..3 {
                ejected = ejected.or(fail(&e, &clock, Failure::Server));
            }
            let d = ejected.expect("three failures eject");
            seen.push(d.as_secs());
            // Back in just after the ejection ends, then fails again.
            tokio::time::advance(d + Duration::from_millis(1)).await;
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(e.view(clock.now_ms()).count, 8);

        // Healthy for more than five minutes: the next ejection is short again.
        tokio::time::advance(MAX_EJECTION + Duration::from_secs(1)).await;
        let mut ejected = None;
        for _ in 0..3 {
            ejected = ejected.or(fail(&e, &clock, Failure::Connect));
        }
        assert_eq!(ejected, Some(TEN_S));
    }
}
