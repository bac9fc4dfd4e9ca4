//! `rempart::forwarded`: client_ip, x_forwarded_for, parse_forwarded_entry,
//! forwarded_elements and upstream_edits on header lines made of the input.
//!
//! Input: byte 0 is a set of flags (peer family, trusted networks, TLS, host, mapped IPv4),
//! bytes 1..17 the peer address, the rest header lines separated by `\n`, each used as one
//! `X-Forwarded-For` line and one `Forwarded` line.
//!
//! Invariants (src/forwarded.rs docs and property tests):
//! - no input panics;
//! - `x_forwarded_for` ends with the (canonical) peer and is at most
//!   `INCOMING_MAX + ", ".len() + peer.len()` bytes, and is a valid header value when the
//!   lines are;
//! - `client_ip` is the canonical peer when the peer is not trusted, and always canonical;
//! - the elements `forwarded_elements` returns are non-empty, trimmed, and read back the same
//!   once joined with ", ";
//! - under `Rewrite`, the `Forwarded` sent upstream is well-formed and ends with Rempart's own
//!   element, and `X-Real-IP` is the client.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use rempart::forwarded::{
    canonical, client_ip, forwarded_element, forwarded_elements, is_trusted, parse_forwarded_entry,
    upstream_edits, x_forwarded_for, ForwardedPolicy, HeaderEdit, Hop, INCOMING_MAX,
};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|n| n.parse().expect("valid network"))
        .collect()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(start), Some(end)) => &s[start..=end],
        _ => &[],
    }
}

fn join(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(e);
    }
    out
}

fn edited<'a>(edits: &'a [HeaderEdit], name: &str) -> Option<&'a HeaderEdit> {
    edits.iter().find(|e| match e {
        HeaderEdit::Remove(n) | HeaderEdit::Set(n, _) => n.as_str() == name,
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let flags = data[0];
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&data[1..17]);
    let peer = if flags & 1 == 0 {
        let v4 = Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]);
        if flags & 0x20 != 0 {
            IpAddr::V6(v4.to_ipv6_mapped())
        } else {
            IpAddr::V4(v4)
        }
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let trusted = match (flags >> 1) & 3 {
        0 => Vec::new(),
        1 => nets(&["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]),
        2 => nets(&["0.0.0.0/0", "::/0"]),
        _ => {
            // The peer's own network, so that the walk goes on behind it.
            let prefix = if canonical(peer).is_ipv4() { 24 } else { 64 };
            vec![IpNet::new(canonical(peer), prefix)
                .expect("valid prefix")
                .trunc()]
        }
    };
    let tls = flags & 8 != 0;
    let lines: Vec<&[u8]> = data[17..].split(|b| *b == b'\n').collect();

    // client_ip
    let client = client_ip(peer, lines.iter().copied(), &trusted);
    assert_eq!(
        canonical(client),
        client,
        "client_ip {client} is not canonical"
    );
    let peer_trusted = is_trusted(peer, &trusted);
    if !peer_trusted {
        assert_eq!(
            client,
            canonical(peer),
            "untrusted peer, yet client_ip moved"
        );
    }

    // x_forwarded_for
    let peer_text = canonical(peer).to_string();
    let xff = x_forwarded_for(lines.iter().copied(), peer);
    assert!(
        xff.ends_with(peer_text.as_bytes()),
        "XFF {:?} does not end with {peer_text}",
        String::from_utf8_lossy(&xff)
    );
    assert!(
        xff.len() <= INCOMING_MAX + 2 + peer_text.len(),
        "XFF is {} bytes, over the bound",
        xff.len()
    );
    let valid: Vec<HeaderValue> = lines
        .iter()
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let xff_valid = x_forwarded_for(valid.iter().map(HeaderValue::as_bytes), peer);
    assert!(
        HeaderValue::from_bytes(&xff_valid).is_ok(),
        "XFF of valid lines is no header value: {:?}",
        String::from_utf8_lossy(&xff_valid)
    );

    // parse_forwarded_entry, forwarded_elements
    for line in &lines {
        let text = String::from_utf8_lossy(line);
        let _ = parse_forwarded_entry(&text);
        for entry in text.split(',') {
            let _ = parse_forwarded_entry(entry.trim());
        }
        if let Some(elements) = forwarded_elements(line) {
            for e in &elements {
                assert!(!e.is_empty(), "empty element in {line:?}");
                assert_eq!(trim(e), *e, "untrimmed element in {line:?}");
            }
            let joined = join(&elements);
            assert_eq!(
                forwarded_elements(&joined).as_deref(),
                Some(elements.as_slice()),
                "elements of {:?} joined do not read back",
                String::from_utf8_lossy(line)
            );
        }
    }

    // upstream_edits, on the lines that are header values.
    let mut incoming = HeaderMap::new();
    for v in &valid {
        incoming.append(HeaderName::from_static("x-forwarded-for"), v.clone());
        incoming.append(http::header::FORWARDED, v.clone());
    }
    let host = (flags & 0x10 != 0)
        .then(|| valid.first().map(HeaderValue::as_bytes))
        .flatten();
    let hop = Hop {
        peer,
        peer_trusted,
        client_ip: client,
        tls,
        host,
    };
    for policy in [ForwardedPolicy::Strip, ForwardedPolicy::Rewrite] {
        let edits = upstream_edits(&incoming, &hop, policy);
        match edited(&edits, "x-forwarded-for") {
            Some(HeaderEdit::Set(_, v)) => {
                assert!(
                    v.as_bytes().ends_with(peer_text.as_bytes()),
                    "XFF edit {v:?}"
                )
            }
            other => panic!("X-Forwarded-For not set: {other:?}"),
        }
        if policy == ForwardedPolicy::Rewrite {
            let Some(HeaderEdit::Set(_, forwarded)) = edited(&edits, "forwarded") else {
                panic!("Forwarded not set under Rewrite: {edits:?}");
            };
            let elements = forwarded_elements(forwarded.as_bytes())
                .unwrap_or_else(|| panic!("malformed Forwarded sent upstream: {forwarded:?}"));
            let named = if peer_trusted { peer } else { client };
            let own = forwarded_element(named, tls, host);
            assert_eq!(
                elements.last().copied(),
                Some(own.as_slice()),
                "Forwarded {forwarded:?} does not end with Rempart's element"
            );
            assert!(forwarded.len() <= INCOMING_MAX + 2 + 2 * own.len() + 64);
            let real = canonical(client).to_string();
            match edited(&edits, "x-real-ip") {
                Some(HeaderEdit::Set(_, v)) => assert_eq!(v.as_bytes(), real.as_bytes()),
                other => panic!("X-Real-IP not set under Rewrite: {other:?}"),
            }
        } else if !peer_trusted {
            assert!(matches!(
                edited(&edits, "forwarded"),
                Some(HeaderEdit::Remove(_))
            ));
            assert!(matches!(
                edited(&edits, "x-real-ip"),
                Some(HeaderEdit::Remove(_))
            ));
        }
    }
});
