//! Failover on loopback (SPEC section 4): refused connections, failing health checks, failback
//! after `failback_after`, a server answering 503, a slow server, drains through the admin API,
//! the maintenance page when every datacenter is down, the retry budget, and writes never sent
//! twice. Every check counts requests at the origins; no test asserts on timing.

use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

/// Health checks fast enough for tests, failback after `failback`.
fn fast(y: &mut ProxyYaml, failback: &str) {
    y.upstream = vec![
        "health_check: { path: /healthz, interval: 100ms, timeout: 1s, rise: 2, fall: 2 }".into(),
        format!("failback_after: {failback}"),
    ];
}

/// The `upstreams.ent` section of `/status`.
fn ent_status(r: &Rempart) -> Value {
    r.admin_json("/status")["upstreams"]["ent"].clone()
}

fn active(r: &Rempart) -> Option<String> {
    ent_status(r)["active_datacenter"]
        .as_str()
        .map(str::to_string)
}

/// Wait (at most `timeout`) until the active datacenter is `dc`.
fn wait_active(r: &Rempart, dc: Option<&str>, timeout: Duration) {
    let got = poll_until(timeout, || (active(r).as_deref() == dc).then_some(()));
    assert!(
        got.is_some(),
        "the active datacenter did not become {dc:?} within {timeout:?}: {}",
        ent_status(r)
    );
}

/// Wait until every server has passed a health check and dc-a is active (servers start
/// unknown: the stack is routable as soon as one of them is up).
fn all_up(s: &Stack) {
    let done = poll_until(Duration::from_secs(10), || {
        let ent = ent_status(&s.rempart);
        let servers: Vec<Value> = ent["datacenters"]
            .as_array()?
            .iter()
            .flat_map(|dc| dc["servers"].as_array().cloned().unwrap_or_default())
            .collect();
        (ent["active_datacenter"] == "dc-a" && servers.iter().all(|srv| srv["health"] == "up"))
            .then_some(())
    });
    assert!(
        done.is_some(),
        "servers not all up: {}",
        ent_status(&s.rempart)
    );
}

/// The datacenter `name` in `/status`.
fn dc_status(r: &Rempart, name: &str) -> Value {
    ent_status(r)["datacenters"]
        .as_array()
        .and_then(|dcs| dcs.iter().find(|dc| dc["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no datacenter {name} in /status"))
}

/// The value of one series of `/metrics`, e.g. `rempart_retries_total{upstream="ent",kind="connect"}`.
fn metric(r: &Rempart, series: &str) -> f64 {
    let (status, text) = r.admin("/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Send `n` requests one after the other; returns (status, origin name or "") of each.
async fn send_n(
    c: &reqwest::Client,
    n: usize,
    req: impl Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder,
) -> Vec<(u16, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        match req(c, i).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let origin = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["origin"].as_str().map(str::to_string))
                    .unwrap_or_else(|| {
                        format!("not an echo: {}", body.chars().take(80).collect::<String>())
                    });
                out.push((status, origin));
            }
            Err(e) => out.push((0, format!("error: {e}"))),
        }
    }
    out
}

fn all_ok(results: &[(u16, String)]) -> bool {
    results.iter().all(|(s, _)| *s == 200)
}

fn served_by(results: &[(u16, String)], origin: &str) -> usize {
    results.iter().filter(|(_, o)| o == origin).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_and_traffic_fails_over() {
    let mut s = Stack::start(2, 1, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 3, eject_for: 30s }".into());
    });
    all_up(&s);
    let c = http_client();
    s.dc_a[0].kill();
    let gets = send_n(&c, 30, |c, i| c.get(s.url(&format!("/one-dead/{i}")))).await;
    assert!(all_ok(&gets), "a refused connection is retried: {gets:?}");
    assert_eq!(served_by(&gets, "a2"), 30, "{gets:?}");
    let posts = send_n(&c, 10, |c, i| {
        c.post(s.url(&format!("/post/{i}"))).body("x")
    })
    .await;
    assert!(
        all_ok(&posts),
        "a POST that never reached a server is retried: {posts:?}"
    );
    assert_eq!(active(&s.rempart).as_deref(), Some("dc-a"));
    let a2 = s.dc_a[1].stats();
    assert_eq!(a2.by_method.get("POST").copied().unwrap_or(0), 10);
    assert_eq!(a2.duplicate_request_ids, 0);

    // The whole of dc-a dead: traffic moves to dc-b, no request fails.
    s.dc_a[1].kill();
    let gets = send_n(&c, 30, |c, i| c.get(s.url(&format!("/all-dead/{i}")))).await;
    assert!(all_ok(&gets), "{gets:?}");
    assert_eq!(served_by(&gets, "b1"), 30, "{gets:?}");
    wait_active(&s.rempart, Some("dc-b"), Duration::from_secs(10));
    let b = s.dc_b[0].stats();
    assert_eq!(b.duplicate_request_ids, 0);
    assert_eq!(b.by_method.get("POST").copied().unwrap_or(0), 0);

    let r = &s.rempart;
    assert!(
        metric(
            r,
            "rempart_retries_total{kind=\"connect\",upstream=\"ent\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric(
            r,
            "rempart_failovers_total{from=\"dc-a\",to=\"dc-b\",upstream=\"ent\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            r,
            "rempart_datacenter_active{datacenter=\"dc-b\",upstream=\"ent\"}"
        ),
        1.0
    );
    let dc_a = dc_status(r, "dc-a");
    assert_eq!(dc_a["state"], "down", "{dc_a}");
    let log = r.stderr();
    assert!(log.contains("datacenter failover"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_move_traffic_and_it_returns_only_after_failback_after() {
    let s = Stack::start(1, 1, |y| fast(y, "4s"));
    all_up(&s);
    let c = http_client();
    wait_active(&s.rempart, Some("dc-a"), Duration::from_secs(5));
    s.dc_a[0].fail_health();
    wait_active(&s.rempart, Some("dc-b"), Duration::from_secs(10));
    let a_before = s.dc_a[0].stats().requests_excluding_health();
    let gets = send_n(&c, 20, |c, i| c.get(s.url(&format!("/moved/{i}")))).await;
    assert!(all_ok(&gets), "{gets:?}");
    assert_eq!(served_by(&gets, "b1"), 20, "{gets:?}");

    // Healed: dc-a is up again at once (rise 2 × 100ms) but must stay up 4 s first.
    s.dc_a[0].heal();
    let up = poll_until(Duration::from_secs(10), || {
        let dc = dc_status(&s.rempart, "dc-a");
        dc["state"]
            .as_str()
            .is_some_and(|st| st.starts_with("failing back"))
            .then_some(dc)
    });
    assert!(
        up.is_some(),
        "dc-a never showed as failing back: {}",
        ent_status(&s.rempart)
    );
    // A window well inside failback_after (about 1 s of 4 s): dc-a gets nothing.
    let window = Instant::now();
    let mut in_window = Vec::new();
    while window.elapsed() < Duration::from_millis(1000) && in_window.len() < 200 {
        in_window.extend(send_n(&c, 5, |c, i| c.get(s.url(&format!("/window/{i}")))).await);
    }
    assert!(all_ok(&in_window));
    assert_eq!(
        s.dc_a[0].stats().requests_excluding_health(),
        a_before,
        "dc-a got traffic before failback_after: {in_window:?}"
    );
    assert_eq!(served_by(&in_window, "b1"), in_window.len());

    // Then the traffic comes back.
    wait_active(&s.rempart, Some("dc-a"), Duration::from_secs(15));
    let gets = send_n(&c, 10, |c, i| c.get(s.url(&format!("/back/{i}")))).await;
    assert_eq!(served_by(&gets, "a1"), 10, "{gets:?}");
    let log = s.rempart.stderr();
    assert!(log.contains("datacenter failback"), "{log}");
    assert_eq!(
        log.matches("server down").count(),
        1,
        "one log line per transition, not per check:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_503_is_ejected_and_its_requests_retried_elsewhere() {
    let s = Stack::start(2, 1, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 3, eject_for: 30s }".into());
    });
    all_up(&s);
    let c = http_client();
    s.dc_a[0].force_status(503);
    let gets = send_n(&c, 30, |c, i| c.get(s.url(&format!("/x/{i}")))).await;
    assert!(
        all_ok(&gets),
        "a 503 is retried on another server: {gets:?}"
    );
    assert_eq!(served_by(&gets, "a2"), 30);
    assert_eq!(
        s.dc_a[0].stats().requests_excluding_health(),
        3,
        "a1 is ejected after 3 failures in a row"
    );
    let a1 = s.dc_a[0].addr().to_string();
    let servers = dc_status(&s.rempart, "dc-a")["servers"].clone();
    let a1_status = servers
        .as_array()
        .and_then(|v| v.iter().find(|srv| srv["address"] == a1.as_str()).cloned())
        .unwrap();
    assert_eq!(a1_status["ejected"], true, "{a1_status}");
    assert_eq!(a1_status["ejection"]["count"], 1, "{a1_status}");
    assert_eq!(
        a1_status["health"], "up",
        "health checks still pass: {a1_status}"
    );
    assert!(s.rempart.stderr().contains("server ejected"));

    // A POST is not retried after reaching a server: the client gets the 503.
    s.dc_a[1].force_status(503);
    s.dc_b[0].force_status(503);
    let before: u64 = s.dc_a[1].stats().requests_excluding_health()
        + s.dc_b[0].stats().requests_excluding_health();
    let posts = send_n(&c, 2, |c, i| c.post(s.url(&format!("/p/{i}"))).body("x")).await;
    assert!(posts.iter().all(|(st, _)| *st == 503), "{posts:?}");
    let after: u64 = s.dc_a[1].stats().requests_excluding_health()
        + s.dc_b[0].stats().requests_excluding_health();
    assert_eq!(after - before, 2, "each POST reached exactly one server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_never_sent_twice_unless_the_route_honours_idempotency_keys() {
    let s = Stack::start(2, 1, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 1000, eject_for: 30s }".into());
    });
    all_up(&s);
    let c = http_client();
    s.dc_a[0].force_status(503);
    s.dc_a[1].force_status(502);
    let posts = send_n(&c, 10, |c, i| c.post(s.url(&format!("/w/{i}"))).body("x")).await;
    assert!(
        posts.iter().all(|(st, _)| *st == 503 || *st == 502),
        "{posts:?}"
    );
    let count = |o: &Origin| o.stats().by_method.get("POST").copied().unwrap_or(0);
    assert_eq!(
        count(&s.dc_a[0]) + count(&s.dc_a[1]) + count(&s.dc_b[0]),
        10
    );
    for o in s.dc_a.iter().chain(&s.dc_b) {
        assert_eq!(o.stats().duplicate_request_ids, 0);
    }

    // A client's Idempotency-Key alone makes nothing resendable: the backend may ignore it.
    let keyed = send_n(&c, 10, |c, i| {
        c.post(s.url(&format!("/k/{i}")))
            .header("Idempotency-Key", format!("key-{i}"))
            .body("x")
    })
    .await;
    assert!(
        keyed.iter().all(|(st, _)| *st == 503 || *st == 502),
        "{keyed:?}"
    );
    assert_eq!(
        count(&s.dc_a[0]) + count(&s.dc_a[1]) + count(&s.dc_b[0]),
        20,
        "each keyed POST reached exactly one server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_post_resendable_where_the_route_says_so() {
    let s = Stack::start(2, 1, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 1000, eject_for: 30s }".into());
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    retries: { idempotency_key: true }\n".into();
    });
    all_up(&s);
    let c = http_client();
    s.dc_a[0].force_status(503);
    s.dc_a[1].force_status(502);
    // The backend honours the key: a1, a2, then b1 answers.
    let keyed = send_n(&c, 10, |c, i| {
        c.post(s.url(&format!("/k/{i}")))
            .header("Idempotency-Key", format!("key-{i}"))
            .body("x")
    })
    .await;
    assert!(all_ok(&keyed), "{keyed:?}");
    assert_eq!(served_by(&keyed, "b1"), 10);
    // Without the key, a POST is still sent once.
    let plain = send_n(&c, 4, |c, i| c.post(s.url(&format!("/p/{i}"))).body("x")).await;
    assert!(
        plain.iter().all(|(st, _)| *st == 503 || *st == 502),
        "{plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_is_left_after_per_try_for_safe_requests_only() {
    let a1 = Origin::start("a1", &["--latency", "/api=2s"]);
    let a2 = Origin::start("a2", &[]);
    let s = Stack::start_with(
        vec![a1, a2],
        vec![],
        |y| {
            fast(y, "30s");
            y.upstream
                .push("timeouts: { connect: 1s, response: 10s, per_try: 300ms }".into());
            y.upstream
                .push("outlier: { consecutive_failures: 1000, eject_for: 30s }".into());
        },
        true,
    );
    all_up(&s);
    let c = http_client();
    let gets = send_n(&c, 10, |c, i| c.get(s.url(&format!("/api/{i}")))).await;
    assert!(all_ok(&gets), "{gets:?}");
    assert_eq!(served_by(&gets, "a2"), 10, "{gets:?}");
    assert!(
        s.dc_a[0].stats().requests_excluding_health() >= 1,
        "round robin sent some GETs to the slow a1 first"
    );
    assert!(
        metric(
            &s.rempart,
            "rempart_retries_total{kind=\"timeout\",upstream=\"ent\"}"
        ) >= 1.0
    );

    // POSTs wait for the slow server (response timeout), they are not sent elsewhere.
    let posts = send_n(&c, 2, |c, i| c.post(s.url(&format!("/api/p{i}"))).body("x")).await;
    assert!(all_ok(&posts), "{posts:?}");
    assert_eq!(served_by(&posts, "a1"), 1, "{posts:?}");
    let total: u64 = s
        .dc_a
        .iter()
        .map(|o| o.stats().by_method.get("POST").copied().unwrap_or(0))
        .sum();
    assert_eq!(total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_through_the_admin_api() {
    let s = Stack::start(2, 1, |y| fast(y, "1s"));
    all_up(&s);
    let c = http_client();
    let r = &s.rempart;
    let a1 = s.dc_a[0].addr();
    let (st, body) = r.admin_post(&format!("/upstreams/ent/servers/{a1}/drain"));
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["drained"], true);
    let gets = send_n(&c, 10, |c, i| c.get(s.url(&format!("/d/{i}")))).await;
    assert_eq!(served_by(&gets, "a2"), 10, "{gets:?}");
    let (st, _) = r.admin_post(&format!("/upstreams/ent/servers/{a1}/undrain"));
    assert_eq!(st, 200);

    let (st, body) = r.admin_post("/upstreams/ent/datacenters/dc-a/drain");
    assert_eq!(st, 200, "{body}");
    assert_eq!(dc_status(r, "dc-a")["state"], "draining");
    assert_eq!(active(r).as_deref(), Some("dc-b"));
    let gets = send_n(&c, 10, |c, i| c.get(s.url(&format!("/e/{i}")))).await;
    assert_eq!(served_by(&gets, "b1"), 10, "{gets:?}");
    let (st, _) = r.admin_post("/upstreams/ent/datacenters/dc-a/undrain");
    assert_eq!(st, 200);
    wait_active(r, Some("dc-a"), Duration::from_secs(10));
    let gets = send_n(&c, 10, |c, i| c.get(s.url(&format!("/f/{i}")))).await;
    assert_eq!(served_by(&gets, "b1"), 0, "{gets:?}");
    assert!(r.stderr().contains("drained by the admin API"));

    for path in [
        "/upstreams/nope/datacenters/dc-a/drain",
        "/upstreams/ent/datacenters/nope/drain",
        "/upstreams/ent/servers/127.0.0.1:1/drain",
        "/upstreams/ent/servers/not-an-address/drain",
        "/upstreams/ent/datacenters/dc-a/explode",
    ] {
        let (st, body) = r.admin_post(path);
        assert_eq!(st, 404, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datacenter_down_answers_the_maintenance_page() {
    let s = Stack::start(1, 1, |y| {
        fast(y, "1s");
        y.extra = "pages:\n  maintenance: conf/pages/maintenance.html\n".into();
    });
    all_up(&s);
    let c = http_client();
    s.dc_a[0].fail_health();
    s.dc_b[0].fail_health();
    wait_active(&s.rempart, None, Duration::from_secs(10));
    let r = c.get(s.url("/anything")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After: {retry_after:?}"
    );
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let body = r.text().await.unwrap();
    let page = std::fs::read_to_string(repo_path("conf/pages/maintenance.html")).unwrap();
    assert_eq!(body, page);
    let fr = body.find("indisponible").unwrap_or(usize::MAX);
    let en = body.find("unavailable").unwrap_or(0);
    assert!(fr < en, "French first, English below");

    let r = c
        .get(s.url("/api"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "maintenance");
    let (a, b) = s.served();
    assert_eq!((a, b), (vec![0], vec![0]), "nothing reached an origin");

    s.dc_b[0].heal();
    wait_active(&s.rempart, Some("dc-b"), Duration::from_secs(10));
    let gets = send_n(&c, 5, |c, i| c.get(s.url(&format!("/ok/{i}")))).await;
    assert!(all_ok(&gets), "{gets:?}");
    assert!(s.rempart.stderr().contains("every datacenter is down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_a_retry_storm() {
    let s = Stack::start(2, 1, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 100000, eject_for: 30s }".into());
        y.upstream
            .push("retries: { attempts: 2, budget: 10% }".into());
    });
    all_up(&s);
    let c = http_client();
    for o in s.dc_a.iter().chain(&s.dc_b) {
        o.force_status(503);
    }
    let n = 300;
    let started = Instant::now();
    let gets = send_n(&c, n, |c, i| c.get(s.url(&format!("/storm/{i}")))).await;
    let elapsed = started.elapsed();
    assert!(
        gets.iter().all(|(st, _)| *st == 503),
        "the last 503 is passed on"
    );
    let (a, b) = s.served();
    let total: u64 = a.iter().chain(&b).sum();
    let retries = total - n as u64;
    // Without a budget: n × 3 = 900 requests. The budget allows 10% of the requests of the
    // last 10 s, at least 5/s (50 per 10 s window); a slow machine gets one more window per 10 s.
    let windows = 1 + elapsed.as_secs() / 10;
    let allowed = (n as u64 / 10).max(50) * windows;
    eprintln!("retry budget: {n} requests, {retries} retries in {elapsed:?} (allowed {allowed})");
    assert!(
        retries >= 30,
        "retries are made within the budget: {retries}"
    );
    assert!(
        retries <= allowed,
        "{retries} retries for {n} requests: the budget did not hold"
    );
    assert_eq!(
        metric(
            &s.rempart,
            "rempart_retries_total{kind=\"status\",upstream=\"ent\"}"
        ) as u64,
        retries
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_replay_buffer_fails_over_only_on_connect_failure() {
    let big = vec![b'x'; 200 * 1024];
    let mut s = Stack::start(2, 0, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 100000, eject_for: 30s }".into());
    });
    all_up(&s);
    let c = http_client();
    // a2 answers 503 to everything: a large PUT that reaches it is not sent again.
    s.dc_a[1].force_status(503);
    let before = s.dc_a[0].stats().requests_excluding_health();
    let puts = send_n(&c, 4, |c, i| {
        c.put(s.url(&format!("/big/{i}"))).body(big.clone())
    })
    .await;
    let to_a2 = puts.iter().filter(|(st, _)| *st != 200).count() as u64;
    let to_a1 = s.dc_a[0].stats().requests_excluding_health() - before;
    assert_eq!(to_a1 + to_a2, 4, "no large PUT was sent twice: {puts:?}");
    assert_eq!(s.dc_a[1].stats().requests_excluding_health(), to_a2);
    // Small PUTs are retried on a1.
    let small = send_n(&c, 4, |c, i| c.put(s.url(&format!("/small/{i}"))).body("x")).await;
    assert!(all_ok(&small), "{small:?}");

    // a1 refuses connections: a large POST never reached it, so it goes to a2 (which now
    // answers normally).
    s.dc_a[1].answer_normally();
    s.dc_a[0].kill();
    let a2_posts = s.dc_a[1]
        .stats()
        .by_method
        .get("POST")
        .copied()
        .unwrap_or(0);
    let posts = send_n(&c, 4, |c, i| {
        c.post(s.url(&format!("/moved/{i}"))).body(big.clone())
    })
    .await;
    assert!(all_ok(&posts), "{posts:?}");
    assert_eq!(served_by(&posts, "a2"), 4);
    assert_eq!(
        s.dc_a[1]
            .stats()
            .by_method
            .get("POST")
            .copied()
            .unwrap_or(0)
            - a2_posts,
        4,
        "each large POST reached a2 once"
    );
    assert!(
        metric(
            &s.rempart,
            "rempart_retries_total{kind=\"connect\",upstream=\"ent\"}"
        ) >= 1.0,
        "a large POST went to the dead a1 first and was retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_ejections_and_health_survive_a_reload() {
    let s = Stack::start(2, 1, |y| {
        fast(y, "30s");
        y.upstream
            .push("outlier: { consecutive_failures: 3, eject_for: 60s }".into());
    });
    all_up(&s);
    let c = http_client();
    let r = &s.rempart;
    s.dc_a[0].force_status(503);
    let gets = send_n(&c, 10, |c, i| c.get(s.url(&format!("/r/{i}")))).await;
    assert!(all_ok(&gets), "{gets:?}");
    let (st, body) = r.admin_post("/upstreams/ent/datacenters/dc-a/drain");
    assert_eq!(st, 200, "{body}");
    assert_eq!(active(r).as_deref(), Some("dc-b"));

    let (st, body) = r.admin_post("/reload");
    assert_eq!(st, 200, "{body}");
    let v = r.admin_json("/status");
    assert!(v["generation"].as_u64().is_some_and(|g| g >= 2), "{v}");
    assert_eq!(dc_status(r, "dc-a")["state"], "draining");
    assert_eq!(active(r).as_deref(), Some("dc-b"));
    let a1 = s.dc_a[0].addr().to_string();
    let a1_status = dc_status(r, "dc-a")["servers"]
        .as_array()
        .and_then(|v| v.iter().find(|srv| srv["address"] == a1.as_str()).cloned())
        .unwrap();
    assert_eq!(a1_status["ejected"], true, "{a1_status}");
    assert_eq!(a1_status["health"], "up", "{a1_status}");
    let gets = send_n(&c, 5, |c, i| c.get(s.url(&format!("/after/{i}")))).await;
    assert_eq!(served_by(&gets, "b1"), 5, "{gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_right_after_start_wait_for_the_first_checks() {
    // Servers start unknown; a request that comes before the first checks (a fresh start, an
    // upgrade) waits for them rather than getting the maintenance page.
    let origins = vec![Origin::start("a1", &[]), Origin::start("a2", &[])];
    let s = Stack::start_with(
        origins,
        vec![],
        |y| {
            y.upstream = vec![
                "health_check: { path: /healthz, interval: 1s, timeout: 1s, rise: 2, fall: 2 }"
                    .into(),
            ];
        },
        false,
    );
    let c = http_client();
    let gets = send_n(&c, 5, |c, i| c.get(s.url(&format!("/early/{i}")))).await;
    assert!(all_ok(&gets), "{gets:?}");
}
