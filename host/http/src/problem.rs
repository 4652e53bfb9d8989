//! Errors as `application/problem+json` (RFC 9457), built from the application layer's typed
//! errors so that a status code follows from the [`ErrorKind`], never from message text.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stratus_control::app::AppError;
use stratus_protocol::ErrorKind;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem of a deployment file, at its file, line and column.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// An RFC 9457 problem; `type` is a `urn:stratus:problem:<kind>` URI.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The deployment file's problems, when the file was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FileProblem>,
}

impl Problem {
    /// A problem of kind `kind` (a short slug, e.g. `not-found`).
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:stratus:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Problem {
        let (status, kind) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Capacity => (StatusCode::INSUFFICIENT_STORAGE, "capacity"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut problem = Problem::new(status, kind, e.to_string());
        if let AppError::InvalidFile(errors) = &e {
            problem.kind = "urn:stratus:problem:invalid-file".into();
            problem.errors = errors
                .iter()
                .map(|s| FileProblem {
                    file: s.file.display().to_string(),
                    line: s.line,
                    column: s.column,
                    message: s.message.clone(),
                })
                .collect();
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_errors_become_problems_with_their_status() {
        let p = Problem::from(AppError::NotFound {
            deployment: "web".into(),
        });
        assert_eq!(p.status, 404);
        assert_eq!(p.kind, "urn:stratus:problem:not-found");
        assert_eq!(p.detail, "no deployment named web");
        let p = Problem::from(AppError::Conflict {
            deployment: "web".into(),
            state: "LAUNCHING".into(),
            wanted: "wait".into(),
        });
        assert_eq!(p.status, 409);
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("errors").is_none(), "{json}");
        assert_eq!(json["type"], "urn:stratus:problem:conflict");
    }

    #[test]
    fn a_refused_file_lists_each_problem_at_its_line_and_column() {
        let errors = stratus_model::spec::DeploymentSpec::from_str(
            "[deployment]\nname = \"x\"\n[tiers.a]\nmin = \"two\"\n",
            "/tmp/d.toml",
        )
        .unwrap_err();
        let p = Problem::from(AppError::InvalidFile(errors));
        assert_eq!(p.status, 400);
        assert!(!p.errors.is_empty());
        assert_eq!(p.errors[0].file, "/tmp/d.toml");
        assert!(p.errors[0].line >= 1 && p.errors[0].column >= 1, "{p:?}");
    }
}
