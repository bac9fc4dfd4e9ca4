//! The time computations with instants chosen by the test: weekday sets, daily windows, DST
//! change days, date ranges across months and years, exceptions, overlaps; then properties
//! over random windows and instants.

use super::*;
use jiff::civil::{date, time};
use jiff::SignedDuration;
use proptest::prelude::*;

fn paris() -> TimeZone {
    TimeZone::get("Europe/Paris").expect("the tz database knows Europe/Paris")
}

/// `2027-09-06T07:40` in Europe/Paris (or with an offset / `Z` when given).
fn at(s: &str) -> Timestamp {
    if s.ends_with('Z') || s.contains('+') {
        return s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    format!("{s}[Europe/Paris]")
        .parse::<jiff::ZonedDateTime>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp()
}

fn days(list: &[Weekday]) -> Weekdays {
    list.iter().fold(Weekdays::NONE, |set, d| set.with(*d))
}

fn window(overlay: usize, on: Weekdays, from: Time, until: DayEnd) -> Window {
    Window {
        overlay,
        days: on,
        dates: None,
        except: Vec::new(),
        from,
        until,
    }
}

fn range(first: Date, last: Date) -> DateRange {
    DateRange { first, last }
}

/// Mondays, Tuesdays, Thursdays and Fridays from 07:40 to 09:00.
fn school_mornings() -> Window {
    use Weekday::*;
    window(
        0,
        days(&[Monday, Tuesday, Thursday, Friday]),
        time(7, 40, 0, 0),
        DayEnd::At(time(9, 0, 0, 0)),
    )
}

fn next(windows: &[Window], t: &str) -> Option<(Timestamp, Vec<usize>)> {
    next_change(&paris(), windows, at(t)).map(|c| (c.at, c.active))
}

#[test]
fn school_mornings_on_their_weekdays() {
    let tz = paris();
    let w = [school_mornings()];
    // 2027-09-06 is a Monday.
    assert_eq!(
        active_at(&tz, &w, at("2027-09-06T07:39:59")),
        Vec::<usize>::new()
    );
    assert_eq!(
        next(&w, "2027-09-06T07:39:50"),
        Some((at("2027-09-06T07:40"), vec![0]))
    );
    assert_eq!(active_at(&tz, &w, at("2027-09-06T07:40")), vec![0]);
    assert_eq!(active_at(&tz, &w, at("2027-09-06T08:59:59")), vec![0]);
    assert_eq!(
        next(&w, "2027-09-06T07:40"),
        Some((at("2027-09-06T09:00"), vec![]))
    );
    assert_eq!(
        active_at(&tz, &w, at("2027-09-06T09:00")),
        Vec::<usize>::new()
    );
    // Monday 09:00 -> Tuesday 07:40; Tuesday 09:00 -> Thursday (no Wednesday).
    assert_eq!(
        next(&w, "2027-09-06T09:00"),
        Some((at("2027-09-07T07:40"), vec![0]))
    );
    assert_eq!(
        next(&w, "2027-09-07T09:00"),
        Some((at("2027-09-09T07:40"), vec![0]))
    );
    assert_eq!(
        active_at(&tz, &w, at("2027-09-08T08:00")),
        Vec::<usize>::new()
    );
    // Friday 09:00 -> Monday.
    assert_eq!(
        next(&w, "2027-09-10T09:00"),
        Some((at("2027-09-13T07:40"), vec![0]))
    );
    // Late on a Sunday: Monday morning.
    assert_eq!(
        next(&w, "2027-09-12T23:59:59"),
        Some((at("2027-09-13T07:40"), vec![0]))
    );
}

#[test]
fn wall_clock_hours_on_dst_change_days() {
    let tz = paris();
    let daily = [window(
        0,
        Weekdays::ALL,
        time(7, 40, 0, 0),
        DayEnd::At(time(9, 0, 0, 0)),
    )];
    // Spring forward (2027-03-28, 02:00 CET -> 03:00 CEST): 07:40 is 05:40Z, the day before 06:40Z.
    assert_eq!(
        next(&daily, "2027-03-27T09:00"),
        Some((at("2027-03-28T05:40:00Z"), vec![0]))
    );
    assert_eq!(
        next(&daily, "2027-03-28T07:40"),
        Some((at("2027-03-28T07:00:00Z"), vec![]))
    );
    assert_eq!(at("2027-03-27T07:40"), at("2027-03-27T06:40:00Z"));
    // Fall back (2027-10-31, 03:00 CEST -> 02:00 CET): 07:40 is 06:40Z, the day before 05:40Z.
    assert_eq!(
        next(&daily, "2027-10-30T09:00"),
        Some((at("2027-10-31T06:40:00Z"), vec![0]))
    );
    assert_eq!(
        active_at(&tz, &daily, at("2027-10-31T06:39:59Z")),
        Vec::<usize>::new()
    );
    assert_eq!(active_at(&tz, &daily, at("2027-10-31T06:40:00Z")), vec![0]);
}

#[test]
fn hours_the_clock_skips_or_shows_twice() {
    let tz = paris();
    // 02:00-03:00 does not exist on 2027-03-28: read as 03:00-03:00 CEST, an empty window.
    let skipped = [window(
        0,
        Weekdays::ALL,
        time(2, 0, 0, 0),
        DayEnd::At(time(3, 0, 0, 0)),
    )];
    assert_eq!(
        next(&skipped, "2027-03-27T12:00"),
        Some((at("2027-03-29T02:00"), vec![0]))
    );
    assert_eq!(
        active_at(&tz, &skipped, at("2027-03-28T01:00:00Z")),
        Vec::<usize>::new()
    );
    // 02:30-04:00 on that day: from 03:30 CEST (read with the offset before the skip) to 04:00.
    let half = [window(
        0,
        Weekdays::ALL,
        time(2, 30, 0, 0),
        DayEnd::At(time(4, 0, 0, 0)),
    )];
    assert_eq!(
        next(&half, "2027-03-28T00:30"),
        Some((at("2027-03-28T01:30:00Z"), vec![0]))
    );
    assert_eq!(
        next(&half, "2027-03-28T01:30:00Z"),
        Some((at("2027-03-28T02:00:00Z"), vec![]))
    );
    // 02:30-02:45 on 2027-10-31, shown twice by the clock: the first time only (CEST).
    let twice = [window(
        0,
        Weekdays::ALL,
        time(2, 30, 0, 0),
        DayEnd::At(time(2, 45, 0, 0)),
    )];
    assert_eq!(
        next(&twice, "2027-10-31T00:00"),
        Some((at("2027-10-31T00:30:00Z"), vec![0]))
    );
    assert_eq!(active_at(&tz, &twice, at("2027-10-31T00:40:00Z")), vec![0]);
    assert_eq!(
        active_at(&tz, &twice, at("2027-10-31T01:40:00Z")),
        Vec::<usize>::new()
    );
    // A window until the end of the day on a 23-hour and a 25-hour day.
    let evening = [window(
        0,
        Weekdays::ALL,
        time(20, 0, 0, 0),
        DayEnd::EndOfDay,
    )];
    assert_eq!(
        next(&evening, "2027-03-27T21:00"),
        Some((at("2027-03-27T23:00:00Z"), vec![]))
    );
    assert_eq!(
        next(&evening, "2027-10-30T21:00"),
        Some((at("2027-10-30T22:00:00Z"), vec![]))
    );
}

#[test]
fn date_ranges_across_months_and_years() {
    let tz = paris();
    let mut rentree = window(0, Weekdays::ALL, Time::midnight(), DayEnd::EndOfDay);
    rentree.dates = Some(vec![range(date(2027, 8, 30), date(2027, 9, 3))]);
    let w = [rentree];
    assert_eq!(
        next(&w, "2027-08-29T23:00"),
        Some((at("2027-08-30T00:00"), vec![0]))
    );
    for t in [
        "2027-08-31T12:00",
        "2027-09-01T00:00",
        "2027-09-03T23:59:59",
    ] {
        assert_eq!(active_at(&tz, &w, at(t)), vec![0], "{t}");
    }
    // Midnights inside the range change nothing: the next change is the end of the range.
    assert_eq!(
        next(&w, "2027-08-30T00:00"),
        Some((at("2027-09-04T00:00"), vec![]))
    );
    assert_eq!(
        next(&w, "2027-09-04T00:00"),
        None,
        "nothing after the range"
    );

    use Weekday::*;
    let mut new_year = window(
        0,
        days(&[Monday, Tuesday, Wednesday, Thursday, Friday]),
        Time::midnight(),
        DayEnd::EndOfDay,
    );
    new_year.dates = Some(vec![range(date(2027, 12, 30), date(2028, 1, 4))]);
    let w = [new_year];
    // Thursday 30 and Friday 31, then Monday 3 and Tuesday 4 (not the weekend).
    assert_eq!(
        next(&w, "2027-12-30T10:00"),
        Some((at("2028-01-01T00:00"), vec![]))
    );
    assert_eq!(
        next(&w, "2028-01-01T00:00"),
        Some((at("2028-01-03T00:00"), vec![0]))
    );
    // Far ahead: a rentrée more than a year away is found.
    let mut far = window(0, Weekdays::ALL, Time::midnight(), DayEnd::EndOfDay);
    far.dates = Some(vec![range(date(2027, 9, 1), date(2027, 9, 7))]);
    assert_eq!(
        next(&[far], "2026-01-15T12:00"),
        Some((at("2027-09-01T00:00"), vec![0]))
    );
}

#[test]
fn holidays_are_skipped() {
    let mut w = school_mornings();
    // The Toussaint holidays of 2027: Saturday 23 October to Sunday 7 November.
    w.except = vec![range(date(2027, 10, 23), date(2027, 11, 7))];
    let w = [w];
    assert_eq!(
        next(&w, "2027-10-22T09:00"),
        Some((at("2027-11-08T07:40"), vec![0]))
    );
    assert!(!w[0].on(date(2027, 11, 2)));
    assert!(w[0].on(date(2027, 11, 8)));
}

#[test]
fn changes_of_several_overlays_and_adjacent_windows() {
    let tz = paris();
    use Weekday::*;
    let wed = days(&[Wednesday]);
    // One overlay from 07:40 to 12:00 on Wednesdays, in two windows; another from 08:00 to 10:00.
    let w = [
        window(0, wed, time(7, 40, 0, 0), DayEnd::At(time(9, 0, 0, 0))),
        window(0, wed, time(9, 0, 0, 0), DayEnd::At(time(12, 0, 0, 0))),
        window(1, wed, time(8, 0, 0, 0), DayEnd::At(time(10, 0, 0, 0))),
    ];
    // 2027-09-08 is a Wednesday.
    assert_eq!(
        next(&w, "2027-09-08T07:00"),
        Some((at("2027-09-08T07:40"), vec![0]))
    );
    assert_eq!(
        next(&w, "2027-09-08T07:40"),
        Some((at("2027-09-08T08:00"), vec![0, 1]))
    );
    assert_eq!(active_at(&tz, &w, at("2027-09-08T09:00")), vec![0, 1]);
    assert_eq!(
        next(&w, "2027-09-08T08:00"),
        Some((at("2027-09-08T10:00"), vec![0]))
    );
    // 09:00 is an edge of two windows of overlay 0 and changes nothing.
    assert_eq!(
        next(&w, "2027-09-08T10:00"),
        Some((at("2027-09-08T12:00"), vec![]))
    );
    assert_eq!(
        next(&w, "2027-09-08T12:00"),
        Some((at("2027-09-15T07:40"), vec![0]))
    );
    // Always in force: nothing ever changes.
    let always = [window(0, Weekdays::ALL, Time::midnight(), DayEnd::EndOfDay)];
    assert_eq!(active_at(&tz, &always, at("2027-03-28T02:30:00Z")), vec![0]);
    assert_eq!(next(&always, "2027-03-28T00:00"), None);
    assert_eq!(next(&[], "2027-03-28T00:00"), None);
}

#[test]
fn overlaps_between_windows() {
    use Weekday::*;
    let mornings = school_mornings();
    // Same weekday, overlapping hours: every Monday.
    let monday_8 = window(
        1,
        days(&[Monday]),
        time(8, 0, 0, 0),
        DayEnd::At(time(8, 30, 0, 0)),
    );
    assert_eq!(overlap(&mornings, &monday_8), Some(Overlap::Every(Monday)));
    // Adjacent hours do not overlap.
    let after = window(1, Weekdays::ALL, time(9, 0, 0, 0), DayEnd::EndOfDay);
    assert_eq!(overlap(&mornings, &after), None);
    // No common weekday.
    let wednesdays = window(1, days(&[Wednesday]), Time::midnight(), DayEnd::EndOfDay);
    assert_eq!(overlap(&mornings, &wednesdays), None);
    // Dates: the first date both apply on (2027-09-01 is a Wednesday, the 2nd a Thursday).
    let mut rentree = window(1, Weekdays::ALL, Time::midnight(), DayEnd::EndOfDay);
    rentree.dates = Some(vec![range(date(2027, 9, 1), date(2027, 9, 7))]);
    assert_eq!(
        overlap(&mornings, &rentree),
        Some(Overlap::On(date(2027, 9, 2)))
    );
    assert_eq!(
        overlap(&rentree, &mornings),
        Some(Overlap::On(date(2027, 9, 2)))
    );
    // Unless the mornings leave the rentrée week out.
    let mut carved = school_mornings();
    carved.except = vec![range(date(2027, 9, 1), date(2027, 9, 7))];
    assert_eq!(overlap(&carved, &rentree), None);
    assert_eq!(Overlap::Every(Monday).to_string(), "every mon");
    assert_eq!(Overlap::On(date(2027, 9, 2)).to_string(), "on 2027-09-02");
}

// --- Properties ------------------------------------------------------------------------------

/// Instants of 2027 and 2028 (both DST changes of each year included).
fn any_instant() -> impl Strategy<Value = Timestamp> {
    (1_798_761_600i64..1_861_920_000i64).prop_map(|s| Timestamp::from_second(s).unwrap())
}

/// Windows on quarter hours, on random weekdays, some on a few dates of 2027-2028.
fn windows() -> impl Strategy<Value = Vec<Window>> {
    let one = (
        0usize..3,
        1u8..128,
        0i32..96,
        1i32..=96,
        proptest::option::of((0i32..700, 0i32..40)),
        proptest::option::of((0i32..700, 0i32..20)),
    )
        .prop_map(|(overlay, bits, a, b, dates, except)| {
            let (from_q, until_q) = if a < b { (a, b) } else { (b - 1, a + 1) };
            let quarter = |q: i32| time((q / 4) as i8, ((q % 4) * 15) as i8, 0, 0);
            let day = |offset: i32| {
                date(2027, 1, 1)
                    .checked_add(jiff::Span::new().days(offset))
                    .unwrap()
            };
            let until = if until_q >= 96 {
                DayEnd::EndOfDay
            } else {
                DayEnd::At(quarter(until_q))
            };
            let weekdays = (0..7).fold(Weekdays::NONE, |set, i| {
                if bits & (1 << i) != 0 {
                    set.with(Weekday::from_monday_zero_offset(i).unwrap())
                } else {
                    set
                }
            });
            Window {
                overlay,
                days: weekdays,
                dates: dates.map(|(start, len)| vec![range(day(start), day(start + len))]),
                except: except
                    .map(|(start, len)| vec![range(day(start), day(start + len))])
                    .unwrap_or_default(),
                from: quarter(from_q.max(0)),
                until,
            }
        });
    proptest::collection::vec(one, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The next change is after `t`, changes what is in force, and nothing changes before it.
    #[test]
    fn nothing_changes_before_the_next_change(ws in windows(), t in any_instant()) {
        let tz = paris();
        let now = active_at(&tz, &ws, t);
        if let Some(change) = next_change(&tz, &ws, t) {
            prop_assert!(change.at > t);
            prop_assert_eq!(&active_at(&tz, &ws, change.at), &change.active);
            prop_assert_ne!(&change.active, &now);
            let span = change.at.duration_since(t).as_secs();
            for k in 1..=16i64 {
                let probe = t.checked_add(SignedDuration::from_secs(span * k / 17)).unwrap();
                prop_assert_eq!(&active_at(&tz, &ws, probe), &now, "at {}", probe);
            }
            let just_before = change.at.checked_sub(SignedDuration::from_secs(1)).unwrap();
            if just_before > t {
                prop_assert_eq!(&active_at(&tz, &ws, just_before), &now);
            }
        }
    }

    /// Off DST change days, a window is in force exactly when the wall clock says so.
    #[test]
    fn in_force_when_the_wall_clock_says(ws in windows(), t in any_instant()) {
        let tz = paris();
        let local = tz.to_datetime(t);
        let d = local.date();
        let offset = |day: Date| tz.to_offset(instant(&tz, day, Time::midnight()).unwrap());
        prop_assume!(offset(d) == offset(d.tomorrow().unwrap()));
        prop_assume!(offset(d) == offset(d.yesterday().unwrap()));
        for w in &ws {
            let secs = seconds_of(local.time());
            let by_wall = w.on(d) && seconds_of(w.from) <= secs && secs < w.until.seconds();
            prop_assert_eq!(w.contains(t, &tz), by_wall, "{:?} at {}", w, local);
        }
    }
}
