//! The settings of a `[providers.NAME]` table, as its provider factory receives them: typed
//! values, with secrets only as references to keys in key management.

use std::collections::BTreeMap;

/// One setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    Text(String),
    Integer(i64),
    Bool(bool),
    /// A list of strings (e.g. `hosts`).
    List(Vec<String>),
    /// The name of a key in key management (a setting named `key` or ending in `-key`); the
    /// provider reads the secret itself, so it never passes through the deployment file.
    Key(String),
}

impl SettingValue {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            SettingValue::Text(_) => "a string",
            SettingValue::Integer(_) => "an integer",
            SettingValue::Bool(_) => "a boolean",
            SettingValue::List(_) => "a list of strings",
            SettingValue::Key(_) => "a key reference",
        }
    }
}

/// Settings by name (the table's keys other than `type`).
pub type ProviderSettings = BTreeMap<String, SettingValue>;
