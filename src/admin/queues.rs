//! Admin calls and status of the login queues.

use std::sync::Arc;

use axum::Router;
use serde_json::{json, Value};

use crate::runtime::{Runtime, Snapshot};

/// Routes under `/queues`.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
}

/// The `queues` section of `/status`.
pub fn status(_runtime: &Runtime, snapshot: &Snapshot) -> Value {
    Value::Object(
        snapshot
            .queues
            .iter()
            .map(|q| (q.name.clone(), json!({})))
            .collect(),
    )
}
