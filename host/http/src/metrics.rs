//! `GET /metrics`: the Prometheus text of `stratus-telemetry`. It needs no operator token: it
//! holds no secret and no deployment, server or tier name, only bounded labels.

use crate::ApiState;
use crate::problem::Problem;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The `/metrics` route; collecting starts as it is mounted (journal writes are timed).
pub fn routes() -> Router<ApiState> {
    stratus_telemetry::install();
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let store = state.ctx.store.clone();
    // Reading the store blocks; keep it off the runtime's workers.
    let rendered = tokio::task::spawn_blocking(move || stratus_telemetry::render(&store)).await;
    match rendered {
        Ok(Ok(text)) => ([(CONTENT_TYPE, stratus_telemetry::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string())
            .into_response(),
        Err(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            "rendering the metrics stopped",
        )
        .into_response(),
    }
}
