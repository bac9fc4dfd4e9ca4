//! Requests with a body (`Content-Length`, at most the replay buffer) forwarded by the edge
//! itself (`src/proxy/direct.rs`): the body is read whole before the request goes upstream,
//! so a client that trickles its body holds no upstream connection and no server thread; it
//! arrives whole, in order, and a request pipelined behind it is served next; a POST that
//! reached a server is not sent again, unless its route declares its POSTs replayable.
//!
//! The origin is written here: a `std::net::TcpListener` that reads each request head and its
//! `Content-Length` body, records it, and answers by path (`/drop`: closes without an answer;
//! anything else: the body echoed back), one thread per connection, every loop bounded in
//! count and time. The client is a raw `TcpStream`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::*;

/// How long the origin accepts connections, and serves one connection, at most.
const ORIGIN_LIFETIME: Duration = Duration::from_secs(120);
const MAX_CONNECTIONS: usize = 500;
const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Bytes a request head, and a body, may take at the origin.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 256 * 1024;
/// The client's bound on any one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The recording origin

/// One request as the origin read it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Seen {
    /// The paths of the request heads that reached the origin (before their body is read).
    heads: Mutex<Vec<String>>,
    requests: Mutex<Vec<Received>>,
    /// "head PATH" when a head arrives, "answered PATH" once its answer is written, in order.
    events: Mutex<Vec<String>>,
}

struct RecordingOrigin {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl RecordingOrigin {
    fn start() -> RecordingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || accept_loop(listener, seen, stop));
        }
        RecordingOrigin { addr, seen, stop }
    }

    /// The requests of `method` for `path` the origin read whole.
    fn received(&self, method: &str, path: &str) -> Vec<Received> {
        self.seen
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .cloned()
            .collect()
    }

    /// Request heads for `path` that reached the origin, bodies read or not.
    fn events(&self) -> Vec<String> {
        self.seen.events.lock().unwrap().clone()
    }

    fn heads_of(&self, path: &str) -> usize {
        self.seen
            .heads
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + ORIGIN_LIFETIME;
    let mut accepted = 0;
    while accepted < MAX_CONNECTIONS && Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                let (seen, stop) = (seen.clone(), stop.clone());
                thread::spawn(move || serve(stream, &seen, &stop));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read more bytes into `buf`; false when the connection is to be given up.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant, stop: &AtomicBool) -> bool {
    let mut chunk = [0u8; 16384];
    loop {
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
}

fn serve(mut stream: TcpStream, seen: &Seen, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + ORIGIN_LIFETIME;
    let mut buf: Vec<u8> = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_HEAD || !fill(&mut stream, &mut buf, deadline, stop) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        seen.heads.lock().unwrap().push(path.clone());
        seen.events.lock().unwrap().push(format!("head {path}"));
        let length = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return;
        }
        while buf.len() < length {
            if !fill(&mut stream, &mut buf, deadline, stop) {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        seen.requests.lock().unwrap().push(Received {
            method,
            path: path.clone(),
            body: body.clone(),
        });
        if path.ends_with("/drop") {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if path.ends_with("/slow") {
            // A login that takes its time (holds the queue's slot meanwhile).
            thread::sleep(Duration::from_millis(1500));
        }
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        if stream.write_all(&answer).is_err() {
            return;
        }
        seen.events.lock().unwrap().push(format!("answered {path}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Rempart in front of it

struct Setup {
    // Drop order: rempart first, then the origins.
    rempart: Rempart,
    origins: Vec<RecordingOrigin>,
    http: SocketAddr,
    yaml: String,
}

impl Setup {
    fn context(&self) -> String {
        format!(
            "rempart stderr:\n{}\n--- configuration ---\n{}",
            self.rempart.stderr(),
            self.yaml
        )
    }

    /// Every request of `method` for `path`, at every origin.
    fn received(&self, method: &str, path: &str) -> Vec<Received> {
        self.origins
            .iter()
            .flat_map(|o| o.received(method, path))
            .collect()
    }
}

/// Rempart in front of `servers` recording origins (one datacenter), with `routes` (YAML).
fn start(servers: usize, routes: &str, server_lines: &[&str]) -> Setup {
    start_with(servers, routes, server_lines, "")
}

/// [`start`], with `extra` top-level YAML (login queues).
fn start_with(servers: usize, routes: &str, server_lines: &[&str], extra: &str) -> Setup {
    let origins: Vec<RecordingOrigin> = (0..servers).map(|_| RecordingOrigin::start()).collect();
    let mut y = ProxyYaml::new(origins.iter().map(|o| o.addr).collect(), vec![]);
    y.tls = false;
    y.upstream.push("retries: { attempts: 3 }".into());
    y.routes = routes.into();
    y.server = server_lines.iter().map(|l| l.to_string()).collect();
    y.extra = extra.into();
    let yaml = y.render();
    let rempart = start_routable(&yaml, y.ports.http);
    Setup {
        rempart,
        origins,
        http: y.ports.http,
        yaml,
    }
}

const ONE_ROUTE: &str = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n";

/// /auth/ through a login queue of one slot (the tenant in X-ENT-UAI), the rest as ONE_ROUTE.
const QUEUE_ROUTES: &str = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n";
const QUEUE: &str = "login_queues:\n  logins:\n    concurrency: 1\n    tenant: header:X-ENT-UAI\n    hold: 20s\n    secret: test-secret-for-the-queue\n";

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to rempart at {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// One answer read from `stream` (a Content-Length body, or none), what was read past it kept
/// in `buf`: (status, head, body). None: the connection ended or timed out first.
fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, String, Vec<u8>)> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut chunk = [0u8; 16384];
    let mut read_more = |buf: &mut Vec<u8>| -> bool {
        if Instant::now() >= deadline {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    };
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end + 4;
        }
        if !read_more(buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < end + length {
        if !read_more(buf) {
            return None;
        }
    }
    let body = buf[end..end + length].to_vec();
    buf.drain(..end + length);
    Some((status, head, body))
}

/// A body of `len` bytes no two neighbouring pieces of which look alike.
fn body_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i * 7 + i / 251) % 26) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests

/// The attack: a POST head announcing a body, then the body a few bytes at a time. The proxy
/// must not hand the request to a server before the body is whole (the server would hold a
/// connection and a thread for as long as the client likes); once whole, it arrives intact.
#[test]
fn a_trickled_body_reaches_no_server_before_it_is_whole_then_arrives_intact() {
    let setup = start(1, ONE_ROUTE, &[]);
    let body = body_of(3000);
    trickle(
        &setup,
        "/form",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        &body,
    );
    let received = setup.origins[0].received("POST", "/form");
    assert_eq!(received.len(), 1, "{}", setup.context());
    assert!(received[0].body == body, "the server read another body");
}

/// POST `body` to `path` (with `headers`, whole lines) in ten pieces 100 ms apart (a slow
/// client, well within the body rules), checking after each that no request head for `path`
/// reached the server, then the last bytes: the answer must be 200 with the body echoed.
fn trickle(setup: &Setup, path: &str, headers: &str, body: &[u8]) {
    let origin = &setup.origins[0];
    let mut stream = connect(setup.http);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: h.example\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let last = body.len() - body.len() / 30;
    for piece in body[..last].chunks(last.div_ceil(10)) {
        stream.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            origin.heads_of(path),
            0,
            "a request reached the server before its body was whole\n{}",
            setup.context()
        );
    }
    stream.write_all(&body[last..]).unwrap();
    let mut buf = Vec::new();
    let (status, head, echoed) = read_answer(&mut stream, &mut buf)
        .unwrap_or_else(|| panic!("no answer to the POST\n{}", setup.context()));
    assert_eq!(status, 200, "{head}\n{}", setup.context());
    assert!(
        echoed == body,
        "the body came back altered\n{}",
        setup.context()
    );
}

/// A body sent in pieces with the next request pipelined right behind it (in the same write as
/// its last bytes): the body is forwarded exactly (not a byte of the next request in it), and
/// the next request is served on the same connection.
#[test]
fn a_body_and_the_request_pipelined_behind_it_are_each_served_in_turn() {
    let setup = start(1, ONE_ROUTE, &[]);
    let body = body_of(40_000);
    let mut stream = connect(setup.http);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: h.example\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut first = head.into_bytes();
    first.extend_from_slice(&body[..10_000]);
    stream.write_all(&first).unwrap();
    stream.write_all(&body[10_000..30_000]).unwrap();
    let second = body_of(500);
    let mut last = body[30_000..].to_vec();
    last.extend_from_slice(
        format!(
            "PUT /next HTTP/1.1\r\nHost: h.example\r\nContent-Length: {}\r\n\r\n",
            second.len()
        )
        .as_bytes(),
    );
    last.extend_from_slice(&second);
    last.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: h.example\r\n\r\n");
    stream.write_all(&last).unwrap();

    let mut buf = Vec::new();
    for (path, sent) in [("/upload", &body), ("/next", &second)] {
        let (status, head, echoed) = read_answer(&mut stream, &mut buf)
            .unwrap_or_else(|| panic!("no answer for {path}\n{}", setup.context()));
        assert_eq!(status, 200, "{path}: {head}\n{}", setup.context());
        assert!(
            echoed == *sent,
            "{path}: the body came back altered ({} bytes, sent {})\n{}",
            echoed.len(),
            sent.len(),
            setup.context()
        );
    }
    let (status, head, echoed) = read_answer(&mut stream, &mut buf)
        .unwrap_or_else(|| panic!("no answer for /after\n{}", setup.context()));
    assert_eq!(status, 200, "/after: {head}\n{}", setup.context());
    assert!(echoed.is_empty(), "/after had no body");
    let origin = &setup.origins[0];
    assert_eq!(origin.received("POST", "/upload").len(), 1);
    assert!(origin.received("POST", "/upload")[0].body == body);
    assert!(origin.received("PUT", "/next")[0].body == second);
    assert_eq!(origin.received("GET", "/after").len(), 1);
}

/// A POST the server read and then dropped (closed without an answer) may have been acted on:
/// it is not sent to another server, nor again on a new connection, and the client is told
/// 502. On a route whose POSTs are declared replayable (`retries.resend_post`), it is sent
/// again, up to the attempts.
#[test]
fn a_post_that_reached_a_server_is_sent_again_only_where_declared_replayable() {
    let routes = "  - name: replayable\n    match: { path_prefix: /again }\n    upstream: ent\n    retries: { resend_post: true }\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n";
    let setup = start(2, routes, &[]);
    // A GET first, so that the POST below may find a pooled connection (as in production).
    let mut stream = connect(setup.http);
    stream
        .write_all(b"GET /warm HTTP/1.1\r\nHost: h.example\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let warmed = read_answer(&mut stream, &mut buf);
    assert_eq!(warmed.map(|a| a.0), Some(200), "{}", setup.context());

    let body = b"user=alice&pass=secret".to_vec();
    let post = |path: &str, stream: &mut TcpStream| {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: h.example\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        stream.write_all(&req).unwrap();
    };
    post("/drop", &mut stream);
    let (status, head, _) = read_answer(&mut stream, &mut buf)
        .unwrap_or_else(|| panic!("no answer to the dropped POST\n{}", setup.context()));
    assert_eq!(status, 502, "{head}\n{}", setup.context());
    let sent = setup.received("POST", "/drop");
    assert_eq!(
        sent.len(),
        1,
        "a POST that reached a server was sent again: {sent:?}\n{}",
        setup.context()
    );

    // The replayable route: /again/drop is dropped by every server, and sent to each.
    let mut stream = connect(setup.http);
    let mut buf = Vec::new();
    post("/again/drop", &mut stream);
    let answer = read_answer(&mut stream, &mut buf);
    assert_eq!(answer.map(|a| a.0), Some(502), "{}", setup.context());
    let sent: Vec<Received> = setup
        .origins
        .iter()
        .flat_map(|o| o.received("POST", "/again/drop"))
        .collect();
    assert!(
        sent.len() >= 2 && sent.iter().all(|r| r.body == body),
        "a replayable POST was not sent again whole: {sent:?}\n{}",
        setup.context()
    );
}

/// The attack: a body under the replay buffer's size, trickled slower than `body_min_rate`.
/// Past the grace time it is cut with 408, and no server ever saw the request.
#[test]
fn a_body_slower_than_body_min_rate_is_cut_with_408_before_any_server_sees_it() {
    let setup = start(1, ONE_ROUTE, &["body_min_rate: 1KiB/s"]);
    let mut stream = connect(setup.http);
    stream
        .write_all(b"POST /slow HTTP/1.1\r\nHost: h.example\r\nContent-Length: 30000\r\n\r\n")
        .unwrap();
    // 20 bytes every 250 ms (80 B/s), for at most 15 s: the writer stops at the first error
    // (the proxy closed) or when done.
    let mut writer = stream.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for _ in 0..60 {
            if writer.write_all(&[b'x'; 20]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = trickle.join();
    let (status, head, _) =
        answer.unwrap_or_else(|| panic!("no answer to the slow body\n{}", setup.context()));
    assert_eq!(status, 408, "{head}\n{}", setup.context());
    assert_eq!(
        setup.origins[0].heads_of("/slow"),
        0,
        "a server saw the slow request\n{}",
        setup.context()
    );
}

/// The attack of the first test on a login-queue route: the request is admitted at once (the
/// line is empty), and still reaches no server before its body is whole.
#[test]
fn on_a_queue_route_too_a_trickled_body_reaches_no_server_before_it_is_whole() {
    let setup = start_with(1, QUEUE_ROUTES, &[], QUEUE);
    trickle(
        &setup,
        "/auth/login",
        "X-ENT-UAI: 0750001A\r\n",
        &body_of(1200),
    );
}

/// A login waits in line, body and all, while the one slot is taken; the request it pipelined
/// behind it waits too; on its turn it is served whole, then the pipelined one. A login whose
/// client leaves while in line never reaches a server.
#[test]
fn a_login_with_its_body_waits_its_turn_and_one_that_leaves_the_line_never_reaches_a_server() {
    let setup = start_with(1, QUEUE_ROUTES, &[], QUEUE);
    let origin = &setup.origins[0];
    let post = |path: &str, body: &[u8]| {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: h.example\r\nX-ENT-UAI: 0750001A\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    // A takes the slot for 1.5 s.
    let mut a = connect(setup.http);
    a.write_all(&post("/auth/slow", b"who=a")).unwrap();
    let taken = poll_until(Duration::from_secs(10), || {
        (origin.heads_of("/auth/slow") == 1).then_some(())
    });
    assert!(
        taken.is_some(),
        "the first login never reached the server\n{}",
        setup.context()
    );
    // B waits in line with its body, and a GET pipelined behind it; C waits, then leaves.
    let body = body_of(5000);
    let mut b = connect(setup.http);
    let mut b_bytes = post("/auth/login", &body);
    b_bytes.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: h.example\r\n\r\n");
    b.write_all(&b_bytes).unwrap();
    let c = connect(setup.http);
    let mut c_writer = c.try_clone().unwrap();
    c_writer.write_all(&post("/auth/gone", b"who=c")).unwrap();
    thread::sleep(Duration::from_millis(200));
    let _ = c.shutdown(Shutdown::Both);
    drop(c);
    drop(c_writer);

    let mut buf = Vec::new();
    let (status, head, _) = read_answer(&mut a, &mut buf)
        .unwrap_or_else(|| panic!("no answer to the first login\n{}", setup.context()));
    assert_eq!(status, 200, "{head}\n{}", setup.context());
    let mut buf = Vec::new();
    let (status, head, echoed) = read_answer(&mut b, &mut buf)
        .unwrap_or_else(|| panic!("no answer to the waiting login\n{}", setup.context()));
    assert_eq!(status, 200, "{head}\n{}", setup.context());
    assert!(echoed == body, "the waiting login's body came back altered");
    let (status, head, _) = read_answer(&mut b, &mut buf)
        .unwrap_or_else(|| panic!("no answer to the pipelined GET\n{}", setup.context()));
    assert_eq!(status, 200, "{head}\n{}", setup.context());

    // D, of the same school, comes after C in line: had C stayed in line, it would have
    // reached the server before D.
    let mut d = connect(setup.http);
    d.write_all(&post("/auth/next", b"who=d")).unwrap();
    let mut buf = Vec::new();
    let (status, head, _) = read_answer(&mut d, &mut buf)
        .unwrap_or_else(|| panic!("no answer to the last login\n{}", setup.context()));
    assert_eq!(status, 200, "{head}\n{}", setup.context());

    let events = origin.events();
    let answered_a = events.iter().position(|e| e == "answered /auth/slow");
    let head_b = events.iter().position(|e| e == "head /auth/login");
    assert!(
        answered_a.is_some() && head_b.is_some() && answered_a < head_b,
        "the waiting login reached the server before the slot was free: {events:?}"
    );
    assert_eq!(
        origin.heads_of("/auth/gone"),
        0,
        "a login whose client left the line reached the server: {events:?}"
    );
}
