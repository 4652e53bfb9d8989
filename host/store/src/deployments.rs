//! Deployments: the operator's spec as launched, and the deployment's state.

use crate::{Store, StoreError, decode_state, encode_state, now_ms};
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A deployment as stored; `S` is the deployment state type.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow<S> {
    pub name: String,
    pub spec_path: String,
    pub spec_toml: String,
    pub state: S,
    /// Why the state was last set, e.g. the cause of a failure.
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "name, spec_path, spec_toml, state, reason, created_at, updated_at";

fn from_row<S: DeserializeOwned>(row: &Row<'_>) -> Result<DeploymentRow<S>, StoreError> {
    let state: String = row.get(3)?;
    Ok(DeploymentRow {
        name: row.get(0)?,
        spec_path: row.get(1)?,
        spec_toml: row.get(2)?,
        state: decode_state(&state)?,
        reason: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

impl Store {
    /// Creates the deployment, or replaces its spec and state if it exists (keeping
    /// `created_at`), so that relaunching an edited file updates it in place.
    pub fn put_deployment<S: Serialize>(
        &self,
        name: &str,
        spec_path: &str,
        spec_toml: &str,
        state: &S,
    ) -> Result<(), StoreError> {
        let state = encode_state(state)?;
        let now = now_ms();
        self.conn().prepare_cached("INSERT INTO deployments (name, spec_path, spec_toml, state, reason, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET spec_path = ?2, spec_toml = ?3, state = ?4,
                 reason = NULL, updated_at = ?5")?.execute(params![name, spec_path, spec_toml, state, now],
        )?;
        Ok(())
    }

    /// Sets the state (and its reason, cleared when `None`) of an existing deployment.
    pub fn set_deployment_state<S: Serialize>(
        &self,
        name: &str,
        state: &S,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let state = encode_state(state)?;
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE deployments SET state = ?2, reason = ?3, updated_at = ?4 WHERE name = ?1",
            )?
            .execute(params![name, state, reason, now_ms()])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("deployment {name:?}")));
        }
        Ok(())
    }

    /// Sets the state (and reason) of deployment `name` only if its state is still `expected`;
    /// returns whether it did, so two writers cannot both move from one state.
    pub fn swap_deployment_state<S: Serialize>(
        &self,
        name: &str,
        expected: &S,
        state: &S,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (expected, state) = (encode_state(expected)?, encode_state(state)?);
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE deployments SET state = ?3, reason = ?4, updated_at = ?5
             WHERE name = ?1 AND state = ?2",
            )?
            .execute(params![name, expected, state, reason, now_ms()])?;
        Ok(n == 1)
    }

    /// One deployment, if it exists.
    pub fn deployment<S: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<DeploymentRow<S>>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM deployments WHERE name = ?1");
        let row = conn
            .prepare_cached(&sql)?
            .query_row([name], |r| Ok(from_row(r)))
            .optional()?;
        row.transpose()
    }

    /// All deployments, by name.
    pub fn deployments<S: DeserializeOwned>(&self) -> Result<Vec<DeploymentRow<S>>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM deployments ORDER BY name"))?;
        let rows = stmt.query_map([], |r| Ok(from_row(r)))?;
        rows.map(|r| r?).collect()
    }
}
