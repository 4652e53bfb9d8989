//! The control plane's HTTP API (`stratus serve --http ADDR`): versioned JSON under `/v1`
//! over the same application layer ([`App`](stratus_control::app::App)) as the line
//! protocol, bearer-token authentication, `application/problem+json` errors and events as
//! Server-Sent Events.
//!
//! # Layout
//! - `config.rs`: the address and the TLS rule for non-loopback binds.
//! - `auth.rs`: the operator token and the middleware that checks it and logs mutations.
//! - `problem.rs`: RFC 9457 errors.
//! - `router.rs`: the routes.
//! - `deployments.rs`: list, get, launch, scale, terminate.
//! - `events.rs`: the journal as Server-Sent Events, resumable with `Last-Event-ID`.
//! - `logs.rs`: a server's agent and hook logs.
//! - `upload.rs`: unpacking an uploaded tar.gz deployment, bounded and confined.
//! - `tls.rs`: the rustls listener.
//! - `limit.rs`: how many connections at once, and how long one may stay idle.
//! - `openapi.rs`: the OpenAPI document, generated from the handlers.
//! - `console.rs`: the web console's embedded files at `/` and `/console/*`.

mod auth;
mod config;
mod console;
mod deployments;
mod error;
mod events;
mod limit;
mod logs;
mod metrics;
pub mod openapi;
mod problem;
mod router;
mod tls;
pub mod upload;

pub use auth::operator_token;
pub use config::{HttpConfig, TlsFiles};
pub use error::HttpError;

use std::net::SocketAddr;
use std::sync::Arc;
use stratus_control::server::TransportContext;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub ctx: TransportContext,
    /// The operator token every `/v1` request must carry.
    pub token: Arc<str>,
    /// Event streams open now, at most [`events::MAX_EVENT_STREAMS`].
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// Binds `config.addr`, starts serving in the background and answers the bound address.
pub async fn start(ctx: TransportContext, config: HttpConfig) -> Result<SocketAddr, HttpError> {
    config.check()?;
    let token = operator_token(&ctx.paths)?;
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: config.addr,
        source,
    })?;
    let state = ApiState {
        ctx,
        token: Arc::from(token.expose()),
        streams: Arc::new(tokio::sync::Semaphore::new(events::MAX_EVENT_STREAMS)),
    };
    let app = router::router(state).into_make_service_with_connect_info::<tls::Peer>();
    match tls {
        Some(acceptor) => {
            let listener = limit::Limited::new(tls::TlsListener::new(listener, acceptor));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        None => {
            let listener = limit::Limited::new(listener);
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    Ok(addr)
}
