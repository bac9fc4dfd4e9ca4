//! The guards of open connections, by peer address, so that a request or a reload can end a
//! connection.

use std::sync::Arc;

use super::control::{CloseReason, Control};

/// The guards of the open connections, by peer address (unique while a connection is open),
/// so that a request or a reload can end a connection: an HTTP/2 connection from an address a
/// reload denied gets a GOAWAY.
#[derive(Default)]
pub struct Registry {
    /// Control and whether the connection is HTTP/2.
    open: dashmap::DashMap<std::net::SocketAddr, (Arc<Control>, bool)>,
}

/// A connection in the registry, removed when dropped.
pub struct Registered<'a> {
    registry: &'a Registry,
    peer: std::net::SocketAddr,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.open.remove(&self.peer);
    }
}

impl Registry {
    pub fn register(
        &self,
        peer: std::net::SocketAddr,
        control: Arc<Control>,
        h2: bool,
    ) -> Registered<'_> {
        self.open.insert(peer, (control, h2));
        Registered {
            registry: self,
            peer,
        }
    }

    /// Close the connection from `peer`, if open.
    pub fn close(&self, peer: &std::net::SocketAddr, reason: CloseReason) {
        if let Some(entry) = self.open.get(peer) {
            entry.0.close(reason);
        }
    }

    /// Send a GOAWAY to every HTTP/2 connection whose peer `denied` says no to (HTTP/1 ones
    /// get a 403 and close at their next request); returns how many.
    pub fn close_h2_where(&self, denied: impl Fn(std::net::IpAddr) -> bool) -> usize {
        let mut closed = 0;
        for entry in self.open.iter() {
            let (control, h2) = entry.value();
            if *h2 && denied(entry.key().ip()) {
                control.close(CloseReason::Denied);
                closed += 1;
            }
        }
        closed
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}
