//! Refusals an agent must tell apart: most mean its credential is not the one expected (it
//! then presents an older one), but one means the credential was right and only the timing
//! was wrong.

/// The `reason` of a refusal whose credential was right while an earlier connection of its
/// server is still live: the agent presents the same credential again, never an older one.
pub const REFUSED_IN_USE: &str = "credential already in use by a connected agent";
