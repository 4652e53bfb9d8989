//! Descriptors a `stratus` process inherits from whoever started it (the operator's shell,
//! a test harness) are not its to pass on: without this, one left open without close-on-exec
//! in the operator's shell would reach the control plane, every agent, and every program a
//! plugin runs as an unprivileged user, which could read a file it was never given.

use std::os::fd::BorrowedFd;

/// Marks every descriptor above stderr close-on-exec, so no `exec` this process makes (the
/// control plane, an agent, a plugin's program) inherits it. Stratus's own descriptors are
/// opened close-on-exec already; the one a program is executed through is made inheritable
/// on purpose, after this, by the plugin runtime.
pub fn seal() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: the descriptor was listed as open just now and is only borrowed for one
        // fcntl; the directory's own descriptor, already closed, just fails.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn an_inherited_descriptor_is_made_close_on_exec() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let fd = file.as_raw_fd();
        let flag = nix::fcntl::FdFlag::FD_CLOEXEC;
        let flags = |fd: i32| {
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::fcntl::FdFlag::from_bits_truncate(
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap(),
            )
        };
        // As a shell's `exec 7<file` leaves it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(
            borrowed,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
        assert!(!flags(fd).contains(flag));
        super::seal();
        assert!(flags(fd).contains(flag));
    }
}
