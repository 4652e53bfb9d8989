//! A service plugin built against a frozen copy of `stratus:plugin@0.2.0` (its own `wit/`),
//! not the repository's current contract: the host's version policy is tested with it
//! (docs/writing-a-plugin.md, "Versions"). `configure` writes `version.txt` into the
//! service directory and logs through the host, so a test sees that both directions work.

/// The contract version this plugin was built against.
const BUILT_FOR: &str = "0.2.0";

include!("../../frozen_service.rs");
