//! A service context flattened into the dotted variables templates use (`server.address`,
//! `dependency.db.port.mysql`, …). This is the one definition: the host renders templates
//! with it for plugins of every language, and docs/writing-a-plugin.md lists the same names.

use std::collections::BTreeMap;

use crate::context::ServiceContext;

/// Every template variable of `ctx`. Dependency ports are the public ports (what clients use);
/// when a setting is given twice, the last value wins.
pub fn template_variables(ctx: &ServiceContext) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let mut put = |k: String, val: &str| {
        v.insert(k, val.to_string());
    };
    put("deployment".into(), &ctx.deployment);
    put("tier".into(), &ctx.tier);
    put("server.id".into(), &ctx.server.id);
    put("server.name".into(), &ctx.server.name);
    put("server.address".into(), &ctx.server.address);
    put("service.id".into(), &ctx.service_id);
    put("service.name".into(), &ctx.service_name);
    put("service.dir".into(), &ctx.service_dir);
    for (key, value) in &ctx.settings {
        put(format!("setting.{key}"), value);
    }
    for p in &ctx.ports {
        put(
            format!("port.{}.private", p.name),
            &p.private_port.to_string(),
        );
        put(
            format!("port.{}.public", p.name),
            &p.public_port.to_string(),
        );
    }
    for c in &ctx.credentials {
        put(format!("credential.{}.user", c.name), &c.user);
        put(format!("credential.{}.password", c.name), &c.password);
    }
    if let Some(ds) = &ctx.data_source {
        put("data_source.database".into(), &ds.database);
        put("data_source.image_path".into(), &ds.image_path);
    }
    for d in &ctx.dependencies {
        let pre = format!("dependency.{}", d.service);
        if let Some(first) = d.servers.first() {
            put(format!("{pre}.address"), &first.address);
        }
        let all: Vec<&str> = d.servers.iter().map(|s| s.address.as_str()).collect();
        put(format!("{pre}.addresses"), &all.join(","));
        for p in &d.ports {
            put(format!("{pre}.port.{}", p.name), &p.public_port.to_string());
        }
        if let Some(db) = &d.database {
            put(format!("{pre}.database"), db);
        }
        for c in &d.credentials {
            put(format!("{pre}.credential.{}.user", c.name), &c.user);
            put(format!("{pre}.credential.{}.password", c.name), &c.password);
        }
        for (key, value) in &d.settings {
            put(format!("{pre}.setting.{key}"), value);
        }
    }
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::context::*;

    fn server(id: &str, address: &str) -> ServerInfo {
        ServerInfo {
            id: id.into(),
            name: format!("shop-{id}"),
            address: address.into(),
        }
    }

    /// A context with one of everything, shared with enstratus_cfg.rs's tests.
    pub(crate) fn sample() -> ServiceContext {
        ServiceContext {
            deployment: "shop".into(),
            tier: "app".into(),
            server: server("app-1", "10.0.0.5"),
            service_id: "7".into(),
            service_name: "web".into(),
            service_dir: "/mnt/services/a7".into(),
            settings: vec![
                ("greeting".into(), "hi".into()),
                ("greeting".into(), "hello".into()),
            ],
            ports: vec![Port {
                name: "http".into(),
                private_port: 8080,
                public_port: 80,
            }],
            credentials: vec![Credential {
                name: "admin".into(),
                user: "root".into(),
                password: "pw-admin".into(),
            }],
            data_source: Some(DataSource {
                database: "shopdb".into(),
                image_path: "/mnt/services/a7/datasource.sql".into(),
            }),
            dependencies: vec![Dependency {
                service: "db".into(),
                kind: DependencyKind::DataSource,
                servers: vec![server("db-1", "10.0.1.1"), server("db-2", "10.0.1.2")],
                ports: vec![Port {
                    name: "mysql".into(),
                    private_port: 3307,
                    public_port: 3306,
                }],
                credentials: vec![Credential {
                    name: "app".into(),
                    user: "shop".into(),
                    password: "pw-db".into(),
                }],
                database: Some("shopdb".into()),
                settings: vec![("engine".into(), "innodb".into())],
            }],
        }
    }

    #[test]
    fn flattens_every_part_of_the_context() {
        let v = template_variables(&sample());
        let get = |k: &str| v.get(k).map(String::as_str);
        assert_eq!(get("deployment"), Some("shop"));
        assert_eq!(get("tier"), Some("app"));
        assert_eq!(get("server.id"), Some("app-1"));
        assert_eq!(get("server.name"), Some("shop-app-1"));
        assert_eq!(get("server.address"), Some("10.0.0.5"));
        assert_eq!(get("service.id"), Some("7"));
        assert_eq!(get("service.name"), Some("web"));
        assert_eq!(get("service.dir"), Some("/mnt/services/a7"));
        assert_eq!(get("setting.greeting"), Some("hello"));
        assert_eq!(get("port.http.private"), Some("8080"));
        assert_eq!(get("port.http.public"), Some("80"));
        assert_eq!(get("credential.admin.user"), Some("root"));
        assert_eq!(get("credential.admin.password"), Some("pw-admin"));
        assert_eq!(get("data_source.database"), Some("shopdb"));
        assert_eq!(
            get("data_source.image_path"),
            Some("/mnt/services/a7/datasource.sql")
        );
        assert_eq!(get("dependency.db.address"), Some("10.0.1.1"));
        assert_eq!(get("dependency.db.addresses"), Some("10.0.1.1,10.0.1.2"));
        assert_eq!(get("dependency.db.port.mysql"), Some("3306"));
        assert_eq!(get("dependency.db.database"), Some("shopdb"));
        assert_eq!(get("dependency.db.credential.app.user"), Some("shop"));
        assert_eq!(get("dependency.db.credential.app.password"), Some("pw-db"));
        assert_eq!(get("dependency.db.setting.engine"), Some("innodb"));
        assert_eq!(v.len(), 22, "{:?}", v.keys().collect::<Vec<_>>());
    }

    #[test]
    fn absent_parts_produce_no_variables() {
        let mut ctx = sample();
        ctx.data_source = None;
        ctx.dependencies[0].servers.clear();
        ctx.dependencies[0].database = None;
        let v = template_variables(&ctx);
        assert!(!v.contains_key("data_source.database"));
        assert!(!v.contains_key("dependency.db.address"));
        assert!(!v.contains_key("dependency.db.database"));
        assert_eq!(
            v.get("dependency.db.addresses").map(String::as_str),
            Some("")
        );
    }
}
