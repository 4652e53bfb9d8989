//! Key management and cloud files of the control plane.
//!
//! - [`keys`]: secrets (generated passwords, agent credentials) kept as 0600 files in a 0700
//!   directory, wrapped in [`Secret`] so they cannot be printed by accident.
//! - [`files`]: service packages and data sources in object storage (a local directory, or
//!   an S3-compatible bucket: [`backend`]), content-addressed ([`objects`]) and verified.
//! - [`endpoint`]: the control plane's HTTPS file endpoint; [`remote`]: the agent's client
//!   of it, which checks every byte against its sha256 ([`verify`]).

pub mod backend;
pub mod beneath;
pub mod endpoint;
pub mod files;
pub mod keys;
pub mod objects;
mod package;
pub mod peer_limit;
pub mod remote;
pub mod socket_owner;
pub mod verify;

pub use beneath::{Beneath, NewFile, Usage};
pub use endpoint::{Authorize, FileEndpoint};
pub use files::{CloudFiles, FileRef, FilesError, PackageRef};
pub use keys::{KeyError, KeyStore, Secret, digest, random_password, random_token};
pub use objects::Address;
pub use package::skipped as not_payload;
pub use remote::{AgentIdentity, FetchedPackage, RemoteFiles};
pub use verify::Expected;
