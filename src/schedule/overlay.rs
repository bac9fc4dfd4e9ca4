//! What an overlay changes, and the configuration in force once overlays apply to the base
//! file. Only the fields an overlay may name change; everything else (keys, tenants, secrets,
//! files, upstreams) is the base file's, so applying an overlay reads no file and cannot fail.

use std::time::Duration;

use crate::config::{Config, Limit, LimitMode, LoginQueue, Overlay, Rate};

/// One field an overlay sets, as a path of the base file and the value it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// `login_queues.logins.concurrency`, `limits.per_ip.rate`.
    pub field: String,
    /// As the file would write it: `80`, `20/s`, `30s`, `enforce`.
    pub value: String,
}

impl Overlay {
    /// The fields this overlay sets, in file order. A limit's `rate` always comes with its
    /// `burst` (given, or the rate's count), so two overlays setting one's rate and the other's
    /// burst change the same field.
    pub fn changes(&self, queues: &[LoginQueue], limits: &[Limit]) -> Vec<FieldChange> {
        let mut out = Vec::new();
        let mut push = |section: &str, name: &str, field: &str, value: String| {
            out.push(FieldChange {
                field: format!("{section}.{name}.{field}"),
                value,
            });
        };
        for q in &self.login_queues {
            let name = queues.get(q.queue).map_or("?", |c| c.name.as_str());
            let section = "login_queues";
            if let Some(n) = q.concurrency {
                push(section, name, "concurrency", n.to_string());
            }
            if let Some(a) = q.adaptive {
                push(
                    section,
                    name,
                    "adaptive",
                    format!("{{ min: {}, max: {} }}", a.min, a.max),
                );
            }
            if let Some(d) = q.hold {
                push(section, name, "hold", duration_text(d));
            }
            if let Some(n) = q.max_waiting {
                push(section, name, "max_waiting", n.to_string());
            }
            if let Some(n) = q.per_client_waiting {
                push(section, name, "per_client_waiting", n.to_string());
            }
        }
        for l in &self.limits {
            let name = limits.get(l.limit).map_or("?", |c| c.name.as_str());
            let section = "limits";
            if let Some(r) = l.rate {
                push(section, name, "rate", rate_text(r));
            }
            if let Some(b) = l.burst {
                push(section, name, "burst", b.to_string());
            }
            if let Some(m) = l.mode {
                push(section, name, "mode", mode_text(m).to_string());
            }
            if let Some(b) = l.ban {
                push(section, name, "ban", b.to_string());
            }
        }
        out
    }

    /// Sets this overlay's fields in `config`.
    pub fn apply_to(&self, config: &mut Config) {
        for q in &self.login_queues {
            let Some(queue) = config.login_queues.get_mut(q.queue) else {
                continue;
            };
            if let Some(n) = q.concurrency {
                queue.concurrency = n;
            }
            if let Some(a) = q.adaptive {
                queue.adaptive = Some(a);
                // For an adaptive queue, concurrency is where the limit starts: kept in bounds.
                queue.concurrency = queue.concurrency.clamp(a.min, a.max);
            }
            if let Some(d) = q.hold {
                queue.hold = d;
            }
            if let Some(n) = q.max_waiting {
                queue.max_waiting = n;
            }
            if let Some(n) = q.per_client_waiting {
                queue.per_client_waiting = n;
            }
        }
        for l in &self.limits {
            let Some(limit) = config.limits.get_mut(l.limit) else {
                continue;
            };
            if let Some(r) = l.rate {
                limit.rate = r;
            }
            if let Some(b) = l.burst {
                limit.burst = b;
            }
            if let Some(m) = l.mode {
                limit.mode = m;
            }
            if let Some(b) = l.ban {
                limit.ban = b;
            }
        }
    }
}

/// The configuration in force when `active` overlays (indexes into `base.schedules`) apply:
/// the base file with their fields set, in file order.
pub fn apply(base: &Config, active: &[usize]) -> Config {
    let mut config = base.clone();
    if let Some(schedules) = &base.schedules {
        for overlay in active.iter().filter_map(|&i| schedules.overlays.get(i)) {
            overlay.apply_to(&mut config);
        }
    }
    config
}

fn rate_text(r: Rate) -> String {
    match r.per.as_secs() {
        1 => format!("{}/s", r.count),
        60 => format!("{}/min", r.count),
        3600 => format!("{}/h", r.count),
        _ => format!("{}/{}", r.count, duration_text(r.per)),
    }
}

fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn mode_text(m: LimitMode) -> &'static str {
    match m {
        LimitMode::Enforce => "enforce",
        LimitMode::DryRun => "dry_run",
    }
}
