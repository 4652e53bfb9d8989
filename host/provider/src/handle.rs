//! A server's provider handle: which provider made it and what that provider needs to find
//! it again. The engine and the store keep it without looking inside.

use serde::{Deserialize, Serialize};

/// The stored record of one server: `provider` is the name it was launched under (a registry
/// name such as `local` or a deployment's `[providers.NAME]`), `data` whatever that provider
/// put there (the local provider: the server's root and agent pid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderHandle {
    pub provider: String,
    pub data: serde_json::Value,
}

impl ProviderHandle {
    /// The handle's data as `T`, or an error naming the provider (a store row written by
    /// another version or edited by hand must not be misread).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::ProviderError> {
        serde_json::from_value(self.data.clone()).map_err(|e| crate::ProviderError::Handle {
            provider: self.provider.clone(),
            message: e.to_string(),
        })
    }
}

/// Whether a server still exists, as its provider tells right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Exists,
    /// The provider knows the server ended (its process, instance or host entry is gone).
    Gone,
    /// The provider cannot tell (unreachable, an error): never taken for gone.
    Unknown(String),
}

impl Presence {
    pub fn is_gone(&self) -> bool {
        matches!(self, Presence::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_round_trips_through_json_text() {
        let h = ProviderHandle {
            provider: "here".into(),
            data: serde_json::json!({ "root": "/s/servers/d/app-1/root", "pid": 42 }),
        };
        let text = serde_json::to_string(&h).unwrap();
        let back: ProviderHandle = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn data_of_the_wrong_shape_is_an_error_naming_the_provider() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Want {
            pid: u32,
        }
        let h = ProviderHandle {
            provider: "edge".into(),
            data: serde_json::json!({ "pid": "not a number" }),
        };
        let e = h.decode::<Want>().unwrap_err().to_string();
        assert!(e.contains("edge"), "{e}");
    }
}
