//! Nothing to use: this crate exists for its `Cargo.toml`, which asks for the features the
//! test build turns on in crates the example's build compiles too, so that the two builds
//! share those crates instead of compiling them twice.
