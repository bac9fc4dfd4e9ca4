//! Who the client is and what the upstream is told about it: `client_ip` from the peer or a
//! trusted proxy's `X-Forwarded-For`, the forwarding headers Rempart sends upstream
//! (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`, `X-Real-IP`), and request ids.
//!
//! [`upstream_edits`] holds every rule about the forwarding headers: the proxy applies the
//! edits it returns to the upstream request and knows nothing else about them.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED};
use ipnet::IpNet;

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
/// address of `X-Forwarded-For` that is not itself a trusted proxy. All header lines are
/// walked, last to first, each right to left; empty entries are skipped (as
/// [`x_forwarded_for`] drops them). An entry that does not parse stops the walk: the last good
/// address (or the peer) is used. When every address is trusted, the leftmost one is used.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for.rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            return client;
        };
        for entry in line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(ip) = parse_forwarded_entry(entry) else {
                return client;
            };
            let ip = canonical(ip);
            client = ip;
            if !is_trusted(ip, trusted) {
                return client;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an IP, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
pub fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    None
}

/// What is kept, at most, of the incoming `X-Forwarded-For` (and, under
/// [`ForwardedPolicy::Rewrite`], `Forwarded`) values sent upstream, in bytes, separators
/// included.
pub const INCOMING_MAX: usize = 4096;

/// The `X-Forwarded-For` value sent upstream: the entries of every incoming line, in order,
/// then `peer`.
///
/// Lines are split at commas, entries trimmed of whitespace, empty ones dropped (so empty
/// lines vanish), and the rest joined with `", "`; entries are kept as they came, even when
/// they are no address. When the joined entries are longer than [`INCOMING_MAX`] (a client
/// can send 100 KiB of them), only the last entries whose joined length fits are kept: those
/// nearest Rempart, the only ones a backend walking from the right can trust. An entry longer
/// than the bound alone leaves no incoming entry at all, only the peer.
pub fn x_forwarded_for<'a>(lines: impl Iterator<Item = &'a [u8]>, peer: IpAddr) -> Vec<u8> {
    let entries: Vec<&[u8]> = lines
        .flat_map(|line| line.split(|b| *b == b','))
        .map(trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut out = join_last(&entries, INCOMING_MAX);
    if !out.is_empty() {
        out.extend_from_slice(b", ");
    }
    push_ip(&mut out, canonical(peer));
    out
}

/// Append `ip` as text (what its `Display` writes), without a formatter for the common IPv4.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Written on the stack, then appended at once.
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            out.extend_from_slice(&text[..n]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// The last `entries` joined with `", "`, in order, within `max` bytes.
fn join_last(entries: &[&[u8]], max: usize) -> Vec<u8> {
    let mut len = 0;
    let mut first = entries.len();
    for (i, entry) in entries.iter().enumerate().rev() {
        let more = entry.len() + if len == 0 { 0 } else { 2 };
        if len + more > max {
            break;
        }
        len += more;
        first = i;
    }
    let mut out = Vec::with_capacity(len);
    for entry in &entries[first..] {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(entry);
    }
    out
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(start), Some(end)) => &s[start..=end],
        _ => &[],
    }
}

/// What Rempart does with `Forwarded` (RFC 7239) and `X-Real-IP` (config `server.forwarded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedPolicy {
    /// From an untrusted peer, both are removed; from a trusted proxy, both are passed on.
    #[default]
    Strip,
    /// From an untrusted peer, both are replaced by Rempart's view of the request; from a
    /// trusted proxy, Rempart appends its element to `Forwarded` and sets `X-Real-IP` to the
    /// client address it computed.
    Rewrite,
}

impl FromStr for ForwardedPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "strip" => Ok(ForwardedPolicy::Strip),
            "rewrite" => Ok(ForwardedPolicy::Rewrite),
            other => Err(format!(
                "invalid value {other:?}: expected strip or rewrite"
            )),
        }
    }
}

/// One change to the upstream request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Remove every line of this header.
    Remove(HeaderName),
    /// Replace every line of this header by this one value.
    Set(HeaderName, HeaderValue),
}

/// The hop from the peer to Rempart, as the forwarding headers describe it.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The address that connected to Rempart.
    pub peer: IpAddr,
    /// Whether `peer` is a trusted proxy.
    pub peer_trusted: bool,
    /// The client, as [`client_ip`] computed it.
    pub client_ip: IpAddr,
    /// Whether the connection to Rempart is TLS.
    pub tls: bool,
    /// The host the request named (Host header, else the URI's authority).
    pub host: Option<&'a [u8]>,
}

impl Hop<'_> {
    fn proto(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The request id Rempart sends upstream (a trusted proxy's is kept, see [`RequestIds`]).
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Other headers that claim to tell who the client is or how it reached the site, read by
/// some frameworks and applications (Spring's `ForwardedHeaderFilter` reads the
/// `X-Forwarded-Port`/`-Prefix`/`-Ssl` family to build redirect URLs; some applications read
/// `X-Client-IP` or `True-Client-IP` as the client address). Rempart vouches for none of them:
/// from an untrusted peer they are removed, whatever the policy; a trusted proxy's pass.
pub static UNVOUCHED: [HeaderName; 11] = [
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-forwarded-for"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
];

/// The request headers the forwarding rules read: pingora's header map, or the lines of a head
/// parsed in place (`httparse`), looked up by name.
pub trait IncomingHeaders {
    /// The values of every line named `name`, in order.
    fn lines<'s>(&'s self, name: &'s HeaderName) -> impl DoubleEndedIterator<Item = &'s [u8]>;
    /// Whether a line is named `name`.
    fn contains(&self, name: &HeaderName) -> bool;
    /// Call `found` once for each [`UNVOUCHED`] name present.
    fn unvouched(&self, found: &mut dyn FnMut(&HeaderName));
}

impl IncomingHeaders for HeaderMap {
    fn lines<'s>(&'s self, name: &'s HeaderName) -> impl DoubleEndedIterator<Item = &'s [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }

    fn unvouched(&self, found: &mut dyn FnMut(&HeaderName)) {
        // One walk over the incoming names (a few), not a look-up per unvouched name.
        self.keys()
            .filter(|name| UNVOUCHED.contains(name))
            .for_each(found);
    }
}

impl IncomingHeaders for [httparse::Header<'_>] {
    fn lines<'s>(&'s self, name: &'s HeaderName) -> impl DoubleEndedIterator<Item = &'s [u8]> {
        let name = name.as_str();
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        self.iter().any(|h| h.name.eq_ignore_ascii_case(name))
    }

    fn unvouched(&self, found: &mut dyn FnMut(&HeaderName)) {
        // Most heads have no name that could be one (11 to 24 bytes, starting with x-, true-,
        // cf- or fastly-): one walk tells.
        let could_be = |name: &str| {
            (11..=24).contains(&name.len())
                && matches!(
                    name.as_bytes()[0].to_ascii_lowercase(),
                    b'x' | b't' | b'c' | b'f'
                )
        };
        if !self.iter().any(|h| could_be(h.name)) {
            return;
        }
        // In the order of UNVOUCHED, each once, as the header map gives them.
        for name in UNVOUCHED.iter() {
            if IncomingHeaders::contains(self, name) {
                found(name);
            }
        }
    }
}

/// The edits that turn the incoming request's forwarding headers into the upstream's:
///
/// - `X-Forwarded-For`: set to [`x_forwarded_for`] of every incoming line and the peer.
/// - `X-Forwarded-Proto`, `X-Forwarded-Host`: a trusted proxy's are kept; otherwise set to
///   `http`/`https` and to the host (removed when the request names none).
/// - `Forwarded`, `X-Real-IP`, by `policy`:
///
///   | peer      | Strip   | Rewrite                                                        |
///   |-----------|---------|----------------------------------------------------------------|
///   | untrusted | removed | `Forwarded: for=<client>;proto=..;host=..`, `X-Real-IP: <client>` |
///   | trusted   | kept    | `Forwarded: <incoming>, for=<peer>;proto=..;host=..`, `X-Real-IP: <client>` |
///
///   Under Rewrite from a trusted proxy, the incoming `Forwarded` lines must all be
///   well-formed RFC 7239 (pairs of token `=` token or quoted-string): otherwise (and when
///   there is none) they are replaced by `for=<client>` when the client is not the peer, so
///   that an unbalanced quote cannot swallow Rempart's element. They are bounded like
///   `X-Forwarded-For` (the last elements within [`INCOMING_MAX`] bytes).
/// - [`UNVOUCHED`] headers (`X-Forwarded-Port`, `True-Client-IP`...): removed when the peer
///   is untrusted, whatever the policy.
///
/// Edits come in this order: X-Forwarded-For, -Proto, -Host, the unvouched removals, then
/// Forwarded and X-Real-IP.
pub fn upstream_edits(
    incoming: &(impl IncomingHeaders + ?Sized),
    hop: &Hop,
    policy: ForwardedPolicy,
) -> Vec<HeaderEdit> {
    let mut edits = Vec::with_capacity(5);
    edit_upstream(incoming, hop, policy, &mut edits);
    edits
}

/// Where the edits of [`upstream_edits`] go: a list for a header map, or straight onto the
/// wire (the edge's direct forwarding, without a header value allocated per edit).
pub trait EditSink {
    /// Every line of `name` replaced by `value`, a valid header value (never empty).
    fn set(&mut self, name: &HeaderName, value: &[u8]);
    /// Every line of `name` removed.
    fn remove(&mut self, name: &HeaderName);
}

impl EditSink for Vec<HeaderEdit> {
    fn set(&mut self, name: &HeaderName, value: &[u8]) {
        // Checked by the caller: a valid value always converts.
        match HeaderValue::from_bytes(value) {
            Ok(value) => self.push(HeaderEdit::Set(name.clone(), value)),
            Err(_) => self.push(HeaderEdit::Remove(name.clone())),
        }
    }

    fn remove(&mut self, name: &HeaderName) {
        self.push(HeaderEdit::Remove(name.clone()));
    }
}

/// [`upstream_edits`], each edit given to `sink` as it is decided, in the same order.
pub fn edit_upstream(
    incoming: &(impl IncomingHeaders + ?Sized),
    hop: &Hop,
    policy: ForwardedPolicy,
    sink: &mut impl EditSink,
) {
    let xff = x_forwarded_for(incoming.lines(&X_FORWARDED_FOR), hop.peer);
    set_or_remove(sink, &X_FORWARDED_FOR, &xff, || {
        let mut peer = Vec::with_capacity(15);
        push_ip(&mut peer, canonical(hop.peer));
        peer
    });

    let keep = |name: &HeaderName| hop.peer_trusted && incoming.contains(name);
    if !keep(&X_FORWARDED_PROTO) {
        sink.set(&X_FORWARDED_PROTO, hop.proto().as_bytes());
    }
    if !keep(&X_FORWARDED_HOST) {
        set_or_remove(
            sink,
            &X_FORWARDED_HOST,
            hop.host.unwrap_or_default(),
            Vec::new,
        );
    }

    if !hop.peer_trusted {
        // One walk over the incoming names (a few), not a look-up per unvouched name.
        incoming.unvouched(&mut |name| sink.remove(name));
    }

    let client = canonical(hop.client_ip);
    match (policy, hop.peer_trusted) {
        (ForwardedPolicy::Strip, true) => {}
        (ForwardedPolicy::Strip, false) => {
            sink.remove(&FORWARDED);
            sink.remove(&X_REAL_IP);
        }
        (ForwardedPolicy::Rewrite, trusted) => {
            let value = if trusted {
                let peer = canonical(hop.peer);
                let mut value = incoming_forwarded(incoming.lines(&FORWARDED));
                if value.is_empty() && client != peer {
                    push_forwarded_for(&mut value, client);
                }
                if !value.is_empty() {
                    value.extend_from_slice(b", ");
                }
                push_forwarded_element(&mut value, peer, hop.tls, hop.host);
                value
            } else {
                forwarded_element(client, hop.tls, hop.host)
            };
            set_or_remove(sink, &FORWARDED, &value, || {
                let mut value = Vec::with_capacity(48);
                push_forwarded_for(&mut value, client);
                value
            });
            let mut text = Vec::with_capacity(39);
            push_ip(&mut text, client);
            // An address is ASCII digits, dots, colons and hex: always a header value.
            sink.set(&X_REAL_IP, &text);
        }
    }
}

/// Whether `value` can be a header value as `http` takes it (no control character but tab).
fn is_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// Set `name` to `value`; to `fallback()` when `value` cannot be a header value; removed when
/// that is empty or invalid too.
fn set_or_remove(
    sink: &mut impl EditSink,
    name: &HeaderName,
    value: &[u8],
    fallback: impl FnOnce() -> Vec<u8>,
) {
    let valid = |v: &[u8]| !v.is_empty() && is_header_value(v);
    if valid(value) {
        return sink.set(name, value);
    }
    let fallback = fallback();
    if valid(&fallback) {
        sink.set(name, &fallback);
    } else {
        sink.remove(name);
    }
}

/// A `Forwarded` element: `for=<ip>;proto=http|https;host=<host>`, with RFC 7239 quoting
/// (`for="[2001:db8::1]"`, `host="example.com:8443"`). An empty host is left out.
pub fn forwarded_element(for_ip: IpAddr, tls: bool, host: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    push_forwarded_element(&mut out, for_ip, tls, host);
    out
}

fn push_forwarded_element(out: &mut Vec<u8>, for_ip: IpAddr, tls: bool, host: Option<&[u8]>) {
    push_forwarded_for(out, for_ip);
    out.extend_from_slice(if tls { b";proto=https" } else { b";proto=http" });
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        out.extend_from_slice(b";host=");
        push_token_or_quoted(out, host);
    }
}

/// `for=<ip>`: IPv4 as a token, IPv6 bracketed in a quoted string.
fn push_forwarded_for(out: &mut Vec<u8>, ip: IpAddr) {
    let ip = canonical(ip);
    match ip {
        IpAddr::V4(_) => {
            out.extend_from_slice(b"for=");
            push_ip(out, ip);
        }
        IpAddr::V6(_) => {
            out.extend_from_slice(b"for=\"[");
            push_ip(out, ip);
            out.extend_from_slice(b"]\"");
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn push_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    if !value.is_empty() && value.iter().all(|b| is_tchar(*b)) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// The incoming `Forwarded` lines joined, bounded to their last elements within
/// [`INCOMING_MAX`]; empty when there is none or any line is malformed.
fn incoming_forwarded<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut elements = Vec::new();
    for line in lines {
        match forwarded_elements(line) {
            Some(found) => elements.extend(found),
            None => return Vec::new(),
        }
    }
    join_last(&elements, INCOMING_MAX)
}

/// The non-empty elements of a `Forwarded` value (RFC 7239 section 4: `#forwarded-element`,
/// each `[pair] *(";" [pair])`, a pair `token "=" (token / quoted-string)`), trimmed of
/// whitespace around commas and semicolons. `None` when the value is malformed.
pub fn forwarded_elements(value: &[u8]) -> Option<Vec<&[u8]>> {
    let mut elements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut quoted = false;
    while i < value.len() {
        let b = value[i];
        if quoted {
            match b {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b',' {
            elements.push(&value[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    if quoted || i > value.len() {
        return None;
    }
    elements.push(&value[start..]);
    let elements: Vec<&[u8]> = elements
        .into_iter()
        .map(trim)
        .filter(|e| !e.is_empty())
        .collect();
    elements
        .iter()
        .all(|e| well_formed_element(e))
        .then_some(elements)
}

/// `[pair] *(";" [pair])`, whitespace allowed around `;`. The element holds no comma outside
/// quoted strings and its quotes are balanced (checked by the caller).
fn well_formed_element(element: &[u8]) -> bool {
    split_outside_quotes(element, b';')
        .into_iter()
        .map(trim)
        .filter(|pair| !pair.is_empty())
        .all(well_formed_pair)
}

fn well_formed_pair(pair: &[u8]) -> bool {
    let Some(eq) = pair.iter().position(|b| *b == b'=') else {
        return false;
    };
    let (name, value) = (&pair[..eq], &pair[eq + 1..]);
    if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
        return false;
    }
    match value {
        [b'"', inner @ .., b'"'] if value.len() >= 2 => quoted_body_ok(inner),
        _ => !value.is_empty() && value.iter().all(|b| is_tchar(*b)),
    }
}

/// The inside of a quoted string: qdtext (HTAB, SP, visible and obs-text bytes but `"` and
/// `\`) and quoted pairs.
fn quoted_body_ok(inner: &[u8]) -> bool {
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' => {
                let Some(&next) = inner.get(i + 1) else {
                    return false;
                };
                if !(next == b'\t' || next >= 0x20) || next == 0x7f {
                    return false;
                }
                i += 2;
            }
            b'"' => return false,
            b if b == b'\t' || (b >= 0x20 && b != 0x7f) => i += 1,
            _ => return false,
        }
    }
    true
}

fn split_outside_quotes(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Generates request ids: 32 hex digits, a random per-process prefix and a counter, unique
/// within the process and unlikely to collide across processes.
pub struct RequestIds {
    /// The prefix's 16 hex digits.
    prefix: [u8; 16],
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut prefix = [0u8; 16];
        hex_into(&mut prefix, rand::random());
        RequestIds {
            prefix,
            counter: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut digits = [0u8; 32];
        digits[..16].copy_from_slice(&self.prefix);
        hex_into(&mut digits[16..], mix(n));
        let mut id = String::with_capacity(32);
        // Hex digits: always UTF-8.
        id.push_str(std::str::from_utf8(&digits).unwrap_or_default());
        id
    }
}

/// `value` as 16 lower-case hex digits into `out` (16 bytes): on every request, so without
/// the formatting machinery.
fn hex_into(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate().take(16) {
        let shift = 60 - 4 * i;
        *digit = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A bijective mix of the counter so consecutive ids do not look consecutive.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether a request id received from a trusted proxy is safe to pass on: 1 to 128 visible
/// ASCII characters.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 128 && value.iter().all(|b| (0x21..0x7f).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let ip = client_ip(
            "203.0.113.9".parse().unwrap(),
            [b"1.1.1.1".as_slice()].into_iter(),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"6.6.6.6, 198.51.100.7".as_slice(), b"10.1.2.3".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_stops_the_walk() {
        let trusted = nets(&["127.0.0.1/32"]);
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"not-an-ip".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"[2001:db8::1]:443".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        let ip = client_ip(
            "127.0.0.1".parse().unwrap(),
            [b"9.9.9.9, \xff".as_slice()].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap(), "not UTF-8");
    }

    #[test]
    fn empty_entries_and_lines_are_skipped() {
        let trusted = nets(&["10.0.0.0/8"]);
        let lines: [&[u8]; 3] = [b"198.51.100.7", b"10.0.0.3, ,", b""];
        assert_eq!(
            client_ip(ip("10.0.0.1"), lines.into_iter(), &trusted),
            ip("198.51.100.7")
        );
        // All trusted: the leftmost.
        let lines: [&[u8]; 2] = [b"10.0.0.9", b"10.0.0.3"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), lines.into_iter(), &trusted),
            ip("10.0.0.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), std::iter::empty(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        let trusted = nets(&["10.0.0.0/8"]);
        let lines: [&[u8]; 1] = [b"::ffff:198.51.100.7"];
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), lines.into_iter(), &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ids_are_unique_and_hex() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(acceptable_request_id(a.as_bytes()));
        assert!(!acceptable_request_id(b"with space"));
        for value in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut out = [0u8; 16];
            hex_into(&mut out, value);
            assert_eq!(out, *format!("{value:016x}").as_bytes());
        }
    }

    #[test]
    fn xff_joins_every_line_then_the_peer() {
        let lines: [&[u8]; 4] = [b" 198.51.100.7 ,10.0.0.1", b"", b"  ", b"10.0.0.2"];
        assert_eq!(
            x_forwarded_for(lines.into_iter(), ip("10.0.0.3")),
            b"198.51.100.7, 10.0.0.1, 10.0.0.2, 10.0.0.3"
        );
        assert_eq!(
            x_forwarded_for(std::iter::empty(), ip("203.0.113.9")),
            b"203.0.113.9"
        );
        assert_eq!(
            x_forwarded_for(
                [b"unknown, ,".as_slice()].into_iter(),
                ip("::ffff:192.0.2.1")
            ),
            b"unknown, 192.0.2.1"
        );
        assert_eq!(
            x_forwarded_for(std::iter::empty(), ip("2001:db8::1")),
            b"2001:db8::1"
        );
    }

    #[test]
    fn xff_is_bounded_to_its_last_entries() {
        // 100 KiB of entries: the last ones within 4 KiB are kept, then the peer.
        let entry = b"203.0.113.200";
        let line: Vec<u8> = std::iter::repeat_n(&entry[..], 7000)
            .collect::<Vec<_>>()
            .join(&b","[..]);
        let lines = [line.as_slice(), b"198.51.100.7"];
        let out = x_forwarded_for(lines.into_iter(), ip("10.0.0.1"));
        let tail = b", 198.51.100.7, 10.0.0.1";
        assert!(out.ends_with(tail));
        let incoming = &out[..out.len() - b", 10.0.0.1".len()];
        assert!(incoming.len() <= INCOMING_MAX);
        assert!(
            incoming.len() + 2 + entry.len() > INCOMING_MAX,
            "as many as fit"
        );
        assert!(out.starts_with(entry));
        // One entry longer than the bound leaves none.
        let huge = vec![b'1'; INCOMING_MAX + 1];
        assert_eq!(
            x_forwarded_for([huge.as_slice()].into_iter(), ip("10.0.0.1")),
            b"10.0.0.1"
        );
        let exact = vec![b'1'; INCOMING_MAX];
        assert_eq!(
            x_forwarded_for([exact.as_slice()].into_iter(), ip("10.0.0.1")).len(),
            INCOMING_MAX + b", 10.0.0.1".len()
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn hop(peer: &str, trusted: bool, client: &str) -> Hop<'static> {
        Hop {
            peer: ip(peer),
            peer_trusted: trusted,
            client_ip: ip(client),
            tls: true,
            host: Some(b"ent.example.org"),
        }
    }

    fn set(name: &str, value: &str) -> HeaderEdit {
        HeaderEdit::Set(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        )
    }

    fn remove(name: &str) -> HeaderEdit {
        HeaderEdit::Remove(HeaderName::from_bytes(name.as_bytes()).unwrap())
    }

    /// The upstream request's headers once the edits are applied, as the proxy does.
    fn apply(incoming: &HeaderMap, edits: &[HeaderEdit]) -> HeaderMap {
        let mut out = incoming.clone();
        for edit in edits {
            match edit {
                HeaderEdit::Remove(name) => {
                    out.remove(name);
                }
                HeaderEdit::Set(name, value) => {
                    out.insert(name.clone(), value.clone());
                }
            }
        }
        out
    }

    #[test]
    fn b1_both_xff_lines_reach_the_backend() {
        let incoming = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let client = client_ip(
            peer,
            incoming
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
            &trusted,
        );
        assert_eq!(client, ip("198.51.100.7"));
        let edits = upstream_edits(
            &incoming,
            &hop("10.0.0.1", true, "198.51.100.7"),
            ForwardedPolicy::Strip,
        );
        let out = apply(&incoming, &edits);
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["198.51.100.7, 10.0.0.2, 10.0.0.1"]);
    }

    #[test]
    fn b2_untrusted_forwarded_and_real_ip_are_stripped() {
        let incoming = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let mut h = hop("203.0.113.9", false, "203.0.113.9");
        h.tls = false;
        let edits = upstream_edits(&incoming, &h, ForwardedPolicy::Strip);
        assert_eq!(
            edits,
            [
                set("x-forwarded-for", "203.0.113.9"),
                set("x-forwarded-proto", "http"),
                set("x-forwarded-host", "ent.example.org"),
                remove("forwarded"),
                remove("x-real-ip"),
            ]
        );
        let out = apply(&incoming, &edits);
        assert!(out.get("forwarded").is_none());
        assert!(out.get("x-real-ip").is_none());
        assert_eq!(out.get("x-forwarded-host").unwrap(), "ent.example.org");
    }

    #[test]
    fn b2_untrusted_forwarded_and_real_ip_are_rewritten() {
        let incoming = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("forwarded", "for=5.6.7.8"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let edits = upstream_edits(
            &incoming,
            &hop("203.0.113.9", false, "203.0.113.9"),
            ForwardedPolicy::Rewrite,
        );
        let out = apply(&incoming, &edits);
        let forwarded: Vec<_> = out.get_all("forwarded").iter().collect();
        assert_eq!(
            forwarded,
            ["for=203.0.113.9;proto=https;host=ent.example.org"]
        );
        assert_eq!(out.get("x-real-ip").unwrap(), "203.0.113.9");
        // IPv6 is quoted and bracketed.
        let edits = upstream_edits(
            &incoming,
            &hop("2001:db8::1", false, "2001:db8::1"),
            ForwardedPolicy::Rewrite,
        );
        let out = apply(&incoming, &edits);
        assert_eq!(
            out.get("forwarded").unwrap(),
            "for=\"[2001:db8::1]\";proto=https;host=ent.example.org"
        );
        assert_eq!(out.get("x-real-ip").unwrap(), "2001:db8::1");
    }

    #[test]
    fn trusted_proxies_keep_their_headers() {
        let incoming = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.7;proto=https"),
            ("x-real-ip", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "portal.example.org"),
        ]);
        let h = hop("10.0.0.1", true, "198.51.100.7");
        // Strip: all kept, XFF extended.
        let edits = upstream_edits(&incoming, &h, ForwardedPolicy::Strip);
        assert_eq!(edits, [set("x-forwarded-for", "198.51.100.7, 10.0.0.1")]);
        // Rewrite: Rempart's element appended, X-Real-IP what Rempart computed.
        let edits = upstream_edits(&incoming, &h, ForwardedPolicy::Rewrite);
        assert_eq!(
            edits,
            [
                set("x-forwarded-for", "198.51.100.7, 10.0.0.1"),
                set(
                    "forwarded",
                    "for=198.51.100.7;proto=https, for=10.0.0.1;proto=https;host=ent.example.org"
                ),
                set("x-real-ip", "198.51.100.7"),
            ]
        );
        // A trusted proxy that sent no X-Forwarded-Proto / -Host gets Rempart's.
        let edits = upstream_edits(&HeaderMap::new(), &h, ForwardedPolicy::Strip);
        assert_eq!(
            edits,
            [
                set("x-forwarded-for", "10.0.0.1"),
                set("x-forwarded-proto", "https"),
                set("x-forwarded-host", "ent.example.org"),
            ]
        );
    }

    #[test]
    fn trusted_rewrite_without_a_good_forwarded_names_the_client() {
        let h = hop("10.0.0.1", true, "198.51.100.7");
        let expect = "for=198.51.100.7, for=10.0.0.1;proto=https;host=ent.example.org";
        for bad in [
            "for=\"1.2.3.4",
            "for=1.2.3.4;proto",
            "for = 1.2.3.4",
            "=x",
            "for=a b",
            "for=\"a\"b",
        ] {
            let incoming = headers(&[("forwarded", "for=9.9.9.9"), ("forwarded", bad)]);
            let edits = upstream_edits(&incoming, &h, ForwardedPolicy::Rewrite);
            assert!(edits.contains(&set("forwarded", expect)), "{bad:?}");
        }
        let edits = upstream_edits(&HeaderMap::new(), &h, ForwardedPolicy::Rewrite);
        assert!(edits.contains(&set("forwarded", expect)));
        // The peer is the client (no X-Forwarded-For): Rempart's element alone.
        let h = hop("10.0.0.1", true, "10.0.0.1");
        let edits = upstream_edits(&HeaderMap::new(), &h, ForwardedPolicy::Rewrite);
        assert!(edits.contains(&set(
            "forwarded",
            "for=10.0.0.1;proto=https;host=ent.example.org"
        )));
    }

    #[test]
    fn forwarded_elements_are_parsed_with_quotes() {
        assert_eq!(
            forwarded_elements(b"for=1.2.3.4;proto=http, for=\"[::1]:80\" , ,by=x").unwrap(),
            [&b"for=1.2.3.4;proto=http"[..], b"for=\"[::1]:80\"", b"by=x"]
        );
        assert_eq!(
            forwarded_elements(b"for=\"a,b\";host=\"x\\\"y\"").unwrap(),
            [&b"for=\"a,b\";host=\"x\\\"y\""[..]]
        );
        assert_eq!(forwarded_elements(b"").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(forwarded_elements(b";;").unwrap(), [&b";;"[..]]);
        assert!(forwarded_elements(b"for=\"x").is_none());
        assert!(forwarded_elements(b"for=\"x\\\"").is_none());
        assert!(forwarded_elements(b"for").is_none());
        assert!(forwarded_elements(b"f(r=x").is_none());
    }

    #[test]
    fn elements_quote_what_is_no_token() {
        assert_eq!(
            forwarded_element(ip("192.0.2.1"), false, Some(b"ent.example.org:8443")),
            b"for=192.0.2.1;proto=http;host=\"ent.example.org:8443\""
        );
        assert_eq!(
            forwarded_element(ip("::ffff:192.0.2.1"), true, Some(b"")),
            b"for=192.0.2.1;proto=https"
        );
        assert_eq!(
            forwarded_element(ip("2001:db8::1"), true, Some(b"a\"b\\c")),
            b"for=\"[2001:db8::1]\";proto=https;host=\"a\\\"b\\\\c\""
        );
        assert_eq!(
            forwarded_element(ip("192.0.2.1"), true, None),
            b"for=192.0.2.1;proto=https"
        );
    }

    #[test]
    fn unvouched_headers_are_removed_from_untrusted_peers() {
        let incoming = headers(&[
            ("x-forwarded-port", "8443"),
            ("x-forwarded-prefix", "/evil"),
            ("true-client-ip", "1.2.3.4"),
            ("x-client-ip", "1.2.3.4"),
        ]);
        for policy in [ForwardedPolicy::Strip, ForwardedPolicy::Rewrite] {
            let edits =
                upstream_edits(&incoming, &hop("203.0.113.9", false, "203.0.113.9"), policy);
            let out = apply(&incoming, &edits);
            for name in &UNVOUCHED {
                assert!(out.get(name).is_none(), "{name} under {policy:?}");
            }
            let edits = upstream_edits(&incoming, &hop("10.0.0.1", true, "203.0.113.9"), policy);
            let out = apply(&incoming, &edits);
            assert_eq!(out.get("x-forwarded-port").unwrap(), "8443");
            assert_eq!(out.get("true-client-ip").unwrap(), "1.2.3.4");
        }
    }

    #[test]
    fn no_host_removes_x_forwarded_host() {
        let incoming = headers(&[("x-forwarded-host", "evil.example")]);
        let mut h = hop("203.0.113.9", false, "203.0.113.9");
        h.host = None;
        let edits = upstream_edits(&incoming, &h, ForwardedPolicy::Rewrite);
        assert!(edits.contains(&remove("x-forwarded-host")));
        assert!(edits.contains(&set("forwarded", "for=203.0.113.9;proto=https")));
    }

    #[test]
    fn policies_from_config() {
        assert_eq!("strip".parse(), Ok(ForwardedPolicy::Strip));
        assert_eq!(" rewrite ".parse(), Ok(ForwardedPolicy::Rewrite));
        assert!("keep".parse::<ForwardedPolicy>().is_err());
        assert_eq!(ForwardedPolicy::default(), ForwardedPolicy::Strip);
    }

    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn trusted_nets() -> Vec<IpNet> {
            nets(&["10.0.0.0/8", "fd00::/8"])
        }

        /// An address, trusted (in 10/8 or fd00::/8) or not.
        fn address(trusted: bool) -> BoxedStrategy<IpAddr> {
            if trusted {
                prop_oneof![
                    any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
                    any::<u128>().prop_map(|x| IpAddr::from(std::net::Ipv6Addr::from(
                        (x >> 8) | (0xfd << 120)
                    ))),
                ]
                .boxed()
            } else {
                prop_oneof![
                    any::<[u8; 4]>()
                        .prop_filter("not 10/8", |o| o[0] != 10)
                        .prop_map(IpAddr::from),
                    any::<u128>()
                        .prop_map(|x| canonical(IpAddr::from(std::net::Ipv6Addr::from(x))))
                        .prop_filter("untrusted", |ip| !is_trusted(*ip, &trusted_nets())),
                ]
                .boxed()
            }
        }

        /// How an address may be written in X-Forwarded-For.
        fn written(ip: IpAddr, port: Option<u16>, pad: usize) -> String {
            let spaces = " ".repeat(pad);
            match (ip, port) {
                (ip, None) => format!("{spaces}{ip}{spaces}"),
                (IpAddr::V4(v4), Some(p)) => format!("{spaces}{v4}:{p}"),
                (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}{spaces}"),
            }
        }

        /// A chain of (trusted, address) from the client to the peer's side.
        fn chain() -> impl Strategy<Value = Vec<(bool, IpAddr)>> {
            vec(any::<bool>(), 0..12).prop_flat_map(|flags| {
                flags
                    .into_iter()
                    .map(|t| address(t).prop_map(move |ip| (t, ip)))
                    .collect::<Vec<_>>()
            })
        }

        /// `entries` spread over lines at the `cuts`, with empty lines here and there.
        fn lines_of(entries: &[String], cuts: &[bool]) -> Vec<String> {
            let mut lines = vec![String::new()];
            for (i, entry) in entries.iter().enumerate() {
                let cut = cuts.get(i).copied().unwrap_or(false);
                if cut {
                    lines.push(String::new());
                    if i % 3 == 0 {
                        lines.push("  ".to_string());
                        lines.push(String::new());
                    }
                }
                let line = lines.last_mut().expect("one line at least");
                if !line.trim().is_empty() {
                    line.push(',');
                }
                line.push_str(entry);
            }
            lines
        }

        fn header_value_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                vec(any::<u8>(), 0..64),
                vec(
                    prop::sample::select(b"0123456789abcdef.:[], ;=\"\\for".to_vec()),
                    0..64
                ),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// An address is written as its Display writes it.
            #[test]
            fn push_ip_is_display(ip in any::<IpAddr>()) {
                let mut out = Vec::new();
                push_ip(&mut out, ip);
                prop_assert_eq!(out, ip.to_string().into_bytes());
            }

            /// X-Forwarded-For of any bytes, on any number of lines, never panics, and the
            /// value sent upstream always ends with the peer and is a valid header value
            /// whenever the lines are.
            #[test]
            fn xff_never_panics(lines in vec(header_value_bytes(), 0..6), peer in any::<IpAddr>(), trusted in any::<bool>()) {
                let nets = if trusted { vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()] } else { trusted_nets() };
                let _ = client_ip(peer, lines.iter().map(Vec::as_slice), &nets);
                let out = x_forwarded_for(lines.iter().map(Vec::as_slice), peer);
                let peer_text = canonical(peer).to_string();
                prop_assert!(out.ends_with(peer_text.as_bytes()));
                prop_assert!(out.len() <= INCOMING_MAX + 2 + peer_text.len());
                let valid: Vec<HeaderValue> = lines.iter().filter_map(|l| HeaderValue::from_bytes(l).ok()).collect();
                let out = x_forwarded_for(valid.iter().map(HeaderValue::as_bytes), peer);
                prop_assert!(HeaderValue::from_bytes(&out).is_ok());
                for line in &lines {
                    let _ = parse_forwarded_entry(&String::from_utf8_lossy(line));
                    let _ = forwarded_elements(line);
                }
            }

            /// Behind a trusted peer, client_ip is the rightmost untrusted address of the
            /// chain, however it is spread over lines, padded or given ports; the leftmost
            /// address when all are trusted; the peer when the chain is empty. From an
            /// untrusted peer, the peer.
            #[test]
            fn client_ip_is_the_rightmost_untrusted(
                chain in chain(),
                peer in address(true),
                stranger in address(false),
                ports in vec(prop::option::of(any::<u16>()), 12),
                pads in vec(0usize..3, 12),
                cuts in vec(any::<bool>(), 12),
            ) {
                let entries: Vec<String> = chain
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ip))| written(*ip, ports[i], pads[i]))
                    .collect();
                let lines = lines_of(&entries, &cuts);
                let expected = chain
                    .iter()
                    .rev()
                    .find(|(t, _)| !t)
                    .or(chain.first())
                    .map_or(peer, |(_, ip)| *ip);
                let nets = trusted_nets();
                prop_assert_eq!(client_ip(peer, lines.iter().map(|l| l.as_bytes()), &nets), expected);
                prop_assert_eq!(client_ip(stranger, lines.iter().map(|l| l.as_bytes()), &nets), stranger);
            }

            /// Joining keeps every entry, in order, then the peer, when they fit in the bound;
            /// otherwise the longest suffix of the entries that fits.
            #[test]
            fn joining_keeps_order_and_count(
                entries in vec("[0-9a-f.:\\[\\]_-]{1,40}", 0..200),
                pads in vec(0usize..3, 200),
                cuts in vec(any::<bool>(), 200),
                peer in any::<IpAddr>(),
            ) {
                let padded: Vec<String> = entries
                    .iter()
                    .zip(&pads)
                    .map(|(e, p)| format!("{}{e}{}", " ".repeat(*p), "\t".repeat(*p % 2)))
                    .collect();
                let lines = lines_of(&padded, &cuts);
                let out = x_forwarded_for(lines.iter().map(|l| l.as_bytes()), peer);
                let out = String::from_utf8(out).unwrap();
                let mut got: Vec<&str> = out.split(", ").collect();
                let peer_text = canonical(peer).to_string();
                prop_assert_eq!(got.pop(), Some(peer_text.as_str()));
                let joined = entries.join(", ");
                if joined.len() <= INCOMING_MAX {
                    prop_assert_eq!(got.len(), entries.len());
                    prop_assert_eq!(got, entries.iter().map(String::as_str).collect::<Vec<_>>());
                } else {
                    let kept = got.len();
                    prop_assert!(entries.ends_with(&got.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
                    let length = got.join(", ").len();
                    prop_assert!(length <= INCOMING_MAX);
                    let next = &entries[entries.len() - kept - 1];
                    let separator = if kept == 0 { 0 } else { 2 };
                    prop_assert!(length + next.len() + separator > INCOMING_MAX);
                }
            }

            /// Whatever the incoming headers, the edits set valid values; Strip from an untrusted
            /// peer removes Forwarded and X-Real-IP; Rewrite always gives a well-formed
            /// Forwarded whose last element names the peer (trusted) or the client (untrusted),
            /// and an X-Real-IP that is the client.
            #[test]
            fn edits_follow_the_policy(
                xff in vec(header_value_bytes(), 0..3),
                fwd in vec(header_value_bytes(), 0..3),
                real in vec(header_value_bytes(), 0..2),
                host in prop::option::of(header_value_bytes()),
                peer in any::<IpAddr>(),
                client in any::<IpAddr>(),
                trusted in any::<bool>(),
                tls in any::<bool>(),
                rewrite in any::<bool>(),
            ) {
                let mut incoming = HeaderMap::new();
                for (name, values) in [("x-forwarded-for", &xff), ("forwarded", &fwd), ("x-real-ip", &real)] {
                    for v in values.iter().filter_map(|v| HeaderValue::from_bytes(v).ok()) {
                        incoming.append(HeaderName::from_static(name), v);
                    }
                }
                let host = host.filter(|h| HeaderValue::from_bytes(h).is_ok());
                let client = if trusted { client } else { peer };
                let h = Hop { peer, peer_trusted: trusted, client_ip: client, tls, host: host.as_deref() };
                let policy = if rewrite { ForwardedPolicy::Rewrite } else { ForwardedPolicy::Strip };
                let out = apply(&incoming, &upstream_edits(&incoming, &h, policy));
                prop_assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
                match (rewrite, trusted) {
                    (false, false) => {
                        prop_assert!(out.get("forwarded").is_none());
                        prop_assert!(out.get("x-real-ip").is_none());
                    }
                    (false, true) => {
                        prop_assert_eq!(out.get_all("forwarded").iter().count(), incoming.get_all("forwarded").iter().count());
                        prop_assert_eq!(out.get_all("x-real-ip").iter().count(), incoming.get_all("x-real-ip").iter().count());
                    }
                    (true, _) => {
                        let values: Vec<_> = out.get_all("forwarded").iter().collect();
                        prop_assert_eq!(values.len(), 1);
                        let elements = forwarded_elements(values[0].as_bytes());
                        prop_assert!(elements.is_some());
                        let elements = elements.unwrap();
                        let last = elements.last().unwrap();
                        let named = if trusted { peer } else { client };
                        let expected = forwarded_element(named, tls, host.as_deref());
                        prop_assert_eq!(*last, expected.as_slice());
                        prop_assert!(values[0].len() <= INCOMING_MAX + 2 + 2 * expected.len() + 64);
                        let real_ip = canonical(client).to_string();
                        prop_assert_eq!(out.get("x-real-ip").map(|v| v.as_bytes()), Some(real_ip.as_bytes()));
                    }
                }
            }

            /// The `for=` of an element reads back as the address.
            #[test]
            fn for_reads_back(addr in any::<IpAddr>(), tls in any::<bool>()) {
                let element = forwarded_element(addr, tls, None);
                let text = String::from_utf8(element).unwrap();
                let value = text.strip_prefix("for=").unwrap().split(';').next().unwrap();
                let bare = value.trim_matches('"').trim_start_matches('[').trim_end_matches(']');
                prop_assert_eq!(bare.parse::<IpAddr>().ok(), Some(canonical(addr)));
                prop_assert_eq!(value.starts_with('"'), canonical(addr).is_ipv6());
            }
        }
    }
}
