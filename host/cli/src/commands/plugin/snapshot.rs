//! Before/after listings of a hook's directories, so `plugin call` can show what it changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use stratus_plugin_runtime::Redactor;

/// Files per snapshot; a hook that touches more is summarised, not listed in full.
const MAX_FILES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    size: u64,
    modified: Option<SystemTime>,
}

pub type Snapshot = BTreeMap<PathBuf, Entry>;

pub fn take<'a>(dirs: impl Iterator<Item = &'a PathBuf>) -> Snapshot {
    let mut snap = Snapshot::new();
    for d in dirs {
        walk(d, &mut snap);
    }
    snap
}

fn walk(dir: &Path, snap: &mut Snapshot) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if snap.len() >= MAX_FILES {
            return;
        }
        let path = e.path();
        // symlink_metadata: never follow links out of the directory.
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            walk(&path, snap);
        } else {
            snap.insert(
                path,
                Entry {
                    size: md.len(),
                    modified: md.modified().ok(),
                },
            );
        }
    }
}

/// Prints what changed; the plugin chose the file names, so they pass the call's redactor.
pub fn print_changes(before: &Snapshot, after: &Snapshot, redactor: &Redactor) {
    let shown = |p: &std::path::Path| redactor.redact(&p.display().to_string());
    let mut any = false;
    for (path, a) in after {
        match before.get(path) {
            None => println!("  created  {} ({} bytes)", shown(path), a.size),
            Some(b) if b != a => {
                println!("  modified {} ({} → {} bytes)", shown(path), b.size, a.size)
            }
            Some(_) => continue,
        }
        any = true;
    }
    for (path, b) in before {
        if !after.contains_key(path) {
            println!("  deleted  {} (was {} bytes)", shown(path), b.size);
            any = true;
        }
    }
    if !any {
        println!("  (none)");
    }
}
