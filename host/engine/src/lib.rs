//! stratus-engine
