//! The login queue and the waiting room through the real binary (SPEC section 6): JSON and HTML
//! waiting-room answers with Retry-After and the ticket, tickets keeping a place (and forged or
//! foreign ones ignored), passes going first, pause and resume, `max_waiting` and
//! `per_client_waiting`, and a client that leaves the line.
//!
//! The admin API's pause is what holds clients in line, so every ordering here is decided by
//! the queue, not by timing; with `concurrency: 1` and a login that takes 150 ms at the origin,
//! completion order is admission order.

use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

const HOLD: &str = "3s";

fn start(hold: &str, max_waiting: usize, per_client: usize) -> Stack {
    let origin = Origin::start("a1", &["--login-cost", "150ms"]);
    let extra = format!(
        "login_queues:\n  logins:\n    concurrency: 1\n    tenant: header:X-ENT-UAI\n    hold: {hold}\n    max_waiting: {max_waiting}\n    per_client_waiting: {per_client}\n    pass_ttl: 10m\n    ticket_ttl: 2m\n    secret: test-secret-for-the-queue\npages:\n  waiting_room: conf/pages/waiting-room.html\n"
    );
    Stack::start_with(
        vec![origin],
        vec![],
        |y| {
            y.server.push("trusted_proxies: [127.0.0.1/32]".into());
            y.server.push("max_connections_per_ip: 10000".into());
            y.routes = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
            y.extra = extra;
        },
        true,
    )
}

fn queue_status(s: &Stack) -> Value {
    s.rempart.admin_json("/status")["queues"]["logins"].clone()
}

/// Wait until the queue has `n` waiting.
fn wait_waiting(s: &Stack, n: u64) {
    let got = poll_until(Duration::from_secs(10), || {
        (queue_status(s)["waiting"].as_u64() == Some(n)).then_some(())
    });
    assert!(
        got.is_some(),
        "expected {n} waiting; status: {}",
        queue_status(s)
    );
}

fn pause(s: &Stack) {
    let (code, body) = s.rempart.admin_post("/queues/logins/pause");
    assert_eq!(code, 200, "{body}");
}

fn resume(s: &Stack) {
    let (code, body) = s.rempart.admin_post("/queues/logins/resume");
    assert_eq!(code, 200, "{body}");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .http1_only()
        .build()
        .expect("client")
}

/// A login request of tenant `uai` from client address `ip` (through X-Forwarded-For).
fn login(c: &reqwest::Client, s: &Stack, uai: &str, ip: &str) -> reqwest::RequestBuilder {
    c.get(s.url("/auth/login"))
        .header("X-ENT-UAI", uai)
        .header("X-Forwarded-For", ip)
}

/// Send a request in the background; the task returns (status, when it completed).
fn spawn_send(rb: reqwest::RequestBuilder) -> tokio::task::JoinHandle<(u16, Instant)> {
    tokio::spawn(async move {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        (status, Instant::now())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_room_answers_in_json_and_html_with_retry_after_and_a_ticket() {
    let s = start("500ms", 100, 10);
    let c = client();
    pause(&s);

    let r = login(&c, &s, "0123456A", "10.1.2.3")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let ticket_line = set_cookie_line(r.headers(), "rempart_ticket").expect("a ticket");
    assert!(ticket_line.contains("HttpOnly") && ticket_line.contains("Max-Age=120"));
    let v: Value = r.json().await.unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys.len(),
        4,
        "exactly queued, position, eta_seconds, tenant: {v}"
    );
    assert_eq!(v["queued"], true);
    assert_eq!(v["position"], 1);
    assert!(v["eta_seconds"].as_u64().is_some_and(|s| s >= 1), "{v}");
    assert_eq!(v["tenant"], "0123456A");

    let r = login(&c, &s, "<b>école</b>", "10.1.2.3")
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(set_cookie(r.headers(), "rempart_ticket").is_some());
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let html = r.text().await.unwrap();
    assert!(html.contains("Votre place dans la file"), "French first");
    assert!(html.contains("Your place in line"), "English below");
    assert!(!html.contains("{{"), "every placeholder filled");
    assert!(!html.contains("<b>"), "the tenant is escaped");
    assert!(html.contains("http-equiv=\"refresh\""));

    // Counted and logged as waiting_room, with the time spent in line.
    let line = s
        .rempart
        .wait_access_log(Duration::from_secs(5), |l| l["reason"] == "waiting_room")
        .expect("an access-log line with reason waiting_room");
    assert_eq!(line["status"], 503);
    assert!(
        line["queue_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    let st = queue_status(&s);
    assert_eq!(st["timed_out"], 2, "{st}");
    assert_eq!(st["paused"], true);
    let (_, metrics) = s.rempart.admin("/metrics");
    assert!(metrics
        .contains("rempart_queue_outcomes_total{outcome=\"waiting_room\",queue=\"logins\"} 2"));
    assert!(metrics.contains("rempart_queue_limit{queue=\"logins\"} 1"));
    resume(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_keeps_its_place_and_forged_or_foreign_ones_are_ignored() {
    let s = start(HOLD, 100, 10);
    let c = client();
    pause(&s);

    // T waits its hold out and leaves with a ticket.
    let r = login(&c, &s, "A", "10.1.2.3").send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ticket = set_cookie(r.headers(), "rempart_ticket").expect("a ticket");
    let mut tampered = ticket.clone().into_bytes();
    let i = tampered.len() / 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    // L arrives after T, in the same tenant.
    let late = spawn_send(login(&c, &s, "A", "10.5.5.5"));
    wait_waiting(&s, 1);
    // T comes back with its ticket; F with an altered one; X with T's ticket from elsewhere.
    let back = spawn_send(
        login(&c, &s, "A", "10.1.2.77").header("Cookie", format!("rempart_ticket={ticket}")),
    );
    wait_waiting(&s, 2);
    let forged = spawn_send(
        login(&c, &s, "A", "10.1.2.3").header("Cookie", format!("rempart_ticket={tampered}")),
    );
    let foreign = spawn_send(
        login(&c, &s, "A", "10.9.9.9").header("Cookie", format!("rempart_ticket={ticket}")),
    );
    wait_waiting(&s, 4);
    resume(&s);

    let (st_back, t_back) = back.await.unwrap();
    let (st_late, t_late) = late.await.unwrap();
    let (st_forged, t_forged) = forged.await.unwrap();
    let (st_foreign, t_foreign) = foreign.await.unwrap();
    assert_eq!([st_back, st_late, st_forged, st_foreign], [200; 4]);
    assert!(
        t_back < t_late,
        "the ticket holder goes before the later arrival"
    );
    assert!(
        t_late < t_forged,
        "an altered ticket is ignored: back of the line"
    );
    assert!(
        t_late < t_foreign,
        "a ticket from another address is ignored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_goes_first_and_pause_resume() {
    let s = start(HOLD, 100, 10);
    let c = client();

    // An admitted login gets a pass.
    let r = login(&c, &s, "A", "10.1.2.3").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let line = set_cookie_line(r.headers(), "rempart_pass").expect("a pass on the admitted answer");
    assert!(
        line.contains("Max-Age=600") && line.contains("HttpOnly"),
        "{line}"
    );
    let pass = set_cookie(r.headers(), "rempart_pass").unwrap();
    let _ = r.bytes().await;

    pause(&s);
    let first = spawn_send(login(&c, &s, "B", "10.5.5.5"));
    wait_waiting(&s, 1);
    let second = spawn_send(login(&c, &s, "A", "10.6.6.6"));
    wait_waiting(&s, 2);
    let with_pass =
        spawn_send(login(&c, &s, "A", "10.1.2.3").header("Cookie", format!("rempart_pass={pass}")));
    wait_waiting(&s, 3);
    let st = queue_status(&s);
    assert_eq!(st["paused"], true);
    assert_eq!(st["in_flight"], 0, "paused: nothing is admitted");
    assert_eq!(st["waiting_with_pass"], 1, "{st}");
    assert_eq!(st["waiting_per_tenant"]["A"], 1, "{st}");
    assert_eq!(st["waiting_per_tenant"]["B"], 1, "{st}");
    resume(&s);

    let (a, t_pass) = with_pass.await.unwrap();
    let (b, t_first) = first.await.unwrap();
    let (c2, t_second) = second.await.unwrap();
    assert_eq!([a, b, c2], [200; 3]);
    assert!(
        t_pass < t_first && t_first < t_second,
        "the pass goes first, then FIFO"
    );

    let (code, _) = s.rempart.admin_post("/queues/nope/pause");
    assert_eq!(code, 404);
    assert_eq!(queue_status(&s)["admitted"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_waiting_and_per_client_waiting_answer_at_once() {
    let s = start("20s", 2, 1);
    let c = client();
    pause(&s);

    let one = spawn_send(login(&c, &s, "A", "10.0.0.1"));
    wait_waiting(&s, 1);
    let r = login(&c, &s, "A", "10.0.0.1")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "queue_full", "per_client_waiting: {v}");

    let two = spawn_send(login(&c, &s, "B", "10.0.0.2"));
    wait_waiting(&s, 2);
    let r = login(&c, &s, "C", "10.0.0.3")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "queue_full", "max_waiting: {v}");
    // Both were answered while the hold of the first two (20 s) still runs.
    let st = queue_status(&s);
    assert_eq!(st["waiting"], 2);
    assert_eq!(st["queue_full"], 2);
    assert_eq!(st["timed_out"], 0);

    resume(&s);
    assert_eq!(one.await.unwrap().0, 200);
    assert_eq!(two.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_leaves_the_line() {
    let s = start("20s", 100, 1);
    pause(&s);
    let addr = s.ports.http;
    let req = b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\nX-ENT-UAI: A\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    // Connect, ask, and give up once in line.
    {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(req).unwrap();
        wait_waiting(&s, 1);
        conn.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            !matches!(conn.read(&mut buf), Ok(n) if n > 0),
            "no answer while paused"
        );
    }
    wait_waiting(&s, 0);
    let st = queue_status(&s);
    assert_eq!(st["abandoned"], 1, "{st}");

    // Its place is free: the same client may wait again (per_client_waiting is 1).
    let c = client();
    let again = spawn_send(login(&c, &s, "A", "10.0.0.1"));
    wait_waiting(&s, 1);
    resume(&s);
    assert_eq!(again.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_line_and_the_pause() {
    let s = start("20s", 100, 10);
    let c = client();
    pause(&s);
    let waiting = spawn_send(login(&c, &s, "A", "10.0.0.1"));
    wait_waiting(&s, 1);
    let (code, body) = s.rempart.admin_post("/reload");
    assert_eq!(code, 200, "{body}");
    let st = queue_status(&s);
    assert_eq!(st["waiting"], 1, "the line survives the reload: {st}");
    assert_eq!(st["paused"], true, "so does the pause: {st}");
    resume(&s);
    assert_eq!(waiting.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_waits_with_its_body_and_leaves_when_its_client_does() {
    let s = start("20s", 100, 1);
    let c = client();
    pause(&s);
    // Admitted after a wait: the body read while in line still reaches the origin whole.
    let form = "username=eleve&password=secret&etab=0123456A";
    let post = c
        .post(s.url("/auth/echo"))
        .header("X-ENT-UAI", "A")
        .header("X-Forwarded-For", "10.0.0.1")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form);
    let waiting = tokio::spawn(async move {
        let r = post.send().await.expect("post");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    wait_waiting(&s, 1);
    resume(&s);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["body_len"], form.len(), "{echo}");
    assert_eq!(echo["method"], "POST");

    // A form POST whose client gives up leaves the line at once.
    pause(&s);
    {
        use std::io::Write;
        let mut conn = std::net::TcpStream::connect(s.ports.http).unwrap();
        let req = format!(
            "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nX-ENT-UAI: A\r\nX-Forwarded-For: 10.0.0.2\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        );
        conn.write_all(req.as_bytes()).unwrap();
        wait_waiting(&s, 1);
    }
    wait_waiting(&s, 0);
    assert_eq!(queue_status(&s)["abandoned"], 1);
    resume(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_reset_stream_leaves_the_line_and_admission_works() {
    let s = start("20s", 100, 10);
    let h2 = h2_client(&[("localhost", s.ports.https)]);
    let url = s.https_url("localhost", "/auth/login");
    pause(&s);
    // The client gives up after a moment: its stream is reset, its place freed.
    let gives_up = h2
        .get(&url)
        .header("X-ENT-UAI", "A")
        .timeout(Duration::from_secs(3));
    let task = tokio::spawn(async move { gives_up.send().await.is_err() });
    wait_waiting(&s, 1);
    assert!(task.await.unwrap(), "no answer while paused");
    wait_waiting(&s, 0);
    assert_eq!(queue_status(&s)["abandoned"], 1);

    resume(&s);
    let r = h2.get(&url).header("X-ENT-UAI", "A").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let pass = set_cookie_line(r.headers(), "rempart_pass").expect("a pass over HTTP/2");
    assert!(
        pass.contains("; Secure"),
        "over TLS the cookie is Secure: {pass}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_only_for_a_success_answer() {
    let origin = Origin::start("a1", &[]);
    let s = Stack::start_with(
        vec![origin],
        vec![],
        |y| {
            y.routes = "  - name: login\n    match: { path_prefix: /status/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
            y.extra = "login_queues:\n  logins:\n    concurrency: 1\n    tenant: host\n".into();
        },
        true,
    );
    let c = client();
    let r = c.get(s.url("/status/500")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(
        set_cookie(r.headers(), "rempart_pass").is_none(),
        "no pass on a 5xx"
    );
    let r = c.get(s.url("/status/404")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        set_cookie(r.headers(), "rempart_pass").is_none(),
        "no pass on a 4xx (a wrong password is no login)"
    );
    let r = c.get(s.url("/status/200")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        set_cookie(r.headers(), "rempart_pass").is_some(),
        "a 2xx earns a pass (the default pass.on_status)"
    );
    // Slots are released when the request's log line is written, just after the answer.
    let released = poll_until(Duration::from_secs(5), || {
        let st = queue_status(&s);
        (st["in_flight"] == 0).then_some(st)
    });
    let st = released.unwrap_or_else(|| panic!("slots are released: {}", queue_status(&s)));
    assert_eq!(st["admitted"], 3);
}
