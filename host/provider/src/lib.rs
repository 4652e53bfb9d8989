//! stratus-provider
