//! The operator token: created at first start (`<state>/keys/operator-token`, 64 hex digits,
//! mode 0600 in the 0700 key directory), required as `Authorization: Bearer` on every `/v1`
//! request. Every mutation is logged with its caller.

use crate::ApiState;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stratus_cloud::{KeyError, KeyStore, Secret};
use stratus_control::paths::{OPERATOR_TOKEN, StatePaths};
use stratus_engine::logs::{Component, Subject};

/// Random bytes in a token (64 hex digits).
const TOKEN_BYTES: usize = 32;

/// The operator token, generated the first time.
pub fn operator_token(paths: &StatePaths) -> Result<Secret, KeyError> {
    let keys = KeyStore::open(paths.keys())?;
    if let Some(token) = keys.get(OPERATOR_TOKEN)? {
        return Ok(token);
    }
    let token = Secret::new(hex::encode(rand::random::<[u8; TOKEN_BYTES]>()));
    keys.set(OPERATOR_TOKEN, &token)?;
    Ok(token)
}

/// Refuses a request without the token (401), and logs every accepted mutation.
pub async fn require_token(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<crate::tls::Peer>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), state.token.as_bytes()) {
        let mut res = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API needs `Authorization: Bearer <token>`, the token being the operator \
             token in the state directory's keys/operator-token",
        )
        .into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
        return res;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        // Inside `/v1` the URI is the nested one; the log names the path as the client sent it.
        let path = req
            .extensions()
            .get::<OriginalUri>()
            .map_or(req.uri().path(), |u| u.path());
        state.ctx.logs.info(
            Component::Dispatcher,
            Subject::default(),
            &format!(
                "HTTP {} {path} by the operator token from {peer}",
                req.method(),
            ),
        );
    }
    next.run(req).await
}

/// Compares secrets without leaking their common prefix length through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_created_once_as_hex_in_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        let first = operator_token(&paths).unwrap();
        assert_eq!(first.expose().len(), 2 * TOKEN_BYTES);
        assert!(first.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(operator_token(&paths).unwrap().expose(), first.expose());
        let file = paths.keys().join(OPERATOR_TOKEN);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(constant_time_eq(b"abc", b"abc"));
    }
}
