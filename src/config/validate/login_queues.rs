//! Login queues: concurrency, tenants and their weights, waiting-room timings, secret.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{at_least, entry_name, positive_duration, Ctx};
use crate::config::lines::join_key;
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
        pass_ttl: ctx.or(
            &p("pass_ttl"),
            &q.pass_ttl,
            Duration::from_secs(600),
            positive_duration,
        ),
        ticket_ttl: ctx.or(
            &p("ticket_ttl"),
            &q.ticket_ttl,
            Duration::from_secs(120),
            positive_duration,
        ),
        secret: q
            .secret
            .filter(|s| !s.as_str().is_empty())
            .map(|s| Secret(s.0)),
    }
}
