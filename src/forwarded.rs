//! Who the client is and what the upstream is told about it: `client_ip` from the peer or a
//! trusted proxy's `X-Forwarded-For`, and request ids.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
/// address of `X-Forwarded-For` that is not itself a trusted proxy. A header that does not
/// parse stops the walk: the last good address (or the peer) is used.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    // Header lines are walked last to first, and each line's entries right to left.
    for line in forwarded_for.rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            return client;
        };
        for entry in line.rsplit(',') {
            let Some(ip) = parse_forwarded_entry(entry.trim()) else {
                return client;
            };
            let ip = canonical(ip);
            client = ip;
            if !is_trusted(ip, trusted) {
                return client;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an IP, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    None
}

/// Generates request ids: 32 hex digits, a random per-process prefix and a counter, unique
/// within the process and unlikely to collide across processes.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            prefix: rand::random(),
            counter: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(32);
        let _ = write!(id, "{:016x}{:016x}", self.prefix, mix(n));
        id
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A bijective mix of the counter so consecutive ids do not look consecutive.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether a request id received from a trusted proxy is safe to pass on: 1 to 128 visible
/// ASCII characters.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 128 && value.iter().all(|b| (0x21..0x7f).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let ip = client_ip(
            "203.0.113.9".parse().unwrap(),
            [b"1.1.1.1".as_slice()].into_iter(),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"6.6.6.6, 198.51.100.7".as_slice(), b"10.1.2.3".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_stops_the_walk() {
        let trusted = nets(&["127.0.0.1/32"]);
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"not-an-ip".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"[2001:db8::1]:443".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ids_are_unique_and_hex() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(acceptable_request_id(a.as_bytes()));
        assert!(!acceptable_request_id(b"with space"));
    }
}
