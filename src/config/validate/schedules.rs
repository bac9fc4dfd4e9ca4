//! Schedules: the time zone, the overlays (what changes, each value checked as the base file's
//! is), the windows (when), and that two overlays that can be in force at once never change the
//! same field.

use jiff::civil::Time;
use jiff::tz::TimeZone;

use super::limits::limit_mode;
use super::{at_least, entry_name, Ctx};
use crate::config::lines::{join_index, join_key};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::values::*;
use crate::schedule::calendar::{self, hh_mm, DateRange, DayEnd, Weekdays, Window};

/// The time zone of schedules that name none.
pub const DEFAULT_TIME_ZONE: &str = "Europe/Paris";

pub(super) fn schedules(
    ctx: &mut Ctx,
    raw: Option<RawSchedules>,
    queues: &[LoginQueue],
    limits: &[Limit],
) -> Option<Schedules> {
    let raw = raw?;
    let time_zone_name = raw
        .time_zone
        .as_ref()
        .map(|s| s.as_str().trim().to_string())
        .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_string());
    let time_zone = match TimeZone::get(&time_zone_name) {
        Ok(tz) => tz,
        Err(e) => {
            ctx.error(
                "schedules.time_zone",
                format!(
                    "unknown time zone {time_zone_name:?} (an IANA name such as Europe/Paris): {e}"
                ),
            );
            TimeZone::UTC
        }
    };

    let mut seen = Vec::new();
    let mut overlays = Vec::new();
    for (key, o) in raw.overlays.unwrap_or_default().0 {
        let base = join_key("schedules.overlays", &key);
        if entry_name(ctx, &base, &key, &mut seen) {
            overlays.push(overlay(ctx, &base, key, o, queues, limits));
        }
    }

    let mut windows: Vec<(usize, Window)> = Vec::new();
    for (i, w) in raw.windows.unwrap_or_default().into_iter().enumerate() {
        let base = join_index("schedules.windows", i);
        if let Some(w) = window(ctx, &base, w, &overlays) {
            windows.push((i, w));
        }
    }

    for (i, o) in overlays.iter().enumerate() {
        let path = join_key("schedules.overlays", &o.name);
        if o.changes(queues, limits).is_empty() {
            ctx.warn(&path, "this overlay changes nothing");
        } else if !windows.iter().any(|(_, w)| w.overlay == i) {
            ctx.warn(&path, "no window applies this overlay");
        }
    }
    conflicts(ctx, &overlays, &windows, queues, limits);

    Some(Schedules {
        time_zone,
        time_zone_name,
        overlays,
        windows: windows.into_iter().map(|(_, w)| w).collect(),
    })
}

/// The names of a section, for "unknown" errors: ` (defined: a, b)`.
fn defined<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        " (none is defined)".to_string()
    } else {
        format!(" (defined: {})", names.join(", "))
    }
}

fn overlay(
    ctx: &mut Ctx,
    base: &str,
    name: String,
    raw: RawOverlay,
    queues: &[LoginQueue],
    limits: &[Limit],
) -> Overlay {
    let mut login_queues = Vec::new();
    let mut seen = Vec::new();
    for (queue_name, q) in raw.login_queues.unwrap_or_default().0 {
        let path = join_key(&join_key(base, "login_queues"), &queue_name);
        if seen.contains(&queue_name) {
            ctx.error(&path, format!("the queue {queue_name:?} is listed twice"));
            continue;
        }
        seen.push(queue_name.clone());
        let Some(index) = queues.iter().position(|c| c.name == queue_name) else {
            ctx.error(
                &path,
                format!(
                    "unknown login queue {queue_name:?}{}",
                    defined(queues.iter().map(|c| c.name.as_str()))
                ),
            );
            continue;
        };
        login_queues.push(queue_overlay(ctx, &path, index, &queues[index], q));
    }
    let mut limit_overlays = Vec::new();
    let mut seen = Vec::new();
    for (limit_name, l) in raw.limits.unwrap_or_default().0 {
        let path = join_key(&join_key(base, "limits"), &limit_name);
        if seen.contains(&limit_name) {
            ctx.error(&path, format!("the limit {limit_name:?} is listed twice"));
            continue;
        }
        seen.push(limit_name.clone());
        let Some(index) = limits.iter().position(|c| c.name == limit_name) else {
            ctx.error(
                &path,
                format!(
                    "unknown limit {limit_name:?}{}",
                    defined(limits.iter().map(|c| c.name.as_str()))
                ),
            );
            continue;
        };
        limit_overlays.push(limit_overlay(ctx, &path, index, l));
    }
    Overlay {
        name,
        login_queues,
        limits: limit_overlays,
    }
}

fn queue_overlay(
    ctx: &mut Ctx,
    path: &str,
    index: usize,
    queue: &LoginQueue,
    r: RawQueueOverlay,
) -> QueueOverlay {
    let p = |k: &str| join_key(path, k);
    let mut concurrency = ctx.opt(&p("concurrency"), &r.concurrency, at_least(1usize));
    if concurrency.is_some() && queue.adaptive.is_some() {
        ctx.error(
            &p("concurrency"),
            format!(
                "the login queue {:?} is adaptive: its concurrency is only where its limit starts; change adaptive.min and adaptive.max",
                queue.name
            ),
        );
        concurrency = None;
    }
    let adaptive = r.adaptive.and_then(|a| {
        let ap = |k: &str| join_key(&p("adaptive"), k);
        let Some(own) = queue.adaptive else {
            ctx.error(
                &p("adaptive"),
                format!(
                    "the login queue {:?} is not adaptive: change its concurrency",
                    queue.name
                ),
            );
            return None;
        };
        if a.min.is_none() && a.max.is_none() {
            ctx.error(&p("adaptive"), "give min, max or both");
            return None;
        }
        let min = ctx.opt(&ap("min"), &a.min, at_least(1usize));
        let max = ctx.opt(&ap("max"), &a.max, at_least(1usize));
        let (min, max) = (min.unwrap_or(own.min), max.unwrap_or(own.max));
        if min > max {
            ctx.error(
                &p("adaptive"),
                format!("min ({min}) must not be more than max ({max}) (a bound left out is the queue's own)"),
            );
            return None;
        }
        Some(Adaptive { min, max })
    });
    QueueOverlay {
        queue: index,
        concurrency,
        adaptive,
        hold: ctx.opt(&p("hold"), &r.hold, parse_duration),
        max_waiting: ctx.opt(&p("max_waiting"), &r.max_waiting, at_least(1usize)),
        per_client_waiting: ctx.opt(
            &p("per_client_waiting"),
            &r.per_client_waiting,
            at_least(1usize),
        ),
    }
}

fn limit_overlay(ctx: &mut Ctx, path: &str, index: usize, r: RawLimitOverlay) -> LimitOverlay {
    let p = |k: &str| join_key(path, k);
    let rate = ctx.opt(&p("rate"), &r.rate, parse_rate);
    let burst = ctx.opt(&p("burst"), &r.burst, at_least(1u32));
    LimitOverlay {
        limit: index,
        rate,
        // A rate comes with its own burst, as in a limit: its count when not given.
        burst: burst.or(rate.map(|r| r.count)),
        mode: ctx.opt(&p("mode"), &r.mode, limit_mode),
        ban: ctx.opt(&p("ban"), &r.ban, parse_bool),
    }
}

/// The items of a value written alone or as a list, with their paths.
fn items(path: &str, raw: ScalarOrList) -> Vec<(String, Scalar)> {
    match raw {
        ScalarOrList::One(one) => vec![(path.to_string(), one)],
        ScalarOrList::Many(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| (join_index(path, i), v))
            .collect(),
    }
}

fn date_ranges(ctx: &mut Ctx, path: &str, raw: ScalarOrList) -> Vec<DateRange> {
    let list = items(path, raw);
    if list.is_empty() {
        ctx.error(path, "an empty list names no date");
    }
    let mut out = Vec::new();
    for (item, v) in list {
        if let Some(range) = ctx.opt(&item, &Some(v), parse_date_range) {
            out.push(range);
        }
    }
    out
}

fn window(ctx: &mut Ctx, base: &str, w: RawWindow, overlays: &[Overlay]) -> Option<Window> {
    let p = |k: &str| join_key(base, k);
    let overlay = match &w.overlay {
        None => {
            ctx.error(&p("overlay"), "required field is missing");
            None
        }
        Some(name) => {
            let found = overlays.iter().position(|o| o.name == name.as_str());
            if found.is_none() {
                ctx.error(
                    &p("overlay"),
                    format!(
                        "unknown overlay {:?}{}",
                        name.as_str(),
                        defined(overlays.iter().map(|o| o.name.as_str()))
                    ),
                );
            }
            found
        }
    };
    let days = match w.days {
        None => Weekdays::ALL,
        Some(raw) => {
            let list = items(&p("days"), raw);
            if list.is_empty() {
                ctx.error(
                    &p("days"),
                    "an empty list names no day (leave days out for every day)",
                );
            }
            let mut days = Weekdays::NONE;
            for (item, v) in list {
                if let Some(set) = ctx.opt(&item, &Some(v), parse_weekdays) {
                    for day in set.iter() {
                        days = days.with(day);
                    }
                }
            }
            if days.is_empty() {
                Weekdays::ALL
            } else {
                days
            }
        }
    };
    let dates = w.dates.map(|raw| date_ranges(ctx, &p("dates"), raw));
    let except = w
        .except_dates
        .map(|raw| date_ranges(ctx, &p("except_dates"), raw))
        .unwrap_or_default();
    let from = ctx.or(&p("from"), &w.from, Time::midnight(), parse_time_of_day);
    let until = ctx.or(&p("until"), &w.until, DayEnd::EndOfDay, parse_day_end);
    if !until.is_after(from) {
        ctx.error(
            &p("until"),
            format!(
                "{until} is not after from ({}): a window across midnight is two windows, one until 24:00 and one from 00:00",
                hh_mm(from)
            ),
        );
    }
    let window = Window {
        overlay: overlay?,
        days,
        dates,
        except,
        from,
        until,
    };
    if let Some(dates) = &window.dates {
        if !dates.is_empty() && !dates.iter().flat_map(|r| r.dates()).any(|d| window.on(d)) {
            ctx.warn(
                base,
                "this window applies on none of its dates (its days and except_dates leave none)",
            );
        }
    }
    Some(window)
}

/// Two overlays that can be in force at once must change different fields: an error at the
/// later window of each such pair of overlays, with a time when both are in force.
fn conflicts(
    ctx: &mut Ctx,
    overlays: &[Overlay],
    windows: &[(usize, Window)],
    queues: &[LoginQueue],
    limits: &[Limit],
) {
    let fields: Vec<Vec<String>> = overlays
        .iter()
        .map(|o| {
            o.changes(queues, limits)
                .into_iter()
                .map(|c| c.field)
                .collect()
        })
        .collect();
    let mut reported: Vec<(usize, usize)> = Vec::new();
    for (j, (j_index, later)) in windows.iter().enumerate() {
        for (i_index, earlier) in &windows[..j] {
            let (a, b) = (earlier.overlay, later.overlay);
            if a == b || reported.contains(&(a.min(b), a.max(b))) {
                continue;
            }
            let (Some(fa), Some(fb)) = (fields.get(a), fields.get(b)) else {
                continue;
            };
            let shared: Vec<&str> = fa
                .iter()
                .filter(|f| fb.contains(f))
                .map(String::as_str)
                .collect();
            if shared.is_empty() {
                continue;
            }
            let Some(when) = calendar::overlap(earlier, later) else {
                continue;
            };
            reported.push((a.min(b), a.max(b)));
            ctx.error(
                &join_index("schedules.windows", *j_index),
                format!(
                    "the overlays {:?} (windows[{i_index}], {}–{}) and {:?} ({}–{}) can be in force at once ({when}) and both change {}: overlays in force together must change different fields (except_dates keeps one out of the other's dates)",
                    overlays[a].name,
                    hh_mm(earlier.from),
                    earlier.until,
                    overlays[b].name,
                    hh_mm(later.from),
                    later.until,
                    shared.join(", "),
                ),
            );
        }
    }
}
