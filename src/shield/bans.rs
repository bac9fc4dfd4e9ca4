//! Bans: client addresses refused `after` times `within` a window are answered 403 for a while.
//! Checking costs one look-up in a sharded map (none while nobody is banned); the violation
//! counts that lead to a ban are bounded in number and swept with the bans, and the bans
//! themselves are bounded by `shield.ban.max_entries`: beyond, the oldest ban is dropped for the
//! new one (and counted), so a ban wave from a million addresses cannot grow memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
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
    /// Bans in the order they were made (key, until); entries of bans lifted or replaced since
    /// are skipped and swept. Locked when a ban is made, lifted or listed, never by a request
    /// that is only checked.
    order: Mutex<VecDeque<(u64, Instant)>>,
    /// Bans dropped to make room (`shield.ban.max_entries`).
    evicted: AtomicU64,
    /// Bans made since start (the history's new bans per second).
    made: AtomicU64,
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
        self.ban(key, client(), rule.duration, rule.max_entries);
        true
    }

    fn order(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Instant)>> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ban a key for `duration` from now; at most `max_entries` bans are kept (the oldest goes).
    pub fn ban(&self, key: u64, client: String, duration: Duration, max_entries: usize) {
        let until = Instant::now() + duration;
        let entry = BanEntry {
            client,
            since: std::time::SystemTime::now(),
            until,
        };
        let mut order = self.order();
        if !self.bans.contains_key(&key) {
            while self.bans.len() >= max_entries.max(1) {
                let Some((old, old_until)) = order.pop_front() else {
                    break;
                };
                if self
                    .bans
                    .remove_if(&old, |_, e| e.until == old_until)
                    .is_some()
                {
                    self.active.fetch_sub(1, Ordering::Relaxed);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if self.bans.insert(key, entry).is_none() {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        self.made.fetch_add(1, Ordering::Relaxed);
        order.push_back((key, until));
    }

    /// Bans dropped to make room since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Bans made since start.
    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// Lift a ban; returns whether there was one.
    pub fn lift(&self, key: u64) -> bool {
        self.violations.remove(&key);
        let _order = self.order();
        let lifted = self.bans.remove(&key).is_some();
        if lifted {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
        lifted
    }

    /// Bans in force, most recent first, from the `offset`-th: (client, seconds left, since),
    /// at most `limit` of them.
    pub fn list(&self, offset: usize, limit: usize) -> Vec<(String, u64, std::time::SystemTime)> {
        let now = Instant::now();
        let order = self.order();
        order
            .iter()
            .rev()
            .filter_map(|(key, until)| {
                let entry = self.bans.get(key)?;
                (entry.until == *until && entry.until > now).then(|| {
                    let left = entry.until.saturating_duration_since(now);
                    (entry.client.clone(), left.as_secs().max(1), entry.since)
                })
            })
            .skip(offset)
            .take(limit)
            .collect()
    }

    /// Drop ended bans and violation windows older than `within`; returns the bans in force.
    pub fn sweep(&self, within: Duration) -> usize {
        let now = Instant::now();
        {
            let mut order = self.order();
            self.bans.retain(|_, e| e.until > now);
            self.active.store(self.bans.len(), Ordering::Relaxed);
            order.retain(|(key, until)| self.bans.get(key).is_some_and(|e| e.until == *until));
            order.shrink_to_fit();
        }
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
            max_entries: 1000,
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
        assert_eq!(bans.list(0, 10).len(), 1);
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
        bans.ban(9, "x".into(), Duration::from_secs(60), 10);
        assert!(bans.banned(9).is_some());
        assert!(bans.lift(9));
        assert!(!bans.lift(9));
        assert_eq!(bans.banned(9), None);
        assert_eq!(bans.active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_ban_makes_room_beyond_max_entries() {
        let bans = BanList::default();
        for key in 0..10u64 {
            bans.ban(key, format!("c{key}"), Duration::from_secs(600), 4);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(bans.active(), 4);
        assert_eq!(bans.evicted(), 6);
        assert_eq!(bans.made(), 10, "evicted bans were made all the same");
        assert_eq!(bans.banned(5), None, "evicted");
        assert!(bans.banned(9).is_some());
        let listed: Vec<String> = bans.list(0, 10).into_iter().map(|b| b.0).collect();
        assert_eq!(listed, vec!["c9", "c8", "c7", "c6"], "most recent first");
        let page: Vec<String> = bans.list(1, 2).into_iter().map(|b| b.0).collect();
        assert_eq!(page, vec!["c8", "c7"]);
        // A lifted ban leaves a stale entry behind, skipped and then swept.
        assert!(bans.lift(8));
        assert_eq!(bans.list(0, 10).len(), 3);
        bans.sweep(Duration::from_secs(60));
        assert_eq!(bans.order().len(), 3);
        // Banning the same key again does not evict anyone.
        bans.ban(9, "c9".into(), Duration::from_secs(600), 4);
        assert_eq!(bans.active(), 3);
    }
}
