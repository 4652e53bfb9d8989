//! Servers of a deployment and their agents.

use crate::{Store, StoreError, decode_state, encode_state, now_ms};
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A server as stored; `A` is the agent state type. Only the digest of the agent's
/// credential is kept: the store must not become a second copy of the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow<A> {
    pub deployment: String,
    pub id: String,
    pub tier: String,
    pub name: String,
    pub address: String,
    /// The registry name of the provider that launched it.
    pub provider: String,
    /// That provider's handle data (opaque here); `None` before the provider answered.
    pub handle: Option<serde_json::Value>,
    pub agent_state: A,
    pub credential_digest: String,
}

const COLUMNS: &str =
    "deployment, id, tier, name, address, provider, handle, agent_state, credential_digest";

fn from_row<A: DeserializeOwned>(row: &Row<'_>) -> Result<ServerRow<A>, StoreError> {
    let state: String = row.get(7)?;
    let handle: Option<String> = row.get(6)?;
    Ok(ServerRow {
        deployment: row.get(0)?,
        id: row.get(1)?,
        tier: row.get(2)?,
        name: row.get(3)?,
        address: row.get(4)?,
        provider: row.get(5)?,
        handle: handle.as_deref().map(serde_json::from_str).transpose()?,
        agent_state: decode_state(&state)?,
        credential_digest: row.get(8)?,
    })
}

impl Store {
    /// Inserts the server or replaces every column of it.
    pub fn upsert_server<A: Serialize>(&self, server: &ServerRow<A>) -> Result<(), StoreError> {
        let state = encode_state(&server.agent_state)?;
        let handle = server.handle.as_ref().map(encode_state).transpose()?;
        self.conn()
            .prepare_cached(
                "INSERT INTO servers (deployment, id, tier, name, address, provider, handle,
                 agent_state, credential_digest, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (deployment, id) DO UPDATE SET tier = ?3, name = ?4, address = ?5,
                 provider = ?6, handle = ?7, agent_state = ?8, credential_digest = ?9,
                 updated_at = ?10",
            )?
            .execute(params![
                server.deployment,
                server.id,
                server.tier,
                server.name,
                server.address,
                server.provider,
                handle,
                state,
                server.credential_digest,
                now_ms()
            ])?;
        Ok(())
    }

    /// The servers of a deployment, by id.
    pub fn servers<A: DeserializeOwned>(
        &self,
        deployment: &str,
    ) -> Result<Vec<ServerRow<A>>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM servers WHERE deployment = ?1 ORDER BY id");
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([deployment], |r| Ok(from_row(r)))?;
        rows.map(|r| r?).collect()
    }

    /// One server, if it exists.
    pub fn server<A: DeserializeOwned>(
        &self,
        deployment: &str,
        id: &str,
    ) -> Result<Option<ServerRow<A>>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM servers WHERE deployment = ?1 AND id = ?2");
        let row = conn
            .prepare_cached(&sql)?
            .query_row([deployment, id], |r| Ok(from_row(r)))
            .optional()?;
        row.transpose()
    }

    /// Sets the agent state of an existing server.
    pub fn set_agent_state<A: Serialize>(
        &self,
        deployment: &str,
        id: &str,
        state: &A,
    ) -> Result<(), StoreError> {
        let state = encode_state(state)?;
        let n = self.conn().prepare_cached("UPDATE servers SET agent_state = ?3, updated_at = ?4 WHERE deployment = ?1 AND id = ?2")?.execute(params![deployment, id, state, now_ms()],
        )?;
        not_found_if_zero(n, deployment, id)
    }

    /// Sets the agent state of an existing server only if it still is `expected`; whether it
    /// did. Two writers deciding from the same old state (a terminate and the monitor seeing
    /// the connection close) cannot overwrite each other's outcome.
    pub fn swap_agent_state<A: Serialize>(
        &self,
        deployment: &str,
        id: &str,
        expected: &A,
        state: &A,
    ) -> Result<bool, StoreError> {
        let (expected, state) = (encode_state(expected)?, encode_state(state)?);
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE servers SET agent_state = ?4, updated_at = ?5
             WHERE deployment = ?1 AND id = ?2 AND agent_state = ?3",
            )?
            .execute(params![deployment, id, expected, state, now_ms()])?;
        Ok(n == 1)
    }

    /// Replaces (or clears) the provider handle of an existing server, e.g. when its agent
    /// came back as another process.
    pub fn set_server_handle(
        &self,
        deployment: &str,
        id: &str,
        handle: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let handle = handle.map(encode_state).transpose()?;
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE servers SET handle = ?3, updated_at = ?4 WHERE deployment = ?1 AND id = ?2",
            )?
            .execute(params![deployment, id, handle, now_ms()])?;
        not_found_if_zero(n, deployment, id)
    }

    /// Replaces the address of an existing server (a cloud server's, learned at its agent's
    /// handshake).
    pub fn set_server_address(
        &self,
        deployment: &str,
        id: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn().prepare_cached("UPDATE servers SET address = ?3, updated_at = ?4 WHERE deployment = ?1 AND id = ?2")?.execute(params![deployment, id, address, now_ms()],
        )?;
        not_found_if_zero(n, deployment, id)
    }

    /// Replaces the credential digest of a server (its launch credential was replaced);
    /// whether the server still exists.
    pub fn set_credential_digest(
        &self,
        deployment: &str,
        id: &str,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE servers SET credential_digest = ?3, updated_at = ?4
             WHERE deployment = ?1 AND id = ?2",
            )?
            .execute(params![deployment, id, digest, now_ms()])?;
        Ok(n == 1)
    }

    /// Removes a server and the service instances on it; returns whether it existed.
    pub fn delete_server(&self, deployment: &str, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "DELETE FROM service_instances WHERE deployment = ?1 AND server_id = ?2",
        )?
        .execute([deployment, id])?;
        let n = tx
            .prepare_cached("DELETE FROM servers WHERE deployment = ?1 AND id = ?2")?
            .execute([deployment, id])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

fn not_found_if_zero(n: usize, deployment: &str, id: &str) -> Result<(), StoreError> {
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "server {id:?} of deployment {deployment:?}"
        )));
    }
    Ok(())
}
