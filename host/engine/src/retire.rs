//! Servers leaving a deployment, the one way they leave: a scale-down, a gone server replaced,
//! and terminate (a change set to nothing). Dependents are told first: load balancers drop the
//! leaving nodes, databases revoke the leaving addresses. Then the leaving servers' services
//! stop layer by layer across the whole departure, last dependency layer first (load
//! balancers, then what they balance, then databases), and the servers and their disks end.
//! No hook runs on a gone server, nor on a LOST one (a dependent that is lost catches up on a
//! later pass, or its replacement learns the membership of the moment). While the deployment
//! runs, a server that cannot be ended stays ENDING and does not hold its replacement up: its
//! end is tried again later (`end/deferred.rs`).

use crate::end::ended_message;
use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server, proxy_nodes};
use crate::launch::{caps, service_package_dir};
use crate::reconcile::Changes;
use futures::future::join_all;
use std::collections::BTreeSet;
use std::path::PathBuf;
use stratus_model::ServerId;
use stratus_model::context::HookCall;
use stratus_model::spec::{DeploymentSpec, RetryPolicy, ServiceSpec};
use stratus_model::state::{AgentEvent, AgentState, ServiceEvent};
use stratus_model::step_key::{Phase, StepKey};
use stratus_protocol::HookReport;
use stratus_store::StepState;

/// Which of a change set's leaving servers one departure takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Those still serving (surplus servers of a scale-down).
    Surplus,
    /// The gone ones, after their replacements started.
    Gone,
    /// Every one (terminate).
    All,
}

impl Leaving {
    fn takes(self, gone: bool) -> bool {
        match self {
            Leaving::Surplus => !gone,
            Leaving::Gone => gone,
            Leaving::All => true,
        }
    }
}

/// What a departure met: failures reported together, and where kept disks went.
#[derive(Debug, Default)]
pub(crate) struct Departed {
    /// Hooks that failed on the way (the servers ended all the same).
    pub problems: Vec<String>,
    /// Servers whose processes or disk could not be ended, one line each.
    pub disks_left: Vec<String>,
    /// The directory kept disks were moved to (`--keep-disks`).
    pub kept: Option<PathBuf>,
}

/// One departure's servers and the change set they leave in.
struct Departure<'a> {
    spec: &'a DeploymentSpec,
    fleet: &'a Fleet,
    changes: &'a Changes,
    leaving: Vec<Server>,
    /// Ids no hook can reach: the change set's gone servers, and those whose end began.
    unreachable: BTreeSet<String>,
}

impl Departure<'_> {
    fn dep(&self) -> &str {
        self.spec.name.as_str()
    }

    fn reachable(&self, server: &Server) -> bool {
        !self.unreachable.contains(&server.id.to_string())
    }

    fn key(&self, svc: &ServiceSpec, server: &Server, action: &'static str) -> StepKey {
        StepKey::service(&svc.name, &server.id, action)
            .in_phase(Phase::Change(self.changes.generation))
    }
}

impl Engine {
    /// Takes the servers of `changes` that `which` picks out of the deployment, their disks
    /// kept under the label `keep` when given. While the deployment runs, a failed
    /// `remove-nodes` or revoke stops the departure (dependents would lose a server still in
    /// use) and a server that cannot be ended fails it; going to nothing, every server ends
    /// whatever fails, and the failures are returned together.
    pub(crate) async fn retire(
        &self,
        spec: &DeploymentSpec,
        changes: &Changes,
        which: Leaving,
        keep: Option<&str>,
    ) -> Result<Departed, EngineError> {
        let fleet = self.fleet(spec.name.as_str())?;
        let d = self.departure(spec, &fleet, changes, which)?;
        let mut departed = Departed::default();
        if d.leaving.is_empty() {
            return Ok(departed);
        }
        for e in self.tell_dependents(&d).await {
            if !changes.to_nothing {
                return Err(e);
            }
            self.log_deployment(d.dep(), &format!("telling dependents: {e}"));
            departed.problems.push(e.to_string());
        }
        departed.problems.extend(self.stop_leaving(&d).await);
        self.end_leaving(&d, keep, &mut departed).await?;
        Ok(departed)
    }

    /// Load balancers drop the leaving nodes, then databases revoke the leaving addresses;
    /// while the deployment runs, the first failure stops there.
    async fn tell_dependents(&self, d: &Departure<'_>) -> Vec<EngineError> {
        let mut errors = self.drop_nodes(d).await;
        if !errors.is_empty() && !d.changes.to_nothing {
            return errors;
        }
        let addresses: BTreeSet<String> = d.leaving.iter().map(|s| s.address.clone()).collect();
        let unreachable: BTreeSet<String> = d
            .fleet
            .values()
            .flatten()
            .filter(|s| !d.reachable(s))
            .map(|s| s.address.clone())
            .collect();
        for db in d.spec.services.values().filter(|s| s.data_source.is_some()) {
            let revoked = |_: &str, address: &str| addresses.contains(address);
            let result = self
                .revoke_access(d.spec, d.fleet, db, &unreachable, revoked)
                .await;
            if let Err(e) = result {
                errors.push(e);
                if !d.changes.to_nothing {
                    break;
                }
            }
        }
        errors
    }

    /// `remove-nodes` on every reachable load balancer, for exactly its leaving nodes.
    async fn drop_nodes(&self, d: &Departure<'_>) -> Vec<EngineError> {
        let mut jobs = Vec::new();
        for tier in d.spec.tiers.values() {
            let Some(b) = &tier.balances else { continue };
            let nodes: Vec<_> = proxy_nodes(d.spec, d.fleet, b.service.as_str(), b.port.as_str())
                .into_iter()
                .filter(|n| d.leaving.iter().any(|s| s.id.to_string() == n.server.id))
                .collect();
            if nodes.is_empty() {
                continue;
            }
            for svc in d.spec.services_of(tier.name.as_str()) {
                let balancers = d.fleet.get(tier.name.as_str()).into_iter().flatten();
                for server in balancers.filter(|s| d.reachable(s)) {
                    let nodes = nodes.clone();
                    jobs.push(async move {
                        let ctx = self.service_context(d.spec, d.fleet, svc, server)?;
                        let key = d.key(svc, server, "remove-nodes");
                        let call = HookCall::RemoveNodes { ctx, nodes };
                        self.departing_hook(d, svc, server, &key, call).await
                    });
                }
            }
        }
        join_all(jobs)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    /// `stop` of the leaving servers' services, one dependency layer at a time from the last.
    /// Failures are logged and returned: the servers end all the same.
    async fn stop_leaving(&self, d: &Departure<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        for layer in stratus_model::plan::Plan::new(d.spec).terminate_order() {
            let services = layer.iter().filter_map(|n| d.spec.service(n.as_str()));
            let jobs = services.flat_map(|svc| {
                d.leaving
                    .iter()
                    .filter(move |s| s.tier == svc.tier.as_str() && d.reachable(s))
                    .map(move |server| self.stop_one(d, svc, server))
            });
            problems.extend(join_all(jobs).await.into_iter().flatten());
        }
        problems
    }

    /// `stop` of one service on one leaving server; what went wrong, if anything.
    async fn stop_one(
        &self,
        d: &Departure<'_>,
        svc: &ServiceSpec,
        server: &Server,
    ) -> Option<String> {
        let key = d.key(svc, server, "stop");
        let stopped = async {
            let ctx = self.service_context(d.spec, d.fleet, svc, server)?;
            self.departing_hook(d, svc, server, &key, HookCall::Stop { ctx })
                .await?;
            self.service_event(d.dep(), svc, &server.id, ServiceEvent::Stopped)
        };
        let e = stopped.await.err()?;
        let message = format!("stopping {} on {}: {e}", svc.name, server.id);
        self.log_deployment(d.dep(), &message);
        Some(message)
    }

    /// A hook of a departure. Going to nothing, a hook that keeps asking to be retried holds
    /// terminate up for the default policy only (about 35 s), not its service's.
    async fn departing_hook(
        &self,
        d: &Departure<'_>,
        svc: &ServiceSpec,
        server: &Server,
        key: &StepKey,
        call: HookCall,
    ) -> Result<HookReport, EngineError> {
        if !d.changes.to_nothing {
            return self.service_hook(d.spec, svc, server, key, call).await;
        }
        let tier = d.spec.tier(svc.tier.as_str());
        let balanced = tier
            .and_then(|t| t.balances.as_ref())
            .map(|b| b.service.as_str());
        let (dir, policy) = (service_package_dir(svc), RetryPolicy::default());
        self.hook_retrying(
            d.dep(),
            server,
            key,
            &dir,
            caps(svc),
            call,
            &policy,
            balanced,
        )
        .await
    }

    /// Ends every leaving server and its disk, side by side. While the deployment runs, a
    /// server that cannot be ended stays ENDING, its end tried again later; going to nothing,
    /// it is TERMINATED and noted with what was left (terminate reports it).
    async fn end_leaving(
        &self,
        d: &Departure<'_>,
        keep: Option<&str>,
        departed: &mut Departed,
    ) -> Result<(), EngineError> {
        let ends = d.leaving.iter().map(|s| self.end_server(d.dep(), s, keep));
        for (server, result) in d.leaving.iter().zip(join_all(ends).await) {
            match result {
                Ok(Some(path)) => departed.kept = path.parent().map(PathBuf::from),
                Ok(None) => {}
                Err(e) if !d.changes.to_nothing => self.defer_end(d.dep(), &server.id, e)?,
                Err(e) => {
                    let id = server.id.to_string();
                    self.agent_event(d.dep(), &id, AgentEvent::Terminated)?;
                    departed.disks_left.push(ended_message(e));
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    /// The servers of `fleet` that `changes` removes and `which` picks, and those of them
    /// whose end a stopped control plane left unfinished.
    fn departure<'a>(
        &self,
        spec: &'a DeploymentSpec,
        fleet: &'a Fleet,
        changes: &'a Changes,
        which: Leaving,
    ) -> Result<Departure<'a>, EngineError> {
        let mut unreachable: BTreeSet<String> = changes
            .tiers
            .iter()
            .flat_map(|t| &t.gone)
            .map(ToString::to_string)
            .collect();
        let ids: BTreeSet<String> = changes
            .tiers
            .iter()
            .flat_map(|t| &t.remove)
            .map(ToString::to_string)
            .filter(|id| which.takes(unreachable.contains(id)))
            .collect();
        let mut leaving: Vec<Server> = fleet
            .values()
            .flatten()
            .filter(|s| ids.contains(&s.id.to_string()))
            .cloned()
            .collect();
        // A LOST agent cannot answer a hook: waiting for it would fail the departure.
        unreachable.extend(self.lost_ids(spec.name.as_str())?);
        let half_ended = self.half_ended(spec.name.as_str(), &ids, which)?;
        unreachable.extend(half_ended.iter().map(|s| s.id.to_string()));
        leaving.extend(half_ended);
        Ok(Departure {
            spec,
            fleet,
            changes,
            leaving,
            unreachable,
        })
    }

    /// The servers whose end started and never finished: ENDING ones of `ids` (every one when
    /// going to nothing), and TERMINATED ones of `ids` whose end step is still started (a
    /// control plane before ENDING existed stopped in it). The fleet lacks them, yet their
    /// processes and disk may remain. Their end runs again; no hook does.
    fn half_ended(
        &self,
        dep: &str,
        ids: &BTreeSet<String>,
        which: Leaving,
    ) -> Result<Vec<Server>, EngineError> {
        let journal = self.journal_id(dep)?;
        let mut out = Vec::new();
        for row in self.parts.store.servers::<AgentState>(dep)? {
            let ending = row.agent_state == AgentState::Ending;
            if ending && (which == Leaving::All || ids.contains(&row.id)) {
                out.extend(self.server_of(&row)?);
                continue;
            }
            if row.agent_state != AgentState::Terminated || !ids.contains(&row.id) {
                continue;
            }
            let (true, Ok(id)) = (row.handle.is_some(), row.id.parse::<ServerId>()) else {
                continue;
            };
            let step = self
                .parts
                .store
                .step(&journal, &StepKey::End(id).to_string())?;
            if step.is_some_and(|s| s.status == StepState::Started)
                && let Some(server) = self.server_of(&row)?
            {
                out.push(server);
            }
        }
        Ok(out)
    }
}
