//! Desired state per tier: how many servers it should have (its target) within its bounds.
//! The deployment file gives the first bounds and `min` as the first target; `stratus scale`
//! changes them, and the reconciler works towards them. They live in the journal of the
//! current launch, so a relaunch after terminate starts again from the file. Terminate's
//! desired state is nothing: no server in any tier, whatever the bounds say.

use crate::engine::{Engine, EngineError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stratus_model::MAX_TIER_SERVERS;
use stratus_model::spec::{DeploymentSpec, TierSpec};

/// A tier's bounds and the number of servers it should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTarget {
    pub min: u32,
    pub max: u32,
    pub count: u32,
}

/// Why a requested target was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("tier {tier}: count {count} is outside its bounds {min}..{max}")]
    OutOfBounds {
        tier: String,
        count: u32,
        min: u32,
        max: u32,
    },
    #[error("tier {tier}: min {min} is greater than max {max}")]
    Inverted { tier: String, min: u32, max: u32 },
    #[error("tier {tier}: max {max} is above the limit of {limit} servers per tier")]
    TooLarge { tier: String, max: u32, limit: u32 },
    #[error("tier {tier}: max must be at least 1")]
    ZeroMax { tier: String },
    #[error("deployment {deployment} has no tier named {tier}")]
    UnknownTier { deployment: String, tier: String },
}

impl TierTarget {
    /// The file's bounds, with `min` as the count.
    pub fn of_spec(tier: &TierSpec) -> TierTarget {
        TierTarget {
            min: tier.min,
            max: tier.max,
            count: tier.min,
        }
    }

    /// `self` with new bounds and count, checked: when only bounds are given, the count is the
    /// current one moved into them.
    pub fn changed(
        self,
        tier: &str,
        count: Option<u32>,
        min: Option<u32>,
        max: Option<u32>,
    ) -> Result<TierTarget, TargetError> {
        let (min, max) = (min.unwrap_or(self.min), max.unwrap_or(self.max));
        let tier = tier.to_string();
        if max == 0 {
            return Err(TargetError::ZeroMax { tier });
        }
        if min > max {
            return Err(TargetError::Inverted { tier, min, max });
        }
        let limit = MAX_TIER_SERVERS;
        if max > limit {
            return Err(TargetError::TooLarge { tier, max, limit });
        }
        let count = match count {
            Some(c) if c < min || c > max => {
                return Err(TargetError::OutOfBounds {
                    tier,
                    count: c,
                    min,
                    max,
                });
            }
            Some(c) => c,
            None => self.count.clamp(min, max),
        };
        Ok(TierTarget { min, max, count })
    }
}

/// What a reconcile works towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Every tier at its target (launch, scale, recovery, apply).
    Targets,
    /// No server in any tier, whatever its `min` (terminate).
    Nothing,
}

fn target_key(journal: &str, tier: &str) -> String {
    format!("target/{journal}/{tier}")
}

impl Engine {
    /// Every tier's target: what `stratus scale` set in this launch, else the file's.
    pub fn targets(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<BTreeMap<String, TierTarget>, EngineError> {
        let journal = self.journal_id(spec.name.as_str())?;
        let mut out = BTreeMap::new();
        for tier in spec.tiers.values() {
            let stored = self
                .parts
                .store
                .meta(&target_key(&journal, tier.name.as_str()))?
                .and_then(|t| serde_json::from_str::<TierTarget>(&t).ok());
            out.insert(
                tier.name.to_string(),
                stored.unwrap_or_else(|| TierTarget::of_spec(tier)),
            );
        }
        Ok(out)
    }

    /// How many servers each tier of `spec` should have to reach `goal`.
    pub(crate) fn wanted(
        &self,
        spec: &DeploymentSpec,
        goal: Goal,
    ) -> Result<BTreeMap<String, u32>, EngineError> {
        let targets = self.targets(spec)?;
        let count = |t: &TierTarget| match goal {
            Goal::Targets => t.count,
            Goal::Nothing => 0,
        };
        Ok(targets.iter().map(|(k, t)| (k.clone(), count(t))).collect())
    }

    /// Records `target` as what tier `tier` of `spec` should have from now on.
    pub fn set_target(
        &self,
        spec: &DeploymentSpec,
        tier: &str,
        target: TierTarget,
    ) -> Result<(), EngineError> {
        if spec.tier(tier).is_none() {
            return Err(EngineError::Target(TargetError::UnknownTier {
                deployment: spec.name.to_string(),
                tier: tier.to_string(),
            }));
        }
        let journal = self.journal_id(spec.name.as_str())?;
        let json = serde_json::to_string(&target)
            .map_err(|e| EngineError::Other(format!("target of tier {tier}: {e}")))?;
        self.parts
            .store
            .set_meta(&target_key(&journal, tier), &json)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TierTarget = TierTarget {
        min: 1,
        max: 4,
        count: 2,
    };

    #[test]
    fn a_count_outside_the_bounds_is_refused_naming_them() {
        let e = T.changed("app", Some(5), None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tier app: count 5 is outside its bounds 1..4"
        );
        assert!(T.changed("app", Some(0), None, None).is_err());
        assert_eq!(T.changed("app", Some(4), None, None).unwrap().count, 4);
    }

    #[test]
    fn new_bounds_alone_move_the_count_into_them() {
        let t = T.changed("app", None, Some(3), Some(6)).unwrap();
        assert_eq!((t.min, t.max, t.count), (3, 6, 3));
        let t = T.changed("app", None, Some(3), Some(2)).unwrap_err();
        assert!(matches!(t, TargetError::Inverted { .. }));
        let t = T.changed("app", None, Some(0), Some(1)).unwrap();
        assert_eq!(t.count, 1);
    }

    #[test]
    fn bounds_beyond_the_limit_or_zero_are_refused() {
        assert!(matches!(
            T.changed("app", None, None, Some(10_001)),
            Err(TargetError::TooLarge { .. })
        ));
        assert!(matches!(
            T.changed("app", None, Some(0), Some(0)),
            Err(TargetError::ZeroMax { .. })
        ));
    }
}
