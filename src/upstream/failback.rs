//! Which datacenter is up and which one is active: traffic goes to the first datacenter that
//! is up, and returns to a better one only after it has stayed up for `failback_after` (once a
//! datacenter has been seen down; at start a datacenter is used as soon as it is up).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::state::{DatacenterState, NOT_UP};

/// What the servers of a datacenter say right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DcView {
    /// Enough usable servers (`min_healthy`) and not drained.
    pub up: bool,
    /// Known to be unfit (drained, or a server down or ejected), as opposed to merely unknown.
    pub known_down: bool,
    /// No server has had a check yet (just started): a worse datacenter does not take the
    /// traffic before this one's first checks say whether it is up.
    pub pending: bool,
}

/// A change found by an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up(usize),
    Down(usize),
    /// The active datacenter changed (None: every datacenter is down).
    Active {
        from: Option<usize>,
        to: Option<usize>,
    },
}

/// Whether a datacenter that is up may take traffic back from a worse one.
pub fn eligible(dc: &DatacenterState, now_ms: u64, failback_after: Duration) -> bool {
    failback_remaining(dc, now_ms, failback_after) == Some(Duration::ZERO)
}

/// For a datacenter that is up: how long before it may take traffic back (zero when it may).
/// None when it is not up.
pub fn failback_remaining(
    dc: &DatacenterState,
    now_ms: u64,
    failback_after: Duration,
) -> Option<Duration> {
    let since = dc.up_since_ms.load(Ordering::Relaxed);
    if since == NOT_UP {
        return None;
    }
    if !dc.ever_down.load(Ordering::Relaxed) {
        return Some(Duration::ZERO);
    }
    let stayed = Duration::from_millis(now_ms.saturating_sub(since));
    Some(failback_after.saturating_sub(stayed))
}

/// Update the datacenters' up state from `views` (same order: priority) and choose the active
/// one. Returns the changes, in order; the caller logs them and counts them. Not thread-safe by
/// itself: the caller serialises evaluations of one upstream.
pub fn evaluate(
    dcs: &[&DatacenterState],
    views: &[DcView],
    now_ms: u64,
    failback_after: Duration,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (index, (dc, view)) in dcs.iter().zip(views).enumerate() {
        let was_up = dc.is_up();
        if view.up && !was_up {
            dc.up_since_ms.store(now_ms, Ordering::Relaxed);
            changes.push(Change::Up(index));
        } else if !view.up && was_up {
            dc.up_since_ms.store(NOT_UP, Ordering::Relaxed);
            dc.ever_down.store(true, Ordering::Relaxed);
            changes.push(Change::Down(index));
        }
        if !view.up && view.known_down {
            dc.ever_down.store(true, Ordering::Relaxed);
        }
    }

    let current = dcs.iter().position(|dc| dc.active.load(Ordering::Relaxed));
    let up = |i: usize| dcs[i].is_up();
    let ok = |i: usize| eligible(dcs[i], now_ms, failback_after);
    let next = match current {
        Some(c) if up(c) => Some((0..c).find(|&i| ok(i)).unwrap_or(c)),
        _ => (0..dcs.len())
            .find(|&i| ok(i))
            .or_else(|| (0..dcs.len()).find(|&i| up(i)))
            .filter(|&i| !views[..i].iter().any(|v| v.pending)),
    };
    if next != current {
        for (index, dc) in dcs.iter().enumerate() {
            dc.active.store(Some(index) == next, Ordering::Relaxed);
        }
        changes.push(Change::Active {
            from: current,
            to: next,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::state::Clock;

    const UP: DcView = DcView {
        up: true,
        known_down: false,
        pending: false,
    };
    const DOWN: DcView = DcView {
        up: false,
        known_down: true,
        pending: false,
    };
    /// Not checked yet.
    const PENDING: DcView = DcView {
        up: false,
        known_down: false,
        pending: true,
    };
    /// Checked, not up, nothing known down (e.g. a first check failed, not yet `fall`).
    const UNKNOWN: DcView = DcView {
        up: false,
        known_down: false,
        pending: false,
    };
    const FAILBACK: Duration = Duration::from_secs(30);

    fn active(dcs: &[DatacenterState]) -> Option<usize> {
        dcs.iter().position(|dc| dc.active.load(Ordering::Relaxed))
    }

    fn eval(dcs: &[DatacenterState], views: &[DcView], clock: &Clock) -> Vec<Change> {
        let refs: Vec<&DatacenterState> = dcs.iter().collect();
        evaluate(&refs, views, clock.now_ms(), FAILBACK)
    }

    #[tokio::test(start_paused = true)]
    async fn start_uses_the_first_datacenter_as_soon_as_it_is_up() {
        let clock = Clock::new();
        let dcs = [DatacenterState::default(), DatacenterState::default()];
        assert!(eval(&dcs, &[PENDING, PENDING], &clock).is_empty());
        assert_eq!(active(&dcs), None);
        // dc-b is checked first: it waits for dc-a's first checks.
        assert_eq!(eval(&dcs, &[PENDING, UP], &clock), vec![Change::Up(1)]);
        assert_eq!(active(&dcs), None);
        // dc-a's first check failed (one failure, not yet down): dc-b takes the traffic.
        eval(&dcs, &[UNKNOWN, UP], &clock);
        assert_eq!(active(&dcs), Some(1));
        // dc-a comes up a moment later: never seen down, so no hysteresis at start.
        tokio::time::advance(Duration::from_millis(50)).await;
        let changes = eval(&dcs, &[UP, UP], &clock);
        assert_eq!(
            changes,
            vec![
                Change::Up(0),
                Change::Active {
                    from: Some(1),
                    to: Some(0)
                }
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failover_at_once_failback_only_after_failback_after() {
        let clock = Clock::new();
        let dcs = [DatacenterState::default(), DatacenterState::default()];
        eval(&dcs, &[UP, UP], &clock);
        assert_eq!(active(&dcs), Some(0));

        tokio::time::advance(Duration::from_secs(5)).await;
        let changes = eval(&dcs, &[DOWN, UP], &clock);
        assert_eq!(
            changes,
            vec![
                Change::Down(0),
                Change::Active {
                    from: Some(0),
                    to: Some(1)
                }
            ]
        );

        // dc-a recovers, flaps once, recovers again: the wait restarts.
        tokio::time::advance(Duration::from_secs(5)).await;
        eval(&dcs, &[UP, UP], &clock);
        tokio::time::advance(Duration::from_secs(20)).await;
        eval(&dcs, &[DOWN, UP], &clock);
        eval(&dcs, &[UP, UP], &clock);
        assert_eq!(active(&dcs), Some(1));
        assert_eq!(
            failback_remaining(&dcs[0], clock.now_ms(), FAILBACK),
            Some(FAILBACK)
        );
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(eval(&dcs, &[UP, UP], &clock).is_empty());
        assert_eq!(active(&dcs), Some(1));
        assert_eq!(
            failback_remaining(&dcs[0], clock.now_ms(), FAILBACK),
            Some(Duration::from_secs(1))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            eval(&dcs, &[UP, UP], &clock),
            vec![Change::Active {
                from: Some(1),
                to: Some(0)
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_then_the_first_that_comes_back() {
        let clock = Clock::new();
        let dcs = [DatacenterState::default(), DatacenterState::default()];
        eval(&dcs, &[UP, UP], &clock);
        eval(&dcs, &[DOWN, DOWN], &clock);
        assert_eq!(active(&dcs), None);
        // dc-a comes back first: better than nothing, even within failback_after.
        tokio::time::advance(Duration::from_secs(1)).await;
        eval(&dcs, &[UP, DOWN], &clock);
        assert_eq!(active(&dcs), Some(0));
        // Both up, dc-a not yet proven: stays on dc-a (it is active and up).
        eval(&dcs, &[UP, UP], &clock);
        assert_eq!(active(&dcs), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_datacenter_known_down_at_start_waits_failback_after() {
        let clock = Clock::new();
        let dcs = [DatacenterState::default(), DatacenterState::default()];
        eval(&dcs, &[DOWN, UP], &clock);
        assert_eq!(active(&dcs), Some(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        eval(&dcs, &[UP, UP], &clock);
        assert_eq!(active(&dcs), Some(1));
        tokio::time::advance(FAILBACK).await;
        eval(&dcs, &[UP, UP], &clock);
        assert_eq!(active(&dcs), Some(0));
    }
}
