//! The guard on paused time, over in-memory streams.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

#[derive(Default)]
struct Report {
    closed: Mutex<Vec<CloseReason>>,
    answered: AtomicU64,
    heads: AtomicI64,
}

impl GuardReport for Report {
    fn closed(&self, reason: CloseReason) {
        self.closed.lock().unwrap().push(reason);
    }
    fn answered(&self, _reason: CloseReason) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }
    fn heads_in_progress(&self) -> &AtomicI64 {
        &self.heads
    }
}

impl Report {
    fn reasons(&self) -> Vec<CloseReason> {
        self.closed.lock().unwrap().clone()
    }
}

fn settings() -> GuardSettings {
    GuardSettings {
        header_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(60),
        upgrade_idle_timeout: Duration::from_secs(600),
        max_header_bytes: 1024,
    }
}

fn guard(h2: bool) -> (DuplexStream, Guard, Arc<Control>, Arc<Report>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let report = Arc::new(Report::default());
    let (g, control) = Guard::with_protocol(Box::new(server), h2, settings(), report.clone());
    (client, g, control, report)
}

fn not_draining() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}

async fn read_all_available(client: &mut DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(10), client.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_whole_head_is_handed_over_at_once() {
    let (mut client, mut g, _, report) = guard(false);
    client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let nd = not_draining();
    {
        let wait = g.wait_request(true, &nd);
        tokio::pin!(wait);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut wait)
                .await
                .is_err(),
            "half a head is not a request"
        );
        assert_eq!(
            report.heads.load(Ordering::Relaxed),
            1,
            "a head in progress"
        );
        client.write_all(b"st: x\r\n\r\nbody").await.unwrap();
        assert!(wait.await);
    }
    let mut buf = [0u8; 256];
    let n = g.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody");
    assert_eq!(report.heads.load(Ordering::Relaxed), 0);
    // The body may take its time: the head deadline no longer applies.
    tokio::time::advance(Duration::from_secs(30)).await;
    client.write_all(b"more").await.unwrap();
    assert_eq!(g.read(&mut buf).await.unwrap(), 4);
    assert!(report.reasons().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_cut_with_408_and_pingora_sees_nothing() {
    let (mut client, mut g, _, report) = guard(false);
    let dribble = async {
        for _ in 0..30 {
            if client.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        client
    };
    let nd = not_draining();
    let (ready, mut client) = tokio::join!(g.wait_request(true, &nd), dribble);
    assert!(!ready);
    assert_eq!(report.reasons(), vec![CloseReason::HeaderTimeout]);
    let answer = read_all_available(&mut client).await;
    assert!(answer.starts_with(b"HTTP/1.1 408"), "{answer:?}");
    // pingora's read: an end of stream, not an error (it closes quietly).
    let mut buf = [0u8; 16];
    assert_eq!(g.read(&mut buf).await.unwrap(), 0);
    assert!(g.write(b"HTTP/1.1 400").await.is_err(), "no second answer");
    assert_eq!(report.heads.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn leading_empty_lines_do_not_end_the_head() {
    let (mut client, mut g, _, report) = guard(false);
    let attack = async {
        client.write_all(b"\r\n\r\n").await.unwrap();
        for _ in 0..20 {
            if client.write_all(b"G").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        client
    };
    let started = Instant::now();
    let nd = not_draining();
    let wait = async {
        let ready = g.wait_request(true, &nd).await;
        (ready, started.elapsed())
    };
    let ((ready, took), _client) = tokio::join!(wait, attack);
    assert!(!ready);
    assert!(took <= Duration::from_secs(10), "{took:?}");
    assert_eq!(report.reasons(), vec![CloseReason::HeaderTimeout]);
}

#[tokio::test(start_paused = true)]
async fn a_head_over_max_header_bytes_gets_431_before_pingora_sees_it() {
    let (mut client, mut g, _, report) = guard(false);
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let big = format!("X-Big: {}\r\n", "a".repeat(2000));
    client.write_all(big.as_bytes()).await.unwrap();
    assert!(!g.wait_request(true, &not_draining()).await);
    assert_eq!(report.reasons(), vec![CloseReason::HeadersTooLarge]);
    let answer = read_all_available(&mut client).await;
    assert!(answer.starts_with(b"HTTP/1.1 431"), "{answer:?}");
}

#[tokio::test(start_paused = true)]
async fn an_empty_connection_is_closed_without_a_word() {
    let (mut client, mut g, _, report) = guard(false);
    assert!(!g.wait_request(true, &not_draining()).await);
    assert_eq!(report.reasons(), vec![CloseReason::HeaderTimeout]);
    assert!(read_all_available(&mut client).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn keep_alive_waits_end_at_keepalive_timeout() {
    let (mut client, mut g, _, report) = guard(false);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(g.wait_request(true, &not_draining()).await);
    let mut buf = [0u8; 256];
    let _ = g.read(&mut buf).await.unwrap();
    // Idle for less than the keep-alive timeout, then a request: its head has 10 s.
    let next = async {
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
        client
    };
    let started = Instant::now();
    let nd = not_draining();
    let wait = g.wait_request(false, &nd);
    let (ready, _client) = tokio::join!(wait, next);
    assert!(!ready, "the second head never ends");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(59) && took <= Duration::from_secs(61),
        "{took:?}"
    );
    assert_eq!(report.reasons(), vec![CloseReason::HeaderTimeout]);

    // Idle past the keep-alive timeout: closed quietly.
    let (mut client, mut g, _, report) = guard(false);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(g.wait_request(true, &not_draining()).await);
    let _ = g.read(&mut buf).await.unwrap();
    assert!(!g.wait_request(false, &not_draining()).await);
    assert_eq!(report.reasons(), vec![CloseReason::KeepaliveTimeout]);
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_idle_connections_and_lets_heads_finish() {
    // A keep-alive connection idle between two requests closes when the drain starts.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (mut client, mut g, _, _) = guard(false);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(g.wait_request(true, &not_draining()).await);
    let mut buf = [0u8; 256];
    let _ = g.read(&mut buf).await.unwrap();
    let drain = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(true).unwrap();
    };
    let started = Instant::now();
    let (ready, ()) = tokio::join!(g.wait_request(false, &rx), drain);
    assert!(
        !ready,
        "an idle keep-alive connection closes when the drain starts"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));

    // A new connection that sends nothing is closed a moment later, counted as a head meanwhile.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (_client, mut g, _, report) = guard(false);
    let drain = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            report.heads.load(Ordering::Relaxed),
            1,
            "the drain waits for it"
        );
    };
    let started = Instant::now();
    let (ready, ()) = tokio::join!(g.wait_request(true, &rx), drain);
    assert!(
        !ready,
        "a new connection silent through the drain's wait closes"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1) + FIRST_HEAD_DRAIN_WAIT
    );
    assert_eq!(report.heads.load(Ordering::Relaxed), 0);

    // A new connection whose request comes just after the drain started is served: it was
    // accepted before, and its client is sending.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (mut client, mut g, _, _) = guard(false);
    let late = async {
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .write_all(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        client
    };
    let (ready, _client) = tokio::join!(g.wait_request(true, &rx), late);
    assert!(ready, "a first request arriving during the drain is served");

    let (tx, rx) = tokio::sync::watch::channel(false);
    let (mut client, mut g, _, _) = guard(false);
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let finish = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        client
    };
    let (ready, _client) = tokio::join!(g.wait_request(true, &rx), finish);
    assert!(ready, "a head under way is served");
}

#[tokio::test(start_paused = true)]
async fn an_upgraded_connection_is_cut_when_quiet_only() {
    let (mut client, mut g, control, report) = guard(false);
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    assert!(g.wait_request(true, &not_draining()).await);
    let mut buf = [0u8; 256];
    let _ = g.read(&mut buf).await.unwrap();
    control.upgraded();
    // Quiet for 9 minutes, then a message: still open.
    tokio::time::advance(Duration::from_secs(540)).await;
    client.write_all(b"frame").await.unwrap();
    assert_eq!(g.read(&mut buf).await.unwrap(), 5);
    // Then quiet past the idle timeout: closed.
    let started = Instant::now();
    assert!(g.read(&mut buf).await.is_err());
    assert!(started.elapsed() >= Duration::from_secs(599));
    assert_eq!(report.reasons(), vec![CloseReason::UpgradeIdle]);
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Read what the server sent until the connection closes (bounded).
async fn h2_goaway_code(client: &mut DuplexStream) -> Option<u32> {
    let data = read_all_available(client).await;
    let mut at = 0;
    while at + 9 <= data.len() {
        let len = (usize::from(data[at]) << 16)
            | (usize::from(data[at + 1]) << 8)
            | usize::from(data[at + 2]);
        if data[at + 3] == 7 && at + 9 + 8 <= data.len() {
            let c = &data[at + 13..at + 17];
            return Some(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        }
        at += 9 + len;
    }
    None
}

#[tokio::test(start_paused = true)]
async fn h2_a_silent_client_gets_goaway_at_header_timeout() {
    let (mut client, mut g, _, report) = guard(true);
    client.write_all(h2::PREFACE).await.unwrap();
    let mut buf = [0u8; 256];
    assert_eq!(g.read(&mut buf).await.unwrap(), 24);
    let started = Instant::now();
    assert!(g.read(&mut buf).await.is_err());
    assert!(started.elapsed() <= Duration::from_secs(10));
    assert_eq!(report.reasons(), vec![CloseReason::H2HeaderTimeout]);
    assert_eq!(h2_goaway_code(&mut client).await, Some(h2::NO_ERROR));
}

#[tokio::test(start_paused = true)]
async fn h2_a_stalled_header_block_is_cut() {
    let (mut client, mut g, _, report) = guard(true);
    client.write_all(h2::PREFACE).await.unwrap();
    client
        .write_all(&h2_frame(1, 0x4 | 0x1, 1, &[0x82]))
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = g.read(&mut buf).await.unwrap();
    // A request was made: the connection may now stay idle (pingora's idle timeout).
    let idle = tokio::time::timeout(Duration::from_secs(60), g.read(&mut buf)).await;
    assert!(
        idle.is_err(),
        "an idle h2 connection is not the guard's to close"
    );
    // A second header block that never ends.
    client.write_all(&h2_frame(1, 0, 3, &[0x82])).await.unwrap();
    let _ = g.read(&mut buf).await.unwrap();
    assert!(g.read(&mut buf).await.is_err());
    assert_eq!(report.reasons(), vec![CloseReason::H2HeaderTimeout]);
}

#[tokio::test(start_paused = true)]
async fn h2_a_ping_flood_gets_enhance_your_calm() {
    let (mut client, mut g, _, report) = guard(true);
    let mut flood = h2::PREFACE.to_vec();
    for _ in 0..200 {
        flood.extend_from_slice(&h2_frame(6, 0, 0, &[0; 8]));
    }
    client.write_all(&flood).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut outcome = Ok(0);
    for _ in 0..10 {
        outcome = g.read(&mut buf).await;
        if outcome.is_err() {
            break;
        }
    }
    assert!(outcome.is_err());
    assert_eq!(report.reasons(), vec![CloseReason::H2ControlFlood]);
    assert_eq!(
        h2_goaway_code(&mut client).await,
        Some(h2::ENHANCE_YOUR_CALM)
    );
}

#[tokio::test(start_paused = true)]
async fn h2_goaway_waits_for_the_end_of_the_frame_being_written() {
    let (mut client, mut g, control, _) = guard(true);
    let data = h2_frame(0, 0, 1, &[b'd'; 100]);
    // Half of a DATA frame goes out, then a close is asked for.
    assert_eq!(g.write(&data[..50]).await.unwrap(), 50);
    control.close(CloseReason::Denied);
    // The rest of the frame, and only it, still goes out.
    let mut rest = data[50..].to_vec();
    rest.extend_from_slice(&h2_frame(6, 1, 0, &[0; 8]));
    assert_eq!(g.write(&rest).await.unwrap(), 59);
    assert!(g.write(&rest[59..]).await.is_err());
    let sent = read_all_available(&mut client).await;
    assert_eq!(&sent[..100 + 9], &data[..]);
    assert_eq!(sent[109 + 3], 7, "a GOAWAY follows the frame");
    assert_eq!(sent.len(), 109 + 17);
}
