//! Admin calls and status of upstreams: datacenters, servers, drains.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::Router;
use serde_json::{json, Map, Value};

use crate::runtime::{Runtime, Snapshot};

/// Routes under `/upstreams`.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
}

/// The `upstreams` section of `/status`.
pub fn status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    let mut upstreams = Map::new();
    for upstream in &snapshot.upstreams {
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
                        json!({
                            "address": server.address.to_string(),
                            "health": "unknown",
                            "in_flight": server.in_flight.load(Ordering::Relaxed),
                            "requests": server.requests.load(Ordering::Relaxed),
                            "failures": server.failures.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                json!({
                    "name": dc.name,
                    "active": index == active,
                    "state": if index == active { "active" } else { "standby" },
                    "servers": servers,
                })
            })
            .collect();
        upstreams.insert(
            upstream.name.clone(),
            json!({
                "active_datacenter": upstream.datacenters.get(active).map(|dc| dc.name.as_str()),
                "datacenters": datacenters,
            }),
        );
    }
    Value::Object(upstreams)
}
