//! Names and identifiers: the validated [`Name`] used for deployments, tiers, services, ports
//! and credentials, the numeric [`ServiceId`] behind `/mnt/services/a<id>`, and [`ServerId`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted name; server names join three of them and must stay a DNS label-ish size.
pub const NAME_MAX_LEN: usize = 40;

/// A validated name: 1 to [`NAME_MAX_LEN`] of `[a-z0-9-]`, not starting or ending with `-`.
///
/// The same rule covers deployments, tiers, services, ports and credentials because each of
/// them ends up in file names, server names or `enstratus.cfg` keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a [`Name`]; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name `{name}`: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

impl Name {
    /// Checks `s` against the name rule.
    pub fn new(s: impl Into<String>) -> Result<Name, NameError> {
        let name = s.into();
        let reason = if name.is_empty() {
            Some("expected at least one character")
        } else if name.len() > NAME_MAX_LEN {
            Some("expected at most 40 characters")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("expected only lowercase letters, digits and `-`")
        } else if name.starts_with('-') || name.ends_with('-') {
            Some("expected a letter or digit at both ends")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(NameError { name, reason }),
            None => Ok(Name(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Name, NameError> {
        Name::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The numeric id of a service within its deployment; its directory on a server is `a<id>`.
///
/// Ids are assigned as `1000 + index` of the service in the name-sorted service list
/// ([`ServiceId::assign`]), so the same deployment file always yields the same ids and the
/// directories look like enStratus's `/mnt/services/a1000`. The store persists the ids with
/// the deployment, so editing the file later cannot move a running service's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceId(pub u32);

impl ServiceId {
    /// The first id handed out.
    pub const FIRST: u32 = 1000;

    /// The id of the service at `index` in the name-sorted list of a deployment's services.
    pub fn assign(index: usize) -> ServiceId {
        let index = u32::try_from(index).expect("fewer than 4 billion services");
        ServiceId(Self::FIRST + index)
    }

    /// The service's directory name on a server, e.g. `a1000`.
    pub fn dir_name(&self) -> String {
        format!("a{}", self.0)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A server of a tier: `<tier>-<n>`, `n` counting from 1 in launch order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerId {
    pub tier: Name,
    pub index: u32,
}

/// Why a string is not a [`ServerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server id `{0}`: expected `<tier>-<n>` with n >= 1")]
pub struct ServerIdError(pub String);

impl ServerId {
    /// Panics if `index` is 0, since server numbers are 1-based by definition.
    pub fn new(tier: Name, index: u32) -> ServerId {
        assert!(index >= 1, "server numbers start at 1");
        ServerId { tier, index }
    }

    /// The server's name, `<deployment>-<tier>-<n>`, as shown to operators and providers.
    pub fn server_name(&self, deployment: &Name) -> String {
        format!("{deployment}-{self}")
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tier, self.index)
    }
}

impl FromStr for ServerId {
    type Err = ServerIdError;
    fn from_str(s: &str) -> Result<ServerId, ServerIdError> {
        // Tier names may contain `-`, so the number is whatever follows the last one.
        let err = || ServerIdError(s.to_string());
        let (tier, n) = s.rsplit_once('-').ok_or_else(err)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
            return Err(err());
        }
        let index = n.parse().map_err(|_| err())?;
        let tier = Name::new(tier).map_err(|_| err())?;
        Ok(ServerId { tier, index })
    }
}

impl TryFrom<String> for ServerId {
    type Error = ServerIdError;
    fn try_from(s: String) -> Result<ServerId, ServerIdError> {
        s.parse()
    }
}

impl From<ServerId> for String {
    fn from(id: ServerId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "shop", "db-1", "0", "a-b-c"] {
            assert_eq!(Name::new(ok).unwrap().as_str(), ok);
        }
        let cases = [
            ("", "expected at least one character"),
            ("Shop", "expected only lowercase letters, digits and `-`"),
            ("a_b", "expected only lowercase letters, digits and `-`"),
            ("a b", "expected only lowercase letters, digits and `-`"),
            ("-a", "expected a letter or digit at both ends"),
            ("a-", "expected a letter or digit at both ends"),
        ];
        for (bad, reason) in cases {
            assert_eq!(Name::new(bad).unwrap_err().reason, reason, "{bad:?}");
        }
        assert!(Name::new("a".repeat(40)).is_ok());
        assert!(Name::new("a".repeat(41)).is_err());
    }

    #[test]
    fn names_deserialize_through_validation() {
        let n: Name = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(n, name("web"));
        assert!(serde_json::from_str::<Name>("\"Web\"").is_err());
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"web\"");
    }

    #[test]
    fn service_ids_start_at_1000_and_name_directories() {
        assert_eq!(ServiceId::assign(0), ServiceId(1000));
        assert_eq!(ServiceId::assign(7).dir_name(), "a1007");
        assert_eq!(ServiceId(1000).to_string(), "1000");
    }

    #[test]
    fn server_ids_and_names() {
        let id = ServerId::new(name("app-tier"), 2);
        assert_eq!(id.to_string(), "app-tier-2");
        assert_eq!(id.server_name(&name("shop")), "shop-app-tier-2");
        assert_eq!("app-tier-2".parse::<ServerId>().unwrap(), id);
        for bad in ["app", "app-", "app-0", "app-01", "-1", "App-1", "app-x"] {
            assert!(bad.parse::<ServerId>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"app-tier-2\"");
        assert_eq!(serde_json::from_str::<ServerId>(&json).unwrap(), id);
    }

    #[test]
    #[should_panic(expected = "server numbers start at 1")]
    fn server_zero_is_refused() {
        ServerId::new(name("app"), 0);
    }
}
