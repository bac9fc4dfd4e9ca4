//! `rempart::queue::ticket`: the login queue's signed cookies.
//!
//! Input: the first bytes drive the numbers (expiry, sequence, where to alter the value and
//! with what), the rest is split at `\n` into the value, prefix, tenant and `Cookie` lines.
//!
//! Invariants (src/queue/ticket.rs docs):
//! - no input panics;
//! - an arbitrary string never verifies as a ticket or a pass (the key is fixed and random,
//!   so a forgery would be a 2^-256 event, i.e. a bug);
//! - what `cookie()` returns is part of one of the header lines and never verifies either;
//! - a value signed here verifies with the same queue, prefix, tenant (round trip), also
//!   with a second key listed first (rotation), and not with another tenant or prefix, nor
//!   once it is past its expiry, nor as the other kind (ticket vs pass);
//! - that value, altered at any position (a byte replaced, a byte inserted or removed,
//!   truncated), never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rempart::queue::ticket::{cookie, Signer, PASS_COOKIE, TICKET_COOKIE};

/// A fixed random key (from /dev/urandom once), so that runs are reproducible.
const KEY: [u8; 32] = [
    0x5b, 0x1e, 0xa4, 0x93, 0x0c, 0x7f, 0xd2, 0x68, 0x31, 0xe9, 0x4a, 0xb7, 0x86, 0x15, 0xfc, 0x2d,
    0x70, 0x9a, 0x03, 0xce, 0x5f, 0x44, 0xe1, 0x8b, 0x26, 0xd9, 0x7c, 0x12, 0xab, 0x60, 0xf5, 0x38,
];
const NEXT_KEY: [u8; 32] = [
    0xc4, 0x29, 0x7d, 0x80, 0x16, 0xef, 0x53, 0xba, 0x0e, 0x91, 0x6c, 0x37, 0xd8, 0x42, 0xa5, 0x1b,
    0xf0, 0x64, 0x9f, 0x2a, 0x87, 0x5d, 0xc3, 0x0b, 0x76, 0xe4, 0x39, 0xa0, 0x1f, 0xd6, 0x58, 0x8e,
];
const QUEUE: &str = "login";
/// `Signer` does not decode values longer than this (`MAX_VALUE` in ticket.rs, private).
const MAX_VALUE: usize = 512;

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(bytes)
}

/// Nothing verifies `value`, whatever the prefix, tenant and time.
fn never_verifies(signers: &[&Signer], value: &str, prefix: &str, tenant: &str, now: u64) {
    for signer in signers {
        assert_eq!(
            signer.check_ticket(value, prefix, tenant, now),
            None,
            "forged ticket {value:?} ({prefix:?}, {tenant:?}, now {now})"
        );
        assert_eq!(
            signer.check_pass_id(value, prefix, tenant, now),
            None,
            "forged pass {value:?} ({prefix:?}, {tenant:?}, now {now})"
        );
        assert!(!signer.check_pass(value, prefix, tenant, now));
    }
}

fn altered_never_verifies(
    signers: &[&Signer],
    signed: &str,
    prefix: &str,
    tenant: &str,
    now: u64,
    at: usize,
    byte: u8,
) {
    let original = signed.as_bytes();
    let at = at % (original.len() + 1);
    let mut variants: Vec<Vec<u8>> = Vec::new();
    if at < original.len() {
        let mut replaced = original.to_vec();
        replaced[at] = byte;
        variants.push(replaced);
        let mut removed = original.to_vec();
        removed.remove(at);
        variants.push(removed);
    }
    let mut inserted = original.to_vec();
    inserted.insert(at, byte);
    variants.push(inserted);
    variants.push(original[..at].to_vec());
    for variant in variants {
        if variant == original {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&variant) else {
            continue;
        };
        never_verifies(signers, text, prefix, tenant, now);
    }
}

fuzz_target!(|data: &[u8]| {
    let signer = Signer::new(&KEY, QUEUE);
    let rotated = Signer::with_keys(vec![NEXT_KEY.to_vec(), KEY.to_vec()], QUEUE);
    let other_queue = Signer::new(&KEY, "other");
    let keyless = Signer::with_keys(Vec::new(), QUEUE);

    let expires = u64_at(data, 0);
    let seq = u64_at(data, 8);
    let at = u64_at(data, 16) as usize;
    let byte = data.get(24).copied().unwrap_or(0);
    let rest = data.get(25..).unwrap_or_default();
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\n');
    let value = parts.next().unwrap_or("");
    let prefix = parts.next().unwrap_or("10.1.2.0/24");
    let tenant = parts.next().unwrap_or("0750001A");
    let cookie_lines: Vec<&str> = parts.collect();
    let now = expires.saturating_sub(1);

    // Arbitrary strings never verify, with any signer.
    let all = [&signer, &rotated, &other_queue, &keyless];
    never_verifies(&all, value, prefix, tenant, now);
    never_verifies(&all, value, prefix, tenant, 0);
    never_verifies(&all, &text, prefix, tenant, 0);

    // cookie(): on the raw lines (not only UTF-8 ones) and on the text lines.
    let raw_lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    for name in [TICKET_COOKIE, PASS_COOKIE, value, ""] {
        for found in [
            cookie(raw_lines.iter().copied(), name),
            cookie(cookie_lines.iter().map(|l| l.as_bytes()), name),
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                raw_lines
                    .iter()
                    .any(|l| std::str::from_utf8(l).is_ok_and(|l| l.contains(found)))
                    || cookie_lines.iter().any(|l| l.contains(found)),
                "cookie {name:?} = {found:?} is in no line"
            );
            never_verifies(&all, found, prefix, tenant, now);
        }
    }

    // Signed values: round trip, rotation, binding, expiry, alteration.
    let ticket = signer.ticket(seq, tenant, prefix, expires);
    let pass = signer.pass_with_id(tenant, prefix, expires, seq);
    assert_eq!(keyless.ticket(seq, tenant, prefix, expires), "");
    // The payload is `kind|queue|expiry|prefix|seq|tenant`, read with splitn(6, '|'): a prefix
    // with `|` cannot read back (real prefixes are addresses), a tenant can (it is last).
    let readable = !prefix.contains('|');
    for (value, is_ticket) in [(&ticket, true), (&pass, false)] {
        let fits = value.len() <= MAX_VALUE;
        let valid_now = expires > now;
        for s in [&signer, &rotated] {
            let got_ticket = s.check_ticket(value, prefix, tenant, now);
            let got_pass = s.check_pass_id(value, prefix, tenant, now);
            if is_ticket {
                assert_eq!(got_pass, None, "a ticket passed as a pass");
                if fits && valid_now && readable {
                    let t = got_ticket.unwrap_or_else(|| panic!("own ticket {value:?} refused"));
                    assert_eq!((t.seq, t.expires), (seq, expires));
                } else {
                    assert_eq!(got_ticket, None);
                }
            } else {
                assert_eq!(got_ticket, None, "a pass passed as a ticket");
                if fits && valid_now && readable {
                    assert_eq!(got_pass, Some(seq), "own pass {value:?} refused");
                } else {
                    assert_eq!(got_pass, None);
                }
            }
            // Past the expiry, never.
            assert_eq!(s.check_ticket(value, prefix, tenant, expires), None);
            assert_eq!(s.check_pass_id(value, prefix, tenant, expires), None);
        }
        // Another queue, another tenant, another prefix: never.
        never_verifies(&[&other_queue, &keyless], value, prefix, tenant, now);
        let other_tenant = format!("{tenant}x");
        let other_prefix = format!("{prefix}x");
        never_verifies(&[&signer], value, prefix, &other_tenant, now);
        never_verifies(&[&signer], value, &other_prefix, tenant, now);

        altered_never_verifies(&[&signer, &rotated], value, prefix, tenant, now, at, byte);
    }
});
