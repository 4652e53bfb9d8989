//! The wire between the control plane and its clients: agents on servers and operators' CLIs.
//!
//! One TCP connection per peer, TLS 1.3 with the control plane's certificate, which peers pin by
//! its fingerprint (`tls.rs`, `dial.rs`), newline-delimited JSON frames inside (`framing.rs`).
//! The first frame says who is calling (`Hello`); the control plane answers `Welcome` or
//! `Refused`, then sends numbered requests and the peer answers each with the same id
//! (`messages.rs`). An agent learns where its control plane is, which certificate to pin and
//! its credential from its bootstrap file (`bootstrap.rs`).

pub mod bootstrap;
pub mod bounds;
pub mod dial;
pub mod dial_address;
pub mod framing;
pub mod messages;
pub mod refusal;
pub mod tls;

pub use bootstrap::{Bootstrap, BootstrapError};
pub use dial::{ClientStream, DialError, dial};
pub use dial_address::DialAddress;
pub use framing::{Connection, FramingError};
pub use messages::*;
pub use refusal::REFUSED_IN_USE;
pub use tls::{ControlIdentity, Fingerprint, TlsError};
