//! The event log behind `stratus events`: append-only, globally ordered by `seq`.

use crate::observe::{JournalWrite, timed};
use crate::{Store, StoreError, now_ms};
use rusqlite::{Row, params};
use serde::{Deserialize, Serialize};

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub deployment: Option<String>,
    /// Who speaks: `scaling-worker`, `configuration-worker`, `monitor`, `dispatcher`, `agent`.
    pub component: String,
    pub server: Option<String>,
    pub service: Option<String>,
    /// `info`, `warn`, `error`, ...
    pub level: String,
    /// Must not contain secrets.
    pub message: String,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub seq: i64,
    /// Unix milliseconds.
    pub time: i64,
    pub deployment: Option<String>,
    pub component: String,
    pub server: Option<String>,
    pub service: Option<String>,
    pub level: String,
    pub message: String,
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: row.get(0)?,
        time: row.get(1)?,
        deployment: row.get(2)?,
        component: row.get(3)?,
        server: row.get(4)?,
        service: row.get(5)?,
        level: row.get(6)?,
        message: row.get(7)?,
    })
}

impl Store {
    /// Appends an event and returns its sequence number (strictly increasing, starting at 1).
    pub fn append_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        timed(JournalWrite::Event, || self.insert_event(event))
    }

    fn insert_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO events (time, deployment, component, server, service, level, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            now_ms(),
            event.deployment,
            event.component,
            event.server,
            event.service,
            event.level,
            event.message
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// Up to `limit` events with `seq > after_seq`, oldest first, optionally of one
    /// deployment only; pass the last seen `seq` to follow the log.
    pub fn events_since(
        &self,
        after_seq: i64,
        deployment: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, time, deployment, component, server, service, level, message
             FROM events WHERE seq > ?1 AND (?2 IS NULL OR deployment = ?2)
             ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after_seq, deployment, limit], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
