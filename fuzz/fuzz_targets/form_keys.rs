//! `rempart::shield::keys`: what a limit counts by, on request bodies, query strings, cookies
//! and content types made of the input.
//!
//! Input: byte 0 is the length of the field name, then the name, then the body (also used as
//! a query string, as `Cookie` and `Content-Type` lines split at `\n`).
//!
//! Invariants (src/shield/keys.rs docs and property tests):
//! - no input panics, for every body kind and both match modes;
//! - a body of kind Other is Unreadable; a urlencoded body reads as the same query string;
//! - a `Field::Value` is an account key already (`account_key` of it is itself);
//! - `account_key` is idempotent, UTF-8, and trimmed;
//! - `percent_decode` never grows its input, and agrees with `percent_decode_strict` whenever
//!   that one accepts;
//! - `cookie_value` is non-empty and part of one `Cookie` line;
//! - `combine` of one source is that source.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rempart::shield::keys::{
    account_key, body_kind, combine, cookie_value, form_field, percent_decode,
    percent_decode_strict, query_field, BodyKind, Field, FieldMatch,
};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_account_key(raw: &[u8]) {
    let once = account_key(raw);
    let text = std::str::from_utf8(&once)
        .unwrap_or_else(|_| panic!("account_key of {raw:?} is not UTF-8: {once:?}"));
    assert_eq!(text.trim(), text, "account_key of {raw:?} is not trimmed");
    assert_eq!(
        account_key(&once),
        once,
        "account_key is not idempotent on {:?} -> {text:?}",
        String::from_utf8_lossy(raw)
    );
}

fn check_field(field: &Field, what: &str) {
    if let Field::Value(v) = field {
        assert_eq!(
            &account_key(v),
            v,
            "{what}: value {v:?} is not an account key"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len).min(rest.len());
    let (name, body) = rest.split_at(len);
    let name = String::from_utf8_lossy(name);

    for m in [FieldMatch::ANY_CASE, FieldMatch::EXACT] {
        let query = query_field(body, &name, m);
        check_field(&query, "query");
        for kind in [BodyKind::UrlEncoded, BodyKind::Json, BodyKind::Other] {
            let form = form_field(kind, body, &name, m);
            check_field(&form, "form");
            match kind {
                BodyKind::UrlEncoded => assert_eq!(form, query, "urlencoded body vs query"),
                BodyKind::Other => assert_eq!(form, Field::Unreadable),
                BodyKind::Json => {}
            }
        }
        assert_eq!(combine([query.clone()]), query);
        assert_eq!(
            combine([Field::Absent, query.clone(), Field::Absent]),
            query
        );
        assert_eq!(
            combine([query.clone(), Field::Unreadable]),
            Field::Unreadable
        );
    }

    let lax = percent_decode(body);
    assert!(lax.len() <= body.len(), "percent_decode grew {body:?}");
    if let Some(strict) = percent_decode_strict(body) {
        assert_eq!(strict, lax, "strict and lax decoding disagree on {body:?}");
    }

    check_account_key(body);
    check_account_key(name.as_bytes());
    check_account_key(&lax);
    assert_eq!(Field::of_text(Some(body)), Field::Value(account_key(body)));

    // Headers: each line that is a header value is one Cookie line and one Content-Type line.
    let mut headers = HeaderMap::new();
    let mut lines = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(http::header::COOKIE, value.clone());
            headers.append(http::header::CONTENT_TYPE, value);
            lines.push(line);
        }
    }
    for cookie_name in [&*name, "SESSION", "JSESSIONID"] {
        if let Some(found) = cookie_value(&headers, cookie_name) {
            assert!(!found.is_empty());
            assert!(
                lines.iter().any(|l| contains(l, found)),
                "cookie {cookie_name:?} = {found:?} is in no line"
            );
        }
    }
    let kind = body_kind(&headers);
    if headers.get(http::header::CONTENT_TYPE).is_none() {
        assert_eq!(kind, BodyKind::Other);
    }
    // The body read as the kind its own lines declare.
    let field = form_field(kind, body, &name, FieldMatch::default());
    check_field(&field, "form by content type");
});
