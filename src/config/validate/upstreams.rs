//! Upstreams: datacenters in priority order, their servers, health checks, ejection, timeouts, retries.

use std::net::SocketAddr;
use std::time::Duration;

use super::{at_least, entry_name, name, positive_duration, Ctx};
use crate::config::lines::{join_index, join_key};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::values::*;

pub(super) fn upstreams(ctx: &mut Ctx, raw: OrderedMap<RawUpstream>) -> Vec<Upstream> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (key, u) in raw.0 {
        let base = join_key("upstreams", &key);
        if entry_name(ctx, &base, &key, &mut seen) {
            out.push(upstream(ctx, &base, key, u));
        }
    }
    out
}

fn upstream(ctx: &mut Ctx, base: &str, name_: String, u: RawUpstream) -> Upstream {
    let p = |k: &str| join_key(base, k);
    let dcs_path = p("datacenters");
    let raw_dcs = u.datacenters.unwrap_or_default();
    if raw_dcs.is_empty() {
        ctx.error(&dcs_path, "at least one datacenter is required");
    }
    let mut datacenters = Vec::new();
    let mut dc_names: Vec<String> = Vec::new();
    let mut all_servers: Vec<SocketAddr> = Vec::new();
    for (i, d) in raw_dcs.into_iter().enumerate() {
        let dc_base = join_index(&dcs_path, i);
        let name_path = join_key(&dc_base, "name");
        let dc_name = ctx.required(&name_path, &d.name, name);
        if let Some(n) = &dc_name {
            if dc_names.contains(n) {
                ctx.error(&name_path, format!("the datacenter {n:?} is defined twice"));
            }
            dc_names.push(n.clone());
        }
        let servers_path = join_key(&dc_base, "servers");
        let raw_servers = d.servers.unwrap_or_default();
        if raw_servers.is_empty() {
            ctx.error(&servers_path, "a datacenter needs at least one server");
        }
        let mut servers = Vec::new();
        let mut max_in_flight = Vec::new();
        for (j, s) in raw_servers.into_iter().enumerate() {
            let path = join_index(&servers_path, j);
            let (address, cap) = match s {
                RawServerEntry::Address(a) => (Some(a), None),
                RawServerEntry::Detailed(d) => {
                    let cap = ctx.opt(
                        &join_key(&path, "max_in_flight"),
                        &d.max_in_flight,
                        at_least(1usize),
                    );
                    if d.address.is_none() {
                        ctx.error(&join_key(&path, "address"), "required field is missing");
                    }
                    (d.address, cap)
                }
            };
            let Some(addr) = ctx.opt(&path, &address, parse_socket_addr) else {
                continue;
            };
            if addr.port() == 0 || addr.ip().is_unspecified() {
                ctx.error(
                    &path,
                    format!("invalid address \"{addr}\": a server needs a real IP and port"),
                );
                continue;
            }
            if all_servers.contains(&addr) {
                ctx.error(
                    &path,
                    format!("the server {addr} is listed twice in this upstream"),
                );
                continue;
            }
            all_servers.push(addr);
            servers.push(addr);
            max_in_flight.push(cap);
        }
        datacenters.push(Datacenter {
            name: dc_name.unwrap_or_default(),
            servers,
            max_in_flight,
        });
    }

    let min_path = p("min_healthy");
    let min_healthy = ctx.or(
        &min_path,
        &u.min_healthy,
        MinHealthy::Count(1),
        parse_min_healthy,
    );
    if let MinHealthy::Count(n) = min_healthy {
        if let Some(dc) = datacenters
            .iter()
            .find(|dc| !dc.servers.is_empty() && dc.servers.len() < n)
        {
            ctx.error(
                &min_path,
                format!(
                    "{n} is more than the {} server(s) of datacenter {:?}: it could never be up",
                    dc.servers.len(),
                    dc.name
                ),
            );
        }
    }

    let hc = u.health_check.unwrap_or_default();
    let hp = |k: &str| join_key(&p("health_check"), k);
    let health_check = HealthCheck {
        path: ctx.or(&hp("path"), &hc.path, "/healthz".to_string(), |s| {
            if s.starts_with('/') && !s.chars().any(char::is_whitespace) {
                Ok(s.to_string())
            } else {
                Err(format!("invalid path {s:?}: must start with '/'"))
            }
        }),
        interval: ctx.or(
            &hp("interval"),
            &hc.interval,
            Duration::from_secs(1),
            positive_duration,
        ),
        timeout: ctx.or(
            &hp("timeout"),
            &hc.timeout,
            Duration::from_millis(500),
            positive_duration,
        ),
        rise: ctx.or(&hp("rise"), &hc.rise, 2, at_least(1u32)),
        fall: ctx.or(&hp("fall"), &hc.fall, 2, at_least(1u32)),
    };

    let o = u.outlier.unwrap_or_default();
    let op = |k: &str| join_key(&p("outlier"), k);
    let outlier = Outlier {
        consecutive_failures: ctx.or(
            &op("consecutive_failures"),
            &o.consecutive_failures,
            3,
            at_least(1u32),
        ),
        eject_for: ctx.or(
            &op("eject_for"),
            &o.eject_for,
            Duration::from_secs(10),
            positive_duration,
        ),
    };

    let t = u.timeouts.unwrap_or_default();
    let tp = |k: &str| join_key(&p("timeouts"), k);
    let timeouts = UpstreamTimeouts {
        connect: ctx.or(
            &tp("connect"),
            &t.connect,
            Duration::from_secs(1),
            positive_duration,
        ),
        response: ctx.or(
            &tp("response"),
            &t.response,
            Duration::from_secs(30),
            positive_duration,
        ),
        idle: ctx.or(
            &tp("idle"),
            &t.idle,
            Duration::from_secs(60),
            positive_duration,
        ),
        per_try: ctx.opt(&tp("per_try"), &t.per_try, positive_duration),
        unacked: ctx.or(
            &tp("unacked"),
            &t.unacked,
            Some(Duration::from_secs(2)),
            |s| match s {
                "off" => Ok(None),
                _ => positive_duration(s).map(Some),
            },
        ),
    };
    let d = u.on_down.unwrap_or_default();
    let on_down = OnDown {
        cut_after: ctx.or(
            &join_key(&p("on_down"), "cut_after"),
            &d.cut_after,
            Duration::from_secs(1),
            parse_duration,
        ),
    };

    let r = u.retries.unwrap_or_default();
    let rp = |k: &str| join_key(&p("retries"), k);
    let retries = Retries {
        attempts: ctx.or(&rp("attempts"), &r.attempts, 2, parse_number),
        budget: ctx.or(&rp("budget"), &r.budget, 0.2, parse_share),
    };

    Upstream {
        name: name_,
        datacenters,
        min_healthy,
        health_check,
        outlier,
        failback_after: ctx.or(
            &p("failback_after"),
            &u.failback_after,
            Duration::from_secs(30),
            parse_duration,
        ),
        when_all_down: ctx.or(
            &p("when_all_down"),
            &u.when_all_down,
            WhenAllDown::Maintenance,
            |s| match s {
                "maintenance" => Ok(WhenAllDown::Maintenance),
                "try_all" => Ok(WhenAllDown::TryAll),
                _ => Err(format!(
                    "invalid value {s:?}: expected maintenance or try_all"
                )),
            },
        ),
        timeouts,
        retries,
        on_down,
    }
}

/// Settings that are valid but known to lose or stall requests when a datacenter goes dark.
pub(super) fn warn_risky(ctx: &mut Ctx, upstreams: &[Upstream]) {
    for u in upstreams {
        let base = join_key("upstreams", &u.name);
        let p = |k: &str| join_key(&base, k);
        let t = &u.timeouts;
        if t.unacked.is_none() {
            ctx.warn(
                &join_key(&p("timeouts"), "unacked"),
                format!(
                    "off: a server that goes dark holds each request until timeouts.response ({}), and a login it holds keeps its queue slot that long",
                    humantime(t.response)
                ),
            );
        }
        if let Some(per_try) = t.per_try {
            if per_try >= t.response {
                ctx.warn(
                    &join_key(&p("timeouts"), "per_try"),
                    "not shorter than timeouts.response: it never applies",
                );
            }
        }
        if t.connect > Duration::from_secs(3) {
            ctx.warn(
                &join_key(&p("timeouts"), "connect"),
                format!(
                    "{}: while a datacenter drops packets, every new request to it waits that long",
                    humantime(t.connect)
                ),
            );
        }
        if u.retries.attempts == 0 {
            ctx.warn(
                &join_key(&p("retries"), "attempts"),
                "0: a request in flight to a server that goes dark fails even when it is safe to resend",
            );
        }
        if u.retries.budget <= 0.0 {
            ctx.warn(
                &join_key(&p("retries"), "budget"),
                "0%: no request is ever retried, even one that never reached a server",
            );
        }
        let hc = &u.health_check;
        let detect = hc.interval * hc.fall + hc.timeout;
        if detect > Duration::from_secs(10) {
            ctx.warn(
                &p("health_check"),
                format!(
                    "a dark server is noticed by the checks only after about {} (interval x fall + timeout)",
                    humantime(detect)
                ),
            );
        }
        if u.on_down.cut_after >= t.response {
            ctx.warn(
                &join_key(&p("on_down"), "cut_after"),
                "not shorter than timeouts.response: requests stuck on a server that went down are never cut",
            );
        }
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
