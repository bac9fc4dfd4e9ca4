//! Admin calls and status of the shield: limits and bans.

use std::sync::Arc;

use axum::Router;
use serde_json::{json, Value};

use crate::runtime::{Runtime, Snapshot};

/// Routes under `/bans`.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
}

/// The `limits` section of `/status`.
pub fn limits_status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    Value::Object(
        snapshot
            .config
            .limits
            .iter()
            .map(|l| (l.name.clone(), json!({})))
            .collect(),
    )
}

/// The `bans` section of `/status`.
pub fn bans_status(_runtime: &Runtime, _snapshot: &Snapshot) -> Value {
    json!([])
}
