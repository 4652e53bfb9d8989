//! The journal: each step of a launch is recorded as started before it runs and as completed
//! or failed after, so a control plane restarted at any instant knows what is already done.
//!
//! A step is identified by `(deployment, key)`; the key names the step and its target, e.g.
//! `configure/mysql/s3`. `input_digest` fingerprints the step's inputs: if a completed step
//! is begun again with a *different* digest, its inputs have changed and the step is treated
//! as fresh (attempts restart at 1) rather than replaying the old outcome.

use crate::observe::{JournalWrite, timed};
use crate::{Store, StoreError, now_ms};
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// What the caller of [`Store::step_begin`] must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepStatus {
    /// Run the step: it never ran, its last attempt failed cleanly, or its inputs changed.
    /// `run` counts the times it started with new inputs after completing, from 1.
    Fresh { attempt: u32, run: u32 },
    /// Run the step again: it was started and never finished, so it may have partly happened.
    Retry { attempt: u32, run: u32 },
    /// Do not run the step: it completed with these inputs and this outcome.
    Completed { outcome: serde_json::Value },
}

/// Where a journaled step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Started,
    Completed,
    Failed,
}

impl StepState {
    fn as_str(self) -> &'static str {
        match self {
            StepState::Started => "started",
            StepState::Completed => "completed",
            StepState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<StepState, StoreError> {
        match s {
            "started" => Ok(StepState::Started),
            "completed" => Ok(StepState::Completed),
            "failed" => Ok(StepState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "unknown step status {other:?}"
            ))),
        }
    }
}

/// A step of the journal as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub key: String,
    pub status: StepState,
    pub attempts: u32,
    pub input_digest: String,
    pub outcome: Option<serde_json::Value>,
    pub error: Option<String>,
    /// Unix milliseconds of the latest start.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// See [`StepStatus::Fresh`].
    pub runs: u32,
}

fn from_row(row: &Row<'_>) -> Result<StepRow, StoreError> {
    let status: String = row.get(1)?;
    let outcome: Option<String> = row.get(4)?;
    Ok(StepRow {
        key: row.get(0)?,
        status: StepState::parse(&status)?,
        attempts: row.get(2)?,
        input_digest: row.get(3)?,
        outcome: outcome.map(|o| serde_json::from_str(&o)).transpose()?,
        error: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        runs: row.get(8)?,
    })
}

const COLUMNS: &str =
    "key, status, attempts, input_digest, outcome, error, started_at, finished_at, runs";

impl Store {
    /// Records durably that the step is starting (unless it already completed with the same
    /// inputs) and tells the caller whether to run it.
    pub fn step_begin(
        &self,
        deployment: &str,
        key: &str,
        input_digest: &str,
    ) -> Result<StepStatus, StoreError> {
        timed(JournalWrite::StepBegin, || {
            self.begin_step(deployment, key, input_digest)
        })
    }

    fn begin_step(
        &self,
        deployment: &str,
        key: &str,
        input_digest: &str,
    ) -> Result<StepStatus, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE takes the write lock first, so two writers cannot both see "not started".
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM steps WHERE deployment = ?1 AND key = ?2"
            ))?
            .query_row([deployment, key], |r| Ok(from_row(r)))
            .optional()?
            .transpose()?;
        let runs = |step: &Option<StepRow>| step.as_ref().map_or(1, |s| s.runs);
        let (status, attempt, run) = match &existing {
            Some(step) if step.status == StepState::Completed => {
                if step.input_digest == input_digest {
                    let outcome = step.outcome.clone().unwrap_or(serde_json::Value::Null);
                    return Ok(StepStatus::Completed { outcome });
                }
                let run = step.runs + 1;
                (StepStatus::Fresh { attempt: 1, run }, 1, run)
            }
            Some(step) if step.status == StepState::Started => {
                let (attempt, run) = (step.attempts + 1, step.runs);
                (StepStatus::Retry { attempt, run }, attempt, run)
            }
            Some(step) => {
                let (attempt, run) = (step.attempts + 1, step.runs);
                (StepStatus::Fresh { attempt, run }, attempt, run)
            }
            None => (StepStatus::Fresh { attempt: 1, run: 1 }, 1, runs(&None)),
        };
        tx.prepare_cached(
            "INSERT INTO steps (deployment, key, status, attempts, input_digest, outcome, error,
                 started_at, finished_at, runs)
             VALUES (?1, ?2, 'started', ?3, ?4, NULL, NULL, ?5, NULL, ?6)
             ON CONFLICT (deployment, key) DO UPDATE SET status = 'started', attempts = ?3,
                 input_digest = ?4, outcome = NULL, error = NULL, started_at = ?5,
                 finished_at = NULL, runs = ?6",
        )?
        .execute(params![
            deployment,
            key,
            attempt,
            input_digest,
            now_ms(),
            run
        ])?;
        tx.commit()?;
        Ok(status)
    }

    /// Records that a started step completed with `outcome`.
    pub fn step_complete(
        &self,
        deployment: &str,
        key: &str,
        outcome: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let outcome = serde_json::to_string(outcome)?;
        self.finish_step(deployment, key, StepState::Completed, Some(&outcome), None)
    }

    /// Records that a started step failed with `error` (which must not contain secrets).
    pub fn step_failed(&self, deployment: &str, key: &str, error: &str) -> Result<(), StoreError> {
        self.finish_step(deployment, key, StepState::Failed, None, Some(error))
    }

    fn finish_step(
        &self,
        deployment: &str,
        key: &str,
        status: StepState,
        outcome: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = timed(JournalWrite::StepEnd, || {
            self.conn()
                .prepare_cached(
                    "UPDATE steps SET status = ?3, outcome = ?4, error = ?5, finished_at = ?6
                 WHERE deployment = ?1 AND key = ?2",
                )?
                .execute(params![
                    deployment,
                    key,
                    status.as_str(),
                    outcome,
                    error,
                    now_ms()
                ])
        })?;
        if n == 0 {
            return Err(StoreError::StepNotStarted {
                deployment: deployment.to_string(),
                key: key.to_string(),
            });
        }
        Ok(())
    }

    /// One step of the journal, e.g. to explain what a deployment is waiting for.
    pub fn step(&self, deployment: &str, key: &str) -> Result<Option<StepRow>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM steps WHERE deployment = ?1 AND key = ?2");
        let row = conn
            .prepare_cached(&sql)?
            .query_row([deployment, key], |r| Ok(from_row(r)))
            .optional()?;
        row.transpose()
    }

    /// The journal of a deployment, in the order steps were (last) started.
    pub fn steps(&self, deployment: &str) -> Result<Vec<StepRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM steps WHERE deployment = ?1 ORDER BY started_at, rowid"
        ))?;
        let rows = stmt.query_map([deployment], |r| Ok(from_row(r)))?;
        rows.map(|r| r?).collect()
    }
}
