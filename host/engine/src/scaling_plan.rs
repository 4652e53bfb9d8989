//! What one reconcile pass changes in a tier, decided from its target and what is observed:
//! servers that are gone are replaced, surplus servers leave (lost ones first, then the
//! newest), and new servers take the next numbers never used in this launch. Pure, so that it
//! is tested on its own.

use serde::{Deserialize, Serialize};
use stratus_model::{Name, ServerId};

/// A server of the tier as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub id: ServerId,
    /// Lost beyond its tier's grace, or reported gone by the provider.
    pub gone: bool,
    /// Its agent is LOST but it is not replaced (within its grace, or its tier has recovery
    /// off): it is the first to leave when the tier shrinks.
    pub lost: bool,
}

/// One tier's scaling event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    pub tier: Name,
    /// Servers that were serving before, and the target after.
    pub from: u32,
    pub to: u32,
    /// Servers that leave, gone ones first, then the newest.
    pub remove: Vec<ServerId>,
    /// Which of `remove` were gone (their hooks cannot run any more).
    pub gone: Vec<ServerId>,
    pub add: Vec<ServerId>,
}

impl TierChange {
    /// `tier app 2 -> 5`, plus what was replaced (or, when nothing is added, what was gone).
    pub fn describe(&self) -> String {
        let mut text = format!("tier {} {} -> {}", self.tier, self.from, self.to);
        if !self.gone.is_empty() {
            let gone: Vec<String> = self.gone.iter().map(ToString::to_string).collect();
            let how = if self.add.is_empty() {
                "gone:"
            } else {
                "replacing"
            };
            text.push_str(&format!(" ({how} {})", gone.join(", ")));
        }
        text
    }
}

/// The change that brings `servers` of `tier` to `target`, numbering new servers from
/// `next_index`; `None` when the tier is already there.
pub fn tier_change(
    tier: &Name,
    target: u32,
    servers: &[Observed],
    next_index: u32,
) -> Option<TierChange> {
    let mut healthy: Vec<&Observed> = servers.iter().filter(|s| !s.gone).collect();
    // Kept in this order: serving servers oldest first, then lost ones.
    healthy.sort_by_key(|s| (s.lost, s.id.index));
    let gone: Vec<ServerId> = servers
        .iter()
        .filter(|s| s.gone)
        .map(|s| s.id.clone())
        .collect();
    let target_len = target as usize;
    let surplus: Vec<ServerId> = healthy
        .iter()
        .skip(target_len)
        .rev()
        .map(|s| s.id.clone())
        .collect();
    let kept = healthy.len().min(target_len);
    let missing = u32::try_from(target_len - kept).unwrap_or(u32::MAX);
    if gone.is_empty() && surplus.is_empty() && missing == 0 {
        return None;
    }
    let add = (0..missing)
        .map(|i| ServerId::new(tier.clone(), next_index.saturating_add(i).max(1)))
        .collect();
    Some(TierChange {
        tier: tier.clone(),
        from: u32::try_from(healthy.len()).unwrap_or(u32::MAX),
        to: target,
        remove: gone.iter().cloned().chain(surplus).collect(),
        gone,
        add,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> Name {
        Name::new("app").unwrap()
    }

    fn servers(list: &[(u32, bool)]) -> Vec<Observed> {
        list.iter()
            .map(|&(index, gone)| Observed {
                id: ServerId::new(tier(), index),
                gone,
                lost: false,
            })
            .collect()
    }

    fn ids(list: &[ServerId]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_tier_at_its_target_changes_nothing() {
        assert_eq!(
            tier_change(&tier(), 2, &servers(&[(1, false), (2, false)]), 3),
            None
        );
    }

    #[test]
    fn scale_up_numbers_new_servers_from_the_next_unused_index() {
        let c = tier_change(&tier(), 5, &servers(&[(1, false), (2, false)]), 3).unwrap();
        assert_eq!(ids(&c.add), ["app-3", "app-4", "app-5"]);
        assert!(c.remove.is_empty());
        assert_eq!(c.describe(), "tier app 2 -> 5");
    }

    #[test]
    fn scale_down_removes_the_newest_first() {
        let s = servers(&[(1, false), (4, false), (2, false), (5, false)]);
        let c = tier_change(&tier(), 1, &s, 6).unwrap();
        assert_eq!(ids(&c.remove), ["app-5", "app-4", "app-2"]);
        assert!(c.add.is_empty() && c.gone.is_empty());
    }

    #[test]
    fn a_gone_server_is_replaced_by_a_new_number() {
        let c = tier_change(&tier(), 2, &servers(&[(1, true), (2, false)]), 3).unwrap();
        assert_eq!(ids(&c.remove), ["app-1"]);
        assert_eq!(ids(&c.gone), ["app-1"]);
        assert_eq!(ids(&c.add), ["app-3"]);
        assert_eq!(c.describe(), "tier app 1 -> 2 (replacing app-1)");
    }

    #[test]
    fn a_gone_server_above_the_target_is_only_removed() {
        let c = tier_change(&tier(), 1, &servers(&[(1, false), (2, true)]), 3).unwrap();
        assert_eq!(ids(&c.remove), ["app-2"]);
        assert!(c.add.is_empty());
    }

    #[test]
    fn scale_down_removes_a_lost_server_before_serving_ones() {
        let mut s = servers(&[(1, false), (2, false), (3, false)]);
        s[0].lost = true;
        let c = tier_change(&tier(), 2, &s, 4).unwrap();
        assert_eq!(ids(&c.remove), ["app-1"]);
        assert!(c.add.is_empty() && c.gone.is_empty());
        let c = tier_change(&tier(), 1, &s, 4).unwrap();
        assert_eq!(ids(&c.remove), ["app-1", "app-3"]);
        // At its target, a lost server that is not replaced stays.
        assert_eq!(tier_change(&tier(), 3, &s, 4), None);
    }

    #[test]
    fn terminate_removes_every_server_gone_and_lost_ones_too_and_adds_none() {
        let mut s = servers(&[(1, false), (2, true), (3, false)]);
        s[2].lost = true;
        let c = tier_change(&tier(), 0, &s, 4).unwrap();
        assert_eq!(ids(&c.remove), ["app-2", "app-3", "app-1"]);
        assert_eq!(ids(&c.gone), ["app-2"]);
        assert!(c.add.is_empty());
        assert_eq!(c.describe(), "tier app 2 -> 0 (gone: app-2)");
        assert_eq!(tier_change(&tier(), 0, &[], 4), None);
    }

    #[test]
    fn a_launch_starts_from_nothing() {
        let c = tier_change(&tier(), 2, &[], 1).unwrap();
        assert_eq!(ids(&c.add), ["app-1", "app-2"]);
        assert_eq!((c.from, c.to), (0, 2));
    }
}
