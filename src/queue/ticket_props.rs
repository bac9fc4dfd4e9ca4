//! Properties of the signed queue cookies, checked with proptest. Included from ticket.rs:
//!
//! ```ignore
//! #[cfg(test)]
//! #[path = "ticket_props.rs"]
//! mod props;
//! ```
//!
//! Queue names are what the configuration accepts (letters, digits, `_`, `-`, `.`), tenants
//! what `sanitize_tenant` lets through (1 to 64 visible ASCII characters or spaces, `|`
//! included), prefixes what `address_prefix` gives for any address, keys 32 random bytes (HMAC
//! pads short keys with zeros, so `k` and `k\0` are one key: keys of one length are compared).

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn queue() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

fn tenant() -> impl Strategy<Value = String> {
    "[ -~]{1,64}"
}

fn prefix() -> impl Strategy<Value = String> {
    any::<Option<IpAddr>>().prop_map(address_prefix)
}

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

/// Strings that look like cookie values: two base64url halves, or a payload of the right shape
/// under a random tag.
fn lookalike() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.=-]{0,600}",
        (vec(any::<u8>(), 0..300), vec(any::<u8>(), 0..40)).prop_map(|(payload, tag)| {
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(tag)
            )
        }),
        (
            "[tp]",
            queue(),
            any::<u64>(),
            prefix(),
            any::<u64>(),
            tenant(),
            vec(any::<u8>(), 32)
        )
            .prop_map(|(kind, queue, expires, prefix, seq, tenant, tag)| {
                format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD
                        .encode(format!("{kind}|{queue}|{expires}|{prefix}|{seq}|{tenant}")),
                    URL_SAFE_NO_PAD.encode(tag)
                )
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Decoding any string never panics and never verifies, as a ticket or as a pass, whatever
    /// the queue, prefix, tenant and time; reading cookies out of any bytes never panics.
    #[test]
    fn arbitrary_values_never_verify(
        value in lookalike(),
        k in key(),
        q in queue(),
        p in prefix(),
        t in tenant(),
        now in any::<u64>(),
        headers in vec(vec(any::<u8>(), 0..80), 0..4),
    ) {
        let s = Signer::new(&k, &q);
        prop_assert_eq!(s.check_ticket(&value, &p, &t, now), None);
        prop_assert!(!s.check_pass(&value, &p, &t, now));
        let _ = cookie(headers.iter().map(Vec::as_slice), TICKET_COOKIE);
    }

    /// A signed ticket and a signed pass verify for their queue, prefix and tenant until they
    /// expire, with the ticket's sequence number and expiry; they fit in a cookie value
    /// (at most 512 bytes); a ticket is no pass and a pass no ticket.
    #[test]
    fn signed_values_round_trip(
        k in key(),
        q in queue(),
        p in prefix(),
        t in tenant(),
        seq in any::<u64>(),
        expires in 1..u64::MAX,
        before in any::<u64>(),
    ) {
        let now = before % expires;
        let s = Signer::new(&k, &q);
        let ticket = s.ticket(seq, &t, &p, expires);
        let pass = s.pass(&t, &p, expires);
        prop_assert!(ticket.len() <= MAX_VALUE && pass.len() <= MAX_VALUE);
        prop_assert_eq!(s.check_ticket(&ticket, &p, &t, now), Some(Ticket { seq, expires }));
        prop_assert!(s.check_pass(&pass, &p, &t, now));
        prop_assert!(!s.check_pass(&ticket, &p, &t, now));
        prop_assert_eq!(s.check_ticket(&pass, &p, &t, now), None);
        // Another signer with the same key and queue (another process, a reload) agrees.
        prop_assert!(Signer::new(&k, &q).check_pass(&pass, &p, &t, now));
        // A cookie header carries them as they are.
        let header = format!("a=1; {TICKET_COOKIE}={ticket}; {PASS_COOKIE}=\"{pass}\"");
        prop_assert_eq!(cookie([header.as_bytes()].into_iter(), TICKET_COOKIE), Some(ticket.as_str()));
        prop_assert_eq!(cookie([header.as_bytes()].into_iter(), PASS_COOKIE), Some(pass.as_str()));
    }

    /// Changing any one byte of a valid value (to any other byte) makes it invalid; so does
    /// cutting it short or adding to it.
    #[test]
    fn any_altered_byte_is_invalid(
        k in key(),
        q in queue(),
        p in prefix(),
        t in tenant(),
        seq in any::<u64>(),
        pass_kind in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
        cut in any::<prop::sample::Index>(),
        extra in "[A-Za-z0-9_.=-]{1,4}",
    ) {
        let s = Signer::new(&k, &q);
        let value = if pass_kind { s.pass(&t, &p, 1000) } else { s.ticket(seq, &t, &p, 1000) };
        let valid = |v: &str| s.check_ticket(v, &p, &t, 10).is_some() || s.check_pass(v, &p, &t, 10);
        prop_assert!(valid(&value));
        let mut bytes = value.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(altered) = String::from_utf8(bytes) {
            prop_assert!(!valid(&altered), "byte {} of {:?} xor {:#x}", i, value, flip);
        }
        prop_assert!(!valid(&value[..cut.index(value.len())]));
        let longer = format!("{value}{extra}");
        let prefixed = format!("{extra}{value}");
        prop_assert!(!valid(&longer));
        prop_assert!(!valid(&prefixed));
    }

    /// A value signed for another queue, another address prefix, another tenant or under
    /// another key (of the same length) is rejected.
    #[test]
    fn other_queues_prefixes_tenants_and_keys_are_rejected(
        k in key(),
        k2 in key(),
        q in queue(),
        q2 in queue(),
        a in any::<IpAddr>(),
        b in any::<IpAddr>(),
        t in tenant(),
        t2 in tenant(),
        seq in any::<u64>(),
    ) {
        let (p, p2) = (address_prefix(Some(a)), address_prefix(Some(b)));
        let s = Signer::new(&k, &q);
        let ticket = s.ticket(seq, &t, &p, 1000);
        let pass = s.pass(&t, &p, 1000);
        let accepted = |s: &Signer, p: &str, t: &str| {
            (s.check_ticket(&ticket, p, t, 10).is_some(), s.check_pass(&pass, p, t, 10))
        };
        prop_assert_eq!(accepted(&s, &p, &t), (true, true));
        if q2 != q {
            prop_assert_eq!(accepted(&Signer::new(&k, &q2), &p, &t), (false, false));
        }
        if p2 != p {
            prop_assert_eq!(accepted(&s, &p2, &t), (false, false));
        }
        if t2 != t {
            prop_assert_eq!(accepted(&s, &p, &t2), (false, false));
        }
        if k2 != k {
            prop_assert_eq!(accepted(&Signer::new(&k2, &q), &p, &t), (false, false));
        }
        // No address prefix ("-") is a prefix of its own.
        prop_assert_eq!(accepted(&s, &address_prefix(None), &t), (false, false));
    }

    /// A value is valid strictly before its expiry and rejected from then on.
    #[test]
    fn expired_values_are_rejected(
        k in key(),
        q in queue(),
        p in prefix(),
        t in tenant(),
        seq in any::<u64>(),
        expires in any::<u64>(),
        after in any::<u64>(),
    ) {
        let now = expires.saturating_add(after % 1_000_000);
        let s = Signer::new(&k, &q);
        prop_assert_eq!(s.check_ticket(&s.ticket(seq, &t, &p, expires), &p, &t, now), None);
        prop_assert!(!s.check_pass(&s.pass(&t, &p, expires), &p, &t, now));
        if let Some(earlier) = expires.checked_sub(1) {
            prop_assert!(s.check_pass(&s.pass(&t, &p, expires), &p, &t, earlier));
        }
    }
}
