//! Signed cookies of the login queue: `rempart_ticket` (keeps a place in line: tenant, arrival
//! sequence, expiry) and `rempart_pass` (an admitted user goes first: tenant, expiry). Both are
//! bound to the queue and to the client's address prefix (/24 for IPv4, /64 for IPv6).
//!
//! Value: `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, payload
//! `kind|queue-hash|expiry|prefix|seq|tenant`. Verification is constant time (`hmac`'s
//! `verify_slice`); anything that does not verify, has expired or names another queue, prefix
//! or tenant is simply no ticket.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TICKET_COOKIE: &str = "rempart_ticket";
pub const PASS_COOKIE: &str = "rempart_pass";

/// Cookie values longer than this are not even decoded.
const MAX_VALUE: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks one queue's cookies: the first key signs, every key verifies (so keys can
/// be rotated: add the new one first, drop the old one once its cookies have expired).
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
    queue: String,
}

/// A verified ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub seq: u64,
    pub expires: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ticket,
    Pass,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Ticket => "t",
            Kind::Pass => "p",
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The address prefix a cookie is bound to: /24 for IPv4, /64 for IPv6.
pub fn address_prefix(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "-".to_string(),
    }
}

impl Signer {
    pub fn new(key: &[u8], queue: &str) -> Self {
        Self::with_keys(vec![key.to_vec()], queue)
    }

    /// A signer with several keys, the first one signing.
    pub fn with_keys(keys: Vec<Vec<u8>>, queue: &str) -> Self {
        Signer {
            keys,
            queue: queue.to_string(),
        }
    }

    fn mac_with(key: &[u8]) -> Option<HmacSha256> {
        // HMAC takes keys of any length: this never fails.
        HmacSha256::new_from_slice(key).ok()
    }

    fn mac(&self) -> Option<HmacSha256> {
        Self::mac_with(self.keys.first()?)
    }

    fn payload(&self, kind: Kind, expires: u64, prefix: &str, seq: u64, tenant: &str) -> String {
        format!(
            "{}|{}|{expires}|{prefix}|{seq}|{tenant}",
            kind.tag(),
            self.queue
        )
    }

    fn sign(&self, payload: &str) -> String {
        let Some(mut mac) = self.mac() else {
            return String::new();
        };
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload of a value whose signature verifies, else None.
    fn open(&self, value: &str) -> Option<String> {
        if value.len() > MAX_VALUE {
            return None;
        }
        let (payload, tag) = value.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let verified = self.keys.iter().any(|key| {
            Self::mac_with(key).is_some_and(|mut mac| {
                mac.update(&payload);
                mac.verify_slice(&tag).is_ok()
            })
        });
        if !verified {
            return None;
        }
        String::from_utf8(payload).ok()
    }

    fn check(
        &self,
        kind: Kind,
        value: &str,
        prefix: &str,
        tenant: &str,
        now: u64,
    ) -> Option<(u64, u64)> {
        let payload = self.open(value)?;
        let mut parts = payload.splitn(6, '|');
        let (tag, queue, expires, bound, seq, for_tenant) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let expires: u64 = expires.parse().ok()?;
        let seq: u64 = seq.parse().ok()?;
        let valid = tag == kind.tag()
            && queue == self.queue
            && bound == prefix
            && for_tenant == tenant
            && expires > now;
        valid.then_some((seq, expires))
    }

    pub fn ticket(&self, seq: u64, tenant: &str, prefix: &str, expires: u64) -> String {
        self.sign(&self.payload(Kind::Ticket, expires, prefix, seq, tenant))
    }

    pub fn pass(&self, tenant: &str, prefix: &str, expires: u64) -> String {
        self.pass_with_id(tenant, prefix, expires, 0)
    }

    /// A pass with an id, by which its uses are counted.
    pub fn pass_with_id(&self, tenant: &str, prefix: &str, expires: u64, id: u64) -> String {
        self.sign(&self.payload(Kind::Pass, expires, prefix, id, tenant))
    }

    /// The ticket in `value`, when it is this queue's, for this prefix and tenant, not expired.
    pub fn check_ticket(
        &self,
        value: &str,
        prefix: &str,
        tenant: &str,
        now: u64,
    ) -> Option<Ticket> {
        self.check(Kind::Ticket, value, prefix, tenant, now)
            .map(|(seq, expires)| Ticket { seq, expires })
    }

    /// Whether `value` is a valid pass of this queue for this prefix and tenant.
    pub fn check_pass(&self, value: &str, prefix: &str, tenant: &str, now: u64) -> bool {
        self.check_pass_id(value, prefix, tenant, now).is_some()
    }

    /// The id of a valid pass.
    pub fn check_pass_id(&self, value: &str, prefix: &str, tenant: &str, now: u64) -> Option<u64> {
        self.check(Kind::Pass, value, prefix, tenant, now)
            .map(|(id, _)| id)
    }
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    for header in headers {
        let Ok(header) = std::str::from_utf8(header) else {
            continue;
        };
        for pair in header.split(';') {
            if let Some((k, v)) = pair.split_once('=') {
                if k.trim() == name {
                    return Some(v.trim().trim_matches('"'));
                }
            }
        }
    }
    None
}

/// A `Set-Cookie` value.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "10.1.2.0/24";

    #[test]
    fn rotated_keys_verify_and_the_first_signs() {
        let old = Signer::new(b"old-key-0123456789", "logins");
        let v = old.ticket(7, "A", PREFIX, 1000);
        let rotated = Signer::with_keys(
            vec![
                b"new-key-0123456789".to_vec(),
                b"old-key-0123456789".to_vec(),
            ],
            "logins",
        );
        assert!(
            rotated.check_ticket(&v, PREFIX, "A", 1).is_some(),
            "old cookies still verify"
        );
        let fresh = rotated.ticket(8, "A", PREFIX, 1000);
        assert!(
            old.check_ticket(&fresh, PREFIX, "A", 1).is_none(),
            "the new key signs"
        );
        let pass = rotated.pass_with_id("A", PREFIX, 1000, 99);
        assert_eq!(rotated.check_pass_id(&pass, PREFIX, "A", 1), Some(99));
    }

    #[test]
    fn ticket_round_trip() {
        let s = Signer::new(b"k", "logins");
        let v = s.ticket(42, "0123456A", PREFIX, 1000);
        assert_eq!(
            s.check_ticket(&v, PREFIX, "0123456A", 999),
            Some(Ticket {
                seq: 42,
                expires: 1000
            })
        );
    }

    #[test]
    fn what_does_not_verify_is_no_ticket() {
        let s = Signer::new(b"k", "logins");
        let v = s.ticket(42, "A", PREFIX, 1000);
        assert_eq!(s.check_ticket(&v, PREFIX, "A", 1000), None, "expired");
        assert_eq!(
            s.check_ticket(&v, "10.1.3.0/24", "A", 1),
            None,
            "other address"
        );
        assert_eq!(s.check_ticket(&v, PREFIX, "B", 1), None, "other tenant");
        assert_eq!(
            Signer::new(b"other", "logins").check_ticket(&v, PREFIX, "A", 1),
            None,
            "other key"
        );
        assert_eq!(
            Signer::new(b"k", "other").check_ticket(&v, PREFIX, "A", 1),
            None,
            "other queue"
        );
        assert!(!s.check_pass(&v, PREFIX, "A", 1), "a ticket is not a pass");
        // Altered payload: seq 42 -> 1, signature kept.
        let (_, tag) = v.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(format!("t|logins|1000|{PREFIX}|1|A"))
        );
        assert_eq!(s.check_ticket(&forged, PREFIX, "A", 1), None, "altered");
        for junk in ["", ".", "a.b", "%%%.%%%", "x".repeat(4000).as_str(), "é.é"] {
            assert_eq!(s.check_ticket(junk, PREFIX, "A", 1), None, "{junk:?}");
        }
    }

    #[test]
    fn pass_round_trip() {
        let s = Signer::new(b"k", "logins");
        let v = s.pass("A", PREFIX, 1000);
        assert!(s.check_pass(&v, PREFIX, "A", 10));
        assert!(!s.check_pass(&v, PREFIX, "A", 1000));
        assert!(s.check_ticket(&v, PREFIX, "A", 10).is_none());
    }

    #[test]
    fn prefixes_and_cookies() {
        assert_eq!(address_prefix(Some("10.1.2.3".parse().unwrap())), PREFIX);
        assert_eq!(
            address_prefix(Some("2001:db8:1:2:3:4:5:6".parse().unwrap())),
            "2001:db8:1:2::/64"
        );
        let headers: Vec<&[u8]> = vec![b"a=1; rempart_ticket=abc.def", b"rempart_pass=\"x.y\""];
        assert_eq!(
            cookie(headers.iter().copied(), TICKET_COOKIE),
            Some("abc.def")
        );
        assert_eq!(cookie(headers.iter().copied(), PASS_COOKIE), Some("x.y"));
        assert_eq!(cookie(headers.iter().copied(), "none"), None);
        assert!(set_cookie("n", "v", 60, true).ends_with("; Secure"));
    }
}

#[cfg(test)]
#[path = "ticket_props.rs"]
mod props;
