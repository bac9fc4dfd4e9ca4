//! A raw HTTP/2 client for attack tests, written the way an attacker writes one: frames built by
//! hand (no h2 crate on this side), request headers HPACK-encoded by hand (literal fields
//! without indexing, new names, no Huffman, so no dynamic table to keep), replies read frame by
//! frame.
//!
//! - Frames: [`push_frame`] / [`encode_frame`] and one builder per type ([`settings_frame`],
//!   [`headers_frame`], [`rst_stream_frame`], ...), to batch many frames into one write;
//!   [`push_frame_header`] writes a header that may lie about the length.
//! - HPACK: [`hpack_int`], [`hpack_literal`], [`hpack_block`], [`request_block`]; the `:status`
//!   of a response with [`status_of`] (static entries 8..14 and literal `:status`, plain or
//!   Huffman-coded digits; a dynamic-table reference gives `None`: send
//!   `SETTINGS_HEADER_TABLE_SIZE = 0` when a test needs every status).
//! - [`Frame`]: one frame read from the server, with accessors for GOAWAY, RST_STREAM,
//!   SETTINGS, PING and WINDOW_UPDATE.
//! - [`H2Conn`]: a connection over TLS (ALPN `h2`, trusting `certs/dev/ca.crt`) or plain TCP
//!   (prior knowledge), optionally from a chosen source address. It derefs to [`H2Writer`] (every
//!   `send_*`) and reads with [`H2Conn::read_frame`]; [`H2Conn::wait_close_or_goaway`] gives the
//!   [`Outcome`] of an attack (GOAWAY and its code, close or reset and when, frames sent before
//!   the server stopped reading). [`H2Conn::into_split`] gives an [`H2Reader`] and an
//!   [`H2Writer`] for two tasks: one attacks while the other watches for the GOAWAY.
//! - [`parse_duration`]: `10s`, `500ms`, `2m` for the attack tools' command lines.
//!
//! Every read takes a timeout and every write is bounded by the connection's write timeout (a
//! write that does not finish in time means the server stopped reading; it is recorded in the
//! [`Outcome`] and the writer refuses further writes). Nothing here panics on what the server
//! sends, and reading methods are cancel-safe (a `select!` may drop them between frames).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::process::repo_path;

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 9;
/// The largest length a frame header can declare (2^24 - 1).
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;
/// The largest stream id (2^31 - 1).
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;
/// How long a write may take before the server is said to have stopped reading.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long TCP connect, and then the TLS handshake, may each take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many frames are read by one `wait_*` call (besides its timeout).
pub const MAX_FRAMES_PER_WAIT: u64 = 10_000_000;

/// Frame types (RFC 9113 section 6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// DATA, HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE.
    pub const PADDED: u8 = 0x8;
    /// HEADERS.
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes of RST_STREAM and GOAWAY.
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const SETTINGS_TIMEOUT: u32 = 0x4;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const CONNECT_ERROR: u32 = 0xa;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    pub const INADEQUATE_SECURITY: u32 = 0xc;
    pub const HTTP_1_1_REQUIRED: u32 = 0xd;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// The name of a frame type ("GOAWAY"), or "UNKNOWN".
pub fn kind_name(k: u8) -> &'static str {
    match k {
        kind::DATA => "DATA",
        kind::HEADERS => "HEADERS",
        kind::PRIORITY => "PRIORITY",
        kind::RST_STREAM => "RST_STREAM",
        kind::SETTINGS => "SETTINGS",
        kind::PUSH_PROMISE => "PUSH_PROMISE",
        kind::PING => "PING",
        kind::GOAWAY => "GOAWAY",
        kind::WINDOW_UPDATE => "WINDOW_UPDATE",
        kind::CONTINUATION => "CONTINUATION",
        _ => "UNKNOWN",
    }
}

/// The name of an error code ("ENHANCE_YOUR_CALM"), or its hex value ("0x1f").
pub fn code_name(c: u32) -> String {
    let name = match c {
        code::NO_ERROR => "NO_ERROR",
        code::PROTOCOL_ERROR => "PROTOCOL_ERROR",
        code::INTERNAL_ERROR => "INTERNAL_ERROR",
        code::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
        code::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
        code::STREAM_CLOSED => "STREAM_CLOSED",
        code::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
        code::REFUSED_STREAM => "REFUSED_STREAM",
        code::CANCEL => "CANCEL",
        code::COMPRESSION_ERROR => "COMPRESSION_ERROR",
        code::CONNECT_ERROR => "CONNECT_ERROR",
        code::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
        code::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
        code::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
        other => return format!("{other:#x}"),
    };
    name.to_string()
}

// ---------------------------------------------------------------------------------------------
// Frame building

/// Append a frame header declaring `len` (only its low 24 bits are sent: a header may lie about
/// the payload that follows). The reserved bit of the stream id is sent as given.
pub fn push_frame_header(out: &mut Vec<u8>, len: u32, kind: u8, flags: u8, stream_id: u32) {
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// Append a whole frame. A payload longer than [`MAX_FRAME_LEN`] is cut to that length.
pub fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_FRAME_LEN)];
    // Cannot truncate: the length is at most 2^24 - 1 here.
    push_frame_header(out, payload.len() as u32, kind, flags, stream_id);
    out.extend_from_slice(payload);
}

/// One frame as bytes.
pub fn encode_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    push_frame(&mut out, kind, flags, stream_id, payload);
    out
}

/// The payload of a SETTINGS frame.
pub fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::with_capacity(6 * settings.len());
    for (id, value) in settings {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&value.to_be_bytes());
    }
    p
}

/// A SETTINGS frame (any ids and values, even invalid ones).
pub fn settings_frame(settings: &[(u16, u32)]) -> Vec<u8> {
    encode_frame(kind::SETTINGS, 0, 0, &settings_payload(settings))
}

/// A SETTINGS frame with ACK.
pub fn settings_ack_frame() -> Vec<u8> {
    encode_frame(kind::SETTINGS, flag::ACK, 0, &[])
}

fn flags_of(end_stream: bool, end_headers: bool) -> u8 {
    let mut f = 0;
    if end_stream {
        f |= flag::END_STREAM;
    }
    if end_headers {
        f |= flag::END_HEADERS;
    }
    f
}

/// A HEADERS frame carrying `block` (an HPACK header block fragment).
pub fn headers_frame(stream_id: u32, block: &[u8], end_stream: bool, end_headers: bool) -> Vec<u8> {
    encode_frame(
        kind::HEADERS,
        flags_of(end_stream, end_headers),
        stream_id,
        block,
    )
}

/// A CONTINUATION frame carrying `block`.
pub fn continuation_frame(stream_id: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    encode_frame(
        kind::CONTINUATION,
        flags_of(false, end_headers),
        stream_id,
        block,
    )
}

/// A DATA frame (may be empty).
pub fn data_frame(stream_id: u32, data: &[u8], end_stream: bool) -> Vec<u8> {
    encode_frame(kind::DATA, flags_of(end_stream, false), stream_id, data)
}

/// A RST_STREAM frame.
pub fn rst_stream_frame(stream_id: u32, error_code: u32) -> Vec<u8> {
    encode_frame(kind::RST_STREAM, 0, stream_id, &error_code.to_be_bytes())
}

/// A PING frame (with ACK: the answer to a PING).
pub fn ping_frame(payload: [u8; 8], ack: bool) -> Vec<u8> {
    encode_frame(kind::PING, if ack { flag::ACK } else { 0 }, 0, &payload)
}

/// A PRIORITY frame: `stream_id` depends on `depends_on` with `weight` (sent as is: the wire
/// value is weight - 1).
pub fn priority_frame(stream_id: u32, depends_on: u32, exclusive: bool, weight: u8) -> Vec<u8> {
    let dep = if exclusive {
        depends_on | 0x8000_0000
    } else {
        depends_on & 0x7fff_ffff
    };
    let mut p = dep.to_be_bytes().to_vec();
    p.push(weight);
    encode_frame(kind::PRIORITY, 0, stream_id, &p)
}

/// A WINDOW_UPDATE frame (stream 0: the connection window). Any increment, even 0.
pub fn window_update_frame(stream_id: u32, increment: u32) -> Vec<u8> {
    encode_frame(kind::WINDOW_UPDATE, 0, stream_id, &increment.to_be_bytes())
}

/// A GOAWAY frame.
pub fn goaway_frame(last_stream_id: u32, error_code: u32, debug: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + debug.len());
    p.extend_from_slice(&last_stream_id.to_be_bytes());
    p.extend_from_slice(&error_code.to_be_bytes());
    p.extend_from_slice(debug);
    encode_frame(kind::GOAWAY, 0, 0, &p)
}

// ---------------------------------------------------------------------------------------------
// HPACK (RFC 7541)

/// Append an HPACK integer with an N-bit prefix (`prefix_bits` in 1..=8); `first` holds the
/// bits above the prefix (e.g. 0x80 for an indexed field).
pub fn hpack_int(out: &mut Vec<u8>, prefix_bits: u8, first: u8, value: u64) {
    let prefix_bits = prefix_bits.clamp(1, 8);
    let max = (1u64 << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut v = value - max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Decode an HPACK integer with an N-bit prefix at the start of `buf`: (value, bytes used).
/// None when the input ends early or the integer does not fit in 56 bits.
pub fn hpack_decode_int(buf: &[u8], prefix_bits: u8) -> Option<(u64, usize)> {
    let prefix_bits = prefix_bits.clamp(1, 8);
    let max = (1u64 << prefix_bits) - 1;
    let first = u64::from(*buf.first()?) & max;
    if first < max {
        return Some((first, 1));
    }
    let mut value = max;
    for (i, b) in buf.iter().enumerate().skip(1).take(8) {
        value += u64::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0x00, s.len() as u64);
    out.extend_from_slice(s);
}

/// Append a "literal header field without indexing, new name" with no Huffman coding: the
/// encoding that needs no state on either side. Names are sent as given (HTTP/2 wants them
/// lowercase: an attacker may not).
pub fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_string(out, name);
    hpack_string(out, value);
}

/// A header block of literal fields, in order.
pub fn hpack_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in headers {
        hpack_literal(&mut out, n.as_bytes(), v.as_bytes());
    }
    out
}

/// A request's header block: `:method`, `:scheme`, `:path`, `:authority`, then `extra`.
pub fn request_block(
    method: &str,
    scheme: &str,
    path: &str,
    authority: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = hpack_block(&[
        (":method", method),
        (":scheme", scheme),
        (":path", path),
        (":authority", authority),
    ]);
    out.extend_from_slice(&hpack_block(extra));
    out
}

/// Decode a Huffman-coded string made only of digits (enough for `:status`). None for any other
/// symbol or bad padding.
fn huffman_digits(data: &[u8]) -> Option<String> {
    let total = data.len() * 8;
    let bit = |i: usize| (data[i / 8] >> (7 - i % 8)) & 1;
    let bits = |from: usize, n: usize| (from..from + n).fold(0u8, |acc, i| (acc << 1) | bit(i));
    let mut out = String::new();
    let mut pos = 0;
    while pos < total {
        let left = total - pos;
        if left >= 5 && bits(pos, 5) <= 2 {
            // '0' 00000, '1' 00001, '2' 00010
            out.push(char::from(b'0' + bits(pos, 5)));
            pos += 5;
        } else if left >= 6 && (0x19..=0x1f).contains(&bits(pos, 6)) {
            // '3' 011001 ... '9' 011111
            out.push(char::from(b'3' + bits(pos, 6) - 0x19));
            pos += 6;
        } else if left < 8 && bits(pos, left) == (1u8 << left) - 1 {
            // Padding: the most significant bits of EOS, all ones, shorter than a byte.
            break;
        } else {
            return None;
        }
    }
    Some(out)
}

/// The `:status` of a HEADERS frame from the server, when its header block starts with it as a
/// static indexed field (entries 8..14: 200 204 206 304 400 404 500) or as a literal (indexed
/// name 8..14 or the name `:status`; plain or Huffman-coded digits). Dynamic table size updates
/// before it are skipped. None for anything else (e.g. a dynamic table reference).
pub fn status_of(frame: &Frame) -> Option<u16> {
    const STATIC_STATUS: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if frame.kind != kind::HEADERS {
        return None;
    }
    let mut block = frame.header_block()?;
    for _ in 0..4 {
        let b = *block.first()?;
        let (name_index, used) = if b & 0x80 != 0 {
            let (i, _) = hpack_decode_int(block, 7)?;
            return (8..=14)
                .contains(&i)
                .then(|| STATIC_STATUS[(i - 8) as usize]);
        } else if b & 0xc0 == 0x40 {
            hpack_decode_int(block, 6)?
        } else if b & 0xe0 == 0x20 {
            let (_, used) = hpack_decode_int(block, 5)?;
            block = &block[used..];
            continue;
        } else {
            hpack_decode_int(block, 4)?
        };
        let mut rest = &block[used..];
        if name_index == 0 {
            let (name, n) = hpack_decode_string(rest)?;
            if name != b":status" {
                return None;
            }
            rest = &rest[n..];
        } else if !(8..=14).contains(&name_index) {
            return None;
        }
        let (huffman, value) = hpack_string_at(rest)?;
        let text = if huffman {
            huffman_digits(value)?
        } else {
            String::from_utf8(value.to_vec()).ok()?
        };
        return text.parse().ok();
    }
    None
}

/// (Huffman flag, raw bytes) of the string literal at the start of `buf`.
fn hpack_string_at(buf: &[u8]) -> Option<(bool, &[u8])> {
    let huffman = buf.first()? & 0x80 != 0;
    let (len, used) = hpack_decode_int(buf, 7)?;
    let len = usize::try_from(len).ok()?;
    let data = buf.get(used..used.checked_add(len)?)?;
    Some((huffman, data))
}

/// A string literal without Huffman coding: (bytes, bytes used). None for a Huffman one.
fn hpack_decode_string(buf: &[u8]) -> Option<(&[u8], usize)> {
    let (huffman, data) = hpack_string_at(buf)?;
    if huffman {
        return None;
    }
    let (_, used) = hpack_decode_int(buf, 7)?;
    Some((data, used + data.len()))
}

// ---------------------------------------------------------------------------------------------
// Frames from the server

/// One frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    /// Without the reserved bit.
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

/// The content of a GOAWAY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream_id: u32,
    pub error_code: u32,
    /// The additional debug data, as text (lossy).
    pub debug: String,
}

impl GoAway {
    /// The error code's name, e.g. "ENHANCE_YOUR_CALM".
    pub fn code_name(&self) -> String {
        code_name(self.error_code)
    }
}

impl Frame {
    /// The first frame at the start of `buf` and the bytes it used; None when `buf` does not
    /// hold a whole frame yet.
    pub fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
        let head = buf.get(..FRAME_HEADER_LEN)?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let payload = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
        let sid = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((
            Frame {
                kind: head[3],
                flags: head[4],
                stream_id: sid,
                payload: payload.to_vec(),
            },
            FRAME_HEADER_LEN + len,
        ))
    }

    /// The frame as bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self.kind, self.flags, self.stream_id, &self.payload)
    }

    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind)
    }

    pub fn has_flag(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// A DATA or HEADERS frame with END_STREAM.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.kind, kind::DATA | kind::HEADERS) && self.has_flag(flag::END_STREAM)
    }

    /// A HEADERS, PUSH_PROMISE or CONTINUATION frame with END_HEADERS.
    pub fn is_end_headers(&self) -> bool {
        matches!(
            self.kind,
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION
        ) && self.has_flag(flag::END_HEADERS)
    }

    /// A SETTINGS or PING frame with ACK.
    pub fn is_ack(&self) -> bool {
        matches!(self.kind, kind::SETTINGS | kind::PING) && self.has_flag(flag::ACK)
    }

    /// A GOAWAY's content (None for other frames or a payload shorter than 8 bytes).
    pub fn goaway(&self) -> Option<GoAway> {
        if self.kind != kind::GOAWAY {
            return None;
        }
        let p = self.payload.get(..8)?;
        Some(GoAway {
            last_stream_id: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
            error_code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            debug: String::from_utf8_lossy(&self.payload[8..]).into_owned(),
        })
    }

    /// A RST_STREAM's error code.
    pub fn rst_code(&self) -> Option<u32> {
        if self.kind != kind::RST_STREAM {
            return None;
        }
        let p = self.payload.get(..4)?;
        Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
    }

    /// A SETTINGS frame's (id, value) pairs (a trailing partial entry is ignored).
    pub fn settings(&self) -> Option<Vec<(u16, u32)>> {
        if self.kind != kind::SETTINGS {
            return None;
        }
        Some(
            self.payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect(),
        )
    }

    /// A WINDOW_UPDATE's increment.
    pub fn window_increment(&self) -> Option<u32> {
        if self.kind != kind::WINDOW_UPDATE {
            return None;
        }
        let p = self.payload.get(..4)?;
        Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff)
    }

    /// A PING's 8 bytes.
    pub fn ping_payload(&self) -> Option<[u8; 8]> {
        if self.kind != kind::PING {
            return None;
        }
        self.payload.get(..8)?.try_into().ok()
    }

    /// The header block fragment of a HEADERS or CONTINUATION frame (padding and priority
    /// removed); None when the padding or priority does not fit.
    pub fn header_block(&self) -> Option<&[u8]> {
        match self.kind {
            kind::CONTINUATION => Some(&self.payload),
            kind::HEADERS => {
                let mut p = &self.payload[..];
                if self.has_flag(flag::PADDED) {
                    let pad = usize::from(*p.first()?);
                    p = p.get(1..p.len().checked_sub(pad)?)?;
                }
                if self.has_flag(flag::PRIORITY) {
                    p = p.get(5..)?;
                }
                Some(p)
            }
            _ => None,
        }
    }

    /// The `:status` of a HEADERS frame, see [`status_of`].
    pub fn status(&self) -> Option<u16> {
        status_of(self)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} flags={:#x} stream={} len={}",
            self.kind_name(),
            self.flags,
            self.stream_id,
            self.payload.len()
        )?;
        if let Some(g) = self.goaway() {
            write!(
                f,
                " last_stream_id={} code={} debug={:?}",
                g.last_stream_id,
                g.code_name(),
                g.debug
            )?;
        } else if let Some(c) = self.rst_code() {
            write!(f, " code={}", code_name(c))?;
        } else if let Some(s) = self.status() {
            write!(f, " :status={s}")?;
        } else if let Some(s) = self.settings() {
            write!(f, " {s:?}")?;
        } else if let Some(i) = self.window_increment() {
            write!(f, " increment={i}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// What a connection runs over: a TCP stream, a TLS stream, or anything else that reads and
/// writes.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// How the server ended the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Since the connection was established.
    pub after: Duration,
    /// Reset (RST, broken pipe) rather than a clean close.
    pub reset: bool,
    /// The I/O error when it was not a plain EOF or reset (e.g. a TLS alert).
    pub error: Option<String>,
}

/// What an attack got, at the time it is asked.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The last GOAWAY received.
    pub goaway: Option<GoAway>,
    /// When the first GOAWAY came, since the connection was established.
    pub goaway_after: Option<Duration>,
    /// How many GOAWAY frames came.
    pub goaways: u64,
    /// The server closed or reset the connection (seen by a read or a write).
    pub closed: Option<Closed>,
    /// Frames (and bytes) whose writes completed.
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// A write did not finish within the write timeout: the server stopped reading after this
    /// many frames had been written.
    pub stalled_after_frames: Option<u64>,
    pub frames_received: u64,
    /// Frames received by type name.
    pub received: BTreeMap<&'static str, u64>,
    /// RST_STREAM frames received by error code name.
    pub rst_received: BTreeMap<String, u64>,
    /// Since the connection was established.
    pub elapsed: Duration,
}

impl Outcome {
    /// The error code of the last GOAWAY.
    pub fn goaway_code(&self) -> Option<u32> {
        self.goaway.as_ref().map(|g| g.error_code)
    }

    /// The server gave up on the connection: GOAWAY, close or reset.
    pub fn ended(&self) -> bool {
        self.goaway.is_some() || self.closed.is_some()
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        let goaway = match (&self.goaway, self.goaway_after) {
            (Some(g), Some(t)) => format!(
                "GOAWAY {} last_stream_id={} after {t:?}",
                g.code_name(),
                g.last_stream_id
            ),
            _ => "no GOAWAY".to_string(),
        };
        let closed = match &self.closed {
            Some(c) => format!(
                "{} after {:?}{}",
                if c.reset { "reset" } else { "closed" },
                c.after,
                c.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            None => "not closed".to_string(),
        };
        let stall = self
            .stalled_after_frames
            .map(|n| format!(", writes stalled after {n} frames"))
            .unwrap_or_default();
        let rst = if self.rst_received.is_empty() {
            String::new()
        } else {
            format!(", RST_STREAM {:?}", self.rst_received)
        };
        format!(
            "{goaway}, {closed}, {} frames sent ({} bytes){stall}, {} received {:?}{rst}, {:?} in",
            self.frames_sent, self.bytes_sent, self.frames_received, self.received, self.elapsed
        )
    }
}

const NONE: u64 = u64::MAX;

/// What the reader and the writer of one connection share.
#[derive(Debug)]
struct Shared {
    start: Instant,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    stalled_after: AtomicU64,
    /// Milliseconds since `start` when a write found the connection closed.
    write_closed_ms: AtomicU64,
    write_reset: AtomicBool,
}

fn is_reset(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// The writing half of a connection: every `send_*`.
pub struct H2Writer {
    wr: WriteHalf<BoxIo>,
    shared: Arc<Shared>,
    tls: bool,
    write_timeout: Duration,
    broken: Option<String>,
}

impl H2Writer {
    /// How long a write may take before the server is said to have stopped reading.
    pub fn set_write_timeout(&mut self, t: Duration) {
        self.write_timeout = t;
    }

    /// Whether the connection runs over TLS (decides `:scheme` in [`H2Writer::send_request`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A write failed or stalled: every later one fails at once.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Frames whose writes completed.
    pub fn frames_sent(&self) -> u64 {
        self.shared.frames_sent.load(Ordering::Relaxed)
    }

    /// Write `bytes` (and flush), crediting `frames` frames once done. The write is bounded by
    /// the write timeout.
    pub async fn send_batch(&mut self, bytes: &[u8], frames: u64) -> io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(format!("connection unusable: {why}")));
        }
        let timeout = self.write_timeout;
        let wr = &mut self.wr;
        let res = tokio::time::timeout(timeout, async {
            wr.write_all(bytes).await?;
            wr.flush().await
        })
        .await;
        let sh = &self.shared;
        match res {
            Ok(Ok(())) => {
                sh.frames_sent.fetch_add(frames, Ordering::Relaxed);
                sh.bytes_sent
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                let sent = sh.frames_sent.load(Ordering::Relaxed);
                let _ = sh.stalled_after.compare_exchange(
                    NONE,
                    sent,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                let why = format!(
                    "a write of {} bytes did not finish within {timeout:?} after {sent} frames: \
                     the server stopped reading",
                    bytes.len()
                );
                self.broken = Some(why.clone());
                Err(io::Error::new(io::ErrorKind::TimedOut, why))
            }
            Ok(Err(e)) => {
                if is_reset(e.kind()) {
                    let ms = sh.start.elapsed().as_millis() as u64;
                    let _ = sh.write_closed_ms.compare_exchange(
                        NONE,
                        ms,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    sh.write_reset.store(true, Ordering::Relaxed);
                }
                self.broken = Some(format!("write failed: {e}"));
                Err(e)
            }
        }
    }

    /// Raw bytes (no frame credited): garbage, a frame split anywhere, a lying header.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.send_batch(bytes, 0).await
    }

    /// `bytes` one byte per write, `gap` apart (a frame dribbled byte by byte); `frames` are
    /// credited after the last byte. Bounded by `bytes.len()` writes.
    pub async fn send_dribble(
        &mut self,
        bytes: &[u8],
        gap: Duration,
        frames: u64,
    ) -> io::Result<()> {
        for (i, b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            self.send_batch(std::slice::from_ref(b), if last { frames } else { 0 })
                .await?;
            if !last {
                tokio::time::sleep(gap).await;
            }
        }
        Ok(())
    }

    /// Any frame.
    pub async fn send_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        self.send_batch(&encode_frame(kind, flags, stream_id, payload), 1)
            .await
    }

    /// The connection preface (no frame credited).
    pub async fn send_preface(&mut self) -> io::Result<()> {
        self.send_raw(PREFACE).await
    }

    pub async fn send_settings(&mut self, settings: &[(u16, u32)]) -> io::Result<()> {
        self.send_batch(&settings_frame(settings), 1).await
    }

    pub async fn send_settings_ack(&mut self) -> io::Result<()> {
        self.send_batch(&settings_ack_frame(), 1).await
    }

    /// HEADERS with `headers` as literal fields, in order (pseudo-headers included by the
    /// caller: see [`H2Writer::send_request`]).
    pub async fn send_headers(
        &mut self,
        stream_id: u32,
        headers: &[(&str, &str)],
        end_stream: bool,
        end_headers: bool,
    ) -> io::Result<()> {
        self.send_headers_block(stream_id, &hpack_block(headers), end_stream, end_headers)
            .await
    }

    /// HEADERS carrying an already encoded header block fragment.
    pub async fn send_headers_block(
        &mut self,
        stream_id: u32,
        block: &[u8],
        end_stream: bool,
        end_headers: bool,
    ) -> io::Result<()> {
        self.send_batch(&headers_frame(stream_id, block, end_stream, end_headers), 1)
            .await
    }

    /// A whole request's HEADERS (END_HEADERS): `:method`, `:scheme` (https over TLS),
    /// `:path`, `:authority`, then `extra`.
    pub async fn send_request(
        &mut self,
        stream_id: u32,
        method: &str,
        path: &str,
        authority: &str,
        extra: &[(&str, &str)],
        end_stream: bool,
    ) -> io::Result<()> {
        let scheme = if self.tls { "https" } else { "http" };
        let block = request_block(method, scheme, path, authority, extra);
        self.send_headers_block(stream_id, &block, end_stream, true)
            .await
    }

    /// CONTINUATION with `headers` as literal fields.
    pub async fn send_continuation(
        &mut self,
        stream_id: u32,
        headers: &[(&str, &str)],
        end_headers: bool,
    ) -> io::Result<()> {
        self.send_continuation_block(stream_id, &hpack_block(headers), end_headers)
            .await
    }

    /// CONTINUATION carrying an already encoded fragment.
    pub async fn send_continuation_block(
        &mut self,
        stream_id: u32,
        block: &[u8],
        end_headers: bool,
    ) -> io::Result<()> {
        self.send_batch(&continuation_frame(stream_id, block, end_headers), 1)
            .await
    }

    /// DATA (may be empty).
    pub async fn send_data(
        &mut self,
        stream_id: u32,
        data: &[u8],
        end_stream: bool,
    ) -> io::Result<()> {
        self.send_batch(&data_frame(stream_id, data, end_stream), 1)
            .await
    }

    pub async fn send_rst(&mut self, stream_id: u32, error_code: u32) -> io::Result<()> {
        self.send_batch(&rst_stream_frame(stream_id, error_code), 1)
            .await
    }

    pub async fn send_ping(&mut self, payload: [u8; 8]) -> io::Result<()> {
        self.send_batch(&ping_frame(payload, false), 1).await
    }

    pub async fn send_ping_ack(&mut self, payload: [u8; 8]) -> io::Result<()> {
        self.send_batch(&ping_frame(payload, true), 1).await
    }

    pub async fn send_priority(
        &mut self,
        stream_id: u32,
        depends_on: u32,
        exclusive: bool,
        weight: u8,
    ) -> io::Result<()> {
        self.send_batch(&priority_frame(stream_id, depends_on, exclusive, weight), 1)
            .await
    }

    pub async fn send_window_update(&mut self, stream_id: u32, increment: u32) -> io::Result<()> {
        self.send_batch(&window_update_frame(stream_id, increment), 1)
            .await
    }

    pub async fn send_goaway(
        &mut self,
        last_stream_id: u32,
        error_code: u32,
        debug: &[u8],
    ) -> io::Result<()> {
        self.send_batch(&goaway_frame(last_stream_id, error_code, debug), 1)
            .await
    }

    /// Close the writing side (TLS close_notify, then FIN), bounded by the write timeout.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        tokio::time::timeout(self.write_timeout, self.wr.shutdown())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "shutdown timed out"))?
    }
}

/// The reading half of a connection.
pub struct H2Reader {
    rd: ReadHalf<BoxIo>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    pos: usize,
    closed: Option<Closed>,
    goaway: Option<GoAway>,
    goaway_after: Option<Duration>,
    goaways: u64,
    frames_received: u64,
    received: BTreeMap<&'static str, u64>,
    rst_received: BTreeMap<String, u64>,
}

impl H2Reader {
    /// The next frame, waiting at most `timeout`: Ok(None) when none came whole in time. Once
    /// the server closed the connection, frames already buffered are still returned, then an
    /// error (`UnexpectedEof` for a close, `ConnectionReset` for a reset). Cancel-safe.
    pub async fn read_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline; every turn either returns or reads more bytes.
        loop {
            if let Some((frame, used)) = Frame::parse(&self.buf[self.pos..]) {
                self.pos += used;
                self.compact();
                self.note(&frame);
                return Ok(Some(frame));
            }
            if let Some(c) = &self.closed {
                let kind = if c.reset {
                    io::ErrorKind::ConnectionReset
                } else {
                    io::ErrorKind::UnexpectedEof
                };
                return Err(io::Error::new(
                    kind,
                    format!(
                        "the server {} the connection after {:?}{}",
                        if c.reset { "reset" } else { "closed" },
                        c.after,
                        c.error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.compact();
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout(left, self.rd.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => self.close(false, None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_reset(e.kind()) => self.close(true, None),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // TLS without close_notify.
                    self.close(false, None)
                }
                Ok(Err(e)) => self.close(false, Some(e.to_string())),
            }
        }
    }

    /// Read frames until one satisfies `pred` (returned), the connection ends (error) or
    /// `timeout` passes (Ok(None)).
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Frame) -> bool,
    ) -> io::Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        for _ in 0..MAX_FRAMES_PER_WAIT {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await? {
                Some(f) if pred(&f) => return Ok(Some(f)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Read (and drop) frames until a GOAWAY comes, the server closes the connection, or
    /// `timeout` passes; then the outcome so far.
    pub async fn wait_close_or_goaway(&mut self, timeout: Duration) -> Outcome {
        self.wait(timeout, true).await
    }

    /// Read (and drop) frames until the server closes the connection or `timeout` passes (a
    /// GOAWAY is recorded on the way).
    pub async fn wait_close(&mut self, timeout: Duration) -> Outcome {
        self.wait(timeout, false).await
    }

    async fn wait(&mut self, timeout: Duration, stop_at_goaway: bool) -> Outcome {
        let deadline = Instant::now() + timeout;
        for _ in 0..MAX_FRAMES_PER_WAIT {
            if self.closed.is_some() || (stop_at_goaway && self.goaway.is_some()) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        self.outcome()
    }

    /// The last GOAWAY received.
    pub fn goaway(&self) -> Option<&GoAway> {
        self.goaway.as_ref()
    }

    /// How the server ended the connection, if it did (seen by a read or by a write).
    pub fn closed(&self) -> Option<Closed> {
        if let Some(c) = &self.closed {
            return Some(c.clone());
        }
        let ms = self.shared.write_closed_ms.load(Ordering::Relaxed);
        (ms != NONE).then(|| Closed {
            after: Duration::from_millis(ms),
            reset: self.shared.write_reset.load(Ordering::Relaxed),
            error: None,
        })
    }

    /// The outcome so far.
    pub fn outcome(&self) -> Outcome {
        let sh = &self.shared;
        let stalled = sh.stalled_after.load(Ordering::Relaxed);
        Outcome {
            goaway: self.goaway.clone(),
            goaway_after: self.goaway_after,
            goaways: self.goaways,
            closed: self.closed(),
            frames_sent: sh.frames_sent.load(Ordering::Relaxed),
            bytes_sent: sh.bytes_sent.load(Ordering::Relaxed),
            stalled_after_frames: (stalled != NONE).then_some(stalled),
            frames_received: self.frames_received,
            received: self.received.clone(),
            rst_received: self.rst_received.clone(),
            elapsed: sh.start.elapsed(),
        }
    }

    /// Give back the read buffer's memory when it holds nothing (for many idle connections).
    pub fn shrink(&mut self) {
        self.compact();
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn close(&mut self, reset: bool, error: Option<String>) {
        self.closed = Some(Closed {
            after: self.shared.start.elapsed(),
            reset,
            error,
        });
    }

    fn note(&mut self, frame: &Frame) {
        self.frames_received += 1;
        *self.received.entry(frame.kind_name()).or_default() += 1;
        if let Some(g) = frame.goaway() {
            self.goaways += 1;
            self.goaway_after.get_or_insert(self.shared.start.elapsed());
            self.goaway = Some(g);
        } else if let Some(c) = frame.rst_code() {
            // Bounded: codes are 32-bit, but a map of them is kept only up to 64 names.
            if self.rst_received.len() < 64 || self.rst_received.contains_key(&code_name(c)) {
                *self.rst_received.entry(code_name(c)).or_default() += 1;
            }
        }
    }
}

/// A raw HTTP/2 connection. Derefs to its [`H2Writer`], so every `send_*` is callable on it.
pub struct H2Conn {
    reader: H2Reader,
    writer: H2Writer,
    alpn: Option<String>,
}

impl Deref for H2Conn {
    type Target = H2Writer;
    fn deref(&self) -> &H2Writer {
        &self.writer
    }
}

impl DerefMut for H2Conn {
    fn deref_mut(&mut self) -> &mut H2Writer {
        &mut self.writer
    }
}

/// A TCP connection to `addr`, from `source` (port chosen at connect time, so many
/// destinations can share source ports) when given; no Nagle. Bounded by `timeout`.
pub async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fut = async {
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let sock = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                bind_address_no_port(&sock);
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TCP connect to {addr} took more than {timeout:?}"),
        )
    })?
}

/// IP_BIND_ADDRESS_NO_PORT: bind() picks no port, connect() does (per destination). Best effort.
fn bind_address_no_port(sock: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = sock;
}

/// A rustls client configuration trusting only the CA of `ca_pem` (default: the dev CA,
/// `certs/dev/ca.crt`), offering `alpn`. Errors instead of panicking (for the tools).
pub fn tls_config(alpn: &[&str], ca_pem: Option<&Path>) -> io::Result<Arc<rustls::ClientConfig>> {
    let default_ca = repo_path("certs/dev/ca.crt");
    let path = ca_pem.unwrap_or(&default_ca);
    let data = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &data[..]) {
        let cert = cert.map_err(|e| io::Error::other(format!("parse {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(io::Error::other(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The dev-CA configuration offering only `h2`, built once.
pub fn h2_tls_config() -> io::Result<Arc<rustls::ClientConfig>> {
    static CFG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CFG.get_or_init(|| tls_config(&["h2"], None).map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

/// TLS over `tcp` with SNI `sni`, bounded by [`CONNECT_TIMEOUT`]; the protocol chosen by ALPN.
pub async fn tls_handshake(
    tcp: TcpStream,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<(tokio_rustls::client::TlsStream<TcpStream>, Option<String>)> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("SNI {sni:?}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake took more than {CONNECT_TIMEOUT:?}"),
            )
        })??;
    let alpn = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    Ok((tls, alpn))
}

impl H2Conn {
    /// TLS to `addr` with SNI `sni`, trusting the dev CA, ALPN `h2` (an error when the server
    /// chose anything else). Nothing is sent yet: see [`H2Conn::send_preface`] or
    /// [`H2Conn::handshake`].
    pub async fn connect_tls(addr: SocketAddr, sni: &str) -> io::Result<H2Conn> {
        Self::connect_tls_from(addr, sni, None).await
    }

    /// [`H2Conn::connect_tls`] from a source address.
    pub async fn connect_tls_from(
        addr: SocketAddr,
        sni: &str,
        source: Option<IpAddr>,
    ) -> io::Result<H2Conn> {
        let tcp = tcp_connect(addr, source, CONNECT_TIMEOUT).await?;
        Self::tls_over(tcp, sni, h2_tls_config()?).await
    }

    /// TLS over an established TCP stream with `config` (which must offer h2).
    pub async fn tls_over(
        tcp: TcpStream,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<H2Conn> {
        let (tls, alpn) = tls_handshake(tcp, sni, config).await?;
        if alpn.as_deref() != Some("h2") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server chose {alpn:?} by ALPN, not h2"),
            ));
        }
        let mut conn = Self::from_io(tls, true);
        conn.alpn = alpn;
        Ok(conn)
    }

    /// Plain TCP (HTTP/2 with prior knowledge).
    pub async fn connect_plain(addr: SocketAddr) -> io::Result<H2Conn> {
        Self::connect_plain_from(addr, None).await
    }

    /// [`H2Conn::connect_plain`] from a source address.
    pub async fn connect_plain_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> io::Result<H2Conn> {
        let tcp = tcp_connect(addr, source, CONNECT_TIMEOUT).await?;
        Ok(Self::from_io(tcp, false))
    }

    /// Over any stream; `tls` decides `:scheme` in [`H2Writer::send_request`]. The clock of
    /// the [`Outcome`] starts here.
    pub fn from_io(io: impl Io + 'static, tls: bool) -> H2Conn {
        let boxed: BoxIo = Box::new(io);
        let (rd, wr) = tokio::io::split(boxed);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            stalled_after: AtomicU64::new(NONE),
            write_closed_ms: AtomicU64::new(NONE),
            write_reset: AtomicBool::new(false),
        });
        H2Conn {
            reader: H2Reader {
                rd,
                shared: shared.clone(),
                buf: Vec::new(),
                pos: 0,
                closed: None,
                goaway: None,
                goaway_after: None,
                goaways: 0,
                frames_received: 0,
                received: BTreeMap::new(),
                rst_received: BTreeMap::new(),
            },
            writer: H2Writer {
                wr,
                shared,
                tls,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                broken: None,
            },
            alpn: None,
        }
    }

    /// The protocol chosen by ALPN (None over plain TCP).
    pub fn alpn(&self) -> Option<&str> {
        self.alpn.as_deref()
    }

    /// The reader and the writer, for two tasks.
    pub fn into_split(self) -> (H2Reader, H2Writer) {
        (self.reader, self.writer)
    }

    pub fn reader(&mut self) -> &mut H2Reader {
        &mut self.reader
    }

    pub fn writer(&mut self) -> &mut H2Writer {
        &mut self.writer
    }

    /// Preface, our SETTINGS, then wait (at most `timeout`) for the server's SETTINGS and ACK
    /// them; the server's settings. Frames before it are read and dropped.
    pub async fn handshake(
        &mut self,
        settings: &[(u16, u32)],
        timeout: Duration,
    ) -> io::Result<Vec<(u16, u32)>> {
        let mut first = PREFACE.to_vec();
        first.extend_from_slice(&settings_frame(settings));
        self.writer.send_batch(&first, 1).await?;
        let got = self
            .reader
            .read_until(timeout, |f| f.kind == kind::SETTINGS && !f.is_ack())
            .await?;
        let Some(frame) = got else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no SETTINGS from the server within {timeout:?}"),
            ));
        };
        self.writer.send_settings_ack().await?;
        Ok(frame.settings().unwrap_or_default())
    }

    /// See [`H2Reader::read_frame`].
    pub async fn read_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        self.reader.read_frame(timeout).await
    }

    /// See [`H2Reader::read_until`].
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        pred: impl FnMut(&Frame) -> bool,
    ) -> io::Result<Option<Frame>> {
        self.reader.read_until(timeout, pred).await
    }

    /// See [`H2Reader::wait_close_or_goaway`].
    pub async fn wait_close_or_goaway(&mut self, timeout: Duration) -> Outcome {
        self.reader.wait_close_or_goaway(timeout).await
    }

    /// See [`H2Reader::wait_close`].
    pub async fn wait_close(&mut self, timeout: Duration) -> Outcome {
        self.reader.wait_close(timeout).await
    }

    /// The outcome so far.
    pub fn outcome(&self) -> Outcome {
        self.reader.outcome()
    }

    /// Since the connection was established.
    pub fn elapsed(&self) -> Duration {
        self.reader.shared.start.elapsed()
    }

    /// See [`H2Reader::shrink`].
    pub fn shrink(&mut self) {
        self.reader.shrink();
    }
}

// ---------------------------------------------------------------------------------------------
// Tool helpers

/// A duration written `10s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m, h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_layout() {
        let f = encode_frame(kind::HEADERS, flag::END_HEADERS, 3, b"abc");
        assert_eq!(&f[..9], &[0, 0, 3, 1, 4, 0, 0, 0, 3]);
        assert_eq!(&f[9..], b"abc");
        let mut lie = Vec::new();
        push_frame_header(&mut lie, 0x01_02_03, kind::DATA, 0, 0x8000_0001);
        assert_eq!(lie, [1, 2, 3, 0, 0, 0x80, 0, 0, 1]);
    }

    #[test]
    fn frame_parse_roundtrip_and_partial() {
        let bytes = rst_stream_frame(5, code::CANCEL);
        assert_eq!(bytes.len(), 13);
        for cut in 0..bytes.len() {
            assert!(Frame::parse(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&ping_frame([1, 2, 3, 4, 5, 6, 7, 8], true));
        let (f, used) = Frame::parse(&two).unwrap();
        assert_eq!(used, 13);
        assert_eq!(
            (f.kind, f.stream_id, f.rst_code()),
            (kind::RST_STREAM, 5, Some(8))
        );
        assert_eq!(f.encode(), bytes);
        let (p, used2) = Frame::parse(&two[used..]).unwrap();
        assert_eq!(used2, 17);
        assert!(p.is_ack());
        assert_eq!(p.ping_payload(), Some([1, 2, 3, 4, 5, 6, 7, 8]));
        // The reserved bit is dropped from the stream id.
        let mut r = Vec::new();
        push_frame(&mut r, kind::DATA, 0, 0x8000_0007, b"");
        assert_eq!(Frame::parse(&r).unwrap().0.stream_id, 7);
    }

    #[test]
    fn goaway_settings_window_priority() {
        let g = goaway_frame(7, code::ENHANCE_YOUR_CALM, b"calm down");
        let (f, _) = Frame::parse(&g).unwrap();
        let ga = f.goaway().unwrap();
        assert_eq!(ga.last_stream_id, 7);
        assert_eq!(ga.error_code, 0xb);
        assert_eq!(ga.code_name(), "ENHANCE_YOUR_CALM");
        assert_eq!(ga.debug, "calm down");
        assert!(f.rst_code().is_none());
        // A truncated GOAWAY gives no content, and no panic.
        let short = Frame {
            kind: kind::GOAWAY,
            flags: 0,
            stream_id: 0,
            payload: vec![0; 5],
        };
        assert!(short.goaway().is_none());

        let s = settings_frame(&[(setting::MAX_CONCURRENT_STREAMS, 100), (0x99, 1)]);
        assert_eq!(&s[..9], &[0, 0, 12, 4, 0, 0, 0, 0, 0]);
        let (f, _) = Frame::parse(&s).unwrap();
        assert_eq!(f.settings().unwrap(), vec![(3, 100), (0x99, 1)]);
        assert_eq!(settings_ack_frame(), [0, 0, 0, 4, 1, 0, 0, 0, 0]);

        let w = window_update_frame(0, 1 << 20);
        assert_eq!(
            Frame::parse(&w).unwrap().0.window_increment(),
            Some(1 << 20)
        );

        let p = priority_frame(3, 1, true, 15);
        assert_eq!(&p[9..], &[0x80, 0, 0, 1, 15]);
        assert_eq!(&p[..9], &[0, 0, 5, 2, 0, 0, 0, 0, 3]);

        let d = data_frame(1, b"", true);
        assert_eq!(d, [0, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(code_name(0x1f), "0x1f");
    }

    #[test]
    fn hpack_integers() {
        // RFC 7541 C.1.1: 10 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack_int(&mut out, 5, 0, 10);
        assert_eq!(out, [0x0a]);
        // C.1.2: 1337 with a 5-bit prefix.
        out.clear();
        hpack_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        assert_eq!(hpack_decode_int(&out, 5), Some((1337, 3)));
        // C.1.3: 42 on an 8-bit prefix.
        out.clear();
        hpack_int(&mut out, 8, 0, 42);
        assert_eq!(out, [42]);
        // The prefix boundary, and high bits kept.
        out.clear();
        hpack_int(&mut out, 7, 0x80, 127);
        assert_eq!(out, [0xff, 0x00]);
        assert_eq!(hpack_decode_int(&out, 7), Some((127, 2)));
        for v in [
            0u64,
            1,
            14,
            15,
            16,
            126,
            127,
            128,
            255,
            16_383,
            1 << 20,
            1 << 40,
        ] {
            for prefix in [4u8, 5, 6, 7, 8] {
                out.clear();
                hpack_int(&mut out, prefix, 0, v);
                assert_eq!(hpack_decode_int(&out, prefix), Some((v, out.len())));
            }
        }
        assert_eq!(hpack_decode_int(&[0x1f, 0x9a], 5), None);
        assert_eq!(hpack_decode_int(&[], 5), None);
        assert_eq!(hpack_decode_int(&[0xff; 20], 7), None);
    }

    #[test]
    fn hpack_literal_fields() {
        // RFC 7541 C.2.2 (literal without indexing, indexed name) is close; this is the
        // new-name form: 0x00, name length, name, value length, value.
        let mut out = Vec::new();
        hpack_literal(&mut out, b"custom-key", b"custom-header");
        let mut want = vec![0x00, 0x0a];
        want.extend_from_slice(b"custom-key");
        want.push(0x0d);
        want.extend_from_slice(b"custom-header");
        assert_eq!(out, want);
        // A long value uses a multi-byte length.
        out.clear();
        let v = "a".repeat(200);
        hpack_literal(&mut out, b"x", v.as_bytes());
        assert_eq!(&out[..3], &[0x00, 0x01, b'x']);
        assert_eq!(&out[3..5], &[0x7f, 200 - 127]);
        assert_eq!(out.len(), 5 + 200);

        let block = request_block("GET", "https", "/", "localhost", &[("x-a", "1")]);
        let mut want = Vec::new();
        for (n, v) in [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "localhost"),
            ("x-a", "1"),
        ] {
            hpack_literal(&mut want, n.as_bytes(), v.as_bytes());
        }
        assert_eq!(block, want);
        assert_eq!(&block[..9], b"\x00\x07:method");
    }

    fn headers(block: &[u8]) -> Frame {
        Frame::parse(&headers_frame(1, block, false, true))
            .unwrap()
            .0
    }

    #[test]
    fn status_decoding() {
        for (b, s) in [
            (0x88, 200),
            (0x89, 204),
            (0x8a, 206),
            (0x8b, 304),
            (0x8c, 400),
            (0x8d, 404),
            (0x8e, 500),
        ] {
            assert_eq!(status_of(&headers(&[b, 0x0f, 0x10])), Some(s));
        }
        // Indexed, but not :status.
        assert_eq!(status_of(&headers(&[0x82])), None);
        // RFC 7541 C.6.1: literal with incremental indexing, name 8, Huffman "302".
        assert_eq!(status_of(&headers(&[0x48, 0x82, 0x64, 0x02])), Some(302));
        // C.6.2: "307", with EOS padding.
        assert_eq!(
            status_of(&headers(&[0x48, 0x83, 0x64, 0x0e, 0xff])),
            Some(307)
        );
        // NGINX's form: incremental indexing, name 8, plain "403".
        assert_eq!(status_of(&headers(b"\x48\x03403")), Some(403));
        // Without indexing and never indexed, name index 8.
        assert_eq!(status_of(&headers(b"\x08\x03503")), Some(503));
        assert_eq!(status_of(&headers(b"\x18\x03429")), Some(429));
        // New name ":status".
        let mut b = Vec::new();
        hpack_literal(&mut b, b":status", b"421");
        assert_eq!(status_of(&headers(&b)), Some(421));
        // A dynamic table size update before it.
        assert_eq!(status_of(&headers(&[0x20, 0x8d])), Some(404));
        // A dynamic table reference: unknown.
        assert_eq!(status_of(&headers(&[0xbe])), None);
        // Padded and with priority.
        let mut p = vec![2u8];
        p.extend_from_slice(&[0x80, 0, 0, 0, 16]);
        p.push(0x8e);
        p.extend_from_slice(&[0, 0]);
        let f = Frame {
            kind: kind::HEADERS,
            flags: flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            stream_id: 1,
            payload: p,
        };
        assert_eq!(status_of(&f), Some(500));
        // Garbage: no panic.
        for junk in [
            &[][..],
            &[0x48],
            &[0x48, 0x85, 0x64],
            &[0x00, 0x7f],
            &[0xff, 0xff],
        ] {
            assert_eq!(status_of(&headers(junk)), None);
        }
        let bad_pad = Frame {
            kind: kind::HEADERS,
            flags: flag::PADDED,
            stream_id: 1,
            payload: vec![9, 0x88],
        };
        assert_eq!(status_of(&bad_pad), None);
        // Not HEADERS.
        assert_eq!(
            status_of(&Frame::parse(&data_frame(1, &[0x88], false)).unwrap().0),
            None
        );
    }

    #[test]
    fn huffman_digit_strings() {
        assert_eq!(huffman_digits(&[0x64, 0x02]).as_deref(), Some("302"));
        assert_eq!(huffman_digits(&[0x64, 0x0e, 0xff]).as_deref(), Some("307"));
        // '2' '0' '0' = 00010 00000 00000 + 1 bit of padding.
        assert_eq!(huffman_digits(&[0x10, 0x01]).as_deref(), Some("200"));
        // Padding of zeros is invalid.
        assert_eq!(huffman_digits(&[0x10, 0x00]), None);
        // A letter ('a' = 00011) is not a digit.
        assert_eq!(huffman_digits(&[0x1f]), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    /// The connection end to end against a tiny in-process server.
    #[tokio::test]
    async fn conn_reads_frames_goaway_and_close() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut conn = H2Conn::from_io(client, false);
        let srv = tokio::spawn(async move {
            let mut got = vec![0u8; 24 + 9];
            server.read_exact(&mut got).await.unwrap();
            let mut out = settings_frame(&[(setting::MAX_CONCURRENT_STREAMS, 10)]);
            out.extend_from_slice(&headers_frame(1, &[0x8d], true, true));
            out.extend_from_slice(&rst_stream_frame(3, code::REFUSED_STREAM));
            out.extend_from_slice(&goaway_frame(1, code::ENHANCE_YOUR_CALM, b""));
            server.write_all(&out).await.unwrap();
            // Read the SETTINGS ACK, then close.
            let mut ack = [0u8; 9];
            server.read_exact(&mut ack).await.unwrap();
            drop(server);
            got
        });
        let s = conn.handshake(&[], Duration::from_secs(2)).await.unwrap();
        assert_eq!(s, vec![(3, 10)]);
        let f = conn
            .read_frame(Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.status(), Some(404));
        assert!(f.is_end_stream());
        let o = conn.wait_close_or_goaway(Duration::from_secs(2)).await;
        assert_eq!(o.goaway_code(), Some(code::ENHANCE_YOUR_CALM));
        let o = conn.wait_close(Duration::from_secs(2)).await;
        let closed = o.closed.expect("closed");
        assert!(!closed.reset);
        assert_eq!(o.frames_sent, 2);
        assert_eq!(o.received.get("SETTINGS"), Some(&1));
        assert_eq!(o.rst_received.get("REFUSED_STREAM"), Some(&1));
        let got = srv.await.unwrap();
        assert_eq!(&got[..24], PREFACE);
        assert!(conn.read_frame(Duration::from_millis(10)).await.is_err());
        // Nothing more to read: a timeout is Ok(None) on an open connection.
        let (client, _server) = tokio::io::duplex(64);
        let mut idle = H2Conn::from_io(client, false);
        let t = Instant::now();
        assert!(idle
            .read_frame(Duration::from_millis(50))
            .await
            .unwrap()
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    /// A server that never reads: the write stalls, and the outcome says after how many frames.
    #[tokio::test]
    async fn stalled_writes_are_reported() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut conn = H2Conn::from_io(client, false);
        conn.set_write_timeout(Duration::from_millis(100));
        let mut n = 0;
        let err = loop {
            match conn.send_ping([0; 8]).await {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 1000, "the duplex buffer should fill");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let o = conn.outcome();
        assert_eq!(o.stalled_after_frames, Some(n));
        assert_eq!(o.frames_sent, n);
        assert!(conn.is_broken());
        assert!(conn.send_ping([0; 8]).await.is_err());
    }
}
