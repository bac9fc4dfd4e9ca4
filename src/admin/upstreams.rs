//! Admin calls and status of upstreams: datacenters, servers, drains.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AdminError;
use crate::history::EventKind;
use crate::runtime::{Runtime, Snapshot};
use crate::telemetry::rfc3339;
use crate::upstream::Upstream;

/// Routes under `/upstreams`: drain and undrain a datacenter or a server.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route(
            "/upstreams/{upstream}/datacenters/{datacenter}/{action}",
            post(datacenter_drain),
        )
        .route(
            "/upstreams/{upstream}/servers/{server}/{action}",
            post(server_drain),
        )
}

/// `drain` → true, `undrain` → false.
fn drain_action(action: &str) -> Result<bool, AdminError> {
    match action {
        "drain" => Ok(true),
        "undrain" => Ok(false),
        other => Err(AdminError::NotFound(format!("action {other:?}"))),
    }
}

fn drain_event(drain: bool) -> EventKind {
    if drain {
        EventKind::Drain
    } else {
        EventKind::Undrain
    }
}

fn find_upstream(snapshot: &Snapshot, name: &str) -> Result<Arc<Upstream>, AdminError> {
    snapshot
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("upstream {name:?}")))
}

async fn datacenter_drain(
    State(runtime): State<Arc<Runtime>>,
    Path((upstream, datacenter, action)): Path<(String, String, String)>,
) -> Result<Json<Value>, AdminError> {
    let drain = drain_action(&action)?;
    let upstream = find_upstream(&runtime.load(), &upstream)?;
    let dc = upstream
        .datacenters
        .iter()
        .find(|dc| dc.name == datacenter)
        .ok_or_else(|| AdminError::NotFound(format!("datacenter {datacenter:?}")))?;
    let was = dc.state.drained.swap(drain, Ordering::AcqRel);
    if was != drain {
        tracing::warn!(upstream = %upstream.name, datacenter = %dc.name, drained = drain, "datacenter {action}ed by the admin API");
        runtime.history.events.record(
            drain_event(drain),
            &format!("{}/{} (datacenter)", upstream.name, dc.name),
        );
    }
    upstream.evaluate();
    Ok(Json(json!({
        "upstream": upstream.name,
        "datacenter": dc.name,
        "drained": drain,
        "changed": was != drain,
        "active_datacenter": active_name(&upstream),
    })))
}

async fn server_drain(
    State(runtime): State<Arc<Runtime>>,
    Path((upstream, server, action)): Path<(String, String, String)>,
) -> Result<Json<Value>, AdminError> {
    let drain = drain_action(&action)?;
    let upstream = find_upstream(&runtime.load(), &upstream)?;
    let address: Option<SocketAddr> = server.parse().ok();
    let (dc, found) = upstream
        .datacenters
        .iter()
        .find_map(|dc| {
            dc.servers
                .iter()
                .find(|s| Some(s.address) == address)
                .map(|s| (dc, s))
        })
        .ok_or_else(|| AdminError::NotFound(format!("server {server:?}")))?;
    let was = found.state.drained.swap(drain, Ordering::AcqRel);
    if was != drain {
        tracing::warn!(upstream = %upstream.name, datacenter = %dc.name, server = %found.address, drained = drain, "server {action}ed by the admin API");
        runtime.history.events.record(
            drain_event(drain),
            &format!("{}/{}/{} (server)", upstream.name, dc.name, found.address),
        );
    }
    upstream.evaluate();
    Ok(Json(json!({
        "upstream": upstream.name,
        "datacenter": dc.name,
        "server": found.address.to_string(),
        "drained": drain,
        "changed": was != drain,
        "in_flight": found.state.in_flight.load(Ordering::Relaxed),
        "active_datacenter": active_name(&upstream),
    })))
}

fn active_name(upstream: &Upstream) -> Option<&str> {
    upstream
        .active_datacenter()
        .and_then(|i| upstream.datacenters.get(i))
        .map(|dc| dc.name.as_str())
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).ceil() / 10.0
}

/// The `upstreams` section of `/status`.
pub fn status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    let mut upstreams = Map::new();
    for upstream in &snapshot.upstreams {
        let now = upstream.now_ms();
        let active = upstream.active_datacenter();
        let datacenters: Vec<Value> = upstream
            .datacenters
            .iter()
            .enumerate()
            .map(|(index, dc)| {
                let servers: Vec<Value> = dc
                    .servers
                    .iter()
                    .map(|server| {
                        let state = &server.state;
                        let ejection = state.ejection.view(now);
                        json!({
                            "address": server.address.to_string(),
                            "health": state.health.get().as_str(),
                            "usable": state.usable(now),
                            "drained": state.drained.load(Ordering::Relaxed),
                            "ejected": ejection.until_ms.is_some(),
                            "ejected_until": ejection.until_ms.map(|until| {
                                rfc3339(SystemTime::now() + Duration::from_millis(until - now))
                            }),
                            "ejection": {
                                "remaining_seconds": ejection.until_ms.map(|until| seconds(Duration::from_millis(until - now))),
                                "count": ejection.count,
                                "consecutive_connect_failures": ejection.consecutive_connect_failures,
                                "consecutive_server_failures": ejection.consecutive_server_failures,
                            },
                            "in_flight": state.in_flight.load(Ordering::Relaxed),
                            "requests": state.requests.load(Ordering::Relaxed),
                            "failures": state.failures.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                let remaining = upstream.failback_remaining(index, now);
                let failing_back = match (remaining, active) {
                    (Some(left), Some(active)) if index < active && !left.is_zero() => Some(left),
                    (Some(left), None) if !left.is_zero() => Some(left),
                    _ => None,
                };
                let state = if dc.state.drained.load(Ordering::Relaxed) {
                    "draining".to_string()
                } else if let Some(left) = failing_back {
                    format!("failing back in {} s", left.as_secs_f64().ceil() as u64)
                } else if dc.state.is_up() {
                    "up".to_string()
                } else {
                    "down".to_string()
                };
                json!({
                    "name": dc.name,
                    "active": Some(index) == active,
                    "state": state,
                    "failback_in_seconds": failing_back.map(seconds),
                    "min_healthy": dc.min_healthy,
                    "servers": servers,
                })
            })
            .collect();
        let (requests, retries) = upstream.state.budget.window(now);
        upstreams.insert(
            upstream.name.clone(),
            json!({
                "active_datacenter": active_name(upstream),
                "when_all_down": match upstream.config.when_all_down {
                    crate::config::WhenAllDown::Maintenance => "maintenance",
                    crate::config::WhenAllDown::TryAll => "try_all",
                },
                "retry_budget": { "requests_10s": requests, "retries_10s": retries },
                "datacenters": datacenters,
            }),
        );
    }
    Value::Object(upstreams)
}
