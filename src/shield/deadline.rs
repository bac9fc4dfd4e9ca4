//! The header deadline: the whole HTTP/1 request head must arrive within `header_timeout`.
//!
//! pingora's downstream read timeout is per read: a client sending one byte every 59 s keeps a
//! connection forever. [`HeadDeadline`] wraps a client connection and watches the bytes read:
//! from the connection's start (or the first byte of a later request on a kept-alive
//! connection) until the blank line that ends the head, reads fail once the deadline passes.
//! Before failing, it writes a short 408 answer to the client (best effort).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
};
use pingora::protocols::{Stream, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const ANSWER_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 99\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n408 header_timeout\nLa requ\xc3\xaate est arriv\xc3\xa9e trop lentement. / The request head arrived too slowly.\n";

// States of the watch, shared with the connection loop that re-arms it between requests.
/// Waiting for the first byte of the next request: no deadline yet.
const ARMED: u8 = 1;
/// Inside a request head: the deadline runs.
const IN_HEAD: u8 = 2;
/// The head is complete (or the protocol is not HTTP/1): no deadline.
const DONE: u8 = 3;

/// The connection loop's handle on the watch.
#[derive(Clone)]
pub struct HeadWatch(Arc<AtomicU8>);

impl HeadWatch {
    /// Watch the next request's head from its first byte.
    pub fn rearm(&self) {
        self.0.store(ARMED, Ordering::Release);
    }
}

/// A client connection whose request heads must arrive within a deadline.
pub struct HeadDeadline {
    inner: Stream,
    timeout: Duration,
    state: Arc<AtomicU8>,
    sleep: Pin<Box<Sleep>>,
    /// The last bytes of the head so far, to find its end across reads.
    tail: [u8; 2],
    tail_len: u8,
    /// Set once the deadline passed: reads fail from then on.
    expired: bool,
    on_expiry: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HeadDeadline {
    /// Wrap a new connection: its first request head must be complete within `timeout` from
    /// now. HTTP/2 connections are not watched (their frames are not HTTP/1 heads).
    /// `on_expiry` runs once, when a deadline passes.
    pub fn wrap(
        inner: Stream,
        timeout: Duration,
        on_expiry: Box<dyn FnOnce() + Send + Sync>,
    ) -> (Stream, HeadWatch) {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        let state = Arc::new(AtomicU8::new(if h2 { DONE } else { IN_HEAD }));
        let watch = HeadWatch(state.clone());
        let stream = HeadDeadline {
            inner,
            timeout,
            state,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            tail: [0; 2],
            tail_len: 0,
            expired: false,
            on_expiry: Some(on_expiry),
        };
        (Box::new(stream), watch)
    }

    /// Look for the end of the head (an empty line: `\n\n` or `\n\r\n`) in newly read bytes.
    fn scan(&mut self, data: &[u8]) -> bool {
        let ends =
            |w: &[u8]| w.windows(2).any(|p| p == b"\n\n") || w.windows(3).any(|p| p == b"\n\r\n");
        // Across the previous read and this one.
        let mut edge = [0u8; 4];
        let tail = &self.tail[..self.tail_len as usize];
        let head = &data[..data.len().min(2)];
        edge[..tail.len()].copy_from_slice(tail);
        edge[tail.len()..tail.len() + head.len()].copy_from_slice(head);
        if ends(&edge[..tail.len() + head.len()]) || ends(data) {
            return true;
        }
        let mut joined = [0u8; 4];
        let n = tail.len() + data.len();
        let keep = n.min(2);
        let mut all = tail.iter().chain(data.iter()).skip(n - keep);
        for slot in joined.iter_mut().take(keep) {
            *slot = all.next().copied().unwrap_or(0);
        }
        self.tail[..keep].copy_from_slice(&joined[..keep]);
        self.tail_len = keep as u8;
        false
    }

    fn expire(&mut self) {
        self.expired = true;
        if let Some(f) = self.on_expiry.take() {
            f();
        }
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not complete within header_timeout",
            )));
        }
        let state = this.state.load(Ordering::Acquire);
        if state == IN_HEAD && this.sleep.as_mut().poll(cx).is_ready() {
            // Tell the client, then fail the read: the connection closes.
            let _ = Pin::new(&mut this.inner).poll_write(cx, ANSWER_408);
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            this.expire();
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not complete within header_timeout",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = &buf.filled()[before..];
            if !new.is_empty() && (state == ARMED || state == IN_HEAD) {
                if state == ARMED {
                    // The first byte of a new request: its head has `timeout` from now.
                    this.sleep.as_mut().reset(Instant::now() + this.timeout);
                    this.tail_len = 0;
                    this.state.store(IN_HEAD, Ordering::Release);
                }
                if this.scan(new) {
                    this.state.store(DONE, Ordering::Release);
                }
            }
        }
        result
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn wrap(io: tokio::io::DuplexStream, timeout: Duration) -> (Stream, HeadWatch) {
        HeadDeadline::wrap(Box::new(io), timeout, Box::new(|| {}))
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_cut_at_the_deadline() {
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut server, _watch) = wrap(server, Duration::from_secs(10));
        let mut buf = [0u8; 64];
        for _ in 0..9 {
            client.write_all(b"X").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 1);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let mut answer = vec![0u8; 512];
        let n = client.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 408"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_head_stops_the_clock_until_rearmed() {
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut server, watch) = wrap(server, Duration::from_secs(10));
        let mut buf = [0u8; 256];
        // The end of the head split across reads.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r")
            .await
            .unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        client.write_all(b"\nbody").await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        // The body may take its time: the head deadline no longer applies.
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"more").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 4);
        // Next request on the connection: idle time before its first byte is not counted.
        watch.rearm();
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(server.read(&mut buf).await.is_err());
    }

    #[test]
    fn the_408_answer_has_the_right_length() {
        let text = std::str::from_utf8(ANSWER_408).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
