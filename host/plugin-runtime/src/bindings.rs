//! Host bindings for the worlds of `wit/`. The `service` world owns the generated
//! `types` and `host` interfaces; the others reuse them so one set of conversions and one
//! `host` implementation serve every world.

pub mod service {
    wasmtime::component::bindgen!({
        world: "stratus:plugin/service",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub mod proxy {
    wasmtime::component::bindgen!({
        world: "stratus:plugin/proxy",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "stratus:plugin/types": super::service::stratus::plugin::types,
            "stratus:plugin/host": super::service::stratus::plugin::host,
        },
    });
}

pub mod cm {
    wasmtime::component::bindgen!({
        world: "stratus:plugin/cm",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "stratus:plugin/types": super::service::stratus::plugin::types,
            "stratus:plugin/host": super::service::stratus::plugin::host,
        },
    });
}

/// A scaling rule: no imports, one export (`scale-rule`).
pub mod scaler {
    wasmtime::component::bindgen!({
        world: "stratus:plugin/scaler",
        path: "../../wit",
        exports: { default: async },
    });
}

pub use service::stratus::plugin::host;
pub use service::stratus::plugin::types;
