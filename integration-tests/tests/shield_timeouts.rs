//! No way around the timeouts (SPEC section 3, docs/contract.md "Timeouts"): the clients an
//! attacker writes against the connection deadlines, over raw sockets. Each would keep its
//! connection (or its memory) far longer without the guard: a leading blank line before a
//! dribbled head, a head that grows without end, a TLS port that never gets a ClientHello,
//! a flood of such sockets from one address, a keep-alive connection left idle. And the other
//! side: a quiet WebSocket is not a slow body, and a drain lets a head under way finish.
//!
//! Deadlines are set short (1-3 s) and checked against a bound several times larger, far
//! below what the connection would get otherwise (pingora: 60 s per read, 60 s per TLS
//! handshake, 1 MiB of head): these are functional bounds, not timings.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))?
}

/// Read until the server closes the connection (EOF or reset) or `patience` passes; the
/// bytes received and when the close came.
async fn until_closed(s: &mut TcpStream, patience: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < patience {
        let left = patience.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => return (data, Some(started.elapsed())),
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
    (data, None)
}

/// Send `first`, then one byte every `every` until the server closes or `patience` passes.
async fn dribble(
    to: SocketAddr,
    first: &[u8],
    every: Duration,
    patience: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let mut s = TcpStream::connect(to).await.unwrap();
    let started = Instant::now();
    s.write_all(first).await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let dribbled = b"GET /dribble HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut next = 0;
    while started.elapsed() < patience {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (data, Some(started.elapsed())),
                Ok(n) => data.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                let byte = dribbled[next % dribbled.len()];
                next += 1;
                if s.write_all(&[byte]).await.is_err() {
                    return (data, Some(started.elapsed()));
                }
            }
        }
    }
    (data, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leading_blank_line_does_not_disable_the_head_deadline() {
    let s = Stack::start(1, 0, |y| y.server.push("header_timeout: 2s".into()));
    for (what, first) in [
        ("CRLF CRLF then a dribble", &b"\r\n\r\n"[..]),
        ("LF then a dribble", b"\n"),
        ("a plain dribble", b""),
    ] {
        let (answer, closed) = dribble(
            s.ports.http,
            first,
            Duration::from_millis(400),
            Duration::from_secs(12),
        )
        .await;
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 12 s"));
        assert!(
            closed < Duration::from_secs(8),
            "{what}: closed only after {closed:?} (header_timeout: 2s)"
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text:?}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "{what}: one answer: {text:?}"
        );
    }
    assert_eq!(s.dc_a[0].stats().path("/dribble"), 0);
    let metrics = s.rempart.admin("/metrics").1;
    assert!(
        metrics.contains("rempart_connections_closed_total{reason=\"header_timeout\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_growing_past_max_header_bytes_is_refused_while_it_grows() {
    let s = Stack::start(1, 0, |y| y.server.push("max_header_bytes: 8KiB".into()));
    let mut c = TcpStream::connect(s.ports.http).await.unwrap();
    c.write_all(b"GET /big-head HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // 1 KiB header lines, 20 ms apart, until an answer comes or 256 KiB went out: without
    // the guard pingora keeps reading up to 1 MiB before it looks at the size.
    let line = format!("X-Grow: {}\r\n", "g".repeat(1014));
    let mut sent = 0usize;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while sent < 256 * 1024 {
        if c.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        sent += line.len();
        match tokio::time::timeout(Duration::from_millis(20), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let (rest, _) = until_closed(&mut c, Duration::from_secs(5)).await;
    answer.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "after {sent} bytes of head: {text:?}"
    );
    assert!(
        sent <= 64 * 1024,
        "the 431 came only after {sent} bytes of head"
    );
    assert_eq!(s.dc_a[0].stats().path("/big-head"), 0);
    let r = http_client_no_reuse()
        .get(s.url("/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_without_client_hello_is_closed_at_tls_handshake_timeout() {
    let s = Stack::start(1, 0, |y| y.server.push("tls_handshake_timeout: 1s".into()));
    // Nothing at all, and half a ClientHello (a record header and a few bytes).
    for (what, bytes) in [
        ("no ClientHello", &b""[..]),
        (
            "half a ClientHello",
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00][..],
        ),
    ] {
        let mut c = TcpStream::connect(s.ports.https).await.unwrap();
        c.write_all(bytes).await.unwrap();
        let (_, closed) = until_closed(&mut c, Duration::from_secs(15)).await;
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 15 s"));
        assert!(
            closed < Duration::from_secs(6),
            "{what}: closed after {closed:?}"
        );
    }
    // Both counted (and nothing else on this port could time out its handshake but them).
    let series = "rempart_connections_closed_total{reason=\"tls_handshake_timeout\"}";
    let mut counted = 0.0;
    for _ in 0..50 {
        let metrics = s.rempart.admin("/metrics").1;
        counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).map(str::trim))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if counted >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 2.0, "{}", s.rempart.admin("/metrics").1);
    // Counted, not logged line by line.
    assert!(
        !s.rempart.stderr().contains("handshake"),
        "{}",
        s.rempart.stderr()
    );
    // A real client is served.
    let c = tls_client(&[("localhost", s.ports.https)]);
    let r = c.get(s.https_url("localhost", "/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_in_their_tls_handshake_count_toward_max_connections_per_ip() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("max_connections_per_ip: 50".into());
        y.server.push("tls_handshake_timeout: 30s".into());
    });
    // 300 sockets from one address, none sending a ClientHello.
    let mut held = Vec::new();
    for _ in 0..300 {
        match connect_from("127.0.0.7", s.ports.https).await {
            Ok(c) => held.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    // Which of them the server closed: those beyond the cap, at once.
    let mut closed = 0;
    let mut open = 0;
    for c in held.iter_mut() {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => panic!("the server sent bytes before a ClientHello"),
            Err(_) => open += 1,
        }
    }
    assert_eq!(open, 50, "{open} sockets held open, {closed} refused");
    assert_eq!(closed, 250);
    // Another client is served meanwhile, over TLS.
    let c = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(dev_ca())
        .resolve("localhost", s.ports.https)
        .local_address("127.0.0.8".parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = c
        .get(s.https_url("localhost", "/served"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = s.rempart.admin("/metrics").1;
    assert!(
        metrics
            .contains("rempart_connections_refused_total{reason=\"max_connections_per_ip\"} 250"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_keepalive_timeout() {
    let s = Stack::start(1, 0, |y| y.server.push("keepalive_timeout: 1s".into()));
    let mut c = TcpStream::connect(s.ports.http).await.unwrap();
    c.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !has_complete_response(&answer) {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let (rest, closed) = until_closed(&mut c, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "nothing more is sent: {rest:?}");
    let closed = closed.expect("the idle connection is closed");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocket_is_not_a_slow_body() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("body_min_rate: 1KiB/s".into());
        y.server.push("max_body_bytes: 4KiB".into());
    });
    let mut ws = ws_connect(s.ports.http, "/ws").await.unwrap();
    // Quiet past the body rules' 5 s grace (and pingora's per-read timeouts are off).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let reply = ws_roundtrip(&mut ws, WsMessage::text("still there?"))
        .await
        .unwrap();
    assert_eq!(reply, WsMessage::text("still there?"));
    // More than max_body_bytes of frames.
    let big = "m".repeat(2048);
    for _ in 0..4 {
        let reply = ws_roundtrip(&mut ws, WsMessage::text(big.clone()))
            .await
            .unwrap();
        assert_eq!(reply, WsMessage::text(big.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_idle_past_upgrade_idle_timeout_is_closed() {
    let s = Stack::start(1, 0, |y| y.server.push("upgrade_idle_timeout: 2s".into()));
    let mut ws = ws_connect(s.ports.http, "/ws").await.unwrap();
    let reply = ws_roundtrip(&mut ws, WsMessage::text("hello"))
        .await
        .unwrap();
    assert_eq!(reply, WsMessage::text("hello"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        ws_roundtrip(&mut ws, WsMessage::text("anyone?"))
            .await
            .is_err(),
        "the idle WebSocket is still open"
    );
    let metrics = s.rempart.admin("/metrics").1;
    assert!(
        metrics.contains("rempart_connections_closed_total{reason=\"upgrade_idle_timeout\"} 1"),
        "{metrics}"
    );
}

/// The client talks, the server stays quiet: unsolicited Pong frames (RFC 6455 section 5.5.3:
/// no answer is expected, and the origin's echo sends none), `times` of them `every` apart.
async fn talk_to_a_quiet_server(ws: &mut Ws, every: Duration, times: u32) {
    use futures_util::SinkExt;
    for i in 0..times {
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            ws.send(WsMessage::Pong(vec![b'p'].into())),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("pong {i}: {e}"),
            Err(_) => panic!("pong {i} not sent within 5 s"),
        }
        tokio::time::sleep(every).await;
    }
}

/// `upgrade_idle_timeout` is idleness in both directions: a chat whose server has nothing to
/// say while its client keeps talking stays open past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_whose_server_stays_quiet_while_the_client_talks_stays_open() {
    let s = Stack::start(1, 0, |y| y.server.push("upgrade_idle_timeout: 2s".into()));
    let mut ws = ws_connect(s.ports.http, "/ws").await.unwrap();
    // 6 s of client frames and no server frame: three times upgrade_idle_timeout.
    talk_to_a_quiet_server(&mut ws, Duration::from_millis(500), 12).await;
    let reply = ws_roundtrip(&mut ws, WsMessage::text("still there?"))
        .await
        .unwrap();
    assert_eq!(reply, WsMessage::text("still there?"));
    let metrics = s.rempart.admin("/metrics").1;
    assert!(
        !metrics.contains("rempart_connections_closed_total{reason=\"upgrade_idle_timeout\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_a_head_under_way_finish_with_connection_close() {
    let s = Stack::start(1, 0, |y| y.grace_period = "10s".into());
    let mut c = TcpStream::connect(s.ports.http).await.unwrap();
    c.write_all(b"GET /draining HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.rempart.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.write_all(b"X-Late: 1\r\n\r\n").await.unwrap();
    let (answer, closed) = until_closed(&mut c, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text:?}");
    assert!(text.contains("connection: close"), "{text:?}");
    assert!(
        closed.is_some(),
        "the connection is closed after its answer"
    );
    assert_eq!(s.dc_a[0].stats().path("/draining"), 1);
}
