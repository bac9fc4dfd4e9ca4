//! Connection-level defence: `shield.deny` CIDRs and the connection caps (`max_connections`,
//! `max_connections_per_ip`), checked on accept before any TLS work, and the count of open
//! connections per client address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use pingora::listeners::ConnectionFilter;

use super::keys::ip_key;
use crate::forwarded::{canonical, is_trusted};
use crate::runtime::Runtime;

/// Open connections, in total and per client address key.
#[derive(Default)]
pub struct ConnectionTable {
    total: AtomicUsize,
    per_ip: DashMap<u64, usize>,
}

/// Why a connection is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Denied,
    TooMany,
    TooManyFromAddress,
}

/// An open connection, counted until dropped.
pub struct ConnectionSlot {
    table: Arc<ConnectionTable>,
    key: Option<u64>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.table.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key {
            self.table.per_ip.remove_if_mut(&key, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// The caps that apply to one peer.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_total: usize,
    /// None: the peer is exempt (trusted proxy or `shield.allow`).
    pub max_per_ip: Option<usize>,
}

impl ConnectionTable {
    /// Why one more connection from this key would be over the caps, if it would (no counting).
    pub fn over_caps(&self, key: u64, caps: Caps) -> Option<Refusal> {
        if self.total.load(Ordering::Acquire) >= caps.max_total {
            return Some(Refusal::TooMany);
        }
        match caps.max_per_ip {
            Some(max) if self.per_ip.get(&key).is_some_and(|n| *n >= max) => {
                Some(Refusal::TooManyFromAddress)
            }
            _ => None,
        }
    }

    /// Whether one more connection from this key would be within the caps (no counting).
    pub fn has_room(&self, key: u64, caps: Caps) -> bool {
        self.over_caps(key, caps).is_none()
    }

    /// Count a connection if it fits in the caps.
    pub fn open(self: &Arc<Self>, key: u64, caps: Caps) -> Result<ConnectionSlot, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let mut slot = ConnectionSlot {
            table: self.clone(),
            key: None,
        };
        if total > caps.max_total {
            return Err(Refusal::TooMany);
        }
        if let Some(max) = caps.max_per_ip {
            let mut count = self.per_ip.entry(key).or_insert(0);
            if *count >= max {
                return Err(Refusal::TooManyFromAddress);
            }
            *count += 1;
            slot.key = Some(key);
        }
        Ok(slot)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// The accept-time filter: refuses denied addresses and peers over the caps before TLS.
pub struct AcceptFilter {
    runtime: Arc<Runtime>,
}

impl AcceptFilter {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        AcceptFilter { runtime }
    }
}

impl std::fmt::Debug for AcceptFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptFilter")
    }
}

#[async_trait]
impl ConnectionFilter for AcceptFilter {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let Some(addr) = addr else {
            return true;
        };
        let snapshot = self.runtime.load();
        let shield = &snapshot.shield;
        let ip = canonical(addr.ip());
        match shield.refuse_connection(ip) {
            Some(refusal) => {
                shield.count_connection_refusal(refusal);
                false
            }
            None => true,
        }
    }
}

/// The caps and key of a peer under a shield configuration.
pub fn caps_for(
    ip: IpAddr,
    max_total: usize,
    max_per_ip: usize,
    exempt: &[ipnet::IpNet],
    trusted: &[ipnet::IpNet],
) -> Caps {
    let exempt = exempt.iter().any(|n| n.contains(&ip)) || is_trusted(ip, trusted);
    Caps {
        max_total,
        max_per_ip: (!exempt).then_some(max_per_ip),
    }
}

/// The key connections from `ip` are counted under.
pub fn connection_key(ip: IpAddr, prefix: u8, hasher: &super::keys::KeyHasher) -> u64 {
    ip_key(ip, prefix, hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_enforced_and_released() {
        let table = Arc::new(ConnectionTable::default());
        let caps = Caps {
            max_total: 3,
            max_per_ip: Some(2),
        };
        let a1 = table.open(1, caps).unwrap();
        let _a2 = table.open(1, caps).unwrap();
        assert!(!table.has_room(1, caps));
        assert_eq!(table.open(1, caps).err(), Some(Refusal::TooManyFromAddress));
        assert!(table.has_room(2, caps));
        let _b1 = table.open(2, caps).unwrap();
        assert_eq!(table.open(3, caps).err(), Some(Refusal::TooMany));
        assert_eq!(table.total(), 3);
        drop(a1);
        assert_eq!(table.total(), 2);
        assert!(table.has_room(1, caps));
        let exempt = Caps {
            max_total: 3,
            max_per_ip: None,
        };
        let _c = table.open(1, exempt).unwrap();
        assert_eq!(table.total(), 3);
    }

    #[test]
    fn the_per_address_map_empties() {
        let table = Arc::new(ConnectionTable::default());
        let caps = Caps {
            max_total: 100,
            max_per_ip: Some(10),
        };
        let slots: Vec<_> = (0..50).map(|k| table.open(k, caps).unwrap()).collect();
        assert_eq!(table.per_ip.len(), 50);
        drop(slots);
        assert_eq!(table.per_ip.len(), 0);
        assert_eq!(table.total(), 0);
    }
}
