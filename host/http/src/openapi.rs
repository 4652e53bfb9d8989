//! The OpenAPI document, generated from the handlers' annotations; `docs/openapi.json` is a
//! checked-in copy that a test keeps equal.

use crate::{deployments, events, logs, problem};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Stratus API", version = "1",
        description = "The control plane's HTTP API (see docs/http-api.md)."),
    paths(
        deployments::list,
        deployments::get_one,
        deployments::launch,
        deployments::scale,
        deployments::terminate,
        events::events,
        logs::logs,
        serve,
    ),
    components(schemas(problem::Problem, problem::FileProblem, events::EventView)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON, as checked in.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
        + "\n"
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, body = Object, description = "OpenAPI 3.1")),
    security(("bearer" = [])))]
pub async fn serve() -> Json<serde_json::Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}
