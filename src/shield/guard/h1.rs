//! Where an HTTP/1 request head ends, found as its bytes arrive: leading empty lines (which
//! HTTP/1 allows before a request line, RFC 9112 section 2.2) are skipped, not taken for the end
//! of the head, and every byte of the head counts toward `max_header_bytes`.

/// Scans the bytes of one request head, read after read.
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Bytes of this head seen so far, leading empty lines included.
    bytes: usize,
    /// The request line has started (a byte other than CR or LF was seen).
    started: bool,
    /// The current line has a byte other than CR.
    line_has_content: bool,
}

/// What the bytes of one read say about the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The head goes on past these bytes.
    More,
    /// The head ends after this many bytes of the read (the rest is body, or the next request).
    Ends(usize),
}

impl HeadScanner {
    pub fn new() -> Self {
        HeadScanner::default()
    }

    /// Bytes of the head so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether anything but leading empty lines has arrived.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Feed the next bytes read. A head ends with an empty line (`\n\n` or `\n\r\n`) after a
    /// request line; CR and LF before the request line are leading empty lines.
    pub fn feed(&mut self, data: &[u8]) -> Scan {
        let mut at = 0;
        while at < data.len() {
            // The next line feed, if any: everything before it belongs to the current line.
            let rest = &data[at..];
            let (line, newline) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if line.iter().any(|&b| b != b'\r') {
                self.line_has_content = true;
                self.started = true;
            }
            if !newline {
                self.bytes += line.len();
                return Scan::More;
            }
            let consumed = line.len() + 1;
            self.bytes += consumed;
            at += consumed;
            if self.line_has_content {
                self.line_has_content = false;
            } else if self.started {
                // An empty line after the request line: the end of the head.
                return Scan::Ends(at);
            }
            // An empty line before the request line: skipped.
        }
        Scan::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(parts: &[&[u8]]) -> (Vec<Scan>, usize) {
        let mut s = HeadScanner::new();
        let scans = parts.iter().map(|p| s.feed(p)).collect();
        (scans, s.bytes())
    }

    #[test]
    fn a_head_in_one_read() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let (scans, bytes) = scan_all(&[head]);
        assert_eq!(scans, vec![Scan::Ends(head.len() - 4)]);
        assert_eq!(bytes, head.len() - 4);
    }

    #[test]
    fn bare_line_feeds_end_a_head_too() {
        let (scans, _) = scan_all(&[b"GET / HTTP/1.1\nHost: x\n\n"]);
        assert_eq!(scans, vec![Scan::Ends(24)]);
    }

    #[test]
    fn the_end_split_across_reads() {
        let (scans, _) = scan_all(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r", b"\nrest"]);
        assert_eq!(scans, vec![Scan::More, Scan::Ends(1)]);
        let (scans, _) = scan_all(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n", b"\r", b"\n"]);
        assert_eq!(
            scans,
            vec![Scan::More, Scan::More, Scan::More, Scan::Ends(1)]
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let (scans, bytes) = scan_all(&[b"\r\n\r\n", b"\n", b"GET / HTTP/1.1\r\n", b"X: 1\r\n"]);
        assert_eq!(scans, vec![Scan::More; 4]);
        assert_eq!(bytes, 4 + 1 + 16 + 6);
        let mut s = HeadScanner::new();
        assert_eq!(s.feed(b"\r\n\r\n\r\n"), Scan::More);
        assert!(!s.started());
        assert_eq!(s.feed(b"G"), Scan::More);
        assert!(s.started());
        assert_eq!(s.feed(b"ET / HTTP/1.1\r\n\r\n"), Scan::Ends(17));
    }

    #[test]
    fn a_dribbled_head_ends_once() {
        let head = b"\r\nGET /slow HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n";
        let mut s = HeadScanner::new();
        for (i, byte) in head.iter().enumerate() {
            let scan = s.feed(std::slice::from_ref(byte));
            if i + 1 == head.len() {
                assert_eq!(scan, Scan::Ends(1));
            } else {
                assert_eq!(scan, Scan::More, "ended early at byte {i}");
            }
        }
        assert_eq!(s.bytes(), head.len());
    }
}
