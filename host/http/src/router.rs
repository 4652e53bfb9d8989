//! The routes: `/v1` behind the operator token, and what other parts add beside it.

use crate::problem::Problem;
use crate::{ApiState, auth, console, deployments, events, logs, openapi, upload};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route(
            "/deployments",
            get(deployments::list)
                .post(deployments::launch)
                .layer(DefaultBodyLimit::max(upload::MAX_UPLOAD_BYTES)),
        )
        .route(
            "/deployments/{name}",
            get(deployments::get_one).delete(deployments::terminate),
        )
        .route(
            "/deployments/{name}/tiers/{tier}/scale",
            post(deployments::scale),
        )
        .route("/deployments/{name}/servers/{server}/logs", get(logs::logs))
        .route("/events", get(events::events))
        .route("/openapi.json", get(openapi::serve))
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/v1", v1)
        // console routes (helper C)
        .merge(console::routes())
        .merge(crate::metrics::routes())
        .with_state(state)
}

async fn unknown(axum::extract::OriginalUri(uri): axum::extract::OriginalUri) -> Problem {
    Problem::not_found(format!("no route {}", uri.path()))
}
