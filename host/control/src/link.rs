//! The dispatcher seen through the engine's [`AgentLink`] trait.

use crate::dispatcher::{DispatchError, Dispatcher};
use futures::future::BoxFuture;
use std::time::Duration;
use stratus_engine::{AgentLink, LinkError, ReportedAddress};
use stratus_protocol::{AgentReply, AgentRequest};

fn key(deployment: &str, server: &str) -> (String, String) {
    (deployment.to_string(), server.to_string())
}

fn convert(e: DispatchError) -> LinkError {
    match e {
        DispatchError::NotConnected(server, d) => LinkError::NotConnected {
            server,
            secs: d.as_secs(),
        },
        DispatchError::Disconnected(server) => LinkError::Disconnected { server },
        DispatchError::Timeout(server, d) => LinkError::Timeout {
            server,
            secs: d.as_secs(),
        },
    }
}

impl AgentLink for Dispatcher {
    fn expect<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        digest: String,
    ) -> BoxFuture<'a, ()> {
        Box::pin(Dispatcher::expect(self, key(deployment, server), digest))
    }

    fn offer<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        digest: String,
    ) -> BoxFuture<'a, bool> {
        Box::pin(Dispatcher::offer(self, key(deployment, server), digest))
    }

    fn settle<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        digest: String,
        adopted: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            Dispatcher::settle(self, &key(deployment, server), &digest, adopted).await
        })
    }

    fn forget<'a>(&'a self, deployment: &'a str, server: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { Dispatcher::forget(self, &key(deployment, server)).await })
    }

    fn wait_connected<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            Dispatcher::wait_connected(self, &key(deployment, server), limit)
                .await
                .map_err(convert)
        })
    }

    fn reported_address<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Option<ReportedAddress>> {
        Box::pin(async move { Dispatcher::reported_address(self, &key(deployment, server)).await })
    }

    fn call<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        request: AgentRequest,
        limit: Duration,
    ) -> BoxFuture<'a, Result<AgentReply, LinkError>> {
        Box::pin(async move {
            Dispatcher::call(self, &key(deployment, server), request, limit)
                .await
                .map_err(convert)
        })
    }
}
