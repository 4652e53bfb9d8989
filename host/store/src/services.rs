//! Service instances: one service on one server.

use crate::{Store, StoreError, decode_state, encode_state, now_ms};
use rusqlite::{Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The state of a service on a server; `S` is the service state type.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInstanceRow<S> {
    pub deployment: String,
    /// The service's name in the deployment file.
    pub service: String,
    /// The service's id, as in `/mnt/services/a<id>`.
    pub service_id: String,
    pub server_id: String,
    pub state: S,
    /// Unix milliseconds.
    pub updated_at: i64,
}

fn from_row<S: DeserializeOwned>(row: &Row<'_>) -> Result<ServiceInstanceRow<S>, StoreError> {
    let state: String = row.get(4)?;
    Ok(ServiceInstanceRow {
        deployment: row.get(0)?,
        service: row.get(1)?,
        service_id: row.get(2)?,
        server_id: row.get(3)?,
        state: decode_state(&state)?,
        updated_at: row.get(5)?,
    })
}

impl Store {
    /// Creates or updates the instance of `service` on `server_id`.
    pub fn set_service_state<S: Serialize>(
        &self,
        deployment: &str,
        service: &str,
        service_id: &str,
        server_id: &str,
        state: &S,
    ) -> Result<(), StoreError> {
        let state = encode_state(state)?;
        self.conn().prepare_cached("INSERT INTO service_instances (deployment, service, service_id, server_id, state, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (deployment, service, server_id) DO UPDATE SET service_id = ?3,
                 state = ?5, updated_at = ?6")?.execute(params![deployment, service, service_id, server_id, state, now_ms()],
        )?;
        Ok(())
    }

    /// Every service instance of a deployment, by service then server.
    pub fn service_instances<S: DeserializeOwned>(
        &self,
        deployment: &str,
    ) -> Result<Vec<ServiceInstanceRow<S>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT deployment, service, service_id, server_id, state, updated_at
             FROM service_instances WHERE deployment = ?1 ORDER BY service, server_id",
        )?;
        let rows = stmt.query_map([deployment], |r| Ok(from_row(r)))?;
        rows.map(|r| r?).collect()
    }

    /// The instance of `service` on `server_id`, if there is one: one row by its key, for
    /// callers that would otherwise load the whole deployment's (a health result each).
    pub fn service_instance<S: DeserializeOwned>(
        &self,
        deployment: &str,
        service: &str,
        server_id: &str,
    ) -> Result<Option<ServiceInstanceRow<S>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT deployment, service, service_id, server_id, state, updated_at
             FROM service_instances WHERE deployment = ?1 AND service = ?2 AND server_id = ?3",
        )?;
        let mut rows =
            stmt.query_map(params![deployment, service, server_id], |r| Ok(from_row(r)))?;
        rows.next().transpose()?.transpose()
    }

    /// Forgets the instance of `service` on `server_id` (the service left the deployment);
    /// whether there was one.
    pub fn delete_service_instance(
        &self,
        deployment: &str,
        service: &str,
        server_id: &str,
    ) -> Result<bool, StoreError> {
        let n = self.conn().prepare_cached("DELETE FROM service_instances WHERE deployment = ?1 AND service = ?2 AND server_id = ?3")?.execute(params![deployment, service, server_id],
        )?;
        Ok(n > 0)
    }
}
