//! When an overlay is in force: weekdays, dates and date ranges, a daily window, in one time
//! zone; and the next instant at which what is in force changes. Pure functions of an instant:
//! the clock is the caller's, so every rule here is tested with instants chosen by the test.
//!
//! A window applies on the local dates its `days`, `dates` and `except_dates` allow, from
//! `from` to `until` local time (half-open: in force at `from`, no longer at `until`). Local
//! times become instants by RFC 5545's rule, jiff's "compatible" one: a time the clock skips
//! (02:30 on the last Sunday of March in Europe/Paris) is read with the offset before the skip
//! (03:30 CEST), a time the clock shows twice (02:30 on the last Sunday of October) is its
//! first occurrence. A window of 07:40–09:00 is therefore 07:40–09:00 on the wall clock every
//! day, DST change days included.

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A set of weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Weekdays(u8);

impl Weekdays {
    pub const ALL: Weekdays = Weekdays(0x7f);
    pub const NONE: Weekdays = Weekdays(0);

    fn bit(day: Weekday) -> u8 {
        1 << day.to_monday_zero_offset()
    }

    pub fn with(self, day: Weekday) -> Weekdays {
        Weekdays(self.0 | Self::bit(day))
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & Self::bit(day) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The first weekday (from Monday) in both sets.
    pub fn first_common(self, other: Weekdays) -> Option<Weekday> {
        let both = self.0 & other.0;
        (0i8..7)
            .find(|i| both & (1 << i) != 0)
            .and_then(|i| Weekday::from_monday_zero_offset(i).ok())
    }

    /// The days in the set, Monday first.
    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        (0i8..7)
            .filter(move |i| self.0 & (1 << i) != 0)
            .filter_map(|i| Weekday::from_monday_zero_offset(i).ok())
    }
}

/// The short English name of a weekday, as the file writes it.
pub fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// Dates from `first` to `last`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub first: Date,
    pub last: Date,
}

impl DateRange {
    pub fn contains(&self, date: Date) -> bool {
        self.first <= date && date <= self.last
    }

    /// Every date of the range, in order.
    pub fn dates(&self) -> impl Iterator<Item = Date> + '_ {
        let mut next = Some(self.first);
        std::iter::from_fn(move || {
            let date = next?;
            if date > self.last {
                return None;
            }
            next = date.tomorrow().ok();
            Some(date)
        })
    }
}

impl std::fmt::Display for DateRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..{}", self.first, self.last)
        }
    }
}

/// The end of a daily window: a time of day, or the end of the day (`24:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayEnd {
    At(Time),
    EndOfDay,
}

impl DayEnd {
    /// Whether this end comes after `from` on the same day.
    pub fn is_after(self, from: Time) -> bool {
        self.seconds() > seconds_of(from)
    }

    /// Seconds since midnight (86400 for the end of the day), to compare windows.
    fn seconds(self) -> i32 {
        match self {
            DayEnd::At(t) => seconds_of(t),
            DayEnd::EndOfDay => 86_400,
        }
    }
}

impl std::fmt::Display for DayEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DayEnd::At(t) => f.write_str(&hh_mm(*t)),
            DayEnd::EndOfDay => f.write_str("24:00"),
        }
    }
}

fn seconds_of(t: Time) -> i32 {
    i32::from(t.hour()) * 3600 + i32::from(t.minute()) * 60 + i32::from(t.second())
}

/// `07:40`, or `07:40:30` when there are seconds.
pub fn hh_mm(t: Time) -> String {
    if t.second() == 0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

/// One line of `schedules.windows`: an overlay, the dates it applies on, and its hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Index into `Schedules::overlays`.
    pub overlay: usize,
    /// Default: every day.
    pub days: Weekdays,
    /// None: every date `days` allows; else only these (and still only on `days`).
    pub dates: Option<Vec<DateRange>>,
    /// Never on these dates (holidays).
    pub except: Vec<DateRange>,
    /// Default: 00:00.
    pub from: Time,
    /// After `from`. Default: the end of the day.
    pub until: DayEnd,
}

/// How far ahead a search for a window's next day goes (jumps over date ranges and exceptions
/// count one step each; a plain weekday set needs at most 7).
const DAY_STEPS: usize = 4_000;
/// Window edges that change nothing (one window ending where another of the same overlay
/// begins) looked past before the search for the next change gives up.
const EDGE_STEPS: usize = 256;

/// `date` at `time` in `tz`, by the compatible rule (see the module doc).
fn instant(tz: &TimeZone, date: Date, time: Time) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(DateTime::from_parts(date, time))
        .compatible()
        .ok()
}

impl Window {
    /// Whether the window applies on this local date (its hours aside).
    pub fn on(&self, date: Date) -> bool {
        self.days.contains(date.weekday())
            && self
                .dates
                .as_ref()
                .is_none_or(|ranges| ranges.iter().any(|r| r.contains(date)))
            && !self.except.iter().any(|r| r.contains(date))
    }

    /// The instants of the window on `date`: [start, end). None when it does not apply that
    /// day or when the day's hours are empty (a window inside the hour DST skips).
    pub fn interval(&self, date: Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        if !self.on(date) {
            return None;
        }
        let start = instant(tz, date, self.from)?;
        let end = match self.until {
            DayEnd::At(t) => instant(tz, date, t)?,
            DayEnd::EndOfDay => instant(tz, date.tomorrow().ok()?, Time::midnight())?,
        };
        (start < end).then_some((start, end))
    }

    /// The first date on or after `date` on which the window applies.
    pub fn next_day(&self, date: Date) -> Option<Date> {
        let mut d = date;
        for _ in 0..DAY_STEPS {
            if let Some(ranges) = &self.dates {
                d = ranges
                    .iter()
                    .filter(|r| r.last >= d)
                    .map(|r| r.first.max(d))
                    .min()?;
            }
            if let Some(skip) = self.except.iter().find(|r| r.contains(d)) {
                d = skip.last.tomorrow().ok()?;
                continue;
            }
            if self.days.contains(d.weekday()) {
                return Some(d);
            }
            d = d.tomorrow().ok()?;
        }
        None
    }

    /// Whether the window is in force at `t`.
    pub fn contains(&self, t: Timestamp, tz: &TimeZone) -> bool {
        let local = tz.to_datetime(t).date();
        // An interval of date D lies within D's local day, give or take a DST shift: looking
        // at the day before and the day after too covers every zone's offsets.
        [local.yesterday().ok(), Some(local), local.tomorrow().ok()]
            .into_iter()
            .flatten()
            .filter_map(|d| self.interval(d, tz))
            .any(|(start, end)| start <= t && t < end)
    }

    /// The first instant after `t` at which this window begins or ends.
    pub fn next_edge_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(t).date();
        let mut d = local.yesterday().unwrap_or(local);
        // Days whose hours are empty (DST) are skipped; a few steps always suffice otherwise.
        for _ in 0..16 {
            d = self.next_day(d)?;
            if let Some((start, end)) = self.interval(d, tz) {
                if start > t {
                    return Some(start);
                }
                if end > t {
                    return Some(end);
                }
            }
            d = d.tomorrow().ok()?;
        }
        None
    }
}

/// The overlays (indexes, ascending, each once) in force at `t`.
pub fn active_at(tz: &TimeZone, windows: &[Window], t: Timestamp) -> Vec<usize> {
    let mut active: Vec<usize> = windows
        .iter()
        .filter(|w| w.contains(t, tz))
        .map(|w| w.overlay)
        .collect();
    active.sort_unstable();
    active.dedup();
    active
}

/// A change of the overlays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub at: Timestamp,
    /// The overlays in force from `at` on.
    pub active: Vec<usize>,
}

/// The first instant after `t` at which the set of overlays in force changes, and that set.
/// None when nothing changes ever again (or within the search's reach: about ten years of
/// days, a few hundred window edges that change nothing).
pub fn next_change(tz: &TimeZone, windows: &[Window], t: Timestamp) -> Option<Change> {
    let now = active_at(tz, windows, t);
    let mut at = t;
    for _ in 0..EDGE_STEPS {
        let edge = windows
            .iter()
            .filter_map(|w| w.next_edge_after(at, tz))
            .min()?;
        let active = active_at(tz, windows, edge);
        if active != now {
            return Some(Change { at: edge, active });
        }
        at = edge;
    }
    None
}

/// When two windows could be in force at once: a date on which both apply with hours that
/// overlap, or (neither naming dates) a weekday both apply on, which comes back every week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    On(Date),
    Every(Weekday),
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overlap::On(date) => write!(f, "on {date}"),
            Overlap::Every(day) => write!(f, "every {}", weekday_name(*day)),
        }
    }
}

/// Whether `a` and `b` can be in force at the same time, and an example of when.
pub fn overlap(a: &Window, b: &Window) -> Option<Overlap> {
    let (a_from, b_from) = (seconds_of(a.from), seconds_of(b.from));
    if !(a_from < b.until.seconds() && b_from < a.until.seconds()) {
        return None;
    }
    let common_date = |listed: &Window, other: &Window| {
        listed
            .dates
            .iter()
            .flatten()
            .flat_map(|r| r.dates())
            .find(|d| listed.on(*d) && other.on(*d))
            .map(Overlap::On)
    };
    match (&a.dates, &b.dates) {
        (Some(_), _) => common_date(a, b),
        (None, Some(_)) => common_date(b, a),
        // Exceptions are finitely many dates: a weekday both allow comes back in a week that
        // neither excepts.
        (None, None) => a.days.first_common(b.days).map(Overlap::Every),
    }
}

#[cfg(test)]
mod tests;
