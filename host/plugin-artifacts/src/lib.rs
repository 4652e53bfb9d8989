//! stratus-plugin-artifacts
