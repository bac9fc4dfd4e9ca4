//! A small blocking HTTP/1.1 client for the admin API: one request per connection
//! (`Connection: close`), bounded waits (connect, each write and each read), a bounded answer;
//! bodies framed by `Content-Length`, chunked, or the end of the connection.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest answer read (a page of 1000 bans is about 150 KiB).
const MAX_ANSWER: usize = 32 << 20;

/// An answer: its status and its (decoded) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `METHOD path` to `authority` (`HOST:PORT`, also the `Host` header) with the bearer
/// token when there is one, and `X-Rempart-Admin: 1` on a call that changes something.
pub fn request(
    authority: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response, String> {
    let mut stream = connect(authority, timeout)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let head = request_head(authority, method, path, token);
    stream
        .write_all(head.as_bytes())
        .map_err(|e| describe(&e, "sending the request"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_ANSWER {
                    return Err(format!("the answer is over {} MiB", MAX_ANSWER >> 20));
                }
                if let Some(Ok(response)) = parse(&buf, false) {
                    return Ok(response);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The server closed after answering (a reset after the last byte is still an end).
            Err(e) if !buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(describe(&e, "waiting for the answer")),
        }
    }
    match parse(&buf, true) {
        Some(result) => result,
        None if buf.is_empty() => Err("the connection closed without an answer".into()),
        None => Err("the answer ended early".into()),
    }
}

/// Connects to the first address of `authority` that accepts, within `timeout` each.
fn connect(authority: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?;
    let mut last = format!("{authority} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = describe(&e, "connecting"),
        }
    }
    Err(last)
}

fn describe(e: &io::Error, doing: &str) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("timed out {doing}"),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => format!("{e} ({doing})"),
    }
}

/// The request head: the caller checked that `authority`, `path` and `token` are printable.
fn request_head(authority: &str, method: &str, path: &str, token: Option<&str>) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: rempart-ctl/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !matches!(method, "GET" | "HEAD") {
        head.push_str("X-Rempart-Admin: 1\r\nContent-Length: 0\r\n");
    }
    head.push_str("\r\n");
    head
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The answer in `buf`: None while incomplete (`at_end`: the connection has ended, so a body
/// without framing is whole); `Some(Err)` when it is not HTTP.
fn parse(buf: &[u8], at_end: bool) -> Option<Result<Response, String>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if at_end && !buf.is_empty() {
            return Some(Err("the answer is not HTTP".into()));
        }
        if !buf.is_empty() && !b"HTTP/".starts_with(&buf[..buf.len().min(5)]) {
            return Some(Err("the answer is not HTTP".into()));
        }
        return None;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Some(Err(format!(
            "the answer is not HTTP/1.x: {:?}",
            status_line.chars().take(60).collect::<String>()
        )));
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => length = Some(n),
                Err(_) => return Some(Err("a bad Content-Length".into())),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &buf[end + 4..];
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(Ok(Response {
            status,
            body: Vec::new(),
        }));
    }
    if chunked {
        return match dechunk(rest) {
            Some(Ok(body)) => Some(Ok(Response { status, body })),
            Some(Err(e)) => Some(Err(e)),
            None if at_end => Some(Err("the chunked answer ended early".into())),
            None => None,
        };
    }
    match length {
        Some(n) if rest.len() >= n => Some(Ok(Response {
            status,
            body: rest[..n].to_vec(),
        })),
        Some(_) if at_end => Some(Err("the answer ended early".into())),
        Some(_) => None,
        None if at_end => Some(Ok(Response {
            status,
            body: rest.to_vec(),
        })),
        None => None,
    }
}

/// A whole chunked body; None while incomplete.
fn dechunk(mut rest: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Some(Err("a bad chunk size".into()));
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(Ok(out));
        }
        if rest.len() < size.saturating_add(2) {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn ok(buf: &[u8], at_end: bool) -> Response {
        parse(buf, at_end).unwrap().unwrap()
    }

    #[test]
    fn framing_by_length_chunks_and_end() {
        let r = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", false);
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", false).is_none());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", true)
                .unwrap()
                .is_err()
        );
        let r = ok(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
            false,
        );
        assert_eq!((r.status, r.body.as_slice()), (404, b"abcde".as_slice()));
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            false
        )
        .is_none());
        let r = ok(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true);
        assert_eq!(r.body, b"until the end");
        assert!(parse(b"HTTP/1.0 200 OK\r\n\r\nmore to come", false).is_none());
        assert!(ok(b"HTTP/1.1 204 No Content\r\n\r\n", false)
            .body
            .is_empty());
    }

    #[test]
    fn what_is_not_http_is_said_at_once() {
        assert!(parse(b"SSH-2.0-OpenSSH_9.2\r\n", false).unwrap().is_err());
        assert!(parse(b"\x16\x03\x01", false).unwrap().is_err());
        assert!(parse(b"HTTP/2 200\r\n\r\n", false).unwrap().is_err());
        assert!(parse(b"HTTP/1.1 abc\r\n\r\n", false).unwrap().is_err());
        assert!(parse(b"HTT", false).is_none());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn the_head_carries_host_token_and_the_deliberate_call_header() {
        let get = request_head("127.0.0.1:9901", "GET", "/status", None);
        assert!(get.starts_with("GET /status HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n"));
        assert!(!get.contains("Authorization"));
        assert!(!get.contains("X-Rempart-Admin"));
        assert!(get.ends_with("\r\n\r\n"));
        let post = request_head("[::1]:9901", "POST", "/reload", Some("t0k"));
        assert!(post.contains("Host: [::1]:9901\r\n"));
        assert!(post.contains("Authorization: Bearer t0k\r\n"));
        assert!(post.contains("X-Rempart-Admin: 1\r\n"));
        assert!(post.contains("Content-Length: 0\r\n"));
        assert!(request_head("h:1", "DELETE", "/bans/1.2.3.4", None).contains("X-Rempart-Admin: 1"));
    }

    #[test]
    fn a_round_trip_and_the_failures_to_reach() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while find(&got, b"\r\n\r\n").is_none() {
                let n = s.read(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let r = request(
            &addr.to_string(),
            "GET",
            "/status",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, b"{\"a\":1}".as_slice())
        );
        assert!(server
            .join()
            .unwrap()
            .contains(&format!("Host: {addr}\r\n")));

        // Nothing listens (the port of a listener just closed).
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = request(
            &closed.to_string(),
            "GET",
            "/",
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.contains("refused"), "{e}");

        // A server that accepts and never answers: the read times out.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let e = request(
            &addr.to_string(),
            "GET",
            "/",
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        drop(silent);
    }
}
