//! Key management: named secrets stored one per file, mode 0600, in a 0700 directory.
//!
//! A name maps to a file name reversibly (bytes outside `[A-Za-z0-9_-]`, and `.`, are
//! written `%XX`), so `shop/db/admin` and `shop_db_admin` never collide and no name can
//! escape the directory.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of generated passwords: 24 alphanumerics, about 142 bits.
const PASSWORD_LEN: usize = 24;
/// Length of agent credentials: 32 alphanumerics, about 190 bits.
const TOKEN_LEN: usize = 32;

/// A secret value. It prints as `****` in Debug and Display so that it cannot leak into
/// logs or errors; [`Secret::expose`] is the one explicit way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for handing to the one party that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

/// The SHA-256 hex digest of a secret: what the store keeps to check a secret later.
pub fn digest(secret: &Secret) -> String {
    hex::encode(Sha256::digest(secret.expose().as_bytes()))
}

fn random_alphanumeric(len: usize) -> Secret {
    // `rng()` is the thread-local CSPRNG, seeded from the OS.
    let s: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    Secret(s)
}

/// A fresh 24-character alphanumeric password.
pub fn random_password() -> Secret {
    random_alphanumeric(PASSWORD_LEN)
}

/// A fresh 32-character alphanumeric token, e.g. an agent credential.
pub fn random_token() -> Secret {
    random_alphanumeric(TOKEN_LEN)
}

/// Why a key operation failed; never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid key name {0:?}: must be non-empty")]
    InvalidName(String),
}

/// The directory of named secrets.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Opens the key directory, creating it with mode 0700 (and tightening an existing one).
    pub fn open(dir: impl Into<PathBuf>) -> Result<KeyStore, KeyError> {
        let dir = dir.into();
        let io = |source| KeyError::Io {
            path: dir.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(KeyStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeyError> {
        if name.is_empty() {
            return Err(KeyError::InvalidName(name.to_string()));
        }
        Ok(self.dir.join(sanitize(name)))
    }

    /// Generates a new password for `name`, replacing any previous one.
    pub fn generate(&self, name: &str) -> Result<Secret, KeyError> {
        let secret = random_password();
        self.set(name, &secret)?;
        Ok(secret)
    }

    /// Stores `secret` under `name`, replacing any previous one atomically.
    pub fn set(&self, name: &str, secret: &Secret) -> Result<(), KeyError> {
        let path = self.path(name)?;
        let tmp = self.write_temp(secret)?;
        std::fs::rename(&tmp, &path).map_err(|source| KeyError::Io { path, source })
    }

    /// The secret stored under `name`, if any. A trailing newline is dropped, so that a
    /// secret an operator placed with `echo` works as intended.
    pub fn get(&self, name: &str) -> Result<Option<Secret>, KeyError> {
        let path = self.path(name)?;
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(Secret(s.trim_end_matches(['\n', '\r']).to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// The secret under `name`, generating it first if there is none. Safe against a
    /// concurrent caller: exactly one generated value wins and both get it.
    pub fn get_or_generate(&self, name: &str) -> Result<Secret, KeyError> {
        if let Some(s) = self.get(name)? {
            return Ok(s);
        }
        let path = self.path(name)?;
        let candidate = random_password();
        let tmp = self.write_temp(&candidate)?;
        // A hard link fails if the name exists, unlike rename, so an existing secret is kept.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.get(name)?.ok_or(KeyError::Io { path, source: e })
            }
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// Deletes the secret under `name`; returns whether it existed.
    pub fn delete(&self, name: &str) -> Result<bool, KeyError> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// Writes the secret to a fresh 0600 temporary file in the key directory.
    fn write_temp(&self, secret: &Secret) -> Result<PathBuf, KeyError> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}", random_alphanumeric(12).expose()));
        let io = |source| KeyError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(secret.expose().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        Ok(tmp)
    }
}

/// Encodes a key name as a single safe file name (see the module docs).
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_names_are_distinct_and_flat() {
        assert_eq!(sanitize("shop/db/admin"), "shop%2Fdb%2Fadmin");
        assert_ne!(sanitize("a/b"), sanitize("a_b"));
        assert_eq!(sanitize(".."), "%2E%2E");
    }
}
