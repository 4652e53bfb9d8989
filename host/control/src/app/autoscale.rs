//! Scaling rules, the control plane's part: twice a second, each RUNNING deployment's tiers
//! with a `[scaling]` table are judged on their servers' metrics windows. Every server votes
//! (the built-in threshold rule, or the tier's `scaler` component), the majority decides
//! (see `stratus_model::scaling`), and a decision becomes an event showing the vote and a new
//! target reconciled to like `stratus scale`.
//!
//! `settle` counts from the end of the last scaling event of the tier, whoever asked for it:
//! the pass sees the tier's target change or the deployment busy, and restarts the clock, so
//! the servers a scale-up added warm up inside it.
//!
//! Each tier is judged in a task of its own, so a slow custom rule holds up no other tier;
//! a rule that fails is tried again after a pause that doubles (see `settling.rs`). A decision
//! is taken only if the tier's target is still the one the votes were cast on (an operator's
//! scale in between wins), and its event is written once the new target is accepted.

use super::App;
use futures::future::BoxFuture;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stratus_engine::logs::{Component, Subject};
use stratus_model::ids::{Name, ServerId};
use stratus_model::metrics::ServerWindow;
use stratus_model::scaling::{Decision, ScalingPolicy, Vote, threshold_reason};
use stratus_model::spec::{DeploymentSpec, TierSpec};
use stratus_model::state::DeploymentState;

/// How often tiers with scaling rules are judged.
pub const SCALING_POLL: Duration = Duration::from_millis(500);

/// Runs a tier's custom `scaler` component: one vote per window, in order. The binary gives
/// one backed by the plugin runtime, so this crate stays free of wasmtime.
pub trait ScalerRules: Send + Sync {
    fn scale_check<'a>(
        &'a self,
        package: &'a Path,
        tier: &'a Name,
        policy: &'a ScalingPolicy,
        now_ms: u64,
        windows: &'a [ServerWindow],
    ) -> BoxFuture<'a, Result<Vec<Vote>, String>>;
}

impl App {
    /// Runs for as long as the control plane does.
    pub async fn watch_scaling_rules(self) {
        loop {
            tokio::time::sleep(SCALING_POLL).await;
            self.judge_deployments().await;
        }
    }

    async fn judge_deployments(&self) {
        let Ok(rows) = self.store.deployments::<DeploymentState>() else {
            return;
        };
        self.settling
            .retain(&rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>());
        for row in rows {
            let Ok(spec) = self.spec_of(&row) else {
                continue;
            };
            if spec.tiers.values().all(|t| t.scaling.is_none()) {
                continue;
            }
            if row.state != DeploymentState::Running || self.working_on(&row.name).await {
                self.settling.busy(&row.name);
                continue;
            }
            for tier in spec.tiers.values().filter(|t| t.scaling.is_some()) {
                if !self.settling.start(&row.name, tier.name.as_str()) {
                    continue;
                }
                let (app, spec, tier) = (self.clone(), spec.clone(), tier.clone());
                tokio::spawn(async move {
                    if let Some(policy) = &tier.scaling {
                        app.judge_tier(&spec, &tier, policy).await;
                    }
                    app.settling.finish(spec.name.as_str(), tier.name.as_str());
                });
            }
        }
    }

    /// Votes on one tier and acts on a majority.
    async fn judge_tier(&self, spec: &DeploymentSpec, tier: &TierSpec, policy: &ScalingPolicy) {
        let dep = spec.name.as_str();
        let Ok(targets) = self.engine.targets(spec) else {
            return;
        };
        let Some(target) = targets.get(tier.name.as_str()).copied() else {
            return;
        };
        let settle = Duration::from_millis(policy.settle_ms);
        if !self
            .settling
            .settled(dep, tier.name.as_str(), target.count, settle)
        {
            return;
        }
        let windows = self.tier_windows(dep, tier);
        let now_ms = unix_ms();
        let votes = match self.votes(tier, policy, &windows, now_ms).await {
            Ok(v) => v,
            Err(message) => return self.rule_failed(dep, tier, &message),
        };
        self.settling.rule_succeeded(dep, tier.name.as_str());
        let Some(decision) = policy.decide(&votes, target.count, target.min, target.max) else {
            return;
        };
        let message = decision_message(tier, policy, &decision);
        match self
            .scale_from(dep, tier.name.as_str(), target, decision.to, &message)
            .await
        {
            Ok(true) => {
                stratus_telemetry::autoscale_decision(decision.is_up());
                self.settling.clear_warning(dep, tier.name.as_str());
            }
            // The target changed while the votes were cast: the next pass judges the new one.
            Ok(false) => {}
            Err(e) => self.scaling_warning(dep, tier, &format!("scaling refused: {e}")),
        }
    }

    /// Writes a failure of the tier's rule (each one, since the pauses between tries grow).
    fn rule_failed(&self, dep: &str, tier: &TierSpec, message: &str) {
        let (n, pause) = self.settling.rule_failed(dep, tier.name.as_str());
        let message = format!(
            "scaling rule failed ({n} in a row; next try in {}s): {message}",
            pause.as_secs()
        );
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(tier.name.as_str()),
            ..Subject::default()
        };
        self.logs
            .warn(Component::MonitorScalingEvent, subject, &message);
    }

    /// The metrics windows of the tier's servers, in server order.
    fn tier_windows(&self, dep: &str, tier: &TierSpec) -> Vec<ServerWindow> {
        let Ok(fleet) = self.engine.fleet(dep) else {
            return Vec::new();
        };
        let ids: Vec<ServerId> = fleet
            .get(tier.name.as_str())
            .map(|servers| servers.iter().map(|s| s.id.clone()).collect())
            .unwrap_or_default();
        self.metrics().windows(dep, &ids)
    }

    /// The servers' votes: the tier's `scaler` component's, or the threshold rule's.
    async fn votes(
        &self,
        tier: &TierSpec,
        policy: &ScalingPolicy,
        windows: &[ServerWindow],
        now_ms: u64,
    ) -> Result<Vec<Vote>, String> {
        match &policy.rule {
            None => Ok(policy.threshold_votes(windows, now_ms)),
            Some(rule) => match &self.scalers {
                Some(scalers) => {
                    let package = &rule.path.resolved;
                    scalers
                        .scale_check(package, &tier.name, policy, now_ms, windows)
                        .await
                }
                None => Err("custom scaling rules cannot run in this control plane".into()),
            },
        }
    }

    fn scaling_warning(&self, dep: &str, tier: &TierSpec, message: &str) {
        if !self.settling.first_time(dep, tier.name.as_str(), message) {
            return;
        }
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(tier.name.as_str()),
            ..Subject::default()
        };
        self.logs
            .warn(Component::MonitorScalingEvent, subject, message);
    }
}

/// "scale app 2→3: 2 of 2 servers above 75 % CPU for 2s".
fn decision_message(tier: &TierSpec, policy: &ScalingPolicy, d: &Decision) -> String {
    let reason = match &policy.rule {
        None => threshold_reason(policy, d.is_up()),
        Some(rule) => format!(
            "voted {} by rule {}",
            if d.is_up() { "up" } else { "down" },
            rule.path.written.display()
        ),
    };
    format!(
        "scale {} {}→{}: {} of {} servers {reason}",
        tier.name,
        d.from,
        d.to,
        d.voters(),
        d.tally.servers
    )
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
