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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_outcome_and_session_cookie() {
    let o = Origin::start("ent", &["--login-cost", "150ms"]);
    let c = http_client();
    let url = format!("http://{}/auth/login", o.addr());

    // A good login: the echo, and a session cookie.
    let form = "username=u&password=p";
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = set_cookie_line(r.headers(), "ENTSESSION").expect("a session cookie");
    let (pair, attrs) = line.split_once(';').unwrap();
    let id = pair.strip_prefix("ENTSESSION=").unwrap();
    assert!(
        id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert_eq!(attrs, " Path=/; HttpOnly");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], form.len(), "{v}");

    // Another one (GET, no body): another session.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let line2 = set_cookie_line(r.headers(), "ENTSESSION").expect("a session cookie");
    assert_ne!(line, line2);

    // A wrong password, in a form or in JSON: 401, no cookie, and still the login cost.
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            "username=u&password=wrong",
        ),
        ("application/json", r#"{"username":"u","password":"wrong"}"#),
    ] {
        let t = Instant::now();
        let r = c
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150), "no login cost");
        assert_eq!(r.status(), 401, "{ct}");
        assert!(r.headers().get("set-cookie").is_none(), "{ct}");
        assert_eq!(r.text().await.unwrap(), origin::LOGIN_FAILED_BODY);
    }
    // The same body without a form or JSON content type is not read as credentials.
    let r = c.post(&url).body("password=wrong").send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A body larger than what the login reads: still echoed whole.
    let big = format!("password=ok&pad={}", "a".repeat(100 * 1024));
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], big.len());

    let s = o.stats();
    assert_eq!((s.logins_total, s.logins_failed), (4, 2), "{s:?}");
    assert_eq!(s.path("/auth"), 6);
    o.reset();
    assert_eq!(o.stats().logins_failed, 0);

    // Another cookie name, or none.
    let named = Origin::start("named", &["--session-cookie", "SID"]);
    let r = c
        .get(format!("http://{}/auth/login", named.addr()))
        .send()
        .await
        .unwrap();
    assert!(set_cookie_line(r.headers(), "SID").is_some());
    assert!(set_cookie_line(r.headers(), "ENTSESSION").is_none());
    let none = Origin::start("none", &["--session-cookie", ""]);
    let r = c
        .get(format!("http://{}/auth/login", none.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    // Only logins get one.
    let r = c
        .get(format!("http://{}/other", o.addr()))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_backend_slows_down_beyond_k_concurrent_logins() {
    let o = Origin::start("sat", &["--login-cost", "200ms", "--login-saturate", "2"]);
    let c = http_client();
    let url = format!("http://{}/auth/login", o.addr());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.post(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            t.elapsed()
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.push(t.await.unwrap());
    }
    took.sort();
    // Arrivals 1 and 2 take the cost, 3 twice, 4 three times.
    let ms = |d: &Duration| d.as_millis();
    assert!(ms(&took[0]) >= 200 && ms(&took[1]) < 390, "{took:?}");
    assert!(ms(&took[2]) >= 400, "{took:?}");
    assert!(ms(&took[3]) >= 600, "{took:?}");
    let s = o.stats();
    assert_eq!(s.login_max_in_flight, 4);
    assert_eq!(s.logins_total, 4);

    // Alone, a login takes the plain cost.
    let t = Instant::now();
    c.post(&url).send().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(390),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_of_received_requests() {
    let o = Origin::start("rec", &["--record-requests"]);
    let c = http_client();
    let base = format!("http://{}", o.addr());
    assert!(
        o.requests().is_empty(),
        "the start-up checks are not recorded"
    );

    c.get(format!("{base}/a/b?q=1"))
        .header("X-Request-Id", "r-1")
        .header("X-Test-Id", "t-1")
        .send()
        .await
        .unwrap();
    c.post(format!("{base}/auth/login"))
        .body("x")
        .send()
        .await
        .unwrap();
    c.get(format!("{base}/healthz")).send().await.unwrap();
    let _ = o.stats();
    // One in progress: recorded when it arrived, completed when answered.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = format!("{base}/slow?ms=800");
        async move { c.get(url).send().await.unwrap().status() }
    });
    let in_progress = poll_until(Duration::from_secs(3), || {
        let r = o.requests();
        (r.len() == 3).then_some(r)
    })
    .expect("the slow request recorded on arrival");
    assert_eq!(
        in_progress[0],
        ReceivedRequest {
            request_id: "r-1".into(),
            method: "GET".into(),
            path: "/a/b".into(),
            test_id: Some("t-1".into()),
            at_ms: in_progress[0].at_ms,
            completed: true,
            status: 200,
        }
    );
    assert_eq!(in_progress[1].method, "POST");
    assert_eq!(in_progress[1].path, "/auth/login");
    assert_eq!(in_progress[1].request_id, "");
    assert_eq!(in_progress[1].test_id, None);
    assert!(in_progress[1].completed);
    assert_eq!(in_progress[2].path, "/slow");
    assert!(!in_progress[2].completed, "{in_progress:?}");
    assert!(in_progress.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert_eq!(slow.await.unwrap(), 200);
    assert!(o.requests()[2].completed);

    let posts = o.requests_with_method("POST");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/auth/login");
    assert!(o.requests_with_method("DELETE").is_empty());
    // The JSON as documented.
    let a = http1::get(o.addr(), "/__origin/requests?method=GET").unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    for k in [
        "request_id",
        "method",
        "path",
        "test_id",
        "at_ms",
        "completed",
    ] {
        assert!(v[0].get(k).is_some(), "{k} missing: {v}");
    }

    o.reset();
    assert!(o.requests().is_empty());

    // Without --record-requests, asking is an error, not an empty list.
    let plain = Origin::start("plain", &[]);
    let a = http1::get(plain.addr(), "/__origin/requests").unwrap();
    assert_eq!(a.status, 409, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_refuses_the_extra_requests_as_busy() {
    let o = Origin::start("busy", &["--max-in-flight", "2", "--record-requests"]);
    let c = http_client();
    let base = format!("http://{}", o.addr());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let url = format!("{base}/slow?ms=600");
        tasks.push(tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    poll_until(Duration::from_secs(3), || {
        (o.stats().refused_busy == 2).then_some(())
    })
    .expect("two refused");
    // Health checks are neither refused nor counted against the limit.
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status == 503 {
            assert_eq!(body, origin::BUSY_BODY);
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503]);
    let s = o.stats();
    assert_eq!(s.refused_busy, 2, "{s:?}");
    assert!(s.max_in_flight >= 3, "{s:?}");
    assert!(s.max_in_flight_excluding_health >= 3, "{s:?}");
    assert_eq!(s.in_flight_excluding_health, 0);
    // The refused ones were received: recorded and answered.
    let rec = o.requests();
    assert_eq!(rec.len(), 4, "{rec:?}");
    assert_eq!(rec.iter().filter(|r| r.status == 503).count(), 2);
    assert!(rec.iter().all(|r| r.completed));

    // Once the others are done, room again.
    let r = c.get(format!("{base}/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    o.reset();
    let s = o.stats();
    assert_eq!((s.refused_busy, s.max_in_flight_excluding_health), (0, 0));
}
