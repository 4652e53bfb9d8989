//! Key management and cloud files of the control plane.
//!
//! - [`keys`]: secrets (generated passwords, agent credentials) kept as 0600 files in a 0700
//!   directory, wrapped in [`Secret`] so they cannot be printed by accident.
//! - [`files`]: service packages and data sources in object storage (a local directory
//!   today, any `object_store` backend such as S3 later), content-addressed and verified.

pub mod beneath;
pub mod files;
pub mod keys;
mod package;

pub use beneath::{Beneath, NewFile, Usage};
pub use files::{CloudFiles, FileRef, FilesError, PackageRef};
pub use keys::{KeyError, KeyStore, Secret, digest, random_password, random_token};
pub use package::skipped as not_payload;
