//! The journaled step runner: a step is recorded as started before it runs and as completed
//! (with its outcome) after, so a restarted control plane skips what is done and redoes only
//! what may have been cut short. Hooks are idempotent and agents answer a repeated call id with
//! the first run's report, so redoing a step never repeats a completed side effect.

use crate::engine::{Engine, EngineError};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::future::Future;
use stratus_model::step_key::StepKey;
use stratus_store::StepStatus;

/// Environment variables that make the control plane exit at a step boundary, so that tests can
/// prove crash-safe resume: `STRATUS_FAULT_EXIT_BEFORE=<substring>` exits after "started" is
/// recorded, `STRATUS_FAULT_EXIT_AFTER=<substring>` after "completed" is recorded.
pub const FAULT_BEFORE: &str = "STRATUS_FAULT_EXIT_BEFORE";
pub const FAULT_AFTER: &str = "STRATUS_FAULT_EXIT_AFTER";

/// Exit code of a control plane stopped by fault injection.
pub const FAULT_EXIT_CODE: i32 = 86;

fn fault(var: &str, key: &str) {
    if let Ok(pattern) = std::env::var(var)
        && !pattern.is_empty()
        && key.contains(&pattern)
    {
        eprintln!("fault injection: exiting at {var} {key}");
        std::process::exit(FAULT_EXIT_CODE);
    }
}

/// How a step's work starts: `resumed` when a stopped control plane left this run unfinished;
/// `run` counts the step's starts with new inputs (see `StepStatus::Fresh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRun {
    pub resumed: bool,
    pub run: u32,
}

/// The journal of `deployment`'s current launch, from the store alone (see
/// [`Engine::journal_id`]); the status view reads it without an engine.
pub fn journal_of(
    store: &stratus_store::Store,
    deployment: &str,
) -> Result<String, stratus_store::StoreError> {
    let epoch = store.meta(&format!("epoch/{deployment}"))?;
    Ok(format!("{deployment}#{}", epoch.as_deref().unwrap_or("1")))
}

/// A digest of a step's inputs: a completed step whose inputs changed runs again.
pub fn digest<T: Serialize>(input: &T) -> String {
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

impl Engine {
    /// The journal a deployment's steps go to: a new one for every launch after a terminate,
    /// so that launching a terminated deployment again does every step again.
    pub fn journal_id(&self, deployment: &str) -> Result<String, EngineError> {
        Ok(journal_of(&self.parts.store, deployment)?)
    }

    /// Starts a new journal for `deployment` (its previous launch was terminated).
    pub fn new_journal(&self, deployment: &str) -> Result<(), EngineError> {
        let key = format!("epoch/{deployment}");
        let next = self
            .parts
            .store
            .meta(&key)?
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(1)
            + 1;
        self.parts.store.set_meta(&key, &next.to_string())?;
        Ok(())
    }

    /// Runs `work` as the journaled step `key` of `deployment` unless it already completed.
    pub async fn step<T, F>(
        &self,
        deployment: &str,
        key: &StepKey,
        input_digest: &str,
        work: F,
    ) -> Result<T, EngineError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, EngineError>>,
    {
        self.step_with(deployment, key, input_digest, |_| work)
            .await
    }

    /// [`Engine::step`], telling `work` whether it resumes a run of the step that a stopped
    /// control plane left unfinished, or starts the step afresh, and which run it is.
    pub async fn step_with<T, F, W>(
        &self,
        deployment: &str,
        key: &StepKey,
        input_digest: &str,
        work: W,
    ) -> Result<T, EngineError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, EngineError>>,
        W: FnOnce(StepRun) -> F,
    {
        let store = &self.parts.store;
        let deployment = &self.journal_id(deployment)?;
        let key = &key.to_string();
        let resumed = match store.step_begin(deployment, key, input_digest)? {
            StepStatus::Completed { outcome } => {
                return serde_json::from_value(outcome).map_err(|e| {
                    EngineError::Other(format!("journal entry of step {key} is unreadable: {e}"))
                });
            }
            StepStatus::Fresh { run, .. } => StepRun {
                resumed: false,
                run,
            },
            StepStatus::Retry { run, .. } => StepRun { resumed: true, run },
        };
        fault(FAULT_BEFORE, key);
        match work(resumed).await {
            Ok(value) => {
                let json = serde_json::to_value(&value)
                    .map_err(|e| EngineError::Other(format!("step {key}: {e}")))?;
                store.step_complete(deployment, key, &json)?;
                fault(FAULT_AFTER, key);
                Ok(value)
            }
            Err(err) => {
                store.step_failed(deployment, key, &err.to_string())?;
                Err(err)
            }
        }
    }
}
