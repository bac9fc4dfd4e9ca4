//! The transport of one try at a server: how a dark server is noticed (TCP keep-alive and
//! `TCP_USER_TIMEOUT` on every upstream connection), how an abandoned request is kept from
//! arriving later (an abortive close, `SO_LINGER` 0, so the kernel drops what it still holds
//! instead of retransmitting it once the server is back), and how the tries in flight to a
//! server declared down are cut (`shutdown` of their socket, after `on_down.cut_after`).
//!
//! A try is known by its socket's fd; before a cut touches it, the socket's peer is checked to
//! be the server that went down (one `getpeername`, on the cut path only), so a cut never
//! reaches a socket that reused the number for anything else.

use std::net::SocketAddr;
use std::os::unix::io::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use pingora::protocols::l4::ext::TcpKeepalive;
use socket2::SockRef;

/// TCP keep-alive and `TCP_USER_TIMEOUT` for upstream connections, from `timeouts.unacked`:
/// bytes unacknowledged that long end the connection, and an idle pooled connection is probed
/// after as long, twice a second apart, so a dead one is gone before a request picks it.
pub fn keepalive(unacked: Duration) -> TcpKeepalive {
    let idle = unacked.max(Duration::from_secs(1));
    TcpKeepalive {
        idle,
        interval: Duration::from_secs(1),
        count: 2,
        user_timeout: unacked,
    }
}

/// One system call on a socket pingora owns: the try's socket while the try runs (its
/// registration is dropped before pingora closes it); on a closed descriptor the call fails
/// cleanly.
fn on_socket<R>(fd: RawFd, call: impl FnOnce(SockRef<'_>) -> R) -> R {
    // SAFETY: the descriptor stays open for the call (see above), which is all it is borrowed
    // for.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    call(SockRef::from(&fd))
}

/// Make a socket's close abortive: what it still holds is dropped and a reset is sent, so a
/// request abandoned before the server acknowledged it can never be delivered afterwards.
pub fn abortive_close(fd: RawFd) {
    let _ = on_socket(fd, |s| s.set_linger(Some(Duration::ZERO)));
}

/// The peer address of a socket.
fn peer_of(fd: RawFd) -> Option<SocketAddr> {
    on_socket(fd, |s| s.peer_addr().ok()?.as_socket())
}

/// One try in flight on a socket.
#[derive(Debug)]
pub struct TryCell {
    id: u64,
    fd: RawFd,
    /// The server the socket goes to.
    server: SocketAddr,
    cut: AtomicBool,
}

impl TryCell {
    /// Whether this try was cut because its server went down.
    pub fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// End the try: its socket is shut both ways (the pending read returns, pingora drops the
    /// connection, abortively). Only when the fd still names a socket to that server (if the
    /// number went to another try at the same server meanwhile, that one is cut instead: it
    /// goes to the server that went down too).
    fn cut(&self) -> bool {
        if peer_of(self.fd) != Some(self.server) {
            return false;
        }
        self.cut.store(true, Ordering::Release);
        abortive_close(self.fd);
        // On a descriptor checked above to be this try's socket.
        let _ = on_socket(self.fd, |s| s.shutdown(std::net::Shutdown::Both));
        true
    }
}

/// The tries in flight to one server, by id.
#[derive(Debug, Default)]
pub struct Tries {
    next: AtomicU64,
    /// Keyed by ids Rempart counts, which no client chooses: a fast hasher.
    open: DashMap<u64, Arc<TryCell>, foldhash::fast::RandomState>,
}

/// A try registered with its server, removed when dropped.
#[derive(Debug)]
pub struct Registration {
    tries: Arc<Tries>,
    cell: Arc<TryCell>,
}

impl Registration {
    pub fn cell(&self) -> &Arc<TryCell> {
        &self.cell
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tries.open.remove(&self.cell.id);
    }
}

impl Tries {
    /// Register the try now using socket `fd` to `server`.
    pub fn register(self: &Arc<Self>, fd: RawFd, server: SocketAddr) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let cell = Arc::new(TryCell {
            id,
            fd,
            server,
            cut: AtomicBool::new(false),
        });
        self.open.insert(id, cell.clone());
        Registration {
            tries: self.clone(),
            cell,
        }
    }

    /// The id the next try will get: tries registered before it are the ones in flight now.
    pub fn mark(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Cut every try registered before `mark` still in flight; how many were cut.
    pub fn cut_before(&self, mark: u64) -> usize {
        let cells: Vec<Arc<TryCell>> = self
            .open
            .iter()
            .filter(|e| *e.key() <= mark)
            .map(|e| e.value().clone())
            .collect();
        cells.iter().filter(|cell| cell.cut()).count()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn a_cut_ends_a_pending_read_and_only_its_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let tries = Arc::new(Tries::default());
        let reg = tries.register(client.as_raw_fd(), addr);
        assert_eq!(tries.len(), 1);
        let mark = tries.mark();
        // A try registered after the mark is not cut.
        let other = std::net::TcpStream::connect(addr).unwrap();
        let later = tries.register(other.as_raw_fd(), addr);
        assert_eq!(tries.cut_before(mark), 1);
        assert!(reg.cell().was_cut());
        assert!(!later.cell().was_cut());
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).unwrap_or(0), 0, "the read returns");
        drop(reg);
        drop(later);
        assert!(tries.is_empty());
    }

    #[test]
    fn a_descriptor_reused_for_another_peer_is_left_alone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let first = std::net::TcpStream::connect(addr).unwrap();
        let fd = first.as_raw_fd();
        let tries = Arc::new(Tries::default());
        let reg = tries.register(fd, addr);
        drop(first);
        // Another socket, to another server, gets the same number.
        let second = std::net::TcpStream::connect(other_server.local_addr().unwrap()).unwrap();
        if second.as_raw_fd() == fd {
            assert_eq!(tries.cut_before(tries.mark()), 0);
            assert!(!reg.cell().was_cut());
        }
        assert_eq!(
            peer_of(second.as_raw_fd()),
            Some(other_server.local_addr().unwrap())
        );
    }
}
