//! The keys of journaled steps, typed: the engine builds them, the journal stores their
//! text, and the status view parses the text back (`Display` and `FromStr` agree, tested).
//!
//! | key | step |
//! |---|---|
//! | `cloud-files/upload` | every package into cloud files |
//! | `cloud-files/compile/<package>` | a package's component compiled into the code cache |
//! | `reconcile/<g>/changes` | change set `g`: which servers leave and join |
//! | `server/<id>/launch`, `server/<id>/end` | a server starts, a server ends |
//! | `server/<id>/cm/<unit>/<action>` | a CM unit on a server (`fetch`, `prepare`, `run`…) |
//! | `service/<service>/<id>/<action>[/<n>]` | the pipeline: a hook or request of a service on a server; `n` counts repeats of grants and revokes |
//! | `reconcile/<g>/<service>/<id>/<action>` | a hook while servers leave in change set `g` |
//! | `apply/<n>/<service>/<id>/<action>` | a hook while apply `n` removes services |
//! | `terminate/<service>/<id>/<action>` | a hook of terminate |
//! | `<key>/retry-<n>` | attempt `n` of step `<key>` asked to be retried |

use std::fmt;
use std::str::FromStr;

use crate::ids::{Name, ServerId};

/// Why a service's hook runs, which is also how its key starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// `service/…`: the launch pipeline, run by every reconcile pass over the fleet.
    Pipeline,
    /// `reconcile/<g>/…`: servers leaving in change set `g`.
    Change(u64),
    /// `apply/<n>/…`: services removed by apply `n`.
    Apply(u64),
    /// `terminate/…`.
    Terminate,
}

/// A journaled step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKey {
    Upload,
    /// A package's component compiled ahead of time (named by its cloud-files key).
    Compile(String),
    Changes(u64),
    Launch(ServerId),
    End(ServerId),
    Cm {
        server: ServerId,
        /// The CM unit: an adapter's name, or a personality's component (`<name>-<n>`).
        unit: String,
        action: Action,
    },
    Service {
        phase: Phase,
        service: Name,
        server: ServerId,
        action: Action,
        /// Repeats of the same action (grants after the first); 0 for the first.
        repeat: u64,
    },
    Retry {
        step: Box<StepKey>,
        attempt: u32,
    },
}

/// What a step does: a hook or request name, `[a-z-]+` (e.g. `configure`, `fetch-files`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Action(String);

impl Action {
    /// `name` if it is `[a-z-]+`.
    pub fn new(name: &str) -> Option<Action> {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        ok.then(|| Action(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Action {
    /// For the engine's own constant action names; panics on a malformed one.
    fn from(name: &'static str) -> Action {
        Action::new(name).unwrap_or_else(|| panic!("invalid step action `{name}`"))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StepKey {
    /// A service's hook or request in the launch pipeline.
    pub fn service(service: &Name, server: &ServerId, action: impl Into<Action>) -> StepKey {
        StepKey::Service {
            phase: Phase::Pipeline,
            service: service.clone(),
            server: server.clone(),
            action: action.into(),
            repeat: 0,
        }
    }

    /// The same step in another phase.
    pub fn in_phase(self, phase: Phase) -> StepKey {
        match self {
            StepKey::Service {
                service,
                server,
                action,
                repeat,
                ..
            } => StepKey::Service {
                phase,
                service,
                server,
                action,
                repeat,
            },
            other => other,
        }
    }

    /// The `n`th repeat of this step (0 is the step itself).
    pub fn repeated(self, n: u64) -> StepKey {
        match self {
            StepKey::Service {
                phase,
                service,
                server,
                action,
                ..
            } => StepKey::Service {
                phase,
                service,
                server,
                action,
                repeat: n,
            },
            other => other,
        }
    }

    /// The journal entry of attempt `attempt` of this step asking to be retried.
    pub fn retry(&self, attempt: u32) -> StepKey {
        StepKey::Retry {
            step: Box::new(self.clone()),
            attempt,
        }
    }

    /// The server the step works on, if one.
    pub fn server(&self) -> Option<&ServerId> {
        match self {
            StepKey::Upload | StepKey::Compile(_) | StepKey::Changes(_) => None,
            StepKey::Launch(s) | StepKey::End(s) => Some(s),
            StepKey::Cm { server, .. } | StepKey::Service { server, .. } => Some(server),
            StepKey::Retry { step, .. } => step.server(),
        }
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKey::Upload => f.write_str("cloud-files/upload"),
            StepKey::Compile(p) => write!(f, "cloud-files/compile/{p}"),
            StepKey::Changes(g) => write!(f, "reconcile/{g}/changes"),
            StepKey::Launch(s) => write!(f, "server/{s}/launch"),
            StepKey::End(s) => write!(f, "server/{s}/end"),
            StepKey::Cm {
                server,
                unit,
                action,
            } => write!(f, "server/{server}/cm/{unit}/{action}"),
            StepKey::Service {
                phase,
                service,
                server,
                action,
                repeat,
            } => {
                match phase {
                    Phase::Pipeline => f.write_str("service")?,
                    Phase::Change(g) => write!(f, "reconcile/{g}")?,
                    Phase::Apply(n) => write!(f, "apply/{n}")?,
                    Phase::Terminate => f.write_str("terminate")?,
                }
                write!(f, "/{service}/{server}/{action}")?;
                match repeat {
                    0 => Ok(()),
                    n => write!(f, "/{n}"),
                }
            }
            StepKey::Retry { step, attempt } => write!(f, "{step}/retry-{attempt}"),
        }
    }
}

/// Why a string is not a [`StepKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid step key `{0}`")]
pub struct StepKeyError(pub String);

impl FromStr for StepKey {
    type Err = StepKeyError;

    fn from_str(text: &str) -> Result<StepKey, StepKeyError> {
        let err = || StepKeyError(text.to_string());
        if let Some((outer, n)) = text.rsplit_once("/retry-")
            && let Some(attempt) = number(n)
        {
            let step = Box::new(outer.parse()?);
            return Ok(StepKey::Retry {
                step,
                attempt: u32::try_from(attempt).map_err(|_| err())?,
            });
        }
        let parts: Vec<&str> = text.split('/').collect();
        let server = |s: &str| s.parse::<ServerId>().map_err(|_| err());
        let name = |s: &str| Name::new(s).map_err(|_| err());
        let action = |s: &str| Action::new(s).ok_or_else(err);
        match parts.as_slice() {
            ["cloud-files", "upload"] => Ok(StepKey::Upload),
            ["cloud-files", "compile", p] if !p.is_empty() => Ok(StepKey::Compile(p.to_string())),
            ["reconcile", g, "changes"] => Ok(StepKey::Changes(number(g).ok_or_else(err)?)),
            ["server", s, "launch"] => Ok(StepKey::Launch(server(s)?)),
            ["server", s, "end"] => Ok(StepKey::End(server(s)?)),
            ["server", s, "cm", unit, act] if !unit.is_empty() => Ok(StepKey::Cm {
                server: server(s)?,
                unit: unit.to_string(),
                action: action(act)?,
            }),
            _ => {
                let (phase, rest) = match parts.as_slice() {
                    ["service", rest @ ..] => (Phase::Pipeline, rest),
                    ["terminate", rest @ ..] => (Phase::Terminate, rest),
                    ["reconcile", g, rest @ ..] => {
                        (Phase::Change(number(g).ok_or_else(err)?), rest)
                    }
                    ["apply", n, rest @ ..] => (Phase::Apply(number(n).ok_or_else(err)?), rest),
                    _ => return Err(err()),
                };
                let (svc, srv, act, repeat) = match rest {
                    [svc, srv, act] => (svc, srv, act, 0),
                    [svc, srv, act, n] => {
                        (svc, srv, act, number(n).filter(|n| *n > 0).ok_or_else(err)?)
                    }
                    _ => return Err(err()),
                };
                Ok(StepKey::Service {
                    phase,
                    service: name(svc)?,
                    server: server(srv)?,
                    action: action(act)?,
                    repeat,
                })
            }
        }
    }
}

/// A decimal number without sign or leading zeros (`0` itself allowed).
fn number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_key_reads_back_as_itself() {
        for text in [
            "cloud-files/upload",
            "cloud-files/compile/hello-service-app",
            "reconcile/3/changes",
            "server/app-12/launch",
            "server/db-1/end",
            "server/web-1/cm/puppet/fetch-files",
            "server/web-1/cm/personality-base-1/run",
            "service/app/app-1/configure",
            "service/db/db-1/grant-database-access/2",
            "reconcile/4/lb/lb-1/remove-nodes",
            "apply/1/cache/app-2/stop",
            "terminate/my-app/my-tier-3/revoke-database-access",
            "service/app/app-1/configure/retry-2",
            "service/db/db-1/grant-database-access/2/retry-1",
        ] {
            let key: StepKey = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn built_keys_print_as_the_journal_names_them() {
        let app = Name::new("app").unwrap();
        let server = ServerId::new(app.clone(), 3);
        let key = StepKey::service(&app, &server, "configure");
        assert_eq!(key.to_string(), "service/app/app-3/configure");
        assert_eq!(
            key.retry(2).to_string(),
            "service/app/app-3/configure/retry-2"
        );
        let grant = StepKey::service(&app, &server, "grant-database-access").repeated(4);
        assert_eq!(
            grant.to_string(),
            "service/app/app-3/grant-database-access/4"
        );
        let leaving = StepKey::service(&app, &server, "stop").in_phase(Phase::Change(7));
        assert_eq!(leaving.to_string(), "reconcile/7/app/app-3/stop");
        assert_eq!(leaving.server(), Some(&server));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for text in [
            "",
            "service/app/app-1",
            "service/App/app-1/configure",
            "service/app/app-0/configure",
            "service/app/app-1/Configure",
            "service/app/app-1/configure/0",
            "service/app/app-1/configure/01",
            "reconcile/x/changes",
            "server/app-1/cm/puppet",
            "elsewhere/app/app-1/start",
        ] {
            assert!(text.parse::<StepKey>().is_err(), "{text}");
        }
    }
}
