//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, for the harness itself: readiness
//! checks, the origin's control calls and the admin API. One request per connection
//! (`Connection: close`); understands Content-Length, chunked and read-to-end bodies.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A parsed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Header names lowercase, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one request and read the whole answer, everything within `timeout`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Answer> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.set_write_timeout(Some(timeout))?;
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "answer not complete in time",
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if !buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
        if let Some(a) = parse_complete(&buf) {
            return Ok(a);
        }
    }
    parse_complete(&buf)
        .or_else(|| {
            parse_head(&buf).map(|(a, off)| Answer {
                body: buf[off..].to_vec(),
                ..a
            })
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP answer"))
}

/// GET with a short timeout.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Answer> {
    request(addr, "GET", path, &[], b"", Duration::from_secs(5))
}

/// POST without a body.
pub fn post(addr: SocketAddr, path: &str) -> io::Result<Answer> {
    request(addr, "POST", path, &[], b"", Duration::from_secs(5))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status line and headers, and the offset of the body.
fn parse_head(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((
        Answer {
            status,
            headers,
            body: Vec::new(),
        },
        end + 4,
    ))
}

/// A complete answer when the buffer holds one (by Content-Length or chunked framing).
fn parse_complete(buf: &[u8]) -> Option<Answer> {
    let (mut a, off) = parse_head(buf)?;
    let rest = &buf[off..];
    if a.status == 204 || a.status == 304 || (100..200).contains(&a.status) {
        return Some(a);
    }
    if a.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        a.body = dechunk(rest)?;
        return Some(a);
    }
    let len: usize = a.header("content-length")?.parse().ok()?;
    if rest.len() >= len {
        a.body = rest[..len].to_vec();
        return Some(a);
    }
    None
}

/// Decode a complete chunked body; None while incomplete.
pub fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let size_txt = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_txt.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
