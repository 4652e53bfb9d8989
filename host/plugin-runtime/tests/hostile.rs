//! The hostile guest attacks its sandbox; each attack must fail with its specific error, and
//! the same runtime must then still serve a well-behaved call.

mod common;

use common::{assert_healthy, context, env, load, shared_runtime};
use std::path::Path;
use stratus_model::context::HookCall;
use stratus_plugin_runtime::{
    Access, CallFailure, CapabilityOverride, DirGrant, DirKind, HookFailure, HookOutcome, Runtime,
    Supervisor,
};
use tempfile::TempDir;

struct Attack {
    rt: Runtime,
    dir: TempDir,
    result: Result<HookOutcome, CallFailure>,
}

/// Runs hostile's `configure` with `attack`, optionally narrowing its capabilities first;
/// `prepare` may plant files in the service directory.
async fn run(attack: &str, narrow: CapabilityOverride, prepare: impl FnOnce(&Path)) -> Attack {
    let rt = shared_runtime();
    let hostile = load(&rt, "hostile").await;
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("a1000");
    std::fs::create_dir(&service).unwrap();
    prepare(&service);
    let call = HookCall::Configure {
        ctx: context(&service, &[("attack", attack)]),
    };
    let caps = hostile.capabilities().narrow(&narrow).unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let result = hostile.call(&call, &env(&call, &sup, Some(caps))).await;
    Attack { rt, dir, result }
}

impl Attack {
    fn failure(&self) -> &CallFailure {
        match &self.result {
            Ok(o) => panic!("attack succeeded: {o:?}"),
            Err(f) => f,
        }
    }

    fn hook_error(&self) -> String {
        match &self.failure().kind {
            HookFailure::HookError { message, .. } => message.clone(),
            other => panic!("expected a hook error, got {other:?}"),
        }
    }

    /// The guest logs an error only when it got through; none may be there.
    fn assert_no_leak(&self) {
        let f = self.failure();
        assert!(f.logs.is_empty(), "guest reported a leak: {:?}", f.logs);
    }
}

#[tokio::test]
async fn reading_outside_the_preopens_fails() {
    let a = run("read-passwd", CapabilityOverride::default(), |_| {}).await;
    let msg = a.hook_error();
    assert!(msg.starts_with("reading /etc/passwd:"), "{msg}");
    a.assert_no_leak();
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn dot_dot_traversal_fails() {
    let a = run("traversal", CapabilityOverride::default(), |_| {}).await;
    let msg = a.hook_error();
    assert!(msg.contains("/../../../../etc/passwd:"), "{msg}");
    a.assert_no_leak();
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn planted_symlink_out_of_the_dir_fails() {
    let plant =
        |dir: &Path| std::os::unix::fs::symlink("/etc/passwd", dir.join("evil-link")).unwrap();
    let a = run("symlink", CapabilityOverride::default(), plant).await;
    let msg = a.hook_error();
    assert!(msg.contains("evil-link:"), "{msg}");
    a.assert_no_leak();
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn writing_a_read_only_grant_fails() {
    let ro = CapabilityOverride {
        dirs: Some(vec![DirGrant {
            dir: DirKind::Service,
            access: Access::ReadOnly,
        }]),
        ..Default::default()
    };
    let a = run("write-readonly", ro, |_| {}).await;
    let msg = a.hook_error();
    assert!(
        msg.starts_with("writing ") && msg.contains("a1000/x:"),
        "{msg}"
    );
    assert!(!a.dir.path().join("a1000/x").exists());
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn running_a_program_outside_the_allow_list_is_denied() {
    let a = run("run-disallowed", CapabilityOverride::default(), |_| {}).await;
    let f = a.failure();
    assert_eq!(
        f.kind,
        HookFailure::CapabilityDenied {
            capability: "program /bin/sh is not in the plugin's allowed programs".into()
        }
    );
    assert_eq!(
        f.denials,
        vec!["program /bin/sh is not in the plugin's allowed programs"]
    );
    a.assert_no_leak();
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn shell_metacharacters_are_passed_literally() {
    let a = run("shell-meta", CapabilityOverride::default(), |_| {}).await;
    let out = a.result.as_ref().expect("echo is allowed");
    assert!(out.denials.is_empty());
    let echoed = std::fs::read_to_string(a.dir.path().join("a1000/echo.out")).unwrap();
    assert_eq!(echoed, "hello; rm -rf / $(id) | cat\n");
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn connecting_to_an_ungranted_port_is_denied() {
    let a = run("socket", CapabilityOverride::default(), |_| {}).await;
    let f = a.failure();
    assert_eq!(
        f.kind,
        HookFailure::CapabilityDenied {
            capability: "network connect to 127.0.0.1:22 is not granted".into()
        }
    );
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn an_infinite_loop_hits_the_timeout() {
    let short = CapabilityOverride {
        timeout_ms: Some(300),
        ..Default::default()
    };
    let a = run("infinite-loop", short, |_| {}).await;
    let f = a.failure();
    assert_eq!(f.kind, HookFailure::Timeout { limit_ms: 300 });
    assert_eq!(
        f.kind.to_string(),
        "plugin exceeded its time limit of 300 ms"
    );
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn allocating_past_the_memory_cap_is_out_of_memory() {
    let a = run("alloc-1gib", CapabilityOverride::default(), |_| {}).await;
    assert_eq!(a.failure().kind, HookFailure::OutOfMemory { limit_mb: 64 });
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn unbounded_recursion_is_stopped() {
    let a = run("recursion", CapabilityOverride::default(), |_| {}).await;
    // Rust keeps its stack in linear memory, so this is an out-of-bounds access that the
    // runtime recognises from the repeating backtrace.
    assert_eq!(a.failure().kind, HookFailure::StackOverflow);
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn flooding_stdout_hits_the_output_limit() {
    let small = CapabilityOverride {
        output_bytes: Some(4096),
        ..Default::default()
    };
    let a = run("flood-stdout", small, |_| {}).await;
    let f = a.failure();
    assert_eq!(f.kind, HookFailure::OutputLimit { limit_bytes: 4096 });
    assert!(f.truncated);
    assert_eq!(f.stdout.len(), 4096);
    assert!(f.stdout.starts_with("hostile flood:"));
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn a_panic_is_a_trap_naming_the_panic() {
    let a = run("panic", CapabilityOverride::default(), |_| {}).await;
    let f = a.failure();
    match &f.kind {
        HookFailure::Trap { message } => {
            assert!(
                message
                    .starts_with("wasm trap: wasm `unreachable` instruction executed; panicked at")
            );
            assert!(message.ends_with(": hostile panic"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(f.stderr.contains("hostile panic"));
    assert_healthy(&a.rt).await;
}

#[tokio::test]
async fn the_hostile_plugin_behaves_when_asked_to() {
    let a = run("none", CapabilityOverride::default(), |_| {}).await;
    assert!(a.result.is_ok(), "{:?}", a.result.as_ref().err());
    assert_eq!(
        std::fs::read_to_string(a.dir.path().join("a1000/ok")).unwrap(),
        "ok\n"
    );
}

#[tokio::test]
async fn secrets_never_leave_the_call() {
    // The attack name echoes back in the hook's error; make it the admin password.
    let a = run("hunter2-secret", CapabilityOverride::default(), |_| {}).await;
    let msg = a.hook_error();
    assert_eq!(msg, "unknown attack `****`");
    assert!(!format!("{:?}", a.failure()).contains("hunter2"));
}
