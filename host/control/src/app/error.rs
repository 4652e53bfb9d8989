//! Why the application layer refused or failed a request, typed so that each transport maps it
//! to its own answer (the line protocol's [`ErrorKind`], an HTTP status code).

use stratus_engine::EngineError;
use stratus_engine::capacity::NoRoom;
use stratus_engine::targets::TargetError;
use stratus_model::SpecErrors;
use stratus_protocol::ErrorKind;
use stratus_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no deployment named {deployment}")]
    NotFound { deployment: String },
    #[error("deployment {deployment} has no server {server}")]
    NoServer { deployment: String, server: String },
    /// The server's log is on its host, and its agent cannot be asked for it now.
    #[error("agent of {server} is not connected ({why}); its log is on its host")]
    AgentNotConnected { server: String, why: String },
    /// The agent could not read its log (its own words, bounded).
    #[error("agent of {server} could not read its log: {message}")]
    AgentLog { server: String, message: String },
    /// The deployment file could not be read at all.
    #[error("{file}: {message}")]
    Unreadable { file: String, message: String },
    /// The deployment file's problems, each at its file:line:column.
    #[error("{0}")]
    InvalidFile(SpecErrors),
    /// The deployment's state does not allow the request now.
    #[error("deployment {deployment} is {state}; {wanted}")]
    Conflict {
        deployment: String,
        /// The state's name, e.g. `LAUNCHING`.
        state: String,
        /// What the operator can do instead.
        wanted: String,
    },
    /// The new file changes something a running deployment cannot take.
    #[error("deployment {deployment}: {reason}; nothing was applied")]
    CannotApply { deployment: String, reason: String },
    #[error(transparent)]
    Capacity(NoRoom),
    #[error(transparent)]
    Target(TargetError),
    #[error(transparent)]
    Engine(EngineError),
    #[error("journal: {0}")]
    Store(#[from] StoreError),
    /// A task of the control plane itself failed (e.g. a validation thread panicked).
    #[error("{0}")]
    Internal(String),
    /// A scaling decision cast on a target that changed meanwhile; nothing was scaled.
    #[error("the tier's target changed while its servers voted; nothing was scaled")]
    Stale,
}

impl From<EngineError> for AppError {
    /// A target refused by the engine is the operator's to fix, not the engine's failure.
    fn from(e: EngineError) -> AppError {
        match e {
            EngineError::Target(t) => AppError::Target(t),
            EngineError::Store(s) => AppError::Store(s),
            other => AppError::Engine(other),
        }
    }
}

impl AppError {
    /// The kind of refusal, for clients (and HTTP status codes: 404, 400, 409, 507, 500).
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppError::NotFound { .. }
            | AppError::NoServer { .. }
            | AppError::Target(TargetError::UnknownTier { .. }) => ErrorKind::NotFound,
            AppError::Unreadable { .. } | AppError::InvalidFile(_) | AppError::Target(_) => {
                ErrorKind::Invalid
            }
            AppError::Conflict { .. }
            | AppError::CannotApply { .. }
            | AppError::Stale
            | AppError::AgentNotConnected { .. } => ErrorKind::Conflict,
            AppError::Capacity(_) => ErrorKind::Capacity,
            AppError::Engine(_)
            | AppError::Store(_)
            | AppError::Internal(_)
            | AppError::AgentLog { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_the_kind_a_client_acts_on() {
        let not_found = AppError::NotFound {
            deployment: "web".into(),
        };
        assert_eq!(not_found.kind(), ErrorKind::NotFound);
        assert_eq!(not_found.to_string(), "no deployment named web");
        let unknown_tier = AppError::from(EngineError::Target(TargetError::UnknownTier {
            deployment: "web".into(),
            tier: "nosuch".into(),
        }));
        assert_eq!(unknown_tier.kind(), ErrorKind::NotFound);
        let bounds = AppError::Target(TargetError::OutOfBounds {
            tier: "app".into(),
            count: 9,
            min: 1,
            max: 4,
        });
        assert_eq!(bounds.kind(), ErrorKind::Invalid);
        assert_eq!(
            bounds.to_string(),
            "tier app: count 9 is outside its bounds 1..4"
        );
        let conflict = AppError::Conflict {
            deployment: "web".into(),
            state: "LAUNCHING".into(),
            wanted: "scale it once it is RUNNING".into(),
        };
        assert_eq!(conflict.kind(), ErrorKind::Conflict);
        assert_eq!(
            conflict.to_string(),
            "deployment web is LAUNCHING; scale it once it is RUNNING"
        );
        assert_eq!(
            AppError::from(EngineError::Other("x".into())).kind(),
            ErrorKind::Internal
        );
    }

    #[test]
    fn a_full_provider_is_a_capacity_error_naming_the_limit() {
        let e = AppError::Capacity(NoRoom {
            deployment: "web".into(),
            provider: "local".into(),
            needed: 3,
            capacity: stratus_provider::Capacity { max: 10, used: 9 },
            done: "scaled",
        });
        assert_eq!(e.kind(), ErrorKind::Capacity);
        let text = e.to_string();
        assert!(text.contains("needs 3 servers"), "{text}");
        assert!(text.contains("max-servers 10"), "{text}");
        assert!(text.ends_with("nothing was scaled"), "{text}");
    }
}
