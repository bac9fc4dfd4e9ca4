//! `cluster:`: the store's address, this node's name, the shared secret and the store's timings.

use std::time::Duration;

use super::{positive_duration, Ctx};
use crate::config::lines::join_key;
use crate::config::model::*;
use crate::config::raw::*;

/// The shared secret's least length in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

pub(super) fn cluster(ctx: &mut Ctx, raw: Option<RawCluster>) -> Option<Cluster> {
    let r = raw?;
    let p = |k: &str| join_key("cluster", k);
    let store = ctx.required(&p("store"), &r.store, store_url);
    let node = ctx
        .opt(&p("node_id"), &r.node_id, node_id)
        .unwrap_or_else(default_node_id);
    let key_prefix = ctx.or(&p("key_prefix"), &r.key_prefix, "rempart".into(), |s| {
        node_id(s).map_err(|_| {
            format!("invalid key prefix {s:?}: use letters, digits, '_', '-', '.' and ':'")
        })
    });
    let secret = ctx.required(&p("secret"), &r.secret, |s| {
        if s.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the shared secret must be at least {MIN_SECRET_BYTES} bytes (it keys client addresses and signs tickets on every node); give the same one to every node, e.g. from ${{REMPART_CLUSTER_SECRET}}"
            ));
        }
        Ok(Secret(s.to_string()))
    });
    let timeout = ctx.or(&p("timeout"), &r.timeout, Duration::from_millis(10), |s| {
        let d = positive_duration(s)?;
        if d > Duration::from_secs(1) {
            return Err(format!(
                "timeout {s:?} is too long: requests wait for the store this long (at most 1s)"
            ));
        }
        Ok(d)
    });
    let heartbeat = ctx.or(&p("heartbeat"), &r.heartbeat, Duration::from_secs(1), |s| {
        let d = positive_duration(s)?;
        if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
            return Err(format!("heartbeat {s:?} must be between 100ms and 60s"));
        }
        Ok(d)
    });
    Some(Cluster {
        store: store?,
        node_id: node,
        key_prefix,
        secret: secret?,
        timeout,
        heartbeat,
    })
}

/// A `redis://` or `rediss://` URL the store client accepts.
fn store_url(s: &str) -> Result<Secret, String> {
    if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
        return Err("expected a redis:// or rediss:// URL (rediss:// for TLS)".to_string());
    }
    redis::Client::open(s)
        .map(|_| Secret(s.to_string()))
        .map_err(|e| {
            format!(
                "invalid store URL: {}",
                e.detail().unwrap_or("cannot be parsed")
            )
        })
}

fn node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid node id {s:?}: at most 64 letters, digits, '_', '-', '.' and ':'"
        ))
    }
}

/// The host name, as the kernel knows it (`rempart` when it cannot be read or is not a name).
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| node_id(h.trim()).ok())
        .unwrap_or_else(|| "rempart".to_string())
}
