//! Admin calls and status of the shield: limits and bans.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AdminError;
use crate::config::{LimitKey, LimitMode};
use crate::runtime::{Runtime, Snapshot};
use crate::telemetry::rfc3339;

/// Routes under `/bans`.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/bans", get(list_bans))
        .route("/bans/{ip}", delete(lift_ban))
}

/// `GET /bans?offset=N&limit=M`: bans in force, most recent first, a page at a time (limit
/// 100 by default, 1000 at most).
#[derive(Debug, serde::Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn list_bans(
    State(runtime): State<Arc<Runtime>>,
    axum::extract::Query(page): axum::extract::Query<Page>,
) -> Json<Value> {
    let snapshot = runtime.load();
    let offset = page.offset.unwrap_or(0);
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let bans = &snapshot.shield.state.bans;
    Json(json!({
        "total": bans.active(),
        "offset": offset,
        "limit": limit,
        "bans": ban_entries(bans.list(offset, limit)),
    }))
}

/// The largest page of `GET /bans`.
const MAX_PAGE: usize = 1000;
/// Bans shown in `/status` (the full list is on `/bans`).
const RECENT_BANS: usize = 20;

fn ban_entries(list: Vec<(String, u64, std::time::SystemTime)>) -> Vec<Value> {
    list.into_iter()
        .map(|(client, left, since)| {
            let until = std::time::SystemTime::now() + std::time::Duration::from_secs(left);
            json!({
                "ip": client,
                "since": rfc3339(since),
                "until": rfc3339(until),
                "seconds_left": left,
            })
        })
        .collect()
}

/// `DELETE /bans/{ip}`: an address (IPv6: any address of the banned prefix), or the prefix as
/// listed (`2001:db8:1:2::/64`, the slash written `%2F`).
async fn lift_ban(
    State(runtime): State<Arc<Runtime>>,
    Path(ip): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let address = ip.split('/').next().unwrap_or("");
    let parsed: IpAddr = address
        .parse()
        .map_err(|_| AdminError::NotFound(format!("ban of {ip:?} (not an IP address)")))?;
    let snapshot = runtime.load();
    if snapshot
        .shield
        .lift_ban(crate::forwarded::canonical(parsed))
    {
        runtime
            .metrics
            .bans_active
            .set(snapshot.shield.state.bans.active() as i64);
        tracing::info!(client = %ip, "ban lifted through the admin API");
        Ok(Json(json!({ "lifted": ip })))
    } else {
        Err(AdminError::NotFound(format!("ban of {ip}")))
    }
}

fn key_text(key: &LimitKey) -> String {
    match key {
        LimitKey::ClientIp => "client_ip".into(),
        LimitKey::Header(n) => format!("header:{n}"),
        LimitKey::Cookie(n) => format!("cookie:{n}"),
        LimitKey::Query(n) => format!("query:{n}"),
        LimitKey::Form(n) => format!("form:{n}"),
        LimitKey::Global => "global".into(),
        LimitKey::Any(list) => list.iter().map(key_text).collect::<Vec<_>>().join(", "),
    }
}

/// The `limits` section of `/status`.
pub fn limits_status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    Value::Object(
        snapshot
            .config
            .limits
            .iter()
            .zip(&snapshot.shield.limits)
            .map(|(l, compiled)| {
                (
                    l.name.clone(),
                    json!({
                        "key": key_text(&l.key),
                        "rate": format!("{}/{}s", l.rate.count, l.rate.per.as_secs()),
                        "burst": l.burst,
                        "mode": match l.mode { LimitMode::Enforce => "enforce", LimitMode::DryRun => "dry_run" },
                        "max_keys": l.max_keys,
                        "tracked_keys": compiled.state.tracked_keys(),
                        "refusals": compiled.state.refusals.load(Ordering::Relaxed),
                        "overflow_refusals": compiled.state.overflow_refusals.load(Ordering::Relaxed),
                    }),
                )
            })
            .collect(),
    )
}

/// The `bans` section of `/status`: how many, how many were dropped to make room, and the most
/// recent ones (the whole list is paged on `/bans`).
pub fn bans_status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    let bans = &snapshot.shield.state.bans;
    json!({
        "count": bans.active(),
        "evicted": bans.evicted(),
        "recent": ban_entries(bans.list(0, RECENT_BANS)),
    })
}
