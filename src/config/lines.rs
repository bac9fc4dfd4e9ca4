//! Key path -> line index of a YAML text, so that errors found after parsing still carry a line.
//!
//! Paths are written like `serde_path_to_error` writes them: `upstreams.ent.datacenters[0]`.
//! A mapping entry is located at its key, a sequence item at its first token.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where each key path of a YAML text starts (1-based lines).
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`. A text that yaml-rust2 cannot fully parse gives the part it understood.
    pub fn build(text: &str) -> LineIndex {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // A syntax error stops the index where it is; serde_yaml reports the error itself.
        let _ = parser.load(&mut builder, false);
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `path` exactly, if it is in the file.
    pub fn exact(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// The line of `path`, or of its closest ancestor present in the file (a missing key is
    /// reported at the mapping that should hold it). None for the root.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        while !p.is_empty() {
            if let Some(line) = self.exact(p) {
                return Some(line);
            }
            p = parent(p);
        }
        None
    }
}

/// `a.b[2]` -> `a.b` -> `a` -> ``.
fn parent(path: &str) -> &str {
    if path.ends_with(']') {
        if let Some(at) = path.rfind('[') {
            return &path[..at];
        }
    }
    match path.rfind('.') {
        Some(at) => &path[..at],
        None => "",
    }
}

pub(crate) fn join_key(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

pub(crate) fn join_index(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

enum Frame {
    /// `path` None: inside something not indexed (a complex key).
    Map {
        path: Option<String>,
        value_path: Option<Option<String>>,
    },
    Seq {
        path: Option<String>,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    fn record(&mut self, path: &str, mark: Marker) {
        self.lines.entry(path.to_string()).or_insert(mark.line());
    }

    /// The path of the node that starts now, and whether it is a mapping key.
    fn node_path(&mut self, scalar_key: Option<&str>, mark: Marker) -> Option<String> {
        let mut recorded = None;
        let path = match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = path.as_deref().map(|p| join_index(p, *next));
                *next += 1;
                if let Some(item) = &item {
                    recorded = Some(item.clone());
                }
                item
            }
            Some(Frame::Map { path, value_path }) => match value_path.take() {
                Some(value) => value,
                None => {
                    // This node is a key: the next node is its value.
                    let key_path = match (path.as_deref(), scalar_key) {
                        (Some(base), Some(key)) => Some(join_key(base, key)),
                        _ => None,
                    };
                    if let Some(key_path) = &key_path {
                        recorded = Some(key_path.clone());
                    }
                    *value_path = Some(key_path);
                    // A complex key is not indexed, nor anything inside it.
                    None
                }
            },
        };
        if let Some(p) = recorded {
            self.record(&p, mark);
        }
        path
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                self.node_path(Some(&value), mark);
            }
            Event::Alias(_) => {
                self.node_path(None, mark);
            }
            Event::MappingStart(..) => {
                let path = self.node_path(None, mark);
                self.stack.push(Frame::Map {
                    path,
                    value_path: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(None, mark);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
server:
  threads: 2
listeners:
  - address: 0.0.0.0:8080
  - address: 0.0.0.0:8443
    tls:
      certificates:
        - { cert: a.crt, key: a.key }
upstreams:
  ent:
    datacenters:
      - name: dc-a
        servers: [127.0.0.1:1, 127.0.0.1:2]
      - name: dc-b
        servers:
          - 127.0.0.1:3
          - 127.0.0.1:4
? [complex, key]
: { inner: 1 }
after: 1
";

    #[test]
    fn locates_keys_and_items() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.exact("server"), Some(1));
        assert_eq!(idx.exact("server.threads"), Some(2));
        assert_eq!(idx.exact("listeners[0]"), Some(4));
        assert_eq!(idx.exact("listeners[0].address"), Some(4));
        assert_eq!(idx.exact("listeners[1].tls"), Some(6));
        assert_eq!(idx.exact("listeners[1].tls.certificates[0].key"), Some(8));
        assert_eq!(
            idx.exact("upstreams.ent.datacenters[0].servers[1]"),
            Some(13)
        );
        assert_eq!(idx.exact("upstreams.ent.datacenters[1]"), Some(14));
        assert_eq!(
            idx.exact("upstreams.ent.datacenters[1].servers[1]"),
            Some(17)
        );
        assert_eq!(idx.exact("inner"), None);
        assert_eq!(idx.exact("after"), Some(20));
    }

    #[test]
    fn falls_back_to_the_closest_ancestor() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.line("listeners[1].tls.http2"), Some(6));
        assert_eq!(idx.line("upstreams.ent.health_check.rise"), Some(10));
        assert_eq!(idx.line("routes"), None);
        assert_eq!(idx.line(""), None);
    }

    #[test]
    fn survives_broken_yaml() {
        let idx = LineIndex::build("a: 1\nb: [\n");
        assert_eq!(idx.exact("a"), Some(1));
        let _ = LineIndex::build("\u{0}: : ]]}{");
    }
}
