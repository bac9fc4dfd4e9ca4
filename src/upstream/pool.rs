//! Idle keep-alive connections to upstream servers for the edge's direct forwarding
//! (`proxy::direct`): one small pool per worker thread, so no lock, and no task watching each
//! idle connection. A connection is handed out again only within its upstream's
//! `timeouts.idle`, and only after a read that must find nothing: a connection the server
//! closed (or wrote to unasked) while idle is dropped, never sent a request.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora::protocols::l4::ext::{set_tcp_keepalive, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle connections one worker thread keeps, every server together (pingora's own pool keeps
/// 128 per process by default); the oldest goes first when it is full.
const MAX_IDLE: usize = 128;

struct Idle {
    server: SocketAddr,
    stream: TcpStream,
    expires: Instant,
}

thread_local! {
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// An idle connection to `server` that is still open at `now`, the most recently used first.
pub fn take(server: SocketAddr, now: Instant) -> Option<TcpStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        while let Some(at) = idle.iter().rposition(|c| c.server == server) {
            let conn = idle.remove(at);
            if conn.expires > now && quiet(&conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    })
}

/// Keep a connection whose exchange ended cleanly (at `now`), for `idle_timeout`.
pub fn put(server: SocketAddr, stream: TcpStream, idle_timeout: Duration, now: Instant) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        // Connections are kept in the order they came back: the expired ones are at the front.
        let expired = idle.iter().take_while(|c| c.expires <= now).count();
        idle.drain(..expired);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            server,
            stream,
            expires: now + idle_timeout,
        });
    });
}

/// Idle connections this thread holds (for tests).
pub fn idle_here() -> usize {
    IDLE.with(|idle| idle.borrow().len())
}

/// Whether nothing can be read from an idle connection: no end of stream, no bytes.
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// A new connection to `server` within `timeout`, with the options pingora gives its upstream
/// connections (no Nagle delay; keep-alive probes and `TCP_USER_TIMEOUT` when configured).
pub async fn connect(
    server: SocketAddr,
    timeout: Duration,
    keepalive: Option<&TcpKeepalive>,
) -> Result<TcpStream, ConnectFailure> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(server)).await {
        Err(_) => return Err(ConnectFailure::TimedOut),
        Ok(Err(e)) => return Err(ConnectFailure::Failed(e)),
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true).map_err(ConnectFailure::Failed)?;
    if let Some(keepalive) = keepalive {
        set_tcp_keepalive(&stream, keepalive)
            .map_err(|e| ConnectFailure::Failed(std::io::Error::other(e.to_string())))?;
    }
    Ok(stream)
}

/// Why a connection to a server could not be made.
#[derive(Debug)]
pub enum ConnectFailure {
    TimedOut,
    Failed(std::io::Error),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::TimedOut => write!(f, "connect timed out"),
            ConnectFailure::Failed(e) => write!(f, "connect failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_closed_or_expired_while_idle_is_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let first = connect(server, Duration::from_secs(1), None).await.unwrap();
        let (_accepted, _) = listener.accept().await.unwrap();
        put(server, first, Duration::from_secs(60), Instant::now());
        assert_eq!(idle_here(), 1);
        let _reused = take(server, Instant::now()).expect("an open idle connection is reused");

        let second = connect(server, Duration::from_secs(1), None).await.unwrap();
        let (mut closing, _) = listener.accept().await.unwrap();
        put(server, second, Duration::from_secs(60), Instant::now());
        closing.shutdown().await.unwrap();
        drop(closing);
        // The end of stream reaches the idle socket (bounded wait, no timing asserted).
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            take(server, Instant::now()).is_none(),
            "a connection the server closed is dropped"
        );
        assert_eq!(idle_here(), 0);

        let third = connect(server, Duration::from_secs(1), None).await.unwrap();
        put(server, third, Duration::ZERO, Instant::now());
        assert!(
            take(server, Instant::now()).is_none(),
            "an expired connection is dropped"
        );
    }
}
