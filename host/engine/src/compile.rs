//! Step 0b: every uploaded plugin package's component is compiled once, ahead of time, into
//! the code cache this control plane's agents load from, so no agent compiles it. The
//! [`Precompiler`] does the compiling (the binary backs it with the plugin runtime, so the
//! engine stays free of wasmtime); each distinct component is one journaled step.

use crate::engine::{Engine, EngineError};
use crate::steps::digest;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use stratus_cloud::PackageRef;
use stratus_model::step_key::StepKey;

/// Components compiled at once: compiling already uses every core for one component, and each
/// compile holds its component's code in memory.
pub const MAX_PARALLEL_COMPILES: usize = 2;

/// Compiles packages' components into the code cache the agents of this control plane share.
pub trait Precompiler: Send + Sync {
    /// The component of the package in `package` (a directory with `plugin.toml`), read
    /// without compiling it: what the progress line shows.
    fn describe<'a>(&'a self, package: &'a Path)
    -> BoxFuture<'a, Result<ComponentSummary, String>>;

    /// Compiles that component into the cache, or finds its verified entry there.
    fn precompile<'a>(&'a self, package: &'a Path) -> BoxFuture<'a, Result<Precompiled, String>>;
}

/// What a component is, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// `rust`, `python`, `javascript`, or `unknown`.
    pub language: String,
    pub bytes: u64,
}

/// The outcome of one precompile, journaled as the step's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precompiled {
    /// sha256 of the component, which names its cache entry.
    pub sha256: String,
    /// A verified entry was already in the cache: nothing was compiled.
    pub cached: bool,
    pub millis: u64,
}

/// One distinct component and the packages (cloud-files keys) and services that carry it.
struct Unit {
    key: String,
    package: PackageRef,
    digest: String,
    label: String,
}

impl Engine {
    /// Compiles every plugin package of `uploaded` (all but `files_keys`, which are payload)
    /// once per distinct content, [`MAX_PARALLEL_COMPILES`] at a time. Without a precompiler
    /// the agents compile, as before.
    pub(crate) async fn compile_packages(
        &self,
        dep: &str,
        uploaded: &BTreeMap<String, PackageRef>,
        files_keys: &BTreeSet<String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let Some(pre) = self.parts.precompiler.clone() else {
            return Ok(());
        };
        let units = self.compile_units(uploaded, files_keys, labels);
        let results: Vec<Result<(), EngineError>> = futures::stream::iter(units)
            .map(|u| {
                let pre = pre.clone();
                async move { self.compile_one(dep, pre.as_ref(), &u).await }
            })
            .buffer_unordered(MAX_PARALLEL_COMPILES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Packages grouped by content: services sharing a package share one compile.
    fn compile_units(
        &self,
        uploaded: &BTreeMap<String, PackageRef>,
        files_keys: &BTreeSet<String>,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Unit> {
        let mut by_digest: BTreeMap<&str, Unit> = BTreeMap::new();
        for (name, r) in uploaded.iter().filter(|(n, _)| !files_keys.contains(*n)) {
            let label = labels.get(name).cloned().unwrap_or_else(|| name.clone());
            by_digest
                .entry(r.digest.as_str())
                .and_modify(|u| u.label = format!("{}, {label}", u.label))
                .or_insert_with(|| Unit {
                    key: r.name.clone(),
                    package: r.clone(),
                    digest: r.digest.clone(),
                    label,
                });
        }
        by_digest.into_values().collect()
    }

    /// A directory with an uploaded package's files, the bytes agents will fetch: the local
    /// store's own, or a copy from a remote store (S3) under `cloud_files_dir`.
    async fn uploaded_dir(&self, r: &PackageRef) -> Result<PathBuf, String> {
        let cache = self.parts.cloud_files_dir.join("compile");
        self.parts
            .files
            .package_dir(r, &cache)
            .await
            .map_err(|e| e.to_string())
    }

    async fn compile_one(
        &self,
        dep: &str,
        pre: &dyn Precompiler,
        u: &Unit,
    ) -> Result<(), EngineError> {
        let key = StepKey::Compile(u.key.clone());
        let failed =
            |e: String| EngineError::Other(format!("step {key}: compiling {}: {e}", u.label));
        self.step(dep, &key, &digest(&u.digest), async {
            let dir = self.uploaded_dir(&u.package).await.map_err(failed)?;
            let summary = pre.describe(&dir).await.map_err(failed)?;
            let what = format!(
                "{} ({}, {})",
                u.label,
                summary.language,
                megabytes(summary.bytes)
            );
            self.log_deployment(dep, &format!("compiling {what}"));
            let done = pre.precompile(&dir).await.map_err(failed)?;
            let message = match done.cached {
                true => format!("{what}: compiled code already in the code cache"),
                false => format!("compiled {what} in {:.1} s", done.millis as f64 / 1000.0),
            };
            self.log_deployment(dep, &message);
            Ok(done)
        })
        .await
        .map(|_: Precompiled| ())
    }
}

/// `0.4 MB`, `18 MB`: one decimal below 10 MB (decimal megabytes, as file sizes are shown).
pub fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    match mb < 9.95 {
        true => format!("{mb:.1} MB"),
        false => format!("{mb:.0} MB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(megabytes(412_345), "0.4 MB");
        assert_eq!(megabytes(18_200_000), "18 MB");
        assert_eq!(megabytes(9_960_000), "10 MB");
    }
}
