//! HTTP/2 attacks, with frames built by hand as an attacker builds them (`h2raw`): a client
//! that says nothing after the TLS handshake, or only the preface; a header block that never
//! ends; rapid reset (CVE-2023-44487); a CONTINUATION flood; PING and SETTINGS floods; a flood
//! of streams beyond max_concurrent_streams. Each ends in a GOAWAY or a close, the process
//! stays up, and a normal HTTP/2 client on another connection keeps getting answers.

use std::time::{Duration, Instant};

use integration_tests::h2raw::{self, code, H2Conn};
use integration_tests::*;

fn stack(header_timeout: &str) -> Stack {
    let header_timeout = format!("header_timeout: {header_timeout}");
    Stack::start(1, 0, move |y| y.server.push(header_timeout))
}

async fn connect(s: &Stack) -> H2Conn {
    H2Conn::connect_tls(s.ports.https, "localhost")
        .await
        .expect("TLS with ALPN h2")
}

/// A normal HTTP/2 client still gets answers.
async fn assert_served(s: &Stack, what: &str) {
    let c = h2_client(&[("localhost", s.ports.https)]);
    let r = c
        .get(s.https_url("localhost", "/alive"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {what}, a normal h2 request failed: {e}"));
    assert_eq!(r.status(), 200, "after {what}");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

fn closed_metric(s: &Stack, reason: &str) -> u64 {
    let metrics = s.rempart.admin("/metrics").1;
    let prefix = format!("rempart_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_the_handshake_is_closed_at_header_timeout() {
    let s = stack("2s");
    // Nothing at all after TLS.
    let mut silent = connect(&s).await;
    // Only the connection preface.
    let mut preface_only = connect(&s).await;
    preface_only.send_preface().await.unwrap();
    // Preface and SETTINGS, no request.
    let mut no_request = connect(&s).await;
    no_request.send_preface().await.unwrap();
    no_request.send_settings(&[]).await.unwrap();
    for (what, conn) in [
        ("nothing after the handshake", &mut silent),
        ("only the preface", &mut preface_only),
        ("preface and SETTINGS, no HEADERS", &mut no_request),
    ] {
        let outcome = conn.wait_close(Duration::from_secs(15)).await;
        let closed = outcome
            .closed
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: still open: {}", outcome.summary()));
        assert!(
            closed.after < Duration::from_secs(8),
            "{what}: closed after {:?} (header_timeout: 2s)",
            closed.after
        );
    }
    assert_eq!(closed_metric(&s, "h2_header_timeout"), 3);
    assert_served(&s, "silent clients").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_that_never_ends_is_cut() {
    let s = stack("2s");
    let mut conn = connect(&s).await;
    conn.handshake(&[], Duration::from_secs(5)).await.unwrap();
    // One normal request first: the connection is in use.
    conn.send_request(1, "GET", "/first", "localhost", &[], true)
        .await
        .unwrap();
    let answer = conn
        .read_until(Duration::from_secs(5), |f| {
            f.stream_id == 1 && f.kind == h2raw::kind::HEADERS
        })
        .await
        .unwrap()
        .expect("an answer to the first request");
    assert_eq!(answer.status(), Some(200));
    // Then HEADERS without END_HEADERS, and no CONTINUATION.
    let block = h2raw::request_block("GET", "https", "/stalled", "localhost", &[]);
    conn.send_headers_block(3, &block, true, false)
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = conn.wait_close_or_goaway(Duration::from_secs(15)).await;
    assert!(outcome.ended(), "still open: {}", outcome.summary());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{}",
        outcome.summary()
    );
    assert_eq!(s.dc_a[0].stats().path("/stalled"), 0);
    assert_served(&s, "a stalled header block").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway() {
    let s = stack("10s");
    let mut conn = connect(&s).await;
    conn.handshake(&[], Duration::from_secs(5)).await.unwrap();
    let block = h2raw::request_block("GET", "https", "/reset", "localhost", &[]);
    // HEADERS then RST_STREAM(CANCEL) at once, in batches, on odd stream ids.
    let mut stream = 1u32;
    let mut sent = 0;
    let outcome = loop {
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.extend_from_slice(&h2raw::headers_frame(stream, &block, true, true));
            batch.extend_from_slice(&h2raw::rst_stream_frame(stream, code::CANCEL));
            stream += 2;
        }
        if conn.send_batch(&batch, 100).await.is_err() {
            break conn.wait_close_or_goaway(Duration::from_secs(5)).await;
        }
        sent += 50;
        let outcome = conn.wait_close_or_goaway(Duration::from_millis(5)).await;
        if outcome.ended() || sent >= 20_000 {
            break conn.wait_close_or_goaway(Duration::from_secs(5)).await;
        }
    };
    assert!(
        outcome.goaway.is_some() || outcome.closed.is_some(),
        "rapid reset of {sent} streams not stopped: {}",
        outcome.summary()
    );
    assert!(sent < 20_000, "{sent} streams reset: {}", outcome.summary());
    assert_served(&s, "rapid reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_in_goaway() {
    let s = stack("10s");
    let mut conn = connect(&s).await;
    conn.handshake(&[], Duration::from_secs(5)).await.unwrap();
    let block = h2raw::request_block("GET", "https", "/cont", "localhost", &[]);
    conn.send_headers_block(1, &block, true, false)
        .await
        .unwrap();
    let filler = h2raw::hpack_block(&[("x-filler", &"f".repeat(1000))]);
    let mut sent = 0;
    while sent < 10_000 {
        if conn
            .send_continuation_block(1, &filler, false)
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
        if sent % 20 == 0
            && conn
                .wait_close_or_goaway(Duration::from_millis(1))
                .await
                .ended()
        {
            break;
        }
    }
    let outcome = conn.wait_close_or_goaway(Duration::from_secs(5)).await;
    assert!(
        outcome.ended(),
        "{sent} CONTINUATION frames: {}",
        outcome.summary()
    );
    assert!(sent < 10_000, "{}", outcome.summary());
    assert_served(&s, "a CONTINUATION flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_end_in_enhance_your_calm() {
    let s = stack("10s");
    for (what, frame) in [
        ("PING", h2raw::ping_frame([7; 8], false)),
        ("SETTINGS", h2raw::settings_frame(&[])),
    ] {
        let mut conn = connect(&s).await;
        conn.handshake(&[], Duration::from_secs(5)).await.unwrap();
        // A request first, as a real client would have.
        conn.send_request(1, "GET", "/", "localhost", &[], true)
            .await
            .unwrap();
        // Then the flood, never reading the answers.
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 100)
            .collect();
        let mut sent = 0u64;
        while sent < 100_000 {
            if conn.send_batch(&batch, 100).await.is_err() || conn.is_broken() {
                break;
            }
            sent += 100;
        }
        let outcome = conn.wait_close_or_goaway(Duration::from_secs(5)).await;
        assert!(outcome.ended(), "{what} flood: {}", outcome.summary());
        assert!(
            sent < 100_000,
            "{what} flood of {sent} frames: {}",
            outcome.summary()
        );
        if let Some(code) = outcome.goaway_code() {
            assert_eq!(code, code::ENHANCE_YOUR_CALM, "{}", outcome.summary());
        }
    }
    assert_eq!(closed_metric(&s, "h2_control_flood"), 2);
    assert_served(&s, "PING and SETTINGS floods").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_streams_are_refused_and_the_connection_ends() {
    let s = Stack::start(1, 0, |_| {});
    let mut conn = connect(&s).await;
    let settings = conn.handshake(&[], Duration::from_secs(5)).await.unwrap();
    let max = settings
        .iter()
        .find(|(id, _)| *id == h2raw::setting::MAX_CONCURRENT_STREAMS)
        .map(|(_, v)| *v)
        .expect("the server announces max_concurrent_streams");
    // Open far more slow streams than allowed, without ever reading.
    let mut stream = 1u32;
    let mut opened = 0u32;
    while opened < max * 20 {
        let block = h2raw::request_block("GET", "https", "/slow?ms=3000", "localhost", &[]);
        if conn
            .send_headers_block(stream, &block, true, true)
            .await
            .is_err()
        {
            break;
        }
        stream += 2;
        opened += 1;
    }
    let outcome = conn.wait_close_or_goaway(Duration::from_secs(10)).await;
    let refused = outcome
        .rst_received
        .get("REFUSED_STREAM")
        .copied()
        .unwrap_or(0);
    assert!(
        refused > 0 || outcome.ended(),
        "{opened} streams opened with max_concurrent_streams {max}: {}",
        outcome.summary()
    );
    let served = s.dc_a[0].stats().path("/slow");
    assert!(
        served <= u64::from(max),
        "{served} streams reached the origin, max_concurrent_streams is {max}"
    );
    assert_served(&s, "a stream flood").await;
}
