//! Hostile or broken upstream servers against the edge's direct forwarding of plain HTTP/1.1
//! `GET` (`src/proxy/direct.rs`): response framing (Content-Length beside Transfer-Encoding,
//! conflicting lengths, bytes past the end of a response, chunk extensions and trailers, bodies
//! delimited by the close, malformed chunks), bounds on response heads, servers that close
//! pooled connections, interim responses, folded headers, and the hop's own `Date` and
//! `Connection` headers.
//!
//! The origin is written here: a `std::net::TcpListener` answering scripted raw bytes by path,
//! one thread per connection, every loop bounded in count and time. The client is a raw
//! `TcpStream` to rempart's plain listener, its answers parsed by hand.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::http1::dechunk;
use integration_tests::*;

/// The answer of the health checks and of the harness's readiness path.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// Bytes a request head may take at the origin.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// How long the origin accepts connections, and serves one connection, at most.
const ORIGIN_LIFETIME: Duration = Duration::from_secs(120);
/// Connections the origin accepts at most, and requests per connection.
const MAX_CONNECTIONS: usize = 2000;
const MAX_REQUESTS_PER_CONNECTION: usize = 200;
/// The client's bound on any one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The hostile origin

/// What the origin answers to one request.
struct Reply {
    /// Written one after the other (each a separate `write_all`).
    writes: Vec<Vec<u8>>,
    /// Close the connection after writing (without saying so).
    close: bool,
}

impl Reply {
    fn keep(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            writes: vec![bytes.into()],
            close: false,
        }
    }

    fn close(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            writes: vec![bytes.into()],
            close: true,
        }
    }
}

/// Picks the answer by request path; None: the default `200 ok` (keep-alive).
type Script = dyn Fn(&str) -> Option<Reply> + Send + Sync;

/// What the origin saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// (connection number, request path), in the order served.
    requests: Mutex<Vec<(usize, String)>>,
}

/// The scripted origin; its threads stop on drop (bounded anyway).
struct HostileOrigin {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl HostileOrigin {
    fn start(script: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> HostileOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let seen = seen.clone();
            let stop = stop.clone();
            thread::spawn(move || accept_loop(listener, script, seen, stop));
        }
        HostileOrigin { addr, seen, stop }
    }

    /// The connection numbers on which `path` was requested, in order.
    fn connections_of(&self, path: &str) -> Vec<usize> {
        self.seen
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(c, _)| *c)
            .collect()
    }

    fn requests(&self) -> Vec<(usize, String)> {
        self.seen.requests.lock().unwrap().clone()
    }
}

impl Drop for HostileOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, script: Arc<Script>, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + ORIGIN_LIFETIME;
    let mut accepted = 0;
    while accepted < MAX_CONNECTIONS && Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                let number = seen.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (script, seen, stop) = (script.clone(), seen.clone(), stop.clone());
                thread::spawn(move || serve(stream, number, &*script, &seen, &stop));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serve one connection: request heads in a loop, each answered as the script says.
fn serve(mut stream: TcpStream, number: usize, script: &Script, seen: &Seen, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + ORIGIN_LIFETIME;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        // One request head (the requests here have no body).
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_REQUEST_HEAD
                || Instant::now() >= deadline
                || stop.load(Ordering::SeqCst)
            {
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let client_closes = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.to_ascii_lowercase().contains("close")
            })
        });
        seen.requests.lock().unwrap().push((number, path.clone()));
        let reply = script(&path).unwrap_or_else(|| Reply::keep(OK));
        for part in &reply.writes {
            // The proxy may close first (a head too large): a write error ends the connection.
            if stream
                .write_all(part)
                .and_then(|()| stream.flush())
                .is_err()
            {
                return;
            }
        }
        if reply.close || client_closes {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rempart in front of it

struct Setup {
    // Drop order: rempart first, then the origin.
    rempart: Rempart,
    origin: HostileOrigin,
    http: SocketAddr,
    yaml: String,
}

fn start(script: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> Setup {
    let origin = HostileOrigin::start(script);
    let mut y = ProxyYaml::new(vec![origin.addr], vec![]);
    y.tls = false;
    let yaml = y.render();
    let rempart = start_routable(&yaml, y.ports.http);
    Setup {
        rempart,
        origin,
        http: y.ports.http,
        yaml,
    }
}

impl Setup {
    /// Context for a failure message: rempart's stderr, what the origin saw, the YAML.
    fn context(&self) -> String {
        format!(
            "origin saw (connection, path): {:?}\nrempart stderr:\n{}\n--- configuration ---\n{}",
            self.origin.requests(),
            self.rempart.stderr(),
            self.yaml
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The raw client

/// One answer as the client read it.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// The head as received, without its final empty line.
    head: String,
    /// Header names lowercase, in order.
    headers: Vec<(String, String)>,
    /// The body, decoded when chunked.
    body: Vec<u8>,
    /// Every byte of this answer as received (head and body).
    raw: Vec<u8>,
}

impl Resp {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// How reading until the end of the connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    TimedOut,
}

struct Client {
    stream: TcpStream,
    /// Read and not yet taken by an answer.
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to rempart at {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn send(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: h.example\r\n\r\n");
        self.stream
            .write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("sending GET {path}: {e}"));
    }

    /// Send `GET path` and read the next answer (an interim one included).
    fn get(&mut self, path: &str) -> Result<Resp, String> {
        self.send(path);
        self.read_response()
    }

    /// Read more bytes within `deadline`; Ok(false) at the end of the stream.
    fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete answer within {CLIENT_TIMEOUT:?}; got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ));
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16384];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!(
                        "no complete answer within {CLIENT_TIMEOUT:?}; got so far: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "reading the answer: {e}; got so far: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
            }
        }
    }

    /// The next answer on the connection: head, then the body by its framing.
    fn read_response(&mut self) -> Result<Resp, String> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let head_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            if self.buf.len() > 2 * 1024 * 1024 {
                return Err("an answer head over 2 MiB".into());
            }
            if !self.fill(deadline)? {
                return Err(format!(
                    "the connection closed before a complete head; got: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = Resp {
            status,
            head,
            headers,
            body: Vec::new(),
            raw: Vec::new(),
        };
        let body_start = head_end + 4;
        let total = if (100..200).contains(&status) || status == 204 || status == 304 {
            body_start
        } else if resp.chunked() {
            loop {
                if let Some(len) = chunked_len(&self.buf[body_start..])? {
                    let framed = &self.buf[body_start..body_start + len];
                    resp.body = dechunk(framed).ok_or("a chunked body dechunk cannot read")?;
                    break body_start + len;
                }
                if !self.fill(deadline)? {
                    return Err(format!(
                        "the connection closed before the end of the chunked body; got: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("a Content-Length that is no number: {len:?}"))?;
            while self.buf.len() < body_start + len {
                if !self.fill(deadline)? {
                    return Err(format!(
                        "the connection closed before the end of the body; got: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            }
            resp.body = self.buf[body_start..body_start + len].to_vec();
            body_start + len
        } else {
            // Delimited by the close.
            while self.fill(deadline)? {}
            resp.body = self.buf[body_start..].to_vec();
            self.buf.len()
        };
        resp.raw = self.buf.drain(..total).collect();
        Ok(resp)
    }

    /// Read until the connection ends (at most `timeout`): what came, and how it ended.
    fn read_to_end(&mut self, timeout: Duration) -> (Vec<u8>, End) {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16384];
        let end = loop {
            if self.eof {
                break End::Eof;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break End::TimedOut;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break End::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break End::TimedOut
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
                Err(_) => break End::Reset,
            }
        };
        (std::mem::take(&mut self.buf), end)
    }

    /// What was read past the answers taken so far.
    fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

/// The length of a complete chunked body (trailers included) at the start of `buf`; None while
/// incomplete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
        let size_txt = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_txt, 16)
            .map_err(|_| format!("a chunk size the client cannot read: {line:?}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(format!(
                "chunk data not followed by CRLF at byte {}",
                at + size
            ));
        }
        at += size + 2;
    }
}

fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The cases

/// Case 1: Content-Length beside Transfer-Encoding: chunked: the chunked framing wins, the length
/// is dropped, and the connection stays in step.
#[test]
fn content_length_beside_chunked_is_dropped_and_the_body_is_chunked() {
    let s = start(|path| match path {
        "/both" => Some(Reply::keep(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Content-Length: 3\r\n",
            "Transfer-Encoding: chunked\r\n",
            "\r\n",
            "5\r\n",
            "hello\r\n",
            "0\r\n",
            "\r\n",
        ))),
        "/plain" => Some(Reply::keep(answer("200 OK", "plain"))),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/both")
        .unwrap_or_else(|e| panic!("GET /both: {e}\n{}", s.context()));
    assert_eq!(r.status, 200, "GET /both: {}\n{}", r.head, s.context());
    assert!(
        r.header("content-length").is_none(),
        "Content-Length must not reach the client beside Transfer-Encoding:\n{}",
        r.head
    );
    assert!(
        r.chunked(),
        "the body goes chunked to the client:\n{}",
        r.head
    );
    assert_eq!(r.text(), "hello", "the decoded body; head:\n{}", r.head);

    let r2 = c.get("/plain").unwrap_or_else(|e| {
        panic!(
            "second request on the same connection: {e}\n{}",
            s.context()
        )
    });
    assert_eq!(r2.status, 200, "second request: {}", r2.head);
    assert_eq!(
        r2.text(),
        "plain",
        "second request's body; head:\n{}",
        r2.head
    );
}

/// Case 2: Two Content-Length headers that disagree: a malformed response, 502.
#[test]
fn conflicting_content_lengths_are_a_502() {
    let s = start(|path| match path {
        "/conflict" => Some(Reply::keep(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        )),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/conflict")
        .unwrap_or_else(|e| panic!("GET /conflict: {e}\n{}", s.context()));
    assert_eq!(
        r.status,
        502,
        "conflicting lengths must be answered 502, the client got:\n{}\n{}\n{}",
        r.head,
        r.text(),
        s.context()
    );
    assert!(
        !String::from_utf8_lossy(&r.raw).contains("hello"),
        "the origin's body must not reach the client: {:?}",
        String::from_utf8_lossy(&r.raw)
    );
}

/// A status below 100 is no HTTP status: 502, never passed on as a status line.
#[test]
fn a_status_below_100_is_a_502() {
    let s = start(|path| match path {
        "/odd" => Some(Reply::keep(
            &b"HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhello"[..],
        )),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/odd")
        .unwrap_or_else(|e| panic!("GET /odd: {e}\n{}", s.context()));
    assert_eq!(
        r.status,
        502,
        "the client got:\n{}\n{}",
        r.head,
        s.context()
    );
    assert!(
        !String::from_utf8_lossy(&r.raw).contains("hello"),
        "the origin's body must not reach the client: {:?}",
        String::from_utf8_lossy(&r.raw)
    );
}

/// Case 3: A second response smuggled after a Content-Length body: the connection is not
/// reused, the smuggled answer never reaches anyone.
#[test]
fn bytes_past_a_content_length_body_are_never_an_answer() {
    let s = start(|path| match path {
        "/first" => Some(Reply::keep(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Content-Length: 2\r\n",
            "\r\n",
            "okHTTP/1.1 200 OK\r\n",
            "Content-Length: 7\r\n",
            "\r\n",
            "smuggle",
        ))),
        "/second" => Some(Reply::keep(answer("200 OK", "second"))),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/first")
        .unwrap_or_else(|e| panic!("GET /first: {e}\n{}", s.context()));
    assert_eq!(r.status, 200, "GET /first: {}", r.head);
    assert_eq!(r.text(), "ok", "GET /first's body; head:\n{}", r.head);
    assert!(
        !c.leftover().windows(7).any(|w| w == b"smuggle"),
        "bytes past /first's answer: {:?}",
        String::from_utf8_lossy(c.leftover())
    );

    let r2 = c
        .get("/second")
        .unwrap_or_else(|e| panic!("GET /second: {e}\n{}", s.context()));
    assert_eq!(r2.status, 200, "GET /second: {}\n{}", r2.head, s.context());
    assert_eq!(
        r2.text(),
        "second",
        "GET /second must get the origin's answer to /second, not the smuggled one; head:\n{}\n{}",
        r2.head,
        s.context()
    );
    assert!(!String::from_utf8_lossy(&r.raw).contains("smuggle"));
    assert!(!String::from_utf8_lossy(&r2.raw).contains("smuggle"));
    let first = s.origin.connections_of("/first");
    let second = s.origin.connections_of("/second");
    assert_eq!(
        second.len(),
        1,
        "/second reached the origin once:\n{}",
        s.context()
    );
    assert!(
        !first.contains(&second[0]),
        "the connection that had bytes past its answer must not be reused:\n{}",
        s.context()
    );
}

/// Case 4: Response heads beyond pingora's bounds: 300 headers, or more than 1 MiB: 502.
#[test]
fn response_heads_beyond_the_bounds_are_a_502() {
    let s = start(|path| match path {
        "/many-headers" => {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..300 {
                head.push_str(&format!("X-H{i}: v\r\n"));
            }
            head.push_str("Content-Length: 2\r\n\r\nok");
            Some(Reply::keep(head))
        }
        "/huge-head" => {
            // 100 headers of 12 000 bytes each (1.2 MB), under the header count bound,
            // written in pieces: the origin stops when the proxy closes.
            let mut writes = vec![b"HTTP/1.1 200 OK\r\n".to_vec()];
            let value = "v".repeat(12_000);
            for i in 0..100 {
                writes.push(format!("X-Big{i}: {value}\r\n").into_bytes());
            }
            writes.push(b"Content-Length: 2\r\n\r\nok".to_vec());
            Some(Reply {
                writes,
                close: false,
            })
        }
        _ => None,
    });
    let mut failures = Vec::new();
    for path in ["/many-headers", "/huge-head"] {
        let mut c = Client::connect(s.http);
        match c.get(path) {
            Ok(r) if r.status == 502 => {}
            Ok(r) => failures.push(format!(
                "GET {path}: expected 502, got {} (head {} bytes):\n{}",
                r.status,
                r.head.len(),
                r.head.chars().take(500).collect::<String>()
            )),
            Err(e) => failures.push(format!(
                "GET {path}: expected 502, got no answer: {}",
                e.chars().take(500).collect::<String>()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        s.context()
    );
}

/// Case 5: Chunk extensions and trailers are dropped: the body decodes, the trailer never reaches
/// the client.
#[test]
fn chunk_extensions_and_trailers_do_not_reach_the_client() {
    let s = start(|path| match path {
        "/trailers" => Some(Reply::keep(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Transfer-Encoding: chunked\r\n",
            "\r\n",
            "4;ext=1\r\n",
            "wiki\r\n",
            "5\r\n",
            "pedia\r\n",
            "0\r\n",
            "X-Trailer: secret\r\n",
            "\r\n",
        ))),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/trailers")
        .unwrap_or_else(|e| panic!("GET /trailers: {e}\n{}", s.context()));
    assert_eq!(r.status, 200, "GET /trailers: {}", r.head);
    assert_eq!(r.text(), "wikipedia", "decoded body; head:\n{}", r.head);
    let raw = String::from_utf8_lossy(&r.raw).into_owned();
    assert!(
        !raw.contains("secret"),
        "the trailer must not reach the client: {raw:?}"
    );
    assert!(
        !raw.contains("ext=1"),
        "the chunk extension must not reach the client: {raw:?}"
    );
    // Nothing of it comes later either: the next answer on the connection is clean.
    let r2 = c
        .get("/__harness/ready")
        .unwrap_or_else(|e| panic!("a second request: {e}\n{}", s.context()));
    assert_eq!(r2.status, 200);
    assert!(!String::from_utf8_lossy(&r2.raw).contains("secret"));
}

/// Case 6: A body delimited by the server's close goes chunked to the client, whose connection
/// stays usable.
#[test]
fn a_close_delimited_body_is_sent_chunked_and_the_client_keeps_its_connection() {
    let s = start(|path| match path {
        "/until-close" => Some(Reply::close(&b"HTTP/1.1 200 OK\r\n\r\nuntil-close"[..])),
        "/after" => Some(Reply::keep(answer("200 OK", "after"))),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/until-close")
        .unwrap_or_else(|e| panic!("GET /until-close: {e}\n{}", s.context()));
    assert_eq!(r.status, 200, "GET /until-close: {}", r.head);
    assert!(
        r.chunked(),
        "a body without length goes chunked, so the client can tell its end:\n{}",
        r.head
    );
    assert_eq!(r.text(), "until-close", "the whole body; head:\n{}", r.head);
    assert!(
        !c.eof,
        "the client connection must stay open after a body framed for it"
    );

    let r2 = c.get("/after").unwrap_or_else(|e| {
        panic!(
            "second request on the same connection: {e}\n{}",
            s.context()
        )
    });
    assert_eq!(r2.status, 200, "second request: {}", r2.head);
    assert_eq!(r2.text(), "after");
}

/// Case 7: A malformed chunk size: the client connection closes without a complete body.
#[test]
fn a_malformed_chunk_size_closes_the_client_connection() {
    let s = start(|path| match path {
        "/bad-chunk" => Some(Reply::keep(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
        )),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    c.send("/bad-chunk");
    let (got, end) = c.read_to_end(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got).into_owned();
    // A reset is a close too (the client never sees a body end either way).
    assert_ne!(
        end,
        End::TimedOut,
        "the client connection must be closed, not left hanging; got: {text:?}\n{}",
        s.context()
    );
    if let Some(head_end) = find(&got, b"\r\n\r\n") {
        let head = &text[..head_end];
        let body = &got[head_end + 4..];
        if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
            assert!(
                !matches!(chunked_len(body), Ok(Some(_))),
                "the client must not get a complete body: {text:?}"
            );
            assert!(
                !text.contains("zz"),
                "the malformed chunk must not be passed on: {text:?}"
            );
        }
    }
}

/// Case 8: A server that closes after every response, without saying so: pooled connections it
/// closed are not used, every request is answered.
#[test]
fn a_server_closing_after_each_response_never_costs_a_request() {
    let s = start(|path| match path {
        "/healthz" | "/__harness/ready" => Some(Reply::close(OK)),
        p if p.starts_with("/n/") => Some(Reply::close(answer("200 OK", p))),
        _ => Some(Reply::close(OK)),
    });
    let mut c = Client::connect(s.http);
    for i in 1..=3 {
        let path = format!("/n/{i}");
        let r = c.get(&path).unwrap_or_else(|e| {
            panic!("request {i} on the client connection: {e}\n{}", s.context())
        });
        assert_eq!(
            r.status,
            200,
            "request {i} ({path}) must be answered 200, got:\n{}\n{}\n{}",
            r.head,
            r.text(),
            s.context()
        );
        assert_eq!(r.text(), path, "request {i}'s body");
    }
    for i in 1..=3 {
        assert_eq!(
            s.origin.connections_of(&format!("/n/{i}")).len(),
            1,
            "/n/{i} reached the origin once:\n{}",
            s.context()
        );
    }
}

/// Case 9: An interim 103 Early Hints goes to the client before the final answer.
#[test]
fn early_hints_reach_the_client_before_the_answer() {
    let s = start(|path| match path {
        "/hints" => Some(Reply {
            writes: vec![
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".to_vec(),
                answer("200 OK", "final"),
            ],
            close: false,
        }),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/hints")
        .unwrap_or_else(|e| panic!("GET /hints: {e}\n{}", s.context()));
    assert_eq!(
        r.status,
        103,
        "the 103 comes first, the client got:\n{}\n{}",
        r.head,
        s.context()
    );
    assert_eq!(
        r.header("link"),
        Some("</a.css>; rel=preload"),
        "the 103's Link header:\n{}",
        r.head
    );
    let r2 = c
        .read_response()
        .unwrap_or_else(|e| panic!("the final answer after the 103: {e}\n{}", s.context()));
    assert_eq!(r2.status, 200, "then the 200:\n{}", r2.head);
    assert_eq!(r2.text(), "final");
}

/// Case 10: An obsolete folded header goes on as one line: no CR or LF inside any header.
#[test]
fn a_folded_response_header_arrives_on_one_line() {
    let s = start(|path| match path {
        "/folded" => Some(Reply::keep(
            &b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 6\r\n\r\nfolded"[..],
        )),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/folded")
        .unwrap_or_else(|e| panic!("GET /folded: {e}\n{}", s.context()));
    assert_eq!(r.status, 200, "GET /folded:\n{}\n{}", r.head, s.context());
    for line in r.head.split("\r\n").skip(1) {
        assert!(
            !line.contains('\r') && !line.contains('\n'),
            "a header line holds a bare CR or LF: {line:?}\nhead: {:?}",
            r.head
        );
        assert!(
            !line.starts_with(' ') && !line.starts_with('\t') && line.contains(':'),
            "a folded (continuation) line reached the client: {line:?}\nhead: {:?}",
            r.head
        );
    }
    let folded = r.all("x-folded");
    assert_eq!(folded.len(), 1, "one X-Folded header: {:?}", r.head);
    assert!(
        folded[0].starts_with('a') && folded[0].ends_with('b'),
        "X-Folded joined on one line: {:?}",
        folded[0]
    );
    assert_eq!(r.text(), "folded");
}

/// Case 11: The server's Date and Connection are the hop's own: replaced by rempart's.
#[test]
fn the_servers_date_and_connection_headers_are_replaced() {
    let s = start(|path| match path {
        "/dated" => Some(Reply::keep(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Date: Mon, 01 Jan 1990 00:00:00 GMT\r\n",
            "Connection: x-internal\r\n",
            "Content-Length: 5\r\n",
            "\r\n",
            "dated",
        ))),
        _ => None,
    });
    let mut c = Client::connect(s.http);
    let r = c
        .get("/dated")
        .unwrap_or_else(|e| panic!("GET /dated: {e}\n{}", s.context()));
    assert_eq!(r.status, 200, "GET /dated:\n{}\n{}", r.head, s.context());
    let dates = r.all("date");
    assert_eq!(dates.len(), 1, "exactly one Date header:\n{}", r.head);
    assert_ne!(
        dates[0], "Mon, 01 Jan 1990 00:00:00 GMT",
        "the server's Date must be replaced:\n{}",
        r.head
    );
    assert!(
        !r.head.contains("1990"),
        "nothing of the server's Date reaches the client:\n{}",
        r.head
    );
    let connection = r.all("connection");
    assert_eq!(
        connection,
        vec!["keep-alive"],
        "the client sees rempart's own Connection header:\n{}",
        r.head
    );
    assert!(
        !r.head.to_ascii_lowercase().contains("x-internal"),
        "the server's Connection value must not reach the client:\n{}",
        r.head
    );
    assert_eq!(r.text(), "dated");
}
