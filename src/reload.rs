//! Live reload: read, validate and compile the whole file again, then swap the snapshot. A bad
//! file changes nothing; settings that only a restart can apply are reported.

use std::sync::Arc;

use crate::config::{self, Config, ConfigErrors};
use crate::history::EventKind;
use crate::runtime::Runtime;

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    /// Settings that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<String>,
}

/// Reload the configuration file the running snapshot came from.
pub fn reload(runtime: &Runtime) -> Result<Reloaded, ConfigErrors> {
    let current = runtime.load();
    let path = current.config.source.clone();
    let metrics = &runtime.metrics;
    match config::load(&path) {
        Ok(new) => {
            for warning in &new.warnings {
                tracing::warn!("{warning}");
            }
            let needs_restart = needs_restart(&current.base, &new);
            let generation = runtime.install(new);
            runtime.last_reload_error.store(None);
            metrics
                .config_reloads_total
                .with_label_values(&["ok"])
                .inc();
            runtime
                .history
                .events
                .record(EventKind::ReloadOk, &format!("generation {generation}"));
            if needs_restart.is_empty() {
                tracing::info!(generation, file = %path.display(), "configuration reloaded");
            } else {
                tracing::warn!(
                    generation,
                    file = %path.display(),
                    needs_restart = ?needs_restart,
                    "configuration reloaded; some changes need a restart"
                );
            }
            Ok(Reloaded {
                generation,
                needs_restart,
            })
        }
        Err(errors) => {
            metrics
                .config_reloads_total
                .with_label_values(&["error"])
                .inc();
            let text = errors.to_string();
            tracing::error!(file = %path.display(), "reload refused, nothing changed:\n{text}");
            let first = errors.0.first().map(|e| e.to_string()).unwrap_or_default();
            runtime.history.events.record(
                EventKind::ReloadFailed,
                &format!("{} error(s), nothing changed: {first}", errors.0.len()),
            );
            runtime.last_reload_error.store(Some(Arc::new(text)));
            Err(errors)
        }
    }
}

/// The settings a reload cannot apply to a running process.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let addresses = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| {
                (
                    l.address,
                    l.tls.is_some(),
                    l.tls.as_ref().is_some_and(|t| t.http2),
                )
            })
            .collect::<Vec<_>>()
    };
    if addresses(old) != addresses(new) {
        changed.push("listeners".to_string());
    }
    if old.admin.address != new.admin.address {
        changed.push("admin.address".to_string());
    }
    if old.server.threads != new.server.threads {
        changed.push("server.threads".to_string());
    }
    if old.server.access_log != new.server.access_log {
        changed.push("server.access_log".to_string());
    }
    if old.server.grace_period != new.server.grace_period {
        changed.push("server.grace_period".to_string());
    }
    // Set on pingora's HTTP/2 server at start.
    if old.server.keepalive_timeout != new.server.keepalive_timeout {
        changed.push("server.keepalive_timeout (HTTP/2 idle connections)".to_string());
    }
    if old.server.max_header_bytes != new.server.max_header_bytes {
        changed.push("server.max_header_bytes (HTTP/2 header lists)".to_string());
    }
    // The link to the store and the keys derived from its secret are made at start.
    if old.cluster != new.cluster {
        changed.push("cluster".to_string());
    }
    if old.server.runtime_dir != new.server.runtime_dir {
        changed.push("server.runtime_dir".to_string());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        config::from_str_with_env(text, Path::new("test.yaml"), |_| None).expect("valid")
    }

    const BASE: &str = "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {ent: {datacenters: [{name: a, servers: [127.0.0.1:9000]}]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: ent}]\n";

    #[test]
    fn restart_needed_only_for_process_settings() {
        let old = parse(BASE);
        let same = parse(&BASE.replace("path_prefix: /", "path_prefix: /x"));
        assert!(needs_restart(&old, &same).is_empty());
        let moved = parse(&BASE.replace("8080", "8081"));
        assert_eq!(needs_restart(&old, &moved), vec!["listeners".to_string()]);
        let threads = parse(&format!("server: {{threads: 4}}\n{BASE}"));
        assert_eq!(
            needs_restart(&old, &threads),
            vec!["server.threads".to_string()]
        );
    }
}
