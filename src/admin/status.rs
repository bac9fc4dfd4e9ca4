//! `GET /status`: the state of the running proxy as JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::runtime::Runtime;
use crate::telemetry::in_flight;

pub async fn status(State(runtime): State<Arc<Runtime>>) -> Json<Value> {
    let snapshot = runtime.load();
    let config = &snapshot.config;

    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|compiled| {
            let route = &compiled.route;
            json!({
                "name": route.name,
                "host": route.host,
                "path_prefix": route.path_prefix,
                "methods": route.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "upstream": config.upstreams.get(route.upstream).map(|u| u.name.as_str()),
            })
        })
        .collect();

    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            json!({
                "address": l.address.to_string(),
                "tls": l.tls.is_some(),
                "http2": l.tls.as_ref().is_some_and(|t| t.http2),
            })
        })
        .collect();

    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": runtime.started.elapsed().as_secs(),
        "generation": snapshot.generation,
        "config_file": config.source.display().to_string(),
        "runtime_dir": config.server.runtime_dir.display().to_string(),
        "loaded_at": snapshot.loaded_at,
        "last_reload_error": runtime.last_reload_error.load_full().map(|e| e.to_string()),
        "ready": runtime.is_ready(),
        "admin_token_set": config.admin.token.is_some(),
        "draining": runtime.is_draining(),
        "connections_active": runtime.metrics.connections_active.get(),
        "requests_in_flight": in_flight(&runtime.metrics),
        "traffic": {
            "requests": runtime.metrics.requests_answered.load(Ordering::Relaxed),
            "errors_5xx": runtime.metrics.responses_5xx.load(Ordering::Relaxed),
        },
        "listeners": listeners,
        "routes": routes,
        "upstreams": super::upstreams::status(&runtime, &snapshot),
        "limits": super::shield::limits_status(&runtime, &snapshot),
        "bans": super::shield::bans_status(&runtime, &snapshot),
        "queues": super::queues::status(&runtime, &snapshot),
        "schedule": super::schedule::status(&runtime, &snapshot),
    }))
}
