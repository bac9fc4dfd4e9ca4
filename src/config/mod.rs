//! Configuration: the YAML file, its value syntax, validation with key paths and lines.
//!
//! Two layers (STYLE.md point 2): [`raw`] is the serde shape of the file (unknown fields denied,
//! leaf values kept as text); `validate` turns it into the [`model`] types, which cannot hold a bad
//! value, collecting every error with its key path and line. The steps of [`load`]:
//!
//! 1. read the file;
//! 2. expand `${NAME}` / `${NAME:-default}` ([`env`]);
//! 3. parse the YAML (syntax errors carry serde_yaml's line);
//! 4. deserialize the raw layer (a shape error names its key path, located by [`lines`]);
//! 5. validate values, resolve names between sections, read certificates, keys and pages.
//!
//! Relative file paths (certificates, keys, pages, access log) are relative to the current
//! working directory. Nothing here panics on any input, and nothing depends on global state, so
//! the same call serves start-up, `-t`, reload and a dry run.

pub mod certs;
pub mod env;
pub mod lines;
pub mod model;
pub mod raw;
mod validate;
pub mod values;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

use lines::LineIndex;

/// One problem in a configuration file, located by key path and (where known) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a file, sorted by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(file: &Path, line: Option<usize>, path: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line,
            path: path.to_string(),
            message: message.into(),
        }])
    }

    /// Sorts by line, keeping the order of discovery among errors on the same line; errors
    /// without a line (about the file as a whole) come first.
    fn sorted(mut self) -> Self {
        self.0.sort_by_key(|e| e.line.unwrap_or(0));
        self
    }
}

/// Reads, expands, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(path, None, "", certs::read_error(path, &e)))?;
    from_str(&text, path)
}

/// Same as [`load`] on text already read; `source` names the file in errors and in
/// [`Config::source`]. Variables come from the process environment.
pub fn from_str(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
    from_str_with_env(text, source, |name| std::env::var(name).ok())
}

/// Same as [`from_str`], with variables looked up by `lookup` instead of the process environment.
pub fn from_str_with_env(
    text: &str,
    source: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let expanded = env::expand(text, lookup).map_err(|errors| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|e| ConfigError {
                    file: source.to_path_buf(),
                    line: Some(e.line),
                    path: String::new(),
                    message: e.message,
                })
                .collect(),
        )
        .sorted()
    })?;

    let mut document: serde_yaml::Value =
        serde_yaml::from_str(&expanded.text).map_err(|e| yaml_error(source, &expanded, &e))?;
    if document.is_null() {
        // An empty file: report the missing sections rather than a type error.
        document = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
    }

    let index = LineIndex::build(&expanded.text);
    let raw: raw::RawConfig = serde_path_to_error::deserialize(&document).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let line = index.line(&path).map(|l| expanded.original_line(l));
        ConfigErrors::one(source, line, &path, e.inner().to_string())
    })?;

    let mut ctx = validate::Ctx::new(source, &index, &expanded);
    let mut config = validate::build(raw, &mut ctx, source, masked(&document));
    if ctx.errors.is_empty() {
        let mut warnings = ctx.warnings;
        warnings.sort_by_key(|w| w.line);
        config.warnings = warnings.iter().map(ToString::to_string).collect();
        Ok(config)
    } else {
        Err(ConfigErrors(ctx.errors).sorted())
    }
}

/// A YAML syntax error, at serde_yaml's line, without the location repeated in the message.
fn yaml_error(source: &Path, expanded: &env::Expanded, e: &serde_yaml::Error) -> ConfigErrors {
    let mut message = e.to_string();
    let line = e.location().map(|loc| {
        let at = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(pos) = message.find(&at) {
            message.replace_range(pos..pos + at.len(), "");
        }
        expanded.original_line(loc.line())
    });
    ConfigErrors::one(source, line, "", message)
}

/// The document as JSON, with `admin.token` and `login_queues.*.secret` / `.secrets` replaced
/// by `"***"`.
fn masked(document: &serde_yaml::Value) -> serde_json::Value {
    let mut json = to_json(document);
    let hide = |v: &mut serde_json::Value| {
        let empty = match v {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            _ => false,
        };
        if !empty {
            *v = serde_json::Value::String("***".into());
        }
    };
    if let Some(token) = json.pointer_mut("/admin/token") {
        hide(token);
    }
    if let Some(serde_json::Value::Object(queues)) = json.pointer_mut("/login_queues") {
        for queue in queues.values_mut() {
            if let Some(secret) = queue.get_mut("secret") {
                hide(secret);
            }
            match queue.get_mut("secrets") {
                Some(serde_json::Value::Array(list)) => list.iter_mut().for_each(hide),
                Some(other) => hide(other),
                None => {}
            }
        }
    }
    json
}

fn to_json(v: &serde_yaml::Value) -> serde_json::Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_u64() {
                i.into()
            } else if let Some(i) = n.as_i64() {
                i.into()
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Y::String(s) => serde_json::Value::String(s.clone()),
        Y::Sequence(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Y::Mapping(map) => {
            serde_json::Value::Object(map.iter().map(|(k, v)| (key_text(k), to_json(v))).collect())
        }
        Y::Tagged(tagged) => to_json(&tagged.value),
    }
}

fn key_text(k: &serde_yaml::Value) -> String {
    match k {
        serde_yaml::Value::String(s) => s.clone(),
        other => match to_json(other) {
            serde_json::Value::String(s) => s,
            json => json.to_string(),
        },
    }
}

#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;
