//! Deployments: list, get, launch (a file on this machine or an uploaded tar.gz), scale a
//! tier, terminate. Each handler only translates to and from [`App`](stratus_control::app::App).

use crate::ApiState;
use crate::problem::Problem;
use crate::upload::{self, UploadError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use stratus_control::app::FileAccess;
use stratus_control::status::DeploymentView;
use stratus_engine::targets::TierTarget;
use utoipa::{IntoParams, ToSchema};

/// Every deployment, each as one entry of `stratus status --output json`.
#[derive(Serialize, ToSchema)]
pub struct DeploymentList {
    /// The same objects as `stratus status --output json`'s `deployments`.
    #[schema(value_type = Vec<Object>)]
    pub deployments: Vec<DeploymentView>,
}

/// A deployment file on the control plane's machine.
#[derive(Deserialize, ToSchema)]
pub struct LaunchFile {
    /// Absolute path of the deployment file.
    pub file: String,
}

/// A deployment a task now works on.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub name: String,
    /// Its state when the request was accepted, e.g. `LAUNCHING`.
    pub state: String,
}

/// A new target for a tier; what is left out stays (a count moves into new bounds).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub count: Option<u32>,
    pub min: Option<u32>,
    pub max: Option<u32>,
}

/// A tier's target: its server count and bounds.
#[derive(Serialize, ToSchema)]
pub struct Target {
    pub count: u32,
    pub min: u32,
    pub max: u32,
}

impl From<TierTarget> for Target {
    fn from(t: TierTarget) -> Target {
        Target {
            count: t.count,
            min: t.min,
            max: t.max,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Scaled {
    pub old: Target,
    pub new: Target,
}

#[derive(Deserialize, IntoParams)]
pub struct TerminateQuery {
    /// Keep the servers' disks under `kept-disks/` for a post-mortem.
    #[serde(default)]
    pub keep_disks: bool,
}

/// List every deployment.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments",
    responses((status = 200, body = DeploymentList),
        (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(State(st): State<ApiState>) -> Result<Json<DeploymentList>, Problem> {
    let view = st.ctx.app.status(None)?;
    Ok(Json(DeploymentList {
        deployments: view.deployments,
    }))
}

/// One deployment: tiers, servers, services, states, health, endpoints and targets.
#[utoipa::path(get, path = "/v1/deployments/{name}", tag = "deployments",
    params(("name" = String, Path, description = "The deployment's name")),
    responses((status = 200, body = Object, description = "One entry of `stratus status --output json`"),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_one(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DeploymentView>, Problem> {
    one(&st, &name).map(Json)
}

fn one(st: &ApiState, name: &str) -> Result<DeploymentView, Problem> {
    st.ctx
        .app
        .status(Some(name))?
        .deployments
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found(format!("no deployment named {name}")))
}

/// Launch a deployment: JSON naming a file on the control plane's machine, or an
/// `application/gzip` body (a tar.gz of `deployment.toml` and its packages).
#[utoipa::path(post, path = "/v1/deployments", tag = "deployments",
    request_body(content(
        (LaunchFile = "application/json"),
        (Vec<u8> = "application/gzip"))),
    responses((status = 202, body = Accepted),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "The file was refused; `errors` lists each problem at its line and column"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn launch(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let (file, uploaded) = match essence {
        "application/json" => {
            let req: LaunchFile = serde_json::from_slice(&body)
                .map_err(|e| Problem::bad_request(format!("request body: {e}")))?;
            if !std::path::Path::new(&req.file).is_absolute() {
                return Err(Problem::bad_request(format!(
                    "file {:?} is not an absolute path on the control plane's machine",
                    req.file
                )));
            }
            (req.file, None)
        }
        "application/gzip" | "application/x-gzip" => {
            let uploads = st.ctx.paths.root.join("uploads");
            let providers = st.ctx.app.control_providers().clone();
            let file =
                tokio::task::spawn_blocking(move || upload::unpack(&body, &uploads, &providers))
                    .await
                    .map_err(|e| {
                        Problem::from(stratus_control::app::AppError::Internal(e.to_string()))
                    })?
                    .map_err(upload_problem)?;
            let text = file.to_string_lossy().into_owned();
            (text, file.parent().map(|p| p.to_path_buf()))
        }
        _ => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "Content-Type {content_type:?}: send application/json {{\"file\": PATH}} \
                     or an application/gzip tar.gz"
                ),
            ));
        }
    };
    // A path is the caller's choice: only a file anyone may read. An upload was unpacked by
    // the control plane itself.
    let access = if uploaded.is_some() {
        FileAccess::Operator
    } else {
        FileAccess::Anyone
    };
    match st.ctx.app.launch_as(&file, access).await {
        Ok(name) => {
            let state = one(&st, &name).map(|d| d.state).unwrap_or_default();
            Ok((StatusCode::ACCEPTED, Json(Accepted { name, state })))
        }
        Err(e) => {
            // A refused upload leaves nothing behind.
            if let Some(dir) = uploaded {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e.into())
        }
    }
}

fn upload_problem(e: UploadError) -> Problem {
    match e {
        UploadError::Io { .. } => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
        UploadError::TooLarge => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.to_string())
        }
        _ => Problem::new(StatusCode::BAD_REQUEST, "invalid-upload", e.to_string()),
    }
}

/// Give a tier a new target (count and/or bounds).
#[utoipa::path(post, path = "/v1/deployments/{name}/tiers/{tier}/scale", tag = "deployments",
    params(("name" = String, Path), ("tier" = String, Path)),
    request_body = ScaleRequest,
    responses((status = 202, body = Scaled),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn scale(
    State(st): State<ApiState>,
    Path((name, tier)): Path<(String, String)>,
    body: Result<Json<ScaleRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Scaled>), Problem> {
    let Json(req) = body.map_err(|e| Problem::bad_request(e.body_text()))?;
    if req.count.is_none() && req.min.is_none() && req.max.is_none() {
        return Err(Problem::bad_request(
            "give at least one of count, min and max",
        ));
    }
    let (old, new) = st
        .ctx
        .app
        .scale(&name, &tier, req.count, req.min, req.max)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Scaled {
            old: old.into(),
            new: new.into(),
        }),
    ))
}

/// Terminate a deployment: every server ends, its disk removed unless `keep_disks`.
#[utoipa::path(delete, path = "/v1/deployments/{name}", tag = "deployments",
    params(("name" = String, Path), TerminateQuery),
    responses((status = 202, body = Accepted),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn terminate(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<TerminateQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    st.ctx.app.terminate(&name, q.keep_disks).await?;
    let state = one(&st, &name).map(|d| d.state).unwrap_or_default();
    Ok((StatusCode::ACCEPTED, Json(Accepted { name, state })))
}
