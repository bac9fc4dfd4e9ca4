//! Admin calls and status of the login queues: `POST /queues/{q}/pause` and `/resume` (the
//! emergency brake: nobody is admitted, everybody waits), and the `queues` section of `/status`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AdminError;
use crate::history::EventKind;
use crate::runtime::{Runtime, Snapshot};

/// Tenants listed per queue in `/status`, deepest first.
const TOP_TENANTS: usize = 10;

/// Routes under `/queues`.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
}

async fn pause(
    State(runtime): State<Arc<Runtime>>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, AdminError> {
    set_paused(&runtime, &queue, true)
}

async fn resume(
    State(runtime): State<Arc<Runtime>>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, AdminError> {
    set_paused(&runtime, &queue, false)
}

fn set_paused(runtime: &Runtime, name: &str, paused: bool) -> Result<Json<Value>, AdminError> {
    let snapshot = runtime.load();
    let queue = snapshot
        .queues
        .iter()
        .find(|q| q.name == name)
        .ok_or_else(|| AdminError::NotFound(format!("queue {name:?}")))?;
    let was = queue.core.set_paused(paused);
    tracing::warn!(
        queue = name,
        paused,
        "login queue admissions {}",
        if paused { "paused" } else { "resumed" }
    );
    if was != paused {
        let kind = if paused {
            EventKind::QueuePause
        } else {
            EventKind::QueueResume
        };
        runtime.history.events.record(kind, name);
    }
    Ok(Json(json!({ "queue": name, "paused": paused })))
}

/// The `queues` section of `/status`.
pub fn status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    Value::Object(
        snapshot
            .queues
            .iter()
            .map(|q| {
                let s = q.core.status(TOP_TENANTS);
                let per_tenant: serde_json::Map<String, Value> = s
                    .top_tenants
                    .iter()
                    .map(|(tenant, depth)| (tenant.to_string(), Value::from(*depth)))
                    .collect();
                // The same, deepest first.
                let tenants: Vec<Value> = s
                    .top_tenants
                    .iter()
                    .map(|(tenant, depth)| json!({ "tenant": tenant.as_ref(), "waiting": depth }))
                    .collect();
                (
                    q.name.clone(),
                    json!({
                        "limit": s.limit,
                        "datacenter": s.datacenter.as_deref(),
                        "limits_by_datacenter": s
                            .limits_by_datacenter
                            .iter()
                            .map(|(dc, limit)| (dc.to_string(), Value::from(*limit)))
                            .collect::<serde_json::Map<String, Value>>(),
                        "adaptive": q.config.adaptive.map(|a| json!({"min": a.min, "max": a.max})),
                        "in_flight": s.in_flight,
                        "waiting": s.waiting,
                        "waiting_with_pass": s.passes_waiting,
                        "tenants_waiting": s.tenants_waiting,
                        "tenants": tenants,
                        "waiting_per_tenant": per_tenant,
                        "paused": s.paused,
                        "admitted": s.admitted,
                        "timed_out": s.timed_out,
                        "queue_full": s.queue_full,
                        "abandoned": s.abandoned,
                        "upstream_latency_ms": s.latency_ms,
                        "estimated_wait_seconds": s.eta_seconds,
                    }),
                )
            })
            .collect(),
    )
}
