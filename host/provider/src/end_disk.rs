//! The arguments of [`crate::CloudProvider::end_disk`], checked the same way by every provider
//! before it touches a disk: the names become path components (on this machine or a host),
//! so none may climb out of its directory.

use crate::{LaunchedServer, ProviderError};

/// Refuses a deployment, server id or kept-disk label that is not a plain name.
pub fn check_end_disk(
    deployment: &str,
    server: &LaunchedServer,
    keep: Option<&str>,
) -> Result<(), ProviderError> {
    crate::local::check_name("deployment", deployment)?;
    crate::local::check_name("server id", &server.server_id)?;
    if let Some(label) = keep {
        crate::local::check_name("kept-disk label", label)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_climb_out_are_refused_and_plain_ones_pass() {
        let server = |id: &str| LaunchedServer {
            server_id: id.into(),
            address: std::net::Ipv4Addr::LOCALHOST,
            handle: crate::ProviderHandle {
                provider: "local".into(),
                data: serde_json::Value::Null,
            },
        };
        assert!(check_end_disk("shop", &server("app-1"), Some("post-mortem")).is_ok());
        assert!(check_end_disk("shop", &server("app-1"), None).is_ok());
        for (dep, id, keep) in [
            ("..", "app-1", None),
            ("shop", "../x", None),
            ("shop", "app-1", Some("../../etc")),
            ("shop", "app-1", Some("")),
            ("sh op", "app-1", None),
        ] {
            let e = check_end_disk(dep, &server(id), keep)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("invalid "), "{dep} {id} {keep:?}: {e}");
        }
    }
}
