//! Generated bindings for the `service` and `cm` worlds, from `.wit/` (the copy of `<repo>/wit`
//! made by `build.rs`). They reuse the `types` and `host` modules of
//! `stratus-plugin-proxy-bindings` through `with:`, so one `ServiceContext` type (and one set
//! of helpers) serves every world.

/// The `service` world: `import host; export service-hooks`.
pub mod service {
    wit_bindgen::generate!({
        world: "service",
        path: ".wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "stratus_plugin_sdk::bindings::service",
        with: {
            "stratus:plugin/types@0.1.1": stratus_plugin_proxy_bindings::types,
            "stratus:plugin/host@0.1.1": stratus_plugin_proxy_bindings::stratus::plugin::host,
        },
    });
}

/// The `cm` world: a configuration-management adapter.
pub mod cm {
    wit_bindgen::generate!({
        world: "cm",
        path: ".wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "stratus_plugin_sdk::bindings::cm",
        with: {
            "stratus:plugin/types@0.1.1": stratus_plugin_proxy_bindings::types,
            "stratus:plugin/host@0.1.1": stratus_plugin_proxy_bindings::stratus::plugin::host,
        },
    });
}
