//! Request bodies: reading a small form body for `form:` limits (still forwarded whole), and
//! policing bodies as they stream (`max_body_bytes`, `body_min_rate`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::keys::{body_kind, BodyKind};
use crate::answer::Reason;

/// Form bodies read for `form:` limits, at most (pingora's replay buffer holds this much, and
/// is what forwards the bytes read here).
pub const FORM_BODY_MAX: u64 = 64 * 1024;

/// How long after the head a body may be slower than `body_min_rate`.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// A request body that sends nothing for this long is cut (408).
pub const BODY_STALL: Duration = Duration::from_secs(10);

/// What a `form:` limit sees of the body.
#[derive(Debug)]
pub enum FormBody {
    /// The route has no form limit.
    NotRead,
    /// No body.
    Empty,
    /// Too large, chunked, or of another type: every such request shares one key.
    Unreadable,
    Read {
        kind: BodyKind,
        bytes: Bytes,
    },
}

/// Read a form body of at most 64 KiB, declared by Content-Length, within `deadline`. The bytes
/// stay in the session's replay buffer, from which pingora sends them upstream.
pub async fn read_form_body(session: &mut Session, deadline: Duration) -> Result<FormBody, Reason> {
    let headers = &session.req_header().headers;
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let kind = body_kind(headers);
    match (chunked, length) {
        (false, Some(0)) => return Ok(FormBody::Empty),
        // HTTP/1 without a length or chunked coding has no body; HTTP/2 streams need neither.
        (false, None) if session.is_body_empty() => return Ok(FormBody::Empty),
        (false, None) if kind == BodyKind::Other => return Ok(FormBody::Unreadable),
        (false, None) => {}
        (true, _) => return Ok(FormBody::Unreadable),
        (false, Some(n)) if n > FORM_BODY_MAX || kind == BodyKind::Other => {
            return Ok(FormBody::Unreadable)
        }
        _ => {}
    }
    if session.is_body_done() {
        return Ok(FormBody::Empty);
    }
    session.enable_retry_buffering();
    let mut bytes = BytesMut::new();
    let read = async {
        while let Some(chunk) = session.read_request_body().await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > FORM_BODY_MAX {
                break;
            }
        }
        Ok::<_, Box<Error>>(())
    };
    match tokio::time::timeout(deadline, read).await {
        // Longer than announced nowhere (HTTP/2 without Content-Length): past 64 KiB it is not
        // read, and shares the unreadable key.
        Ok(Ok(())) if bytes.len() as u64 > FORM_BODY_MAX => Ok(FormBody::Unreadable),
        Ok(Ok(())) => Ok(FormBody::Read {
            kind,
            bytes: bytes.freeze(),
        }),
        Ok(Err(_)) => Err(Reason::Malformed),
        Err(_) => Err(Reason::BodyTooSlow),
    }
}

/// `Err(413)` once more than `max_bytes` were read; `Err(408)` when, after the grace time, the
/// body arrives slower than `min_rate` bytes per second on average.
pub fn check_body(
    bytes_read: u64,
    since_head: Duration,
    end_of_body: bool,
    max_bytes: u64,
    min_rate: u64,
) -> pingora::Result<()> {
    if bytes_read > max_bytes {
        return Error::e_explain(
            ErrorType::HTTPStatus(413),
            format!("request body over max_body_bytes ({max_bytes})"),
        );
    }
    if !end_of_body && min_rate > 0 && since_head > BODY_RATE_GRACE {
        let expected = since_head.as_secs_f64() * min_rate as f64;
        if (bytes_read as f64) < expected {
            return Error::e_explain(
                ErrorType::HTTPStatus(408),
                format!("request body slower than body_min_rate ({min_rate} B/s)"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: pingora::Result<()>) -> Option<u16> {
        r.err().and_then(|e| match e.etype() {
            ErrorType::HTTPStatus(s) => Some(*s),
            _ => None,
        })
    }

    #[test]
    fn too_large_is_413_as_it_streams() {
        let s = Duration::from_secs(1);
        assert_eq!(status(check_body(100, s, false, 100, 1024)), None);
        assert_eq!(status(check_body(101, s, false, 100, 1024)), Some(413));
        assert_eq!(status(check_body(101, s, true, 100, 1024)), Some(413));
    }

    #[test]
    fn slow_bodies_are_408_after_the_grace_time() {
        // 1 KiB/s: 100 bytes after 3 s is slow but within the grace time.
        assert_eq!(
            status(check_body(
                100,
                Duration::from_secs(3),
                false,
                1 << 20,
                1024
            )),
            None
        );
        assert_eq!(
            status(check_body(
                100,
                Duration::from_secs(6),
                false,
                1 << 20,
                1024
            )),
            Some(408)
        );
        assert_eq!(
            status(check_body(
                7000,
                Duration::from_secs(6),
                false,
                1 << 20,
                1024
            )),
            None
        );
        // The last bytes are never cut for rate.
        assert_eq!(
            status(check_body(100, Duration::from_secs(6), true, 1 << 20, 1024)),
            None
        );
    }
}
