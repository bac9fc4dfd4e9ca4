//! Connection-level defence (SPEC sections 2 and 3): request heads dribbled byte by byte are cut
//! at `header_timeout` while normal clients are served, and the connection caps refuse
//! connections beyond `max_connections_per_ip` and `max_connections`.
//!
//! Raw sockets from distinct loopback sources; every loop is bounded in count and time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Raise the open-files limit to its hard maximum (a thousand sockets plus the harness).
fn raise_nofile() {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))?
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .http1_only()
        .pool_max_idle_per_host(0)
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// What happened to one dribbling connection.
#[derive(Debug)]
enum Dribble {
    /// Closed by the server, with what it sent.
    Closed {
        after: Duration,
        answer: Vec<u8>,
    },
    /// Still open at the end of the test's patience.
    StillOpen,
    ConnectFailed(String),
}

/// Open a connection, send a request head one header line every `every`, never ending it.
async fn dribble(source: String, to: SocketAddr, every: Duration, patience: Duration) -> Dribble {
    // From before the connection exists: the server's deadline cannot start earlier, however
    // late this task runs once connected (a thousand of them on a loaded machine).
    let started = Instant::now();
    let mut s = match connect_from(&source, to).await {
        Ok(s) => s,
        Err(e) => return Dribble::ConnectFailed(e.to_string()),
    };
    let _ = s.write_all(b"GET /slow-head HTTP/1.1\r\nHost: x\r\n").await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    while started.elapsed() < patience {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Dribble::Closed { after: started.elapsed(), answer },
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if s.write_all(b"X-Dribble: a\r\n").await.is_err() {
                    return Dribble::Closed { after: started.elapsed(), answer };
                }
            }
        }
    }
    Dribble::StillOpen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_dribbling_heads_are_cut_at_header_timeout_while_others_are_served() {
    raise_nofile();
    let s = Stack::start(1, 0, |y| {
        y.server.push("header_timeout: 2s".into());
        y.server.push("max_connections_per_ip: 100000".into());
    });
    const SLOW: usize = 1000;
    let patience = Duration::from_secs(20);
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        // Spread over 10 source addresses.
        let source = format!("127.0.2.{}", 1 + i % 10);
        slow.push(tokio::spawn(dribble(
            source,
            s.ports.http,
            Duration::from_millis(500),
            patience,
        )));
    }
    // Meanwhile, normal clients.
    let c = client_from("127.0.3.1");
    let mut normal = Vec::new();
    for i in 0..40 {
        let r = c.get(s.url(&format!("/normal/{i}"))).send().await;
        normal.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        normal.iter().all(|r| matches!(r, Ok(200))),
        "normal clients saw errors during the slow-header attack: {normal:?}"
    );
    let mut outcomes = Vec::with_capacity(SLOW);
    for h in slow {
        outcomes.push(h.await.unwrap());
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Dribble::ConnectFailed(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "connections failed to open: {:?}",
        &failed[..failed.len().min(3)]
    );
    let open = outcomes
        .iter()
        .filter(|o| matches!(o, Dribble::StillOpen))
        .count();
    assert_eq!(
        open, 0,
        "{open} of {SLOW} dribbling connections still open after {patience:?}"
    );
    // Cut by the deadline, not by something earlier; told why.
    let mut told = 0;
    for o in &outcomes {
        if let Dribble::Closed { after, answer } = o {
            assert!(
                *after >= Duration::from_millis(1900),
                "a dribbling connection was closed after {after:?}, before header_timeout (2s)"
            );
            if answer.starts_with(b"HTTP/1.1 408") {
                told += 1;
            }
        }
    }
    assert!(told > SLOW / 2, "only {told} of {SLOW} got the 408 answer");
    assert_eq!(s.dc_a[0].stats().path("/slow-head"), 0);
    let generated = {
        let (_, text) = s.rempart.admin("/metrics");
        text.lines()
            .find(|l| l.starts_with("rempart_responses_generated_total{reason=\"header_timeout\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(generated, Some(SLOW as u64));
}

/// Read until the server closes (or 3 s pass): whether it closed, and what it sent.
async fn read_to_close(s: &mut TcpStream) -> (bool, Vec<u8>) {
    closed_within(s, Duration::from_secs(3)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_beyond_the_limits() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("max_connections_per_ip: 5".into());
        y.server.push("max_connections: 12".into());
        y.server.push("header_timeout: 60s".into());
    });
    let to = s.ports.http;
    // Five idle connections from one address: all accepted.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from("127.0.4.1", to).await.unwrap());
    }
    // Give the proxy a moment to count them (bounded poll on what it reports).
    poll_until_async(Duration::from_secs(5), || async {
        let v = s.rempart.admin_json("/status");
        (v["connections_active"].as_i64() >= Some(5)).then_some(())
    })
    .await
    .expect("the five connections are counted");
    // The sixth from that address is closed without an answer.
    let mut sixth = connect_from("127.0.4.1", to).await.unwrap();
    let _ = sixth
        .write_all(b"GET /sixth HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (closed, data) = read_to_close(&mut sixth).await;
    assert!(
        closed && data.is_empty(),
        "the sixth connection from one address was served: {:?}",
        String::from_utf8_lossy(&data)
    );
    // Another address is served.
    let other = client_from("127.0.4.2");
    assert_eq!(
        other.get(s.url("/other")).send().await.unwrap().status(),
        200
    );
    drop(other);
    poll_until_async(Duration::from_secs(5), || async {
        let v = s.rempart.admin_json("/status");
        (v["connections_active"].as_i64() == Some(5)).then_some(())
    })
    .await
    .expect("only the five held connections remain");

    // The total cap: 5 + 5 + 2 from three addresses reach 12.
    for _ in 0..5 {
        held.push(connect_from("127.0.4.3", to).await.unwrap());
    }
    for _ in 0..2 {
        held.push(connect_from("127.0.4.4", to).await.unwrap());
    }
    poll_until_async(Duration::from_secs(5), || async {
        let v = s.rempart.admin_json("/status");
        (v["connections_active"].as_i64() >= Some(12)).then_some(())
    })
    .await
    .expect("twelve connections are counted");
    let mut over = connect_from("127.0.4.5", to).await.unwrap();
    let _ = over
        .write_all(b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (closed, data) = read_to_close(&mut over).await;
    assert!(
        closed && data.is_empty(),
        "a connection beyond max_connections was served"
    );
    assert_eq!(s.dc_a[0].stats().path("/sixth"), 0);
    assert_eq!(s.dc_a[0].stats().path("/over"), 0);

    // Closing them frees the room.
    drop(held);
    let served = poll_until_async(Duration::from_secs(10), || async {
        let c = client_from("127.0.4.1");
        match c.get(s.url("/again")).send().await {
            Ok(r) if r.status() == 200 => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(served.is_some(), "connections are released when closed");
    let (_, metrics) = s.rempart.admin("/metrics");
    assert!(
        metrics.contains("rempart_connections_refused_total{reason=\"max_connections_per_ip\"}")
    );
    assert!(metrics.contains("rempart_connections_refused_total{reason=\"max_connections\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_addresses_are_refused_at_connection_time_even_on_tls() {
    let s = Stack::start(1, 0, |y| {
        y.extra = "shield:\n  deny: [127.0.5.0/24]\n".into();
    });
    for to in [s.ports.http, s.ports.https] {
        let mut c = connect_from("127.0.5.9", to).await.unwrap();
        // A TLS ClientHello start or an HTTP request: nothing comes back.
        let _ = c
            .write_all(b"GET /denied HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let (closed, data) = read_to_close(&mut c).await;
        assert!(
            closed && data.is_empty(),
            "a denied address was answered on {to}"
        );
    }
    let ok = client_from("127.0.6.1");
    assert_eq!(ok.get(s.url("/fine")).send().await.unwrap().status(), 200);
    assert_eq!(s.dc_a[0].stats().path("/denied"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_deadline_holds_over_tls_too() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("header_timeout: 1s".into());
    });
    let mut tls = tls_connect(s.ports.https, "localhost", &["http/1.1"])
        .await
        .expect("TLS connection");
    tls.write_all(b"GET /tls-slow HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                if tls.write_all(b"X-Dribble: a\r\n").await.is_err() {
                    closed = true;
                    break;
                }
            }
        }
    }
    assert!(
        closed,
        "a dribbling TLS connection was still open after 10 s"
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(s.dc_a[0].stats().path("/tls-slow"), 0);
    // A normal TLS request is served.
    let c = tls_client(&[("localhost", s.ports.https)]);
    let r = c
        .get(s.https_url("localhost", "/fine"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
