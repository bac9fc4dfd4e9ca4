//! Reading a request and an error for the pipeline: the host, the size of the head, whether a
//! body can be replayed, and how a failed try is classified (for outlier detection, retries
//! and the answer).

use http::header;
use pingora::http::RequestHeader;
use pingora::protocols::Digest;
use pingora::{Error, ErrorSource, ErrorType};

use crate::answer::Reason;
use crate::upstream::retry;
use crate::upstream::Outcome;

/// Whether the request's body, if any, fits pingora's replay buffer, so a timed-out try can be
/// sent again (a chunked body of unknown length does not count as fitting).
pub(super) fn body_fits_replay_buffer(req: &RequestHeader) -> bool {
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    req.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_none_or(|len| len <= retry::REPLAY_BUFFER_BYTES)
}

pub(super) fn is_tls(digest: Option<&Digest>) -> bool {
    digest.is_some_and(|d| d.ssl_digest.is_some())
}

/// The request's host, lowercase and without port: `Host`, else the URI authority (HTTP/2).
pub(super) fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    host_of(raw)
}

/// A `Host` value (or an authority) lowercase and without its port.
pub(super) fn host_of(raw: &str) -> String {
    let without_port = if raw.starts_with('[') {
        // [v6]:port
        raw.split_once(']').map_or(raw, |(h, _)| h)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = without_port.trim_start_matches('[');
    host.to_ascii_lowercase()
}

/// Bytes of the request head as received, approximately: request line and header lines.
pub(super) fn head_bytes(req: &RequestHeader) -> usize {
    let uri = req.uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    req.headers.iter().fold(uri + 16, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

/// Classify an error that ended a try at an upstream server.
pub(super) fn outcome_of(e: &Error) -> Outcome {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout => Outcome::ConnectError,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

/// The reason Rempart gives the client for an error that ended the request.
pub(super) fn reason_of(e: &Error) -> Option<Reason> {
    match e.etype() {
        ErrorType::HTTPStatus(413) => Some(Reason::BodyTooLarge),
        ErrorType::HTTPStatus(431) => Some(Reason::HeadersTooLarge),
        ErrorType::HTTPStatus(408) => Some(Reason::BodyTooSlow),
        ErrorType::HTTPStatus(400) => Some(Reason::Malformed),
        ErrorType::HTTPStatus(503) => Some(Reason::NoUpstream),
        ErrorType::HTTPStatus(504) => Some(Reason::UpstreamTimeout),
        ErrorType::HTTPStatus(_) => Some(Reason::UpstreamError),
        _ => match e.esource() {
            ErrorSource::Upstream => Some(match outcome_of(e) {
                Outcome::Timeout => Reason::UpstreamTimeout,
                Outcome::ConnectError if e.etype() == &ErrorType::ConnectTimedout => {
                    Reason::UpstreamTimeout
                }
                _ => Reason::UpstreamError,
            }),
            ErrorSource::Downstream => match e.etype() {
                // Request heads are read before any hook: a read timeout here is a body
                // that stopped arriving.
                ErrorType::ReadTimedout => Some(Reason::BodyTooSlow),
                ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::WriteTimedout => None,
                _ => Some(Reason::Malformed),
            },
            ErrorSource::Internal | ErrorSource::Unset => Some(Reason::UpstreamError),
        },
    }
}
