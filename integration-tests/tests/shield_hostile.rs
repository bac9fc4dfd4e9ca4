//! Hostile requests the shield must absorb (SPEC section 3), beyond those of `bad_input.rs`:
//! two thousand headers, NUL bytes, overflowing chunk sizes, bodies over `max_body_bytes`
//! announced or streamed, and bodies slower than `body_min_rate`. Each gets 400/408/413/431 or
//! a close, never reaches the origin as a second request, and the proxy keeps serving.

use std::time::{Duration, Instant};

use integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ANSWER_WITHIN: Duration = Duration::from_secs(5);

async fn send(s: &Stack, bytes: &[u8]) -> RawAnswer {
    raw_exchange(s.ports.http, bytes, ANSWER_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("sending raw bytes: {e}"))
}

/// An error status from `allowed` or a close; never a success, never two answers.
fn assert_refused(what: &str, a: &RawAnswer, allowed: &[u16]) {
    let statuses = a.statuses();
    assert!(
        statuses.len() <= 1,
        "{what}: several answers: {}",
        a.describe()
    );
    match statuses.first() {
        Some(st) => assert!(allowed.contains(st), "{what}: got {st}: {}", a.describe()),
        None => assert!(
            a.closed,
            "{what}: no answer and still open: {}",
            a.describe()
        ),
    }
}

async fn assert_still_serving(s: &Stack, what: &str) {
    let r = http_client_no_reuse()
        .get(s.url("/alive"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {what}, a normal request failed: {e}"));
    assert_eq!(r.status(), 200, "after {what}");
}

fn assert_not_smuggled(s: &Stack, what: &str) {
    let st = poll_until(Duration::from_millis(300), || {
        let st = s.dc_a[0].stats();
        (st.path("/smuggled") > 0).then_some(st)
    });
    assert!(st.is_none(), "{what}: the origin served a smuggled request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_headers_are_refused() {
    let s = Stack::start(1, 0, |_| {});
    let mut req = b"GET /many HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let a = send(&s, &req).await;
    assert_refused("2,000 headers", &a, &[400, 431]);
    assert_eq!(s.dc_a[0].stats().path("/many"), 0);
    assert_not_smuggled(&s, "2,000 headers");
    assert_still_serving(&s, "2,000 headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_are_refused() {
    let s = Stack::start(1, 0, |_| {});
    for (what, req) in [
        (
            "a NUL in a header value",
            &b"GET /nul HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
        (
            "a NUL in a header name",
            b"GET /nul HTTP/1.1\r\nHost: x\r\nX\0A: b\r\n\r\n",
        ),
    ] {
        let a = send(&s, req).await;
        assert_refused(what, &a, &[400]);
        assert_not_smuggled(&s, what);
        assert_still_serving(&s, what).await;
    }
    assert_eq!(s.dc_a[0].stats().path("/nul"), 0);

    // In the target, pingora's parser percent-encodes it: refused, or forwarded as `%00`,
    // never as a raw NUL.
    let a = send(
        &s,
        b"GET /nul\0/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    if a.status() == Some(200) {
        assert!(
            a.text().contains(r#""path":"/nul%00/x""#),
            "{}",
            a.describe()
        );
    } else {
        assert_refused("a NUL in the target", &a, &[400]);
    }
    assert_still_serving(&s, "a NUL in the target").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_and_negative_chunk_sizes_are_refused() {
    let s = Stack::start(1, 0, |_| {});
    for (what, size) in [
        ("an overflowing chunk size", "ffffffffffffffffffff"),
        ("a negative chunk size", "-1"),
    ] {
        let req = format!(
            "POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let a = send(&s, req.as_bytes()).await;
        assert_refused(what, &a, &[400, 502]);
        assert_not_smuggled(&s, what);
        assert_still_serving(&s, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_are_413_announced_or_streamed() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("max_body_bytes: 4KiB".into());
    });
    // Announced by Content-Length: refused before anything goes upstream.
    let a = send(
        &s,
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\naaaa",
    )
    .await;
    assert_refused("Content-Length over max_body_bytes", &a, &[413]);
    assert_eq!(a.status(), Some(413));
    assert_eq!(s.dc_a[0].stats().path("/big"), 0);

    // Chunked: counted as it streams.
    let mut req =
        b"POST /streamed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        req.extend_from_slice(b"400\r\n");
        req.extend(std::iter::repeat_n(b'b', 1024));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let a = send(&s, &req).await;
    assert_refused("a chunked body over max_body_bytes", &a, &[413]);
    // Under the limit, chunked passes whole.
    let mut req = b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(b"400\r\n");
    req.extend(std::iter::repeat_n(b'c', 1024));
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let a = send(&s, &req).await;
    assert_eq!(a.status(), Some(200), "{}", a.describe());
    assert!(a.text().contains("\"body_len\":1024"), "{}", a.describe());
    assert_still_serving(&s, "bodies over max_body_bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_body_min_rate_is_cut_with_408() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("body_min_rate: 1KiB/s".into());
    });
    let mut c = tokio::net::TcpStream::connect(s.ports.http).await.unwrap();
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    // Ten bytes a second, for at most 20 s.
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(20) {
        if c.write_all(b"0123456789").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.len() > 12 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 408") || (closed && answer.is_empty()),
        "a body at 10 B/s was not cut: closed={closed}, answer={text:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "cut before the grace time"
    );
    assert_still_serving(&s, "a slow body").await;
}
