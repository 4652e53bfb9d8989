//! Which object store holds cloud files, from the control plane's `--cloud-files` setting:
//! a local directory (the default, in the state directory) or an S3-compatible bucket.
//!
//! `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&allow_http=true]`: credentials come only
//! from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! or the instance's role), never from the setting, which is logged.

use crate::files::{CloudFiles, FilesError};
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use std::path::Path;
use std::sync::Arc;

/// Query keys an `s3://` setting may carry; anything else (a secret above all) is refused.
const S3_KEYS: &[&str] = &["endpoint", "region", "allow_http"];

impl CloudFiles {
    /// Cloud files from a setting: `None` or a path means a local directory (`default` when
    /// `None`), `s3://…` a bucket (see the module documentation).
    pub fn from_setting(setting: Option<&str>, default: &Path) -> Result<CloudFiles, FilesError> {
        match setting {
            None => CloudFiles::local(default),
            Some(s) if s.starts_with("s3://") => s3(s),
            Some(s) if s.contains("://") => Err(FilesError::Setting {
                setting: redacted(s),
                message: "unknown scheme: use a directory or s3://bucket".into(),
            }),
            Some(dir) => CloudFiles::local(dir),
        }
    }

    /// What the setting names, for the control plane's log (no query values).
    pub fn describe_setting(setting: Option<&str>, default: &Path) -> String {
        match setting {
            None => format!("local directory {}", default.display()),
            Some(s) if s.starts_with("s3://") => format!("S3 bucket {}", redacted(s)),
            Some(dir) => format!("local directory {dir}"),
        }
    }
}

/// The setting without its query.
fn redacted(setting: &str) -> String {
    setting.split('?').next().unwrap_or_default().to_string()
}

fn s3(setting: &str) -> Result<CloudFiles, FilesError> {
    let bad = |message: String| FilesError::Setting {
        setting: redacted(setting),
        message,
    };
    let rest = &setting["s3://".len()..];
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket name".into()));
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !S3_KEYS.contains(&key) {
            return Err(bad(format!(
                "unknown option {key:?} (allowed: {}); credentials come from the environment \
                 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from the setting",
                S3_KEYS.join(", ")
            )));
        }
        builder = match key {
            "endpoint" => builder.with_endpoint(value),
            "region" => builder.with_region(value),
            _ => builder.with_allow_http(value == "true"),
        };
    }
    let store = builder
        .build()
        .map_err(|e| bad(format!("cannot use the bucket: {e}")))?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        CloudFiles::new(Arc::new(store))
    } else {
        CloudFiles::new(Arc::new(PrefixStore::new(store, prefix)))
    })
}
