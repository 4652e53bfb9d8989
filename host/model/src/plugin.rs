//! What a plugin package declares about itself: its manifest (`plugin.toml`) and the
//! capabilities it asks for. Plain data, so the control plane can check a deployment file
//! against its plugins' manifests without linking the sandbox.

pub mod capabilities;
pub mod manifest;
pub mod risky;
