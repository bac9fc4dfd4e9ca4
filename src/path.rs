//! Request paths: normalisation before route matching (RFC 3986) and the path sent upstream.
//!
//! Route prefixes are matched against [`Normalized::route_key`] and the request
//! is proxied with [`Normalized::forward`]. Both come from [`normalize`], which
//! runs before route matching on every request. The point is that the route a
//! request matches here is the resource the origin serves: `//auth/login`,
//! `/x/../auth/login`, `/./auth/login`, `/%61uth/login`, `/auth//login` and
//! `/auth;x=1/login` all resolve to `/auth/login` on Tomcat, Jetty, Spring or
//! IIS, so they must hit the `/auth/login` route (rate limit, login queue) and
//! not the `/` default route.
//!
//! What [`normalize`] does in [`PathMode::Strict`] (the default) and
//! [`PathMode::Permissive`]:
//!
//! 1. the path must start with `/` (`*`, for `OPTIONS *`, passes unchanged);
//! 2. escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
//!    other valid escapes are kept with upper-case hex digits, and raw bytes
//!    that may not appear in a path (space, `"` `#` `<` `>` `?` `[` `]` `^`
//!    backquote `{` `|` `}`, every non-ASCII byte) are percent-encoded;
//! 3. runs of `/` are merged;
//! 4. dot segments are removed as RFC 3986 section 5.2.4 says (`..` never goes
//!    above the root), after step 2, so `%2e%2e` is `..`;
//! 5. `;` path parameters stay in `forward` (legacy `;jsessionid=` URLs) and
//!    are cut from every segment of `route_key`, as servlet containers do;
//! 6. a trailing `/` is kept.
//!
//! Strict rejects what a lenient origin could read differently from us: `%2F`,
//! `%5C`, `%00`, a `%` not followed by two hex digits, a raw `\`, a raw control
//! byte, and a segment that is `.` or `..` only once its parameters are cut
//! (`/..;/admin`). Permissive forwards those unchanged and matches on them as
//! they are, which is only safe when the origins never decode them.
//! [`PathMode::Off`] hands the raw path through untouched and is unsafe.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::str::FromStr;

/// How request paths are normalised, from `server.path_normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PathMode {
    /// Normalise, and reject what origins may decode differently (`%2F`,
    /// `%5C`, `%00`, bad escapes, `\`, control bytes, `..;x` segments).
    #[default]
    Strict,
    /// Normalise, but forward and match those ambiguous bytes unchanged.
    Permissive,
    /// Legacy: forward and match the raw path. Unsafe: `//auth/login`
    /// escapes a route on `/auth/login`.
    Off,
}

impl PathMode {
    /// The configuration spelling of this mode.
    pub const fn as_str(self) -> &'static str {
        match self {
            PathMode::Strict => "strict",
            PathMode::Permissive => "permissive",
            PathMode::Off => "off",
        }
    }
}

impl fmt::Display for PathMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `server.path_normalization` value that is not `strict`, `permissive` or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPathMode(pub String);

impl fmt::Display for UnknownPathMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown path normalization mode {:?} (expected strict, permissive or off)",
            self.0
        )
    }
}

impl Error for UnknownPathMode {}

impl FromStr for PathMode {
    type Err = UnknownPathMode;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "strict" => Ok(PathMode::Strict),
            "permissive" => Ok(PathMode::Permissive),
            "off" => Ok(PathMode::Off),
            other => Err(UnknownPathMode(other.to_owned())),
        }
    }
}

/// The two views of one request path.
///
/// Both borrow the raw path when normalisation changes nothing, which is the
/// case of almost every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// The path sent upstream: normalised, with `;` parameters kept.
    pub forward: Cow<'a, str>,
    /// The path route prefixes are matched against: `forward` with every
    /// segment's `;` parameters cut (and, in permissive mode, the dot segments
    /// that this reveals resolved as the origin would).
    pub route_key: Cow<'a, str>,
}

impl<'a> Normalized<'a> {
    const fn unchanged(raw: &'a str) -> Self {
        Normalized {
            forward: Cow::Borrowed(raw),
            route_key: Cow::Borrowed(raw),
        }
    }
}

/// Why a request path was refused; the proxy answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathRejection {
    /// The path is empty.
    Empty,
    /// The path does not start with `/` (and is not `*`).
    NotAbsolute,
    /// `%2F`: origins disagree on whether it splits segments (strict only).
    EncodedSlash,
    /// `%5C`: IIS and some Java stacks read it as a separator (strict only).
    EncodedBackslash,
    /// A raw `\`: read as `/` by IIS, by Tomcat with `ALLOW_BACKSLASH` and by
    /// browser-style canonicalisers such as Envoy's (strict only).
    Backslash,
    /// A NUL byte, raw or `%00`: truncates paths in C and file APIs (strict only).
    Nul,
    /// A raw control byte other than NUL (strict only).
    ControlCharacter,
    /// A `%` not followed by two hex digits (strict only).
    InvalidEscape,
    /// A segment that is `.` or `..` once its `;` parameters are cut, such as
    /// `..;` in `/..;/admin`: servlet containers treat it as a dot segment,
    /// RFC 3986 does not (strict only).
    DotSegmentWithParameters,
}

impl PathRejection {
    /// A stable, snake_case label for metrics and structured logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            PathRejection::Empty => "empty",
            PathRejection::NotAbsolute => "not_absolute",
            PathRejection::EncodedSlash => "encoded_slash",
            PathRejection::EncodedBackslash => "encoded_backslash",
            PathRejection::Backslash => "backslash",
            PathRejection::Nul => "nul",
            PathRejection::ControlCharacter => "control_character",
            PathRejection::InvalidEscape => "invalid_escape",
            PathRejection::DotSegmentWithParameters => "dot_segment_with_parameters",
        }
    }
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathRejection::Empty => "empty request path",
            PathRejection::NotAbsolute => "request path does not start with '/'",
            PathRejection::EncodedSlash => "encoded slash (%2F) in request path",
            PathRejection::EncodedBackslash => "encoded backslash (%5C) in request path",
            PathRejection::Backslash => "backslash in request path",
            PathRejection::Nul => "NUL byte (raw or %00) in request path",
            PathRejection::ControlCharacter => "control character in request path",
            PathRejection::InvalidEscape => "'%' not followed by two hex digits in request path",
            PathRejection::DotSegmentWithParameters => {
                "'.' or '..' segment with ';' parameters in request path"
            }
        })
    }
}

impl Error for PathRejection {}

/// Normalises the path part of a request target (no query string).
///
/// Returns the path to forward and the key to match route prefixes against,
/// or why the path is refused. In [`PathMode::Off`] both are `raw` and nothing
/// is refused. When nothing changes (the common case) both views borrow `raw`
/// and nothing is allocated; otherwise at most two strings are allocated.
pub fn normalize(raw: &str, mode: PathMode) -> Result<Normalized<'_>, PathRejection> {
    if mode == PathMode::Off {
        return Ok(Normalized::unchanged(raw));
    }
    if raw.is_empty() {
        return Err(PathRejection::Empty);
    }
    // The asterisk form of `OPTIONS *` is routed elsewhere; let it through.
    if raw == "*" {
        return Ok(Normalized::unchanged(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }

    let scan = scan(raw.as_bytes());
    let (forward, has_parameters) = if scan.is_canonical {
        (Cow::Borrowed(raw), scan.has_semicolon)
    } else {
        let built = build_forward(raw, mode)?;
        let has_parameters = contains_parameters(&built);
        // Already-canonical escapes (`/%C3%A9`) take this path; borrowing
        // again lets the route key borrow too instead of cloning.
        if built == raw {
            (Cow::Borrowed(raw), has_parameters)
        } else {
            (Cow::Owned(built), has_parameters)
        }
    };

    let route_key = if has_parameters {
        Cow::Owned(build_route_key(&forward, mode)?)
    } else {
        match &forward {
            Cow::Borrowed(path) => Cow::Borrowed(*path),
            Cow::Owned(path) => Cow::Owned(path.clone()),
        }
    };
    Ok(Normalized { forward, route_key })
}

/// What a byte means in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteClass {
    /// Kept as is: RFC 3986 `pchar` less `%`, `;` and `.`, which need care.
    Plain,
    Dot,
    Slash,
    /// Starts the parameters of a segment for servlet containers.
    Semicolon,
    Percent,
    Backslash,
    /// C0 controls and DEL: strict refuses them, permissive percent-encodes
    /// them, so that no raw CR, LF or NUL ever reaches the upstream request line.
    Control,
    /// Not allowed raw in a path (space, `"` `#` `<` `>` `?` `[` `]` `^`
    /// backquote `{` `|` `}`, every non-ASCII byte):
    /// percent-encoded, which any decoding origin reads as the same byte.
    /// `?` and `#` matter most: forwarded raw they would start a query or a
    /// fragment upstream and cut the path the origin sees.
    Encode,
}

const fn classify(byte: u8) -> ByteClass {
    match byte {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => ByteClass::Plain,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' => {
            ByteClass::Plain
        }
        b'.' => ByteClass::Dot,
        b'/' => ByteClass::Slash,
        b';' => ByteClass::Semicolon,
        b'%' => ByteClass::Percent,
        b'\\' => ByteClass::Backslash,
        0x00..=0x1f | 0x7f => ByteClass::Control,
        _ => ByteClass::Encode,
    }
}

/// One lookup per byte on the fast path instead of a chain of comparisons.
static BYTE_CLASS: [ByteClass; 256] = {
    let mut table = [ByteClass::Encode; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = classify(byte as u8);
        byte += 1;
    }
    table
};

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

const fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

const fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by the escape starting at `bytes[at]` (a `%`), if valid.
fn decode_escape(bytes: &[u8], at: usize) -> Option<u8> {
    let high = hex_value(*bytes.get(at + 1)?)?;
    let low = hex_value(*bytes.get(at + 2)?)?;
    Some(high << 4 | low)
}

fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(UPPER_HEX[usize::from(byte >> 4)]));
    out.push(char::from(UPPER_HEX[usize::from(byte & 0x0f)]));
}

/// What the fast path learnt about a path starting with `/`.
struct Scan {
    /// Only plain bytes, dots, semicolons and slashes, no empty segment
    /// except a trailing one, no `.` or `..` segment: `forward` is `raw`.
    is_canonical: bool,
    has_semicolon: bool,
}

fn scan(path: &[u8]) -> Scan {
    let not_canonical = Scan {
        is_canonical: false,
        has_semicolon: false,
    };
    let mut has_semicolon = false;
    // Length of the current segment, and how many of its bytes are dots, to
    // spot `.` and `..` without a second pass.
    let mut segment_len = 0usize;
    let mut segment_dots = 0usize;
    for &byte in path.get(1..).unwrap_or_default() {
        match BYTE_CLASS[usize::from(byte)] {
            ByteClass::Plain => segment_len += 1,
            ByteClass::Dot => {
                segment_len += 1;
                segment_dots += 1;
            }
            ByteClass::Semicolon => {
                has_semicolon = true;
                segment_len += 1;
            }
            ByteClass::Slash => {
                // An empty segment here means `//`.
                if segment_len == 0 || is_dot_segment(segment_len, segment_dots) {
                    return not_canonical;
                }
                segment_len = 0;
                segment_dots = 0;
            }
            ByteClass::Percent | ByteClass::Backslash | ByteClass::Control | ByteClass::Encode => {
                return not_canonical;
            }
        }
    }
    // A trailing `/.` or `/..`; an empty last segment is a trailing slash, kept.
    if is_dot_segment(segment_len, segment_dots) {
        return not_canonical;
    }
    Scan {
        is_canonical: true,
        has_semicolon,
    }
}

const fn is_dot_segment(segment_len: usize, segment_dots: usize) -> bool {
    segment_len == segment_dots && (segment_len == 1 || segment_len == 2)
}

/// Upper bound of the normalised length, so that `forward` is allocated once:
/// escaping turns one byte into three, decoding and merging only shrink.
fn forward_capacity(path: &[u8]) -> usize {
    let growing = path
        .iter()
        .filter(|&&byte| {
            matches!(
                BYTE_CLASS[usize::from(byte)],
                ByteClass::Percent | ByteClass::Control | ByteClass::Encode
            )
        })
        .count();
    path.len() + 2 * growing + 1
}

fn build_forward(raw: &str, mode: PathMode) -> Result<String, PathRejection> {
    walk_segments(raw, forward_capacity(raw.as_bytes()), |segment, out| {
        canonicalize_segment(segment.as_bytes(), mode, out)
    })
}

/// Appends one segment of the raw path to `out`, percent-normalised.
fn canonicalize_segment(
    segment: &[u8],
    mode: PathMode,
    out: &mut String,
) -> Result<(), PathRejection> {
    let strict = mode == PathMode::Strict;
    let mut at = 0;
    while let Some(&byte) = segment.get(at) {
        match BYTE_CLASS[usize::from(byte)] {
            // Slash cannot occur: segments are split on it.
            ByteClass::Plain | ByteClass::Dot | ByteClass::Semicolon | ByteClass::Slash => {
                out.push(char::from(byte));
            }
            ByteClass::Percent => match decode_escape(segment, at) {
                Some(decoded) => {
                    if is_unreserved(decoded) {
                        // RFC 3986 section 6.2.2.2: `%61` is `a`, and `%2e`
                        // is a dot, seen as such by dot-segment removal.
                        out.push(char::from(decoded));
                    } else if strict && decoded == b'/' {
                        return Err(PathRejection::EncodedSlash);
                    } else if strict && decoded == b'\\' {
                        return Err(PathRejection::EncodedBackslash);
                    } else if strict && decoded == 0 {
                        return Err(PathRejection::Nul);
                    } else {
                        // Reserved and other bytes keep their escape (their
                        // meaning differs from the raw byte); upper-case hex
                        // is the RFC's canonical form.
                        push_escaped(out, decoded);
                    }
                    at += 3;
                    continue;
                }
                None if strict => return Err(PathRejection::InvalidEscape),
                // Escaping the stray `%` keeps its meaning for an origin that
                // decodes once and makes the result idempotent: `%%34%31`
                // becomes `%2541`, never `%41` that a second pass reads as `A`.
                None => out.push_str("%25"),
            },
            ByteClass::Backslash if strict => return Err(PathRejection::Backslash),
            ByteClass::Backslash => out.push('\\'),
            ByteClass::Control if strict => {
                return Err(if byte == 0 {
                    PathRejection::Nul
                } else {
                    PathRejection::ControlCharacter
                });
            }
            ByteClass::Control | ByteClass::Encode => push_escaped(out, byte),
        }
        at += 1;
    }
    Ok(())
}

/// Whether a normalised path has `;` parameters. `%3B` counts: frameworks that
/// decode before cutting parameters (Spring's `UrlPathHelper`) treat it as `;`.
fn contains_parameters(path: &str) -> bool {
    parameters_start(path.as_bytes()) < path.len()
}

/// Index of the first `;` or `%3B` in a segment, or its length if none.
fn parameters_start(segment: &[u8]) -> usize {
    let mut at = 0;
    while let Some(&byte) = segment.get(at) {
        if byte == b';' {
            return at;
        }
        if byte == b'%' && decode_escape(segment, at) == Some(b';') {
            return at;
        }
        at += 1;
    }
    segment.len()
}

/// Cuts every segment's parameters from a normalised path. Cutting can leave
/// empty segments (`/;x/`), merged like `//`, and in permissive mode dot
/// segments (`/..;x/`), resolved as the origin resolves them.
fn build_route_key(forward: &str, mode: PathMode) -> Result<String, PathRejection> {
    walk_segments(forward, forward.len(), |segment, out| {
        let name = &segment[..parameters_start(segment.as_bytes())];
        if mode == PathMode::Strict && name.len() < segment.len() && matches!(name, "." | "..") {
            // RFC 3986 says `..;x` is a name, Tomcat and Spring say `..`:
            // refuse rather than pick one.
            return Err(PathRejection::DotSegmentWithParameters);
        }
        out.push_str(name);
        Ok(())
    })
}

/// Rebuilds an absolute path segment by segment: `append` writes a segment's
/// text, then empty segments are dropped (merging slashes) and `.` and `..`
/// are resolved against the output, which is RFC 3986 section 5.2.4 on a
/// path without empty segments. A last segment that is empty, `.` or `..`
/// names a directory, so the result then ends with `/`.
fn walk_segments<F>(path: &str, capacity: usize, mut append: F) -> Result<String, PathRejection>
where
    F: FnMut(&str, &mut String) -> Result<(), PathRejection>,
{
    let mut out = String::with_capacity(capacity);
    let mut ends_with_directory = false;
    for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
        let segment_start = out.len();
        out.push('/');
        append(segment, &mut out)?;
        ends_with_directory = resolve_appended_segment(&mut out, segment_start);
    }
    if ends_with_directory || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Resolves the segment just appended to `out` after the `/` at
/// `segment_start`. Returns whether it named a directory (empty, `.`, `..`).
fn resolve_appended_segment(out: &mut String, segment_start: usize) -> bool {
    match out.as_bytes().get(segment_start + 1..) {
        Some(b"") | Some(b".") => {
            out.truncate(segment_start);
            true
        }
        Some(b"..") => {
            out.truncate(segment_start);
            // Drop the parent segment too; at the root there is none, so `..`
            // stays at the root instead of failing.
            let parent_start = out.rfind('/').unwrap_or(0);
            out.truncate(parent_start);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MODES: [PathMode; 3] = [PathMode::Strict, PathMode::Permissive, PathMode::Off];
    const NORMALISING: [PathMode; 2] = [PathMode::Strict, PathMode::Permissive];
    const PREFIXES: [&str; 5] = ["/", "/auth", "/auth/login", "/api/v1/", "/admin"];

    /// `(forward, route_key)` of an accepted path.
    fn accepted(raw: &str, mode: PathMode) -> (String, String) {
        match normalize(raw, mode) {
            Ok(n) => (n.forward.into_owned(), n.route_key.into_owned()),
            Err(rejection) => panic!("{raw:?} rejected in {mode} mode: {rejection}"),
        }
    }

    fn rejected(raw: &str, mode: PathMode) -> PathRejection {
        match normalize(raw, mode) {
            Ok(n) => panic!("{raw:?} accepted in {mode} mode as {n:?}"),
            Err(rejection) => rejection,
        }
    }

    /// Asserts one result for both normalising modes.
    fn assert_both(raw: &str, forward: &str, route_key: &str) {
        for mode in NORMALISING {
            assert_eq!(
                accepted(raw, mode),
                (forward.to_owned(), route_key.to_owned()),
                "{raw:?} in {mode} mode"
            );
        }
    }

    fn assert_off_unchanged(raw: &str) {
        let n = normalize(raw, PathMode::Off).expect("off never rejects");
        assert!(matches!(n.forward, Cow::Borrowed(p) if p == raw), "{raw:?}");
        assert!(
            matches!(n.route_key, Cow::Borrowed(p) if p == raw),
            "{raw:?}"
        );
    }

    // ----- the reported bypasses -------------------------------------------

    #[test]
    fn login_bypasses_resolve_to_the_login_route() {
        for raw in [
            "//auth/login",
            "/x/../auth/login",
            "/./auth/login",
            "/%61uth/login",
            "/auth//login",
            "///auth///login",
            "/%2e/auth/login",
            "/x/%2E%2e/auth/login",
            "/%61%75%74%68/%6C%6f%67%69%6e",
        ] {
            assert_both(raw, "/auth/login", "/auth/login");
            assert_off_unchanged(raw);
        }
    }

    #[test]
    fn path_parameters_are_cut_from_the_route_key_only() {
        assert_both(
            "/auth;jsessionid=1/login",
            "/auth;jsessionid=1/login",
            "/auth/login",
        );
        assert_both(
            "/auth/login;jsessionid=AB12",
            "/auth/login;jsessionid=AB12",
            "/auth/login",
        );
        assert_both(
            "/auth;a=1;b=2/login;c",
            "/auth;a=1;b=2/login;c",
            "/auth/login",
        );
        assert_off_unchanged("/auth;jsessionid=1/login");
    }

    #[test]
    fn dot_dot_semicolon_is_rejected_in_strict_mode() {
        for raw in [
            "/..;/auth/login",
            "/x/..;/auth/login",
            "/.;/auth/login",
            "/a/..;x",
            "/a/.;x=1/b",
        ] {
            assert_eq!(
                rejected(raw, PathMode::Strict),
                PathRejection::DotSegmentWithParameters,
                "{raw:?}"
            );
            assert_off_unchanged(raw);
        }
    }

    #[test]
    fn dot_dot_semicolon_resolves_like_tomcat_in_permissive_mode() {
        let p = PathMode::Permissive;
        assert_eq!(
            accepted("/..;/auth/login", p),
            ("/..;/auth/login".into(), "/auth/login".into())
        );
        assert_eq!(
            accepted("/x/..;/auth/login", p),
            ("/x/..;/auth/login".into(), "/auth/login".into())
        );
        assert_eq!(
            accepted("/admin/public/..;x/secret", p),
            ("/admin/public/..;x/secret".into(), "/admin/secret".into())
        );
        assert_eq!(accepted("/a/.;x/b", p), ("/a/.;x/b".into(), "/a/b".into()));
        assert_eq!(accepted("/a/..;x", p), ("/a/..;x".into(), "/".into()));
        assert_eq!(
            accepted("/a;x/..;y/b", p),
            ("/a;x/..;y/b".into(), "/b".into())
        );
    }

    #[test]
    fn encoded_semicolon_counts_as_parameters() {
        assert_both("/auth%3bx/login", "/auth%3Bx/login", "/auth/login");
        assert_eq!(
            rejected("/..%3B/admin", PathMode::Strict),
            PathRejection::DotSegmentWithParameters
        );
        assert_eq!(
            accepted("/x/..%3B/admin", PathMode::Permissive),
            ("/x/..%3B/admin".into(), "/admin".into())
        );
    }

    #[test]
    fn segments_that_are_only_parameters_merge_in_the_route_key() {
        assert_both("/;jsessionid=X", "/;jsessionid=X", "/");
        assert_both("/app/;jsessionid=X", "/app/;jsessionid=X", "/app/");
        assert_both("/;x/auth/login", "/;x/auth/login", "/auth/login");
        // The `..` is resolved in `forward` against the segment `;`, which is
        // what the origin then receives: it never sees the `..`.
        assert_both("/x/;/../auth/login", "/x/auth/login", "/x/auth/login");
    }

    #[test]
    fn dot_dot_consumes_a_segment_with_parameters() {
        assert_both("/a/..;x/../b", "/a/b", "/a/b");
    }

    // ----- percent-encoding ------------------------------------------------

    #[test]
    fn unreserved_escapes_are_decoded_without_changing_case() {
        assert_both("/a/../%62/./page", "/b/page", "/b/page");
        assert_both("/%41%5a%30%2D%5f%7e%7E", "/AZ0-_~~", "/AZ0-_~~");
        assert_both("/AUTH/Login", "/AUTH/Login", "/AUTH/Login");
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_both("/a/%2e%2e/b", "/b", "/b");
        assert_both("/a/.%2E/b", "/b", "/b");
        assert_both("/%2E", "/", "/");
        assert_both("/a/%2e", "/a/", "/a/");
        assert_both("/%2e%2e%2e", "/...", "/...");
    }

    #[test]
    fn other_escapes_are_kept_with_upper_case_hex() {
        assert_both("/caf%c3%a9", "/caf%C3%A9", "/caf%C3%A9");
        assert_both(
            "/%C3%A9l%C3%A8ves",
            "/%C3%A9l%C3%A8ves",
            "/%C3%A9l%C3%A8ves",
        );
        assert_both("/a%2ab", "/a%2Ab", "/a%2Ab");
        assert_both("/a%20b", "/a%20b", "/a%20b");
        assert_both("/a%3fb%23c", "/a%3Fb%23c", "/a%3Fb%23c");
        // `%25` is a literal percent sign, never decoded again.
        assert_both("/%2561uth/login", "/%2561uth/login", "/%2561uth/login");
        assert_both("/%252F", "/%252F", "/%252F");
    }

    #[test]
    fn encoded_slash_and_backslash() {
        assert_eq!(
            rejected("/a%2Fb", PathMode::Strict),
            PathRejection::EncodedSlash
        );
        assert_eq!(
            rejected("/a%2fb", PathMode::Strict),
            PathRejection::EncodedSlash
        );
        assert_eq!(
            rejected("/auth%2Flogin", PathMode::Strict),
            PathRejection::EncodedSlash
        );
        assert_eq!(
            rejected("/a%5Cb", PathMode::Strict),
            PathRejection::EncodedBackslash
        );
        assert_eq!(
            rejected("/a%5cb", PathMode::Strict),
            PathRejection::EncodedBackslash
        );
        let p = PathMode::Permissive;
        assert_eq!(accepted("/a%2fb", p), ("/a%2Fb".into(), "/a%2Fb".into()));
        assert_eq!(accepted("/a%5cb", p), ("/a%5Cb".into(), "/a%5Cb".into()));
        // Matched as they are: this is not the `/auth/login` route.
        assert_eq!(
            accepted("/auth%2Flogin", p),
            ("/auth%2Flogin".into(), "/auth%2Flogin".into())
        );
        // `%2F` is not a separator, so `..` after it pops the whole segment.
        assert_eq!(accepted("/a%2Fb/../c", p), ("/c".into(), "/c".into()));
        assert_off_unchanged("/a%2Fb");
    }

    #[test]
    fn nul() {
        assert_eq!(rejected("/a%00b", PathMode::Strict), PathRejection::Nul);
        assert_eq!(rejected("/a\0b", PathMode::Strict), PathRejection::Nul);
        let p = PathMode::Permissive;
        assert_eq!(accepted("/a%00b", p), ("/a%00b".into(), "/a%00b".into()));
        assert_eq!(accepted("/a\0b", p), ("/a%00b".into(), "/a%00b".into()));
        assert_off_unchanged("/a%00b");
    }

    #[test]
    fn invalid_escapes() {
        for raw in ["/%zz", "/a%4", "/%", "/a%/b", "/%g0", "/%0g", "/%%41"] {
            assert_eq!(
                rejected(raw, PathMode::Strict),
                PathRejection::InvalidEscape,
                "{raw:?}"
            );
            assert_off_unchanged(raw);
        }
        let p = PathMode::Permissive;
        assert_eq!(accepted("/%zz", p), ("/%25zz".into(), "/%25zz".into()));
        assert_eq!(accepted("/a%4", p), ("/a%254".into(), "/a%254".into()));
        assert_eq!(accepted("/%", p), ("/%25".into(), "/%25".into()));
        // The nested escape cannot turn into a new one on a second pass.
        assert_eq!(accepted("/%%34%31", p), ("/%2541".into(), "/%2541".into()));
        assert_eq!(accepted("/%2541", p), ("/%2541".into(), "/%2541".into()));
    }

    #[test]
    fn backslash() {
        assert_eq!(
            rejected("/auth\\login", PathMode::Strict),
            PathRejection::Backslash
        );
        assert_eq!(
            rejected("/..\\auth", PathMode::Strict),
            PathRejection::Backslash
        );
        let p = PathMode::Permissive;
        assert_eq!(
            accepted("/auth\\login", p),
            ("/auth\\login".into(), "/auth\\login".into())
        );
        assert_eq!(
            accepted("/a/..\\b", p),
            ("/a/..\\b".into(), "/a/..\\b".into())
        );
        assert_off_unchanged("/auth\\login");
    }

    #[test]
    fn raw_control_characters() {
        for raw in ["/a\nb", "/a\rb", "/a\tb", "/a\x1bb", "/a\x7fb"] {
            assert_eq!(
                rejected(raw, PathMode::Strict),
                PathRejection::ControlCharacter,
                "{raw:?}"
            );
            assert_off_unchanged(raw);
        }
        let p = PathMode::Permissive;
        assert_eq!(
            accepted("/a\r\nb", p),
            ("/a%0D%0Ab".into(), "/a%0D%0Ab".into())
        );
        assert_eq!(accepted("/a\x7f", p), ("/a%7F".into(), "/a%7F".into()));
        // Encoded controls other than NUL are ordinary escapes.
        assert_both("/a%0ab", "/a%0Ab", "/a%0Ab");
    }

    #[test]
    fn raw_bytes_not_allowed_in_a_path_are_encoded() {
        assert_both("/café", "/caf%C3%A9", "/caf%C3%A9");
        assert_both("/a b", "/a%20b", "/a%20b");
        assert_both("/a?b#c", "/a%3Fb%23c", "/a%3Fb%23c");
        assert_both(
            "/{x}|\"<>^`[]",
            "/%7Bx%7D%7C%22%3C%3E%5E%60%5B%5D",
            "/%7Bx%7D%7C%22%3C%3E%5E%60%5B%5D",
        );
        assert_both("/ünï/..", "/", "/");
    }

    // ----- slashes and dot segments ----------------------------------------

    #[test]
    fn dot_segments() {
        assert_both("/../../etc", "/etc", "/etc");
        assert_both("/../../etc/passwd", "/etc/passwd", "/etc/passwd");
        assert_both("/a/b/..", "/a/", "/a/");
        assert_both("/a/b/../", "/a/", "/a/");
        assert_both("/a/.", "/a/", "/a/");
        assert_both("/a/./", "/a/", "/a/");
        assert_both("/.", "/", "/");
        assert_both("/..", "/", "/");
        assert_both("/a/..", "/", "/");
        assert_both("/a/./b/../c/./d", "/a/c/d", "/a/c/d");
        assert_both("/a//..", "/", "/");
        assert_both("/a/b//../c", "/a/c", "/a/c");
    }

    #[test]
    fn dots_inside_names_are_names() {
        for raw in [
            "/...",
            "/.a",
            "/a.",
            "/..a",
            "/a..",
            "/a/.../b",
            "/index.html",
            "/.well-known/x",
        ] {
            assert_both(raw, raw, raw);
            let n = normalize(raw, PathMode::Strict).expect("accepted");
            assert!(matches!(n.forward, Cow::Borrowed(_)), "{raw:?}");
        }
    }

    #[test]
    fn slashes() {
        assert_both("//", "/", "/");
        assert_both("///a", "/a", "/a");
        assert_both("/a//", "/a/", "/a/");
        assert_both("/a/", "/a/", "/a/");
        assert_both("/auth/login/", "/auth/login/", "/auth/login/");
        assert_off_unchanged("//auth/login");
    }

    // ----- shape of the input ----------------------------------------------

    #[test]
    fn empty_and_relative_paths() {
        for mode in NORMALISING {
            assert_eq!(rejected("", mode), PathRejection::Empty);
            for raw in [
                "auth/login",
                "a",
                ".",
                "..",
                "%2F",
                "\\auth",
                "http://x/",
                "**",
            ] {
                assert_eq!(rejected(raw, mode), PathRejection::NotAbsolute, "{raw:?}");
            }
        }
        assert_off_unchanged("");
        assert_off_unchanged("auth/login");
    }

    #[test]
    fn asterisk_form_is_left_alone() {
        for mode in MODES {
            let n = normalize("*", mode).expect("accepted");
            assert_eq!((n.forward.as_ref(), n.route_key.as_ref()), ("*", "*"));
        }
    }

    #[test]
    fn off_mode_never_rejects_nor_changes() {
        for raw in ["", "x", "/a/../b", "/%zz", "/a\0b", "/..;/a", "/a\\b", "/é"] {
            assert_off_unchanged(raw);
        }
    }

    // ----- allocation ------------------------------------------------------

    #[test]
    fn common_paths_take_the_borrowed_fast_path() {
        for raw in [
            "/",
            "/auth/login",
            "/ent/api/messages",
            "/ent/api/messages/",
            "/static/app-1.2.3.min.js",
            "/~user/a_b-c",
            "/api/v1/users/42:archive",
            "/a@b!$&'()*+,=",
        ] {
            for mode in MODES {
                let n = normalize(raw, mode).expect("accepted");
                assert!(matches!(n.forward, Cow::Borrowed(_)), "{raw:?} {mode}");
                assert!(matches!(n.route_key, Cow::Borrowed(_)), "{raw:?} {mode}");
                assert_eq!((n.forward.as_ref(), n.route_key.as_ref()), (raw, raw));
            }
        }
    }

    #[test]
    fn canonical_escapes_still_borrow() {
        let n = normalize("/%C3%A9l%C3%A8ves/notes", PathMode::Strict).expect("accepted");
        assert!(matches!(n.forward, Cow::Borrowed(_)));
        assert!(matches!(n.route_key, Cow::Borrowed(_)));
    }

    #[test]
    fn parameters_borrow_the_forward_path() {
        let n = normalize("/auth;jsessionid=1/login", PathMode::Strict).expect("accepted");
        assert!(matches!(n.forward, Cow::Borrowed(_)));
        assert_eq!(n.route_key, "/auth/login");
    }

    // ----- configuration and messages --------------------------------------

    #[test]
    fn modes_parse_from_configuration() {
        assert_eq!(PathMode::default(), PathMode::Strict);
        for mode in MODES {
            assert_eq!(mode.as_str().parse::<PathMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        let error = "Strict".parse::<PathMode>().expect_err("case matters");
        assert!(error.to_string().contains("strict, permissive or off"));
    }

    #[test]
    fn rejections_have_distinct_messages_and_labels() {
        let all = [
            PathRejection::Empty,
            PathRejection::NotAbsolute,
            PathRejection::EncodedSlash,
            PathRejection::EncodedBackslash,
            PathRejection::Backslash,
            PathRejection::Nul,
            PathRejection::ControlCharacter,
            PathRejection::InvalidEscape,
            PathRejection::DotSegmentWithParameters,
        ];
        let messages: std::collections::HashSet<String> =
            all.iter().map(|r| r.to_string()).collect();
        let labels: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(messages.len(), all.len());
        assert_eq!(labels.len(), all.len());
        assert!(messages.iter().all(|m| m.contains("path")));
    }

    // ----- models for the properties ---------------------------------------

    /// A lenient application server: decodes every escape, reads `\` as `/`,
    /// cuts `;` parameters from every segment, merges slashes, then removes
    /// dot segments. Written independently of the module.
    fn origin_view(path: &str) -> String {
        let decoded = String::from_utf8_lossy(&percent_decode_all(path)).replace('\\', "/");
        let without_parameters: Vec<&str> = decoded
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or(""))
            .collect();
        remove_dot_segments(&merge_slashes(&without_parameters.join("/")))
    }

    fn percent_decode_all(path: &str) -> Vec<u8> {
        let bytes = path.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if let (b'%', Some(&[high, low])) = (bytes[i], bytes.get(i + 1..i + 3)) {
                if let (Some(high), Some(low)) =
                    (char::from(high).to_digit(16), char::from(low).to_digit(16))
                {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    fn merge_slashes(path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }

    /// RFC 3986 section 5.2.4, step by step as the RFC writes it.
    fn remove_dot_segments(path: &str) -> String {
        let mut input = path.to_owned();
        let mut output = String::new();
        let pop = |output: &mut String| match output.rfind('/') {
            Some(at) => output.truncate(at),
            None => output.clear(),
        };
        while !input.is_empty() {
            if input.starts_with("../") {
                input.drain(..3);
            } else if input.starts_with("./") {
                input.drain(..2);
            } else if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".to_owned();
            } else if input.starts_with("/../") {
                input.replace_range(..4, "/");
                pop(&mut output);
            } else if input == "/.." {
                input = "/".to_owned();
                pop(&mut output);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let skip = usize::from(input.starts_with('/'));
                let end = input[skip..].find('/').map_or(input.len(), |at| at + skip);
                output.push_str(&input[..end]);
                input.drain(..end);
            }
        }
        output
    }

    /// What strict mode should forward for a path it accepts, built from the
    /// rules: percent-normalise, merge slashes, RFC 3986 dot removal.
    fn reference_forward(raw: &str) -> String {
        let bytes = raw.as_bytes();
        let mut normalised = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte == b'%' {
                let value = u8::from_str_radix(&raw[i + 1..i + 3], 16).expect("accepted escape");
                if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                    normalised.push(char::from(value));
                } else {
                    normalised.push_str(&format!("%{value:02X}"));
                }
                i += 3;
                continue;
            }
            if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte) {
                normalised.push(char::from(byte));
            } else {
                normalised.push_str(&format!("%{byte:02X}"));
            }
            i += 1;
        }
        remove_dot_segments(&merge_slashes(&normalised))
    }

    #[test]
    fn origin_model_sanity() {
        assert_eq!(origin_view("/..;/auth/login"), "/auth/login");
        assert_eq!(origin_view("/a\\..\\auth/login"), "/auth/login");
        assert_eq!(origin_view("/auth%2flogin"), "/auth/login");
        assert_eq!(origin_view("/%61uth;x/login/"), "/auth/login/");
        assert_eq!(origin_view("/x/;/../auth"), "/auth");
        assert_eq!(origin_view("/%zz/%4"), "/%zz/%4");
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    }

    // ----- properties ------------------------------------------------------

    /// Pieces that exercise every rule, so that random paths hit the
    /// interesting cases far more often than uniform bytes would. Most are
    /// accepted by strict mode, so that its accepted paths are varied too.
    fn path_token() -> impl Strategy<Value = &'static str> {
        let accepted = prop::sample::select(vec![
            "/",
            "//",
            ".",
            "..",
            "/.",
            "/..",
            "a",
            "b",
            "x",
            "auth",
            "login",
            "api",
            "v1",
            "admin",
            "/auth",
            "/login",
            "/auth/login",
            "/admin",
            "/api/v1/",
            "/%61uth",
            "%6Cogin",
            ";",
            ";x=1",
            ";jsessionid=AB",
            "%2e",
            "%2E",
            "%2e%2e",
            "%61",
            "%41",
            "%25",
            "%3B",
            "%3b",
            "%C3%A9",
            "%c3%a9",
            "é",
            " ",
            "?",
            "#",
            "~",
            "%7e",
            "-",
            "%2D",
            "|",
            "%252F",
            "%0a",
            ":",
            "@",
        ]);
        // Each of these is refused by strict mode.
        let refused = prop::sample::select(vec![
            "%2F", "%2f", "%5C", "%5c", "%00", "%zz", "%4", "%", "\\", "\n", "\0", "%%34%31",
        ]);
        prop_oneof![9 => accepted, 1 => refused]
    }

    fn token_path() -> impl Strategy<Value = String> {
        (
            prop::bool::weighted(0.9),
            prop::collection::vec(path_token(), 0..16),
        )
            .prop_map(|(absolute, tokens)| {
                let mut path = if absolute {
                    "/".to_owned()
                } else {
                    String::new()
                };
                path.extend(tokens);
                path
            })
    }

    /// Paths built segment by segment from names near the route prefixes,
    /// so that many of them land on `/auth/login`, `/admin` or `/api/v1/`
    /// by way of dots, escapes, parameters and empty segments.
    fn route_path() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "",
            "",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            "auth",
            "login",
            "admin",
            "api",
            "v1",
            "x",
            "%61uth",
            "logi%6E",
            "%41dmin",
            "auth;x",
            "login;jsessionid=1",
            ";",
            ";x",
            "..;",
            ".;x",
            "..%3B",
            "auth%3Bx",
            "%2e%2e;",
            "a..",
            "...",
            "v1%2F",
            "adm%5Cin",
            "log\\in",
        ]);
        (prop::collection::vec(segment, 1..9), prop::bool::ANY).prop_map(|(segments, trailing)| {
            let mut path = String::new();
            for segment in segments {
                path.push('/');
                path.push_str(segment);
            }
            if trailing {
                path.push('/');
            }
            path
        })
    }

    /// Spellings of `/auth/login` mixed with junk segments: the bypasses of
    /// the report and their combinations.
    fn login_path() -> impl Strategy<Value = String> {
        let junk = prop::sample::select(vec![
            "", ".", "..", "%2e%2e", "x", "x;y", ";", "..;", ".;", "admin", "api", "%2E",
        ]);
        let auth = prop::sample::select(vec![
            "auth",
            "%61uth",
            "%61%75%74%68",
            "auth;x=1",
            "auth%3B",
        ]);
        let between = prop::sample::select(vec!["", ".", "%2e", "x/..", "x;y/..", ";", ";x", "//"]);
        let login =
            prop::sample::select(vec!["login", "logi%6e", "login;jsessionid=1", "login%3bx"]);
        (
            prop::collection::vec(junk.clone(), 0..4),
            auth,
            between,
            login,
            prop::collection::vec(junk, 0..3),
        )
            .prop_map(|(before, auth, between, login, after)| {
                let mut path = String::new();
                for segment in before.iter().chain([&auth, &between, &login]).chain(&after) {
                    path.push('/');
                    path.push_str(segment);
                }
                path
            })
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => token_path(),
            4 => route_path(),
            3 => login_path(),
            1 => any::<String>(),
            1 => prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            1 => "/[ -~]{0,40}",
        ]
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 4000,
            max_shrink_iters: 2000,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// (a) A normalised path normalises to itself, with the same key.
        #[test]
        fn normalization_is_idempotent(raw in any_path()) {
            for mode in MODES {
                if let Ok(first) = normalize(&raw, mode) {
                    let again = normalize(&first.forward, mode);
                    prop_assert_eq!(again.as_ref(), Ok(&first), "{:?} in {} mode", raw, mode);
                }
            }
        }

        /// (b) No input panics, in any mode.
        #[test]
        fn never_panics(raw in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let lossy = String::from_utf8_lossy(&bytes);
            for mode in MODES {
                let _ = normalize(&raw, mode);
                let _ = normalize(&lossy, mode);
                let _ = normalize(&format!("/{raw}"), mode);
                let _ = normalize(&format!("/{lossy}"), mode);
            }
        }

        /// (c) The route a request matches is the one a lenient origin serves
        /// for the forwarded path. Strict never forwards `%2F`, `%5C` or `\`;
        /// permissive is checked when it forwards none of them.
        #[test]
        fn route_key_matches_what_the_origin_serves(raw in any_path()) {
            for mode in NORMALISING {
                let Ok(n) = normalize(&raw, mode) else { continue };
                let forward_upper = n.forward.to_ascii_uppercase();
                let ambiguous = forward_upper.contains("%2F")
                    || forward_upper.contains("%5C")
                    || n.forward.contains('\\');
                if mode == PathMode::Strict {
                    prop_assert!(!ambiguous, "strict forwarded {:?} for {:?}", n.forward, raw);
                }
                if ambiguous {
                    continue;
                }
                let origin = origin_view(&n.forward);
                for prefix in PREFIXES {
                    prop_assert_eq!(
                        n.route_key.starts_with(prefix),
                        origin.starts_with(prefix),
                        "{} mode, raw {:?}, forward {:?}, route_key {:?}, origin {:?}, prefix {:?}",
                        mode, raw, n.forward, n.route_key, origin, prefix
                    );
                }
            }
        }

        /// (d) The route key is free of empty and dot segments (and of
        /// parameters), whatever the input.
        #[test]
        fn route_key_is_clean(raw in any_path()) {
            for mode in NORMALISING {
                let Ok(n) = normalize(&raw, mode) else { continue };
                let key = n.route_key.as_ref();
                if key == "*" {
                    continue;
                }
                prop_assert!(key.starts_with('/'), "{:?} -> {:?}", raw, key);
                for bad in ["//", "/./", "/../"] {
                    prop_assert!(!key.contains(bad), "{:?} -> {:?}", raw, key);
                }
                prop_assert!(!key.ends_with("/.") && !key.ends_with("/.."), "{:?} -> {:?}", raw, key);
                prop_assert!(!contains_parameters(key), "{:?} -> {:?}", raw, key);
            }
        }

        /// The forwarded path is valid ASCII for a request line, and the
        /// views borrow exactly when they equal the raw path.
        #[test]
        fn forward_is_safe_to_send_and_borrows_when_unchanged(raw in any_path()) {
            for mode in NORMALISING {
                let Ok(n) = normalize(&raw, mode) else { continue };
                if raw != "*" {
                    prop_assert!(
                        n.forward.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#'),
                        "{:?} -> {:?}", raw, n.forward
                    );
                }
                prop_assert_eq!(matches!(n.forward, Cow::Borrowed(_)), n.forward == raw.as_str());
                prop_assert_eq!(matches!(n.route_key, Cow::Borrowed(_)), n.route_key == raw.as_str());
            }
        }

        /// Strict forwards what the written rules say, checked against the
        /// RFC 3986 algorithm written out literally.
        #[test]
        fn strict_forward_follows_the_reference(raw in any_path()) {
            if let Ok(n) = normalize(&raw, PathMode::Strict) {
                if raw != "*" {
                    prop_assert_eq!(n.forward.as_ref(), reference_forward(&raw), "{:?}", raw);
                }
            }
        }

        /// Permissive accepts every absolute path, and agrees with strict
        /// wherever strict accepts.
        #[test]
        fn permissive_extends_strict(raw in any_path()) {
            let permissive = normalize(&raw, PathMode::Permissive);
            prop_assert_eq!(permissive.is_ok(), raw.starts_with('/') || raw == "*", "{:?}", raw);
            if let Ok(strict) = normalize(&raw, PathMode::Strict) {
                prop_assert_eq!(permissive, Ok(strict));
            }
        }
    }
}
