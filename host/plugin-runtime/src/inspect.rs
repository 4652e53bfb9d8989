//! What a component exports and imports, read from its type without instantiating it.

use crate::failure::LoadError;
use std::path::PathBuf;
use stratus_model::context::World;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// A component's shape, as `stratus plugin inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// The Stratus world its exports match, if any.
    pub world: Option<World>,
    pub exports: Vec<InterfaceInfo>,
    /// Imported interface names, e.g. `wasi:filesystem/types@0.2.6`.
    pub imports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    /// `name(param, …)` for each function.
    pub functions: Vec<String>,
}

/// Compiles `bytes` with a plain engine and describes the component.
pub fn inspect(bytes: &[u8]) -> Result<ComponentInfo, LoadError> {
    let engine = Engine::default();
    let component = Component::new(&engine, bytes).map_err(|e| LoadError::CorruptComponent {
        path: PathBuf::from("<component>"),
        reason: format!("{e:#}"),
    })?;
    Ok(describe(&engine, &component))
}

/// The interface part of a name: `stratus:plugin/service-hooks@0.1.0` → `stratus:plugin/service-hooks`.
fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

pub(crate) fn describe(engine: &Engine, component: &Component) -> ComponentInfo {
    let ty = component.component_type();
    let mut exports = Vec::new();
    for (name, ext) in ty.exports(engine) {
        let functions = match &ext.ty {
            ComponentItem::ComponentInstance(inst) => inst
                .exports(engine)
                .filter_map(|(f, e)| match e.ty {
                    ComponentItem::ComponentFunc(func) => {
                        let params: Vec<&str> = func.params().map(|(p, _)| p).collect();
                        Some(format!("{f}({})", params.join(", ")))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        exports.push(InterfaceInfo {
            name: name.to_owned(),
            functions,
        });
    }
    let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let names: Vec<&str> = exports.iter().map(|e| unversioned(&e.name)).collect();
    let has = |i: &str| names.contains(&i);
    let world = if has("stratus:plugin/cm-hooks") {
        Some(World::Cm)
    } else if has("stratus:plugin/proxy-hooks") && has("stratus:plugin/service-hooks") {
        Some(World::Proxy)
    } else if has("stratus:plugin/service-hooks") {
        Some(World::Service)
    } else if has("stratus:plugin/scale-rule") {
        Some(World::Scaler)
    } else if has("stratus:plugin/cloud-servers") {
        Some(World::CloudDriver)
    } else {
        None
    };
    ComponentInfo {
        world,
        exports,
        imports,
    }
}

impl ComponentInfo {
    /// One line naming the exports, for error messages.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.exports.iter().map(|e| e.name.as_str()).collect();
        match self.world {
            Some(w) => format!("it is a `{w}` component (exports {})", names.join(", ")),
            None if names.is_empty() => "it exports nothing".into(),
            None => format!("it exports {}", names.join(", ")),
        }
    }
}
