//! The `schedule` section of `/status`: the overlays in force, the next change (when, and what
//! begins and ends), what each overlay changes, and the windows.

use serde_json::{json, Map, Value};

use crate::runtime::{Runtime, Snapshot};
use crate::schedule::calendar::{self, hh_mm, weekday_name, Weekdays};
use crate::schedule::{begins_ends, local_text, names};

/// `null` when the file has no `schedules` section.
pub fn status(runtime: &Runtime, snapshot: &Snapshot) -> Value {
    let Some(s) = &snapshot.base.schedules else {
        return Value::Null;
    };
    let base = &snapshot.base;
    let tz = &s.time_zone;
    let now = runtime.clock.now();
    let due = calendar::active_at(tz, &s.windows, now);
    let next_change = calendar::next_change(tz, &s.windows, now).map(|change| {
        let (begins, ends) = begins_ends(&due, &change.active);
        json!({
            "at": local_text(tz, change.at),
            "in_seconds": change.at.duration_since(now).as_secs().max(0),
            "begins": names(s, &begins),
            "ends": names(s, &ends),
            "in_force_after": names(s, &change.active),
        })
    });
    let overlays: Vec<Value> = s
        .overlays
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let changes: Map<String, Value> = o
                .changes(&base.login_queues, &base.limits)
                .into_iter()
                .map(|c| (c.field, Value::String(c.value)))
                .collect();
            json!({
                "name": o.name,
                "active": snapshot.overlays.contains(&i),
                "changes": changes,
            })
        })
        .collect();
    let ranges = |list: &[calendar::DateRange]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    let windows: Vec<Value> = s
        .windows
        .iter()
        .map(|w| {
            json!({
                "overlay": s.overlays.get(w.overlay).map(|o| o.name.as_str()),
                "days": days(w.days),
                "dates": w.dates.as_deref().map(ranges),
                "except_dates": ranges(&w.except),
                "from": hh_mm(w.from),
                "until": w.until.to_string(),
            })
        })
        .collect();
    json!({
        "time_zone": s.time_zone_name,
        "now": local_text(tz, now),
        "clock_shifted": runtime.clock.shifted(),
        "active": names(s, &snapshot.overlays),
        "next_change": next_change,
        "overlays": overlays,
        "windows": windows,
    })
}

fn days(set: Weekdays) -> Vec<&'static str> {
    set.iter().map(weekday_name).collect()
}
