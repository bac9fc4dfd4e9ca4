//! The abuse shield with distinct client addresses (SPEC section 5): a flooder among browsing
//! pupils is held to its limit and then banned, the ban is lifted through the admin API;
//! dry_run counts without refusing; a per-account `form:` limit stops one username tried from
//! many addresses; `X-Forwarded-For` counts only from trusted proxies; a banned address is
//! refused on every request of a pipeline, whatever it sends, and nothing reaches the origin.
//!
//! Clients bind distinct loopback sources (127.0.0.x). Every loop is bounded in count and time;
//! no assertion depends on how fast the machine is, except upper bounds computed from the time
//! the test measured itself.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use integration_tests::*;

/// A client whose connections leave from `ip` (a 127.0.0.x address).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .http1_only()
        .local_address(ip.parse::<IpAddr>().expect("a source address"))
        .build()
        .expect("build the HTTP client")
}

fn metric(s: &Stack, line_start: &str) -> Option<f64> {
    s.rempart.metric(line_start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooder_is_held_to_its_limit_then_banned_while_twenty_others_browse() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n".into();
        y.extra = "limits:\n  per_ip: { key: client_ip, rate: 5/s, burst: 10 }\nshield:\n  ban: { after: 30, within: 1m, for: 10m }\n".into();
    });

    const BROWSERS: usize = 20;
    const PAGES: usize = 8; // under the burst: every page must be served, however fast
    const FLOOD: usize = 300;

    let started = Instant::now();
    let flooder = {
        let c = client_from("127.0.0.100");
        let url = s.url("/flood");
        tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(FLOOD);
            let mut first_429 = None;
            for _ in 0..FLOOD {
                match c.get(&url).send().await {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        if st == 429 && first_429.is_none() {
                            let h = r.headers().clone();
                            let body = r.text().await.unwrap_or_default();
                            first_429 = Some((h, body));
                        }
                        statuses.push(st);
                    }
                    Err(e) => panic!("the flooder's request failed at the transport level: {e}"),
                }
            }
            (statuses, first_429)
        })
    };
    let mut browsers = Vec::new();
    for i in 0..BROWSERS {
        let c = client_from(&format!("127.0.0.{}", 2 + i));
        let url = s.url(&format!("/page/{i}"));
        browsers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..PAGES {
                let st = c
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(st);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            statuses
        }));
    }
    for (i, b) in browsers.into_iter().enumerate() {
        let statuses = b.await.unwrap();
        assert!(
            statuses.iter().all(|st| *st == 200),
            "browser 127.0.0.{} got {statuses:?} while another address flooded",
            2 + i
        );
    }
    let (statuses, first_429) = flooder.await.unwrap();
    let elapsed = started.elapsed();
    let passed = statuses.iter().filter(|st| **st == 200).count();
    let limited = statuses.iter().filter(|st| **st == 429).count();
    let banned = statuses.iter().filter(|st| **st == 403).count();
    assert_eq!(
        passed + limited + banned,
        FLOOD,
        "only 200, 429 and 403: {statuses:?}"
    );
    // burst + rate x time (+1 for rounding), from the time this test measured.
    let ceiling = 10 + (5.0 * elapsed.as_secs_f64()).ceil() as usize + 1;
    assert!(
        passed <= ceiling,
        "the flooder got {passed} requests through in {elapsed:?}; the limit allows at most {ceiling}"
    );
    assert!(limited >= 30, "the flood was not refused: {statuses:?}");
    assert!(
        banned > 0,
        "after 30 refusals within a minute the flooder must be banned (403): {statuses:?}"
    );
    // Once banned, banned to the end.
    let first_ban = statuses.iter().position(|st| *st == 403).unwrap();
    assert!(statuses[first_ban..].iter().all(|st| *st == 403));

    // The 429 answer: headers and a body naming the limit.
    let (headers, body) = first_429.expect("a 429 answer");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(headers["ratelimit-policy"], "\"per_ip\";q=10;w=2");
    assert!(headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"per_ip\";r=0;t="));
    assert!(body.contains("per_ip"), "the body names the limit: {body}");

    // Only what was let through reached the origin.
    let st = s.dc_a[0].stats();
    assert_eq!(st.path("/flood"), passed as u64, "{:?}", st.by_path);
    assert_eq!(st.path("/page"), (BROWSERS * PAGES) as u64);

    // Observability: metrics, status, access log.
    assert_eq!(
        metric(&s, "rempart_rate_limited_total{limit=\"per_ip\"}"),
        Some(limited as f64)
    );
    let status = s.rempart.admin_json("/status");
    assert_eq!(status["limits"]["per_ip"]["refusals"], limited as u64);
    assert_eq!(status["bans"]["count"], 1);
    assert_eq!(status["bans"]["recent"][0]["ip"], "127.0.0.100");
    let bans = s.rempart.admin_json("/bans");
    assert_eq!(bans["total"], 1, "{bans}");
    assert_eq!(bans["bans"].as_array().map(Vec::len), Some(1), "{bans}");
    let logged = poll_until(Duration::from_secs(3), || {
        s.rempart
            .stdout()
            .lines()
            .any(|l| {
                l.contains("\"reason\":\"rate_limited\"") && l.contains("\"limit\":\"per_ip\"")
            })
            .then_some(())
    });
    assert!(logged.is_some(), "the access log names the limit");

    // Lift the ban through the admin API.
    let flooder = client_from("127.0.0.100");
    let (code, body) = s.rempart.admin_call("DELETE", "/bans/127.0.0.100");
    assert_eq!(code, 200, "{body}");
    let (code, _) = s.rempart.admin_call("DELETE", "/bans/127.0.0.100");
    assert_eq!(code, 404, "no ban left to lift");
    let st = flooder.get(s.url("/after")).send().await.unwrap().status();
    assert_ne!(st, 403, "the ban was lifted");
    assert_eq!(s.rempart.admin_json("/bans")["bans"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_address_is_refused_on_every_request_of_a_pipeline() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n".into();
        y.extra = "limits:\n  per_ip: { key: client_ip, rate: 1/h, burst: 1 }\nshield:\n  ban: { after: 1, within: 1m, for: 1h }\n".into();
    });
    // 127.0.0.1 (whose first request the stack's start may have spent) is refused once, and
    // that refusal bans it.
    let attacker = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for i in 0..5 {
        let st = attacker
            .get(s.url(&format!("/try/{i}")))
            .send()
            .await
            .unwrap()
            .status();
        statuses.push(st.as_u16());
        if st.as_u16() == 403 {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&403),
        "refused, then banned: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let before = s.dc_a[0].stats().requests_excluding_health();
    let banned_before = metric(&s, "rempart_responses_generated_total{reason=\"banned\"}");
    assert_eq!(banned_before, Some(1.0));

    // The attacker pipelines three requests in one write on a keep-alive connection: a GET, a
    // HEAD and a GET asking for JSON that closes. Each gets its own 403, in order, the HEAD's
    // without a body; the connection closes after the third as it asked.
    let pipeline = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c?q=1 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n";
    let a = raw_exchange(s.ports.http, pipeline, Duration::from_secs(5))
        .await
        .expect("the pipeline is answered");
    assert_eq!(a.statuses(), vec![403, 403, 403], "{}", a.describe());
    assert!(a.closed, "Connection: close is honoured: {}", a.describe());
    let text = a.text();
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{}", a.describe());
    for answer in &answers {
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let retry_after: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("retry-after: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("a Retry-After: {answer:?}"));
        assert!(retry_after > 3000, "an hour's ban: {retry_after}");
    }
    assert!(
        answers[0].ends_with("for a while.\n"),
        "a text body: {:?}",
        answers[0]
    );
    assert!(
        answers[1].ends_with("\r\n\r\n"),
        "no body for HEAD: {:?}",
        answers[1]
    );
    let json = answers[2].split("\r\n\r\n").nth(1).unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(json).expect("a JSON body");
    assert_eq!(value["reason"], "banned");

    // A POST with a body: refused, and the connection closed rather than its body being read
    // as the next request (the body here is a request of its own).
    let smuggled = b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let a = raw_exchange(s.ports.http, smuggled, Duration::from_secs(5))
        .await
        .expect("the POST is answered");
    assert_eq!(a.statuses(), vec![403], "{}", a.describe());
    assert!(a.closed, "{}", a.describe());

    // Another address is served meanwhile, and the origin saw only what was let through.
    let other = client_from("127.0.0.20");
    let st = other.get(s.url("/other")).send().await.unwrap().status();
    assert_eq!(st.as_u16(), 200);
    let origin = s.dc_a[0].stats();
    assert_eq!(
        origin.requests_excluding_health(),
        before + 1,
        "{:?}",
        origin.by_path
    );
    assert_eq!(origin.path("/smuggled"), 0);

    // Every refusal counted and logged as the pipeline counts and logs a ban.
    assert_eq!(
        metric(&s, "rempart_responses_generated_total{reason=\"banned\"}"),
        Some(5.0),
        "the ban that was seen first, the three of the pipeline and the POST"
    );
    assert_eq!(
        metric(
            &s,
            "rempart_requests_total{route=\"default\",status=\"403\"}"
        ),
        Some(5.0)
    );
    let logged = poll_until(Duration::from_secs(3), || {
        let lines = s.rempart.access_log_lines();
        let banned: Vec<_> = lines
            .iter()
            .filter(|l| l["reason"] == "banned")
            .cloned()
            .collect();
        (banned.len() == 5).then_some(banned)
    })
    .expect("five access-log lines with reason banned");
    let pipelined = logged
        .iter()
        .find(|l| l["path"] == "/c")
        .expect("the third request of the pipeline logged, without its query");
    assert_eq!(pipelined["client_ip"], "127.0.0.1");
    assert_eq!(pipelined["status"], 403);
    assert_eq!(pipelined["route"], "default");
    assert_eq!(pipelined["method"], "GET");
    assert_eq!(pipelined["request_id"].as_str().map(str::len), Some(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_address_is_refused_on_every_request_of_a_pipeline_then_banned() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip, everyone]\n".into();
        y.extra = "limits:\n  per_ip: { key: client_ip, rate: 1/h, burst: 1 }\n  everyone: { key: global, rate: 1000/s, burst: 1000 }\nshield:\n  ban: { after: 3, within: 1m, for: 1h }\n".into();
    });
    let before = s.dc_a[0].stats().requests_excluding_health();
    // Eight requests in one write from 127.0.0.1: at most one goes through (the stack's start
    // may have spent it), the next three are refused with the limit's headers, the third
    // refusal bans the address, and every request after is answered 403.
    let one = "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n";
    let last = "GET /flood HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let pipeline = format!("{}{last}", one.repeat(7));
    let a = raw_exchange(s.ports.http, pipeline.as_bytes(), Duration::from_secs(5))
        .await
        .expect("the pipeline is answered");
    let text = a.text();
    // The origin's JSON body has no final newline: split on the status lines themselves.
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    let statuses: Vec<&str> = answers.iter().map(|a| a.get(..3).unwrap_or("")).collect();
    assert_eq!(answers.len(), 8, "one answer per request: {}", a.describe());
    assert!(a.closed, "{}", a.describe());
    let passed = statuses.iter().take_while(|st| **st == "200").count();
    assert!(passed <= 1, "{statuses:?}");
    assert_eq!(
        &statuses[passed..passed + 3],
        &["429", "429", "429"],
        "{statuses:?}"
    );
    assert!(
        statuses[passed + 3..].iter().all(|st| *st == "403"),
        "banned after the third refusal: {statuses:?}"
    );
    for answer in &answers[passed..passed + 3] {
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(head.contains("\r\nretry-after: "), "{answer:?}");
        assert!(
            head.contains("\r\nratelimit-policy: \"per_ip\";q=1;w=3600"),
            "{answer:?}"
        );
        assert!(
            head.contains("\r\nratelimit: \"per_ip\";r=0;t="),
            "{answer:?}"
        );
        assert!(
            answer.contains("per_ip"),
            "the body names the limit: {answer:?}"
        );
    }
    let origin = s.dc_a[0].stats();
    assert_eq!(
        origin.requests_excluding_health(),
        before + passed as u64,
        "{:?}",
        origin.by_path
    );
    assert_eq!(
        metric(&s, "rempart_rate_limited_total{limit=\"per_ip\"}"),
        Some(3.0)
    );
    let status = s.rempart.admin_json("/status");
    assert_eq!(status["bans"]["recent"][0]["ip"], "127.0.0.1", "{status}");
    let logged = poll_until(Duration::from_secs(3), || {
        let lines = s.rempart.access_log_lines();
        let refused = lines
            .iter()
            .filter(|l| l["reason"] == "rate_limited" && l["limit"] == "per_ip")
            .count();
        (refused == 3).then_some(())
    });
    assert!(logged.is_some(), "three log lines naming the limit");

    // Another address is still served: the global limit was not charged by the refusals.
    let other = client_from("127.0.0.30");
    let st = other.get(s.url("/other")).send().await.unwrap().status();
    assert_eq!(st.as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_refuses_nothing_but_counts() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [watch]\n".into();
        y.extra = "limits:\n  watch: { key: client_ip, rate: 1/min, burst: 2, mode: dry_run }\nshield:\n  ban: { after: 1, within: 1m, for: 10m }\n".into();
    });
    let c = client_from("127.0.0.30");
    for _ in 0..10 {
        let st = c.get(s.url("/dry")).send().await.unwrap().status();
        assert_eq!(st, 200, "dry_run refuses nothing");
    }
    assert_eq!(s.dc_a[0].stats().path("/dry"), 10);
    let status = s.rempart.admin_json("/status");
    assert_eq!(status["limits"]["watch"]["mode"], "dry_run");
    assert_eq!(
        status["limits"]["watch"]["refusals"], 8,
        "8 of 10 requests would have been refused"
    );
    assert_eq!(
        metric(&s, "rempart_rate_limited_total{limit=\"watch\"}"),
        Some(8.0)
    );
    assert_eq!(status["bans"]["count"], 0, "dry_run bans nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_limit_stops_one_account_tried_from_many_addresses() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: login\n    match: { path_prefix: /auth/login }\n    upstream: ent\n    limits: [per_account]\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
        y.extra =
            "limits:\n  per_account: { key: \"form:username\", rate: 3/min, burst: 3 }\n".into();
    });
    let mut statuses = Vec::new();
    for i in 0..12 {
        let c = client_from(&format!("127.0.1.{}", 1 + i));
        let body = format!("username=Victim&password=guess{i}");
        let r = c
            .post(s.url("/auth/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        if st == 200 {
            // Read for the key, and still forwarded whole.
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["body_len"], body.len() as u64);
        }
        statuses.push(st);
    }
    assert_eq!(
        statuses.iter().filter(|st| **st == 200).count(),
        3,
        "three tries of one account pass, from whatever address: {statuses:?}"
    );
    assert!(statuses[3..].iter().all(|st| *st == 429), "{statuses:?}");
    assert_eq!(s.dc_a[0].stats().logins_total, 3);

    // The same account in JSON, another case: the same bucket.
    let c = client_from("127.0.1.100");
    let st = c
        .post(s.url("/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"username":"victim","password":"x"}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 429);
    // Another account from the same address passes.
    let r = c
        .post(s.url("/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"username":"alice","password":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A body too large to read is still forwarded whole.
    let big = vec![b'a'; 100 * 1024];
    let r = c
        .post(s.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], 100 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("trusted_proxies: [127.0.0.250/32]".into());
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n".into();
        y.extra = "limits:\n  per_ip: { key: client_ip, rate: 1/min, burst: 2 }\n".into();
    });
    let proxy = client_from("127.0.0.250");
    let get = |c: &reqwest::Client, xff: &str| {
        c.get(s.url("/xff"))
            .header("x-forwarded-for", xff.to_string())
            .send()
    };
    // Through the trusted proxy: each client behind it has its own bucket.
    for _ in 0..2 {
        assert_eq!(get(&proxy, "203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(get(&proxy, "203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(
        get(&proxy, "198.51.100.9, 203.0.113.2")
            .await
            .unwrap()
            .status(),
        200,
        "the rightmost untrusted address is the client"
    );
    // IPv6 clients behind the proxy are grouped by /64.
    assert_eq!(get(&proxy, "2001:db8:1:2::1").await.unwrap().status(), 200);
    assert_eq!(
        get(&proxy, "2001:db8:1:2::ffff").await.unwrap().status(),
        200
    );
    assert_eq!(
        get(&proxy, "2001:db8:1:2:aaaa::1").await.unwrap().status(),
        429,
        "a third address of the same /64 shares its bucket"
    );
    assert_eq!(get(&proxy, "2001:db8:1:3::1").await.unwrap().status(), 200);

    // From an untrusted peer, the header is ignored: rotating it changes nothing.
    let spoofer = client_from("127.0.0.60");
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(
            get(&spoofer, &format!("192.0.2.{i}"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
}
