//! HTTP/2 streams answered by the edge itself (`src/proxy/streams.rs`): what reaches the
//! server is the request's HTTP/1 head (Host from `:authority`, cookie fields joined), a body
//! the server cuts short resets the stream rather than ending it, a body larger than the
//! client's flow-control window arrives whole as the client opens it, HEAD, interim and
//! chunked answers come through as HTTP/2, and a request with a body still reaches the server
//! whole (pingora's path).
//!
//! The origin is written here: a `std::net::TcpListener` answering scripted raw bytes by path,
//! one thread per connection, every loop bounded in count and time. The HTTP/2 client is either
//! `reqwest` or hand-built frames (`h2raw`) where a test needs to see the frames themselves.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::h2raw::{self, kind, setting, H2Conn};
use integration_tests::*;

/// The length of `/big`'s body: several times the client's windows.
const BIG: usize = 300_000;
/// How long the origin accepts connections, and serves one connection, at most.
const ORIGIN_LIFETIME: Duration = Duration::from_secs(120);
const MAX_CONNECTIONS: usize = 500;
const MAX_REQUESTS_PER_CONNECTION: usize = 200;
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// The client's bound on one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// A request as the origin read it: its head (text) and body.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    head: String,
    body: Vec<u8>,
}

struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                let started = Instant::now();
                let mut accepted = 0;
                while !stop.load(Ordering::SeqCst)
                    && started.elapsed() < ORIGIN_LIFETIME
                    && accepted < MAX_CONNECTIONS
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted += 1;
                            let (seen, stop) = (seen.clone(), stop.clone());
                            thread::spawn(move || serve(stream, &seen, &stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Origin { addr, seen, stop }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The answer to `path`, and whether the connection closes after it.
fn reply(path: &str) -> (Vec<u8>, bool) {
    match path {
        "/cut" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            true,
        ),
        "/big" => {
            let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            out.extend_from_slice(&big_body());
            (out, false)
        }
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            false,
        ),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), false),
    }
}

/// One read (at most 200 ms) onto `buf`; false when the connection or the origin's time ends.
fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    started: Instant,
    stop: &AtomicBool,
) -> bool {
    if stop.load(Ordering::SeqCst) || started.elapsed() > ORIGIN_LIFETIME {
        return false;
    }
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        // A head, then a Content-Length body.
        let end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_REQUEST_HEAD || !read_more(&mut stream, &mut buf, started, stop) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let path = head
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_string();
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + length {
            if !read_more(&mut stream, &mut buf, started, stop) {
                return;
            }
        }
        let body = buf[end..end + length].to_vec();
        buf.drain(..end + length);
        let (answer, close) = reply(&path);
        if path != "/healthz" && path != "/__harness/ready" {
            seen.lock().unwrap().push(Seen { path, head, body });
        }
        if stream.write_all(&answer).is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

struct Setup {
    _rempart: Rempart,
    origin: Origin,
    https: SocketAddr,
}

fn start() -> Setup {
    let origin = Origin::start();
    let y = ProxyYaml::new(vec![origin.addr], vec![]);
    let yaml = y.render();
    let rempart = start_routable(&yaml, y.ports.http);
    Setup {
        _rempart: rempart,
        origin,
        https: y.ports.https,
    }
}

async fn connect(s: &Setup) -> H2Conn {
    let mut c = H2Conn::connect_tls(s.https, "localhost")
        .await
        .expect("TLS with ALPN h2");
    c.send_preface().await.unwrap();
    c
}

/// Frames of `stream` until it ends (END_STREAM or RST_STREAM), the connection ends or
/// `wait` passes; every DATA frame's length is given back at once (stream and connection
/// windows) when `open_windows`.
async fn frames_within(
    c: &mut H2Conn,
    stream: u32,
    open_windows: bool,
    wait: Duration,
) -> Vec<h2raw::Frame> {
    let deadline = Instant::now() + wait;
    let mut frames = Vec::new();
    for _ in 0..100_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let frame = match c.read_frame(left).await {
            Ok(Some(frame)) => frame,
            _ => break,
        };
        if frame.kind == kind::SETTINGS && !frame.is_ack() {
            c.send_settings_ack().await.unwrap();
            continue;
        }
        if frame.stream_id != stream {
            continue;
        }
        if frame.kind == kind::DATA && open_windows && !frame.payload.is_empty() {
            let n = frame.payload.len() as u32;
            c.send_window_update(0, n).await.unwrap();
            if !frame.is_end_stream() {
                c.send_window_update(stream, n).await.unwrap();
            }
        }
        let ends = frame.kind == kind::RST_STREAM || frame.is_end_stream();
        frames.push(frame);
        if ends {
            break;
        }
    }
    frames
}

async fn frames_of(c: &mut H2Conn, stream: u32, open_windows: bool) -> Vec<h2raw::Frame> {
    frames_within(c, stream, open_windows, ANSWER_TIMEOUT).await
}

fn data_of(frames: &[h2raw::Frame]) -> Vec<u8> {
    frames
        .iter()
        .filter(|f| f.kind == kind::DATA)
        .flat_map(|f| f.payload.iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_server_cuts_short_resets_the_stream() {
    let s = start();
    let mut c = connect(&s).await;
    c.send_settings(&[]).await.unwrap();
    c.send_request(1, "GET", "/cut", "localhost", &[], true)
        .await
        .unwrap();
    let frames = frames_of(&mut c, 1, true).await;
    let headers = frames.iter().find(|f| f.kind == kind::HEADERS);
    assert_eq!(
        headers.and_then(h2raw::status_of),
        Some(200),
        "frames: {frames:?}"
    );
    // What was queued before the reset may go with it (the reset discards it).
    assert!(
        b"hello".starts_with(&data_of(&frames)),
        "frames: {frames:?}"
    );
    let last = frames.last().expect("the stream's frames");
    assert_eq!(
        (last.kind, last.is_end_stream()),
        (kind::RST_STREAM, false),
        "a body cut short must end in RST_STREAM, never END_STREAM: frames {frames:?}"
    );
    assert_eq!(s.origin.seen("/cut").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_clients_window_arrives_whole_as_the_client_reads() {
    let s = start();
    let mut c = connect(&s).await;
    // A small stream window: the answer must wait for each WINDOW_UPDATE.
    c.send_settings(&[(setting::INITIAL_WINDOW_SIZE, 4096)])
        .await
        .unwrap();
    c.send_request(1, "GET", "/big", "localhost", &[], true)
        .await
        .unwrap();
    let frames = frames_of(&mut c, 1, true).await;
    let data = data_of(&frames);
    assert_eq!(data.len(), BIG, "frames: {}", frames.len());
    assert!(data == big_body(), "the body arrived altered");
    assert!(
        frames
            .iter()
            .all(|f| f.kind != kind::DATA || f.payload.len() <= 4096),
        "a DATA frame beyond the client's window"
    );
    let last = frames.last().expect("frames");
    assert!(last.is_end_stream() && last.kind == kind::DATA);
    // And while the client does not open its window, nothing more than the window is sent.
    c.send_request(3, "GET", "/big", "localhost", &[], true)
        .await
        .unwrap();
    let frames = frames_within(&mut c, 3, false, Duration::from_secs(2)).await;
    let sent = data_of(&frames).len();
    assert!(
        (1..=4096).contains(&sent),
        "{sent} bytes sent into a window of 4096"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_the_server_as_its_http1_head() {
    let s = start();
    let mut c = connect(&s).await;
    c.send_settings(&[]).await.unwrap();
    let authority = format!("localhost:{}", s.https.port());
    c.send_request(
        1,
        "GET",
        "/head?q=1",
        &authority,
        &[("cookie", "a=1"), ("cookie", "b=2"), ("accept", "*/*")],
        true,
    )
    .await
    .unwrap();
    let frames = frames_of(&mut c, 1, true).await;
    let headers = frames.iter().find(|f| f.kind == kind::HEADERS);
    assert_eq!(headers.and_then(h2raw::status_of), Some(200));
    assert_eq!(data_of(&frames), b"ok");
    let seen = s.origin.seen("/head");
    assert_eq!(seen.len(), 1);
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.starts_with("get /head?q=1 http/1.1\r\n"), "{head}");
    for line in [
        format!("host: {authority}\r\n"),
        "cookie: a=1; b=2\r\n".to_string(),
        "x-forwarded-proto: https\r\n".to_string(),
        "x-forwarded-for: 127.0.0.1\r\n".to_string(),
    ] {
        assert!(head.contains(&line), "no {line:?} in {head}");
    }
    assert_eq!(head.matches("cookie:").count(), 1, "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_interim_and_chunked_answers_come_through_as_http2() {
    let s = start();
    let client = h2_client(&[("localhost", s.https)]);
    let url = |path: &str| format!("https://localhost:{}{path}", s.https.port());

    let r = client.head(url("/big")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-length").map(|v| v.as_bytes()),
        Some(BIG.to_string().as_bytes())
    );
    assert!(r.bytes().await.unwrap().is_empty());

    let r = client.get(url("/hints")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = client.get(url("/chunked")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("transfer-encoding").is_none());
    assert!(r.headers().get("connection").is_none());
    assert_eq!(r.text().await.unwrap(), "hello world");

    let r = client.get(url("/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == big_body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_reaches_the_server_whole() {
    let s = start();
    let client = h2_client(&[("localhost", s.https)]);
    let url = format!("https://localhost:{}/post", s.https.port());
    let r = client.post(url).body("a body").send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let seen = s.origin.seen("/post");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"a body");
}

/// An idle HTTP/2 connection frees its frame and HPACK buffers (pingora patch 7, in the h2
/// crate); the connection's next requests, with a large header block, a body and an answer
/// larger than the buffers, must come through whole on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_fell_idle_serves_its_next_requests_whole() {
    let s = start();
    let client = h2_client(&[("localhost", s.https)]);
    let url = |path: &str| format!("https://localhost:{}{path}", s.https.port());
    // Larger than the HPACK decoder's 4 KiB buffer once decoded, and Huffman-coded by the
    // client (lower-case letters).
    let token: String = (0..6_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for round in 0..3 {
        // Time for the connection to fall idle: no stream open, every byte written.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = client
            .get(url("/big"))
            .header("x-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200, "round {round}");
        assert!(r.bytes().await.unwrap() == big_body(), "round {round}");

        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = client
            .post(url("/post"))
            .body(vec![b'x'; 20_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    let seen = s.origin.seen("/big");
    assert_eq!(seen.len(), 3);
    for request in &seen {
        let expected = format!("x-token: {token}\r\n");
        assert!(
            request.head.to_ascii_lowercase().contains(&expected),
            "the header block came through whole"
        );
    }
    let posted = s.origin.seen("/post");
    assert_eq!(posted.len(), 3);
    assert!(posted.iter().all(|p| p.body == vec![b'x'; 20_000]));
}
