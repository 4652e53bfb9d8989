//! A plugin package on disk: a directory with `plugin.toml`, the component and optional
//! `cfg/` and `files/`.

use crate::capabilities::Capabilities;
use crate::manifest::{Manifest, ManifestError};
use std::path::{Path, PathBuf};
use stratus_model::context::World;

/// An opened (not yet compiled) package.
#[derive(Debug, Clone)]
pub struct Package {
    /// The package directory.
    pub dir: PathBuf,
    /// The component file.
    pub component_path: PathBuf,
    /// `None` when a bare component was opened without a `plugin.toml` next to it.
    pub manifest: Option<Manifest>,
}

impl Package {
    /// Opens a package directory, or a bare `.wasm` (using a `plugin.toml` next to it if present).
    pub fn open(path: &Path) -> Result<Package, ManifestError> {
        if path.is_dir() {
            let manifest = Manifest::load(&path.join("plugin.toml"))?;
            let component_path = path.join(&manifest.plugin.component);
            return Ok(Package {
                dir: path.to_owned(),
                component_path,
                manifest: Some(manifest),
            });
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let toml = dir.join("plugin.toml");
        let manifest = if toml.is_file() {
            Some(Manifest::load(&toml)?)
        } else {
            None
        };
        Ok(Package {
            dir,
            component_path: path.to_owned(),
            manifest,
        })
    }

    /// The plugin's name: the manifest's, else the component's file stem.
    pub fn name(&self) -> String {
        match &self.manifest {
            Some(m) => m.plugin.name.clone(),
            None => self
                .component_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into()),
        }
    }

    /// The declared world, if a manifest declares one.
    pub fn world(&self) -> Option<World> {
        self.manifest.as_ref().map(|m| m.plugin.world)
    }

    /// Declared capabilities; a package without a manifest gets none.
    pub fn capabilities(&self) -> Capabilities {
        self.manifest
            .as_ref()
            .map(|m| m.capabilities.clone())
            .unwrap_or_default()
    }
}
