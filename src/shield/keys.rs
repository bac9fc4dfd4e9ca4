//! What a limit counts by: the 64-bit key of a request for one limit (client address grouped by
//! IPv6 prefix, a header, a cookie, a query parameter, a form field, or one global key).
//!
//! Keys are small integers so a million of them fit in a few tens of MiB: IPv4 addresses and
//! IPv6 prefixes up to /64 are stored as they are, anything else (strings, longer prefixes) is
//! hashed with a secret key ([`KeyHasher`]: random per process, or derived from the cluster's
//! secret so that every node computes the same keys), so an attacker cannot aim at collisions.
//!
//! Query parameters and form fields fail closed: [`query_field`] and [`form_field`] answer
//! [`Field::Unreadable`] whenever the backend could see another value than the one Rempart
//! would count (a body that does not parse, a field given twice with different values, a value
//! that is not a string, number or boolean), and the caller charges all such requests to one
//! shared key. The value that is counted is [`account_key`] of the field: account names are
//! compared the way a forgiving backend might (without case, accents or invisible characters),
//! so that spelling one account many ways does not give many buckets.

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;

use http::HeaderMap;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

/// IPv4 addresses live in a part of the key space no IPv6 source address can have (ffff:ffff::
/// is multicast).
const IPV4_TAG: u64 = 0xffff_ffff_0000_0000;

/// Hashes string values and long IPv6 prefixes into keys: SipHash-1-3 (as std's
/// `RandomState`) under a secret 128-bit key.
#[derive(Clone)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    /// A key of this process alone.
    pub fn random() -> Self {
        let [k0, k1] = rand::random::<[u64; 2]>();
        KeyHasher { k0, k1 }
    }

    /// The key every node with this secret derives: keys of the same value are the same on
    /// every node of a cluster.
    pub fn from_secret(secret: &[u8]) -> Self {
        let digest = crate::cluster::derive(secret, b"rempart client keys");
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        KeyHasher {
            k0: word(0),
            k1: word(8),
        }
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = siphasher::sip::SipHasher13;
    fn build_hasher(&self) -> Self::Hasher {
        siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// The key of every request under a `global` limit.
pub const GLOBAL_KEY: u64 = 0;

/// The client address as a key: IPv4 as itself, IPv6 grouped by its first `prefix` bits.
pub fn ip_key(ip: IpAddr, prefix: u8, hasher: &KeyHasher) -> u64 {
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
pub fn text_key(kind: u8, value: &[u8], hasher: &KeyHasher) -> u64 {
    hasher.hash_one((kind, value))
}

/// The first value of a header, when present and not empty.
pub fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get(name)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` headers, without one pair of
/// surrounding double quotes (RFC 6265 allows them; `SID="x"` and `SID=x` are one cookie).
///
/// A cookie named twice (in one header or across several `Cookie` lines) is taken at its first
/// occurrence, as servlet containers and most frameworks do (`getCookies()` lists them in
/// order, and code looks for the first match). When that first value is empty there is no
/// value (`None`): later occurrences are not looked at.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            (trim(&pair[..eq]) == name.as_bytes()).then(|| unquote(trim(&pair[eq + 1..])))
        })
        .filter(|v| !v.is_empty())
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
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

/// `%41` to `A` and `+` to a space; `None` when a `%` is not followed by two hex digits
/// (backends disagree on those: some keep them, some drop the parameter, some refuse).
pub fn percent_decode_strict(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = hex(*s.get(i + 1)?)?;
                let l = hex(*s.get(i + 2)?)?;
                out.push(h << 4 | l);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
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

/// The kind of body the `Content-Type` header declares. Several `Content-Type` lines that do
/// not all say the same are `Other` (the backend may believe any of them, so the body is read
/// as none).
pub fn body_kind(headers: &HeaderMap) -> BodyKind {
    let mut kinds = headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .map(|v| v.to_str().map_or(BodyKind::Other, media_kind));
    let Some(first) = kinds.next() else {
        return BodyKind::Other;
    };
    if kinds.all(|k| k == first) {
        first
    } else {
        BodyKind::Other
    }
}

fn media_kind(ct: &str) -> BodyKind {
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

/// A query parameter or form field, as a limit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The field's [`account_key`]: its one value, or the one value all its occurrences share.
    /// May be empty (`username=`).
    Value(Vec<u8>),
    /// The body (or query) was read and has no such field.
    Absent,
    /// The backend might see another value than Rempart: a body that does not parse as its
    /// declared type, a field twice with different values, a value that is an object, an
    /// array or null. Such requests share one key.
    Unreadable,
}

impl Field {
    /// A header or cookie value as a source of a key naming several sources, so that it
    /// compares with form fields and query parameters: its [`account_key`], Absent for none.
    pub fn of_text(value: Option<&[u8]>) -> Field {
        value.map_or(Field::Absent, |v| Field::Value(account_key(v)))
    }
}

/// How a field's name is matched against the names in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMatch {
    /// Names compared by [`account_key`] (`Username`, `USERNAME`, ` username` are
    /// `username`), as Spring applications with case-insensitive binding and other forgiving
    /// backends do; otherwise byte for byte.
    pub case_insensitive: bool,
}

impl FieldMatch {
    pub const ANY_CASE: FieldMatch = FieldMatch {
        case_insensitive: true,
    };
    pub const EXACT: FieldMatch = FieldMatch {
        case_insensitive: false,
    };
}

/// Case-insensitive: Rempart's default.
impl Default for FieldMatch {
    fn default() -> Self {
        FieldMatch::ANY_CASE
    }
}

/// Compares names in a request with the configured one.
struct NameMatcher {
    exact: Vec<u8>,
    folded: Option<Vec<u8>>,
}

impl NameMatcher {
    fn new(name: &str, m: FieldMatch) -> Self {
        NameMatcher {
            exact: name.as_bytes().to_vec(),
            folded: m.case_insensitive.then(|| account_key(name.as_bytes())),
        }
    }

    fn matches(&self, candidate: &[u8]) -> bool {
        match &self.folded {
            Some(folded) => candidate == self.exact || account_key(candidate) == *folded,
            None => candidate == self.exact,
        }
    }
}

/// The values met for one field: one value, or a conflict.
#[derive(Default)]
struct Occurrences {
    value: Option<Vec<u8>>,
    conflict: bool,
}

impl Occurrences {
    fn add(&mut self, raw: &[u8]) {
        let key = account_key(raw);
        match &self.value {
            None => self.value = Some(key),
            Some(seen) if *seen != key => self.conflict = true,
            Some(_) => {}
        }
    }

    fn field(self) -> Field {
        match (self.conflict, self.value) {
            (true, _) => Field::Unreadable,
            (false, Some(v)) => Field::Value(v),
            (false, None) => Field::Absent,
        }
    }
}

/// Field `name` of a query string (`a=1&b=2`, without the `?`). Pairs are separated by `&`
/// and `;` (some backends take either), `+` and `%XX` are decoded in names and values, a pair
/// without `=` has an empty value. A malformed escape anywhere makes the query Unreadable.
pub fn query_field(query: &[u8], name: &str, m: FieldMatch) -> Field {
    urlencoded_field(query, &NameMatcher::new(name, m))
}

fn urlencoded_field(s: &[u8], name: &NameMatcher) -> Field {
    let mut seen = Occurrences::default();
    for pair in s.split(|b| *b == b'&' || *b == b';') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        let (Some(k), Some(v)) = (percent_decode_strict(k), percent_decode_strict(v)) else {
            return Field::Unreadable;
        };
        if name.matches(&k) {
            seen.add(&v);
        }
    }
    seen.field()
}

/// Field `name` of a form body of the declared `kind`.
///
/// - urlencoded: as [`query_field`].
/// - JSON: the first JSON value of the body, trailing bytes ignored (as Jackson does by
///   default: `FAIL_ON_TRAILING_TOKENS` is off), a UTF-8 byte order mark skipped. It must be
///   an object; its top-level members are looked at. A string, number or boolean is the value
///   (numbers and booleans as serde_json writes them); an object, array or null is Unreadable.
///   Members named twice (`{"username":"a","username":"b"}`) with different values are
///   Unreadable: Jackson takes the last one, other parsers the first.
/// - Other: Unreadable.
pub fn form_field(kind: BodyKind, body: &[u8], name: &str, m: FieldMatch) -> Field {
    let name = NameMatcher::new(name, m);
    match kind {
        BodyKind::UrlEncoded => urlencoded_field(body, &name),
        BodyKind::Json => json_field(body, &name),
        BodyKind::Other => Field::Unreadable,
    }
}

fn json_field(body: &[u8], name: &NameMatcher) -> Field {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let mut de = serde_json::Deserializer::from_slice(body);
    // Not `de.end()`: what follows the first value is not read.
    de.deserialize_map(TopLevel { name })
        .unwrap_or(Field::Unreadable)
}

/// Visits the top-level object, keeping the occurrences of one member.
struct TopLevel<'a> {
    name: &'a NameMatcher,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let mut seen = Occurrences::default();
        let mut unreadable = false;
        // Every member is read, so that the object is checked to its closing brace.
        while let Some(key) = map.next_key::<String>()? {
            if !self.name.matches(key.as_bytes()) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(s) => seen.add(s.as_bytes()),
                serde_json::Value::Number(n) => seen.add(n.to_string().as_bytes()),
                serde_json::Value::Bool(b) => seen.add(b.to_string().as_bytes()),
                _ => unreadable = true,
            }
        }
        Ok(if unreadable {
            Field::Unreadable
        } else {
            seen.field()
        })
    }
}

/// One value for several sources, when one is needed: the first present source gives the
/// value, provided every other present source agrees with it. (The shield's limits do not
/// pick one: they charge every value found, see `shield::field_keys`.) Any
/// Unreadable source, or two present sources with different values, is Unreadable (the
/// backend may read either source: a servlet's `getParameter` returns the query's value before
/// the body's). No source present is Absent.
pub fn combine(sources: impl IntoIterator<Item = Field>) -> Field {
    let mut seen = Occurrences::default();
    for source in sources {
        match source {
            Field::Unreadable => return Field::Unreadable,
            Field::Absent => {}
            Field::Value(v) => match &seen.value {
                None => seen.value = Some(v),
                Some(first) if *first != v => return Field::Unreadable,
                Some(_) => {}
            },
        }
    }
    seen.field()
}

/// The key an account name (or any counted value) is charged to: two spellings of a name that
/// a forgiving backend may take for the same account give the same key.
///
/// The bytes are read as UTF-8, or as Latin-1 when they are not UTF-8. Then, character by
/// character: case is removed (uppercase then lowercase, so `ß` is `ss`, `ſ` is `s`, `İ` and
/// `ı` are `i`, the Kelvin sign is `k`); letters of Latin-1 and Latin Extended-A lose their
/// accents (`é` is `e`, `æ` is `ae`, `ł` is `l`); fullwidth ASCII is ASCII (`ａ` is `a`);
/// combining marks, control characters and invisible format characters (zero-width space,
/// soft hyphen, bidi controls, byte order mark, variation selectors, tags...) are dropped
/// wherever they are; whitespace at both ends is trimmed. ASCII input is lowercased and
/// trimmed, as before.
///
/// Merging more spellings than a backend does only puts a few exotic names in one bucket;
/// merging fewer would let one account be tried under many keys.
pub fn account_key(raw: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(raw.len());
    match std::str::from_utf8(raw) {
        Ok(text) => text.chars().for_each(|c| fold_char(c, &mut out)),
        Err(_) => raw.iter().for_each(|b| fold_char(char::from(*b), &mut out)),
    }
    out.trim_matches(char::is_whitespace).as_bytes().to_vec()
}

fn fold_char(c: char, out: &mut String) {
    if c.is_ascii() {
        if !c.is_ascii_control() {
            out.push(c.to_ascii_lowercase());
        }
        return;
    }
    for upper in c.to_uppercase() {
        for lower in upper.to_lowercase() {
            if invisible(lower) {
                continue;
            }
            if let Some(base) = latin_base(lower) {
                out.push_str(base);
            } else if ('\u{ff01}'..='\u{ff5e}').contains(&lower) {
                // Fullwidth ASCII: U+FF01..U+FF5E are U+0021..U+007E.
                let ascii = char::from_u32(u32::from(lower) - 0xfee0).unwrap_or(lower);
                out.push(ascii.to_ascii_lowercase());
            } else {
                out.push(lower);
            }
        }
    }
}

/// Controls, combining marks and default-ignorable format characters.
fn invisible(c: char) -> bool {
    matches!(u32::from(c),
        0x00..=0x1f | 0x7f..=0x9f
        | 0x0300..=0x036f | 0x1ab0..=0x1aff | 0x1dc0..=0x1dff | 0x20d0..=0x20ff | 0xfe20..=0xfe2f
        | 0x00ad | 0x061c | 0x115f | 0x1160 | 0x17b4 | 0x17b5 | 0x180b..=0x180f
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f | 0x3164 | 0xfe00..=0xfe0f
        | 0xfeff | 0xffa0 | 0xfff0..=0xfff8 | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0000..=0xe0fff)
}

/// Latin Extended-A (U+0100..U+017F) by runs of one base letter.
const LATIN_EXTENDED_A: &[(u32, u32, &str)] = &[
    (0x100, 0x105, "a"),
    (0x106, 0x10d, "c"),
    (0x10e, 0x111, "d"),
    (0x112, 0x11b, "e"),
    (0x11c, 0x123, "g"),
    (0x124, 0x127, "h"),
    (0x128, 0x131, "i"),
    (0x132, 0x133, "ij"),
    (0x134, 0x135, "j"),
    (0x136, 0x138, "k"),
    (0x139, 0x142, "l"),
    (0x143, 0x14b, "n"),
    (0x14c, 0x151, "o"),
    (0x152, 0x153, "oe"),
    (0x154, 0x159, "r"),
    (0x15a, 0x161, "s"),
    (0x162, 0x167, "t"),
    (0x168, 0x173, "u"),
    (0x174, 0x175, "w"),
    (0x176, 0x178, "y"),
    (0x179, 0x17e, "z"),
    (0x17f, 0x17f, "s"),
];

/// The base letters of an accented lowercase letter of Latin-1 or Latin Extended-A.
fn latin_base(c: char) -> Option<&'static str> {
    let cp = u32::from(c);
    let base = match cp {
        0xdf => "ss",
        0xe0..=0xe5 => "a",
        0xe6 => "ae",
        0xe7 => "c",
        0xe8..=0xeb => "e",
        0xec..=0xef => "i",
        0xf0 => "d",
        0xf1 => "n",
        0xf2..=0xf6 | 0xf8 => "o",
        0xf9..=0xfc => "u",
        0xfd | 0xff => "y",
        0xfe => "th",
        0x100..=0x17f => {
            return LATIN_EXTENDED_A
                .iter()
                .find(|(from, to, _)| (*from..=*to).contains(&cp))
                .map(|(_, _, base)| *base)
        }
        _ => return None,
    };
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn h() -> KeyHasher {
        KeyHasher::random()
    }

    #[test]
    fn keys_from_one_secret_agree_and_differ_from_another_secret() {
        let a = KeyHasher::from_secret(b"0123456789abcdef0123456789abcdef");
        let b = KeyHasher::from_secret(b"0123456789abcdef0123456789abcdef");
        let c = KeyHasher::from_secret(b"another secret, just as long....");
        assert_eq!(text_key(1, b"alice", &a), text_key(1, b"alice", &b));
        assert_ne!(text_key(1, b"alice", &a), text_key(1, b"alice", &c));
        assert_ne!(text_key(1, b"alice", &a), text_key(2, b"alice", &a));
    }

    fn v(s: &str) -> Field {
        Field::Value(s.as_bytes().to_vec())
    }

    const ANY: FieldMatch = FieldMatch::ANY_CASE;
    const EXACT: FieldMatch = FieldMatch::EXACT;

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
    fn text_keys_differ_by_kind() {
        let hasher = h();
        assert_ne!(text_key(1, b"x", &hasher), text_key(2, b"x", &hasher));
        assert_eq!(text_key(1, b"x", &hasher), text_key(1, b"x", &hasher));
    }

    #[test]
    fn headers() {
        let mut headers = HeaderMap::new();
        headers.append("x-api-key", "k1".parse().unwrap());
        headers.append("x-api-key", "k2".parse().unwrap());
        headers.append("x-empty", "".parse().unwrap());
        assert_eq!(header_value(&headers, "x-api-key"), Some(&b"k1"[..]));
        assert_eq!(header_value(&headers, "x-empty"), None);
        assert_eq!(header_value(&headers, "missing"), None);
    }

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1; session = abc ;b=2".parse().unwrap());
        headers.append("cookie", "c=3; q=\"quoted\"; e=; d=\"".parse().unwrap());
        assert_eq!(cookie_value(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&headers, "c"), Some(&b"3"[..]));
        assert_eq!(cookie_value(&headers, "q"), Some(&b"quoted"[..]));
        assert_eq!(cookie_value(&headers, "d"), Some(&b"\""[..]));
        assert_eq!(cookie_value(&headers, "e"), None);
        assert_eq!(cookie_value(&headers, "missing"), None);
    }

    #[test]
    fn a_cookie_named_twice_is_its_first_value() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "sid=first; sid=second".parse().unwrap());
        headers.append("cookie", "sid=third".parse().unwrap());
        assert_eq!(cookie_value(&headers, "sid"), Some(&b"first"[..]));
        let mut headers = HeaderMap::new();
        headers.append("cookie", "x=1".parse().unwrap());
        headers.append("cookie", "sid=\"a\"; sid=b".parse().unwrap());
        assert_eq!(cookie_value(&headers, "sid"), Some(&b"a"[..]));
        // An empty first value is no value, whatever follows.
        let mut headers = HeaderMap::new();
        headers.append("cookie", "sid=; sid=b".parse().unwrap());
        assert_eq!(cookie_value(&headers, "sid"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(percent_decode(b"%41%4a+b"), b"AJ b");
        assert_eq!(
            percent_decode_strict(b"%41%4a+b").as_deref(),
            Some(&b"AJ b"[..])
        );
        assert_eq!(percent_decode_strict(b"%zz"), None);
        assert_eq!(percent_decode_strict(b"a%4"), None);
        assert_eq!(percent_decode_strict(b"a%"), None);
        assert_eq!(
            percent_decode_strict(b"%25%2B+").as_deref(),
            Some(&b"%+ "[..])
        );
    }

    #[test]
    fn body_kinds() {
        let kind = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("content-type", v.parse().unwrap());
            }
            body_kind(&headers)
        };
        assert_eq!(kind(&[]), BodyKind::Other);
        assert_eq!(
            kind(&["application/x-www-form-urlencoded; charset=UTF-8"]),
            BodyKind::UrlEncoded
        );
        assert_eq!(kind(&["Application/JSON"]), BodyKind::Json);
        assert_eq!(kind(&["application/vnd.api+json"]), BodyKind::Json);
        assert_eq!(kind(&["text/plain"]), BodyKind::Other);
        assert_eq!(kind(&["multipart/form-data; boundary=x"]), BodyKind::Other);
        assert_eq!(
            kind(&["application/json", "application/json; charset=utf-8"]),
            BodyKind::Json
        );
        // The backend may believe either line: the body is read as neither.
        assert_eq!(
            kind(&["application/x-www-form-urlencoded", "application/json"]),
            BodyKind::Other
        );
        assert_eq!(
            kind(&["application/x-www-form-urlencoded, application/json"]),
            BodyKind::Other
        );
    }

    // --- Problem A: three bypasses of a `form:username` limit of 2 per minute. ---

    /// How many of `requests` (query, body kind, body) a limit of `allowed` per key lets
    /// through, keyed as shield/mod.rs `key_of` is to key a `form:username` limit: the form
    /// field and the query parameter together, unreadable requests on one shared key, requests
    /// with neither not counted.
    fn admitted(allowed: usize, requests: &[(&str, BodyKind, Vec<u8>)]) -> usize {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut passed = 0;
        for (query, kind, body) in requests {
            let field = combine([
                form_field(*kind, body, "username", FieldMatch::default()),
                query_field(query.as_bytes(), "username", FieldMatch::default()),
            ]);
            let key = match field {
                Field::Value(v) => v,
                Field::Unreadable => b"\0unreadable".to_vec(),
                Field::Absent => {
                    passed += 1;
                    continue;
                }
            };
            let count = counts.entry(key).or_default();
            *count += 1;
            if *count <= allowed {
                passed += 1;
            }
        }
        passed
    }

    /// What `form_value` did before: the whole body had to be JSON, names matched exactly, the
    /// query was not looked at.
    fn admitted_before(allowed: usize, requests: &[(&str, BodyKind, Vec<u8>)]) -> usize {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut passed = 0;
        for (_query, kind, body) in requests {
            let key = match kind {
                BodyKind::UrlEncoded => body.split(|b| *b == b'&').find_map(|pair| {
                    let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
                    (percent_decode(k) == b"username").then(|| percent_decode(&v[1..]))
                }),
                BodyKind::Json => serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|j| j.get("username")?.as_str().map(|s| s.as_bytes().to_vec())),
                BodyKind::Other => None,
            };
            match key {
                None => passed += 1,
                Some(key) => {
                    let count = counts.entry(key).or_default();
                    *count += 1;
                    if *count <= allowed {
                        passed += 1;
                    }
                }
            }
        }
        passed
    }

    fn five(
        f: impl Fn(usize) -> (&'static str, BodyKind, Vec<u8>),
    ) -> Vec<(&'static str, BodyKind, Vec<u8>)> {
        (0..5).map(f).collect()
    }

    #[test]
    fn a0_plain_form_logins_are_limited() {
        let requests = five(|i| {
            (
                "",
                BodyKind::UrlEncoded,
                format!("username=alice&password=guess{i}").into_bytes(),
            )
        });
        assert_eq!(admitted_before(2, &requests), 2);
        assert_eq!(admitted(2, &requests), 2);
    }

    #[test]
    fn a1_json_with_a_trailing_byte_is_limited() {
        let requests = five(|i| {
            (
                "",
                BodyKind::Json,
                format!(r#"{{"username":"alice","password":"guess{i}"}}x"#).into_bytes(),
            )
        });
        assert_eq!(admitted_before(2, &requests), 5, "the bypass");
        assert_eq!(admitted(2, &requests), 2);
        // Any trailing bytes: another JSON value, garbage, invalid UTF-8.
        for tail in [
            &b"}"[..],
            b"{\"username\":\"bob\"}",
            b"\xff\xfe",
            b" \n",
            b"]]]",
        ] {
            let mut body = br#"{"username":"Alice"}"#.to_vec();
            body.extend_from_slice(tail);
            assert_eq!(
                form_field(BodyKind::Json, &body, "username", ANY),
                v("alice")
            );
        }
    }

    #[test]
    fn a2_the_name_in_another_case_is_limited() {
        let names = ["username", "Username", "USERNAME", "userName", "uSeRnAmE"];
        let requests = five(|i| {
            (
                "",
                BodyKind::UrlEncoded,
                format!("{}=alice&password=guess{i}", names[i]).into_bytes(),
            )
        });
        assert_eq!(admitted_before(2, &requests), 5, "the bypass");
        assert_eq!(admitted(2, &requests), 2);
        let json = five(|i| {
            (
                "",
                BodyKind::Json,
                format!(r#"{{"{}":"alice","password":"guess{i}"}}"#, names[i]).into_bytes(),
            )
        });
        assert_eq!(admitted(2, &json), 2);
        // Non-ASCII letters whose case maps to ASCII ones.
        for name in ["U\u{17f}ername", "u\u{17f}ern\u{c0}me", "USERNAM\u{c9}"] {
            let body = format!("{}=alice", urlencode(name.as_bytes()));
            assert_eq!(
                form_field(BodyKind::UrlEncoded, body.as_bytes(), "username", ANY),
                v("alice"),
                "{name}"
            );
        }
    }

    #[test]
    fn a3_credentials_in_the_query_string_are_limited() {
        let requests = five(|i| {
            (
                if i % 2 == 0 {
                    "username=alice&password=x"
                } else {
                    "lang=fr&Username=Alice"
                },
                BodyKind::UrlEncoded,
                Vec::new(),
            )
        });
        assert_eq!(admitted_before(2, &requests), 5, "the bypass");
        assert_eq!(admitted(2, &requests), 2);
        // The query and the body naming different accounts: the backend may read either.
        let mixed = five(|i| {
            (
                "username=alice",
                BodyKind::UrlEncoded,
                format!("username=decoy{i}").into_bytes(),
            )
        });
        assert_eq!(admitted(2, &mixed), 2);
    }

    // --- The rules of form_field and query_field. ---

    #[test]
    fn urlencoded_fields() {
        let f = |body: &str, m| form_field(BodyKind::UrlEncoded, body.as_bytes(), "username", m);
        assert_eq!(f("username=Alice&password=x", ANY), v("alice"));
        assert_eq!(f("x=1&user%6Eame=al%69ce+b&y", ANY), v("alice b"));
        assert_eq!(f("username=+%20Bob%09+", ANY), v("bob"));
        assert_eq!(f("username", ANY), v(""));
        assert_eq!(f("username=", ANY), v(""));
        assert_eq!(f("password=x&&", ANY), Field::Absent);
        assert_eq!(f("", ANY), Field::Absent);
        assert_eq!(f("user+name=alice&usernames=bob", ANY), Field::Absent);
        // Case: any case when asked, exact otherwise.
        assert_eq!(f("USERNAME=alice", ANY), v("alice"));
        assert_eq!(f("USERNAME=alice", EXACT), Field::Absent);
        assert_eq!(f("US%45RNAME=alice", ANY), v("alice"));
        assert_eq!(f("username=alice&USERNAME=bob", EXACT), v("alice"));
        // `;` separates pairs too.
        assert_eq!(f("username=alice;x=1", ANY), v("alice"));
        assert_eq!(f("username=alice;username=bob", ANY), Field::Unreadable);
    }

    #[test]
    fn a_field_twice_with_different_values_is_unreadable() {
        let f = |body: &str| form_field(BodyKind::UrlEncoded, body.as_bytes(), "username", ANY);
        assert_eq!(f("username=a&username=b"), Field::Unreadable);
        assert_eq!(f("username=a&Username=b"), Field::Unreadable);
        assert_eq!(f("username=a&username="), Field::Unreadable);
        // The same value (as an account name) twice is that value.
        assert_eq!(f("username=a&username=a"), v("a"));
        assert_eq!(f("username=Alice&USERNAME=alice+"), v("alice"));
        let q = |query: &str| query_field(query.as_bytes(), "username", ANY);
        assert_eq!(q("username=a&username=b"), Field::Unreadable);
        assert_eq!(q("username=a&x=1&username=a"), v("a"));
        let j = |body: &str| form_field(BodyKind::Json, body.as_bytes(), "username", ANY);
        assert_eq!(j(r#"{"username":"a","username":"b"}"#), Field::Unreadable);
        assert_eq!(j(r#"{"username":"a","USERNAME":"b"}"#), Field::Unreadable);
        assert_eq!(j(r#"{"username":"a","p":1,"username":"A"}"#), v("a"));
        assert_eq!(j(r#"{"username":"1","username":1}"#), v("1"));
    }

    #[test]
    fn malformed_escapes_are_unreadable() {
        let f = |body: &str| form_field(BodyKind::UrlEncoded, body.as_bytes(), "username", ANY);
        assert_eq!(f("username=al%zzice"), Field::Unreadable);
        assert_eq!(f("username=alice&next=100%"), Field::Unreadable);
        assert_eq!(f("user%6=alice"), Field::Unreadable);
        assert_eq!(
            query_field(b"username=alice&q=%", "username", ANY),
            Field::Unreadable
        );
    }

    #[test]
    fn query_fields() {
        let q = |query: &str, m| query_field(query.as_bytes(), "username", m);
        assert_eq!(q("username=Alice", ANY), v("alice"));
        assert_eq!(q("x=1&y", ANY), Field::Absent);
        assert_eq!(q("", ANY), Field::Absent);
        assert_eq!(q("UserName=alice", ANY), v("alice"));
        assert_eq!(q("UserName=alice", EXACT), Field::Absent);
        assert_eq!(q("y", ANY), Field::Absent);
        assert_eq!(query_field(b"y", "y", ANY), v(""));
    }

    #[test]
    fn json_fields() {
        let j = |body: &str| form_field(BodyKind::Json, body.as_bytes(), "username", ANY);
        assert_eq!(j(r#"{"username":" Bob ","p":1}"#), v("bob"));
        assert_eq!(j(r#"  {"p":{"username":"x"},"username":"bob"}"#), v("bob"));
        assert_eq!(j(r#"{"username":42}"#), v("42"));
        assert_eq!(j(r#"{"username":-1.5}"#), v("-1.5"));
        assert_eq!(j(r#"{"username":true}"#), v("true"));
        assert_eq!(j(r#"{"username":""}"#), v(""));
        assert_eq!(j(r#"{"user\u004eame":"bob"}"#), v("bob"));
        assert_eq!(j("\u{feff}{\"username\":\"bob\"}"), v("bob"));
        // Only top-level members count.
        assert_eq!(j(r#"{"p":{"username":"x"}}"#), Field::Absent);
        assert_eq!(j(r#"{}"#), Field::Absent);
        // Objects, arrays and null are no account name.
        assert_eq!(j(r#"{"username":{"a":1}}"#), Field::Unreadable);
        assert_eq!(j(r#"{"username":["alice"]}"#), Field::Unreadable);
        assert_eq!(j(r#"{"username":null}"#), Field::Unreadable);
        assert_eq!(j(r#"{"username":"a","username":null}"#), Field::Unreadable);
        // Not an object, or not JSON up front.
        assert_eq!(j(r#"["username","alice"]"#), Field::Unreadable);
        assert_eq!(j(r#""alice""#), Field::Unreadable);
        assert_eq!(j("42"), Field::Unreadable);
        assert_eq!(j("null"), Field::Unreadable);
        assert_eq!(j(""), Field::Unreadable);
        assert_eq!(j("   "), Field::Unreadable);
        assert_eq!(j("not json"), Field::Unreadable);
        assert_eq!(j("x{\"username\":\"bob\"}"), Field::Unreadable);
        assert_eq!(j("username=bob"), Field::Unreadable);
        // A first value that does not end well is no JSON.
        assert_eq!(j(r#"{"username":"bob""#), Field::Unreadable);
        assert_eq!(j(r#"{"username":"bob",}"#), Field::Unreadable);
        assert_eq!(j(r#"{"username":"bob" "p":1}"#), Field::Unreadable);
        assert_eq!(j(r#"{"p":[1,}, "username":"bob"}"#), Field::Unreadable);
        assert_eq!(j(r#"{'username':'bob'}"#), Field::Unreadable);
        assert_eq!(
            form_field(
                BodyKind::Json,
                b"{\"username\":\"b\xffob\"}",
                "username",
                ANY
            ),
            Field::Unreadable
        );
        // Case.
        assert_eq!(
            form_field(BodyKind::Json, br#"{"USERNAME":"bob"}"#, "username", EXACT),
            Field::Absent
        );
        // Deep nesting never overflows the stack: serde_json skips an other member's value
        // without recursion, and refuses more than 128 levels in the field's own value.
        let deep = |n| "[".repeat(n) + &"]".repeat(n);
        let ignored = format!("{{\"p\":{},\"username\":\"bob\"}}", deep(100_000));
        assert_eq!(j(&ignored), v("bob"));
        assert_eq!(
            j(&format!("{{\"username\":{}}}", deep(100_000))),
            Field::Unreadable
        );
    }

    #[test]
    fn other_bodies_are_unreadable() {
        assert_eq!(
            form_field(BodyKind::Other, b"username=a", "username", ANY),
            Field::Unreadable
        );
        assert_eq!(
            form_field(BodyKind::Other, b"", "username", ANY),
            Field::Unreadable
        );
    }

    #[test]
    fn combining_sources() {
        use Field::{Absent, Unreadable};
        assert_eq!(combine([]), Absent);
        assert_eq!(combine([Absent, Absent]), Absent);
        assert_eq!(combine([Absent, v("b")]), v("b"));
        assert_eq!(combine([v("a"), Absent]), v("a"));
        assert_eq!(combine([v("a"), v("a")]), v("a"));
        assert_eq!(combine([v("a"), v("b")]), Unreadable);
        assert_eq!(combine([v("a"), Unreadable]), Unreadable);
        assert_eq!(combine([Unreadable, v("a")]), Unreadable);
        assert_eq!(combine([Absent, Unreadable]), Unreadable);
        assert_eq!(Field::of_text(None), Absent);
        assert_eq!(Field::of_text(Some(b" Alice ")), v("alice"));
        assert_eq!(
            combine([
                Field::of_text(Some(b"ALICE")),
                query_field(b"username=alice", "username", ANY)
            ]),
            v("alice")
        );
    }

    #[test]
    fn account_keys() {
        let k = |s: &str| String::from_utf8(account_key(s.as_bytes())).unwrap();
        assert_eq!(k("  Alice\t"), "alice");
        assert_eq!(k("jean.dupont"), "jean.dupont");
        assert_eq!(k("J\u{c9}R\u{d4}ME"), "jerome");
        assert_eq!(k("J\u{e9}r\u{f4}me"), "jerome");
        assert_eq!(k("Je\u{301}ro\u{302}me"), "jerome");
        assert_eq!(k("\u{141}ukasz \u{17b}\u{f3}\u{142}w"), "lukasz zolw");
        assert_eq!(k("stra\u{df}e"), "strasse");
        assert_eq!(k("STRA\u{1e9e}E"), "strasse");
        assert_eq!(k("\u{152}uvre"), "oeuvre");
        assert_eq!(k("\u{130}brahim"), "ibrahim");
        assert_eq!(k("\u{131}brahim"), "ibrahim");
        assert_eq!(k("\u{212a}evin"), "kevin");
        assert_eq!(k("\u{ff21}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}"), "alice");
        assert_eq!(k("al\u{200b}i\u{ad}ce\u{feff}"), "alice");
        assert_eq!(k("\u{a0}\u{3000}alice\u{2003}"), "alice");
        assert_eq!(k("a\u{0}l\u{1}i\u{7f}ce\u{b}"), "alice");
        assert_eq!(k("jean dupont"), "jean dupont");
        assert_eq!(k("\u{3b1}\u{3b2}\u{393}"), "\u{3b1}\u{3b2}\u{3b3}");
        assert_eq!(k(""), "");
        // Not UTF-8: read as Latin-1 (`\xe9` is é).
        assert_eq!(account_key(b"j\xe9r\xd4me"), b"jerome");
        assert_eq!(account_key(b"\xff"), b"y");
        assert_eq!(account_key(b"\x80\x81"), b"");
    }

    #[test]
    fn latin_extended_a_is_whole() {
        for cp in 0x100..=0x17f {
            let c = char::from_u32(cp).unwrap();
            let base = latin_base(c).unwrap_or_else(|| panic!("U+{cp:04X}"));
            assert!(base.bytes().all(|b| b.is_ascii_lowercase()), "U+{cp:04X}");
        }
        for (a, b) in LATIN_EXTENDED_A.windows(2).map(|w| (w[0], w[1])) {
            assert_eq!(a.1 + 1, b.0, "runs follow each other");
        }
    }

    /// `application/x-www-form-urlencoded` the way a browser writes it.
    fn urlencode(s: &[u8]) -> String {
        let mut out = String::with_capacity(s.len() * 3);
        for &b in s {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(b))
                }
                b' ' => out.push('+'),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    mod props {
        use super::*;
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;

        fn kinds() -> impl Strategy<Value = BodyKind> {
            prop_oneof![
                Just(BodyKind::UrlEncoded),
                Just(BodyKind::Json),
                Just(BodyKind::Other)
            ]
        }

        fn matches() -> impl Strategy<Value = FieldMatch> {
            any::<bool>().prop_map(|case_insensitive| FieldMatch { case_insensitive })
        }

        /// Bytes that are often almost a form or JSON body.
        fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                vec(any::<u8>(), 0..256),
                vec(
                    prop::sample::select(
                        b"{}[]\":,=&;%+0123456789abuserNAME \\ntf\xc3\xa9".to_vec()
                    ),
                    0..256
                ),
            ]
        }

        /// `name` with each letter's case chosen by `flips`.
        fn recase(name: &str, flips: &[bool]) -> String {
            name.chars()
                .zip(flips.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect()
        }

        /// JSON scalars as a backend would receive them.
        fn scalar() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                any::<String>().prop_map(serde_json::Value::String),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::Bool),
                (-1e9f64..1e9).prop_map(serde_json::Value::from),
            ]
        }

        fn value_of(v: &serde_json::Value) -> Field {
            match v {
                serde_json::Value::String(s) => Field::Value(account_key(s.as_bytes())),
                serde_json::Value::Number(n) => Field::Value(account_key(n.to_string().as_bytes())),
                serde_json::Value::Bool(b) => Field::Value(account_key(b.to_string().as_bytes())),
                _ => Field::Unreadable,
            }
        }

        /// Any JSON value: scalars, null, arrays and objects nested a little.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![scalar(), Just(serde_json::Value::Null)];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                    btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// No input makes the extraction panic.
            #[test]
            fn never_panics(kind in kinds(), body in body_bytes(), name in "\\PC{0,12}", m in matches()) {
                let _ = form_field(kind, &body, &name, m);
                let _ = query_field(&body, &name, m);
                let _ = percent_decode(&body);
                let _ = percent_decode_strict(&body);
                let _ = account_key(&body);
                if let Ok(value) = http::HeaderValue::from_bytes(&body) {
                    let mut headers = HeaderMap::new();
                    headers.append(http::header::COOKIE, value.clone());
                    headers.append(http::header::CONTENT_TYPE, value);
                    let _ = cookie_value(&headers, &name);
                    let _ = body_kind(&headers);
                }
            }

            /// A urlencoded body built from a map of fields, each name in a random case: the
            /// field's value comes back as its account key; a name not in the map is Absent;
            /// asked for exactly, only the exact spelling matches.
            #[test]
            fn urlencoded_map_gives_the_value(
                fields in btree_map("[a-z_]{1,10}", any::<String>(), 1..8),
                pick in any::<prop::sample::Index>(),
                flips in vec(any::<bool>(), 1..10),
                json_too in any::<bool>(),
            ) {
                let names: Vec<&String> = fields.keys().collect();
                let target = names[pick.index(names.len())].clone();
                let mut spelled = target.clone();
                let body = fields
                    .iter()
                    .map(|(k, v)| {
                        let k = if *k == target {
                            spelled = recase(k, &flips);
                            spelled.clone()
                        } else {
                            recase(k, &flips[1..])
                        };
                        format!("{}={}", urlencode(k.as_bytes()), urlencode(v.as_bytes()))
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                let expected = Field::Value(account_key(fields[&target].as_bytes()));
                prop_assert_eq!(
                    form_field(BodyKind::UrlEncoded, body.as_bytes(), &target, FieldMatch::ANY_CASE),
                    expected.clone()
                );
                prop_assert_eq!(query_field(body.as_bytes(), &target, FieldMatch::ANY_CASE), expected.clone());
                prop_assert_eq!(
                    form_field(BodyKind::UrlEncoded, body.as_bytes(), &spelled, FieldMatch::EXACT),
                    expected.clone()
                );
                prop_assert_eq!(
                    form_field(BodyKind::UrlEncoded, body.as_bytes(), "absent0", FieldMatch::ANY_CASE),
                    Field::Absent
                );
                if json_too {
                    let object: serde_json::Map<String, serde_json::Value> = fields
                        .iter()
                        .map(|(k, v)| {
                            let k = if *k == target { spelled.clone() } else { k.clone() };
                            (k, serde_json::Value::String(v.clone()))
                        })
                        .collect();
                    let json = serde_json::to_vec(&object).unwrap();
                    prop_assert_eq!(form_field(BodyKind::Json, &json, &target, FieldMatch::ANY_CASE), expected);
                }
            }

            /// Urlencoding round trip: what a browser encodes decodes to the same bytes, and the
            /// field is found under its exact name with the account key of the value.
            #[test]
            fn urlencoding_round_trip(name in vec(any::<u8>(), 1..16), value in vec(any::<u8>(), 0..64)) {
                prop_assert_eq!(percent_decode_strict(urlencode(&value).as_bytes()), Some(value.clone()));
                prop_assert_eq!(percent_decode(urlencode(&value).as_bytes()), value.clone());
                if let Ok(name) = std::str::from_utf8(&name) {
                    let query = format!("{}={}", urlencode(name.as_bytes()), urlencode(&value));
                    prop_assert_eq!(
                        query_field(query.as_bytes(), name, FieldMatch::EXACT),
                        Field::Value(account_key(&value))
                    );
                }
            }

            /// A value given twice under spellings of the field's name is that value when both
            /// are the same account, Unreadable otherwise.
            #[test]
            fn duplicates_fail_closed(a in "[a-zA-Z0-9 ]{0,8}", b in "[a-zA-Z0-9 ]{0,8}", flips in vec(any::<bool>(), 8)) {
                let body = format!("{}={}&x=1&{}={}", "username", urlencode(a.as_bytes()), recase("username", &flips), urlencode(b.as_bytes()));
                let field = form_field(BodyKind::UrlEncoded, body.as_bytes(), "username", FieldMatch::ANY_CASE);
                let (ka, kb) = (account_key(a.as_bytes()), account_key(b.as_bytes()));
                if ka == kb {
                    prop_assert_eq!(field, Field::Value(ka));
                } else {
                    prop_assert_eq!(field, Field::Unreadable);
                }
                let json = format!(
                    "{{{},\"x\":1,{}}}",
                    serde_json::json!({"username": a}).to_string().trim_matches(['{', '}']),
                    serde_json::json!({recase("username", &flips): b}).to_string().trim_matches(['{', '}']),
                );
                let field = form_field(BodyKind::Json, json.as_bytes(), "username", FieldMatch::ANY_CASE);
                if account_key(a.as_bytes()) == account_key(b.as_bytes()) {
                    prop_assert_eq!(field, Field::Value(account_key(a.as_bytes())));
                } else {
                    prop_assert_eq!(field, Field::Unreadable);
                }
            }

            /// JSON objects from a random map give the value of the field (Unreadable for null
            /// or nested values, Absent when missing).
            #[test]
            fn json_map_gives_the_value(
                fields in btree_map("[a-z]{1,8}", json_value(), 0..8),
                name in "[a-z]{1,8}",
            ) {
                let object: serde_json::Map<String, serde_json::Value> = fields.clone().into_iter().collect();
                let json = serde_json::to_vec(&object).unwrap();
                let expected = fields.get(&name).map_or(Field::Absent, value_of);
                prop_assert_eq!(form_field(BodyKind::Json, &json, &name, FieldMatch::EXACT), expected);
            }

            /// Trailing bytes never change the answer. Exact property: for every JSON value `v`
            /// (object or not, nested, written compact or pretty by serde_json) and every byte
            /// string `t`, `form_field(Json, ser(v) ++ t) == form_field(Json, ser(v))`. No
            /// condition on `t` is needed: an object ends at its closing brace, so nothing in
            /// `t` can continue it (a `1` after `{"a":1}` is not `{"a":11}`); a value that is not
            /// an object, where `t` could continue it (`12` + `3` is `123`, `tru` + `e`), is
            /// Unreadable from its first byte, with or without `t`.
            #[test]
            fn trailing_bytes_do_not_matter(
                fields in btree_map("[a-z]{1,8}", json_value(), 0..6),
                top in json_value(),
                use_map in any::<bool>(),
                pretty in any::<bool>(),
                name in "[a-z]{1,8}",
                tail in prop_oneof![vec(any::<u8>(), 0..32), "[0-9eE.+\\-\\]\\},\" {}a-z:]{0,16}".prop_map(String::into_bytes)],
            ) {
                let value = if use_map {
                    serde_json::Value::Object(fields.into_iter().collect())
                } else {
                    top
                };
                let json = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) }.unwrap();
                let alone = form_field(BodyKind::Json, &json, &name, FieldMatch::ANY_CASE);
                let mut with_tail = json.clone();
                with_tail.extend_from_slice(&tail);
                prop_assert_eq!(form_field(BodyKind::Json, &with_tail, &name, FieldMatch::ANY_CASE), alone.clone());
                if !value.is_object() {
                    prop_assert_eq!(alone, Field::Unreadable);
                }
            }

            /// Combining sources: Unreadable wins; otherwise the first value, or Unreadable when
            /// present values differ; Absent when none is present.
            #[test]
            fn combine_rules(fields in vec(prop_oneof![Just(Field::Absent), Just(Field::Unreadable), "[ab]".prop_map(|s| Field::Value(s.into_bytes()))], 0..5)) {
                let values: Vec<&Vec<u8>> = fields.iter().filter_map(|f| match f { Field::Value(v) => Some(v), _ => None }).collect();
                let expected = if fields.contains(&Field::Unreadable) || values.windows(2).any(|w| w[0] != w[1]) {
                    Field::Unreadable
                } else {
                    values.first().map_or(Field::Absent, |v| Field::Value((*v).clone()))
                };
                prop_assert_eq!(combine(fields), expected);
            }

            /// The account key is idempotent, lowercase ASCII for ASCII input, and trimmed.
            #[test]
            fn account_key_is_stable(s in any::<String>()) {
                let once = account_key(s.as_bytes());
                prop_assert_eq!(account_key(&once), once.clone());
                if s.is_ascii() {
                    let trimmed = s.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
                    let expected: Vec<u8> = trimmed.bytes().filter(|b| !b.is_ascii_control()).map(|b| b.to_ascii_lowercase()).collect();
                    prop_assert_eq!(once.clone(), expected);
                }
                let text = String::from_utf8(once).unwrap();
                prop_assert_eq!(text.trim(), text.as_str());
            }
        }
    }
}
