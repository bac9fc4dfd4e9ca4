//! The target of `drain` and `undrain`, found in `/status`: a datacenter by name or a server by
//! `IP:PORT`, in the upstream named by `--upstream`, else in the one upstream that has it.

use std::net::SocketAddr;

use serde_json::Value;

use super::{table, Failure, EXIT_NOT_FOUND, EXIT_USAGE};

/// A drain's target found in `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub upstream: String,
    pub datacenter: String,
    /// The server's address as `/status` writes it, for a server.
    pub server: Option<String>,
}

/// Finds a datacenter (by name) or a server (by `IP:PORT`) in the upstreams of `/status`:
/// in `upstream` when given, else in the one upstream that has it.
pub fn locate(status: &Value, target: &str, upstream: Option<&str>) -> Result<Located, Failure> {
    let empty = serde_json::Map::new();
    let upstreams = status
        .get("upstreams")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(name) = upstream {
        if !upstreams.contains_key(name) {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            return Err(Failure::new(
                EXIT_NOT_FOUND,
                format!(
                    "no upstream {:?} (upstreams: {})",
                    table::sanitize(name),
                    list_or_none(&known)
                ),
            ));
        }
    }
    let server: Option<SocketAddr> = target.trim().parse().ok();
    let mut found = Vec::new();
    for (name, u) in upstreams {
        if upstream.is_some_and(|wanted| wanted != name) {
            continue;
        }
        let datacenters = u
            .get("datacenters")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for dc in datacenters {
            let dc_name = dc.get("name").and_then(Value::as_str).unwrap_or("");
            match server {
                None => {
                    if dc_name == target {
                        found.push(Located {
                            upstream: name.clone(),
                            datacenter: dc_name.to_string(),
                            server: None,
                        });
                    }
                }
                Some(wanted) => {
                    let servers = dc
                        .get("servers")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    for s in servers {
                        let address = s.get("address").and_then(Value::as_str).unwrap_or("");
                        if address.parse::<SocketAddr>().ok() == Some(wanted) {
                            found.push(Located {
                                upstream: name.clone(),
                                datacenter: dc_name.to_string(),
                                server: Some(address.to_string()),
                            });
                        }
                    }
                }
            }
        }
    }
    let kind = if server.is_some() {
        "server"
    } else {
        "datacenter"
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let scope = match upstream {
                Some(u) => format!(" in upstream {}", table::sanitize(u)),
                None => String::new(),
            };
            let known = known_targets(upstreams, upstream, server.is_some());
            Err(Failure::new(
                EXIT_NOT_FOUND,
                format!(
                    "no {kind} {:?}{scope} ({kind}s: {})",
                    table::sanitize(target),
                    list_or_none(&known.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            ))
        }
        _ => {
            let names: Vec<&str> = found.iter().map(|f| f.upstream.as_str()).collect();
            Err(Failure::new(
                EXIT_USAGE,
                format!(
                    "{kind} {:?} is in several upstreams ({}): name one with --upstream",
                    table::sanitize(target),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The datacenter names (or server addresses) of the upstreams, for a "not found" message.
fn known_targets(
    upstreams: &serde_json::Map<String, Value>,
    only: Option<&str>,
    servers: bool,
) -> Vec<String> {
    let mut known = Vec::new();
    for (name, u) in upstreams {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        for dc in u
            .get("datacenters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if servers {
                for s in dc
                    .get("servers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = s.get("address").and_then(Value::as_str) {
                        known.push(table::sanitize(a));
                    }
                }
            } else if let Some(n) = dc.get("name").and_then(Value::as_str) {
                known.push(table::sanitize(n));
            }
        }
    }
    known.dedup();
    known
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}
