//! How many requests of a queue may be in flight to the upstream: a fixed `concurrency`, or an
//! adaptive limit between `adaptive.min` and `adaptive.max`.
//!
//! # The adaptive algorithm
//!
//! The latency of the upstream is compared with its *no-load latency* `min_rtt`, measured as
//! Envoy's adaptive concurrency filter does (its minRTT window: the limit pinned low for a few
//! round trips, periodically); the limit falls by Envoy's latency gradient and grows back along TCP
//! CUBIC's curve. Everything moves on samples, with the `now` given to `sample` (a
//! `tokio::time::Instant`, so tests run on paused or synthetic time); `limit()` reads no clock, no
//! background task runs, and a sample allocates nothing (samples go to a fixed buffer of 32).
//!
//! ## Why
//!
//! The previous algorithm (after Netflix's Gradient2) learned its baseline from the samples and let
//! it follow a lasting latency (5 % per sample while the latency was over twice it), so an overload
//! became the new normal: against an upstream whose throughput collapses past its capacity K it
//! wandered far above K (22 to 121 for K = 6), for 7 to 27 % of the throughput of a static limit of
//! K (simulated as below; measured: 11.6 logins/s against 59 for K = 6). Any baseline learned from
//! loaded samples has that flaw; one measured with the concurrency pinned low has not, which is
//! Envoy's choice, and it also makes an upstream that became uniformly slower the new baseline at
//! the next measurement. Envoy's update as is (`limit × gradient + sqrt(limit)` every 100 ms)
//! overshoots such an upstream, though: the head room `sqrt(limit)` is added at every window, a
//! window mixes samples of requests sent under earlier limits, and one request past K doubles the
//! latency; simulated with a perfect `min_rtt`, it gives 8 to 56 % of a static K. Hence windows of
//! fresh samples only, a bounded decrease, and a growth that comes back quickly to where congestion
//! was last seen, stays just below it, and only then probes further (CUBIC).
//!
//! ## The no-load latency
//!
//! - It is measured at start, then `PROBE_INTERVAL` (30 s) plus a random 0 to `PROBE_JITTER` (15 %,
//!   Envoy's default) of it after the end of the last measurement (the jitter keeps the instances
//!   and queues in front of one upstream from measuring, hence throttling, all at once).
//! - Measuring pins the limit to `PROBE_CONCURRENCY` (3, Envoy's `min_concurrency` default), at
//!   most half the limit learned, rounded up (so that an upstream that takes fewer than 3 is still
//!   measured unloaded), within `[min, max]`. Once `PROBE_ROUNDS` (7) samples per request allowed
//!   in flight (21 at 3; Envoy takes 50) have come from requests sent after the pin, their
//!   `PROBE_PERCENTILE` (the median, Envoy's default) is `min_rtt`, and the limit goes back to
//!   where it was. A measurement takes about 8 round trips (the drain, then 7).
//! - It is measured again at once after `STALE_WINDOWS` (5) consecutive windows congested at `min`
//!   (Envoy's rule: the upstream may have become slower for good), or faster than `FASTER` (0.75) ×
//!   `min_rtt` (it became faster: a lower `min_rtt` is not taken from loaded windows directly,
//!   since a running minimum of noisy windows only ever drifts down).
//! - A new `min_rtt` off the old one by more than a factor `1 + BUFFER` resets the growth to slow
//!   start: what was learned about the capacity held for another upstream.
//!
//! ## Windows
//!
//! A window opens at each decision. Only samples of requests sent after it opened count (sent =
//! `now - latency`), so that a window measures one limit, and requests sent under an earlier,
//! higher limit do not push it down twice. A window closes after `max(min(limit, WINDOW_MIN),
//! limit/2)` fresh samples (`WINDOW_MIN` = 4), at most `WINDOW_MAX` (32): about one round trip. Its
//! latency is their `WINDOW_PERCENTILE` (the median, as Envoy's default).
//!
//! ## The decision at the end of each window
//!
//! With `threshold = (1 + BUFFER) × min_rtt` (`BUFFER` = 0.5: Envoy's default buffer is 25 %; 50 %
//! leaves room for the noise of a median of 4 samples):
//!
//! - latency above `threshold`, congestion: `w_max` ← the limit, and the limit is multiplied by
//!   Envoy's gradient `threshold / latency` clamped to `[MIN_GRADIENT, BETA]` = [0.5, 0.75]: at
//!   least a quarter off (CUBIC takes 30 %), at most half.
//! - else, when at least `USE_FRACTION` (half) of the limit was in use, growth. Before the first
//!   congestion, slow start: × `SLOW_START` (1.5), at least + 1, per window. After it, CUBIC:
//!   `limit = w_max + C (r - R)³`, `r` the round trips (of `min_rtt`) since the congestion, `R =
//!   cbrt(w_max × (1 - factor) / C)` the round trips it takes to get back to `w_max`, `C` =
//!   `CUBIC_C` = 4e-4 per round trip cubed (CUBIC's 0.4 per second cubed at 100 ms): concave up to
//!   just below `w_max`, a plateau there, then convex beyond it, so that a capacity that came back
//!   is found within seconds; at most `MAX_STEP` (+ 50 %, at least + 1) per window. Counted in
//!   round trips, the dynamics scale with the upstream's latency.
//! - else (little in use: an idle queue says nothing about capacity) the limit holds, and so does
//!   the cubic clock. Measurements do not count on that clock either.
//!
//! The limit is kept fractional, clamped to `[min, max]`; `limit()` is its floor.
//!
//! ## Figures
//!
//! From the simulation in the tests: an upstream answering in 100 ms up to K in flight and 100 ms
//! more per request beyond (`100 ms × (1 + max(0, n - K))`), `max(60, 4 K)` clients looping,
//! `adaptive: { min: 1, max: 256 }` starting at 4, 120 s, figures after 10 s:
//!
//! | K  | limit (outside measurements) | throughput against a static K | backend p95 |
//! |----|------------------------------|-------------------------------|-------------|
//! | 4  | 3 to 5                       | 35.4/s, 88 %                  | 200 ms      |
//! | 6  | 5 to 7                       | 53.3/s, 89 %                  | 200 ms      |
//! | 16 | 12 to 17                     | 139.1/s, 87 %                 | 200 ms      |
//! | 40 | 30 to 41                     | 348.3/s, 87 %                 | 200 ms      |
//!
//! The cycle, 2 to 3 s: most of it at K or just below, one window at K + 1 (hence the p95 of 200
//! ms), a quarter off. Measurements take 2.2 % of the time. With ±10 % noise on every latency: 88
//! to 89 %, K = 6 going down to 4. Capacity halved at 20 s: at most 1.6 × K/2 from 0.3 to 1.9 s
//! later, 82 to 95 % of a static K/2; restored at 40 s: at least 0.6 K from 1.3 to 4.4 s later.
//! Three times slower from 20 s on: K found again within 11 s (82 to 87 % of a static K); a flat
//! upstream (no capacity limit) goes down to 1, is measured again, and is back at max 16 s later.
//! An upstream that queues (latency `100 ms × max(1, n / K)`) is held at 1.1 to 1.75 K, for 98 to
//! 100 % of the throughput and a p95 of at most 175 ms.
//!
//! ## Limits
//!
//! Only answers that are not 5xx give samples: an upstream that fails fast when overloaded is not
//! seen. A measurement while other clients load the upstream (other instances) takes a loaded
//! `min_rtt`, until a later one is not loaded. The send time of a request is taken as `now -
//! latency`: a sample released long after the answer head (a long body) looks fresher than it is.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LoginQueue as QueueConfig;

/// Concurrency the limit is pinned to while the no-load latency is measured (Envoy's
/// `min_concurrency` default), within `[min, max]`.
const PROBE_CONCURRENCY: usize = 3;
/// Samples taken during a measurement, per request allowed in flight (Envoy takes 50 at 3):
/// a measurement lasts about this many round trips.
const PROBE_ROUNDS: usize = 7;
/// The percentile of those samples taken as the no-load latency (Envoy's default: p50).
const PROBE_PERCENTILE: f64 = 0.5;
/// Time between two measurements of the no-load latency, plus jitter.
const PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// Up to this fraction of `PROBE_INTERVAL` is added at random (Envoy's default: 15 %).
const PROBE_JITTER: f64 = 0.15;
/// Consecutive congested windows at `min`, or faster than `FASTER × min_rtt`, after which the
/// no-load latency is measured again at once (Envoy: 5 windows at its minimum).
const STALE_WINDOWS: u32 = 5;
const FASTER: f64 = 0.75;
/// A window's latency up to `(1 + BUFFER) × min_rtt` is not congestion.
const BUFFER: f64 = 0.5;
/// Fewest fresh samples in a window.
const WINDOW_MIN: usize = 4;
/// Most samples in a window (and the size of the sample buffer).
const WINDOW_MAX: usize = 32;
/// Percentile of a window's samples taken as its latency.
const WINDOW_PERCENTILE: f64 = 0.5;
/// Bounds of the multiplicative decrease on congestion: the factor is the gradient
/// `(1 + BUFFER) × min_rtt / latency` clamped to `[MIN_GRADIENT, BETA]`.
const MIN_GRADIENT: f64 = 0.5;
const BETA: f64 = 0.75;
/// Cubic growth constant, in requests per round trip (`min_rtt`) cubed: TCP CUBIC's 0.4 per
/// second cubed at a round trip of 100 ms.
const CUBIC_C: f64 = 4e-4;
/// Growth per uncongested window before the first congestion.
const SLOW_START: f64 = 1.5;
/// Most growth per window after the first congestion, as a fraction of the limit (at least 1).
const MAX_STEP: f64 = 0.5;
/// The limit grows only when at least this fraction of it was in use during the window.
const USE_FRACTION: f64 = 0.5;

/// The limit of one queue.
#[derive(Debug, Clone)]
pub enum Limiter {
    Static(usize),
    Adaptive(Box<Gradient>),
}

impl Limiter {
    pub fn from_config(config: &QueueConfig) -> Self {
        Self::new(config.concurrency, config.adaptive.map(|a| (a.min, a.max)))
    }

    /// A fixed `concurrency`, or an adaptive limit starting there within `(min, max)`.
    fn new(concurrency: usize, adaptive: Option<(usize, usize)>) -> Self {
        match adaptive {
            None => Limiter::Static(concurrency.max(1)),
            Some((min, max)) => Limiter::Adaptive(Box::new(Gradient::new(min, max, concurrency))),
        }
    }

    /// Take a new configuration; an adaptive limit keeps what it learned when it stays
    /// adaptive (clamped to the new bounds).
    pub fn reconfigure(&mut self, config: &QueueConfig) {
        self.apply(config.concurrency, config.adaptive.map(|a| (a.min, a.max)));
    }

    fn apply(&mut self, concurrency: usize, adaptive: Option<(usize, usize)>) {
        match (&mut *self, adaptive) {
            (Limiter::Adaptive(g), Some((min, max))) => g.set_bounds(min, max),
            _ => *self = Limiter::new(concurrency, adaptive),
        }
    }

    pub fn limit(&self) -> usize {
        match self {
            Limiter::Static(limit) => *limit,
            Limiter::Adaptive(g) => g.limit(),
        }
    }

    /// One latency sample (from the request leaving for the upstream to its answer), with the
    /// queue's in-flight count when it was taken (this request included).
    pub fn sample(&mut self, latency: Duration, in_flight: usize, now: Instant) {
        if let Limiter::Adaptive(g) = self {
            g.sample(latency, in_flight, now);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Measuring the no-load latency, the limit pinned low; `deferred` is the limit to restore.
    Probe { deferred: f64, since: Instant },
    /// Moving the limit with the latency of each window.
    Control,
}

/// The adaptive limiter's state.
#[derive(Debug, Clone)]
pub struct Gradient {
    min: usize,
    max: usize,
    /// The limit, fractional; `limit()` is its floor.
    limit: f64,
    phase: Phase,
    /// The no-load latency (seconds), once measured.
    min_rtt: Option<f64>,
    /// The latency of the last window (seconds).
    last_rtt: Option<f64>,
    /// Samples of the current window or measurement.
    buf: [f64; WINDOW_MAX],
    count: usize,
    /// Samples of requests sent before this are stale.
    opened: Instant,
    /// Samples that close the current window.
    target: usize,
    /// Highest in-flight count seen in the current window.
    max_in_flight: usize,
    /// The limit at the last congestion (None: still in slow start).
    w_max: Option<f64>,
    /// Start of the cubic growth (time of the last congestion, moved on by measurements and
    /// idle windows), and the time (seconds) it takes to come back to `w_max`.
    epoch: Instant,
    period: f64,
    /// Consecutive windows congested at `min`, and faster than `FASTER × min_rtt`.
    at_min: u32,
    faster: u32,
    /// When the next periodic measurement starts.
    next_probe: Instant,
    /// State of the jitter's generator.
    rng: u64,
}

impl Gradient {
    pub fn new(min: usize, max: usize, initial: usize) -> Self {
        let seed = RandomState::new().build_hasher().finish();
        Self::with_seed(min, max, initial, seed)
    }

    /// Like `new`, with the seed of the jitter given.
    pub fn with_seed(min: usize, max: usize, initial: usize, seed: u64) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        let now = Instant::now();
        let mut g = Gradient {
            min,
            max,
            limit: initial.clamp(min, max) as f64,
            phase: Phase::Control,
            min_rtt: None,
            last_rtt: None,
            buf: [0.0; WINDOW_MAX],
            count: 0,
            opened: now,
            target: WINDOW_MIN,
            max_in_flight: 0,
            w_max: None,
            epoch: now,
            period: 0.0,
            at_min: 0,
            faster: 0,
            next_probe: now,
            rng: seed | 1,
        };
        g.start_probe(now);
        g
    }

    fn set_bounds(&mut self, min: usize, max: usize) {
        self.min = min.max(1);
        self.max = max.max(self.min);
        let (lo, hi) = (self.min as f64, self.max as f64);
        self.limit = self.limit.clamp(lo, hi);
        if let Phase::Probe { deferred, since } = self.phase {
            let deferred = deferred.clamp(lo, hi);
            self.phase = Phase::Probe { deferred, since };
            self.limit = self.probe_limit(deferred);
        }
    }

    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.min, self.max)
    }

    /// The latency of the last window, when known.
    pub fn short(&self) -> Option<Duration> {
        self.last_rtt.map(Duration::from_secs_f64)
    }

    /// The no-load latency, once measured.
    pub fn baseline(&self) -> Option<Duration> {
        self.min_rtt.map(Duration::from_secs_f64)
    }

    /// Whether the no-load latency is being measured (the limit pinned low).
    pub fn probing(&self) -> bool {
        matches!(self.phase, Phase::Probe { .. })
    }

    /// The limit during a measurement: `PROBE_CONCURRENCY`, at most half the limit learned (so
    /// that an upstream that takes fewer than 3 is still measured unloaded), within bounds.
    fn probe_limit(&self, learned: f64) -> f64 {
        let half = (learned / 2.0).ceil().max(1.0) as usize;
        PROBE_CONCURRENCY.min(half).clamp(self.min, self.max) as f64
    }

    fn start_probe(&mut self, now: Instant) {
        let deferred = match self.phase {
            Phase::Probe { deferred, .. } => deferred,
            Phase::Control => self.limit,
        };
        self.phase = Phase::Probe {
            deferred,
            since: now,
        };
        self.limit = self.probe_limit(deferred);
        let samples = (PROBE_ROUNDS * self.limit()).min(WINDOW_MAX);
        self.open(now, samples);
    }

    fn open(&mut self, now: Instant, target: usize) {
        self.opened = now;
        self.count = 0;
        self.max_in_flight = 0;
        self.target = target;
    }

    /// A uniform number in [0, 1) (xorshift64).
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The `p` percentile of the buffered samples (reorders them).
    fn percentile(&mut self, p: f64) -> f64 {
        let samples = &mut self.buf[..self.count];
        let rank = ((samples.len() - 1) as f64 * p).round() as usize;
        let (_, value, _) = samples.select_nth_unstable_by(rank, f64::total_cmp);
        *value
    }

    pub fn sample(&mut self, latency: Duration, in_flight: usize, now: Instant) {
        if self.phase == Phase::Control && now >= self.next_probe {
            self.start_probe(now);
            return;
        }
        // Only requests sent since the window opened tell about the limit in force.
        let fresh = now
            .checked_sub(latency)
            .is_some_and(|sent| sent > self.opened);
        if !fresh {
            return;
        }
        let rtt = latency.as_secs_f64().max(1e-6);
        if self.count < WINDOW_MAX {
            self.buf[self.count] = rtt;
            self.count += 1;
        }
        self.max_in_flight = self.max_in_flight.max(in_flight);
        if self.count < self.target {
            return;
        }
        match self.phase {
            Phase::Probe { deferred, since } => self.end_probe(deferred, since, now),
            Phase::Control => self.end_window(now),
        }
    }

    fn end_probe(&mut self, deferred: f64, since: Instant, now: Instant) {
        let measured = self.percentile(PROBE_PERCENTILE);
        if let Some(old) = self.min_rtt.replace(measured) {
            // A new no-load latency: what was learned about the capacity no longer holds.
            let ratio = measured / old;
            if !(1.0 / (1.0 + BUFFER)..=1.0 + BUFFER).contains(&ratio) {
                self.w_max = None;
            }
        }
        self.phase = Phase::Control;
        self.limit = deferred.clamp(self.min as f64, self.max as f64);
        // The time spent measuring does not count towards the cubic growth.
        self.epoch += now.saturating_duration_since(since);
        self.at_min = 0;
        self.faster = 0;
        let jitter = PROBE_INTERVAL.mul_f64(PROBE_JITTER * self.random());
        self.next_probe = now + PROBE_INTERVAL + jitter;
        self.open_window(now);
    }

    fn open_window(&mut self, now: Instant) {
        let limit = self.limit();
        let target = (limit / 2).max(limit.min(WINDOW_MIN)).min(WINDOW_MAX);
        self.open(now, target);
    }

    fn end_window(&mut self, now: Instant) {
        let rtt = self.percentile(WINDOW_PERCENTILE);
        self.last_rtt = Some(rtt);
        let min_rtt = *self.min_rtt.get_or_insert(rtt);
        // Windows well below the no-load latency: the upstream got faster, measure it again.
        if rtt < FASTER * min_rtt {
            self.faster += 1;
            if self.faster >= STALE_WINDOWS {
                self.start_probe(now);
                return;
            }
        } else {
            self.faster = 0;
        }
        let threshold = min_rtt * (1.0 + BUFFER);
        let (lo, hi) = (self.min as f64, self.max as f64);
        let in_use = self.max_in_flight as f64 >= USE_FRACTION * self.limit() as f64;
        if rtt > threshold {
            let factor = (threshold / rtt).clamp(MIN_GRADIENT, BETA);
            self.w_max = Some(self.limit);
            self.period = (self.limit * (1.0 - factor) / CUBIC_C).cbrt() * min_rtt;
            self.epoch = now;
            self.limit = (self.limit * factor).clamp(lo, hi);
            if self.limit() == self.min {
                self.at_min += 1;
                if self.at_min >= STALE_WINDOWS {
                    self.start_probe(now);
                    return;
                }
            } else {
                self.at_min = 0;
            }
        } else {
            self.at_min = 0;
            if in_use {
                let grown = match self.w_max {
                    None => (self.limit * SLOW_START).max(self.limit + 1.0),
                    Some(w_max) => {
                        let t = now.saturating_duration_since(self.epoch).as_secs_f64();
                        let rounds = (t - self.period) / min_rtt;
                        let cubic = w_max + CUBIC_C * rounds.powi(3);
                        cubic.min(self.limit + (self.limit * MAX_STEP).max(1.0))
                    }
                };
                self.limit = grown.max(self.limit).clamp(lo, hi);
            } else {
                // An idle queue says nothing about capacity: hold the limit and the clock.
                self.epoch += now.saturating_duration_since(self.opened);
            }
        }
        self.open_window(now);
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests on synthetic time, and a deterministic discrete-event simulation: `C` clients
    //! each loop (wait for a slot, hold it for the upstream's latency at its concurrency, release
    //! it with the sample, as `admission.rs` does). Time is `base + offset`, no sleeping and no
    //! runtime: the limiter only sees the `now` it is given.

    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const CAPACITIES: [usize; 4] = [4, 6, 16, 40];
    const WARM_UP: f64 = 10.0;
    const RUN: f64 = 120.0;

    /// The saturating upstream: 100 ms up to `k` in flight, 100 ms more per request beyond.
    fn saturating(k: usize, n: usize) -> f64 {
        0.1 * (1 + n.saturating_sub(k)) as f64
    }

    /// Many more clients than the capacity (the measured case had 60 users for K = 6).
    fn clients(k: usize) -> usize {
        (4 * k).max(60)
    }

    /// A pseudo-random factor in [1 - spread, 1 + spread].
    fn noise(spread: f64, seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1.0 + spread * (2.0 * (x >> 11) as f64 / (1u64 << 53) as f64 - 1.0)
        }
    }

    fn adaptive(min: usize, max: usize, initial: usize, seed: u64) -> Limiter {
        Limiter::Adaptive(Box::new(Gradient::with_seed(min, max, initial, seed)))
    }

    fn probing(limiter: &Limiter) -> bool {
        matches!(limiter, Limiter::Adaptive(g) if g.probing())
    }

    /// What a simulated run saw.
    struct Run {
        /// (time, limit in force, probing) at the start and after each change.
        trace: Vec<(f64, usize, bool)>,
        /// (completion time, latency) of every request.
        done: Vec<(f64, f64)>,
    }

    /// `clients` users loop for `seconds`; `upstream(t, n)` is the latency in seconds of a
    /// request sent at `t` as the n-th in flight. A slot freed goes to a waiting client at once
    /// (at the same instant, as on paused tokio time).
    fn simulate(
        limiter: &mut Limiter,
        clients: usize,
        seconds: f64,
        mut upstream: impl FnMut(f64, usize) -> f64,
    ) -> Run {
        let base = Instant::now();
        // In flight: (finish time in ns, sequence, latency in ns).
        let mut in_flight: BinaryHeap<Reverse<(u64, u64, u64)>> = BinaryHeap::new();
        let mut waiting = clients;
        let mut seq = 0;
        let mut now_ns = 0;
        let mut run = Run {
            trace: vec![(0.0, limiter.limit(), probing(limiter))],
            done: Vec::new(),
        };
        loop {
            let t = now_ns as f64 / 1e9;
            while waiting > 0 && in_flight.len() < limiter.limit() {
                let latency_ns = (upstream(t, in_flight.len() + 1) * 1e9) as u64;
                seq += 1;
                in_flight.push(Reverse((now_ns + latency_ns, seq, latency_ns)));
                waiting -= 1;
            }
            let Some(Reverse((finish, _, latency_ns))) = in_flight.pop() else {
                break;
            };
            now_ns = finish;
            let t = now_ns as f64 / 1e9;
            if t > seconds {
                break;
            }
            let before = (limiter.limit(), probing(limiter));
            let latency = Duration::from_nanos(latency_ns);
            limiter.sample(
                latency,
                in_flight.len() + 1,
                base + Duration::from_nanos(now_ns),
            );
            run.done.push((t, latency.as_secs_f64()));
            let after = (limiter.limit(), probing(limiter));
            if after != before {
                run.trace.push((t, after.0, after.1));
            }
            waiting += 1;
        }
        run
    }

    impl Run {
        /// Completions per second in [from, to).
        fn throughput(&self, from: f64, to: f64) -> f64 {
            let n = self.done.iter().filter(|d| d.0 >= from && d.0 < to).count();
            n as f64 / (to - from)
        }

        /// The p95 latency of requests completed in [from, to).
        fn p95(&self, from: f64, to: f64) -> f64 {
            let mut l: Vec<f64> = self
                .done
                .iter()
                .filter(|d| d.0 >= from && d.0 < to)
                .map(|d| d.1)
                .collect();
            l.sort_by(f64::total_cmp);
            l.get(l.len() * 95 / 100).copied().unwrap_or(0.0)
        }

        /// The limits in force during [from, to), with whether it was a probe.
        fn during(&self, from: f64, to: f64) -> impl Iterator<Item = (f64, usize, bool)> + '_ {
            self.trace
                .iter()
                .enumerate()
                .filter_map(move |(i, &(t, l, p))| {
                    let end = self.trace.get(i + 1).map_or(f64::INFINITY, |e| e.0);
                    (end > from && t < to).then_some((t.max(from), l, p))
                })
        }

        /// The (lowest, highest) limit in force outside probes during [from, to).
        fn range(&self, from: f64, to: f64) -> (usize, usize) {
            self.during(from, to)
                .filter(|e| !e.2)
                .fold((usize::MAX, 0), |(lo, hi), e| (lo.min(e.1), hi.max(e.1)))
        }

        /// The fraction of [from, to) spent probing.
        fn probing_share(&self, from: f64, to: f64) -> f64 {
            let spans: Vec<(f64, usize, bool)> = self.during(from, to).collect();
            let mut total = 0.0;
            for (i, &(t, _, p)) in spans.iter().enumerate() {
                let end = spans.get(i + 1).map_or(to, |e| e.0).min(to);
                if p {
                    total += end - t;
                }
            }
            total / (to - from)
        }

        /// The start times of probes in [from, to).
        fn probes(&self, from: f64, to: f64) -> Vec<f64> {
            let mut starts = Vec::new();
            let mut was = false;
            for &(t, _, p) in &self.trace {
                if p && !was && t >= from && t < to {
                    starts.push(t);
                }
                was = p;
            }
            starts
        }

        /// The first time in [from, to) after which the limit outside probes stays `ok` up to
        /// `to`.
        fn settles(&self, from: f64, to: f64, ok: impl Fn(usize) -> bool) -> Option<f64> {
            let mut since = None;
            for (t, limit, p) in self.during(from, to) {
                if p {
                    continue;
                }
                if ok(limit) {
                    since.get_or_insert(t);
                } else {
                    since = None;
                }
            }
            since
        }
    }

    fn run_saturating(limiter: &mut Limiter, k: usize, spread: f64) -> Run {
        let mut noisy = noise(spread, k as u64);
        simulate(limiter, clients(k), RUN, |_, n| saturating(k, n) * noisy())
    }

    // --- The saturating upstream -------------------------------------------------------------

    #[test]
    fn converges_near_capacity() {
        for k in CAPACITIES {
            for spread in [0.0, 0.1] {
                let run = run_saturating(&mut adaptive(1, 256, 4, k as u64), k, spread);
                let (lo, hi) = run.range(WARM_UP, RUN);
                let kf = k as f64;
                assert!(
                    lo as f64 >= 0.6 * kf && hi as f64 <= 1.6 * kf,
                    "K={k} noise {spread}: the limit moved within {lo}..={hi}"
                );
                // The probes pin the limit low only briefly.
                assert!(run.probing_share(WARM_UP, RUN) < 0.05, "K={k}");
            }
        }
    }

    #[test]
    fn throughput_near_a_static_limit_at_capacity() {
        for k in CAPACITIES {
            for spread in [0.0, 0.1] {
                let run = run_saturating(&mut adaptive(1, 256, 4, k as u64), k, spread);
                let fixed = run_saturating(&mut Limiter::Static(k), k, spread);
                let (got, best) = (run.throughput(WARM_UP, RUN), fixed.throughput(WARM_UP, RUN));
                assert!(
                    got >= 0.8 * best,
                    "K={k} noise {spread}: {got:.1}/s against {best:.1}/s at a static {k}"
                );
            }
        }
    }

    #[test]
    fn follows_capacity_halving_and_restoration() {
        for k in CAPACITIES {
            let half = k / 2;
            let cap = |t: f64| if (20.0..40.0).contains(&t) { half } else { k };
            let mut limiter = adaptive(1, 256, 4, k as u64);
            let run = simulate(&mut limiter, clients(k), 70.0, |t, n| saturating(cap(t), n));
            let down = run.settles(20.0, 40.0, |l| l as f64 <= 1.6 * half as f64);
            assert!(
                down.is_some_and(|t| t <= 30.0),
                "K={k}: halved at 20 s, the limit is at most 1.6 K/2 from {down:?}"
            );
            let up = run.settles(40.0, 70.0, |l| l as f64 >= 0.6 * k as f64);
            assert!(
                up.is_some_and(|t| t <= 60.0),
                "K={k}: restored at 40 s, the limit is at least 0.6 K from {up:?}"
            );
        }
    }

    // --- An upstream that gets uniformly slower ---------------------------------------------

    #[test]
    fn a_uniformly_slower_upstream_becomes_the_new_baseline() {
        // No capacity limit at all: 100 ms, then 300 ms from 20 s on, whatever the concurrency.
        let mut limiter = adaptive(1, 128, 4, 1);
        let flat = |t: f64, _: usize| if t < 20.0 { 0.1 } else { 0.3 };
        let run = simulate(&mut limiter, 300, 80.0, flat);
        assert_eq!(run.range(10.0, 20.0), (128, 128));
        let back = run.settles(20.0, 80.0, |l| l == 128);
        assert!(
            back.is_some_and(|t| t <= 50.0),
            "the limit is back at max from {back:?}"
        );
        let Limiter::Adaptive(g) = &limiter else {
            unreachable!()
        };
        assert_eq!(g.baseline(), Some(Duration::from_millis(300)));

        // The saturating upstream, three times slower from 20 s on: the capacity is found again.
        for k in [6, 16] {
            let slow = |t: f64, n: usize| saturating(k, n) * if t < 20.0 { 1.0 } else { 3.0 };
            let mut limiter = adaptive(1, 256, 4, k as u64);
            let run = simulate(&mut limiter, clients(k), 80.0, slow);
            let kf = k as f64;
            let ok = |l: usize| (0.6 * kf..=1.6 * kf).contains(&(l as f64));
            let settled = run.settles(20.0, 80.0, ok);
            assert!(
                settled.is_some_and(|t| t <= 50.0),
                "K={k}: settled from {settled:?}"
            );
            let fixed = simulate(&mut Limiter::Static(k), clients(k), 80.0, slow);
            assert!(run.throughput(50.0, 80.0) >= 0.75 * fixed.throughput(50.0, 80.0));
        }
    }

    /// As `queue::tests::adaptive_limit_falls_when_latency_doubles_and_recovers`, on a flat
    /// upstream.
    #[test]
    fn falls_when_latency_doubles_and_recovers() {
        let mut limiter = adaptive(4, 128, 16, 3);
        let latency = |t: f64, _: usize| if (10.0..13.0).contains(&t) { 0.2 } else { 0.1 };
        let run = simulate(&mut limiter, 300, 23.0, latency);
        let at = |t: f64| run.during(t, t + 1e-9).map(|e| e.1).last().unwrap();
        assert_eq!(at(10.0), 128, "grows to max while latency is steady");
        assert!(at(13.0) <= 64, "falls when latency doubles: {}", at(13.0));
        assert!(at(23.0) >= 96, "recovers: {}", at(23.0));
    }

    // --- Bounds, idle queues, probes --------------------------------------------------------

    #[test]
    fn grows_to_max_while_latency_is_steady() {
        let mut limiter = adaptive(4, 256, 16, 1);
        let run = simulate(&mut limiter, 400, 10.0, |_, _| 0.1);
        assert_eq!(limiter.limit(), 256);
        assert!(run
            .settles(0.0, 10.0, |l| l == 256)
            .is_some_and(|t| t < 5.0));
    }

    #[test]
    fn does_not_grow_while_little_is_used() {
        // Two clients against a limit of 16: never more than 2 in flight.
        let mut limiter = adaptive(1, 256, 16, 1);
        let run = simulate(&mut limiter, 2, 100.0, |_, _| 0.1);
        assert_eq!(run.range(1.0, 100.0), (16, 16));
        // A limit of 4 with 2 in use may grow once (half of it is in use), then holds.
        let mut limiter = adaptive(1, 256, 4, 1);
        let run = simulate(&mut limiter, 2, 100.0, |_, _| 0.1);
        assert!(run.range(1.0, 100.0).1 <= 6);
    }

    #[test]
    fn stays_within_bounds() {
        for (min, max) in [(8, 32), (1, 256), (5, 5), (2, 3)] {
            let mut limiter = adaptive(min, max, 100, 9);
            assert!((min..=max).contains(&limiter.limit()));
            let mut noisy = noise(0.9, 5);
            // Latencies from wildly varying to collapsing.
            let run = simulate(&mut limiter, 300, 120.0, |t, n| {
                saturating(if t < 60.0 { 10 } else { 1 }, n) * noisy()
            });
            for (_, limit, _) in &run.trace {
                assert!((min..=max).contains(limit), "{min}..={max}: {limit}");
            }
        }
        // A very slow upstream does not take the limit below min.
        let mut g = Gradient::with_seed(8, 32, 100, 1);
        let base = Instant::now();
        for i in 0..2000u64 {
            let now = base + Duration::from_millis(20 * i);
            g.sample(Duration::from_millis(10 + i * 5), 32, now);
            assert!((8..=32).contains(&g.limit()));
        }
    }

    #[test]
    fn starts_by_measuring_the_no_load_latency() {
        let mut g = Gradient::with_seed(1, 256, 16, 1);
        assert!(g.probing());
        assert_eq!(g.limit(), 3, "pinned to 3 while measuring");
        assert_eq!(g.baseline(), None);
        let base = Instant::now() + Duration::from_millis(1);
        // Samples of requests sent before the measurement started do not count.
        for i in 0..100 {
            g.sample(Duration::from_secs(1), 3, base + Duration::from_millis(i));
        }
        assert!(g.probing());
        // 7 round trips at 3 in flight: 21 fresh samples.
        for i in 0..21 {
            let ms = if i % 2 == 0 { 100 } else { 120 };
            g.sample(
                Duration::from_millis(ms),
                3,
                base + Duration::from_secs(1) + Duration::from_millis(i),
            );
        }
        assert!(!g.probing());
        assert_eq!(g.limit(), 16, "back to the starting limit");
        assert_eq!(g.baseline(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn probe_limit_is_low_and_within_bounds() {
        let g = Gradient::with_seed(1, 256, 64, 1);
        assert_eq!(g.probe_limit(64.0), 3.0);
        assert_eq!(g.probe_limit(4.5), 3.0);
        assert_eq!(
            g.probe_limit(3.9),
            2.0,
            "at most half the limit, rounded up"
        );
        assert_eq!(g.probe_limit(1.0), 1.0);
        let g = Gradient::with_seed(8, 256, 64, 1);
        assert_eq!(g.probe_limit(64.0), 8.0, "never below min");
        let g = Gradient::with_seed(1, 2, 2, 1);
        assert_eq!(g.probe_limit(2.0), 1.0);
    }

    #[test]
    fn measures_again_every_interval_with_jitter() {
        let k = 16;
        let mut starts = Vec::new();
        for seed in [1, 2] {
            let mut limiter = adaptive(1, 256, 4, seed);
            let run = simulate(&mut limiter, clients(k), 200.0, |_, n| saturating(k, n));
            let probes = run.probes(1.0, 200.0);
            assert!(probes.len() >= 5, "{probes:?}");
            for pair in probes.windows(2) {
                // The interval runs from the end of a measurement (under a second here).
                let gap = pair[1] - pair[0];
                assert!((30.0..=36.0).contains(&gap), "{probes:?}");
            }
            starts.push(probes);
        }
        assert_ne!(
            starts[0], starts[1],
            "the jitter differs from one limiter to another"
        );
    }

    #[test]
    fn reconfigure_keeps_what_was_learned() {
        let mut limiter = Limiter::new(16, Some((1, 256)));
        let k = 16;
        simulate(&mut limiter, clients(k), 20.0, |_, n| saturating(k, n));
        let learned = limiter.limit();
        assert!((10..=25).contains(&learned), "{learned}");
        limiter.apply(16, Some((1, 256)));
        assert_eq!(limiter.limit(), learned);
        limiter.apply(16, Some((1, 8)));
        assert_eq!(limiter.limit(), 8);
        limiter.apply(16, Some((30, 64)));
        assert_eq!(limiter.limit(), 30);
        limiter.apply(16, None);
        assert_eq!(limiter.limit(), 16);
        let mut fixed = Limiter::new(0, None);
        assert_eq!(fixed.limit(), 1);
        fixed.sample(Duration::from_secs(9), 1, Instant::now());
        assert_eq!(fixed.limit(), 1);
        // From fixed to adaptive: a new limiter, measuring first.
        fixed.apply(16, Some((1, 256)));
        assert!(probing(&fixed));
    }

    // --- Figures ------------------------------------------------------------------------------

    /// `cargo test figures -- --ignored --nocapture` prints the figures of the module doc.
    #[test]
    #[ignore]
    fn figures() {
        for spread in [0.0, 0.1] {
            println!("noise ±{:.0} %", spread * 100.0);
            for k in CAPACITIES {
                let run = run_saturating(&mut adaptive(1, 256, 4, k as u64), k, spread);
                let fixed = run_saturating(&mut Limiter::Static(k), k, spread);
                let (lo, hi) = run.range(WARM_UP, RUN);
                let (got, best) = (run.throughput(WARM_UP, RUN), fixed.throughput(WARM_UP, RUN));
                println!(
                    "  K={k:2}: limit {lo}..={hi}, {got:.1}/s = {:.0} % of static {k} ({best:.1}/s), p95 {:.0} ms (static {:.0} ms), probing {:.1} % of the time",
                    100.0 * got / best,
                    1e3 * run.p95(WARM_UP, RUN),
                    1e3 * fixed.p95(WARM_UP, RUN),
                    100.0 * run.probing_share(WARM_UP, RUN),
                );
            }
        }
        println!("capacity K/2 from 20 s to 40 s");
        for k in CAPACITIES {
            let half = k / 2;
            let cap = |t: f64| if (20.0..40.0).contains(&t) { half } else { k };
            let mut limiter = adaptive(1, 256, 4, k as u64);
            let run = simulate(&mut limiter, clients(k), 70.0, |t, n| saturating(cap(t), n));
            let fixed = simulate(&mut Limiter::Static(half), clients(k), 40.0, |_, n| {
                saturating(half, n)
            });
            let down = run.settles(20.0, 40.0, |l| l as f64 <= 1.6 * half as f64);
            let up = run.settles(40.0, 70.0, |l| l as f64 >= 0.6 * k as f64);
            println!(
                "  K={k:2}: <= 1.6 K/2 from {:.1} s, limit {:?} over 30..40 s, {:.1}/s = {:.0} % of static {half}; >= 0.6 K from {:.1} s, limit {:?} over 50..70 s",
                down.unwrap_or(f64::NAN),
                run.range(30.0, 40.0),
                run.throughput(30.0, 40.0),
                100.0 * run.throughput(30.0, 40.0) / fixed.throughput(30.0, 40.0),
                up.unwrap_or(f64::NAN),
                run.range(50.0, 70.0),
            );
        }
        println!("3 times slower from 20 s on");
        let mut limiter = adaptive(1, 128, 4, 1);
        let run = simulate(
            &mut limiter,
            300,
            80.0,
            |t, _| if t < 20.0 { 0.1 } else { 0.3 },
        );
        println!(
            "  flat: lowest {:?}, back at 128 from {:.1} s",
            run.during(20.0, 80.0).map(|e| e.1).min(),
            run.settles(20.0, 80.0, |l| l == 128).unwrap_or(f64::NAN),
        );
        for k in [6, 16] {
            let slow = |t: f64, n: usize| saturating(k, n) * if t < 20.0 { 1.0 } else { 3.0 };
            let mut limiter = adaptive(1, 256, 4, k as u64);
            let run = simulate(&mut limiter, clients(k), 80.0, slow);
            let fixed = simulate(&mut Limiter::Static(k), clients(k), 80.0, slow);
            let kf = k as f64;
            let ok = |l: usize| (0.6 * kf..=1.6 * kf).contains(&(l as f64));
            println!(
                "  K={k}: in [0.6 K, 1.6 K] from {:.1} s, limit {:?} over 50..80 s, {:.0} % of static",
                run.settles(20.0, 80.0, ok).unwrap_or(f64::NAN),
                run.range(50.0, 80.0),
                100.0 * run.throughput(50.0, 80.0) / fixed.throughput(50.0, 80.0),
            );
        }
    }
}
