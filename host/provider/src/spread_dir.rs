//! Directories whose subdirectories the filesystem spreads over its block groups.
//!
//! Every server gets a fresh tree of a few dozen inodes, and terminating a deployment frees
//! them all. On ext4 without a journal, allocating an inode skips, one buffer lookup each,
//! every inode of its block group freed in the last minute (five while its table block is
//! unwritten). With every server's tree in the block group of its parent directory, a launch
//! after a terminate paid for thousands of freed inodes per new one: 0.6 ms of CPU per inode,
//! most of a launch's time. A directory marked as the top of directory hierarchies
//! (`chattr +T`, the flag ext2/3/4 give home directories) makes the Orlov allocator put each
//! subdirectory in the emptiest block group instead, so a new tree meets only the few freed
//! inodes of its own group.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `FS_TOPDIR_FL` of `linux/fs.h`: the top of a directory hierarchy, for the Orlov allocator.
const FS_TOPDIR_FL: nix::libc::c_int = 0x0002_0000;

// The kernel reads and writes an `int` through these, whatever the request number says.
nix::ioctl_read_bad!(get_flags, nix::libc::FS_IOC_GETFLAGS, nix::libc::c_int);
nix::ioctl_write_ptr_bad!(set_flags, nix::libc::FS_IOC_SETFLAGS, nix::libc::c_int);

/// Creates `dir` (and its parents) if missing, and marks it so its subdirectories spread over
/// the filesystem where the filesystem can (ext2/3/4). Elsewhere, or if the mark cannot be
/// set, the directory is still made: the mark only saves time.
pub fn create_spreading_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Err(e) = mark_top_dir(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "subdirectories will not be spread");
    }
    Ok(())
}

/// Whether `dir` carries the top-of-hierarchy mark.
pub fn spreads_subdirectories(dir: &Path) -> io::Result<bool> {
    Ok(flags(&std::fs::File::open(dir)?)? & FS_TOPDIR_FL != 0)
}

fn mark_top_dir(dir: &Path) -> io::Result<()> {
    let file = std::fs::File::open(dir)?;
    let old = flags(&file)?;
    if old & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    let new = old | FS_TOPDIR_FL;
    // SAFETY: the descriptor is open for the call and `new` outlives it.
    unsafe { set_flags(file.as_raw_fd(), &new) }.map_err(io::Error::from)?;
    Ok(())
}

fn flags(file: &std::fs::File) -> io::Result<nix::libc::c_int> {
    let mut flags: nix::libc::c_int = 0;
    // SAFETY: the descriptor is open for the call and the kernel writes one `int` to `flags`.
    unsafe { get_flags(file.as_raw_fd(), &mut flags) }.map_err(io::Error::from)?;
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only ext2/3/4 take the mark (a `/tmp` on tmpfs does not), so the test asks the
    /// filesystem's type and expects the mark exactly on ext4 (this machine's disk).
    #[test]
    fn a_spreading_dir_is_made_with_its_parents_and_marked_where_supported() {
        use nix::sys::statfs::{EXT4_SUPER_MAGIC, statfs};
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("servers/dep");
        create_spreading_dir(&dir).unwrap();
        assert!(dir.is_dir());
        let supported = statfs(base.path()).unwrap().filesystem_type() == EXT4_SUPER_MAGIC;
        if supported {
            assert!(spreads_subdirectories(&dir).unwrap());
        }
        // Making it again keeps the mark and fails nothing.
        create_spreading_dir(&dir).unwrap();
        if supported {
            assert!(spreads_subdirectories(&dir).unwrap());
        }
        // Its parent, made on the way, is not marked.
        if supported {
            assert!(!spreads_subdirectories(base.path().join("servers").as_path()).unwrap());
        }
    }

    #[test]
    fn a_path_under_a_file_is_an_error() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("file"), "x").unwrap();
        assert!(create_spreading_dir(&base.path().join("file/dir")).is_err());
    }
}
