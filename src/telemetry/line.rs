//! The access log's JSON line, written by hand into one buffer: no intermediate strings, no
//! serializer, the time's date part computed once a second per thread. The line is what
//! `serde_json` would write for the same record (field order, escaping) except that durations
//! carry exactly three decimals (microseconds).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{civil_from_days, LOGGED_HOST_BYTES, LOGGED_PATH_BYTES};

/// One access-log line. Query strings and cookies are never part of it.
pub struct AccessRecord<'a> {
    pub time: SystemTime,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// Clipped to `LOGGED_HOST_BYTES` when written.
    pub host: &'a str,
    /// Clipped to `LOGGED_PATH_BYTES` when written.
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub upstream: &'a str,
    pub datacenter: &'a str,
    pub server: Option<SocketAddr>,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub queue_ms: Option<f64>,
    pub retries: u32,
    /// Left out of the line when there is none.
    pub reason: Option<&'a str>,
    /// The limit that refused the request (reason `rate_limited`), or that would have in
    /// dry_run; left out when there is none.
    pub limit: Option<&'a str>,
    pub request_id: &'a str,
}

/// Bytes a line takes beyond its path and host, to size its buffer once.
const LINE_BASE_BYTES: usize = 320;

impl AccessRecord<'_> {
    /// The record as one JSON object and a newline.
    pub fn to_line(&self) -> String {
        let mut out = String::with_capacity(
            LINE_BASE_BYTES
                + self.path.len().min(LOGGED_PATH_BYTES)
                + self.host.len().min(LOGGED_HOST_BYTES)
                + self.request_id.len(),
        );
        self.write_line(&mut out);
        out
    }

    /// Append the record as one JSON object and a newline to `out`.
    pub fn write_line(&self, out: &mut String) {
        out.push_str("{\"ts\":\"");
        write_time(out, self.time);
        out.push_str("\",\"client_ip\":\"");
        if let Some(ip) = self.client_ip {
            write_ip(out, ip);
        }
        out.push_str("\",\"method\":");
        write_str(out, self.method);
        out.push_str(",\"host\":");
        write_clipped(out, self.host, LOGGED_HOST_BYTES);
        out.push_str(",\"path\":");
        write_clipped(out, self.path, LOGGED_PATH_BYTES);
        out.push_str(",\"status\":");
        out.push_str(itoa::Buffer::new().format(self.status));
        out.push_str(",\"route\":");
        write_str(out, self.route);
        out.push_str(",\"upstream\":");
        write_str(out, self.upstream);
        out.push_str(",\"datacenter\":");
        write_str(out, self.datacenter);
        out.push_str(",\"server\":\"");
        if let Some(server) = self.server {
            // As `SocketAddr` displays: an IPv6 address in brackets.
            if server.is_ipv6() {
                out.push('[');
                write_ip(out, server.ip());
                out.push(']');
            } else {
                write_ip(out, server.ip());
            }
            out.push(':');
            out.push_str(itoa::Buffer::new().format(server.port()));
        }
        out.push_str("\",\"duration_ms\":");
        write_ms(out, Some(self.duration_ms));
        out.push_str(",\"upstream_ms\":");
        write_ms(out, self.upstream_ms);
        out.push_str(",\"queue_ms\":");
        write_ms(out, self.queue_ms);
        out.push_str(",\"retries\":");
        out.push_str(itoa::Buffer::new().format(self.retries));
        if let Some(reason) = self.reason {
            out.push_str(",\"reason\":");
            write_str(out, reason);
        }
        if let Some(limit) = self.limit {
            out.push_str(",\"limit\":");
            write_str(out, limit);
        }
        out.push_str(",\"request_id\":");
        write_str(out, self.request_id);
        out.push_str("}\n");
    }
}

/// `s` as a JSON string, cut to at most `max` bytes of text (on a character boundary, ending
/// in `...` when cut), as `telemetry::clip` cuts it.
fn write_clipped(out: &mut String, s: &str, max: usize) {
    if s.len() <= max {
        return write_str(out, s);
    }
    let mut end = max.saturating_sub(3);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push('"');
    escape_into(out, &s[..end]);
    out.push_str("...\"");
}

/// `s` as a JSON string.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// What a byte becomes inside a JSON string: 0 as it is, `u` as `\u00XX`, else `\` and the
/// letter (the escapes `serde_json` writes).
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        // Escaped bytes are ASCII, so `start..i` ends on a character boundary.
        out.push_str(&s[start..i]);
        out.push('\\');
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push(escape as char);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Milliseconds with three decimals, or `null`.
fn write_ms(out: &mut String, ms: Option<f64>) {
    let Some(ms) = ms.filter(|ms| ms.is_finite() && *ms >= 0.0) else {
        out.push_str("null");
        return;
    };
    // Saturates at u64::MAX microseconds (half a million years).
    let micros = (ms * 1000.0).round() as u64;
    out.push_str(itoa::Buffer::new().format(micros / 1000));
    out.push('.');
    let frac = (micros % 1000) as u32;
    out.push((b'0' + (frac / 100) as u8) as char);
    out.push((b'0' + (frac / 10 % 10) as u8) as char);
    out.push((b'0' + (frac % 10) as u8) as char);
}

fn write_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let mut digits = itoa::Buffer::new();
            out.push_str(digits.format(a));
            for octet in [b, c, d] {
                out.push('.');
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            // Writing into a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

thread_local! {
    /// The second last formatted on this thread and its text up to the seconds' dot
    /// (`2026-11-29T10:18:41.`).
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-29T10:18:41.123Z`.
fn write_time(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, second_prefix(secs));
        }
        // The prefix is ASCII digits and separators.
        out.push_str(std::str::from_utf8(&cached.1).unwrap_or("1970-01-01T00:00:00."));
    });
    out.push((b'0' + (millis / 100) as u8) as char);
    out.push((b'0' + (millis / 10 % 10) as u8) as char);
    out.push((b'0' + (millis % 10) as u8) as char);
    out.push('Z');
}

fn second_prefix(secs: u64) -> [u8; 20] {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut text = String::with_capacity(20);
    let _ = write!(
        text,
        "{:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.",
        y.clamp(0, 9999),
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    let mut prefix = [b'0'; 20];
    let len = text.len().min(20);
    prefix[..len].copy_from_slice(&text.as_bytes()[..len]);
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn record<'a>(path: &'a str, host: &'a str, request_id: &'a str) -> AccessRecord<'a> {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_764_412_721_123),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            method: "GET",
            host,
            path,
            status: 200,
            route: "login",
            upstream: "ent",
            datacenter: "dc-a",
            server: Some("10.0.0.1:8080".parse().unwrap()),
            duration_ms: 12.3456,
            upstream_ms: Some(0.0004),
            queue_ms: None,
            retries: 1,
            reason: None,
            limit: Some("per-ip"),
            request_id,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let line = record("/auth/login", "ent.example", "r-1").to_line();
        assert!(line.ends_with("}\n"));
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ts"], "2025-11-29T10:38:41.123Z");
        assert_eq!(value["client_ip"], "203.0.113.7");
        assert_eq!(value["server"], "10.0.0.1:8080");
        assert_eq!(value["status"], 200);
        assert_eq!(value["duration_ms"].as_f64(), Some(12.346));
        assert_eq!(value["upstream_ms"].as_f64(), Some(0.0));
        assert!(value["queue_ms"].is_null());
        assert_eq!(value["retries"], 1);
        assert!(value.get("reason").is_none());
        assert_eq!(value["limit"], "per-ip");
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 16);
    }

    #[test]
    fn the_time_matches_the_rfc3339_of_the_module() {
        for millis in [0u64, 999, 951_782_400_000, 4_102_444_799_999] {
            let time = UNIX_EPOCH + Duration::from_millis(millis);
            let mut out = String::new();
            write_time(&mut out, time);
            assert_eq!(out, super::super::rfc3339(time));
        }
    }

    #[test]
    fn ipv6_clients_and_servers() {
        let mut r = record("/", "h", "r");
        r.client_ip = Some("2001:db8::1".parse().unwrap());
        r.server = Some("[2001:db8::2]:443".parse().unwrap());
        let value: serde_json::Value = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(value["client_ip"], "2001:db8::1");
        assert_eq!(value["server"], "[2001:db8::2]:443");
    }

    #[test]
    fn long_fields_are_clipped_as_clip_does() {
        let path = "/é\"".repeat(1000);
        let line = record(&path, "h", "r").to_line();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let logged = value["path"].as_str().unwrap();
        assert_eq!(logged, super::super::clip(&path, LOGGED_PATH_BYTES));
    }

    proptest! {
        /// Whatever a client puts in a path or a host, the line parses back to the same text
        /// and is what serde_json would have written for it.
        #[test]
        fn any_text_is_escaped_as_serde_json_escapes_it(path in any::<String>(), host in "\\PC*") {
            let line = record(&path, &host, "r").to_line();
            prop_assert_eq!(line.matches('\n').count(), 1);
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let clipped = super::super::clip(&path, LOGGED_PATH_BYTES);
            prop_assert_eq!(value["path"].as_str().unwrap(), &*clipped);
            let mut mine = String::new();
            write_str(&mut mine, &clipped);
            prop_assert_eq!(mine, serde_json::to_string(&*clipped).unwrap());
            let clipped_host = super::super::clip(&host, LOGGED_HOST_BYTES);
            prop_assert_eq!(value["host"].as_str().unwrap(), &*clipped_host);
        }
    }
}
