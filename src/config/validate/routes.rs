//! Routes: the match (host, path prefix, methods) and the names they refer to in other sections.

use super::{name, text, Ctx};
use crate::config::lines::{join_index, join_key};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::values::parse_bool;

fn host(s: &str) -> Result<String, String> {
    let h = s.to_ascii_lowercase();
    let bad = |why: &str| Err(format!("invalid host {s:?}: {why}"));
    if h.is_empty() {
        return bad("empty");
    }
    if h.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return bad("a host name only, without scheme or path");
    }
    let bare = h.strip_prefix("*.").unwrap_or(&h);
    if bare.is_empty() || bare.contains('*') {
        return bad("a wildcard is only allowed as a leading \"*.\"");
    }
    let bracketed_ipv6 = bare.starts_with('[') && bare.ends_with(']');
    if bare.contains(':') && !bracketed_ipv6 {
        return bad("without port");
    }
    Ok(h)
}

fn path_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("invalid path_prefix {s:?}: must start with '/'"));
    }
    Ok(s.to_string())
}

fn method(s: &str) -> Result<http::Method, String> {
    let upper = s.to_ascii_uppercase();
    http::Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid HTTP method {s:?}"))
}

fn resolve(ctx: &mut Ctx, path: &str, what: &str, wanted: &str, names: &[&str]) -> Option<usize> {
    let found = names.iter().position(|n| *n == wanted);
    if found.is_none() {
        let known = if names.is_empty() {
            "none is defined".to_string()
        } else {
            format!("defined: {}", names.join(", "))
        };
        ctx.error(path, format!("unknown {what} {wanted:?} ({known})"));
    }
    found
}

pub(super) fn routes(
    ctx: &mut Ctx,
    raw: Option<Vec<RawRoute>>,
    upstreams: &[Upstream],
    limits: &[Limit],
    queues: &[LoginQueue],
) -> Vec<Route> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        ctx.error("routes", "at least one route is required");
    }
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let limit_names: Vec<&str> = limits.iter().map(|l| l.name.as_str()).collect();
    let queue_names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let base = join_index("routes", i);
        let p = |k: &str| join_key(&base, k);
        let route_name = ctx.required(&p("name"), &r.name, name);
        if let Some(n) = &route_name {
            if seen.contains(n) {
                ctx.error(&p("name"), format!("the route name {n:?} is used twice"));
            }
            seen.push(n.clone());
        }
        let m = r.matcher.unwrap_or_default();
        let mp = |k: &str| join_key(&p("match"), k);
        let host = ctx.opt(&mp("host"), &m.host, host);
        let path_prefix = ctx.or(&mp("path_prefix"), &m.path_prefix, "/".into(), path_prefix);
        let ignore_case = ctx.or(&mp("ignore_case"), &m.ignore_case, false, parse_bool);
        let methods = m.methods.map(|list| {
            if list.is_empty() {
                ctx.error(
                    &mp("methods"),
                    "an empty list matches nothing (leave methods out to match any)",
                );
            }
            let mut out: Vec<http::Method> = Vec::new();
            for (j, v) in list.into_iter().enumerate() {
                let path = join_index(&mp("methods"), j);
                if let Some(m) = ctx.opt(&path, &Some(v), method) {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
            out
        });
        let upstream = ctx
            .required(&p("upstream"), &r.upstream, text)
            .and_then(|u| resolve(ctx, &p("upstream"), "upstream", &u, &upstream_names));
        let mut route_limits = Vec::new();
        for (j, v) in r.limits.unwrap_or_default().into_iter().enumerate() {
            let path = join_index(&p("limits"), j);
            if let Some(k) = resolve(ctx, &path, "limit", v.as_str(), &limit_names) {
                if route_limits.contains(&k) {
                    ctx.error(&path, format!("the limit {:?} is listed twice", v.as_str()));
                } else {
                    route_limits.push(k);
                }
            }
        }
        let login_queue = ctx
            .opt(&p("login_queue"), &r.login_queue, text)
            .and_then(|q| resolve(ctx, &p("login_queue"), "login queue", &q, &queue_names));
        let rr = r.retries.unwrap_or_default();
        let rp = |k: &str| join_key(&p("retries"), k);
        let resend = Resend {
            idempotency_key: ctx.or(
                &rp("idempotency_key"),
                &rr.idempotency_key,
                false,
                parse_bool,
            ),
            post: ctx.or(&rp("resend_post"), &rr.resend_post, false, parse_bool),
        };
        out.push(Route {
            name: route_name.unwrap_or_default(),
            host,
            path_prefix,
            ignore_case,
            methods,
            upstream: upstream.unwrap_or(0),
            limits: route_limits,
            login_queue,
            resend,
        });
    }
    out
}

/// Route settings that trade safety for availability: said once at check time.
pub(super) fn warn_risky(ctx: &mut Ctx, routes: &[Route]) {
    for (i, r) in routes.iter().enumerate() {
        if r.resend.post {
            ctx.warn(
                &join_key(&join_key(&join_index("routes", i), "retries"), "resend_post"),
                "POSTs of this route may be applied twice (a server that received one and failed before answering, then another): only for forms whose replay is harmless",
            );
        }
    }
}
