//! Pure data of Stratus: deployment specs, ids, states and their transitions, hook contexts.
//! No tokio, no wasmtime: everything here is plain values that serialize.

pub mod context;
