//! stratus-cloud
