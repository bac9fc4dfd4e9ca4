//! HTTP/2 streams at the edge: a stream whose request has no body is offered to the edge's own
//! answers and forwarding (`early`, `direct`) as the HTTP/1 head it stands for, and answered
//! on its stream; any other stream, and any request `direct` leaves, is pingora's as before.
//!
//! Direct forwarding speaks HTTP/1 to its client: what it writes (Rempart's answers, or a
//! server's response with the head Rempart made of it and the body in the client's framing)
//! is read back here into a response head and DATA frames, the body sent within the stream's
//! flow-control window. A body that stops short (the server failed in the middle) resets the
//! stream instead of ending it, so the client cannot take it for whole. A client that resets
//! the stream while its request waits in a login queue leaves the line.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::SendStream;
use http::header::{self, HeaderName, HeaderValue};
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v2::server::HttpSession;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::direct::Client;

/// Response head bytes a stream takes at most (Rempart's heads are at most 1 MiB).
const MAX_HEAD: usize = 1_048_576 + 4096;
/// Response headers read back at most (direct forwarding passes at most 256).
const MAX_HEADERS: usize = 260;
/// Body bytes waiting for the client's flow-control window before writes wait too.
const MAX_PENDING: usize = 64 * 1024;
/// Bytes a chunk-size line of Rempart's takes at most (hex digits and CRLF).
const MAX_SIZE_LINE: usize = 32;

/// The HTTP/1 head a stream's request stands for: its method, target and headers, `Host` from
/// `:authority` when it has none, its cookie lines joined into one (RFC 9113, section 8.2.3).
/// None when the request has no target to forward as such, or a `Host` that differs from its
/// `:authority`: pingora's to judge.
pub fn h1_head(request: &RequestHeader) -> Option<Vec<u8>> {
    let target = request.uri.path_and_query()?.as_str();
    let authority = request.uri.authority().map(|a| a.as_str().as_bytes());
    let host = request.headers.get(header::HOST).map(HeaderValue::as_bytes);
    if let (Some(host), Some(authority)) = (host, authority) {
        if host != authority {
            return None;
        }
    }
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if host.is_none() {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(authority?);
        head.extend_from_slice(b"\r\n");
    }
    let mut cookies = request.headers.get_all(header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        head.extend_from_slice(b"cookie: ");
        head.extend_from_slice(first.as_bytes());
        for more in cookies {
            head.extend_from_slice(b"; ");
            head.extend_from_slice(more.as_bytes());
        }
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in request.headers.iter() {
        if name == header::COOKIE {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Some(head)
}

/// How the body of the response being read back is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the answer ends (a server's body read until it closed, not chunked).
    UntilEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// After the last chunk's size line: its empty line.
    LastLine,
}

enum State {
    /// Reading the response head (`head` holds what came of it).
    Head,
    /// The head is sent; the body goes out on the stream.
    Body {
        writer: SendStream<Bytes>,
        framing: Framing,
        /// The body is whole: the stream ends once `pending` is sent.
        complete: bool,
        /// END_STREAM went out.
        ended: bool,
    },
    /// The answer is whole and sent, or failed (the stream is reset when dropped).
    Closed,
}

/// One HTTP/2 stream as direct forwarding's client.
pub struct StreamClient {
    session: HttpSession,
    head_request: bool,
    head: Vec<u8>,
    /// Bytes of a chunk's framing that came without the rest of it.
    carry: Vec<u8>,
    pending: BytesMut,
    state: State,
}

fn broken(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn h2_error(e: h2::Error) -> io::Error {
    io::Error::other(e)
}

impl StreamClient {
    pub fn new(session: HttpSession) -> Self {
        let head_request = session.req_header().method == Method::HEAD;
        StreamClient {
            session,
            head_request,
            head: Vec::new(),
            carry: Vec::new(),
            pending: BytesMut::new(),
            state: State::Head,
        }
    }

    /// End the stream when the answer is whole and sent; otherwise it is reset.
    pub async fn finish(mut self) {
        if let State::Body {
            framing, complete, ..
        } = &mut self.state
        {
            // A body read until the server closed is whole once direct forwarding is done.
            if *framing == Framing::UntilEnd {
                *complete = true;
            }
        }
        let _ = std::future::poll_fn(|cx| self.drain(cx)).await;
        // Dropping the session and the writer resets a stream that did not end.
    }

    /// Consume `input` (all of it) into the head or the pending body.
    fn take(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            match &mut self.state {
                State::Closed => return Ok(()),
                State::Head => {
                    // The blank line may straddle two writes: search from just before the new
                    // bytes. Most heads come whole in one write, and are read in place.
                    let found = if self.head.is_empty() {
                        find_end(input, 0)
                    } else {
                        let seen = self.head.len();
                        self.head.extend_from_slice(input);
                        find_end(&self.head, seen.saturating_sub(3)).map(|end| end - seen)
                    };
                    let Some(end) = found else {
                        if self.head.is_empty() {
                            self.head.extend_from_slice(input);
                        }
                        if self.head.len() > MAX_HEAD {
                            return Err(broken("response head too large"));
                        }
                        return Ok(());
                    };
                    if self.head.is_empty() {
                        self.start_response(&input[..end])?;
                    } else {
                        let mut head = std::mem::take(&mut self.head);
                        head.truncate(head.len() - (input.len() - end));
                        self.start_response(&head)?;
                        head.clear();
                        self.head = head;
                    }
                    input = &input[end..];
                }
                State::Body {
                    framing, complete, ..
                } => {
                    if *complete {
                        return Ok(());
                    }
                    // A chunk-size line or chunk end cut between two writes waits in `carry`.
                    let joined;
                    let data: &[u8] = if self.carry.is_empty() {
                        input
                    } else {
                        let mut carried = std::mem::take(&mut self.carry);
                        carried.extend_from_slice(input);
                        joined = carried;
                        &joined
                    };
                    let used = body_bytes(framing, complete, data, &mut self.pending)?;
                    if used < data.len() && !*complete {
                        if data.len() - used > MAX_SIZE_LINE {
                            return Err(broken("chunk size line too long"));
                        }
                        self.carry.extend_from_slice(&data[used..]);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A whole response head: send it (an interim one is dropped, as pingora does).
    fn start_response(&mut self, head: &[u8]) -> io::Result<()> {
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        match config.parse_response_with_uninit_headers(&mut response, head, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(broken("unreadable response head")),
        }
        let status = response.code.ok_or_else(|| broken("no status"))?;
        if (100..200).contains(&status) {
            return Ok(());
        }
        let mut answer = ResponseHeader::build_no_case(status, Some(response.headers.len()))
            .map_err(|_| broken("bad status"))?;
        let mut length = None;
        let mut chunked = false;
        for h in response.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let text = std::str::from_utf8(h.value).map_err(|_| broken("length"))?;
                length = Some(text.parse::<u64>().map_err(|_| broken("length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.eq_ignore_ascii_case(b"chunked");
                continue;
            }
            // Connection-specific fields have no place in HTTP/2 (RFC 9113, section 8.2.2).
            if ["connection", "keep-alive", "proxy-connection", "upgrade"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| broken("name"))?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| broken("value"))?;
            answer
                .append_header(name, value)
                .map_err(|_| broken("header"))?;
        }
        let framing = if self.head_request || status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            match length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilEnd,
            }
        };
        let bodiless = framing == Framing::Length(0);
        self.session
            .write_response_header(Box::new(answer), bodiless)
            .map_err(io::Error::other)?;
        self.state = match self.session.take_response_body_writer() {
            Some(writer) if !bodiless => State::Body {
                writer,
                framing,
                complete: false,
                ended: false,
            },
            _ => State::Closed,
        };
        Ok(())
    }

    /// Send what is pending within the stream's window; Ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let State::Body {
            writer,
            complete,
            ended,
            ..
        } = &mut self.state
        else {
            return Poll::Ready(Ok(()));
        };
        while !self.pending.is_empty() {
            writer.reserve_capacity(self.pending.len());
            match ready!(writer.poll_capacity(cx)) {
                None => return Poll::Ready(Err(broken("stream closed"))),
                Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let data = self.pending.split_to(n.min(self.pending.len())).freeze();
                    let end = *complete && self.pending.is_empty();
                    writer.send_data(data, end).map_err(h2_error)?;
                    *ended |= end;
                }
            }
        }
        if *complete && !*ended {
            writer.send_data(Bytes::new(), true).map_err(h2_error)?;
            *ended = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// Where the head in `bytes` ends (after its blank line), searching from `from`.
fn find_end(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// Move what `input` holds of the body into `pending`; the bytes used. Rempart's own framing
/// (a length, or chunks without extensions or trailers), read strictly.
fn body_bytes(
    framing: &mut Framing,
    complete: &mut bool,
    input: &[u8],
    pending: &mut BytesMut,
) -> io::Result<usize> {
    match framing {
        Framing::UntilEnd => {
            pending.extend_from_slice(input);
            Ok(input.len())
        }
        Framing::Length(left) => {
            let n = (input.len() as u64).min(*left) as usize;
            pending.extend_from_slice(&input[..n]);
            *left -= n as u64;
            *complete = *left == 0;
            // Bytes past the length are not the body's: dropped, as a client would.
            Ok(input.len())
        }
        Framing::Chunked(state) => {
            let mut at = 0;
            while at < input.len() && !*complete {
                let rest = &input[at..];
                match *state {
                    Chunk::Size => match httparse::parse_chunk_size(rest) {
                        Ok(httparse::Status::Complete((n, 0))) => {
                            at += n;
                            *state = Chunk::LastLine;
                        }
                        Ok(httparse::Status::Complete((n, size))) => {
                            at += n;
                            *state = Chunk::Data(size);
                        }
                        Ok(httparse::Status::Partial) => return Ok(at),
                        Err(_) => return Err(broken("chunk size")),
                    },
                    Chunk::Data(left) => {
                        let n = (rest.len() as u64).min(left) as usize;
                        pending.extend_from_slice(&rest[..n]);
                        at += n;
                        *state = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                    }
                    Chunk::DataEnd | Chunk::LastLine => {
                        if rest.len() < 2 && b"\r\n".starts_with(rest) {
                            return Ok(at);
                        }
                        if !rest.starts_with(b"\r\n") {
                            return Err(broken("chunk end"));
                        }
                        at += 2;
                        if *state == Chunk::LastLine {
                            *complete = true;
                        }
                        *state = Chunk::Size;
                    }
                }
            }
            // Bytes past the last chunk are not the body's: dropped, as a client would.
            Ok(if *complete { input.len() } else { at })
        }
    }
}

impl AsyncWrite for StreamClient {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= MAX_PENDING {
            ready!(this.drain(cx))?;
        }
        match this.take(buf) {
            Ok(()) => {
                // Sent as far as the window allows now; the rest waits for the next write.
                if let Poll::Ready(Err(e)) = this.drain(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(buf.len()))
            }
            Err(e) => {
                this.state = State::Closed;
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().drain(cx)
    }
}

impl AsyncRead for StreamClient {
    /// Nothing is read from a stream whose request is whole; the read ends (as a close does)
    /// when the client resets the stream or the connection goes.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut idle = this.session.idle();
        match Pin::new(&mut idle).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }
}

impl Client for StreamClient {
    fn unread(&mut self, _bytes: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8]) -> (io::Result<usize>, bool, Vec<u8>) {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut complete = false;
        let mut pending = BytesMut::new();
        let used = body_bytes(&mut framing, &mut complete, input, &mut pending);
        (used, complete, pending.to_vec())
    }

    #[test]
    fn chunks_are_read_back_into_their_data() {
        let (used, complete, data) = chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!(
            (used.ok(), complete, &data[..]),
            (Some(26), true, &b"hello world"[..])
        );
    }

    #[test]
    fn a_body_without_its_last_chunk_is_not_complete() {
        let (used, complete, data) = chunked(b"5\r\nhello\r\n");
        assert_eq!(
            (used.ok(), complete, &data[..]),
            (Some(10), false, &b"hello"[..])
        );
    }

    #[test]
    fn a_chunk_cut_between_two_writes_is_read_whole() {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut complete = false;
        let mut pending = BytesMut::new();
        let used = body_bytes(&mut framing, &mut complete, b"5\r\nhello\r", &mut pending).ok();
        assert_eq!((used, complete), (Some(8), false));
        let used = body_bytes(&mut framing, &mut complete, b"\r\n0\r", &mut pending).ok();
        assert_eq!((used, complete), (Some(2), false));
        let used = body_bytes(&mut framing, &mut complete, b"0\r\n\r\n", &mut pending).ok();
        assert_eq!(
            (used, complete, &pending[..]),
            (Some(5), true, &b"hello"[..])
        );
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        assert!(chunked(b"zz\r\nhello\r\n").0.is_err());
        assert!(chunked(b"5\r\nhelloXX").0.is_err());
    }

    #[test]
    fn a_length_body_completes_at_its_length() {
        let mut framing = Framing::Length(5);
        let mut complete = false;
        let mut pending = BytesMut::new();
        let used = body_bytes(&mut framing, &mut complete, b"hel", &mut pending).ok();
        assert_eq!((used, complete), (Some(3), false));
        let used = body_bytes(&mut framing, &mut complete, b"lo", &mut pending).ok();
        assert_eq!(
            (used, complete, &pending[..]),
            (Some(2), true, &b"hello"[..])
        );
    }

    #[test]
    fn an_http2_request_becomes_its_http1_head() {
        let mut request = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        request.set_uri("https://ent.example:443/a?b=1".parse().unwrap());
        request.insert_header("accept", "*/*").unwrap();
        request.append_header("cookie", "a=1").unwrap();
        request.append_header("cookie", "b=2").unwrap();
        let head = h1_head(&request).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nhost: ent.example:443\r\ncookie: a=1; b=2\r\naccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn a_host_that_differs_from_the_authority_is_left_to_pingora() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.set_uri("https://ent.example/".parse().unwrap());
        request.insert_header("host", "other.example").unwrap();
        assert!(h1_head(&request).is_none());
    }
}
