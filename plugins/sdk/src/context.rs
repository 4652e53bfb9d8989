//! Reading the service context: settings by key (the last one wins, as in the manifest).
//! Template variables are the host's (`crate::template`).

use crate::types::{ServiceContext, Setting};

/// The value of the deployment-file setting `key`, if set (the last one wins).
pub fn setting<'a>(ctx: &'a ServiceContext, key: &str) -> Option<&'a str> {
    last_setting(&ctx.settings, key)
}

/// The last value of `key` in `settings`: later settings override earlier ones.
pub(crate) fn last_setting<'a>(settings: &'a [Setting], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|s| s.key == key)
        .map(|s| s.value.as_str())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::*;

    /// A context with settings, shared by the SDK's tests.
    pub(crate) fn sample() -> ServiceContext {
        ServiceContext {
            deployment: "shop".into(),
            tier: "app".into(),
            server: ServerInfo {
                id: "app-1".into(),
                name: "shop-app-1".into(),
                address: "10.0.0.5".into(),
            },
            service_id: "7".into(),
            service_name: "web".into(),
            service_dir: "/mnt/services/a7".into(),
            settings: vec![
                Setting {
                    key: "greeting".into(),
                    value: "hi".into(),
                },
                Setting {
                    key: "greeting".into(),
                    value: "hello".into(),
                },
            ],
            ports: vec![],
            credentials: vec![],
            data_source: None,
            dependencies: vec![],
        }
    }

    #[test]
    fn setting_returns_the_last_value() {
        let ctx = sample();
        assert_eq!(setting(&ctx, "greeting"), Some("hello"));
        assert_eq!(setting(&ctx, "missing"), None);
    }
}
