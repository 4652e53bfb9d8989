//! stratus-plugin-runtime
