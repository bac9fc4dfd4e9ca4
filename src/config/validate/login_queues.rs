//! Login queues: concurrency, tenants and their weights, waiting-room timings, secret.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{at_least, entry_name, positive_duration, Ctx};
use crate::config::lines::{join_index, join_key};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::values::*;

pub(super) fn login_queues(ctx: &mut Ctx, raw: OrderedMap<RawLoginQueue>) -> Vec<LoginQueue> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (key, q) in raw.0 {
        let base = join_key("login_queues", &key);
        if entry_name(ctx, &base, &key, &mut seen) {
            out.push(login_queue(ctx, &base, key, q));
        }
    }
    out
}

fn login_queue(ctx: &mut Ctx, base: &str, name_: String, q: RawLoginQueue) -> LoginQueue {
    let p = |k: &str| join_key(base, k);
    let concurrency = ctx.or(&p("concurrency"), &q.concurrency, 64, at_least(1usize));
    let adaptive = q.adaptive.and_then(|a| {
        let ap = |k: &str| join_key(&p("adaptive"), k);
        let min = ctx.required(&ap("min"), &a.min, at_least(1usize));
        let max = ctx.required(&ap("max"), &a.max, at_least(1usize));
        let (min, max) = (min?, max?);
        if min > max {
            ctx.error(
                &p("adaptive"),
                format!("min ({min}) must not be more than max ({max})"),
            );
            return None;
        }
        if q.concurrency.is_some() && !(min..=max).contains(&concurrency) {
            ctx.error(
                &p("concurrency"),
                format!("{concurrency} is outside adaptive min..max ({min}..{max})"),
            );
        }
        Some(Adaptive { min, max })
    });
    let mut tenant_weights = BTreeMap::new();
    for (tenant, weight) in q.tenant_weights.unwrap_or_default().0 {
        let path = join_key(&p("tenant_weights"), &tenant);
        if tenant.is_empty() {
            ctx.error(&path, "empty tenant name");
            continue;
        }
        if let Some(w) = ctx.opt(&path, &Some(weight), at_least(1u32)) {
            if tenant_weights.insert(tenant.clone(), w).is_some() {
                ctx.error(&path, format!("the tenant {tenant:?} is listed twice"));
            }
        }
    }
    let tenant_weights_for_list = tenant_weights.clone();
    LoginQueue {
        name: name_,
        concurrency,
        adaptive,
        tenant: ctx.or(
            &p("tenant"),
            &q.tenant,
            TenantSource::Header("x-ent-uai".into()),
            parse_tenant,
        ),
        tenant_weights,
        hold: ctx.or(&p("hold"), &q.hold, Duration::from_secs(15), parse_duration),
        max_waiting: ctx.or(&p("max_waiting"), &q.max_waiting, 100_000, at_least(1usize)),
        per_client_waiting: ctx.or(
            &p("per_client_waiting"),
            &q.per_client_waiting,
            20,
            at_least(1usize),
        ),
        pass: pass(ctx, &p("pass"), q.pass, &p("pass_ttl"), q.pass_ttl),
        ticket_ttl: ctx.or(
            &p("ticket_ttl"),
            &q.ticket_ttl,
            Duration::from_secs(120),
            positive_duration,
        ),
        secrets: secrets(ctx, base, q.secret, q.secrets, q.secrets_file),
        tenants: q
            .tenants
            .map(|t| tenants(ctx, &p("tenants"), t, &tenant_weights_for_list)),
        max_tenants_per_client: ctx.or(
            &p("max_tenants_per_client"),
            &q.max_tenants_per_client,
            2,
            at_least(1usize),
        ),
    }
}

/// `pass:` (and the older `pass_ttl`).
fn pass(
    ctx: &mut Ctx,
    path: &str,
    raw: Option<RawPass>,
    legacy_path: &str,
    legacy_ttl: Value,
) -> PassRule {
    let legacy = ctx.opt(legacy_path, &legacy_ttl, positive_duration);
    let raw = raw.unwrap_or_default();
    let p = |k: &str| join_key(path, k);
    if legacy.is_some() && raw.ttl.is_some() {
        ctx.error(
            &p("ttl"),
            "pass_ttl and pass.ttl are both set: keep pass.ttl",
        );
    }
    let mut on_status = Vec::new();
    if let Some(list) = raw.on_status {
        if list.is_empty() {
            ctx.error(&p("on_status"), "an empty list would give no pass at all");
        }
        for (i, v) in list.into_iter().enumerate() {
            if let Some(range) = ctx.opt(&join_index(&p("on_status"), i), &Some(v), status_range) {
                on_status.push(range);
            }
        }
    } else {
        on_status.push((200, 399));
    }
    let on_cookie = ctx.opt(&p("on_cookie"), &raw.on_cookie, |s| {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if ok {
            Ok(s.to_string())
        } else {
            Err(format!("invalid cookie name {s:?}"))
        }
    });
    PassRule {
        on_status,
        on_cookie,
        ttl: ctx
            .opt(&p("ttl"), &raw.ttl, positive_duration)
            .or(legacy)
            .unwrap_or(Duration::from_secs(600)),
        max_uses_per_minute: ctx.or(
            &p("max_uses_per_minute"),
            &raw.max_uses_per_minute,
            30,
            at_least(1u32),
        ),
        max_share: ctx.or(&p("max_share"), &raw.max_share, 0.5, |s| {
            let share = parse_share(s)?;
            if share <= 0.0 {
                return Err(format!("invalid share {s:?}: must be more than 0%"));
            }
            Ok(share)
        }),
    }
}

/// `200`, `2xx` or `200-299`.
fn status_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!("invalid status {s:?}: expected a code (302), a class (2xx) or a range (200-299)")
    };
    let t = s.trim().to_ascii_lowercase();
    let code = |x: &str| -> Result<u16, String> {
        let n: u16 = x.trim().parse().map_err(|_| bad())?;
        if (100..=599).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(class) = t.strip_suffix("xx") {
        let c: u16 = class.parse().map_err(|_| bad())?;
        if !(1..=5).contains(&c) {
            return Err(bad());
        }
        return Ok((c * 100, c * 100 + 99));
    }
    if let Some((a, b)) = t.split_once('-') {
        let (a, b) = (code(a)?, code(b)?);
        if a > b {
            return Err(bad());
        }
        return Ok((a, b));
    }
    code(&t).map(|n| (n, n))
}

/// `secret` (one), `secrets` (a list: the first signs, all verify) or `secrets_file` (one
/// per line); at most one of them.
fn secrets(
    ctx: &mut Ctx,
    base: &str,
    one: Value,
    list: Option<Vec<Scalar>>,
    file: Value,
) -> Vec<Secret> {
    let p = |k: &str| join_key(base, k);
    let given = [one.is_some(), list.is_some(), file.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given > 1 {
        ctx.error(
            &p("secrets"),
            "give the key in one of secret, secrets or secrets_file",
        );
    }
    let mut out: Vec<Secret> = Vec::new();
    if let Some(s) = one.filter(|s| !s.as_str().is_empty()) {
        out.push(Secret(s.0));
    }
    for v in list.unwrap_or_default() {
        if !v.as_str().is_empty() {
            out.push(Secret(v.0));
        }
    }
    if let Some(path) = ctx.opt(&p("secrets_file"), &file, super::file_path) {
        match std::fs::read_to_string(&path) {
            Ok(text) => out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| Secret(l.to_string())),
            ),
            Err(e) => ctx.error(
                &p("secrets_file"),
                crate::config::certs::read_error(&path, &e),
            ),
        }
    }
    for (i, s) in out.iter().enumerate() {
        if s.0.len() < 16 {
            ctx.error(
                &p("secrets"),
                format!(
                    "key {} is shorter than 16 characters: too easy to guess",
                    i + 1
                ),
            );
        }
    }
    out
}

/// `tenants:` a list and/or a file of codes, one per line with an optional weight.
fn tenants(
    ctx: &mut Ctx,
    path: &str,
    raw: RawTenants,
    weights: &BTreeMap<String, u32>,
) -> KnownTenants {
    let p = |k: &str| join_key(path, k);
    let mut known: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for (i, v) in raw.list.unwrap_or_default().into_iter().enumerate() {
        let code = v.as_str().trim();
        if let Err(why) = tenant_code(code) {
            ctx.error(&join_index(&p("list"), i), why);
            continue;
        }
        known.insert(code.to_string(), 1);
    }
    let file = ctx.opt(&p("file"), &raw.file, super::file_path);
    if let Some(file) = &file {
        match std::fs::read_to_string(file) {
            Err(e) => ctx.error(&p("file"), crate::config::certs::read_error(file, &e)),
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let mut words = line.split_whitespace();
                    let code = words.next().unwrap_or("");
                    let weight = match words.next().map(str::parse::<u32>) {
                        None => Ok(1),
                        Some(Ok(w)) if w >= 1 => Ok(w),
                        Some(_) => Err("the weight must be a whole number of at least 1"),
                    };
                    let problem = tenant_code(code).err().or(weight.err().map(String::from));
                    if let Some(why) = problem
                        .or_else(|| words.next().map(|_| "expected CODE [WEIGHT]".to_string()))
                    {
                        ctx.error(&p("file"), format!("{}:{}: {why}", file.display(), n + 1));
                        continue;
                    }
                    known.insert(code.to_string(), weight.unwrap_or(1));
                }
            }
        }
    }
    if known.is_empty() {
        ctx.error(
            path,
            "the tenant list is empty (leave tenants out to accept any name)",
        );
    }
    // tenant_weights apply to listed tenants too.
    for (tenant, w) in weights {
        if let Some(weight) = known.get_mut(tenant) {
            *weight = *w;
        }
    }
    KnownTenants {
        weights: std::sync::Arc::new(known),
        unknown_weight: ctx.or(&p("unknown_weight"), &raw.unknown_weight, 1, at_least(1u32)),
        file,
    }
}

/// A tenant code as the queue keeps it: 1 to 64 visible ASCII characters.
fn tenant_code(code: &str) -> Result<(), String> {
    if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid tenant code {code:?}: 1 to 64 visible ASCII characters"
        ));
    }
    Ok(())
}
