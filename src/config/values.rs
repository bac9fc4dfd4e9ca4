//! Value syntax of the configuration file: durations, rates, sizes, shares, addresses, CIDRs,
//! and the days, dates and times of day of schedules.
//!
//! Every parser takes the text as written (after `${ENV}` expansion) and returns either the value
//! or a message that quotes the text, e.g. `invalid address "10.0.0.1:80x"`. Parsers never panic.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use jiff::civil::{Date, Time, Weekday};

use super::model::{LimitKey, MinHealthy, Rate, TenantSource};
use crate::schedule::calendar::{DateRange, DayEnd, Weekdays};

/// A duration: a whole number and a unit, `250ms`, `10s`, `5m`, `1h`; units `ms`, `s`, `m` or
/// `min`, `h`, `d`. Parts add up: `2m30s`. A bare number is refused (the unit is required).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why}");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty (write e.g. 10s, 250ms, 5m, 1h)"));
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(
                "expected a whole number followed by a unit (ms, s, m, h, d)",
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("the number is too large"))?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(bad("missing unit (ms, s, m, h, d)")),
            _ => {
                return Err(bad(&format!(
                    "unknown unit {unit:?} (use ms, s, m, h or d)"
                )))
            }
        };
        total_ms = number
            .checked_mul(factor)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| bad("too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A rate: `COUNT/UNIT` with unit `s`, `min` or `h`: `20/s`, `30/min`, `1000/h`. COUNT >= 1.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = |why: &str| format!("invalid rate {s:?}: {why}");
    let t = s.trim();
    let Some((count, unit)) = t.split_once('/') else {
        return Err(bad("expected COUNT/UNIT, e.g. 20/s, 30/min, 1000/h"));
    };
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the count must be a whole number"));
    }
    let count: u32 = count.parse().map_err(|_| bad("the count is too large"))?;
    if count == 0 {
        return Err(bad("the count must be at least 1"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "m" => return Err(bad("the unit must be s, min or h (write min for minutes)")),
        _ => return Err(bad("the unit must be s, min or h")),
    };
    Ok(Rate { count, per })
}

/// A size in bytes: `512`, `512B`, `32KiB`, `16MiB`, `1GiB`, `1TiB` (1024-based) or `10KB`,
/// `10MB`, `1GB`, `1TB` (1000-based; `kB` is accepted too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size {s:?}: {why}");
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad(
            "expected a whole number of bytes with an optional unit, e.g. 32KiB",
        ));
    }
    let number: u64 = t[..digits]
        .parse()
        .map_err(|_| bad("the number is too large"))?;
    let factor: u64 = match t[digits..].trim_start() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        unit => {
            return Err(bad(&format!(
                "unknown unit {unit:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            )))
        }
    };
    number.checked_mul(factor).ok_or_else(|| bad("too large"))
}

/// A byte rate: a size per second, `1KiB/s`. Returns bytes per second.
pub fn parse_byte_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let Some(size) = t.strip_suffix("/s") else {
        return Err(format!(
            "invalid byte rate {s:?}: expected a size per second, e.g. 1KiB/s"
        ));
    };
    parse_size(size).map_err(|e| format!("invalid byte rate {s:?}: {e}"))
}

/// A share: a percentage between 0% and 100% (`20%`, `12.5%`), returned as a fraction 0.0..=1.0.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let bad = |why: &str| format!("invalid share {s:?}: {why}");
    let t = s.trim();
    let Some(number) = t.strip_suffix('%') else {
        return Err(bad("expected a percentage, e.g. 20%"));
    };
    let number = number.trim_end();
    let well_formed = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(bad("expected a percentage, e.g. 20%"));
    }
    let percent: f64 = number
        .parse()
        .map_err(|_| bad("expected a percentage, e.g. 20%"))?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(bad("must be between 0% and 100%"));
    }
    Ok(percent / 100.0)
}

/// A socket address: an IP literal and a port, `10.0.0.1:80` or `[::1]:8080`. Host names are
/// refused: nothing is resolved.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(addr) = SocketAddr::from_str(t) {
        return Ok(addr);
    }
    if IpAddr::from_str(t).is_ok() || IpAddr::from_str(t.trim_matches(['[', ']'])).is_ok() {
        return Err(format!("invalid address {s:?}: a port is required"));
    }
    let host = match t.rsplit_once(':') {
        Some((host, _)) => host,
        None => t,
    };
    let host_is_name = !host.is_empty()
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && IpAddr::from_str(host).is_err();
    if host_is_name {
        return Err(format!(
            "invalid address {s:?}: the host must be an IP literal (names are not resolved)"
        ));
    }
    Err(format!("invalid address {s:?}"))
}

/// A network: `10.0.0.0/8`, `2001:db8::/32`; a bare IP means /32 (IPv4) or /128 (IPv6).
/// Host bits are cleared: `10.0.0.1/8` is `10.0.0.0/8`.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if t.contains('/') {
        return IpNet::from_str(t)
            .map(|net| net.trunc())
            .map_err(|_| format!("invalid CIDR {s:?}"));
    }
    IpAddr::from_str(t)
        .map(IpNet::from)
        .map_err(|_| format!("invalid CIDR {s:?}"))
}

/// `true` or `false`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}: expected true or false")),
    }
}

/// A whole number (no sign, no unit).
pub fn parse_number<T: FromStr>(s: &str) -> Result<T, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid number {s:?}: expected a whole number"));
    }
    t.parse()
        .map_err(|_| format!("invalid number {s:?}: too large"))
}

/// `min_healthy`: a count of servers (`2`, at least 1) or a share of them (`50%`, above 0%).
pub fn parse_min_healthy(s: &str) -> Result<MinHealthy, String> {
    let t = s.trim();
    if t.ends_with('%') {
        let share = parse_share(t)?;
        if share <= 0.0 {
            return Err(format!("invalid share {s:?}: must be above 0%"));
        }
        return Ok(MinHealthy::Share(share));
    }
    let count: usize = parse_number(t)
        .map_err(|_| format!("invalid min_healthy {s:?}: expected a count (2) or a share (50%)"))?;
    if count == 0 {
        return Err(format!("invalid min_healthy {s:?}: must be at least 1"));
    }
    Ok(MinHealthy::Count(count))
}

fn checked_header_name(name: &str, whole: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    http::HeaderName::from_bytes(lower.as_bytes())
        .map(|_| lower)
        .map_err(|_| format!("invalid header name in {whole:?}"))
}

fn checked_field_name<'a>(name: &'a str, whole: &str) -> Result<&'a str, String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid name in {whole:?}: empty or with blanks"));
    }
    Ok(name)
}

/// A limit key: `client_ip`, `header:NAME`, `cookie:NAME`, `query:NAME`, `form:FIELD`, `global`.
pub fn parse_limit_key(s: &str) -> Result<LimitKey, String> {
    let t = s.trim();
    match t {
        "client_ip" => return Ok(LimitKey::ClientIp),
        "global" => return Ok(LimitKey::Global),
        _ => {}
    }
    let Some((kind, name)) = t.split_once(':') else {
        return Err(format!(
            "invalid limit key {s:?}: expected client_ip, header:NAME, cookie:NAME, query:NAME, form:FIELD or global"
        ));
    };
    match kind {
        "header" => checked_header_name(name, s).map(LimitKey::Header),
        "cookie" => checked_field_name(name, s).map(|n| LimitKey::Cookie(n.to_string())),
        "query" => checked_field_name(name, s).map(|n| LimitKey::Query(n.to_string())),
        "form" => checked_field_name(name, s).map(|n| LimitKey::Form(n.to_string())),
        _ => Err(format!(
            "invalid limit key {s:?}: expected client_ip, header:NAME, cookie:NAME, query:NAME, form:FIELD or global"
        )),
    }
}

/// A tenant source: `host`, `header:NAME`, `cookie:NAME`, `query:NAME`, `path_segment:N` (N >= 1).
pub fn parse_tenant(s: &str) -> Result<TenantSource, String> {
    let t = s.trim();
    if t == "host" {
        return Ok(TenantSource::Host);
    }
    let expected = || {
        format!(
            "invalid tenant {s:?}: expected host, header:NAME, cookie:NAME, query:NAME or path_segment:N"
        )
    };
    let Some((kind, name)) = t.split_once(':') else {
        return Err(expected());
    };
    match kind {
        "header" => checked_header_name(name, s).map(TenantSource::Header),
        "cookie" => checked_field_name(name, s).map(|n| TenantSource::Cookie(n.to_string())),
        "query" => checked_field_name(name, s).map(|n| TenantSource::Query(n.to_string())),
        "path_segment" => match parse_number::<usize>(name) {
            Ok(n) if n >= 1 => Ok(TenantSource::PathSegment(n)),
            _ => Err(format!(
                "invalid tenant {s:?}: path_segment needs a segment number >= 1"
            )),
        },
        _ => Err(expected()),
    }
}

/// Weekdays: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun` (any case, or the whole English
/// name), or a range of them, `mon..fri` or `mon-fri` (a range may wrap: `fri..mon`).
pub fn parse_weekdays(s: &str) -> Result<Weekdays, String> {
    let t = s.trim();
    let one = |name: &str| {
        let lower = name.trim().to_ascii_lowercase();
        let day = match lower.as_str() {
            "mon" | "monday" => Weekday::Monday,
            "tue" | "tuesday" => Weekday::Tuesday,
            "wed" | "wednesday" => Weekday::Wednesday,
            "thu" | "thursday" => Weekday::Thursday,
            "fri" | "friday" => Weekday::Friday,
            "sat" | "saturday" => Weekday::Saturday,
            "sun" | "sunday" => Weekday::Sunday,
            _ => {
                return Err(format!(
                    "invalid day {s:?}: expected mon, tue, wed, thu, fri, sat, sun or a range such as mon..fri"
                ))
            }
        };
        Ok(day)
    };
    match t.split_once("..").or_else(|| t.split_once('-')) {
        None => Ok(Weekdays::NONE.with(one(t)?)),
        Some((a, b)) => {
            let (first, last) = (one(a)?, one(b)?);
            let mut set = Weekdays::NONE.with(first);
            let mut day = first;
            while day != last {
                day = day.next();
                set = set.with(day);
            }
            Ok(set)
        }
    }
}

/// A date, `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<Date, String> {
    let t = s.trim();
    let b = t.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(format!("invalid date {s:?}: expected YYYY-MM-DD"));
    }
    let (year, month, day) = (
        parse_number::<i16>(&t[0..4])?,
        parse_number::<i8>(&t[5..7])?,
        parse_number::<i8>(&t[8..10])?,
    );
    Date::new(year, month, day).map_err(|_| format!("invalid date {s:?}: no such day"))
}

/// The longest date range a schedule accepts: a year and a day (a school year fits).
pub const MAX_DATE_RANGE_DAYS: i64 = 366;

/// A date or an inclusive range of dates, `2027-09-01..2027-09-07`, at most
/// [`MAX_DATE_RANGE_DAYS`] days long.
pub fn parse_date_range(s: &str) -> Result<DateRange, String> {
    let (first, last) = match s.trim().split_once("..") {
        None => {
            let d = parse_date(s)?;
            (d, d)
        }
        Some((a, b)) => (parse_date(a)?, parse_date(b)?),
    };
    if last < first {
        return Err(format!(
            "invalid date range {s:?}: it ends before it begins"
        ));
    }
    let days = last.duration_since(first).as_secs() / 86_400 + 1;
    if days > MAX_DATE_RANGE_DAYS {
        return Err(format!(
            "invalid date range {s:?}: {days} days, at most {MAX_DATE_RANGE_DAYS} (for every week, use days)"
        ));
    }
    Ok(DateRange { first, last })
}

/// A time of day, `HH:MM` or `HH:MM:SS` (24-hour clock, `7:40` too). With `end_of_day`, `24:00`
/// is the end of the day.
fn time_of_day(s: &str, end_of_day: bool) -> Result<Option<Time>, String> {
    let bad = || {
        format!(
            "invalid time {s:?}: expected HH:MM (24-hour clock, e.g. 07:40{})",
            if end_of_day { ", or 24:00" } else { "" }
        )
    };
    let t = s.trim();
    let parts: Vec<&str> = t.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts.iter().enumerate().any(|(i, p)| {
            p.is_empty()
                || p.len() > 2
                || (i > 0 && p.len() != 2)
                || !p.bytes().all(|c| c.is_ascii_digit())
        })
    {
        return Err(bad());
    }
    let n = |p: &str| p.parse::<i8>().map_err(|_| bad());
    let (h, m) = (n(parts[0])?, n(parts[1])?);
    let sec = match parts.get(2) {
        Some(p) => n(p)?,
        None => 0,
    };
    if end_of_day && h == 24 && m == 0 && sec == 0 {
        return Ok(None);
    }
    Time::new(h, m, sec, 0).map(Some).map_err(|_| bad())
}

/// A time of day at which a window begins: `07:40`.
pub fn parse_time_of_day(s: &str) -> Result<Time, String> {
    time_of_day(s, false)?.ok_or_else(|| format!("invalid time {s:?}"))
}

/// A time of day at which a window ends: `09:00`, or `24:00` for the end of the day.
pub fn parse_day_end(s: &str) -> Result<DayEnd, String> {
    Ok(match time_of_day(s, true)? {
        Some(t) => DayEnd::At(t),
        None => DayEnd::EndOfDay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "0",
            "s",
            "10x",
            "1.5s",
            "-1s",
            "10 s",
            "99999999999999999999s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.starts_with("invalid duration"), "{bad}: {e}");
        }
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn rates() {
        let r = |c, s| Rate {
            count: c,
            per: Duration::from_secs(s),
        };
        assert_eq!(parse_rate("20/s"), Ok(r(20, 1)));
        assert_eq!(parse_rate("30/min"), Ok(r(30, 60)));
        assert_eq!(parse_rate("1000/h"), Ok(r(1000, 3600)));
        assert!(parse_rate("30/m").unwrap_err().contains("write min"));
        for bad in [
            "",
            "20",
            "/s",
            "0/s",
            "-1/s",
            "1.5/s",
            "20/d",
            "20/sec",
            "99999999999/s",
        ] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.starts_with("invalid rate"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("16MiB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "KiB",
            "32kib",
            "32K",
            "1.5MiB",
            "-1",
            "20000000TiB",
            "32 KiBs",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.starts_with("invalid size"), "{bad}: {e}");
        }
        assert_eq!(parse_byte_rate("1KiB/s"), Ok(1024));
        assert_eq!(parse_byte_rate("100/s"), Ok(100));
        assert!(parse_byte_rate("1KiB").is_err());
        assert!(parse_byte_rate("1KiB/min").is_err());
        assert!(parse_byte_rate("x/s").is_err());
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("20%"), Ok(0.2));
        assert_eq!(parse_share("0%"), Ok(0.0));
        assert_eq!(parse_share("100%"), Ok(1.0));
        assert_eq!(parse_share("12.5%"), Ok(0.125));
        for bad in [
            "20", "0.2", "%", "101%", "-5%", "1.2.3%", ".%", "abc%", "inf%", "NaN%",
        ] {
            let e = parse_share(bad).unwrap_err();
            assert!(e.starts_with("invalid share"), "{bad}: {e}");
        }
        assert_eq!(parse_min_healthy("1"), Ok(MinHealthy::Count(1)));
        assert_eq!(parse_min_healthy("50%"), Ok(MinHealthy::Share(0.5)));
        assert!(parse_min_healthy("0").is_err());
        assert!(parse_min_healthy("0%").is_err());
        assert!(parse_min_healthy("half").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_socket_addr("10.0.0.1:80"),
            Ok("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            parse_socket_addr("[::1]:8080"),
            Ok("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            parse_socket_addr("10.0.0.1:80x"),
            Err("invalid address \"10.0.0.1:80x\"".to_string())
        );
        assert!(parse_socket_addr("localhost:80")
            .unwrap_err()
            .contains("IP literal"));
        assert!(parse_socket_addr("10.0.0.1")
            .unwrap_err()
            .contains("port is required"));
        assert!(parse_socket_addr("::1").unwrap_err().contains("port"));
        for bad in [
            "",
            ":80",
            "10.0.0.1:",
            "10.0.0.1:70000",
            "::1:80",
            "[::1]",
            "a b:1",
        ] {
            let e = parse_socket_addr(bad).unwrap_err();
            assert!(e.starts_with("invalid address"), "{bad}: {e}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_cidr("10.1.2.3/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(
            parse_cidr("2001:db8::/32"),
            Ok("2001:db8::/32".parse().unwrap())
        );
        assert_eq!(parse_cidr("192.0.2.7"), Ok("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_cidr("::1"), Ok("::1/128".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "example.org",
            "10.0.0.0/",
            "/8",
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(e.starts_with("invalid CIDR"), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_and_bools() {
        assert_eq!(parse_number::<u32>("42"), Ok(42));
        assert!(parse_number::<u8>("300").is_err());
        assert!(parse_number::<u32>("-1").is_err());
        assert!(parse_number::<u32>("1.0").is_err());
        assert!(parse_number::<u32>("").is_err());
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn limit_keys() {
        assert_eq!(parse_limit_key("client_ip"), Ok(LimitKey::ClientIp));
        assert_eq!(parse_limit_key("global"), Ok(LimitKey::Global));
        assert_eq!(
            parse_limit_key("header:X-Api-Key"),
            Ok(LimitKey::Header("x-api-key".into()))
        );
        assert_eq!(
            parse_limit_key("cookie:SID"),
            Ok(LimitKey::Cookie("SID".into()))
        );
        assert_eq!(parse_limit_key("query:q"), Ok(LimitKey::Query("q".into())));
        assert_eq!(
            parse_limit_key("form:username"),
            Ok(LimitKey::Form("username".into()))
        );
        for bad in [
            "",
            "ip",
            "header:",
            "header:bad name",
            "form:",
            "path:x",
            "Client_IP",
        ] {
            let e = parse_limit_key(bad).unwrap_err();
            assert!(e.starts_with("invalid"), "{bad}: {e}");
        }
    }

    #[test]
    fn tenants() {
        assert_eq!(parse_tenant("host"), Ok(TenantSource::Host));
        assert_eq!(
            parse_tenant("header:X-ENT-UAI"),
            Ok(TenantSource::Header("x-ent-uai".into()))
        );
        assert_eq!(
            parse_tenant("cookie:uai"),
            Ok(TenantSource::Cookie("uai".into()))
        );
        assert_eq!(
            parse_tenant("query:uai"),
            Ok(TenantSource::Query("uai".into()))
        );
        assert_eq!(
            parse_tenant("path_segment:2"),
            Ok(TenantSource::PathSegment(2))
        );
        for bad in [
            "",
            "path_segment:0",
            "path_segment:x",
            "form:x",
            "header:",
            "uai",
        ] {
            let e = parse_tenant(bad).unwrap_err();
            assert!(e.starts_with("invalid"), "{bad}: {e}");
        }
    }
    #[test]
    fn weekdays_dates_and_times() {
        let days = |s| {
            parse_weekdays(s).map(|w| {
                w.iter()
                    .map(crate::schedule::calendar::weekday_name)
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        assert_eq!(days("mon"), Ok("mon".into()));
        assert_eq!(days("Thursday"), Ok("thu".into()));
        assert_eq!(days("mon..fri"), Ok("mon,tue,wed,thu,fri".into()));
        assert_eq!(days("fri..mon"), Ok("mon,fri,sat,sun".into()));
        assert_eq!(days("sun..sun"), Ok("sun".into()));
        assert_eq!(days("mon-fri"), days("mon..fri"));
        for bad in ["", "lun", "mon..", "mo", "mon-", "mon..tue..wed"] {
            assert!(
                parse_weekdays(bad).unwrap_err().starts_with("invalid day"),
                "{bad}"
            );
        }

        assert_eq!(parse_date("2027-09-01"), Ok(Date::constant(2027, 9, 1)));
        for bad in [
            "2027-9-1",
            "2027-02-30",
            "27-09-01",
            "2027/09/01",
            "",
            "2027-09-01T00:00",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_date_range("2027-09-01..2027-09-07"),
            Ok(DateRange {
                first: Date::constant(2027, 9, 1),
                last: Date::constant(2027, 9, 7)
            })
        );
        assert_eq!(
            parse_date_range("2027-11-02"),
            Ok(DateRange {
                first: Date::constant(2027, 11, 2),
                last: Date::constant(2027, 11, 2)
            })
        );
        assert!(parse_date_range("2027-09-07..2027-09-01")
            .unwrap_err()
            .contains("ends before"));
        assert!(parse_date_range("2027-09-01..2028-09-01")
            .unwrap_err()
            .contains("at most 366"));
        assert!(
            parse_date_range("2028-01-01..2028-12-31").is_ok(),
            "a leap year is 366 days"
        );

        assert_eq!(parse_time_of_day("07:40"), Ok(Time::constant(7, 40, 0, 0)));
        assert_eq!(parse_time_of_day("7:40"), Ok(Time::constant(7, 40, 0, 0)));
        assert_eq!(
            parse_time_of_day("23:59:30"),
            Ok(Time::constant(23, 59, 30, 0))
        );
        for bad in [
            "24:00",
            "07h40",
            "7",
            "07:4",
            "07:60",
            "-1:00",
            "07:40:00:00",
            " :40",
            "0740",
        ] {
            assert!(
                parse_time_of_day(bad)
                    .unwrap_err()
                    .starts_with("invalid time"),
                "{bad}"
            );
        }
        assert_eq!(parse_day_end("24:00"), Ok(DayEnd::EndOfDay));
        assert_eq!(
            parse_day_end("09:00"),
            Ok(DayEnd::At(Time::constant(9, 0, 0, 0)))
        );
        assert!(parse_day_end("24:01").is_err());
    }
}
