//! Small key/value settings of the control plane (e.g. its listen address).

use crate::{Store, StoreError};
use rusqlite::OptionalExtension;

impl Store {
    /// Sets `key` to `value`, replacing any previous value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = ?2",
            )?
            .execute([key, value])?;
        Ok(())
    }

    /// Sets each `(key, value)` of `pairs` as [`Store::set_meta`] does, all in one transaction:
    /// one commit for many values written together.
    pub fn set_metas(&self, pairs: &[(String, String)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut set = tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = ?2",
            )?;
            for (key, value) in pairs {
                set.execute([key, value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The value of `key`, if set.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Every `(key, value)` whose key starts with `prefix`, by key: one range of the key's
    /// index rather than a lookup per key (a pass over a thousand servers asked each one).
    pub fn meta_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let rows = match past_prefix(prefix) {
            Some(end) => conn
                .prepare_cached(
                    "SELECT key, value FROM meta WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )?
                .query_map([prefix, end.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?,
            None => conn
                .prepare_cached(
                    "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1
                     ORDER BY key",
                )?
                .query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }
}

/// The least string after every string starting with `prefix`, when its last character is
/// ASCII below DEL (text compares bytewise); `None` otherwise.
fn past_prefix(prefix: &str) -> Option<String> {
    let last = *prefix.as_bytes().last()?;
    if last >= 0x7f {
        return None;
    }
    let mut end = prefix[..prefix.len() - 1].to_string();
    end.push(char::from(last + 1));
    Some(end)
}
