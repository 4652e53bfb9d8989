//! Which cgroup hierarchies this host has and where this process sits in them.

use crate::cgroup::{Cgroup, Dir, Kind};
use std::path::{Path, PathBuf};

/// A mounted hierarchy we can use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    kind: Kind,
    mount: PathBuf,
    /// The mount's root within the hierarchy (not `/` inside a cgroup namespace's bind mount).
    mount_root: PathBuf,
    /// This process's cgroup within the hierarchy, from `/proc/self/cgroup`.
    own: PathBuf,
    /// Whether `pids.max` is set in this hierarchy.
    pids: bool,
}

/// The usable hierarchies of this host; empty when cgroups are absent (use the fallback).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Containment {
    hierarchies: Vec<Hierarchy>,
}

impl Containment {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Containment {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Containment::from_text(&mountinfo, &cgroup)
    }

    /// No containment: callers use the subreaper fallback.
    pub fn none() -> Containment {
        Containment::default()
    }

    fn from_text(mountinfo: &str, cgroup: &str) -> Containment {
        let mut v2_mount = None;
        let mut pids_mount = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (Some(root), Some(point), Some(opts)) = (pre.get(3), pre.get(4), pre.get(5)) else {
                continue;
            };
            if !opts.split(',').any(|o| o == "rw") {
                continue;
            }
            let entry = (
                PathBuf::from(unescape(point)),
                PathBuf::from(unescape(root)),
            );
            match post.first() {
                Some(&"cgroup2") if v2_mount.is_none() => v2_mount = Some(entry),
                Some(&"cgroup")
                    if pids_mount.is_none()
                        && post
                            .get(2)
                            .is_some_and(|o| o.split(',').any(|o| o == "pids")) =>
                {
                    pids_mount = Some(entry)
                }
                _ => {}
            }
        }
        let mut hierarchies = Vec::new();
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (kind, mount) = if controllers.is_empty() {
                (Kind::Unified, &v2_mount)
            } else if controllers.split(',').any(|c| c == "pids") {
                (Kind::PidsV1, &pids_mount)
            } else {
                continue;
            };
            let Some((mount, mount_root)) = mount.clone() else {
                continue;
            };
            let own = PathBuf::from(path);
            let pids = match kind {
                Kind::PidsV1 => true,
                Kind::Unified => std::fs::read_to_string(mount.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids")),
            };
            hierarchies.push(Hierarchy {
                kind,
                mount,
                mount_root,
                own,
                pids,
            });
        }
        // Only one hierarchy limits processes: v2's when it has the controller.
        if hierarchies
            .iter()
            .any(|h| h.kind == Kind::Unified && h.pids)
        {
            hierarchies.retain(|h| h.kind == Kind::Unified);
        }
        hierarchies.retain(|h| h.mount.is_dir());
        Containment { hierarchies }
    }

    /// Whether any cgroup hierarchy is usable.
    pub fn is_available(&self) -> bool {
        !self.hierarchies.is_empty()
    }

    /// Whether `pids.max` can be set (a v2 `pids` controller or a v1 `pids` hierarchy).
    pub fn limits_processes(&self) -> bool {
        self.hierarchies.iter().any(|h| h.pids)
    }

    /// Whether a whole cgroup can be killed atomically (`cgroup.kill`, Linux 5.14+).
    pub fn kills_atomically(&self) -> bool {
        self.hierarchies
            .iter()
            .any(|h| h.kind == Kind::Unified && h.mount.join("cgroup.kill").exists())
            || self
                .own()
                .dirs()
                .iter()
                .any(|d| d.path.join("cgroup.kill").exists())
    }

    /// The root cgroup of every hierarchy.
    pub fn root(&self) -> Cgroup {
        self.cgroup(|h| h.mount.clone())
    }

    /// The cgroup this process is in, in every hierarchy.
    pub fn own(&self) -> Cgroup {
        self.cgroup(|h| {
            let rel = h.own.strip_prefix(&h.mount_root).unwrap_or(&h.own);
            join_beneath(&h.mount, rel)
        })
    }

    fn cgroup(&self, path: impl Fn(&Hierarchy) -> PathBuf) -> Cgroup {
        Cgroup::from_dirs(
            self.hierarchies
                .iter()
                .map(|h| Dir {
                    kind: h.kind,
                    path: path(h),
                    pids: h.pids,
                })
                .collect(),
        )
    }

    /// A description for logs: each hierarchy and whether it limits processes.
    pub fn describe(&self) -> String {
        if self.hierarchies.is_empty() {
            return "no cgroup hierarchy (subreaper fallback, no process limit)".into();
        }
        self.hierarchies
            .iter()
            .map(|h| {
                format!(
                    "{:?} at {}{}",
                    h.kind,
                    h.mount.display(),
                    if h.pids { " (pids)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Joins an absolute cgroup path onto a mount point.
fn join_beneath(mount: &Path, rel: &Path) -> PathBuf {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel.as_os_str().is_empty() {
        mount.to_owned()
    } else {
        mount.join(rel)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_hosts_use_unified_for_kill_and_v1_for_pids() {
        let c = Containment::from_text(HYBRID_MOUNTS, "8:pids:/a\n4:memory:/m\n0::/b/c\n");
        let kinds: Vec<(Kind, PathBuf, bool)> = c
            .hierarchies
            .iter()
            .map(|h| (h.kind, h.own.clone(), h.pids))
            .collect();
        if !Path::new("/sys/fs/cgroup/unified").is_dir()
            || !Path::new("/sys/fs/cgroup/pids").is_dir()
        {
            eprintln!("skipped: this host is not hybrid, the mount points do not exist");
            return;
        }
        assert_eq!(
            kinds,
            vec![
                (Kind::PidsV1, PathBuf::from("/a"), true),
                (Kind::Unified, PathBuf::from("/b/c"), false)
            ]
        );
    }

    #[test]
    fn read_only_and_missing_hierarchies_are_not_used() {
        let ro = "31 30 0:27 / /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw\n";
        assert!(!Containment::from_text(ro, "0::/\n").is_available());
        assert!(!Containment::from_text("", "0::/\n").is_available());
        assert!(!Containment::from_text(HYBRID_MOUNTS, "").is_available());
    }

    #[test]
    fn own_path_is_relative_to_the_mount_root() {
        let ns = "31 30 0:27 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let c = Containment::from_text(ns, "0::/outer/inner\n");
        if !c.is_available() {
            eprintln!("skipped: /sys/fs/cgroup does not exist here");
            return;
        }
        assert_eq!(c.own().paths(), vec![PathBuf::from("/sys/fs/cgroup/inner")]);
    }
}
