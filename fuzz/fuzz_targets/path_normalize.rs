//! `rempart::path::normalize` on any request path, in every mode.
//!
//! Invariants (src/path.rs, module docs and its property tests):
//! - no input panics;
//! - idempotence: normalising `forward` again gives the same `forward` and `route_key`;
//! - in strict and permissive mode the route key starts with `/` and holds no `//`, `/./`,
//!   `/../`, nor ends with `/.` or `/..`; the forwarded path is visible ASCII without `?`/`#`;
//! - permissive accepts exactly the paths starting with `/` (and `*`), and agrees with strict
//!   wherever strict accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rempart::path::{normalize, PathMode};

const MODES: [PathMode; 3] = [PathMode::Strict, PathMode::Permissive, PathMode::Off];

fn check(raw: &str) {
    for mode in MODES {
        let Ok(first) = normalize(raw, mode) else {
            continue;
        };
        let again = normalize(&first.forward, mode).unwrap_or_else(|why| {
            panic!(
                "{mode} mode: {raw:?} -> {:?}, which is then refused: {why}",
                first.forward
            )
        });
        assert_eq!(
            again.forward, first.forward,
            "{mode} mode, forward of {raw:?}"
        );
        assert_eq!(
            again.route_key, first.route_key,
            "{mode} mode, route_key of {raw:?}"
        );

        if mode == PathMode::Off || raw == "*" {
            continue;
        }
        let key: &str = &first.route_key;
        assert!(
            key.starts_with('/'),
            "{mode} mode: {raw:?} -> route_key {key:?}"
        );
        for bad in ["//", "/./", "/../"] {
            assert!(
                !key.contains(bad),
                "{mode} mode: {raw:?} -> route_key {key:?} has {bad:?}"
            );
        }
        assert!(
            !key.ends_with("/.") && !key.ends_with("/.."),
            "{mode} mode: {raw:?} -> route_key {key:?} ends with a dot segment"
        );
        assert!(
            first
                .forward
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#'),
            "{mode} mode: {raw:?} -> forward {:?} is not safe on a request line",
            first.forward
        );
    }

    let permissive = normalize(raw, PathMode::Permissive);
    assert_eq!(
        permissive.is_ok(),
        raw.starts_with('/') || raw == "*",
        "permissive on {raw:?}: {permissive:?}"
    );
    if let Ok(strict) = normalize(raw, PathMode::Strict) {
        assert_eq!(
            permissive,
            Ok(strict),
            "permissive and strict disagree on {raw:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    check(&raw);
    // Most request paths start with `/`; make sure mutated inputs get past that check.
    if !raw.starts_with('/') {
        check(&format!("/{raw}"));
    }
});
