//! Idle keep-alive connections parked without their task (docs/architecture.md, "Idle
//! connections"): a plain HTTP/1 connection quiet between two requests leaves its task for its
//! worker's table of parked sockets (`rempart_connections_parked`). Parked, it serves its next
//! requests whole (pipelined, a head split across reads, a body), keeps its place in the
//! connection caps and its keep-alive deadline, frees its place when its client leaves, gets a
//! 408 when its next head dribbles, and is closed at shutdown.
//!
//! Waits are bounded polls of the metrics (a few seconds at most), not timings.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PARKED: &str = "rempart_connections_parked ";
const ACTIVE: &str = "rempart_connections_active ";

fn metric(s: &Stack, line_start: &str) -> Option<f64> {
    s.rempart.metric(line_start)
}

/// Wait (at most 10 s) until `series` reads `n`; what it read last otherwise.
async fn wait_metric(s: &Stack, series: &str, n: f64) -> Result<(), Option<f64>> {
    let mut last = None;
    for _ in 0..100 {
        last = metric(s, series);
        if last == Some(n) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Read until `data` holds `n` complete responses, or the connection ends (bounded); the
/// responses' bytes.
async fn read_responses(c: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut responses = Vec::new();
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    for _ in 0..1000 {
        while let Some(len) = complete_response_len(&data) {
            responses.push(data.drain(..len).collect());
        }
        if responses.len() >= n {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => data.extend_from_slice(&buf[..k]),
        }
    }
    responses
}

/// The length of the first complete response in `data` (Content-Length framed).
fn complete_response_len(data: &[u8]) -> Option<usize> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    (data.len() >= end + length).then_some(end + length)
}

fn status(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

async fn get(c: &mut TcpStream, path: &str) -> Vec<u8> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: ent.test\r\n\r\n");
    c.write_all(request.as_bytes()).await.unwrap();
    read_responses(c, 1).await.pop().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_parked_and_serve_their_next_requests_whole() {
    let s = Stack::start(1, 0, |_| {});
    const N: usize = 24;
    let mut conns = Vec::new();
    for i in 0..N {
        let mut c = TcpStream::connect(s.ports.http).await.unwrap();
        let first = get(&mut c, &format!("/first/{i}")).await;
        assert!(status(&first).contains(" 200 "), "{}", status(&first));
        conns.push(c);
    }
    if let Err(last) = wait_metric(&s, PARKED, N as f64).await {
        panic!(
            "{N} idle keep-alive connections must be parked, {PARKED}reads {last:?}\n{}",
            s.rempart.stderr()
        );
    }
    assert_eq!(
        metric(&s, ACTIVE),
        Some(N as f64),
        "parked connections stay open"
    );

    for (i, c) in conns.iter_mut().enumerate() {
        match i % 4 {
            // Two requests in one write: both answered, in order.
            0 => {
                let two = format!(
                    "GET /pipelined/{i}/a HTTP/1.1\r\nHost: ent.test\r\n\r\nGET /pipelined/{i}/b HTTP/1.1\r\nHost: ent.test\r\n\r\n"
                );
                c.write_all(two.as_bytes()).await.unwrap();
                let answers = read_responses(c, 2).await;
                assert_eq!(answers.len(), 2, "both pipelined requests are answered");
                let a = String::from_utf8_lossy(&answers[0]);
                let b = String::from_utf8_lossy(&answers[1]);
                assert!(a.contains(&format!("/pipelined/{i}/a")), "{a}");
                assert!(b.contains(&format!("/pipelined/{i}/b")), "{b}");
            }
            // A head in two writes: the first wakes the connection, which waits for the rest.
            1 => {
                c.write_all(b"GET /split/").await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.write_all(format!("{i} HTTP/1.1\r\nHost: ent.test\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let answer = read_responses(c, 1).await.pop().unwrap_or_default();
                let text = String::from_utf8_lossy(&answer);
                assert!(status(&answer).contains(" 200 "), "{text}");
                assert!(text.contains(&format!("/split/{i}")), "{text}");
            }
            // A request with a body.
            2 => {
                let body = vec![b'x'; 20_000];
                let head = format!(
                    "POST /body/{i} HTTP/1.1\r\nHost: ent.test\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                c.write_all(head.as_bytes()).await.unwrap();
                c.write_all(&body).await.unwrap();
                let answer = read_responses(c, 1).await.pop().unwrap_or_default();
                let text = String::from_utf8_lossy(&answer);
                assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
                assert!(text.contains(&format!("/body/{i}")), "{text}");
            }
            _ => {
                let answer = get(c, &format!("/again/{i}")).await;
                assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
                assert!(String::from_utf8_lossy(&answer).contains(&format!("/again/{i}")));
            }
        }
    }
    // Idle again, parked again.
    if let Err(last) = wait_metric(&s, PARKED, N as f64).await {
        panic!("served again, the connections are parked again: {PARKED}reads {last:?}");
    }
    // A third round on every connection.
    for (i, c) in conns.iter_mut().enumerate() {
        let answer = get(c, &format!("/third/{i}")).await;
        assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
    }
    drop(conns);
    if let Err(last) = wait_metric(&s, ACTIVE, 0.0).await {
        panic!("closed by their clients, the connections are gone: {ACTIVE}reads {last:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_keeps_its_place_in_the_caps_and_frees_it_when_its_client_leaves() {
    let s = Stack::start(1, 0, |y| y.server.push("max_connections_per_ip: 2".into()));
    let to = s.ports.http;
    let mut a = connect_from("127.0.0.7", to).await;
    let mut b = connect_from("127.0.0.7", to).await;
    for c in [&mut a, &mut b] {
        let answer = get(c, "/held").await;
        assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
    }
    if let Err(last) = wait_metric(&s, PARKED, 2.0).await {
        panic!("both idle connections are parked: {PARKED}reads {last:?}");
    }
    // A third from the same address is over the cap, parked or not.
    let mut third = connect_from("127.0.0.7", to).await;
    let _ = third
        .write_all(b"GET /third HTTP/1.1\r\nHost: ent.test\r\n\r\n")
        .await;
    let (closed, answer) = closed_within(&mut third, Duration::from_secs(5)).await;
    assert!(
        closed && answer.is_empty(),
        "a third connection from the address is closed at accept: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // One client leaves: its parked connection is closed, and its place is free.
    drop(a);
    if let Err(last) = wait_metric(&s, PARKED, 1.0).await {
        panic!("the connection its client closed leaves the parked ones: {PARKED}reads {last:?}");
    }
    if let Err(last) = wait_metric(&s, ACTIVE, 1.0).await {
        panic!("and is no longer open: {ACTIVE}reads {last:?}");
    }
    let mut c = connect_from("127.0.0.7", to).await;
    let answer = get(&mut c, "/in-its-place").await;
    assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
    // The one still parked serves on.
    let answer = get(&mut b, "/still-here").await;
    assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_ends_at_its_keepalive_timeout_and_its_next_head_has_its_deadline() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("keepalive_timeout: 2s".into());
        y.server.push("header_timeout: 1s".into());
    });
    // Left idle: parked, then closed at its keep-alive deadline, without a word.
    let mut idle = TcpStream::connect(s.ports.http).await.unwrap();
    let answer = get(&mut idle, "/one").await;
    assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
    if let Err(last) = wait_metric(&s, PARKED, 1.0).await {
        panic!("the idle connection is parked: {PARKED}reads {last:?}");
    }
    let (closed, rest) = closed_within(&mut idle, Duration::from_secs(10)).await;
    assert!(closed, "a parked connection is closed at keepalive_timeout");
    assert!(
        rest.is_empty(),
        "nothing is sent: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let closes = metric(
        &s,
        "rempart_connections_closed_total{reason=\"keepalive_timeout\"} ",
    );
    assert_eq!(closes, Some(1.0), "counted as the end of a keep-alive wait");
    assert_eq!(metric(&s, PARKED), Some(0.0));

    // Parked, then a head dribbled a byte at a time: 408 at header_timeout from its first byte.
    let mut slow = TcpStream::connect(s.ports.http).await.unwrap();
    let answer = get(&mut slow, "/two").await;
    assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
    if let Err(last) = wait_metric(&s, PARKED, 1.0).await {
        panic!("the idle connection is parked: {PARKED}reads {last:?}");
    }
    let dribbled = b"GET /dribble HTTP/1.1\r\nHost: ent.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    for byte in dribbled {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
    if !closed {
        let (c, rest) = closed_within(&mut slow, Duration::from_secs(5)).await;
        closed = c;
        data.extend_from_slice(&rest);
    }
    let text = String::from_utf8_lossy(&data);
    assert!(
        closed && text.starts_with("HTTP/1.1 408"),
        "a head dribbled after a park gets 408 and a close (header_timeout 1s, {} bytes over ~{} s): {text:?}",
        dribbled.len(),
        dribbled.len() / 5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_are_closed_at_shutdown() {
    let mut s = Stack::start(1, 0, |y| y.grace_period = "3s".into());
    let mut conns = Vec::new();
    for i in 0..5 {
        let mut c = TcpStream::connect(s.ports.http).await.unwrap();
        let answer = get(&mut c, &format!("/before/{i}")).await;
        assert!(status(&answer).contains(" 200 "), "{}", status(&answer));
        conns.push(c);
    }
    if let Err(last) = wait_metric(&s, PARKED, 5.0).await {
        panic!("the idle connections are parked: {PARKED}reads {last:?}");
    }
    s.rempart.signal(libc::SIGTERM);
    for c in conns.iter_mut() {
        let (closed, rest) = closed_within(c, Duration::from_secs(10)).await;
        assert!(closed, "a parked connection is closed at shutdown");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    let exit = s.rempart.wait_exit(Duration::from_secs(10));
    assert_eq!(
        exit.and_then(|e| e.code()),
        Some(0),
        "rempart exits 0 after SIGTERM\n{}",
        s.rempart.stderr()
    );
}
