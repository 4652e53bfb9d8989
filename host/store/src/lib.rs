//! stratus-store
