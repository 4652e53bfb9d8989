//! The classic enStratus `enstratus.cfg` (`[enstratus]` section, `key=value` lines) for legacy
//! scripts and templates. The host renders it for plugins of every language (`enstratus-cfg`
//! in `wit/host.wit`); the plugin writes it next to the service and erases it afterwards.

use crate::context::ServiceContext;

/// Renders the context in enStratus's format, e.g. `port.80.privatePort=80`,
/// `serviceKeys=admin`, `serviceKey.admin.password=…`. Contains secrets.
pub fn enstratus_cfg(ctx: &ServiceContext) -> String {
    let mut out = String::from("[enstratus]\n");
    let mut line = |k: &str, v: &str| {
        // A line break inside a value would start a bogus key (ini and Java-properties readers
        // break lines at `\r` too), so both are written as escapes.
        out.push_str(&format!("{k}={}\n", escape_line_breaks(v)));
    };
    line("deployment", &ctx.deployment);
    line("tier", &ctx.tier);
    line("serverId", &ctx.server.id);
    line("serverName", &ctx.server.name);
    line("serverAddress", &ctx.server.address);
    line("serviceId", &ctx.service_id);
    line("serviceName", &ctx.service_name);
    line("serviceDirectory", &ctx.service_dir);
    let names: Vec<&str> = ctx.ports.iter().map(|p| p.name.as_str()).collect();
    line("ports", &names.join(","));
    for p in &ctx.ports {
        line(
            &format!("port.{}.privatePort", p.name),
            &p.private_port.to_string(),
        );
        line(
            &format!("port.{}.publicPort", p.name),
            &p.public_port.to_string(),
        );
    }
    let keys: Vec<&str> = ctx.credentials.iter().map(|c| c.name.as_str()).collect();
    line("serviceKeys", &keys.join(","));
    for c in &ctx.credentials {
        line(&format!("serviceKey.{}.user", c.name), &c.user);
        line(&format!("serviceKey.{}.password", c.name), &c.password);
    }
    if let Some(ds) = &ctx.data_source {
        line("dataSource.database", &ds.database);
        line("dataSource.imagePath", &ds.image_path);
    }
    let deps: Vec<&str> = ctx
        .dependencies
        .iter()
        .map(|d| d.service.as_str())
        .collect();
    line("dependencies", &deps.join(","));
    for d in &ctx.dependencies {
        let pre = format!("dependency.{}", d.service);
        let addrs: Vec<&str> = d.servers.iter().map(|s| s.address.as_str()).collect();
        line(&format!("{pre}.addresses"), &addrs.join(","));
        for p in &d.ports {
            line(
                &format!("{pre}.port.{}.publicPort", p.name),
                &p.public_port.to_string(),
            );
        }
        if let Some(db) = &d.database {
            line(&format!("{pre}.database"), db);
        }
        for c in &d.credentials {
            line(&format!("{pre}.serviceKey.{}.user", c.name), &c.user);
            line(
                &format!("{pre}.serviceKey.{}.password", c.name),
                &c.password,
            );
        }
    }
    for (key, value) in &ctx.settings {
        line(&format!("config.{key}"), value);
    }
    out
}

/// `\n` and `\r` as the two-character escapes; every other character as it is.
fn escape_line_breaks(value: &str) -> String {
    value.replace('\n', "\\n").replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template_variables::tests::sample;

    #[test]
    fn renders_the_classic_keys() {
        let text = enstratus_cfg(&sample());
        assert!(text.starts_with("[enstratus]\n"));
        for expected in [
            "serverAddress=10.0.0.5",
            "port.http.privatePort=8080",
            "port.http.publicPort=80",
            "serviceKeys=admin",
            "serviceKey.admin.user=root",
            "serviceKey.admin.password=pw-admin",
            "dataSource.database=shopdb",
            "dependency.db.addresses=10.0.1.1,10.0.1.2",
            "dependency.db.port.mysql.publicPort=3306",
            "dependency.db.serviceKey.app.password=pw-db",
            "config.greeting=hello",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected}:\n{text}"
            );
        }
    }

    #[test]
    fn newlines_in_values_are_escaped() {
        let mut ctx = sample();
        ctx.settings[1].1 = "a\nb=c\rserviceKey.admin.password=x".into();
        let text = enstratus_cfg(&ctx);
        assert!(
            text.lines()
                .any(|l| l == "config.greeting=a\\nb=c\\rserviceKey.admin.password=x"),
            "{text}"
        );
        assert!(!text.contains('\r'), "{text}");
    }
}
