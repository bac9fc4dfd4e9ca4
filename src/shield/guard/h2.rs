//! HTTP/2 frames as they cross the connection guard: the client's frames are read for their
//! headers only (the `h2` crate decodes them), to time the preface and every header block and to
//! count the frames a flood is made of; the server's frames are followed to know where one ends,
//! so that a GOAWAY can be written between two of them.
//!
//! Frame layout (RFC 9113 section 4.1): 3 bytes of length, 1 of type, 1 of flags, 4 of stream id,
//! then the payload.

use std::time::Duration;

use tokio::time::Instant;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// GOAWAY error codes Rempart sends.
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Frames that ask for work or an answer without carrying a request: PING and SETTINGS (each
/// answered by an ACK), PRIORITY, empty DATA frames that do not end their stream and empty
/// HEADERS or CONTINUATION frames (CVE-2019-9512, -9515, -9516, -9518). A browser sends a
/// handful; a connection may send `CHATTER_BURST` at once and `CHATTER_PER_SECOND` after that.
pub const CHATTER_BURST: f64 = 100.0;
pub const CHATTER_PER_SECOND: f64 = 10.0;

/// CONTINUATION frames one header block may have (CVE-2024-27316 and kin send endless ones).
pub const MAX_CONTINUATIONS: u32 = 64;

/// Why the guard ends an HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// Too many PING, SETTINGS, PRIORITY or empty frames.
    ControlFlood,
    /// A header block over `max_header_bytes` (compressed) or with too many CONTINUATION frames.
    HeaderBlockTooLarge,
    /// The client sent something that is not HTTP/2 where the preface belongs.
    BadPreface,
}

impl Abuse {
    pub fn as_str(self) -> &'static str {
        match self {
            Abuse::ControlFlood => "h2_control_flood",
            Abuse::HeaderBlockTooLarge => "h2_header_block_too_large",
            Abuse::BadPreface => "h2_bad_preface",
        }
    }
}

/// A leaky bucket of chatter frames.
#[derive(Debug, Clone)]
struct Chatter {
    level: f64,
    at: Option<Instant>,
}

impl Chatter {
    /// One more frame; false when the bucket overflows.
    fn add(&mut self, now: Instant) -> bool {
        let drained = self
            .at
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64())
            * CHATTER_PER_SECOND;
        self.level = (self.level - drained).max(0.0) + 1.0;
        self.at = Some(now);
        self.level <= CHATTER_BURST
    }
}

/// Follows the client's side of an HTTP/2 connection, frame header by frame header.
#[derive(Debug, Clone)]
pub struct FrameReader {
    /// Bytes of the preface still to come.
    preface_left: usize,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The current frame is part of a header block (HEADERS or CONTINUATION).
    in_header_frame: bool,
    /// A header block is open: its last frame so far had no END_HEADERS.
    block_open: bool,
    block_bytes: usize,
    block_frames: u32,
    /// The first header block of the connection has ended.
    first_block_done: bool,
    /// The highest stream id the client opened (for GOAWAY's last-stream-id).
    pub last_stream: u32,
    chatter: Chatter,
    max_block_bytes: usize,
}

impl FrameReader {
    /// `max_block_bytes`: the largest header block (HEADERS and its CONTINUATION frames,
    /// compressed) a client may send.
    pub fn new(max_block_bytes: usize) -> Self {
        FrameReader {
            preface_left: PREFACE.len(),
            header: [0; FRAME_HEADER],
            header_len: 0,
            payload_left: 0,
            in_header_frame: false,
            block_open: false,
            block_bytes: 0,
            block_frames: 0,
            first_block_done: false,
            last_stream: 0,
            chatter: Chatter {
                level: 0.0,
                at: None,
            },
            max_block_bytes,
        }
    }

    /// Whether a request head is under way, which `header_timeout` bounds: from the start of the
    /// connection to the end of its first header block, a frame header split across reads, and
    /// every header block from its first byte to its END_HEADERS.
    pub fn in_head(&self) -> bool {
        !self.first_block_done
            || self.header_len > 0
            || self.block_open
            || (self.in_header_frame && self.payload_left > 0)
    }

    /// Feed bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8], now: Instant) -> Result<(), Abuse> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            let offset = PREFACE.len() - self.preface_left;
            if data[..n] != PREFACE[offset..offset + n] {
                return Err(Abuse::BadPreface);
            }
            self.preface_left -= n;
            data = &data[n..];
        }
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                if self.payload_left == 0 {
                    self.in_header_frame = false;
                }
                continue;
            }
            let n = (FRAME_HEADER - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == FRAME_HEADER {
                self.header_len = 0;
                self.frame(now)?;
            }
        }
        Ok(())
    }

    /// A complete frame header arrived.
    fn frame(&mut self, now: Instant) -> Result<(), Abuse> {
        let h = &self.header;
        let length = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let kind = h[3];
        let flags = h[4];
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        self.payload_left = length;
        self.in_header_frame = false;
        let chatter = match kind {
            PING | SETTINGS => flags & FLAG_ACK == 0,
            PRIORITY => true,
            DATA => length == 0 && flags & FLAG_END_STREAM == 0,
            HEADERS | CONTINUATION => {
                self.in_header_frame = length > 0;
                if kind == HEADERS {
                    self.block_bytes = 0;
                    self.block_frames = 0;
                    if stream > self.last_stream {
                        self.last_stream = stream;
                    }
                } else {
                    self.block_frames += 1;
                }
                self.block_bytes += length;
                if self.block_bytes > self.max_block_bytes || self.block_frames > MAX_CONTINUATIONS
                {
                    return Err(Abuse::HeaderBlockTooLarge);
                }
                self.block_open = flags & FLAG_END_HEADERS == 0;
                if !self.block_open {
                    // The block ends with this frame's payload, which `in_header_frame`
                    // still covers.
                    self.first_block_done = true;
                }
                length == 0 && flags & FLAG_END_HEADERS == 0
            }
            _ => false,
        };
        if chatter && !self.chatter.add(now) {
            return Err(Abuse::ControlFlood);
        }
        Ok(())
    }
}

/// Follows the server's side of the connection to know where frames begin.
#[derive(Debug, Clone, Default)]
pub struct FrameWriter {
    header: [u8; FRAME_HEADER],
    header_len: usize,
    payload_left: usize,
}

impl FrameWriter {
    /// Whether the next byte written would start a frame.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// How many of the next `len` bytes belong to the frame being written (all of them at a
    /// boundary or inside a frame header).
    pub fn rest_of_frame(&self, len: usize) -> usize {
        if self.header_len == 0 && self.payload_left > 0 {
            self.payload_left.min(len)
        } else {
            len
        }
    }

    /// Account for bytes the server wrote.
    pub fn wrote(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == FRAME_HEADER {
                self.header_len = 0;
                let h = &self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            }
        }
    }
}

/// A GOAWAY frame (RFC 9113 section 6.8).
pub fn goaway(last_stream: u32, code: u32) -> [u8; 17] {
    let mut frame = [0u8; 17];
    frame[..9].copy_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
    frame[9..13].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame[13..].copy_from_slice(&code.to_be_bytes());
    frame
}

/// How long after deciding to end a connection the guard waits for the server to finish the
/// frame it is writing before it closes without a GOAWAY.
pub const GOAWAY_GRACE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn reader() -> FrameReader {
        FrameReader::new(32 * 1024)
    }

    #[test]
    fn a_connection_is_in_its_head_until_the_first_header_block_ends() {
        let now = Instant::now();
        let mut r = reader();
        assert!(r.in_head());
        r.feed(PREFACE, now).unwrap();
        r.feed(&frame(SETTINGS, 0, 0, &[0; 6]), now).unwrap();
        assert!(r.in_head(), "preface and SETTINGS are not a request");
        let headers = frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &[0x82; 10]);
        r.feed(&headers[..12], now).unwrap();
        assert!(r.in_head(), "the block's payload is still arriving");
        r.feed(&headers[12..], now).unwrap();
        assert!(!r.in_head());
        assert_eq!(r.last_stream, 1);
    }

    #[test]
    fn a_header_block_is_timed_until_end_headers() {
        let now = Instant::now();
        let mut r = reader();
        r.feed(PREFACE, now).unwrap();
        r.feed(&frame(HEADERS, FLAG_END_HEADERS, 1, &[1; 5]), now)
            .unwrap();
        assert!(!r.in_head());
        r.feed(&frame(DATA, FLAG_END_STREAM, 1, &[7; 100]), now)
            .unwrap();
        assert!(!r.in_head(), "a body is not a head");
        r.feed(&frame(HEADERS, 0, 3, &[1; 5]), now).unwrap();
        assert!(
            r.in_head(),
            "HEADERS without END_HEADERS: the block is open"
        );
        r.feed(&frame(CONTINUATION, FLAG_END_HEADERS, 3, &[1; 5]), now)
            .unwrap();
        assert!(!r.in_head());
        // A frame header split across reads is timed too.
        r.feed(&[0, 0], now).unwrap();
        assert!(r.in_head());
    }

    #[test]
    fn a_wrong_preface_is_refused() {
        let mut r = reader();
        assert_eq!(
            r.feed(b"GET / HTTP/1.1\r\n", Instant::now()),
            Err(Abuse::BadPreface)
        );
        let mut r = reader();
        r.feed(&PREFACE[..5], Instant::now()).unwrap();
        r.feed(&PREFACE[5..], Instant::now()).unwrap();
    }

    #[test]
    fn a_ping_flood_overflows_the_bucket() {
        let now = Instant::now();
        let mut r = reader();
        r.feed(PREFACE, now).unwrap();
        let ping = frame(PING, 0, 0, &[0; 8]);
        for _ in 0..CHATTER_BURST as usize {
            r.feed(&ping, now).unwrap();
        }
        assert_eq!(r.feed(&ping, now), Err(Abuse::ControlFlood));
        // ACKs are not chatter.
        let mut r = reader();
        r.feed(PREFACE, now).unwrap();
        for _ in 0..1000 {
            r.feed(&frame(PING, FLAG_ACK, 0, &[0; 8]), now).unwrap();
        }
    }

    #[test]
    fn chatter_drains_with_time() {
        let start = Instant::now();
        let mut r = reader();
        r.feed(PREFACE, start).unwrap();
        let settings = frame(SETTINGS, 0, 0, &[]);
        // Five a second for a minute stays under the sustained rate.
        for i in 0..300u64 {
            let now = start + Duration::from_millis(200 * i);
            r.feed(&settings, now).unwrap();
        }
    }

    #[test]
    fn endless_continuations_are_refused() {
        let now = Instant::now();
        let mut r = reader();
        r.feed(PREFACE, now).unwrap();
        r.feed(&frame(HEADERS, 0, 1, &[1; 100]), now).unwrap();
        let mut outcome = Ok(());
        for _ in 0..100 {
            outcome = r.feed(&frame(CONTINUATION, 0, 1, &[1; 10]), now);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(Abuse::HeaderBlockTooLarge));
        let mut r = FrameReader::new(1000);
        r.feed(PREFACE, now).unwrap();
        assert_eq!(
            r.feed(&frame(HEADERS, 0, 1, &[1; 1001]), now),
            Err(Abuse::HeaderBlockTooLarge)
        );
    }

    #[test]
    fn the_writer_knows_where_frames_end() {
        let mut w = FrameWriter::default();
        assert!(w.at_boundary());
        let data = frame(DATA, 0, 1, &[9; 20]);
        w.wrote(&data[..4]);
        assert!(!w.at_boundary());
        assert_eq!(w.rest_of_frame(100), 100, "inside a frame header");
        w.wrote(&data[4..12]);
        assert_eq!(w.rest_of_frame(100), 17);
        w.wrote(&data[12..]);
        assert!(w.at_boundary());
        let two = [
            frame(PING, FLAG_ACK, 0, &[0; 8]),
            frame(SETTINGS, 1, 0, &[]),
        ]
        .concat();
        w.wrote(&two);
        assert!(w.at_boundary());
    }

    #[test]
    fn goaway_layout() {
        let g = goaway(7, ENHANCE_YOUR_CALM);
        assert_eq!(&g[..9], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&g[9..13], &[0, 0, 0, 7]);
        assert_eq!(&g[13..], &[0, 0, 0, 0xb]);
    }
}
