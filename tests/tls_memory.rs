//! What an idle TLS connection keeps in memory: no buffer of received TLS bytes once its
//! socket is drained (rustls patch 9), no room for its handshake after it (pingora-core patch
//! 10). A separate test binary, because it installs a global allocator that counts the bytes
//! each thread holds; the counter is per thread so the client's thread does not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::listeners::tls::TlsSettings;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::TlsStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

struct CountingAllocator;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn record(bytes: isize) {
    // `try_with` because the allocator may run while the thread is torn down.
    let _ = HELD.try_with(|held| held.set(held.get() + bytes));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn held() -> isize {
    HELD.with(Cell::get)
}

fn cert(name: &str) -> String {
    format!("{}/certs/dev/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A TLS client on its own thread, blocking: handshake, one message, then it waits (idle)
/// until the server's answer, which ends it.
fn client(port: u16) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(cert("ca.crt")).expect("the dev CA");
        for ca in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(ca.expect("a CA certificate"))
                .expect("the CA added");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().expect("a server name");
        let connection =
            rustls::ClientConnection::new(Arc::new(config), name).expect("a client connection");
        let socket = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connected");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let mut tls = rustls::StreamOwned::new(connection, socket);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("request written");
        let mut answer = vec![0u8; 2];
        tls.read_exact(&mut answer).expect("answer read");
        answer
    })
}

/// One poll of a read; `None` when it is pending.
fn poll_read_once(stream: &mut TlsStream<L4Stream>) -> Option<std::io::Result<usize>> {
    let mut room = [0u8; 64];
    let mut buf = ReadBuf::new(&mut room);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(stream).poll_read(&mut cx, &mut buf) {
        Poll::Ready(result) => Some(result.map(|()| buf.filled().len())),
        Poll::Pending => None,
    }
}

#[test]
fn a_drained_tls_connection_frees_its_buffer_of_received_bytes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let acceptor = TlsSettings::intermediate(&cert("localhost.crt"), &cert("localhost.key"))
            .expect("TLS settings")
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let port = listener.local_addr().expect("an address").port();
        let client = client(port);
        let (socket, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("accepted in time")
            .expect("accepted");
        let mut tls = tokio::time::timeout(
            Duration::from_secs(10),
            acceptor.tls_handshake(L4Stream::from(socket)),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");

        // The whole request, read.
        let mut request = Vec::new();
        let mut room = [0u8; 256];
        while !request.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut room))
                .await
                .expect("request in time")
                .expect("request read");
            assert!(n > 0, "the client closed early");
            request.extend_from_slice(&room[..n]);
        }

        // Nothing more comes: the read finds the socket drained.
        let before = held();
        let pending = poll_read_once(&mut tls);
        let freed = before - held();
        assert!(
            pending.is_none(),
            "the client sent nothing more: {pending:?}"
        );
        assert!(
            freed >= 4096,
            "a drained read freed {freed} bytes; rustls's 4 KiB buffer of received bytes \
             stays for the connection's idle life"
        );

        // The connection still works: an answer goes out, and the next read allocates again.
        tls.write_all(b"ok").await.expect("answer written");
        tls.flush().await.expect("answer flushed");
        let answer = tokio::task::spawn_blocking(move || client.join())
            .await
            .expect("joined")
            .expect("the client thread");
        assert_eq!(answer, b"ok");
    });
}

#[test]
fn a_tls_stream_keeps_no_room_for_its_handshake() {
    // Before pingora-core patch 10: 4,704 bytes, the two handshake futures inline.
    let size = std::mem::size_of::<TlsStream<L4Stream>>();
    let stream = std::mem::size_of::<pingora::protocols::l4::stream::Stream>()
        + std::mem::size_of::<rustls::ServerConnection>();
    assert!(
        size < stream + 512,
        "a TLS stream takes {size} bytes, its socket stream and rustls connection {stream}"
    );
}
