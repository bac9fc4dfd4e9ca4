//! Rate limits: the key a limit counts by, its rate, burst and mode.

use std::time::Duration;

use super::{at_least, entry_name, Ctx};
use crate::config::lines::{join_index, join_key};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::values::*;

pub(super) fn limits(ctx: &mut Ctx, raw: OrderedMap<RawLimit>) -> Vec<Limit> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (key, l) in raw.0 {
        let base = join_key("limits", &key);
        if !entry_name(ctx, &base, &key, &mut seen) {
            continue;
        }
        let p = |k: &str| join_key(&base, k);
        let limit_key = limit_key(ctx, &p("key"), l.key);
        let rate = ctx.required(&p("rate"), &l.rate, parse_rate);
        let burst = ctx.opt(&p("burst"), &l.burst, at_least(1u32));
        let mode = ctx.or(&p("mode"), &l.mode, LimitMode::Enforce, limit_mode);
        let max_keys = ctx.or(&p("max_keys"), &l.max_keys, 1_000_000, at_least(1usize));
        let ban_default = matches!(limit_key, Some(LimitKey::ClientIp));
        let ban = ctx.or(&p("ban"), &l.ban, ban_default, parse_bool);
        let case_sensitive = ctx.or(&p("case_sensitive"), &l.case_sensitive, false, parse_bool);
        // A missing key or rate is reported; the placeholders keep routes from reporting the
        // limit as unknown too.
        let rate = rate.unwrap_or(Rate {
            count: 1,
            per: Duration::from_secs(1),
        });
        out.push(Limit {
            name: key,
            key: limit_key.unwrap_or(LimitKey::Global),
            rate,
            burst: burst.unwrap_or(rate.count),
            mode,
            max_keys,
            ban,
            case_sensitive,
        });
    }
    out
}

/// `mode:` of a limit.
pub(super) fn limit_mode(s: &str) -> Result<LimitMode, String> {
    match s {
        "enforce" => Ok(LimitMode::Enforce),
        "dry_run" => Ok(LimitMode::DryRun),
        _ => Err(format!("invalid mode {s:?}: expected enforce or dry_run")),
    }
}

/// `key:` as one source or a list of field sources.
fn limit_key(ctx: &mut Ctx, path: &str, raw: Option<ScalarOrList>) -> Option<LimitKey> {
    match raw {
        None => {
            ctx.error(path, "required field is missing");
            None
        }
        Some(ScalarOrList::One(one)) => ctx.opt(path, &Some(one), parse_limit_key),
        Some(ScalarOrList::Many(list)) => {
            if list.is_empty() {
                ctx.error(path, "an empty list names no source");
                return None;
            }
            let mut sources = Vec::new();
            for (i, v) in list.into_iter().enumerate() {
                let item = join_index(path, i);
                match ctx.opt(&item, &Some(v), parse_limit_key) {
                    Some(LimitKey::ClientIp | LimitKey::Global) => ctx.error(
                        &item,
                        "client_ip and global cannot be listed with other sources",
                    ),
                    Some(source) => sources.push(source),
                    None => {}
                }
            }
            Some(if sources.len() == 1 {
                sources.remove(0)
            } else {
                LimitKey::Any(sources)
            })
        }
    }
}
