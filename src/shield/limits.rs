//! Rate limits: one governor GCRA limiter per limit, over a key store that holds at most
//! `max_keys` keys and sends every key beyond that to one shared overflow bucket.
//!
//! A limiter's state outlives configuration generations: it is kept in the shield registry by
//! the limit's identity (name and definition), so a reload keeps the buckets of unchanged limits.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::config::{Limit, LimitKey, Rate};

/// Time from tokio's clock, so that unit tests can run on paused time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;
    fn add(self, other: Nanos) -> Self {
        TokioInstant(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(
            self.0
                .checked_sub(Duration::from(duration))
                .unwrap_or(self.0),
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

thread_local! {
    /// Set while a limiter is only asked, not charged (see [`LimitState::test`]).
    static PEEK: Cell<bool> = const { Cell::new(false) };
    /// Set by the last decision when it was made by the overflow bucket.
    static OVERFLOWED: Cell<bool> = const { Cell::new(false) };
}

/// A governor key store with a cap: keys beyond `max_keys` share one overflow bucket.
pub struct CappedStore {
    map: DashMapStateStore<u64>,
    overflow: InMemoryState,
    max_keys: usize,
    /// Keys in `map`: counted up on insertion (a race may count one twice), set exactly by
    /// each sweep.
    len: AtomicUsize,
}

impl CappedStore {
    fn new(max_keys: usize) -> Self {
        CappedStore {
            map: DashMapStateStore::default(),
            overflow: InMemoryState::default(),
            max_keys,
            len: AtomicUsize::new(0),
        }
    }
}

/// Run a GCRA decision on one state; when peeking, the state is left as it was.
fn decide<T, E, F>(state: &InMemoryState, f: F, peek: bool) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    if !peek {
        return state.measure_and_replace(&NotKeyed::NonKey, f);
    }
    // Refusing every update leaves the state untouched and hands the decision back.
    match state.measure_and_replace(&NotKeyed::NonKey, |prev| Err::<((), Nanos), _>(f(prev))) {
        Err(decision) => decision.map(|(t, _)| t),
        Ok(()) => f(None).map(|(t, _)| t),
    }
}

impl StateStore for CappedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let peek = PEEK.get();
        if let Some(state) = self.map.get(key) {
            OVERFLOWED.set(false);
            return decide(&state, f, peek);
        }
        if self.len.load(Ordering::Relaxed) >= self.max_keys {
            OVERFLOWED.set(true);
            return decide(&self.overflow, f, peek);
        }
        OVERFLOWED.set(false);
        if peek {
            // A key not seen yet has a fresh bucket.
            return f(None).map(|(t, _)| t);
        }
        let entry = self.map.entry(*key).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            InMemoryState::default()
        });
        decide(&entry, f, false)
    }
}

impl ShrinkableKeyedStateStore<u64> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
        self.len.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }
}

type Limiter = RateLimiter<u64, CappedStore, TokioClock, NoOpMiddleware<TokioInstant>>;

/// What a limit identifies by: a changed definition starts with fresh buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitIdentity {
    name: String,
    key: String,
    rate: (u32, Duration),
    burst: u32,
    max_keys: usize,
    case_sensitive: bool,
}

impl LimitIdentity {
    pub fn of(limit: &Limit) -> Self {
        LimitIdentity {
            name: limit.name.clone(),
            key: format!("{:?}", limit.key),
            rate: (limit.rate.count, limit.rate.per),
            burst: limit.burst,
            max_keys: limit.max_keys,
            case_sensitive: limit.case_sensitive,
        }
    }
}

/// A limit's verdict on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Refused; the bucket has room again after this long. `overflow`: the decision was the
    /// shared overflow bucket's (the key was not tracked, the limit being full).
    Refuse {
        wait: Duration,
        overflow: bool,
    },
}

/// Keys a cluster limit refused lately, each with the time it is refused until: the store is
/// asked again only after (a flood from one key costs no round trip). At most `max` keys.
pub struct RefusedKeys {
    map: dashmap::DashMap<u64, tokio::time::Instant>,
    max: usize,
}

impl RefusedKeys {
    fn new(max: usize) -> Self {
        RefusedKeys {
            map: dashmap::DashMap::new(),
            max,
        }
    }

    /// How long this key is still refused, if it is.
    pub fn until(&self, key: u64) -> Option<Duration> {
        let left = self
            .map
            .get(&key)?
            .saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            self.map.remove(&key);
            return None;
        }
        Some(left)
    }

    /// The store refused this key for `wait`.
    pub fn refuse(&self, key: u64, wait: Duration) {
        if self.map.len() < self.max || self.map.contains_key(&key) {
            self.map.insert(key, tokio::time::Instant::now() + wait);
        }
    }

    fn sweep(&self) {
        let now = tokio::time::Instant::now();
        self.map.retain(|_, until| *until > now);
        self.map.shrink_to_fit();
    }
}

/// Tokens of a cluster limit taken from the store ahead (`lease`), by key: spent here without a
/// round trip until they run out or expire. At most `max` keys.
pub struct LeasedTokens {
    map: dashmap::DashMap<u64, (u32, tokio::time::Instant)>,
    max: usize,
}

impl LeasedTokens {
    fn new(max: usize) -> Self {
        LeasedTokens {
            map: dashmap::DashMap::new(),
            max,
        }
    }

    /// Spend one token of this key, if one is left and still valid.
    pub fn take(&self, key: u64) -> bool {
        let now = tokio::time::Instant::now();
        let Some(mut entry) = self.map.get_mut(&key) else {
            return false;
        };
        let (left, until) = *entry;
        if left == 0 || until <= now {
            drop(entry);
            self.map.remove(&key);
            return false;
        }
        entry.0 = left - 1;
        true
    }

    /// The store granted `tokens` more for this key, valid for `valid`.
    pub fn put(&self, key: u64, tokens: u32, valid: Duration) {
        if tokens == 0 || (self.map.len() >= self.max && !self.map.contains_key(&key)) {
            return;
        }
        self.map
            .insert(key, (tokens, tokio::time::Instant::now() + valid));
    }

    fn sweep(&self) {
        let now = tokio::time::Instant::now();
        self.map
            .retain(|_, (left, until)| *left > 0 && *until > now);
        self.map.shrink_to_fit();
    }
}

/// The long-lived state of one limit: its buckets and counters.
pub struct LimitState {
    limiter: Limiter,
    /// For a cluster limit: the keys the store refused lately.
    pub refused: RefusedKeys,
    /// For a cluster limit with a lease: tokens taken ahead.
    pub leased: LeasedTokens,
    /// Refusals (or would-be refusals in dry_run) since the limit exists.
    pub refusals: AtomicU64,
    /// Of which by the overflow bucket.
    pub overflow_refusals: AtomicU64,
}

/// The governor quota of a rate and burst.
pub fn quota(rate: Rate, burst: u32) -> Quota {
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = rate.per / rate.count.max(1);
    let period = if period.is_zero() {
        Duration::from_nanos(1)
    } else {
        period
    };
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

impl LimitState {
    pub fn new(limit: &Limit) -> Self {
        LimitState {
            limiter: RateLimiter::new(
                quota(limit.rate, limit.burst),
                CappedStore::new(limit.max_keys),
                TokioClock,
            ),
            refused: RefusedKeys::new(limit.max_keys),
            leased: LeasedTokens::new(limit.max_keys),
            refusals: AtomicU64::new(0),
            overflow_refusals: AtomicU64::new(0),
        }
    }

    fn verdict(&self, key: u64) -> Verdict {
        match self.limiter.check_key(&key) {
            Ok(()) => Verdict::Pass,
            Err(not_until) => Verdict::Refuse {
                wait: not_until.wait_time_from(TokioClock.now()),
                overflow: OVERFLOWED.get(),
            },
        }
    }

    /// A request that costs `cost` cells: a cluster limit decided by one node of N alone
    /// costs N, so that the node lets its share of the rate through.
    fn verdict_n(&self, key: u64, cost: u32) -> Verdict {
        let Some(n) = NonZeroU32::new(cost).filter(|n| n.get() > 1) else {
            return self.verdict(key);
        };
        match self.limiter.check_key_n(&key, n) {
            Ok(Ok(())) => Verdict::Pass,
            Ok(Err(not_until)) => Verdict::Refuse {
                wait: not_until.wait_time_from(TokioClock.now()),
                overflow: OVERFLOWED.get(),
            },
            // More than the burst: never passes (callers keep the cost within the burst).
            Err(_) => Verdict::Refuse {
                wait: Duration::from_secs(1),
                overflow: OVERFLOWED.get(),
            },
        }
    }

    /// [`Self::test`] for a request that costs `cost` cells.
    pub fn test_n(&self, key: u64, cost: u32) -> Verdict {
        PEEK.set(true);
        let verdict = self.verdict_n(key, cost);
        PEEK.set(false);
        verdict
    }

    /// [`Self::charge`] for a request that costs `cost` cells.
    pub fn charge_n(&self, key: u64, cost: u32) -> Verdict {
        self.verdict_n(key, cost)
    }

    /// Whether a request with this key would pass, without charging it.
    pub fn test(&self, key: u64) -> Verdict {
        PEEK.set(true);
        let verdict = self.verdict(key);
        PEEK.set(false);
        verdict
    }

    /// Charge a request with this key.
    pub fn charge(&self, key: u64) -> Verdict {
        self.verdict(key)
    }

    /// Keys tracked now (approximate between sweeps).
    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }

    /// Forget keys whose bucket is full again (indistinguishable from a new key) and give the
    /// memory back.
    pub fn sweep(&self) {
        self.refused.sweep();
        self.leased.sweep();
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Whether a limit's key comes from the request body.
pub fn reads_body(key: &LimitKey) -> bool {
    match key {
        LimitKey::Form(_) => true,
        LimitKey::Any(sources) => sources.iter().any(reads_body),
        _ => false,
    }
}

/// `RateLimit-Policy` window of a limit: seconds to refill the whole burst, at least 1.
pub fn window_seconds(rate: Rate, burst: u32) -> u64 {
    let per_request = rate.per.as_secs_f64() / f64::from(rate.count.max(1));
    (per_request * f64::from(burst.max(1))).ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitMode;

    fn limit(count: u32, per: Duration, burst: u32, max_keys: usize) -> Limit {
        Limit {
            name: "l".into(),
            key: LimitKey::ClientIp,
            rate: Rate { count, per },
            burst,
            mode: LimitMode::Enforce,
            max_keys,
            ban: true,
            case_sensitive: false,
            scope: crate::config::LimitScope::Local,
            lease: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let state = LimitState::new(&limit(1, Duration::from_secs(1), 3, 100));
        for _ in 0..3 {
            assert_eq!(state.charge(7), Verdict::Pass);
        }
        let Verdict::Refuse { wait, overflow } = state.charge(7) else {
            panic!("the fourth request passed");
        };
        assert!(!overflow);
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        // Another key has its own bucket.
        assert_eq!(state.charge(8), Verdict::Pass);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(state.charge(7), Verdict::Pass);
        assert!(matches!(state.charge(7), Verdict::Refuse { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn testing_does_not_charge() {
        let state = LimitState::new(&limit(1, Duration::from_secs(60), 2, 100));
        for _ in 0..10 {
            assert_eq!(state.test(1), Verdict::Pass);
        }
        assert_eq!(state.tracked_keys(), 0, "asking adds no key");
        assert_eq!(state.charge(1), Verdict::Pass);
        assert_eq!(state.charge(1), Verdict::Pass);
        assert!(matches!(state.test(1), Verdict::Refuse { .. }));
        assert!(matches!(state.charge(1), Verdict::Refuse { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_beyond_the_cap_share_the_overflow_bucket() {
        let state = LimitState::new(&limit(1, Duration::from_secs(60), 2, 3));
        for key in 0..3 {
            assert_eq!(state.charge(key), Verdict::Pass);
        }
        assert_eq!(state.tracked_keys(), 3);
        // New keys: one shared bucket of burst 2.
        assert_eq!(state.charge(100), Verdict::Pass);
        assert_eq!(state.charge(101), Verdict::Pass);
        assert!(matches!(
            state.charge(102),
            Verdict::Refuse { overflow: true, .. }
        ));
        assert_eq!(state.tracked_keys(), 3, "memory does not grow");
        // Tracked clients keep their own buckets.
        assert_eq!(state.charge(0), Verdict::Pass);
        assert!(matches!(
            state.charge(0),
            Verdict::Refuse {
                overflow: false,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_swept() {
        let state = LimitState::new(&limit(10, Duration::from_secs(1), 5, 1000));
        for key in 0..100 {
            state.charge(key);
        }
        assert_eq!(state.tracked_keys(), 100);
        state.sweep();
        assert_eq!(state.tracked_keys(), 100, "recent keys stay");
        tokio::time::advance(Duration::from_secs(2)).await;
        state.charge(5);
        state.sweep();
        assert_eq!(state.tracked_keys(), 1, "only the key in use stays");
    }

    #[test]
    fn windows() {
        let r = Rate {
            count: 20,
            per: Duration::from_secs(60),
        };
        assert_eq!(window_seconds(r, 10), 30);
        let r = Rate {
            count: 50,
            per: Duration::from_secs(1),
        };
        assert_eq!(window_seconds(r, 200), 4);
        assert_eq!(window_seconds(r, 1), 1);
    }
}
