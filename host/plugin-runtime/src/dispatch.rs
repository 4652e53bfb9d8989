//! Instantiating a plugin's world and calling the hook a `HookCall` names, with the
//! conversions between model and WIT types.

use crate::call::State;
use crate::convert;
use crate::output::HookValue;
use crate::runtime::Pre;
use stratus_model::context::HookCall;
use wasmtime::Store;

/// An instance could not be created (pool exhausted, resource limits): a host problem, not
/// the plugin's fault; traps while instantiating stay traps.
#[derive(Debug)]
pub(crate) struct Instantiation(String);

impl std::fmt::Display for Instantiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot instantiate the plugin: {}", self.0)
    }
}

impl std::error::Error for Instantiation {}

fn instantiation(e: wasmtime::Error) -> wasmtime::Error {
    if e.is::<wasmtime::Trap>() {
        return e;
    }
    wasmtime::Error::new(Instantiation(format!("{e:#}")))
}

type HookResult = wasmtime::Result<Result<HookValue, crate::bindings::types::HookError>>;

/// Calls one service hook on any world that exports `service-hooks`.
macro_rules! service_hook {
    ($hooks:expr, $store:expr, $call:expr) => {{
        let h = $hooks;
        let unit = |r: wasmtime::Result<Result<(), _>>| r.map(|r| r.map(|()| HookValue::Unit));
        match $call {
            HookCall::InstallService { ctx } => unit(
                h.call_install_service(&mut *$store, &convert::service_context(ctx))
                    .await,
            ),
            HookCall::InstallDataSource { ctx } => unit(
                h.call_install_data_source(&mut *$store, &convert::service_context(ctx))
                    .await,
            ),
            HookCall::Configure { ctx } => unit(
                h.call_configure(&mut *$store, &convert::service_context(ctx))
                    .await,
            ),
            HookCall::Start { ctx } => unit(
                h.call_start(&mut *$store, &convert::service_context(ctx))
                    .await,
            ),
            HookCall::Stop { ctx } => unit(
                h.call_stop(&mut *$store, &convert::service_context(ctx))
                    .await,
            ),
            HookCall::GrantDatabaseAccess { ctx, grants } => unit(
                h.call_grant_database_access(
                    &mut *$store,
                    &convert::service_context(ctx),
                    &convert::grants(grants),
                )
                .await,
            ),
            HookCall::RevokeDatabaseAccess { ctx, grants } => unit(
                h.call_revoke_database_access(
                    &mut *$store,
                    &convert::service_context(ctx),
                    &convert::grants(grants),
                )
                .await,
            ),
            HookCall::HealthCheck { ctx } => h
                .call_health_check(&mut *$store, &convert::service_context(ctx))
                .await
                .map(|r| r.map(|v| HookValue::Health(convert::health(v)))),
            other => unreachable!("{} is not a service hook", other.name()),
        }
    }};
}

pub(crate) async fn invoke(pre: &Pre, store: &mut Store<State>, call: &HookCall) -> HookResult {
    match pre {
        Pre::Service(pre) => {
            let inst = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(instantiation)?;
            service_hook!(inst.stratus_plugin_service_hooks(), store, call)
        }
        Pre::Proxy(pre) => {
            let inst = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(instantiation)?;
            let unit = |r: wasmtime::Result<Result<(), _>>| r.map(|r| r.map(|()| HookValue::Unit));
            let hooks = inst.stratus_plugin_proxy_hooks();
            match call {
                HookCall::StartProxy { ctx, nodes } => unit(
                    hooks
                        .call_start_proxy(
                            &mut *store,
                            &convert::service_context(ctx),
                            &convert::nodes(nodes),
                        )
                        .await,
                ),
                HookCall::RemoveNodes { ctx, nodes } => unit(
                    hooks
                        .call_remove_nodes(
                            &mut *store,
                            &convert::service_context(ctx),
                            &convert::nodes(nodes),
                        )
                        .await,
                ),
                _ => service_hook!(inst.stratus_plugin_service_hooks(), store, call),
            }
        }
        Pre::Cm(pre) => {
            let inst = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(instantiation)?;
            let hooks = inst.stratus_plugin_cm_hooks();
            match call {
                HookCall::CmPrepare { ctx } => hooks
                    .call_prepare(&mut *store, &convert::cm_context(ctx))
                    .await
                    .map(|r| r.map(|()| HookValue::Unit)),
                HookCall::CmRun { ctx } => hooks
                    .call_run(&mut *store, &convert::cm_context(ctx))
                    .await
                    .map(|r| r.map(|v| HookValue::Cm(convert::cm_report(v)))),
                other => unreachable!("{} is not a cm hook", other.name()),
            }
        }
    }
}
