//! What a limit counts by: the 64-bit key of a request for one limit (client address grouped by
//! IPv6 prefix, a header, a cookie, a query parameter, a form field, or one global key).
//!
//! Keys are small integers so a million of them fit in a few tens of MiB: IPv4 addresses and
//! IPv6 prefixes up to /64 are stored as they are, anything else (strings, longer prefixes) is
//! hashed with a per-process random key, so an attacker cannot aim at collisions.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use http::HeaderMap;

/// IPv4 addresses live in a part of the key space no IPv6 source address can have (ffff:ffff::
/// is multicast).
const IPV4_TAG: u64 = 0xffff_ffff_0000_0000;

/// The key of every request under a `global` limit.
pub const GLOBAL_KEY: u64 = 0;

/// The client address as a key: IPv4 as itself, IPv6 grouped by its first `prefix` bits.
pub fn ip_key(ip: IpAddr, prefix: u8, hasher: &RandomState) -> u64 {
    match ip {
        IpAddr::V4(v4) => IPV4_TAG | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IPV4_TAG | u64::from(u32::from(v4)),
            None => {
                let bits = u128::from(v6) & v6_mask(prefix);
                if prefix <= 64 {
                    (bits >> 64) as u64
                } else {
                    hasher.hash_one((b'6', bits))
                }
            }
        },
    }
}

/// The address a client_ip key stands for, for people: the IPv4 address, or the IPv6 prefix.
pub fn ip_group(ip: IpAddr, prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if prefix >= 128 => v6.to_string(),
            None => {
                let masked = std::net::Ipv6Addr::from(u128::from(v6) & v6_mask(prefix));
                format!("{masked}/{prefix}")
            }
        },
    }
}

fn v6_mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

/// A string key (header, cookie, query, form value), tagged by its kind.
pub fn text_key(kind: u8, value: &[u8], hasher: &RandomState) -> u64 {
    hasher.hash_one((kind, value))
}

/// The first value of a header, when present and not empty.
pub fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get(name)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            (trim(&pair[..eq]) == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
        })
        .filter(|v| !v.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// The decoded value of `name` in `a=1&b=2` (query strings and urlencoded forms).
pub fn urlencoded_value(query: &[u8], name: &str) -> Option<Vec<u8>> {
    query.split(|b| *b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        (percent_decode(k) == name.as_bytes()).then(|| percent_decode(v))
    })
}

/// `%41` to `A` and `+` to a space; malformed escapes are kept as they are.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What kind of body a request declares, for `form:` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    UrlEncoded,
    Json,
    Other,
}

pub fn body_kind(headers: &HeaderMap) -> BodyKind {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return BodyKind::Other;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::UrlEncoded
    } else if media.eq_ignore_ascii_case("application/json")
        || media.to_ascii_lowercase().ends_with("+json")
    {
        BodyKind::Json
    } else {
        BodyKind::Other
    }
}

/// The value of field `name` of a form body, lowercase and trimmed (account names are compared
/// without case, so `Alice` and `alice` share a bucket). `None` when the field is absent.
pub fn form_value(kind: BodyKind, body: &[u8], name: &str) -> Option<Vec<u8>> {
    let raw = match kind {
        BodyKind::UrlEncoded => urlencoded_value(body, name)?,
        BodyKind::Json => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            match value.get(name)? {
                serde_json::Value::String(s) => s.as_bytes().to_vec(),
                serde_json::Value::Number(n) => n.to_string().into_bytes(),
                serde_json::Value::Bool(b) => b.to_string().into_bytes(),
                _ => return None,
            }
        }
        BodyKind::Other => return None,
    };
    let value = trim(&raw).to_ascii_lowercase();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> RandomState {
        RandomState::new()
    }

    #[test]
    fn ipv4_keys_are_the_address() {
        let hasher = h();
        let a = ip_key("192.0.2.1".parse().unwrap(), 64, &hasher);
        let b = ip_key("192.0.2.2".parse().unwrap(), 64, &hasher);
        assert_ne!(a, b);
        assert_eq!(a, IPV4_TAG | 0xc000_0201);
        // A mapped address is the IPv4 address.
        assert_eq!(ip_key("::ffff:192.0.2.1".parse().unwrap(), 64, &hasher), a);
    }

    #[test]
    fn ipv6_grouped_by_prefix() {
        let hasher = h();
        let a = ip_key("2001:db8:1:2::1".parse().unwrap(), 64, &hasher);
        let b = ip_key("2001:db8:1:2:ffff::9".parse().unwrap(), 64, &hasher);
        let c = ip_key("2001:db8:1:3::1".parse().unwrap(), 64, &hasher);
        assert_eq!(a, b, "same /64");
        assert_ne!(a, c, "another /64");
        let a48 = ip_key("2001:db8:1:2::1".parse().unwrap(), 48, &hasher);
        let c48 = ip_key("2001:db8:1:3::1".parse().unwrap(), 48, &hasher);
        assert_eq!(a48, c48, "same /48");
        // Longer prefixes than /64 are hashed, still grouping.
        let x = ip_key("2001:db8::1:0:0:1".parse().unwrap(), 96, &hasher);
        let y = ip_key("2001:db8::1:0:0:2".parse().unwrap(), 96, &hasher);
        let z = ip_key("2001:db8::2:0:0:1".parse().unwrap(), 96, &hasher);
        assert_eq!(x, y);
        assert_ne!(x, z);
        // No IPv6 key can take an IPv4 key's place.
        let v4 = ip_key("255.255.255.255".parse().unwrap(), 64, &hasher);
        let v6 = ip_key("ffff:ffff:0:ffff::1".parse().unwrap(), 64, &hasher);
        assert_ne!(v4, v6);
    }

    #[test]
    fn groups_for_people() {
        assert_eq!(ip_group("192.0.2.1".parse().unwrap(), 64), "192.0.2.1");
        assert_eq!(
            ip_group("2001:db8:1:2::1".parse().unwrap(), 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(ip_group("2001:db8::1".parse().unwrap(), 128), "2001:db8::1");
    }

    #[test]
    fn cookies_and_queries() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1; session = abc ;b=2".parse().unwrap());
        headers.append("cookie", "c=3".parse().unwrap());
        assert_eq!(cookie_value(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&headers, "c"), Some(&b"3"[..]));
        assert_eq!(cookie_value(&headers, "missing"), None);
        assert_eq!(
            urlencoded_value(b"x=1&user=al%69ce+b&y", "user").as_deref(),
            Some(&b"alice b"[..])
        );
        assert_eq!(urlencoded_value(b"y", "y").as_deref(), Some(&b""[..]));
        assert_eq!(urlencoded_value(b"x=1", "user"), None);
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(percent_decode(b"%41%4a"), b"AJ");
    }

    #[test]
    fn form_fields() {
        assert_eq!(
            form_value(
                BodyKind::UrlEncoded,
                b"username=Alice&password=x",
                "username"
            )
            .as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(
            form_value(BodyKind::Json, br#"{"username":" Bob ","p":1}"#, "username").as_deref(),
            Some(&b"bob"[..])
        );
        assert_eq!(form_value(BodyKind::Json, b"not json", "username"), None);
        assert_eq!(form_value(BodyKind::Other, b"username=a", "username"), None);
        assert_eq!(
            form_value(BodyKind::UrlEncoded, b"username=", "username"),
            None
        );
    }

    #[test]
    fn text_keys_differ_by_kind() {
        let hasher = h();
        assert_ne!(text_key(1, b"x", &hasher), text_key(2, b"x", &hasher));
        assert_eq!(text_key(1, b"x", &hasher), text_key(1, b"x", &hasher));
    }
}
