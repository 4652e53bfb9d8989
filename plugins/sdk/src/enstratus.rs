//! The classic enStratus `enstratus.cfg` (`[enstratus]` section, `key=value` lines) for legacy
//! scripts and templates, written next to the service and erased when the hook is done.

use std::path::{Path, PathBuf};

use crate::files::io_error;
use crate::types::{HookError, ServiceContext};

/// The file name enStratus used inside the service directory.
pub const FILE_NAME: &str = "enstratus.cfg";

/// Renders the context in enStratus's format, e.g. `port.80.privatePort=80`,
/// `serviceKeys=admin`, `serviceKey.admin.password=…`. Contains secrets.
pub fn enstratus_cfg(ctx: &ServiceContext) -> String {
    let mut out = String::from("[enstratus]\n");
    let mut line = |k: &str, v: &str| {
        // A newline inside a value would start a bogus key; ini readers expect `\n` escapes.
        out.push_str(&format!("{k}={}\n", v.replace('\n', "\\n")));
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
    for s in &ctx.settings {
        line(&format!("config.{}", s.key), &s.value);
    }
    out
}

/// Erases `enstratus.cfg` when dropped: it holds passwords and must not outlive the hook.
#[derive(Debug)]
pub struct EnstratusCfgGuard {
    path: PathBuf,
}

impl EnstratusCfgGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EnstratusCfgGuard {
    fn drop(&mut self) {
        // Overwrite before unlinking so the secrets do not linger in a reused block.
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let _ = std::fs::write(&self.path, vec![0u8; meta.len() as usize]);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `<service_dir>/enstratus.cfg` (mode 0600 where the platform has modes; under WASI
/// the service directory's own permissions protect it) and returns the guard that erases it.
pub fn write_enstratus_cfg(ctx: &ServiceContext) -> Result<EnstratusCfgGuard, HookError> {
    use std::io::Write;
    let path = Path::new(&ctx.service_dir).join(FILE_NAME);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| io_error("creating", &path, &e))?;
    // From here on the guard owns the file, so a failed write still erases it.
    let guard = EnstratusCfgGuard { path };
    file.write_all(enstratus_cfg(ctx).as_bytes())
        .map_err(|e| io_error("writing", &guard.path, &e))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::tests::sample;

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
        ctx.settings[1].value = "a\nb=c".into();
        let text = enstratus_cfg(&ctx);
        assert!(
            text.lines().any(|l| l == "config.greeting=a\\nb=c"),
            "{text}"
        );
    }

    #[test]
    fn written_file_is_private_and_erased_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = sample();
        ctx.service_dir = dir.path().to_str().unwrap().into();
        let guard = write_enstratus_cfg(&ctx).unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(guard.path(), path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), enstratus_cfg(&ctx));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(guard);
        assert!(!path.exists());
    }
}
