//! `schedules`: overlays and windows as the file writes them, every value checked as in the
//! base file, names resolved, and overlays that could be in force together kept apart.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::schedule::calendar::{DayEnd, Weekdays};
use crate::schedule::overlay;

const BASE: &str = "\
listeners:
  - address: 127.0.0.1:8080
upstreams:
  ent:
    datacenters:
      - name: dc-a
        servers: [127.0.0.1:9000]
routes:
  - name: login
    match: { path_prefix: /auth/login }
    upstream: ent
    limits: [login_per_ip]
    login_queue: logins
  - name: default
    upstream: ent
    limits: [per_ip]
limits:
  per_ip: { key: client_ip, rate: 50/s, burst: 200 }
  login_per_ip: { key: client_ip, rate: 60/min, burst: 40, ban: false }
login_queues:
  logins: { concurrency: 4, hold: 2s }
  adaptive_q: { adaptive: { min: 8, max: 64 } }
";

fn parse(schedules: &str) -> Result<Config, ConfigErrors> {
    from_str_with_env(
        &format!("{BASE}{schedules}"),
        Path::new("rempart.yaml"),
        |_| None,
    )
}

fn errors(schedules: &str) -> Vec<String> {
    match parse(schedules) {
        Ok(_) => panic!("expected errors for:\n{schedules}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_error(schedules: &str, path: &str, words: &str) {
    let all = errors(schedules);
    assert!(
        all.iter()
            .any(|e| e.contains(&format!("{path}: ")) && e.contains(words)),
        "expected an error at {path} saying {words:?}; got:\n{}",
        all.join("\n")
    );
}

const SCHOOL: &str = "\
schedules:
  overlays:
    school_morning:
      login_queues:
        logins: { concurrency: 12, hold: 20s }
      limits:
        per_ip: { rate: 20/s }
        login_per_ip: { mode: dry_run, ban: true }
  windows:
    - overlay: school_morning
      days: [mon, tue, thu, fri]
      from: 07:40
      until: 09:00
    - overlay: school_morning
      days: wed
      from: \"07:40\"
      until: \"12:00\"
";

#[test]
fn a_school_morning_loads_and_applies() {
    let config = parse(SCHOOL).expect("valid");
    let s = config.schedules.as_ref().expect("schedules");
    assert_eq!(s.time_zone_name, "Europe/Paris");
    assert_eq!(s.time_zone.iana_name(), Some("Europe/Paris"));
    assert_eq!(s.overlays.len(), 1);
    assert_eq!(s.windows.len(), 2);
    let w = &s.windows[0];
    assert_eq!(w.overlay, 0);
    assert_eq!(w.from, jiff::civil::time(7, 40, 0, 0));
    assert_eq!(w.until, DayEnd::At(jiff::civil::time(9, 0, 0, 0)));
    assert!(w.days.contains(jiff::civil::Weekday::Thursday));
    assert!(!w.days.contains(jiff::civil::Weekday::Wednesday));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let changes: Vec<String> = s.overlays[0]
        .changes(&config.login_queues, &config.limits)
        .into_iter()
        .map(|c| format!("{}={}", c.field, c.value))
        .collect();
    assert_eq!(
        changes,
        [
            "login_queues.logins.concurrency=12",
            "login_queues.logins.hold=20s",
            "limits.per_ip.rate=20/s",
            "limits.per_ip.burst=20",
            "limits.login_per_ip.mode=dry_run",
            "limits.login_per_ip.ban=true",
        ]
    );

    let on = overlay::apply(&config, &[0]);
    assert_eq!(on.login_queues[0].concurrency, 12);
    assert_eq!(on.login_queues[0].hold, Duration::from_secs(20));
    assert_eq!(on.login_queues[1].concurrency, 64, "other queues unchanged");
    assert_eq!(on.limits[0].rate.count, 20);
    assert_eq!(on.limits[0].burst, 20, "a rate comes with its own burst");
    assert_eq!(on.limits[1].mode, LimitMode::DryRun);
    assert!(on.limits[1].ban);
    assert_eq!(on.limits[1].rate.count, 60, "unnamed fields unchanged");
    let off = overlay::apply(&config, &[]);
    assert_eq!(off.login_queues[0].concurrency, 4);
    assert_eq!(off.limits[0].burst, 200);
}

#[test]
fn defaults_and_a_time_zone() {
    let config = parse(
        "schedules:\n  time_zone: America/Cayenne\n  overlays:\n    o: { limits: { per_ip: { burst: 10 } } }\n  windows:\n    - overlay: o\n",
    )
    .expect("valid");
    let s = config.schedules.unwrap();
    assert_eq!(s.time_zone_name, "America/Cayenne");
    let w = &s.windows[0];
    assert_eq!(w.days, Weekdays::ALL);
    assert_eq!(w.dates, None);
    assert_eq!(w.from, jiff::civil::Time::midnight());
    assert_eq!(w.until, DayEnd::EndOfDay);
    assert_eq!(s.overlays[0].limits[0].rate, None);
    assert_eq!(s.overlays[0].limits[0].burst, Some(10));
    assert!(parse("").unwrap().schedules.is_none());
}

#[test]
fn unknown_names_and_fields_are_errors() {
    assert_error(
        "schedules:\n  overlays:\n    o: { limits: { per_ip: { burst: 10 } } }\n  windows:\n    - overlay: rentree\n",
        "schedules.windows[0].overlay",
        "unknown overlay \"rentree\" (defined: o)",
    );
    assert_error(
        "schedules:\n  overlays:\n    o: { login_queues: { login: { concurrency: 10 } } }\n  windows: [{ overlay: o }]\n",
        "schedules.overlays.o.login_queues.login",
        "unknown login queue \"login\" (defined: logins, adaptive_q)",
    );
    assert_error(
        "schedules:\n  overlays:\n    o: { limits: { per_address: { rate: 1/s } } }\n  windows: [{ overlay: o }]\n",
        "schedules.overlays.o.limits.per_address",
        "unknown limit \"per_address\"",
    );
    // Fields an overlay may not change are unknown fields.
    assert_error(
        "schedules:\n  overlays:\n    o: { limits: { per_ip: { key: global } } }\n",
        "schedules.overlays.o.limits.per_ip.key",
        "unknown field `key`, expected one of `rate`, `burst`, `mode`, `ban`",
    );
    assert_error(
        "schedules:\n  overlays:\n    o: { queues: { logins: { concurrency: 80 } } }\n",
        "schedules.overlays.o.queues",
        "unknown field `queues`, expected `login_queues` or `limits`",
    );
    assert_error(
        "schedules:\n  windows: [{ overlay: o, hours: 07:40-09:00 }]\n",
        "schedules.windows[0].hours",
        "unknown field `hours`",
    );
    assert_error(
        "schedules:\n  windows: [{ days: [mon] }]\n",
        "schedules.windows[0].overlay",
        "required field is missing",
    );
}

#[test]
fn values_are_checked_as_in_the_base_file() {
    let all = errors(
        "schedules:
  time_zone: Europe/Pariss
  overlays:
    o:
      login_queues:
        logins: { concurrency: 0, hold: soon, max_waiting: 0 }
      limits:
        per_ip: { rate: 20/m, burst: 0, mode: strict, ban: maybe }
  windows:
    - overlay: o
      days: [mon, lun]
      dates: [2027-09-07..2027-09-01, 2027-02-30]
      except_dates: []
      from: 7h40
      until: \"25:00\"
    - overlay: o
      from: \"09:00\"
      until: \"08:00\"
",
    );
    let text = all.join("\n");
    for (path, words) in [
        ("schedules.time_zone", "unknown time zone \"Europe/Pariss\""),
        (
            "schedules.overlays.o.login_queues.logins.concurrency",
            "at least 1",
        ),
        (
            "schedules.overlays.o.login_queues.logins.hold",
            "invalid duration",
        ),
        (
            "schedules.overlays.o.login_queues.logins.max_waiting",
            "at least 1",
        ),
        (
            "schedules.overlays.o.limits.per_ip.rate",
            "write min for minutes",
        ),
        ("schedules.overlays.o.limits.per_ip.burst", "at least 1"),
        (
            "schedules.overlays.o.limits.per_ip.mode",
            "expected enforce or dry_run",
        ),
        ("schedules.overlays.o.limits.per_ip.ban", "maybe"),
        ("schedules.windows[0].days[1]", "invalid day \"lun\""),
        ("schedules.windows[0].dates[0]", "ends before it begins"),
        ("schedules.windows[0].dates[1]", "no such day"),
        (
            "schedules.windows[0].except_dates",
            "an empty list names no date",
        ),
        ("schedules.windows[0].from", "invalid time \"7h40\""),
        ("schedules.windows[0].until", "invalid time \"25:00\""),
        (
            "schedules.windows[1].until",
            "08:00 is not after from (09:00)",
        ),
    ] {
        assert!(
            all.iter()
                .any(|e| e.contains(&format!("{path}: ")) && e.contains(words)),
            "expected an error at {path} saying {words:?}; got:\n{text}"
        );
    }
    // Each error has its line.
    assert!(
        all.iter()
            .any(|e| e.starts_with("rempart.yaml:24: schedules.time_zone")),
        "{text}"
    );
}

#[test]
fn adaptive_queues_change_their_bounds_static_ones_their_concurrency() {
    let windows = "  windows: [{ overlay: o }]\n";
    assert_error(
        &format!("schedules:\n  overlays:\n    o: {{ login_queues: {{ adaptive_q: {{ concurrency: 100 }} }} }}\n{windows}"),
        "schedules.overlays.o.login_queues.adaptive_q.concurrency",
        "is adaptive",
    );
    assert_error(
        &format!("schedules:\n  overlays:\n    o: {{ login_queues: {{ logins: {{ adaptive: {{ max: 100 }} }} }} }}\n{windows}"),
        "schedules.overlays.o.login_queues.logins.adaptive",
        "is not adaptive",
    );
    assert_error(
        &format!("schedules:\n  overlays:\n    o: {{ login_queues: {{ adaptive_q: {{ adaptive: {{ min: 100 }} }} }} }}\n{windows}"),
        "schedules.overlays.o.login_queues.adaptive_q.adaptive",
        "min (100) must not be more than max (64)",
    );
    let config = parse(&format!(
        "schedules:\n  overlays:\n    o: {{ login_queues: {{ adaptive_q: {{ adaptive: {{ min: 100, max: 400 }} }} }} }}\n{windows}"
    ))
    .expect("valid");
    let on = overlay::apply(&config, &[0]);
    let q = &on.login_queues[1];
    assert_eq!(
        (q.adaptive.unwrap().min, q.adaptive.unwrap().max),
        (100, 400)
    );
    assert_eq!(
        q.concurrency, 100,
        "the starting limit moved into the bounds"
    );
}

const TWO: &str = "\
schedules:
  overlays:
    school_morning:
      login_queues: { logins: { concurrency: 12 } }
    rentree:
      login_queues: { logins: { concurrency: 40 } }
      limits: { per_ip: { burst: 50 } }
  windows:
    - overlay: school_morning
      days: [mon, tue, thu, fri]
      from: 07:40
      until: 09:00
";

#[test]
fn overlays_in_force_together_must_change_different_fields() {
    let rentree = "    - overlay: rentree\n      dates: [2027-09-01..2027-09-07]\n";
    assert_error(
        &format!("{TWO}{rentree}"),
        "schedules.windows[1]",
        "the overlays \"school_morning\" (windows[0], 07:40–09:00) and \"rentree\" (00:00–24:00) can be in force at once (on 2027-09-02) and both change login_queues.logins.concurrency",
    );
    // The mornings leave the rentrée week out: no conflict.
    let carved = TWO.replace(
        "      until: 09:00\n",
        "      until: 09:00\n      except_dates: [2027-09-01..2027-09-07]\n",
    );
    parse(&format!("{carved}{rentree}")).expect("carved out");
    // Hours that do not overlap: no conflict.
    parse(&format!(
        "{TWO}    - overlay: rentree\n      from: \"09:00\"\n"
    ))
    .expect("after 09:00");
    // Different fields: no conflict.
    let other = TWO.replace(
        "login_queues: { logins: { concurrency: 40 } }",
        "login_queues: { logins: { hold: 30s } }",
    );
    parse(&format!("{other}{rentree}")).expect("different fields");
    // A rate brings its burst: it meets an overlay that changes the burst.
    let burst = "\
schedules:
  overlays:
    a: { limits: { per_ip: { rate: 10/s } } }
    b: { limits: { per_ip: { burst: 50 } } }
  windows:
    - { overlay: a, days: [mon..fri] }
    - { overlay: b, days: fri, from: \"08:00\", until: \"08:10\" }
";
    assert_error(
        burst,
        "schedules.windows[1]",
        "(every fri) and both change limits.per_ip.burst",
    );
}

#[test]
fn warnings_for_overlays_that_do_nothing() {
    let config = parse(
        "schedules:
  overlays:
    unused: { limits: { per_ip: { burst: 10 } } }
    empty: {}
  windows:
    - overlay: empty
    - overlay: unused
      days: [sat]
      dates: [2027-09-01..2027-09-03]
",
    )
    .expect("valid, with warnings");
    let text = config.warnings.join("\n");
    assert!(
        text.contains("schedules.overlays.empty: this overlay changes nothing"),
        "{text}"
    );
    assert!(
        text.contains("schedules.windows[1]: this window applies on none of its dates"),
        "{text}"
    );
    let config =
        parse("schedules:\n  overlays:\n    unused: { limits: { per_ip: { burst: 10 } } }\n")
            .expect("valid");
    assert!(
        config
            .warnings
            .join("\n")
            .contains("schedules.overlays.unused: no window applies this overlay"),
        "{:?}",
        config.warnings
    );
}
