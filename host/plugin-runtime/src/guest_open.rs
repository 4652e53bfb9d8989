//! The guest's `open-at`, replacing wasmtime-wasi's: it opens with `O_NONBLOCK` and refuses
//! anything that is not a regular file or a directory.
//!
//! wasmtime-wasi opens in its blocking pool with plain flags, so a FIFO that a plugin's own
//! program planted where the component writes (or reads) blocks an agent thread in
//! `open(2)` until someone opens the other end: the hook times out, the thread stays stuck for
//! good, and a health check doing it every interval leaks threads without bound. Opening
//! non-blocking never waits (a FIFO without a reader fails with `ENXIO`, one opened for
//! reading returns at once) and the `fstat` that follows refuses FIFOs, sockets and devices
//! before the guest gets a descriptor it could block on in `read` or `write`.

use crate::call::State;
use crate::network::record;
use cap_primitives::fs::{FollowSymlinks, OpenOptions, OpenOptionsExt};
use rustix::fs::{FileType, OFlags};
use std::path::Path;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, Dir, File};
use wasmtime_wasi::p2::FsError;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
};
use wasmtime_wasi::{FsPerms, OpenMode};

/// The WASI interface whose `open-at` is replaced; the name wasmtime-wasi 48 defines it under.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

type OpenAtParams = (
    Resource<Descriptor>,
    PathFlags,
    String,
    OpenFlags,
    DescriptorFlags,
);

/// Replaces `[method]descriptor.open-at` in `l`, which must already hold wasmtime-wasi's.
pub(crate) fn add_to_linker(l: &mut Linker<State>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    let defined = l.instance(FILESYSTEM_TYPES).and_then(|mut i| {
        i.func_wrap_async(
            "[method]descriptor.open-at",
            |store: StoreContextMut<'_, State>, params: OpenAtParams| {
                Box::new(async move { Ok((open_at(store, params).await?,)) })
            },
        )
    });
    l.allow_shadowing(false);
    defined
}

/// What the OS is asked for, and what the guest's descriptor may do, after wasmtime-wasi's
/// own checks of the flags against the preopen's permissions.
struct Plan {
    opts: OpenOptions,
    mode: OpenMode,
    must_be_dir: bool,
}

fn plan(
    perms: FsPerms,
    pf: PathFlags,
    of: OpenFlags,
    fl: DescriptorFlags,
) -> Result<Plan, ErrorCode> {
    let mut opts = OpenOptions::new();
    let mut mode = OpenMode::empty();
    let create = of.contains(OpenFlags::CREATE);
    if create {
        if of.contains(OpenFlags::EXCLUSIVE) {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        opts.write(true);
        mode |= OpenMode::WRITE;
    }
    if of.contains(OpenFlags::TRUNCATE) {
        opts.truncate(true).write(true);
        mode |= OpenMode::WRITE;
    }
    if fl.contains(DescriptorFlags::READ) {
        opts.read(true);
        mode |= OpenMode::READ;
    }
    if fl.contains(DescriptorFlags::WRITE) {
        opts.write(true);
        mode |= OpenMode::WRITE;
    } else {
        // As wasmtime-wasi: open for reading so the OS allows it; perms refuse use later.
        opts.read(true);
        mode |= OpenMode::READ;
    }
    opts._cap_fs_ext_follow(if pf.contains(PathFlags::SYMLINK_FOLLOW) {
        FollowSymlinks::Yes
    } else {
        FollowSymlinks::No
    });
    opts.custom_flags(OFlags::NONBLOCK.bits() as i32);
    if fl.intersects(
        DescriptorFlags::FILE_INTEGRITY_SYNC
            | DescriptorFlags::DATA_INTEGRITY_SYNC
            | DescriptorFlags::REQUESTED_WRITE_SYNC,
    ) {
        return Err(ErrorCode::Unsupported);
    }
    let must_be_dir = of.contains(OpenFlags::DIRECTORY);
    if must_be_dir && of.intersects(OpenFlags::CREATE | OpenFlags::EXCLUSIVE | OpenFlags::TRUNCATE)
    {
        return Err(ErrorCode::Invalid);
    }
    if perms.write_not_permitted() && mode.contains(OpenMode::WRITE) {
        return Err(ErrorCode::NotPermitted);
    }
    Ok(Plan {
        opts,
        mode,
        must_be_dir,
    })
}

/// What an open found at the path.
enum Opened {
    File(std::fs::File),
    Dir(std::fs::File),
    /// A FIFO, socket or device: what it is, for the refusal.
    Special(&'static str),
}

/// Opens `path` beneath `dir` without ever waiting, and says what it is.
fn open_beneath(dir: &std::fs::File, path: &str, opts: &OpenOptions) -> std::io::Result<Opened> {
    let file = match cap_primitives::fs::open(dir, Path::new(path), opts) {
        Ok(f) => f,
        // A FIFO opened for writing with no reader, or a socket.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
            return Ok(Opened::Special("FIFO or socket"));
        }
        Err(e) => return Err(e),
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&file)?.st_mode);
    Ok(match kind {
        FileType::RegularFile => {
            // Regular files ignore O_NONBLOCK, but the guest's descriptor should not carry it.
            let flags = rustix::fs::fcntl_getfl(&file)?;
            rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
            Opened::File(file)
        }
        FileType::Directory => Opened::Dir(file),
        FileType::Fifo => Opened::Special("FIFO"),
        FileType::Socket => Opened::Special("socket"),
        FileType::CharacterDevice | FileType::BlockDevice => Opened::Special("device"),
        _ => Opened::Special("special file"),
    })
}

async fn open_at(
    mut store: StoreContextMut<'_, State>,
    (fd, pf, path, of, fl): OpenAtParams,
) -> wasmtime::Result<Result<Resource<Descriptor>, ErrorCode>> {
    let parent = match store.data().table.get(&fd)? {
        Descriptor::Dir(d) => d.clone(),
        Descriptor::File(_) => return Ok(Err(ErrorCode::NotDirectory)),
    };
    let Plan {
        opts,
        mode,
        must_be_dir,
    } = match plan(parent.perms, pf, of, fl) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let dir = parent.dir.clone();
    let at = path.clone();
    let opened = tokio::task::spawn_blocking(move || open_beneath(&dir, &at, &opts)).await?;
    let descriptor = match opened {
        Err(e) => return Ok(Err(FsError::from(e).downcast()?)),
        Ok(Opened::Special(what)) => {
            let what = format!(
                "opening {path}: it is a {what}, and plugins may open only regular files and \
                 directories"
            );
            record(&store.data().host.denials, what);
            return Ok(Err(ErrorCode::Access));
        }
        Ok(Opened::Dir(d)) => Descriptor::Dir(Dir::new(d, parent.perms, mode, false)),
        Ok(Opened::File(_)) if must_be_dir => return Ok(Err(ErrorCode::NotDirectory)),
        Ok(Opened::File(f)) => Descriptor::File(File::new(f, parent.perms, mode, false)),
    };
    Ok(Ok(store.data_mut().table.push(descriptor)?))
}
