//! The control plane's file endpoint (`stratus_cloud::endpoint`): cloud files served to agents
//! over HTTPS with the control plane's TLS identity, on its own port: a fixed one
//! (`files-listen`, for firewalls) or a fresh one of the agent listener's address at each
//! start. Agents learn its URL at the handshake and authenticate with their server's
//! credential, which the dispatcher checks against the digest it holds (a terminated server's
//! is forgotten).

use crate::dispatcher::Dispatcher;
use crate::server::ServeError;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use stratus_cloud::{Authorize, CloudFiles, FileEndpoint, Secret};
use stratus_protocol::DialAddress;
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

/// Starts the endpoint on `listen` (port 0: a fresh one) and returns its base URL at the host
/// agents dial (`advertised`, a name or an address), which the dispatcher names in every
/// agent's `Welcome`. A port in use is refused, naming it.
pub async fn start(
    files: CloudFiles,
    dispatcher: Dispatcher,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    listen: SocketAddr,
    advertised: &DialAddress,
) -> Result<String, ServeError> {
    let refused = |error| ServeError::FilesListen {
        addr: listen,
        error,
    };
    let listener = TcpListener::bind(listen).await.map_err(refused)?;
    let port = listener.local_addr().map_err(refused)?.port();
    let endpoint = FileEndpoint::new(files, Arc::new(dispatcher), tls);
    tokio::spawn(endpoint.serve(listener));
    Ok(format!("https://{}", advertised.with_port(port)))
}
