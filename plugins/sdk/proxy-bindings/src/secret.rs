//! WIT records that carry passwords, defined by hand (wit-bindgen maps them here via `with:`)
//! so that their `Debug` output redacts the password: hook logs must never show a secret.

use std::fmt;

/// A credential generated and kept by key management (`types.credential`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Access a database must grant or revoke for one dependent service (`types.database-grant`).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseGrant {
    pub service: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub addresses: Vec<String>,
}

impl fmt::Debug for DatabaseGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseGrant")
            .field("service", &self.service)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("addresses", &self.addresses)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_passwords() {
        let c = Credential {
            name: "admin".into(),
            user: "root".into(),
            password: "s3cret-pw".into(),
        };
        let g = DatabaseGrant {
            service: "app".into(),
            database: "shop".into(),
            user: "shop".into(),
            password: "s3cret-pw".into(),
            addresses: vec!["10.0.0.2".into()],
        };
        let text = format!("{c:?} {g:?}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains("root") && text.contains("10.0.0.2"), "{text}");
    }
}
