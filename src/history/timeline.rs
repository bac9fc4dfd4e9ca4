//! The per-second timeline: one fixed-size point a second for the last `SECONDS` seconds,
//! turned from the cumulative counters and the gauges the sampler reads into rates.
//!
//! Memory is fixed whatever the traffic: the ring holds `SECONDS` points of a fixed size; the
//! names a point refers to (answer reasons, queues, tenants) are columns of bounded tables, and
//! what does not fit is folded into `other`. A column is given to a new name only once its old
//! name has been absent for a whole window, so every point kept reads its columns right.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::latency::Buckets;
use super::ring::Ring;
use crate::telemetry::clip;

/// Seconds kept: 15 minutes.
pub const SECONDS: usize = 900;
/// Login queues followed one by one; the others are added up under `other`.
pub const MAX_QUEUES: usize = 8;
/// Answer reasons followed one by one (Rempart has fewer); the others go to `other`.
pub const MAX_REASONS: usize = 24;
/// The deepest tenants of a queue recorded each second.
pub const TOP_TENANTS: usize = 3;
/// Tenant names a queue's points may refer to within a window; the others are `other`.
pub const MAX_TENANTS: usize = 64;
/// Names are cut to this many bytes.
pub const NAME_BYTES: usize = 64;
/// A ban wave: at least this many new bans within `BAN_WAVE_SECONDS`.
pub const BAN_WAVE: u64 = 10;
pub const BAN_WAVE_SECONDS: usize = 10;

/// The column of a name that did not fit in its table.
const OTHER: u8 = u8::MAX;

/// What the sampler read at one tick: counters since start and gauges now.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub requests: u64,
    pub errors_5xx: u64,
    /// Answers Rempart wrote itself, by reason, since start.
    pub answers: Vec<(String, u64)>,
    /// Bans made since start.
    pub bans_made: u64,
    pub bans_active: u64,
    /// The request-duration histogram, all routes together.
    pub latency: Buckets,
    pub queues: Vec<QueueReading>,
}

/// One login queue at one tick.
#[derive(Debug, Clone, Default)]
pub struct QueueReading {
    pub name: String,
    pub waiting: u64,
    pub in_flight: u64,
    pub limit: u64,
    /// Admitted since start.
    pub admitted: u64,
    /// The deepest tenants, deepest first.
    pub top_tenants: Vec<(Arc<str>, usize)>,
}

/// One queue in one second.
#[derive(Debug, Clone, Copy, Default)]
struct QueueSecond {
    waiting: u32,
    in_flight: u32,
    limit: u32,
    admitted: u32,
    /// (tenant column, waiting); a depth of 0 is an empty place.
    top: [(u8, u32); TOP_TENANTS],
}

/// One second.
#[derive(Debug, Clone, Copy)]
struct Second {
    tick: u64,
    requests: u32,
    errors_5xx: u32,
    /// By reason column; the last one is `other`.
    answers: [u32; MAX_REASONS + 1],
    bans_new: u32,
    bans_active: u32,
    /// NaN when no request ended that second.
    p50_ms: f32,
    p95_ms: f32,
    /// By queue column; the last one is `other`.
    queues: [QueueSecond; MAX_QUEUES + 1],
}

/// A bounded table of names, each the column of the points that refer to it.
#[derive(Debug)]
struct Columns {
    names: Vec<Box<str>>,
    /// The last tick each name was seen at.
    last_seen: Vec<u64>,
    max: usize,
}

impl Columns {
    fn new(max: usize) -> Self {
        Columns {
            names: Vec::with_capacity(max),
            last_seen: Vec::with_capacity(max),
            max,
        }
    }

    /// The column of `name` seen at `tick`: its own, a new one, or one whose name has not been
    /// seen for a whole window (then `reused` is true); None when the table is full.
    fn column(&mut self, name: &str, tick: u64) -> Option<(usize, bool)> {
        let name = clip(name, NAME_BYTES);
        if let Some(i) = self.names.iter().position(|n| **n == *name) {
            self.last_seen[i] = tick;
            return Some((i, false));
        }
        if self.names.len() < self.max {
            self.names.push(name.into());
            self.last_seen.push(tick);
            return Some((self.names.len() - 1, false));
        }
        let stale = self
            .last_seen
            .iter()
            .position(|seen| seen + SECONDS as u64 <= tick)?;
        self.names[stale] = name.into();
        self.last_seen[stale] = tick;
        Some((stale, true))
    }

    /// The columns seen at `oldest` or later, with their names.
    fn live(&self, oldest: u64) -> impl Iterator<Item = (usize, &str)> + '_ {
        self.names
            .iter()
            .zip(&self.last_seen)
            .enumerate()
            .filter(move |(_, (_, seen))| **seen >= oldest)
            .map(|(i, (name, _))| (i, name.as_ref()))
    }
}

/// A followed queue: its name, and the tenant names its points refer to.
#[derive(Debug)]
struct QueueColumn {
    tenants: Columns,
}

/// The timeline: the ring of seconds and the tables of names.
pub struct Timeline {
    seconds: Ring<Second>,
    reasons: Columns,
    queues: Columns,
    queue_tenants: Vec<QueueColumn>,
    /// The reading of the last tick and its tick.
    previous: Option<(u64, Reading)>,
    /// Unix seconds of tick 0 (set by the first reading).
    base_unix: u64,
    in_ban_wave: bool,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

fn sat(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The `i`-th of `parts` even shares of `total` (the shares add up to `total`).
fn share(total: u64, parts: u64, i: u64) -> u64 {
    let total = u128::from(total);
    let parts = u128::from(parts.max(1));
    let i = u128::from(i);
    let part = total * (i + 1) / parts - total * i / parts;
    u64::try_from(part).unwrap_or(u64::MAX)
}

impl Timeline {
    pub fn new() -> Self {
        Timeline {
            seconds: Ring::new(SECONDS),
            reasons: Columns::new(MAX_REASONS),
            queues: Columns::new(MAX_QUEUES),
            queue_tenants: Vec::with_capacity(MAX_QUEUES),
            previous: None,
            base_unix: 0,
            in_ban_wave: false,
        }
    }

    /// Points kept.
    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Take the reading of tick `tick` (whole seconds since the sampler started; `unix` is the
    /// wall-clock second it stands for). The first reading is the baseline and makes no point;
    /// each later one makes a point per second since the previous one (counters spread evenly
    /// over a late tick, gauges repeated), so that points stay one second apart. Returns the
    /// number of new bans when a ban wave starts.
    pub fn record(&mut self, tick: u64, unix: u64, reading: Reading) -> Option<u64> {
        let Some((last_tick, previous)) = self.previous.take() else {
            self.base_unix = unix.saturating_sub(tick);
            self.previous = Some((tick, reading));
            return None;
        };
        if tick <= last_tick {
            // The same second again: keep the baseline of the first.
            self.previous = Some((last_tick, previous));
            return None;
        }
        let elapsed = tick - last_tick;
        let filled = elapsed.min(SECONDS as u64);
        let first = tick + 1 - filled;
        let template = self.template(tick, &previous, &reading);
        let counters = Counters::between(&previous, &reading, self, tick);
        for i in 0..filled {
            // The shares of the seconds that fall out of the window are dropped with them.
            let index = elapsed - filled + i;
            let mut second = template;
            second.tick = first + i;
            second.requests = sat(share(counters.requests, elapsed, index));
            second.errors_5xx = sat(share(counters.errors_5xx, elapsed, index));
            second.bans_new = sat(share(counters.bans_new, elapsed, index));
            for (slot, total) in second.answers.iter_mut().zip(&counters.answers) {
                *slot = sat(share(*total, elapsed, index));
            }
            for (queue, total) in second.queues.iter_mut().zip(&counters.admitted) {
                queue.admitted = sat(share(*total, elapsed, index));
            }
            self.seconds.push(second);
        }
        self.previous = Some((tick, reading));
        self.ban_wave()
    }

    /// The gauges and percentiles of a new point (counters are filled in by `record`).
    fn template(&mut self, tick: u64, previous: &Reading, reading: &Reading) -> Second {
        let second_latency = reading.latency.since(&previous.latency);
        let quantile = |q: f64| {
            second_latency
                .as_ref()
                .and_then(|b| b.quantile(q))
                .map_or(f32::NAN, |s| (s * 1000.0) as f32)
        };
        let mut second = Second {
            tick,
            requests: 0,
            errors_5xx: 0,
            answers: [0; MAX_REASONS + 1],
            bans_new: 0,
            bans_active: sat(reading.bans_active),
            p50_ms: quantile(0.5),
            p95_ms: quantile(0.95),
            queues: [QueueSecond::default(); MAX_QUEUES + 1],
        };
        for queue in &reading.queues {
            let Some(column) = self.queue_column(&queue.name, tick) else {
                let other = &mut second.queues[MAX_QUEUES];
                other.waiting = other.waiting.saturating_add(sat(queue.waiting));
                other.in_flight = other.in_flight.saturating_add(sat(queue.in_flight));
                other.limit = other.limit.saturating_add(sat(queue.limit));
                continue;
            };
            let mut top = [(OTHER, 0); TOP_TENANTS];
            for (place, (tenant, depth)) in top.iter_mut().zip(&queue.top_tenants) {
                let tenants = &mut self.queue_tenants[column].tenants;
                let index = tenants
                    .column(tenant, tick)
                    .and_then(|(i, _)| u8::try_from(i).ok())
                    .unwrap_or(OTHER);
                *place = (index, sat(*depth as u64));
            }
            second.queues[column] = QueueSecond {
                waiting: sat(queue.waiting),
                in_flight: sat(queue.in_flight),
                limit: sat(queue.limit),
                admitted: 0,
                top,
            };
        }
        second
    }

    /// The column of a queue; a column given to a new queue starts with no tenant names.
    fn queue_column(&mut self, name: &str, tick: u64) -> Option<usize> {
        let (column, reused) = self.queues.column(name, tick)?;
        if column >= self.queue_tenants.len() {
            self.queue_tenants.push(QueueColumn {
                tenants: Columns::new(MAX_TENANTS),
            });
        } else if reused {
            self.queue_tenants[column] = QueueColumn {
                tenants: Columns::new(MAX_TENANTS),
            };
        }
        Some(column)
    }

    /// Whether a ban wave starts now: `BAN_WAVE` new bans within the last `BAN_WAVE_SECONDS`.
    /// It ends after `BAN_WAVE_SECONDS` without a new ban.
    fn ban_wave(&mut self) -> Option<u64> {
        let recent: u64 = self
            .seconds
            .recent(BAN_WAVE_SECONDS)
            .map(|s| u64::from(s.bans_new))
            .sum();
        if recent == 0 {
            self.in_ban_wave = false;
        } else if recent >= BAN_WAVE && !self.in_ban_wave {
            self.in_ban_wave = true;
            return Some(recent);
        }
        None
    }

    /// Unix seconds of the newest point.
    pub fn newest_unix(&self) -> Option<u64> {
        self.seconds.last().map(|s| self.base_unix + s.tick)
    }

    /// The timeline as JSON (the shape is documented in docs/contract.md, `GET /history`).
    pub fn to_json(&self) -> Value {
        let points = self.seconds.iter();
        let oldest = points.clone().next().map_or(u64::MAX, |s| s.tick);
        let series = |f: &dyn Fn(&Second) -> u32| -> Value {
            Value::from(points.clone().map(f).collect::<Vec<u32>>())
        };
        let millis = |f: &dyn Fn(&Second) -> f32| -> Value {
            Value::from(
                points
                    .clone()
                    .map(|s| {
                        let v = f(s);
                        if v.is_finite() {
                            Value::from((f64::from(v) * 10.0).round() / 10.0)
                        } else {
                            Value::Null
                        }
                    })
                    .collect::<Vec<Value>>(),
            )
        };

        let mut answers = Map::new();
        for (column, name) in self.reasons.live(oldest) {
            answers.insert(name.to_string(), series(&|s| s.answers[column]));
        }
        if points.clone().any(|s| s.answers[MAX_REASONS] > 0) {
            answers.insert("other".into(), series(&|s| s.answers[MAX_REASONS]));
        }

        let queue_json = |column: usize, tenants: Option<&Columns>| -> Value {
            let mut deepest = Vec::new();
            if let Some(tenants) = tenants {
                for (index, name) in tenants.live(oldest) {
                    let waiting: Vec<Value> = points
                        .clone()
                        .map(|s| {
                            s.queues[column]
                                .top
                                .iter()
                                .find(|(t, depth)| usize::from(*t) == index && *depth > 0)
                                .map_or(Value::Null, |(_, depth)| Value::from(*depth))
                        })
                        .collect();
                    deepest.push(json!({ "tenant": name, "waiting": waiting }));
                }
                let other: Vec<Value> = points
                    .clone()
                    .map(|s| {
                        let sum: u32 = s.queues[column]
                            .top
                            .iter()
                            .filter(|(t, _)| *t == OTHER)
                            .map(|(_, depth)| *depth)
                            .sum();
                        if sum > 0 {
                            Value::from(sum)
                        } else {
                            Value::Null
                        }
                    })
                    .collect();
                if other.iter().any(|v| !v.is_null()) {
                    deepest.push(json!({ "tenant": "other", "waiting": other }));
                }
            }
            json!({
                "waiting": series(&|s| s.queues[column].waiting),
                "in_flight": series(&|s| s.queues[column].in_flight),
                "limit": series(&|s| s.queues[column].limit),
                "admitted": series(&|s| s.queues[column].admitted),
                "deepest_tenants": deepest,
            })
        };
        let mut queues = Map::new();
        for (column, name) in self.queues.live(oldest) {
            queues.insert(
                name.to_string(),
                queue_json(column, self.queue_tenants.get(column).map(|q| &q.tenants)),
            );
        }
        let other_queues = points.clone().any(|s| {
            let q = &s.queues[MAX_QUEUES];
            q.waiting > 0 || q.in_flight > 0 || q.admitted > 0
        });
        if other_queues {
            queues.insert("other".into(), queue_json(MAX_QUEUES, None));
        }

        let t: Vec<u64> = points.clone().map(|s| self.base_unix + s.tick).collect();
        json!({
            "step_seconds": 1,
            "capacity": SECONDS,
            "points": self.seconds.len(),
            "start": t.first(),
            "t": t,
            "requests": series(&|s| s.requests),
            "errors_5xx": series(&|s| s.errors_5xx),
            "latency_ms": {
                "p50": millis(&|s| s.p50_ms),
                "p95": millis(&|s| s.p95_ms),
            },
            "answers": answers,
            "bans": {
                "new": series(&|s| s.bans_new),
                "active": series(&|s| s.bans_active),
            },
            "queues": queues,
            "bounds": {
                "queues": MAX_QUEUES,
                "reasons": MAX_REASONS,
                "top_tenants": TOP_TENANTS,
                "tenants_per_queue": MAX_TENANTS,
                "ban_wave": { "bans": BAN_WAVE, "within_seconds": BAN_WAVE_SECONDS },
            },
        })
    }
}

/// The counter deltas between two readings, by column.
struct Counters {
    requests: u64,
    errors_5xx: u64,
    bans_new: u64,
    answers: [u64; MAX_REASONS + 1],
    admitted: [u64; MAX_QUEUES + 1],
}

impl Counters {
    fn between(previous: &Reading, reading: &Reading, timeline: &mut Timeline, tick: u64) -> Self {
        let mut counters = Counters {
            requests: reading.requests.saturating_sub(previous.requests),
            errors_5xx: reading.errors_5xx.saturating_sub(previous.errors_5xx),
            bans_new: reading.bans_made.saturating_sub(previous.bans_made),
            answers: [0; MAX_REASONS + 1],
            admitted: [0; MAX_QUEUES + 1],
        };
        for (reason, total) in &reading.answers {
            let before = previous
                .answers
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |(_, n)| *n);
            let delta = total.saturating_sub(before);
            if delta == 0 {
                continue;
            }
            let column = timeline
                .reasons
                .column(reason, tick)
                .map_or(MAX_REASONS, |(i, _)| i);
            counters.answers[column] = counters.answers[column].saturating_add(delta);
        }
        for queue in &reading.queues {
            let before = previous
                .queues
                .iter()
                .find(|q| q.name == queue.name)
                .map_or(0, |q| q.admitted);
            // `template` gave the queue its column at this tick already.
            let column = timeline
                .queues
                .names
                .iter()
                .position(|n| **n == *clip(&queue.name, NAME_BYTES))
                .unwrap_or(MAX_QUEUES);
            counters.admitted[column] =
                counters.admitted[column].saturating_add(queue.admitted.saturating_sub(before));
        }
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(requests: u64) -> Reading {
        Reading {
            requests,
            ..Reading::default()
        }
    }

    fn queue(name: &str, waiting: u64, admitted: u64, top: &[(&str, usize)]) -> QueueReading {
        QueueReading {
            name: name.into(),
            waiting,
            in_flight: 1,
            limit: 4,
            admitted,
            top_tenants: top.iter().map(|(t, d)| (Arc::from(*t), *d)).collect(),
        }
    }

    fn numbers(v: &Value) -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_point_has_a_fixed_size() {
        // 900 of them: about 450 KB, whatever the traffic.
        assert!(
            std::mem::size_of::<Second>() <= 512,
            "{}",
            std::mem::size_of::<Second>()
        );
        let timeline = Timeline::new();
        assert_eq!(timeline.seconds.capacity(), SECONDS);
    }

    #[test]
    fn rates_per_second_from_counters() {
        let mut timeline = Timeline::new();
        timeline.record(0, 1_000, reading(100));
        assert!(timeline.is_empty(), "the first reading is the baseline");
        timeline.record(1, 1_001, reading(130));
        timeline.record(2, 1_002, reading(130));
        timeline.record(3, 1_003, reading(135));
        let json = timeline.to_json();
        assert_eq!(numbers(&json["requests"]), [30, 0, 5]);
        assert_eq!(numbers(&json["t"]), [1_001, 1_002, 1_003]);
        assert_eq!(json["start"], 1_001);
    }

    #[test]
    fn a_late_tick_fills_every_second_it_missed() {
        let mut timeline = Timeline::new();
        timeline.record(10, 5_010, reading(0));
        timeline.record(11, 5_011, reading(10));
        // The sampler was late: four seconds at once.
        timeline.record(15, 5_015, reading(30));
        timeline.record(15, 5_015, reading(99));
        let json = timeline.to_json();
        assert_eq!(numbers(&json["t"]), [5_011, 5_012, 5_013, 5_014, 5_015]);
        let requests = numbers(&json["requests"]);
        assert_eq!(requests, [10, 5, 5, 5, 5]);
        timeline.record(16, 5_016, reading(100));
        assert_eq!(
            numbers(&timeline.to_json()["requests"]).last(),
            Some(&70),
            "the second reading of tick 15 was not taken as a baseline"
        );
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes_whatever_the_ticks() {
        let mut timeline = Timeline::new();
        let mut total = 0;
        timeline.record(0, 0, reading(0));
        for tick in 1..=2_000u64 {
            total += tick;
            timeline.record(tick, tick, reading(total));
        }
        assert_eq!(timeline.len(), SECONDS);
        let json = timeline.to_json();
        let t = numbers(&json["t"]);
        assert_eq!(t.len(), SECONDS);
        assert_eq!(t.first(), Some(&(2_000 - SECONDS as u64 + 1)));
        assert!(t.windows(2).all(|w| w[1] == w[0] + 1), "1 s apart");
        assert_eq!(numbers(&json["requests"]).last(), Some(&2_000));
        // An hour without a tick: the window is one late tick's seconds, still 900.
        timeline.record(5_600, 5_600, reading(total + 3_600));
        let t = numbers(&timeline.to_json()["t"]);
        assert_eq!(t.len(), SECONDS);
        assert_eq!(t.last(), Some(&5_600));
        assert!(t.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn queues_and_their_deepest_tenants() {
        let mut timeline = Timeline::new();
        let mut r = Reading {
            queues: vec![queue("logins", 0, 0, &[])],
            ..Reading::default()
        };
        timeline.record(0, 0, r.clone());
        r.queues = vec![queue("logins", 12, 4, &[("0750001A", 10), ("0750002B", 2)])];
        timeline.record(1, 1, r.clone());
        r.queues = vec![queue("logins", 3, 10, &[("0750002B", 3)])];
        timeline.record(2, 2, r);
        let json = timeline.to_json();
        let logins = &json["queues"]["logins"];
        assert_eq!(numbers(&logins["waiting"]), [12, 3]);
        assert_eq!(numbers(&logins["admitted"]), [4, 6]);
        assert_eq!(numbers(&logins["limit"]), [4, 4]);
        let deepest = logins["deepest_tenants"].as_array().unwrap();
        assert_eq!(deepest[0]["tenant"], "0750001A");
        assert_eq!(deepest[0]["waiting"], json!([10, null]));
        assert_eq!(deepest[1]["tenant"], "0750002B");
        assert_eq!(deepest[1]["waiting"], json!([2, 3]));
    }

    #[test]
    fn names_are_bounded_and_the_rest_is_other() {
        let mut timeline = Timeline::new();
        let many = |n: usize, waiting: u64| -> Reading {
            Reading {
                queues: (0..n)
                    .map(|i| {
                        let tenant = format!("T{i}");
                        queue(&format!("q{i}"), waiting, 0, &[(tenant.as_str(), 1)])
                    })
                    .collect(),
                answers: (0..n).map(|i| (format!("r{i}"), waiting)).collect(),
                ..Reading::default()
            }
        };
        timeline.record(0, 0, many(40, 0));
        timeline.record(1, 1, many(40, 1));
        let json = timeline.to_json();
        let queues = json["queues"].as_object().unwrap();
        assert_eq!(queues.len(), MAX_QUEUES + 1);
        assert_eq!(
            numbers(&queues["other"]["waiting"]),
            [40 - MAX_QUEUES as u64]
        );
        let answers = json["answers"].as_object().unwrap();
        assert_eq!(answers.len(), MAX_REASONS + 1);
        assert_eq!(numbers(&answers["other"]), [40 - MAX_REASONS as u64]);

        // Tenants of one queue: at most MAX_TENANTS names in a window.
        let mut timeline = Timeline::new();
        timeline.record(0, 0, Reading::default());
        for tick in 1..=200u64 {
            let tenant = format!("school-{tick}");
            let r = Reading {
                queues: vec![queue("logins", 1, 0, &[(tenant.as_str(), 1)])],
                ..Reading::default()
            };
            timeline.record(tick, tick, r);
        }
        let json = timeline.to_json();
        let deepest = json["queues"]["logins"]["deepest_tenants"]
            .as_array()
            .unwrap();
        assert_eq!(deepest.len(), MAX_TENANTS + 1);
        assert_eq!(deepest.last().unwrap()["tenant"], "other");
        // A whole window later, old names give their columns to new ones, and once the seconds
        // when they did not fit have left the window, nothing is `other` any more.
        for tick in 201..=(201 + 2 * SECONDS as u64) {
            let tenant = format!("late-{}", tick % 5);
            let r = Reading {
                queues: vec![queue("logins", 1, 0, &[(tenant.as_str(), 1)])],
                ..Reading::default()
            };
            timeline.record(tick, tick, r);
        }
        let json = timeline.to_json();
        let names: Vec<&str> = json["queues"]["logins"]["deepest_tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["tenant"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("late-")), "{names:?}");
    }

    #[test]
    fn a_long_name_is_cut() {
        let mut timeline = Timeline::new();
        let long = "x".repeat(10_000);
        let r = |waiting| Reading {
            queues: vec![queue("logins", waiting, 0, &[(long.as_str(), 1)])],
            ..Reading::default()
        };
        timeline.record(0, 0, r(0));
        timeline.record(1, 1, r(1));
        let json = timeline.to_json();
        let tenant = json["queues"]["logins"]["deepest_tenants"][0]["tenant"]
            .as_str()
            .unwrap();
        assert!(tenant.len() <= NAME_BYTES);
    }

    #[test]
    fn answers_bans_and_latency() {
        let mut timeline = Timeline::new();
        let bounds = vec![0.01, 0.1, 1.0];
        let r = |rate_limited: u64, made: u64, counts: [u64; 3], total: u64| Reading {
            answers: vec![("rate_limited".into(), rate_limited)],
            bans_made: made,
            bans_active: made,
            latency: Buckets {
                bounds: bounds.clone(),
                counts: counts.to_vec(),
                total,
            },
            ..Reading::default()
        };
        timeline.record(0, 0, r(0, 0, [0, 0, 0], 0));
        assert_eq!(timeline.record(1, 1, r(7, 4, [10, 20, 20], 20)), None);
        assert_eq!(timeline.record(2, 2, r(9, 4, [10, 20, 20], 20)), None);
        assert_eq!(
            timeline.record(3, 3, r(9, 12, [10, 20, 20], 20)),
            Some(12),
            "a ban wave starts"
        );
        assert_eq!(timeline.record(4, 4, r(9, 30, [10, 20, 20], 20)), None);
        let json = timeline.to_json();
        assert_eq!(numbers(&json["answers"]["rate_limited"]), [7, 2, 0, 0]);
        assert_eq!(numbers(&json["bans"]["new"]), [4, 0, 8, 18]);
        assert_eq!(numbers(&json["bans"]["active"]), [4, 4, 12, 30]);
        assert_eq!(json["latency_ms"]["p50"], json!([10.0, null, null, null]));
        assert_eq!(json["latency_ms"]["p95"][0], 91.0);
        // Ten quiet seconds end the wave; the next one is reported again.
        for tick in 5..15 {
            timeline.record(tick, tick, r(9, 30, [10, 20, 20], 20));
        }
        assert_eq!(
            timeline.record(15, 15, r(9, 50, [10, 20, 20], 20)),
            Some(20)
        );
    }
}
