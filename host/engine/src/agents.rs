//! What the engine needs from the dispatcher: wait for an agent, send it a request.

use futures::future::BoxFuture;
use std::net::IpAddr;
use std::time::Duration;
use stratus_protocol::{AgentReply, AgentRequest};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("agent of server {server} did not connect within {secs} s")]
    NotConnected { server: String, secs: u64 },
    #[error("agent of server {server} disconnected before answering")]
    Disconnected { server: String },
    #[error("agent of server {server} did not answer within {secs} s")]
    Timeout { server: String, secs: u64 },
}

/// What a connected agent said its server's address is (a cloud server's agent, told none by
/// its provider, takes the local address of its control connection), and the address that
/// connection comes from as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedAddress {
    pub claimed: IpAddr,
    /// `None` when the control plane could not tell (never for a TCP connection).
    pub peer: Option<IpAddr>,
}

/// Carries requests to agents. `deployment` and `server` name the server.
pub trait AgentLink: Send + Sync {
    /// Allows the agent to connect with a credential of this digest.
    fn expect<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        digest: String,
    ) -> BoxFuture<'a, ()>;
    /// Also accepts a credential of `digest` until [`AgentLink::settle`]; `false` (nothing
    /// changed) when the server is not expected or another credential is on offer already.
    fn offer<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        digest: String,
    ) -> BoxFuture<'a, bool>;
    /// Ends the offer of `digest`: with `adopted` it becomes the only credential accepted
    /// (if the server is still expected), without it is withdrawn.
    fn settle<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        digest: String,
        adopted: bool,
    ) -> BoxFuture<'a, ()>;
    /// Refuses the agent from now on.
    fn forget<'a>(&'a self, deployment: &'a str, server: &'a str) -> BoxFuture<'a, ()>;
    fn wait_connected<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<(), LinkError>>;
    fn call<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        request: AgentRequest,
        limit: Duration,
    ) -> BoxFuture<'a, Result<AgentReply, LinkError>>;
    /// The address the connected agent of the server reported in its hello; `None` when it
    /// reported none (its provider named the address) or is not connected.
    fn reported_address<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Option<ReportedAddress>> {
        let _ = (deployment, server);
        Box::pin(async { None })
    }
}
