//! The configuration loader on any text: `rempart::config::from_str_with_env`, the same code
//! as `rempart::config::load` after the file is read (expansion, YAML, raw layer, validation,
//! referenced files), with a fixed environment so that runs are reproducible.
//!
//! Invariants (src/config/mod.rs docs: "Nothing here panics on any input"):
//! - no input panics; the answer is a configuration or errors;
//! - errors are never an empty list, every one has a message, and they are sorted by line.
//!
//! Referenced files (certificates, pages, secrets, tenant lists) are read relative to the
//! current directory and mostly do not exist: that is an error like any other. Inputs that
//! could name a special file (`/dev/zero` would be read forever, a FIFO in `/run` would block)
//! are skipped, as are YAML escapes that could spell such a name: see [`may_name_special_file`].
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rempart::config::{env, from_str_with_env};

fn lookup(name: &str) -> Option<String> {
    match name {
        "PORT" => Some("8080".into()),
        "ADDR" => Some("127.0.0.1:18081".into()),
        "SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
        "TOKEN" => Some("t0ken".into()),
        "EMPTY" => Some(String::new()),
        "MULTI" => Some("a\nb: c".into()),
        _ => None,
    }
}

/// Top-level directories that hold devices, kernel files, FIFOs or sockets.
const SPECIAL: [&str; 5] = ["dev", "proc", "sys", "run", "tmp"];
/// The same under `/var` (`/var/run` and `/var/lock` lead to `/run`).
const SPECIAL_IN_VAR: [&str; 4] = ["run", "lock", "spool", "tmp"];

/// Whether a path-like token may lead into one of the [`SPECIAL`] directories: an absolute
/// path starting there, or a path climbing with `..` that names one of them anywhere.
/// (A relative path without `..` stays under the current directory, the fuzz crate.)
fn risky_path(token: &str) -> bool {
    let segments: Vec<&str> = token
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let special = |s: &&str| SPECIAL.contains(s) || SPECIAL_IN_VAR.contains(s);
    if segments.contains(&"..") {
        return segments.iter().any(special);
    }
    token.starts_with('/')
        && match segments.as_slice() {
            ["var", next, ..] => SPECIAL_IN_VAR.contains(next),
            [first, ..] => SPECIAL.contains(first),
            [] => false,
        }
}

/// `line` without its comment: from a `#` that starts the line or follows whitespace. When
/// such a `#` is in fact inside a scalar, whatever follows it is in a path component holding
/// `#`, which exists nowhere here: the path cannot reach a special file through it.
fn uncommented(line: &str) -> &str {
    let bytes = line.as_bytes();
    let cut = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && bytes[..i].last().is_none_or(|b| b.is_ascii_whitespace()));
    &line[..cut.unwrap_or(line.len())]
}

/// Whether the configuration could make the loader read a special file. Tokens are cut at
/// whitespace and YAML punctuation, which only finds more candidates; double-quoted escapes
/// that can produce `/` or any letter (`\/`, `\x`, `\u`, `\U`, an escaped line break...) are
/// refused outright. Comments are left out, so the example files, which mention `/run` and
/// `/tmp` in comments, are fuzzed.
fn may_name_special_file(text: &str) -> bool {
    // libyaml's line breaks: LF, CR, NEL, LS, PS.
    text.split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .map(uncommented)
        // A `\` ending a line is an escaped line break in a double-quoted scalar.
        .any(|line| line.ends_with('\\') || line_may_name_special_file(line))
}

fn line_may_name_special_file(text: &str) -> bool {
    let escape = text
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\\' && !matches!(w[1], b'n' | b't' | b'r' | b'"' | b'\\' | b'0' | b' '));
    escape
        || text
            .split(|c: char| c.is_whitespace() || "\"',[]{}:#=&*!|>".contains(c))
            .any(risky_path)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What the YAML parser will see, after `${...}` expansion (defaults are inserted as written).
    let expanded = match env::expand(text, lookup) {
        Ok(expanded) => expanded.text,
        Err(_) => text.to_owned(),
    };
    if may_name_special_file(text) || may_name_special_file(&expanded) {
        return;
    }
    match from_str_with_env(text, Path::new("fuzz.yaml"), lookup) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err with no error for {text:?}");
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "error without a message: {e:?}");
            }
            assert!(
                errors
                    .0
                    .windows(2)
                    .all(|w| w[0].line.unwrap_or(0) <= w[1].line.unwrap_or(0)),
                "errors not sorted by line: {errors:?}"
            );
            let _ = errors.to_string();
        }
    }
});
