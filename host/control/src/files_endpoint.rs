//! The control plane's file endpoint (`stratus_cloud::endpoint`): cloud files served to agents
//! over HTTPS with the control plane's TLS identity, on its own port of the agent listener's
//! address. Agents authenticate with their server's credential, which the dispatcher checks
//! against the digest it holds (a terminated server's is forgotten).

use crate::dispatcher::Dispatcher;
use futures::future::BoxFuture;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use stratus_cloud::{Authorize, CloudFiles, FileEndpoint, Secret};
use tokio::net::TcpListener;

impl Authorize for Dispatcher {
    fn verify<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        credential: &'a Secret,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let key = (deployment.to_string(), server.to_string());
            self.verify_credential(&key, credential.expose()).await
        })
    }
}

/// Starts the endpoint on a fresh port of `ip` (the agent listener's address) and returns its
/// base URL at `advertised` (the address agents dial), which the dispatcher names in every
/// agent's `Welcome`.
pub async fn start(
    files: CloudFiles,
    dispatcher: Dispatcher,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ip: IpAddr,
    advertised: IpAddr,
) -> std::io::Result<String> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
    let port = listener.local_addr()?.port();
    let endpoint = FileEndpoint::new(files, Arc::new(dispatcher), tls);
    tokio::spawn(endpoint.serve(listener));
    Ok(format!("https://{}", SocketAddr::new(advertised, port)))
}
