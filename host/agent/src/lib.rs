//! stratus-agent
