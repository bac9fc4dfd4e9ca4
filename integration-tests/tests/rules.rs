//! The client cannot bend the rules. Each test is an attack written as an attacker writes it
//! (raw sockets, crafted headers and bodies, many source addresses) against a rule an operator
//! wrote in the YAML, and asserts what that rule must mean:
//!
//! - a route's limit holds however the path is spelled (`//auth/login`, `/%61uth/login`...),
//!   and ambiguous paths are refused before any backend sees them;
//! - invented school codes do not multiply a client's share of the login queue;
//! - a pass is earned by a successful login only, and pass holders take at most their share;
//! - a refused shared (`global`) limit bans nobody behind a school's NAT;
//! - a `form:` limit cannot be dodged by trailing bytes, field-name case or the query string;
//! - forwarded identity headers reach the backend whole from trusted peers, never forged;
//! - `shield.deny` applies to each request's client, and a reload cuts open connections;
//! - the admin API refuses cross-origin, unmarked and DNS-rebinding calls, and will not listen
//!   everywhere without a token;
//! - a waiting-room ticket keeps its one place across a restart, and only one place.
//!
//! Clients leave from distinct loopback addresses (127.0.x.y). Orderings in the queue tests are
//! decided by the queue (admissions are paused while the line fills, then resumed), and read
//! from the origin's record of what it received (`--record-requests`, `X-Test-Id`). Every loop
//! and wait is bounded.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use integration_tests::h2raw::{kind, setting, H2Conn};
use integration_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A client whose connections leave from `ip` (a 127.x.y.z address); no redirects followed.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3))
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<IpAddr>().expect("a source address"))
        .build()
        .expect("build the HTTP client")
}

/// An answer read from a raw connection.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    /// Lowercase names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A chunked body at the start of `rest`: (body, bytes used), None when incomplete.
fn dechunk_len(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = rest.len();
    let mut body = Vec::new();
    for _ in 0..100_000 {
        let eol = find(rest, b"\r\n")?;
        let line = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let e = find(rest, b"\r\n")?;
                rest = &rest[e + 2..];
                if e == 0 {
                    return Some((body, start - rest.len()));
                }
            }
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    None
}

/// One complete HTTP/1.x answer at the start of `data`: (answer, bytes used). An answer without
/// a length is complete only when `eof`.
fn parse_response(data: &[u8], eof: bool) -> Option<(Resp, usize)> {
    let end = find(data, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &data[end + 4..];
    let has = |name: &str, value: &str| {
        headers
            .iter()
            .any(|(k, v)| k == name && v.to_ascii_lowercase().contains(value))
    };
    let (body, used) = if has("transfer-encoding", "chunked") {
        dechunk_len(rest)?
    } else if let Some((_, n)) = headers.iter().find(|(k, _)| k == "content-length") {
        let n: usize = n.parse().ok()?;
        if rest.len() < n {
            return None;
        }
        (rest[..n].to_vec(), n)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        (Vec::new(), 0)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    Some((
        Resp {
            status,
            headers,
            body,
        },
        end + 4 + used,
    ))
}

/// A raw HTTP/1.1 connection from a chosen source address, read one answer at a time.
struct Http1Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Http1Conn {
    async fn connect_from(src: &str, addr: SocketAddr) -> Http1Conn {
        let ip: IpAddr = src.parse().expect("a source address");
        let stream = integration_tests::h2raw::tcp_connect(addr, Some(ip), Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("connect {addr} from {src}: {e}"));
        Http1Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next answer; None when the server closed (or reset) the connection first, or
    /// nothing complete came within `timeout`.
    async fn read_response(&mut self, timeout: Duration) -> Option<Resp> {
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some((r, used)) = parse_response(&self.buf, self.eof) {
                self.buf.drain(..used);
                return Some(r);
            }
            if self.eof {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server closes the connection within `timeout` (anything it sends before is
    /// dropped).
    async fn closed_within(&mut self, timeout: Duration) -> bool {
        if self.eof {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.eof = true;
                    return true;
                }
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// One request on a fresh connection from `src`: the answer (panics when none comes).
async fn raw_from(src: &str, addr: SocketAddr, request: &str) -> Resp {
    let mut c = Http1Conn::connect_from(src, addr).await;
    c.send(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write {request:?}: {e}"));
    c.read_response(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer to {request:?} from {src}"))
}

/// `GET {path}` with `Connection: close`, as it is written on the wire.
fn raw_get(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Connection: close\r\n\r\n")
}

fn queue_status(s: &Stack, queue: &str) -> Value {
    s.rempart.admin_json("/status")["queues"][queue].clone()
}

/// Wait until `queue` has `n` requests waiting.
fn wait_waiting(s: &Stack, queue: &str, n: u64) {
    let got = poll_until(Duration::from_secs(10), || {
        (queue_status(s, queue)["waiting"].as_u64() == Some(n)).then_some(())
    });
    assert!(
        got.is_some(),
        "expected {n} waiting in {queue}; status: {}",
        queue_status(s, queue)
    );
}

fn pause(s: &Stack, queue: &str) {
    let (code, body) = s.rempart.admin_post(&format!("/queues/{queue}/pause"));
    assert_eq!(code, 200, "pause {queue}: {body}");
}

fn resume(s: &Stack, queue: &str) {
    let (code, body) = s.rempart.admin_post(&format!("/queues/{queue}/resume"));
    assert_eq!(code, 200, "resume {queue}: {body}");
}

/// The `X-Test-Id` of the `/auth/login` requests the origin received, in arrival order.
fn login_order(o: &Origin) -> Vec<String> {
    o.requests()
        .into_iter()
        .filter(|r| r.path == "/auth/login")
        .map(|r| r.test_id.unwrap_or_default())
        .collect()
}

/// Wait (bounded) until the origin has received at least `n` logins; their test ids in order.
fn wait_logins(o: &Origin, n: usize, timeout: Duration) -> Vec<String> {
    poll_until(timeout, || {
        let order = login_order(o);
        (order.len() >= n).then_some(order)
    })
    .unwrap_or_else(|| {
        panic!(
            "the origin received fewer than {n} logins within {timeout:?}: {:?}",
            login_order(o)
        )
    })
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A login POST of tenant `uai`, tagged `test_id` for the origin's record.
fn login_post(
    c: &reqwest::Client,
    s: &Stack,
    uai: &str,
    test_id: &str,
    username: &str,
) -> reqwest::RequestBuilder {
    c.post(s.url("/auth/login"))
        .header("X-ENT-UAI", uai)
        .header("X-Test-Id", test_id)
        .header("Content-Type", FORM)
        .body(format!("username={username}&password=secret"))
}

const LOGIN_ROUTES: &str = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n";

/// One origin with `args` (`--record-requests` added) and rempart in front, `tweak` applied.
fn queue_stack(args: &[&str], tweak: impl FnOnce(&mut ProxyYaml)) -> Stack {
    let mut all = vec!["--record-requests"];
    all.extend_from_slice(args);
    let origin = Origin::start("a1", &all);
    Stack::start_with(vec![origin], vec![], tweak, true)
}

// ---------------------------------------------------------------------------------------------
// 1. Path spellings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_login_path_counts_toward_the_login_limit_and_ambiguous_ones_are_refused(
) {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: login\n    match: { path_prefix: /auth/login, ignore_case: true }\n    upstream: ent\n    limits: [login_per_ip]\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
        y.extra =
            "limits:\n  login_per_ip: { key: client_ip, rate: 1/min, burst: 1, ban: false }\n"
                .into();
    });
    let addr = s.ports.http;

    // The plain path: one login a minute per address.
    let first = raw_from("127.0.8.1", addr, &raw_get("/auth/login", "")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = raw_from("127.0.8.1", addr, &raw_get("/auth/login", "")).await;
    assert_eq!(
        second.status,
        429,
        "the second login within the minute: {}",
        second.text()
    );

    // Each spelling, from fresh addresses: after a plain login it is refused (it is checked
    // against the login route's limit), and before one it uses the address's only login (it is
    // charged to that limit).
    let spellings = [
        "//auth/login",
        "/x/../auth/login",
        "/./auth/login",
        "/%61uth/login",
        "/auth//login",
        "/auth;jsessionid=1/login",
        "/AUTH/Login",
    ];
    for (i, spelled) in spellings.iter().enumerate() {
        let checked = format!("127.0.8.{}", 10 + 2 * i);
        let r = raw_from(&checked, addr, &raw_get("/auth/login", "")).await;
        assert_eq!(r.status, 200, "plain login from {checked}: {}", r.text());
        let r = raw_from(&checked, addr, &raw_get(spelled, "")).await;
        assert_eq!(
            r.status,
            429,
            "{spelled} after a plain login from the same address must hit the login limit, got {}: {}",
            r.status,
            r.text()
        );

        let charged = format!("127.0.8.{}", 11 + 2 * i);
        let r = raw_from(&charged, addr, &raw_get(spelled, "")).await;
        assert_eq!(
            r.status,
            200,
            "{spelled} alone from {charged}: {}",
            r.text()
        );
        let r = raw_from(&charged, addr, &raw_get("/auth/login", "")).await;
        assert_eq!(
            r.status,
            429,
            "{spelled} must have used {charged}'s one login of the minute, got {}: {}",
            r.status,
            r.text()
        );
    }

    // The upstream gets the path that matched, normalised.
    let r = raw_from("127.0.8.100", addr, &raw_get("/a/../%62/./page", "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["path"],
        "/b/page",
        "the origin must receive the normalised path"
    );

    // Strict (the default): what a backend could read as another path is refused, and reaches
    // no backend.
    let before = s.dc_a[0].stats().requests_excluding_health();
    for (i, ambiguous) in [
        "/auth%2Flogin",
        "/auth%2flogin",
        "/auth%5Clogin",
        "/auth/login%00",
        "/auth/%zzlogin",
        "/..;/auth/login",
        "/x/..;/auth/login",
    ]
    .iter()
    .enumerate()
    {
        let src = format!("127.0.8.{}", 120 + i);
        let r = raw_from(&src, addr, &raw_get(ambiguous, "")).await;
        assert_eq!(
            r.status,
            400,
            "{ambiguous} must be refused in strict mode: {}",
            r.text()
        );
        assert!(
            r.text().contains("path_rejected"),
            "{ambiguous}: the answer names path_rejected: {}",
            r.text()
        );
        let r = raw_from(
            &src,
            addr,
            &raw_get(ambiguous, "Accept: application/json\r\n"),
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["reason"], "path_rejected", "{ambiguous}");
    }
    assert_eq!(
        s.dc_a[0].stats().requests_excluding_health(),
        before,
        "no refused path reached the origin"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Tenants

/// The queue YAML of the tenant tests: `tenant_rules` are the lines under the queue about
/// tenants.
fn tenant_queue(tenant_rules: &str) -> String {
    format!(
        "login_queues:\n  logins:\n    concurrency: 2\n    tenant: header:X-ENT-UAI\n{tenant_rules}    hold: 15s\n    per_client_waiting: 100\n"
    )
}

/// One address cycling 20 invented school codes (2 logins each) and 20 pupils of 0750001A from
/// their own addresses, all in line before admissions resume; the test ids of the first `n`
/// admitted.
async fn cycler_against_a_school(s: &Stack, n: usize) -> Vec<String> {
    pause(s, "logins");
    let mut tasks = Vec::new();
    let cycler = client_from("127.0.3.1");
    for i in 0..40 {
        let code = format!("{:07}Z", 9_900_000 + (i % 20));
        tasks.push(spawn_send(login_post(
            &cycler,
            s,
            &code,
            &format!("cycler-{i}"),
            &format!("x{i}"),
        )));
    }
    for i in 0..20 {
        let pupil = client_from(&format!("127.0.2.{}", 1 + i));
        tasks.push(spawn_send(login_post(
            &pupil,
            s,
            "0750001A",
            &format!("pupil-{i}"),
            &format!("eleve{i}"),
        )));
    }
    wait_waiting(s, "logins", 60);
    let st = queue_status(s, "logins");
    resume(s, "logins");
    let order = wait_logins(&s.dc_a[0], n, Duration::from_secs(20));
    for t in &tasks {
        t.abort();
    }
    eprintln!(
        "queue while full: {st}\nfirst admissions: {:?}",
        &order[..n]
    );
    order[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_school_codes_share_one_tenant_when_the_schools_are_listed() {
    let s = queue_stack(&["--login-cost", "1s"], |y| {
        y.routes = LOGIN_ROUTES.into();
        y.extra = tenant_queue(
            "    tenants:\n      list: [0750001A, 0750002B, 0750003C]\n      unknown_weight: 1\n",
        );
    });
    const N: usize = 12;
    let first = cycler_against_a_school(&s, N).await;
    let school = first.iter().filter(|id| id.starts_with("pupil-")).count();
    // Two tenants (0750001A and "unknown"), served in turn: about 6 of 12. Twenty-one tenants
    // (each invented code its own) would give the school about 1 in 21.
    assert!(
        school * 10 >= N * 4,
        "the real school got {school} of the first {N} admissions ({first:?}): the 20 invented \
         codes must share one tenant, not take 20 shares"
    );
    let st = queue_status(&s, "logins");
    assert_eq!(st["admitted"].as_u64().map(|a| a >= N as u64), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_school_codes_are_invisible_while_in_line_with_a_list() {
    let s = queue_stack(&["--login-cost", "1s"], |y| {
        y.routes = LOGIN_ROUTES.into();
        y.extra = tenant_queue(
            "    tenants:\n      list: [0750001A, 0750002B, 0750003C]\n      unknown_weight: 1\n",
        );
    });
    pause(&s, "logins");
    let cycler = client_from("127.0.3.2");
    let mut tasks = Vec::new();
    for i in 0..6 {
        tasks.push(spawn_send(login_post(
            &cycler,
            &s,
            &format!("FAKE{i:04}"),
            &format!("cycler-{i}"),
            "x",
        )));
    }
    // No code at all goes to "unknown" too.
    tasks.push(spawn_send(
        cycler
            .post(s.url("/auth/login"))
            .header("Content-Type", FORM)
            .body("username=nocode&password=x"),
    ));
    let pupil = client_from("127.0.2.50");
    tasks.push(spawn_send(login_post(&pupil, &s, "0750002B", "p", "e")));
    wait_waiting(&s, "logins", 8);
    let st = queue_status(&s, "logins");
    assert_eq!(st["tenants_waiting"], 2, "unknown and 0750002B only: {st}");
    assert_eq!(st["waiting_per_tenant"]["unknown"], 7, "{st}");
    assert_eq!(st["waiting_per_tenant"]["0750002B"], 1, "{st}");
    resume(&s, "logins");
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_list_one_client_names_at_most_max_tenants_per_client() {
    let s = queue_stack(&["--login-cost", "1s"], |y| {
        y.routes = LOGIN_ROUTES.into();
        y.extra = tenant_queue("    max_tenants_per_client: 2\n");
    });
    const N: usize = 16;
    let first = cycler_against_a_school(&s, N).await;
    let school = first.iter().filter(|id| id.starts_with("pupil-")).count();
    // The cycler has at most 3 tenants (its first 2 codes, then "unknown") against the
    // school's 1: about 6 of 16. Uncapped (21 tenants), the school would get at most 1.
    assert!(
        school * 4 >= N,
        "the real school got {school} of the first {N} admissions ({first:?}): the cycler must \
         be held to 2 tenants of its own plus unknown"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A pass is earned by a successful login only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_earns_no_pass_and_a_session_cookie_earns_one() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: codes\n    match: { path_prefix: /status/ }\n    upstream: ent\n    login_queue: plain\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
        y.extra = "login_queues:\n  logins:\n    concurrency: 2\n    tenant: header:X-ENT-UAI\n    pass:\n      on_status: [200]\n      on_cookie: ENTSESSION\n      ttl: 10m\n  plain:\n    concurrency: 2\n    tenant: header:X-ENT-UAI\n    pass:\n      ttl: 10m\n".into();
    });
    let c = client_from("127.0.10.1");
    let login = |password: &str| {
        c.post(s.url("/auth/login"))
            .header("X-ENT-UAI", "0750001A")
            .header("Content-Type", FORM)
            .body(format!("username=eleve&password={password}"))
            .send()
    };

    // A wrong password: 401, and no pass.
    let r = login("wrong").await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        set_cookie_line(r.headers(), "rempart_pass").is_none(),
        "a 401 must not earn a pass: {:?}",
        set_cookie_line(r.headers(), "rempart_pass")
    );
    // The right one: 200 with the session cookie, and a pass.
    let r = login("secret").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        set_cookie(r.headers(), "ENTSESSION").is_some(),
        "the origin's session"
    );
    let pass = set_cookie_line(r.headers(), "rempart_pass")
        .expect("a 200 that sets ENTSESSION earns a pass (on_cookie: ENTSESSION)");
    assert!(pass.contains("Max-Age=600"), "ttl: 10m: {pass}");
    // A 200 without the session cookie: no pass.
    let r = c
        .get(s.url("/auth/profile"))
        .header("X-ENT-UAI", "0750001A")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(set_cookie(r.headers(), "ENTSESSION").is_none());
    assert!(
        set_cookie_line(r.headers(), "rempart_pass").is_none(),
        "on_cookie: ENTSESSION: a 200 without it earns nothing"
    );

    // The default: any 2xx or 3xx, nothing else.
    for (code, earns) in [
        (401, false),
        (403, false),
        (404, false),
        (500, false),
        (204, true),
        (302, true),
    ] {
        let r = c
            .get(s.url(&format!("/status/{code}")))
            .header("X-ENT-UAI", "0750001A")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code);
        assert_eq!(
            set_cookie_line(r.headers(), "rempart_pass").is_some(),
            earns,
            "pass on a {code} with the default on_status (2xx and 3xx only)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Pass holders take at most their share

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_holder_with_random_usernames_takes_at_most_its_share() {
    let s = queue_stack(&["--login-cost", "1s"], |y| {
        y.routes = LOGIN_ROUTES.into();
        y.extra = "login_queues:\n  logins:\n    concurrency: 2\n    tenant: header:X-ENT-UAI\n    hold: 15s\n    per_client_waiting: 100\n    pass:\n      ttl: 10m\n      max_uses_per_minute: 30\n      max_share: 50%\n".into();
    });
    // The attacker logs in once and keeps the pass.
    let attacker = client_from("127.0.5.1");
    let r = login_post(&attacker, &s, "0750001A", "earn", "attacker")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pass = set_cookie(r.headers(), "rempart_pass").expect("a pass after a successful login");
    let _ = r.bytes().await;
    s.dc_a[0].reset();

    pause(&s, "logins");
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(spawn_send(
            login_post(
                &attacker,
                &s,
                "0750001A",
                &format!("pass-{i}"),
                &format!("rnd{:08x}", 0x9e37_79b9u32.wrapping_mul(i + 1)),
            )
            .header("Cookie", format!("rempart_pass={pass}")),
        ));
    }
    for (school, third) in [("0750001A", 6), ("0750002B", 7)] {
        for i in 0..10 {
            let pupil = client_from(&format!("127.0.{third}.{}", 1 + i));
            tasks.push(spawn_send(login_post(
                &pupil,
                &s,
                school,
                &format!("pupil-{school}-{i}"),
                &format!("eleve{i}"),
            )));
        }
    }
    wait_waiting(&s, "logins", 40);
    let st = queue_status(&s, "logins");
    assert_eq!(
        st["waiting_with_pass"], 20,
        "the 20 carry a valid pass: {st}"
    );
    resume(&s, "logins");
    const N: usize = 12;
    let order = wait_logins(&s.dc_a[0], N, Duration::from_secs(20));
    for t in &tasks {
        t.abort();
    }
    let first = &order[..N];
    let with_pass = first.iter().filter(|id| id.starts_with("pass-")).count();
    // max_share 50% of concurrency 2: one slot for passes, the other for the schools.
    assert!(
        with_pass <= N / 2 + 1,
        "requests with a pass got {with_pass} of the first {N} admissions ({first:?}); \
         max_share: 50% allows about half"
    );
    assert!(
        N - with_pass >= N / 2 - 1,
        "the two schools must get the other half: {first:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A refused shared limit bans nobody

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_global_limit_bans_nobody_behind_a_school_nat() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: login\n    match: { path_prefix: /auth/login }\n    upstream: ent\n    limits: [login_global, login_per_account]\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
        y.extra = "limits:\n  login_global: { key: global, rate: 10/min, burst: 10 }\n  login_per_account: { key: \"form:username\", rate: 5/min, burst: 5 }\nshield:\n  ban: { after: 3, within: 1m, for: 10m }\n".into();
    });
    // A whole school behind one address, every pupil their own account.
    let nat = client_from("127.0.9.1");
    let mut statuses = Vec::new();
    for i in 0..100 {
        let st = nat
            .post(s.url("/auth/login"))
            .header("Content-Type", FORM)
            .body(format!("username=eleve{i}&password=secret"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(st);
    }
    let ok = statuses.iter().filter(|st| **st == 200).count();
    let limited = statuses.iter().filter(|st| **st == 429).count();
    assert_eq!(ok + limited, 100, "only 200 and 429 (no ban): {statuses:?}");
    assert!(
        (10..=12).contains(&ok),
        "the global burst lets about 10 through: {statuses:?}"
    );
    // The school's next page view.
    let r = nat.get(s.url("/")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "a refusal by a bucket shared with the whole country must not ban the school"
    );
    let status = s.rempart.admin_json("/status");
    assert_eq!(status["bans"]["count"], 0, "{}", status["bans"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Form limits fail closed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_limit_cannot_be_dodged_by_trailing_bytes_case_or_the_query_string() {
    let s = Stack::start(1, 0, |y| {
        let mut routes = String::new();
        for part in ["a", "b", "c", "d"] {
            routes.push_str(&format!(
                "  - name: login_{part}\n    match: {{ path_prefix: /{part}/login }}\n    upstream: ent\n    limits: [per_account_{part}]\n"
            ));
        }
        routes.push_str("  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n");
        y.routes = routes;
        let mut limits = String::from("limits:\n");
        for part in ["a", "b", "c", "d"] {
            limits.push_str(&format!(
                "  per_account_{part}: {{ key: \"form:username\", rate: 2/min, burst: 2 }}\n"
            ));
        }
        y.extra = limits;
    });
    let c = client_from("127.0.11.1");
    // Each case: requests sent one after the other, their statuses.
    let send_all = |reqs: Vec<(String, &'static str, Vec<u8>)>| {
        let c = c.clone();
        let base = s.url("");
        async move {
            let mut v = Vec::new();
            for (path, ctype, body) in reqs {
                let r = c
                    .post(format!("{base}{path}"))
                    .header("Content-Type", ctype)
                    .body(body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("POST {path}: {e}"));
                v.push(r.status().as_u16());
            }
            v
        }
    };
    let req =
        |path: &str, ctype: &'static str, body: &[u8]| (path.to_string(), ctype, body.to_vec());
    const JSON: &str = "application/json";

    // a) JSON followed by trailing bytes: read like Jackson, the first value counts.
    let trailing = ["x", "}", "]", " {\"username\":\"other\"}", "\n#"];
    let reqs = trailing
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let body = format!("{{\"username\":\"victim\",\"password\":\"guess{i}\"}}{t}");
            req("/a/login", JSON, body.as_bytes())
        })
        .collect();
    let got = send_all(reqs).await;
    assert_eq!(
        got,
        [200, 200, 429, 429, 429],
        "JSON with trailing bytes is read like Jackson: the first value names victim"
    );
    let got = send_all(vec![req(
        "/a/login",
        JSON,
        br#"{"username":"victim","password":"x"}"#,
    )])
    .await;
    assert_eq!(
        got,
        [429],
        "those bodies were charged to victim (the first JSON value), not elsewhere"
    );
    let got = send_all(vec![req(
        "/a/login",
        JSON,
        br#"{"username":"alice","password":"x"}"#,
    )])
    .await;
    assert_eq!(got, [200], "another account is untouched");

    // b) The field name in any case, form or JSON.
    let got = send_all(vec![
        req("/b/login", FORM, b"Username=victim&password=1"),
        req("/b/login", FORM, b"USERNAME=victim&password=2"),
        req("/b/login", JSON, br#"{"userName":"victim","password":"3"}"#),
        req("/b/login", FORM, b"UserName=victim&password=4"),
        req("/b/login", JSON, br#"{"USERNAME":"victim","password":"5"}"#),
    ])
    .await;
    assert_eq!(
        got,
        [200, 200, 429, 429, 429],
        "Username, USERNAME, userName, UserName: one field, one account"
    );

    // c) Credentials in the query string count as the form field.
    let got = send_all(vec![
        req("/c/login?username=victim", FORM, b"password=1"),
        req("/c/login", FORM, b"username=victim&password=2"),
        req("/c/login?username=victim&password=3", FORM, b""),
        req(
            "/c/login?username=victim&password=4",
            "text/plain",
            b"hello",
        ),
        req("/c/login", FORM, b"username=victim&password=5"),
    ])
    .await;
    assert_eq!(
        got,
        [200, 200, 429, 429, 429],
        "username in the query string is the same account as in the body (also when the body \
         is of another type: the backend reads the query parameter whatever the body)"
    );

    // d) Bodies whose field cannot be read share one key: rotating names inside them gains
    // nothing. The large one names its user after the first 64 KiB.
    let mut big = b"pad=".to_vec();
    big.extend_from_slice(&vec![b'a'; 70 * 1024]);
    big.extend_from_slice(b"&username=u9&password=x");
    let got = send_all(vec![
        req("/d/login", JSON, br#"[{"username":"u1","password":"x"}]"#),
        req(
            "/d/login",
            JSON,
            br#"{"username":"u2","username":"u3","password":"x"}"#,
        ),
        req("/d/login", FORM, b"username=u4&username=u5&password=x"),
        req("/d/login", JSON, br#""u6""#),
        req(
            "/d/login",
            JSON,
            br#"{"username":"u7","password":"x","username":"u8"}"#,
        ),
        req("/d/login", FORM, &big),
    ])
    .await;
    assert_eq!(
        got,
        [200, 200, 429, 429, 429, 429],
        "unreadable bodies (not an object, duplicates with different values, too large) share \
         one key"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Forwarded identity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_identity_reaches_the_backend_whole_and_is_never_forged() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("trusted_proxies: [127.0.0.1/32]".into());
    });
    let addr = s.ports.http;
    // A trusted proxy that wrote its X-Forwarded-For on two lines.
    let r = raw_from(
        "127.0.0.1",
        addr,
        "GET /xff HTTP/1.1\r\nHost: ent.example.test\r\nX-Forwarded-For: 198.51.100.7\r\nX-Forwarded-For: 10.0.0.2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"],
        "198.51.100.7, 10.0.0.2, 127.0.0.1",
        "every line, in order, then the peer"
    );

    // An untrusted peer forging the other identity headers.
    let forged = "GET /forged HTTP/1.1\r\nHost: ent.example.test\r\nForwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nConnection: close\r\n\r\n";
    let r = raw_from("127.0.0.9", addr, forged).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = r.json()["headers"].clone();
    assert!(
        headers.get("forwarded").is_none(),
        "Forwarded from an untrusted peer must not reach the backend: {headers}"
    );
    assert!(
        headers.get("x-real-ip").is_none(),
        "X-Real-IP from an untrusted peer must not reach the backend: {headers}"
    );
    drop(s);

    // forwarded: rewrite: they are Rempart's own.
    let s = Stack::start(1, 0, |y| {
        y.server.push("trusted_proxies: [127.0.0.1/32]".into());
        y.server.push("forwarded: rewrite".into());
    });
    let r = raw_from("127.0.0.9", s.ports.http, forged).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = r.json()["headers"].clone();
    assert_eq!(
        headers["forwarded"], "for=127.0.0.9;proto=http;host=ent.example.test",
        "{headers}"
    );
    assert_eq!(headers["x-real-ip"], "127.0.0.9", "{headers}");
}

// ---------------------------------------------------------------------------------------------
// 8. Deny per request

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_applies_to_the_client_behind_a_trusted_proxy() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("trusted_proxies: [127.0.0.1/32]".into());
        y.extra = "shield:\n  deny: [203.0.113.0/24]\n".into();
    });
    let c = http_client();
    let get = |xff: &str, accept: &str| {
        c.get(s.url("/behind-proxy"))
            .header("X-Forwarded-For", xff.to_string())
            .header("Accept", accept.to_string())
            .send()
    };
    let r = get("198.51.100.1", "*/*").await.unwrap();
    assert_eq!(r.status(), 200, "another client of the proxy");
    let r = get("203.0.113.5", "application/json").await.unwrap();
    assert_eq!(
        r.status(),
        403,
        "a denied client behind a trusted proxy is refused"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "denied", "{v}");
    let r = get("198.51.100.1, 203.0.113.77", "text/plain")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("denied"));
    assert_eq!(
        s.dc_a[0].stats().path("/behind-proxy"),
        1,
        "denied requests reach no backend"
    );
}

/// Reload with `ip/32` added to `shield.deny`.
fn deny_by_reload(s: &mut Stack, ip: &str) {
    let yaml = s.yaml.replace(
        "deny: [203.0.113.0/24]",
        &format!("deny: [203.0.113.0/24, {ip}/32]"),
    );
    assert_ne!(yaml, s.yaml);
    s.rempart.write_config(&yaml);
    let (code, body) = s.rempart.admin_post("/reload");
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_added_by_reload_answers_the_next_request_of_an_open_http1_connection_and_closes_it()
{
    let mut s = Stack::start(1, 0, |y| {
        y.extra = "shield:\n  deny: [203.0.113.0/24]\n".into();
    });
    let mut h1 = Http1Conn::connect_from("127.0.0.20", s.ports.http).await;
    h1.send(b"GET /before HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let r = h1
        .read_response(Duration::from_secs(5))
        .await
        .expect("an answer before the reload");
    assert_eq!(r.status, 200);

    deny_by_reload(&mut s, "127.0.0.20");
    assert!(
        !h1.closed_within(Duration::from_millis(300)).await,
        "the idle connection was closed at the reload without an answer: its next request must \
         be answered 403 denied (with Connection: close), so that the client is told why"
    );

    // The next request on the open connection gets 403 denied, Connection: close, and the
    // connection ends.
    let wrote = h1
        .send(b"GET /after HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
        .await;
    match h1.read_response(Duration::from_secs(5)).await {
        Some(r) => {
            assert_eq!(
                r.status,
                403,
                "the next request of a newly denied client: {}",
                r.text()
            );
            assert_eq!(r.json()["reason"], "denied");
            assert_eq!(
                r.header("connection")
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("close"),
                "{:?}",
                r.headers
            );
        }
        None => panic!(
            "the open connection got no answer after the reload (write: {wrote:?}, closed by \
             the server: {}, {} bytes unparsed: {:?}); its next request must be answered 403 \
             denied with Connection: close",
            h1.eof,
            h1.buf.len(),
            String::from_utf8_lossy(&h1.buf)
        ),
    }
    assert!(
        h1.closed_within(Duration::from_secs(5)).await,
        "the connection is closed after the 403"
    );
    assert_eq!(s.dc_a[0].stats().path("/after"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_added_by_reload_ends_an_open_http2_connection() {
    let mut s = Stack::start(1, 0, |y| {
        y.extra = "shield:\n  deny: [203.0.113.0/24]\n".into();
    });
    let source: IpAddr = "127.0.0.21".parse().unwrap();
    let mut h2 = H2Conn::connect_tls_from(s.ports.https, "localhost", Some(source))
        .await
        .expect("TLS with ALPN h2");
    h2.handshake(&[(setting::HEADER_TABLE_SIZE, 0)], Duration::from_secs(5))
        .await
        .expect("HTTP/2 handshake");
    h2.send_request(1, "GET", "/before-h2", "localhost", &[], true)
        .await
        .unwrap();
    let f = h2
        .read_until(Duration::from_secs(5), |f| {
            f.kind == kind::HEADERS && f.stream_id == 1
        })
        .await
        .unwrap()
        .expect("an HTTP/2 answer before the reload");
    assert_eq!(f.status(), Some(200));

    deny_by_reload(&mut s, "127.0.0.21");

    // The connection gets a GOAWAY (or is closed), and no further request is served on it.
    let sent = h2
        .send_request(3, "GET", "/after-h2", "localhost", &[], true)
        .await;
    let mut status_3 = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent.is_ok() {
        let left = deadline.saturating_duration_since(Instant::now());
        match h2.read_frame(left).await {
            Ok(Some(f)) if f.stream_id == 3 && f.kind == kind::HEADERS => {
                status_3 = f.status();
                break;
            }
            Ok(Some(f)) if f.stream_id == 3 && f.kind == kind::RST_STREAM => break,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    assert_ne!(
        status_3,
        Some(200),
        "an open HTTP/2 connection of a newly denied client must not be served: {}",
        h2.outcome().summary()
    );
    let outcome = if h2.outcome().ended() {
        h2.outcome()
    } else {
        h2.wait_close_or_goaway(Duration::from_secs(5)).await
    };
    assert!(
        outcome.ended(),
        "the HTTP/2 connection must get a GOAWAY or be closed: {}",
        outcome.summary()
    );
    // A new connection from the denied address is not served either.
    if let Ok(mut again) = H2Conn::connect_tls_from(s.ports.https, "localhost", Some(source)).await
    {
        if again
            .handshake(&[(setting::HEADER_TABLE_SIZE, 0)], Duration::from_secs(3))
            .await
            .is_ok()
            && again
                .send_request(1, "GET", "/new-conn", "localhost", &[], true)
                .await
                .is_ok()
        {
            let f = again
                .read_until(Duration::from_secs(3), |f| {
                    f.kind == kind::HEADERS && f.stream_id == 1
                })
                .await;
            if let Ok(Some(f)) = f {
                assert_ne!(f.status(), Some(200), "a new connection is denied too");
            }
        }
    }
    assert_eq!(s.dc_a[0].stats().path("/after-h2"), 0);
    assert_eq!(s.dc_a[0].stats().path("/new-conn"), 0);
}

// ---------------------------------------------------------------------------------------------
// 9. Admin

fn dc_state(s: &Stack, dc: &str) -> String {
    let st = s.rempart.admin_json("/status");
    st["upstreams"]["ent"]["datacenters"]
        .as_array()
        .and_then(|dcs| dcs.iter().find(|d| d["name"] == dc))
        .and_then(|d| d["state"].as_str())
        .unwrap_or_else(|| panic!("no datacenter {dc} in /status: {st}"))
        .to_string()
}

const DRAIN: &str = "/upstreams/ent/datacenters/dc-a/drain";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_admin_call_is_refused_and_drains_nothing() {
    let s = Stack::start(1, 1, |_| {});
    let admin = s.ports.admin;
    // A page on evil.example makes the browser of an operator POST to the admin address.
    let (code, body) = s.rempart.admin_raw(
        "POST",
        DRAIN,
        &[("Origin", "https://evil.example"), ("X-Rempart-Admin", "1")],
    );
    assert_eq!(code, 403, "a cross-origin POST must be refused: {body}");
    assert_ne!(dc_state(&s, "dc-a"), "draining", "nothing was drained");
    // Reading is refused too when another origin asks.
    let (code, body) = s
        .rempart
        .admin_raw("GET", "/status", &[("Origin", "https://evil.example")]);
    assert_eq!(code, 403, "a cross-origin GET must be refused: {body}");
    let (code, _) = s.rempart.admin_raw("GET", "/status", &[("Origin", "null")]);
    assert_eq!(
        code, 403,
        "Origin: null (a sandboxed page) is another origin"
    );
    // The admin address itself (its dashboard) may.
    let own = format!("http://{admin}");
    let (code, body) = s.rempart.admin_raw(
        "POST",
        DRAIN,
        &[("Origin", own.as_str()), ("X-Rempart-Admin", "1")],
    );
    assert_eq!(code, 200, "the admin's own origin: {body}");
    assert_eq!(dc_state(&s, "dc-a"), "draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutating_admin_call_without_the_marker_header_is_refused() {
    let s = Stack::start(1, 1, |_| {});
    // A plain form POST (what a browser sends cross-site without a preflight).
    let (code, body) = s.rempart.admin_raw(
        "POST",
        DRAIN,
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert!(
        (400..500).contains(&code),
        "a POST without X-Rempart-Admin (and no token configured) must be refused, got {code}: {body}"
    );
    let (code, body) = s.rempart.admin_raw("DELETE", "/bans/127.0.0.1", &[]);
    assert!(
        (400..500).contains(&code) && code != 404,
        "a DELETE without X-Rempart-Admin must be refused before anything else, got {code}: {body}"
    );
    assert_ne!(dc_state(&s, "dc-a"), "draining", "nothing was drained");
    // The harness sends the header, as the operator's tools do.
    let (code, body) = s.rempart.admin_post(DRAIN);
    assert_eq!(code, 200, "{body}");
    assert_eq!(dc_state(&s, "dc-a"), "draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_rebound_host_name() {
    let s = Stack::start(1, 0, |y| {
        y.admin.push("allowed_hosts: [admin.rempart.test]".into());
    });
    let port = s.ports.admin.port();
    // evil.example resolved to 127.0.0.1 by its owner: the browser sends Host: evil.example.
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        let (code, body) = s.rempart.admin_raw("GET", "/status", &[("Host", &host)]);
        assert_eq!(code, 403, "Host: {host} must be refused: {body}");
    }
    let (code, body) = s.rempart.admin_raw(
        "POST",
        DRAIN,
        &[("Host", "evil.example"), ("X-Rempart-Admin", "1")],
    );
    assert_eq!(code, 403, "a mutating call with a foreign Host: {body}");
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("admin.rempart.test:{port}"),
    ] {
        let (code, body) = s.rempart.admin_raw("GET", "/status", &[("Host", &host)]);
        assert_eq!(code, 200, "Host: {host} is the admin's own: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_on_every_interface_without_a_token_refuses_to_start() {
    let mut y = ProxyYaml::new(vec![free_addr()], vec![]);
    y.tls = false;
    let port = free_port();
    y.ports.admin = SocketAddr::from(([0, 0, 0, 0], port));
    let yaml = y.render();
    assert!(yaml.contains(&format!("address: 0.0.0.0:{port}")), "{yaml}");
    match rempart_run_expect_exit(&yaml, Duration::from_secs(10)) {
        Ok(f) => {
            assert_eq!(
                f.code,
                Some(1),
                "exit code 1; stderr: {}\nstdout: {}",
                f.stderr,
                f.stdout
            );
            assert!(
                f.stderr.contains("admin.token") || f.stdout.contains("admin.token"),
                "the message names admin.token: {}",
                f.stderr
            );
        }
        Err(e) => panic!("rempart started with an open admin API and no token: {e}"),
    }
    // With a token, the same address is the operator's choice.
    y.admin.push("token: a-long-admin-token-for-tests".into());
    let r = Rempart::start(&y.render());
    assert!(r.is_ok(), "with a token it starts: {:?}", r.err());
}

// ---------------------------------------------------------------------------------------------
// 10. Tickets

/// The queue of the ticket tests: concurrency 1, a short hold, paused while the line fills.
fn ticket_yaml(y: &mut ProxyYaml, runtime_dir: Option<&str>, secrets: Option<&str>) {
    y.routes = LOGIN_ROUTES.into();
    if let Some(dir) = runtime_dir {
        y.server.push(format!("runtime_dir: {dir}"));
    }
    let secrets = secrets
        .map(|s| format!("    secrets: {s}\n"))
        .unwrap_or_default();
    y.extra = format!(
        "login_queues:\n  logins:\n    concurrency: 1\n    tenant: header:X-ENT-UAI\n    hold: 2s\n    per_client_waiting: 100\n    ticket_ttl: 2m\n{secrets}"
    );
}

/// Five clients wait their hold out while admissions are paused; the last one's ticket (four
/// arrived before it).
async fn ticket_after_four_others(s: &Stack) -> String {
    pause(s, "logins");
    let c = client_from("127.0.0.1");
    let mut before = Vec::new();
    for i in 0..4u64 {
        before.push(spawn_send(login_post(
            &c,
            s,
            "0750001A",
            &format!("early-{i}"),
            "x",
        )));
        wait_waiting(s, "logins", i + 1);
    }
    let r = login_post(&c, s, "0750001A", "ticket-first", "t")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the waiting room after the hold");
    let ticket = set_cookie(r.headers(), "rempart_ticket").expect("a ticket with the waiting room");
    for t in before {
        assert_eq!(t.await.unwrap().0, 503);
    }
    ticket
}

/// After the restart: three new arrivals, then the old ticket; the ticket goes first.
async fn the_old_ticket_goes_before_new_arrivals(s: &Stack, ticket: &str) {
    pause(s, "logins");
    s.dc_a[0].reset();
    let c = client_from("127.0.0.1");
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        tasks.push(spawn_send(login_post(
            &c,
            s,
            "0750001A",
            &format!("new-{i}"),
            "n",
        )));
        wait_waiting(s, "logins", i + 1);
    }
    tasks.push(spawn_send(
        login_post(&c, s, "0750001A", "ticket-back", "t")
            .header("Cookie", format!("rempart_ticket={ticket}")),
    ));
    wait_waiting(s, "logins", 4);
    resume(s, "logins");
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let order = login_order(&s.dc_a[0]);
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(
        order[0], "ticket-back",
        "a ticket issued before the restart keeps its place before those who came after: {order:?}"
    );
}

/// A private directory (mode 0700, as Rempart wants its key kept) for `server.runtime_dir`.
fn runtime_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("rempart-runtime-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn restart(s: &mut Stack, yaml: &str) {
    s.rempart.signal(libc::SIGTERM);
    assert!(
        s.rempart.wait_exit(Duration::from_secs(15)).is_some(),
        "rempart stops on SIGTERM"
    );
    s.rempart = start_rempart(yaml);
    if let Err(e) = wait_routable(s.ports.http, Duration::from_secs(10)) {
        panic!("{e}\n{}", s.rempart.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_issued_before_a_restart_keeps_its_place_after_it() {
    let runtime = runtime_dir();
    let dir = runtime.path().to_str().unwrap().to_string();
    let mut s = queue_stack(&["--login-cost", "150ms"], |y| {
        ticket_yaml(y, Some(&dir), None)
    });
    let ticket = ticket_after_four_others(&s).await;
    let yaml = s.yaml.clone();
    restart(&mut s, &yaml);
    the_old_ticket_goes_before_new_arrivals(&s, &ticket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_signed_with_a_shared_secret_survives_a_restart_and_a_rotation() {
    let old = "an-old-secret-of-at-least-thirty-two-bytes-0001";
    let new = "a-new-secret-of-at-least-thirty-two-bytes-00002";
    let runtime = runtime_dir();
    let dir = runtime.path().to_str().unwrap().to_string();
    let mut s = queue_stack(&["--login-cost", "150ms"], |y| {
        ticket_yaml(y, Some(&dir), Some(&format!("[{old}]")))
    });
    let ticket = ticket_after_four_others(&s).await;
    // The operator rotates: the new secret signs, the old one still verifies. The runtime
    // directory is emptied so that only the secrets can carry the ticket.
    for e in std::fs::read_dir(runtime.path()).unwrap().flatten() {
        let _ = std::fs::remove_file(e.path());
        let _ = std::fs::remove_dir_all(e.path());
    }
    let yaml = s.yaml.replace(
        &format!("secrets: [{old}]"),
        &format!("secrets: [{new}, {old}]"),
    );
    assert_ne!(yaml, s.yaml);
    restart(&mut s, &yaml);
    the_old_ticket_goes_before_new_arrivals(&s, &ticket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_ticket_holds_one_place() {
    let s = queue_stack(&["--login-cost", "150ms"], |y| ticket_yaml(y, None, None));
    pause(&s, "logins");
    let c = client_from("127.0.0.1");
    // A waits its hold out and leaves with a ticket.
    let r = login_post(&c, &s, "0750001A", "first-visit", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let ticket = set_cookie(r.headers(), "rempart_ticket").expect("a ticket");
    // Two later arrivals.
    let mut later = Vec::new();
    for i in 0..2u64 {
        later.push(spawn_send(login_post(
            &c,
            &s,
            "0750001A",
            &format!("later-{i}"),
            "l",
        )));
        wait_waiting(&s, "logins", i + 1);
    }
    // The ticket, twice at once.
    let copies: Vec<_> = (0..2)
        .map(|i| {
            spawn_send(
                login_post(&c, &s, "0750001A", &format!("copy-{i}"), "a")
                    .header("Cookie", format!("rempart_ticket={ticket}"))
                    .header("Accept", "application/json"),
            )
        })
        .collect();
    // Both in line, or one of them already answered with the waiting room.
    let settled = poll_until(Duration::from_secs(10), || {
        let waiting = queue_status(&s, "logins")["waiting"].as_u64().unwrap_or(0);
        let done = copies.iter().filter(|t| t.is_finished()).count() as u64;
        (waiting + done == 4).then_some(())
    });
    assert!(settled.is_some(), "status: {}", queue_status(&s, "logins"));
    resume(&s, "logins");
    for t in later {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let mut copy_status = Vec::new();
    for t in copies {
        copy_status.push(t.await.unwrap().0);
    }
    let order = login_order(&s.dc_a[0]);
    let pos = |id: &str| order.iter().position(|o| o == id);
    let last_later = pos("later-1").expect("later-1 admitted");
    let first_later = pos("later-0").expect("later-0 admitted");
    let early: Vec<&str> = ["copy-0", "copy-1"]
        .into_iter()
        .filter(|id| pos(id).is_some_and(|p| p < first_later))
        .collect();
    assert_eq!(
        early.len(),
        1,
        "exactly one copy of the ticket gets its early place: order {order:?}, copies answered {copy_status:?}"
    );
    for id in ["copy-0", "copy-1"] {
        if early.contains(&id) {
            continue;
        }
        match pos(id) {
            Some(p) => assert!(
                p > last_later,
                "the second copy joins at the back, behind later arrivals: {order:?}"
            ),
            None => assert!(
                copy_status.contains(&503),
                "the second copy, when not admitted, got the waiting room: {copy_status:?}"
            ),
        }
    }
}
