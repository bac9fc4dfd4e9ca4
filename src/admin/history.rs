//! `GET /history`: the last 15 minutes, second by second, and the events marked on them (the
//! shape is in docs/contract.md). Guarded like `/status`: the token when there is one, and the
//! browser guard's Host and Origin checks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::runtime::Runtime;

pub async fn history(State(runtime): State<Arc<Runtime>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(runtime.history.to_json()),
    )
        .into_response()
}
