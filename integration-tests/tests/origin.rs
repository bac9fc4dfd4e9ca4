//! The `ent-origin` stand-in backend itself (no rempart needed): the tests of Rempart rely on
//! what it echoes and counts.

use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_shows_what_the_origin_received() {
    let o = Origin::start("echo-me", &[]);
    let c = http_client();
    let r = c
        .post(format!("http://{}/some/path?x=1&y=2", o.addr()))
        .header("X-Thing", "one")
        .header("X-Request-Id", "id-1")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["origin"], "echo-me");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/some/path");
    assert_eq!(v["query"], "x=1&y=2");
    assert_eq!(v["body_len"], 5);
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["x-thing"], "one");
    assert_eq!(v["headers"]["x-request-id"], "id-1");

    // Repeated headers are joined with ", ".
    let raw = raw_exchange(
        o.addr(),
        b"GET /r HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(raw.text().contains(r#""x-a":"1, 2""#), "{}", raw.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_and_request_ids_and_reset() {
    let o = Origin::start("counted", &[]);
    let c = http_client();
    for id in ["a", "b", "a", "c", "a"] {
        let r = c
            .get(format!("http://{}/api/x", o.addr()))
            .header("X-Request-Id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    c.post(format!("http://{}/auth/login", o.addr()))
        .send()
        .await
        .unwrap();
    c.get(format!("http://{}/", o.addr())).send().await.unwrap();
    // Control calls are not counted.
    let _ = o.stats();
    let s = o.stats();
    assert_eq!(s.name, "counted");
    assert_eq!(s.requests_total, 7, "{s:?}");
    assert_eq!(s.by_method.get("GET"), Some(&6));
    assert_eq!(s.by_method.get("POST"), Some(&1));
    assert_eq!(s.path("/api"), 5);
    assert_eq!(s.path("/auth"), 1);
    assert_eq!(s.path("/"), 1);
    assert_eq!(s.request_ids, 3, "distinct ids a, b, c");
    assert_eq!(s.duplicate_request_ids, 2, "'a' came back twice");
    assert_eq!(s.missing_request_ids, 2);
    assert_eq!(s.logins_total, 1);
    assert_eq!(s.in_flight, 0);
    assert!(s.max_in_flight >= 1);

    o.reset();
    let s = o.stats();
    assert_eq!(s.requests_total, 0);
    assert_eq!(s.request_ids, 0);
    assert_eq!(s.duplicate_request_ids, 0);
    assert!(s.by_path.is_empty() && s.by_method.is_empty(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_capacity_answers_503_beyond_n_concurrent_logins() {
    let o = Origin::start("auth", &["--login-capacity", "2", "--login-cost", "400ms"]);
    let c = http_client();
    let url = format!("http://{}/auth/login", o.addr());
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .body("username=u&password=p")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(body, LOGIN_QUOTA_BODY);
                refused += 1
            }
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    assert_eq!((ok, refused), (2, 3));
    let s = o.stats();
    assert_eq!(s.logins_total, 2);
    assert_eq!(s.login_rejected, 3);
    assert_eq!(s.login_max_in_flight, 2);
    assert_eq!(s.login_in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_slow_status_bytes_and_health() {
    let o = Origin::start("knobs", &["--latency", "/lag=300ms"]);
    let c = http_client();
    let base = format!("http://{}", o.addr());

    let t = Instant::now();
    assert_eq!(
        c.get(format!("{base}/lag/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "latency knob ignored"
    );

    let t = Instant::now();
    assert_eq!(
        c.get(format!("{base}/slow?ms=200"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "/slow did not wait"
    );

    let r = c.get(format!("{base}/status/503")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = c.get(format!("{base}/bytes/12345")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 12345);

    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    o.fail_health();
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert!(!o.stats().healthy);
    o.heal();
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo() {
    let o = Origin::start("ws", &[]);
    let mut ws = ws_connect(o.addr(), "/ws").await.unwrap();
    let m = ws_roundtrip(&mut ws, WsMessage::Text("bonjour".into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Text("bonjour".into()));
    let m = ws_roundtrip(&mut ws, WsMessage::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Binary(vec![0u8, 1, 2, 255].into()));
}
