//! Bans: client addresses refused `after` times `within` a window are answered 403 for a while.
//! Checking costs one look-up in a sharded map (none while nobody is banned); the violation
//! counts that lead to a ban are bounded in number and swept with the bans.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::config::Ban;

/// Violation windows tracked at most; beyond, new violators are not counted until a sweep.
const MAX_TRACKED_VIOLATORS: usize = 100_000;

/// One ban.
#[derive(Debug, Clone)]
pub struct BanEntry {
    /// The address (or IPv6 prefix) banned, for people.
    pub client: String,
    pub since: std::time::SystemTime,
    pub until: Instant,
}

struct Violations {
    window_start: Instant,
    count: u32,
}

/// Bans and the violation counts that lead to them, by client_ip key.
#[derive(Default)]
pub struct BanList {
    bans: DashMap<u64, BanEntry>,
    violations: DashMap<u64, Violations>,
    /// Bans in the map, so that a request looks nothing up while nobody is banned.
    active: AtomicUsize,
}

impl BanList {
    /// The ban in force for this key, if any.
    pub fn banned(&self, key: u64) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let entry = self.bans.get(&key)?;
        let left = entry.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Count a refusal of this client; returns true when it is banned from now on.
    pub fn violation(&self, key: u64, client: impl FnOnce() -> String, rule: &Ban) -> bool {
        let now = Instant::now();
        if self.banned(key).is_some() {
            return false;
        }
        let count = match self.violations.get_mut(&key) {
            Some(mut v) => {
                if now.saturating_duration_since(v.window_start) > rule.within {
                    v.window_start = now;
                    v.count = 0;
                }
                v.count += 1;
                v.count
            }
            None => {
                if self.violations.len() >= MAX_TRACKED_VIOLATORS {
                    return false;
                }
                self.violations.insert(
                    key,
                    Violations {
                        window_start: now,
                        count: 1,
                    },
                );
                1
            }
        };
        if count < rule.after {
            return false;
        }
        self.violations.remove(&key);
        self.ban(key, client(), rule.duration);
        true
    }

    /// Ban a key for `duration` from now.
    pub fn ban(&self, key: u64, client: String, duration: Duration) {
        let entry = BanEntry {
            client,
            since: std::time::SystemTime::now(),
            until: Instant::now() + duration,
        };
        if self.bans.insert(key, entry).is_none() {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lift a ban; returns whether there was one.
    pub fn lift(&self, key: u64) -> bool {
        self.violations.remove(&key);
        let lifted = self.bans.remove(&key).is_some();
        if lifted {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
        lifted
    }

    /// Bans in force: (client, seconds left, since).
    pub fn list(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .bans
            .iter()
            .filter(|e| e.until > now)
            .map(|e| {
                let left = e.until.saturating_duration_since(now);
                (e.client.clone(), left.as_secs().max(1), e.since)
            })
            .collect();
        v.sort();
        v
    }

    /// Drop ended bans and violation windows older than `within`; returns the bans in force.
    pub fn sweep(&self, within: Duration) -> usize {
        let now = Instant::now();
        self.bans.retain(|_, e| e.until > now);
        self.active.store(self.bans.len(), Ordering::Relaxed);
        self.violations
            .retain(|_, v| now.saturating_duration_since(v.window_start) <= within);
        self.violations.shrink_to_fit();
        self.bans.len()
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(after: u32, within: u64, duration: u64) -> Ban {
        Ban {
            after,
            within: Duration::from_secs(within),
            duration: Duration::from_secs(duration),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn banned_after_n_violations_within_the_window() {
        let bans = BanList::default();
        let rule = rule(3, 60, 600);
        assert!(!bans.violation(1, || "a".into(), &rule));
        assert!(!bans.violation(1, || "a".into(), &rule));
        assert_eq!(bans.banned(1), None);
        assert!(bans.violation(1, || "a".into(), &rule));
        assert!(bans.banned(1).is_some());
        assert_eq!(bans.banned(2), None);
        assert_eq!(bans.list().len(), 1);
        assert_eq!(bans.active(), 1);
        // The ban ends by itself.
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(bans.banned(1), None);
        assert_eq!(bans.sweep(rule.within), 0);
        assert_eq!(bans.active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn violations_spread_over_windows_do_not_ban() {
        let bans = BanList::default();
        let rule = rule(3, 10, 600);
        for _ in 0..5 {
            assert!(!bans.violation(1, || "a".into(), &rule));
            assert!(!bans.violation(1, || "a".into(), &rule));
            tokio::time::advance(Duration::from_secs(11)).await;
        }
        assert_eq!(bans.banned(1), None);
        bans.sweep(rule.within);
        assert_eq!(bans.violations.len(), 0, "old windows are swept");
    }

    #[tokio::test(start_paused = true)]
    async fn lifting() {
        let bans = BanList::default();
        bans.ban(9, "x".into(), Duration::from_secs(60));
        assert!(bans.banned(9).is_some());
        assert!(bans.lift(9));
        assert!(!bans.lift(9));
        assert_eq!(bans.banned(9), None);
        assert_eq!(bans.active(), 0);
    }
}
