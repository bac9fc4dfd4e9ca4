//! How many requests of a queue may be in flight to the upstream: a fixed `concurrency`, or an
//! adaptive limit between `adaptive.min` and `adaptive.max`.
//!
//! # The adaptive algorithm (gradient, after Netflix's Gradient2)
//!
//! Each admitted request that got an answer (not a 5xx) gives one latency sample: the time
//! from the request leaving for the upstream to the upstream's answer head. Two moving
//! averages are kept:
//!
//! - `short`: an exponential moving average over about the last 10 samples (weight 0.2), the
//!   latency now;
//! - `baseline`: the latency of the upstream when it is not overloaded. It rises slowly, with a
//!   time constant of 30 s whatever the sample rate (so a saturated upstream does not quickly
//!   become the new normal), and falls fast (weight 0.2 per sample) when samples come in below
//!   it. While `short` is more than twice the baseline, the baseline also grows by 5% per
//!   sample so that a new, lasting latency is eventually accepted (as Gradient2 does).
//!
//! After each sample, `gradient = clamp(TOLERANCE × baseline / short, 0.5, 1.0)` with a
//! tolerance of 1.5: latency up to 1.5 times the baseline counts as normal. The new limit is
//! `limit × gradient + sqrt(limit)` (the square root is head room that lets the limit probe
//! upwards), smoothed (`limit ← 0.8 × limit + 0.2 × new`) and clamped to `[min, max]`. The limit
//! does not grow while fewer than half of it are in use: an idle queue says nothing about what
//! the upstream can take.
//!
//! With a steady latency the limit climbs by about `0.2 × sqrt(limit)` per sample up to `max`;
//! when latency doubles the gradient is 0.75 and the limit falls towards `1 / (1 − 0.75)² = 16`
//! within a few dozen samples; when latency comes back to the baseline the limit climbs again.
//! No background task is needed: the limit moves on samples only, and the queue admits more
//! waiters as soon as it grows.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::LoginQueue as QueueConfig;

const TOLERANCE: f64 = 1.5;
const SHORT_WEIGHT: f64 = 0.2;
/// Time constant of the baseline's rise.
const BASELINE_RISE: Duration = Duration::from_secs(30);
const BASELINE_FALL: f64 = 0.2;
const SMOOTHING: f64 = 0.2;

/// The limit of one queue.
#[derive(Debug, Clone)]
pub enum Limiter {
    Static(usize),
    Adaptive(Gradient),
}

impl Limiter {
    pub fn from_config(config: &QueueConfig) -> Self {
        match config.adaptive {
            None => Limiter::Static(config.concurrency.max(1)),
            Some(adaptive) => Limiter::Adaptive(Gradient::new(
                adaptive.min,
                adaptive.max,
                config.concurrency,
            )),
        }
    }

    /// Take a new configuration; an adaptive limit keeps what it learned when it stays
    /// adaptive (clamped to the new bounds).
    pub fn reconfigure(&mut self, config: &QueueConfig) {
        match (&mut *self, config.adaptive) {
            (Limiter::Adaptive(g), Some(adaptive)) => {
                g.min = adaptive.min.max(1);
                g.max = adaptive.max.max(g.min);
                g.limit = g.limit.clamp(g.min as f64, g.max as f64);
            }
            _ => *self = Limiter::from_config(config),
        }
    }

    pub fn limit(&self) -> usize {
        match self {
            Limiter::Static(limit) => *limit,
            Limiter::Adaptive(g) => g.limit(),
        }
    }

    /// One latency sample, with the queue's in-flight count when it was taken.
    pub fn sample(&mut self, latency: Duration, in_flight: usize, now: Instant) {
        if let Limiter::Adaptive(g) = self {
            g.sample(latency, in_flight, now);
        }
    }
}

/// The gradient limiter's state.
#[derive(Debug, Clone)]
pub struct Gradient {
    min: usize,
    max: usize,
    limit: f64,
    short: Option<f64>,
    baseline: Option<f64>,
    last_sample: Option<Instant>,
}

impl Gradient {
    pub fn new(min: usize, max: usize, initial: usize) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Gradient {
            min,
            max,
            limit: initial.clamp(min, max) as f64,
            short: None,
            baseline: None,
            last_sample: None,
        }
    }

    pub fn limit(&self) -> usize {
        (self.limit.round() as usize).clamp(self.min, self.max)
    }

    /// The latency now, when known.
    pub fn short(&self) -> Option<Duration> {
        self.short.map(Duration::from_secs_f64)
    }

    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    pub fn sample(&mut self, latency: Duration, in_flight: usize, now: Instant) {
        let since = self
            .last_sample
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.last_sample = Some(now);
        let rise = 1.0 - (-since.as_secs_f64() / BASELINE_RISE.as_secs_f64()).exp();
        let rtt = latency.as_secs_f64().max(1e-6);
        let short = match self.short {
            Some(s) => s + SHORT_WEIGHT * (rtt - s),
            None => rtt,
        };
        self.short = Some(short);
        let mut baseline = match self.baseline {
            None => rtt,
            Some(b) if rtt < b => b + BASELINE_FALL * (rtt - b),
            Some(b) => b + rise * (rtt - b),
        };
        if short > 2.0 * baseline {
            baseline *= 1.05;
        }
        self.baseline = Some(baseline);

        let gradient = (TOLERANCE * baseline / short).clamp(0.5, 1.0);
        let mut target = self.limit * gradient + self.limit.sqrt();
        if target > self.limit && (in_flight as f64) < self.limit / 2.0 {
            target = self.limit;
        }
        let limit = self.limit * (1.0 - SMOOTHING) + target * SMOOTHING;
        self.limit = limit.clamp(self.min as f64, self.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(g: &mut Gradient, ms: u64, n: usize) {
        for _ in 0..n {
            let in_flight = g.limit();
            g.sample(Duration::from_millis(ms), in_flight, Instant::now());
        }
    }

    #[test]
    fn grows_to_max_while_latency_is_steady() {
        let mut g = Gradient::new(4, 256, 16);
        feed(&mut g, 100, 300);
        assert_eq!(g.limit(), 256);
    }

    #[test]
    fn does_not_grow_while_little_is_used() {
        let mut g = Gradient::new(4, 256, 16);
        for _ in 0..300 {
            g.sample(Duration::from_millis(100), 2, Instant::now());
        }
        assert_eq!(g.limit(), 16);
    }

    #[test]
    fn stays_within_bounds() {
        let mut g = Gradient::new(8, 32, 100);
        assert_eq!(g.limit(), 32);
        feed(&mut g, 10, 10);
        feed(&mut g, 10_000, 500);
        assert!(g.limit() >= 8);
    }
}
