//! `${NAME}` and `${NAME:-default}` expansion of the configuration text, before YAML parsing.
//!
//! Rules, kept deliberately simple:
//! - `${NAME}` is replaced by the variable's value; an unset variable is an error naming the
//!   variable and the line. `${NAME:-default}` uses `default` (possibly empty) when `NAME` is unset.
//!   The default ends at the first `}` and is inserted as written (no nested expansion).
//! - NAME is `[A-Za-z_][A-Za-z0-9_]*`; a `${` must be closed on the same line.
//! - `$` not followed by `{` is kept as it is. `$$` is not an escape: `$${X}` gives `$` followed by
//!   the value of `X`.
//! - Lines whose first non-blank character is `#` (whole-line comments) are left untouched, so a
//!   commented-out setting never needs its variable. Values are inserted raw: quote the YAML
//!   scalar (`token: "${TOKEN}"`) if a value may contain YAML syntax such as `: ` or ` #`.
//!
//! The environment is reached through a lookup closure so that tests never touch the process
//! environment.

/// The expanded text and, for each of its lines, the line of the original text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// `line_map[i]` is the original (1-based) line of line `i + 1` of `text`. Lines differ only
    /// when a value contains a newline.
    pub line_map: Vec<usize>,
}

impl Expanded {
    /// The original line of a (1-based) line of the expanded text.
    pub fn original_line(&self, line: usize) -> usize {
        match line.checked_sub(1).and_then(|i| self.line_map.get(i)) {
            Some(&orig) => orig,
            None => self.line_map.last().copied().unwrap_or(line),
        }
    }
}

/// A problem with one `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// 1-based line in the original text.
    pub line: usize,
    pub message: String,
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Expands every `${...}` of `text` with `lookup`; reports every bad reference, not just the first.
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<EnvError>> {
    let mut out = String::with_capacity(text.len());
    let mut line_map = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let start = out.len();
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            expand_line(line, number, &lookup, &mut out, &mut errors);
        }
        let piece = &out[start..];
        let mut count = piece.matches('\n').count();
        if !piece.ends_with('\n') {
            count += 1;
        }
        line_map.extend(std::iter::repeat_n(number, count));
    }
    if errors.is_empty() {
        Ok(Expanded {
            text: out,
            line_map,
        })
    } else {
        Err(errors)
    }
}

fn expand_line(
    line: &str,
    number: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<EnvError>,
) {
    let mut rest = line;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(close) = after.find('}') else {
            errors.push(EnvError {
                line: number,
                message: format!(
                    "unterminated \"${{\" (write ${{NAME}} or ${{NAME:-default}}): {:?}",
                    rest[at..].trim_end()
                ),
            });
            out.push_str(&rest[at..]);
            return;
        };
        let inner = &after[..close];
        rest = &after[close + 1..];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if !valid_name(name) {
            errors.push(EnvError {
                line: number,
                message: format!("invalid environment variable name {name:?} in \"${{{inner}}}\""),
            });
            continue;
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => errors.push(EnvError {
                line: number,
                message: format!(
                    "environment variable {name} is not set (write ${{{name}:-}} to allow it empty)"
                ),
            }),
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_defaults() {
        let e = expand(
            "a: ${TOKEN}\nb: ${NOPE:-dflt}\nc: ${NOPE:-}\nd: ${EMPTY:-x}\ne: x${TOKEN}${TOKEN}\n",
            env,
        )
        .unwrap();
        assert_eq!(e.text, "a: s3cret\nb: dflt\nc: \nd: \ne: xs3crets3cret\n");
        assert_eq!(e.line_map, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn dollar_is_not_special() {
        let e = expand("a: $HOME $ $$ $${TOKEN} $}\n", env).unwrap();
        assert_eq!(e.text, "a: $HOME $ $$ $s3cret $}\n");
    }

    #[test]
    fn unset_and_bad_references_are_all_reported_with_lines() {
        let errors = expand(
            "a: 1\nb: ${UNSET}\nc: ${bad-name} ${ALSO_UNSET}\nd: ${OPEN\n",
            env,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.contains("UNSET is not set"));
        assert_eq!(errors[1].line, 3);
        assert!(errors[1]
            .message
            .contains("invalid environment variable name"));
        assert_eq!(errors[2].line, 3);
        assert!(errors[2].message.contains("ALSO_UNSET"));
        assert_eq!(errors[3].line, 4);
        assert!(errors[3].message.contains("unterminated"));
        assert!(expand("x: ${}\n", env).is_err());
    }

    #[test]
    fn whole_line_comments_are_left_alone() {
        let e = expand("  # token: ${UNSET}\na: b # ${TOKEN}\n", env).unwrap();
        assert_eq!(e.text, "  # token: ${UNSET}\na: b # s3cret\n");
    }

    #[test]
    fn line_map_follows_multiline_values() {
        let e = expand("a: ${MULTI}\nb: 2", env).unwrap();
        assert_eq!(e.text, "a: a\nb\nb: 2");
        assert_eq!(e.line_map, vec![1, 1, 2]);
        assert_eq!(e.original_line(3), 2);
        assert_eq!(e.original_line(99), 2);
        assert_eq!(e.original_line(0), 2);
        let empty = expand("", env).unwrap();
        assert_eq!(empty.original_line(1), 1);
    }
}
