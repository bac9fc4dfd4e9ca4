//! Value syntax of the configuration file: durations, rates, sizes, shares, addresses, CIDRs.
//!
//! Every parser takes the text as written (after `${ENV}` expansion) and returns either the value
//! or a message that quotes the text, e.g. `invalid address "10.0.0.1:80x"`. Parsers never panic.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::model::{LimitKey, MinHealthy, Rate, TenantSource};

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
}
