//! The wire between the control plane and its clients: agents on servers and operators' CLIs.
//!
//! One TCP connection per peer, newline-delimited JSON frames (`framing.rs`). The first frame
//! says who is calling (`Hello`); the control plane answers `Welcome` or `Refused`, then sends
//! numbered requests and the peer answers each with the same id (`messages.rs`).

pub mod bounds;
pub mod framing;
pub mod messages;

pub use framing::{Connection, FramingError};
pub use messages::*;
