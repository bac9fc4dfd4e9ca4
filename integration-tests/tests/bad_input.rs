//! Malformed and hostile requests (SPEC section 3: 400 malformed request, 431 headers_too_large):
//! each is refused (an error status or a closed connection, never a hang), never reaches the
//! origin as a smuggled request, and the proxy keeps serving normal requests afterwards.

use std::time::Duration;

use integration_tests::*;

const ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// Send raw bytes; read until the server closes, sends a complete answer, or 4 s pass.
async fn send(s: &Stack, bytes: &[u8]) -> RawAnswer {
    raw_exchange_until(s.ports.http, bytes, ANSWER_WITHIN, has_complete_response)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "sending {:?}...: {e}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            )
        })
}

/// Send raw bytes; read until the server closes or 4 s pass (to see everything it answers).
async fn send_and_wait_close(s: &Stack, bytes: &[u8]) -> RawAnswer {
    raw_exchange(s.ports.http, bytes, ANSWER_WITHIN)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "sending {:?}...: {e}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            )
        })
}

/// Refused: a status in `allowed`, or the connection closed without any 2xx answer. Not a hang.
fn assert_refused(what: &str, a: &RawAnswer, allowed: &[u16]) {
    let statuses = a.statuses();
    match statuses.first() {
        Some(st) => assert!(
            allowed.contains(st),
            "{what}: expected one of {allowed:?} or a closed connection, the client got {st}: {}",
            a.describe()
        ),
        None => assert!(
            a.closed,
            "{what}: no answer and the connection still open after {ANSWER_WITHIN:?} (the proxy hangs): {}",
            a.describe()
        ),
    }
    assert!(
        !statuses.iter().any(|s| (200..300).contains(s)),
        "{what}: the client got a success answer: {}",
        a.describe()
    );
}

/// The proxy still answers a normal request, and the origin is reachable.
async fn assert_still_serving(s: &Stack, what: &str) {
    let c = http_client_no_reuse();
    let r = c
        .get(s.url("/normal"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {what}, a normal request failed: {e}"));
    assert_eq!(
        r.status(),
        200,
        "after {what}, a normal request got {}",
        r.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_is_400_or_closed() {
    let s = Stack::start(1, 0, |_| {});
    for (what, bytes) in [
        (
            "a request line that is not HTTP",
            &b"THIS IS NOT HTTP\r\n\r\n"[..],
        ),
        ("a request line without a target", b"GET\r\nHost: x\r\n\r\n"),
        ("a bad HTTP version", b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n"),
        (
            "binary garbage",
            b"\x16\x03\x01\x00\xff\x01\x00\x00\xfb\x03\x03\r\n\r\n",
        ),
    ] {
        let a = send(&s, bytes).await;
        assert_refused(what, &a, &[400]);
        assert_still_serving(&s, what).await;
    }
    assert_eq!(
        s.dc_a[0].stats().requests_excluding_health(),
        4,
        "only the 4 normal requests reach the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_in_the_target_is_refused_or_forwarded_encoded() {
    let s = Stack::start(1, 0, |_| {});
    let a = send(
        &s,
        b"GET /a b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    if a.status() == Some(200) {
        // Lenient parsing is acceptable only when what goes upstream is a valid request line.
        assert!(
            a.text().contains(r#""path":"/a%20b""#),
            "a target with a raw space was forwarded, but not percent-encoded: {}",
            a.describe()
        );
    } else {
        assert_refused("a space in the target", &a, &[400]);
    }
    assert_still_serving(&s, "a space in the target").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_line_without_colon_is_400_or_closed() {
    let s = Stack::start(1, 0, |_| {});
    let a = send(
        &s,
        b"GET /nocolon HTTP/1.1\r\nHost: x\r\nThisLineHasNoColon\r\n\r\n",
    )
    .await;
    assert_refused("a header line without a colon", &a, &[400]);
    assert_eq!(
        s.dc_a[0].stats().path("/nocolon"),
        0,
        "the malformed request reached the origin"
    );
    assert_still_serving(&s, "a header line without a colon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_max_header_bytes_are_refused() {
    let s = Stack::start(1, 0, |_| {});
    let mut req = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let a = send(&s, &req).await;
    assert_refused(
        "a 64 KiB header (max_header_bytes is 32KiB)",
        &a,
        &[431, 400],
    );
    assert_eq!(
        s.dc_a[0].stats().path("/big"),
        0,
        "the oversized request reached the origin"
    );
    assert_still_serving(&s, "a 64 KiB header").await;

    // Many headers summing over the limit.
    let mut req = b"GET /many HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        req.extend_from_slice(format!("X-H{i}: {}\r\n", "b".repeat(40)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let a = send(&s, &req).await;
    assert_refused("1000 headers totalling ~50 KiB", &a, &[431, 400]);
    assert_eq!(s.dc_a[0].stats().path("/many"), 0);
    assert_still_serving(&s, "1000 headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_under_the_limit_pass() {
    let s = Stack::start(1, 0, |_| {});
    let c = http_client();
    let r = c
        .get(s.url("/medium"))
        .header("X-Medium", "m".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a 16 KiB header is under max_header_bytes (32KiB) and must pass"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["headers"]["x-medium"].as_str().map(str::len),
        Some(16 * 1024)
    );
}

fn cl_te_request(path: &str, smuggled: &str) -> Vec<u8> {
    // The Content-Length covers the whole rest: a proxy believing it forwards a body that an
    // origin believing Transfer-Encoding would end early, reading the rest as a second request.
    let body = format!("0\r\n\r\nGET {smuggled} HTTP/1.1\r\nHost: x\r\n\r\n");
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn te_cl_request(path: &str, smuggled: &str) -> Vec<u8> {
    // Content-Length 4 covers only the chunk size line: a proxy believing Content-Length, or an
    // origin given both headers, would read the chunk's content as a second request.
    let inner = format!("GET {smuggled} HTTP/1.1\r\nHost: x\r\n\r\n");
    let chunk_line = format!("{:x}\r\n", inner.len());
    assert_eq!(chunk_line.len(), 4);
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk_line}{inner}\r\n0\r\n\r\n"
    )
    .into_bytes()
}

async fn assert_no_smuggling(s: &Stack, what: &str, req: &[u8], first: &str, smuggled: &str) {
    let a = send_and_wait_close(s, req).await;
    let statuses = a.statuses();
    assert!(
        statuses.len() <= 1,
        "{what}: the client got {} answers for one request (a smuggled request was served): {}",
        statuses.len(),
        a.describe()
    );
    if let Some(st) = statuses.first() {
        if (200..300).contains(st) {
            // Accepted by Transfer-Encoding alone: allowed, but the connection must then be closed.
            assert!(
                a.closed,
                "{what}: a request with both Content-Length and Transfer-Encoding was answered {st} and the connection \
                 kept open (RFC 9112 6.3: the server MUST close it): {}",
                a.describe()
            );
        } else {
            assert!(
                matches!(st, 400 | 501 | 502),
                "{what}: unexpected answer {st}: {}",
                a.describe()
            );
        }
    } else {
        assert!(
            a.closed,
            "{what}: no answer and the connection still open (the proxy hangs): {}",
            a.describe()
        );
    }
    // Give a smuggled request time to arrive (bounded poll on the origin's counters).
    let stats = poll_until(Duration::from_millis(500), || {
        let st = s.dc_a[0].stats();
        (st.path(smuggled) > 0).then_some(st)
    });
    assert!(
        stats.is_none(),
        "{what}: the origin received the smuggled request {smuggled}: {:?}",
        stats.unwrap().by_path
    );
    let st = s.dc_a[0].stats();
    assert!(
        st.path(first) <= 1,
        "{what}: the origin saw {} requests on {first}",
        st.path(first)
    );
    assert!(
        st.requests_excluding_health() <= 1,
        "{what}: one client request gave {} origin requests: {:?}",
        st.requests_excluding_health(),
        st.by_path
    );
    assert_still_serving(s, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_cl_te_is_not_smuggled() {
    let s = Stack::start(1, 0, |_| {});
    let req = cl_te_request("/clte", "/smuggled-clte");
    assert_no_smuggling(
        &s,
        "Content-Length + Transfer-Encoding: chunked (CL.TE)",
        &req,
        "/clte",
        "/smuggled-clte",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_te_cl_is_not_smuggled() {
    let s = Stack::start(1, 0, |_| {});
    let req = te_cl_request("/tecl", "/smuggled-tecl");
    assert_no_smuggling(
        &s,
        "Transfer-Encoding: chunked + short Content-Length (TE.CL)",
        &req,
        "/tecl",
        "/smuggled-tecl",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_refused() {
    let s = Stack::start(1, 0, |_| {});
    let a = send(
        &s,
        b"POST /dupcl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert_refused("two different Content-Length headers", &a, &[400]);
    assert_eq!(
        s.dc_a[0].stats().path("/dupcl"),
        0,
        "the request with two Content-Lengths reached the origin"
    );
    assert_still_serving(&s, "two Content-Length headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_size_is_refused() {
    let s = Stack::start(1, 0, |_| {});
    let a = send(
        &s,
        b"POST /badchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    // The head may already have been forwarded when the body turns out bad: then the origin
    // sees a broken body and the client an error (400, 502) or a closed connection.
    assert_refused("a chunk size that is not hexadecimal", &a, &[400, 502]);
    assert_still_serving(&s, "a bad chunk size").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    // The counterpart of the smuggling tests: legitimate pipelining is not broken. Every
    // request of a pipeline sent in one write is answered, in order (as NGINX does): the head
    // after the first waits for its turn instead of being read as part of the first request.
    let s = Stack::start(1, 0, |_| {});
    let req = b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let a = send_and_wait_close(&s, req).await;
    // The echo's JSON body has no final newline: the next status line follows it directly.
    let answered = a.text().matches("HTTP/1.1 200 OK\r\n").count();
    assert_eq!(answered, 3, "three pipelined GETs: {}", a.describe());
    let t = a.text();
    let pos: Vec<Option<usize>> = ["\"/p1\"", "\"/p2\"", "\"/p3\""]
        .iter()
        .map(|p| t.find(p))
        .collect();
    assert!(
        pos.iter().all(Option::is_some) && pos.windows(2).all(|w| w[0] < w[1]),
        "answers out of order: {}",
        a.describe()
    );
    let st = s.dc_a[0].stats();
    assert_eq!(
        st.requests_excluding_health(),
        3,
        "the origin served {:?}",
        st.by_path
    );
}
