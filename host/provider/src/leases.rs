//! Loopback address leases of the local provider, shared by every control plane that uses
//! the same state directory: a log of JSON lines (an address leased, an address freed)
//! appended under an exclusive flock, and written anew with the live leases alone once it
//! holds more than twice as many lines as leases, plus `COMPACT_SLACK`.

use crate::ProviderError;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// First uid (and gid) of the per-server program users: the programs plugins start on a local
/// server run as `PROGRAM_UID_BASE + index`, `index` being the position of the server's leased
/// address among all 127.X.Y.Z candidates. 0x7000_0000 (1,879,048,192) lies above every range
/// systems allocate: `/etc/login.defs` (`UID_MAX` 60000, `SUB_UID_MAX` 600,100,000) and
/// systemd's ranges (system and regular users below 65536, container ranges up to
/// 1,879,048,191, the foreign range from 2,147,352,576); the ids need no passwd or group entry.
pub const PROGRAM_UID_BASE: u32 = stratus_containment::STRATUS_UIDS.start;

/// How many addresses (and so program uids) there are: 127.X.Y.Z, X in 1..=254, Y in 0..=255,
/// Z in 1..=254.
pub const ADDRESS_COUNT: u32 = 254 * 256 * 254;

/// Where `addr` stands among all candidate addresses, `None` outside them (127.0.x.x, .0,
/// .255, not 127/8).
pub fn address_index(addr: Ipv4Addr) -> Option<u32> {
    let [a, x, y, z] = addr.octets();
    let usable = a == 127 && (1..=254).contains(&x) && (1..=254).contains(&z);
    usable.then(|| (u32::from(x - 1) * 256 + u32::from(y)) * 254 + u32::from(z - 1))
}

/// The uid and gid (the same number) the programs of the server leasing `addr` run as, while
/// the agent runs as root. Leases are unique on the machine (claimed in `/run`), so two live
/// servers never share one; the same holder keeps its address, so its agent keeps its uid
/// across restarts.
pub fn program_uid(addr: Ipv4Addr) -> Option<u32> {
    address_index(addr).map(|i| PROGRAM_UID_BASE + i)
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub deployment: String,
    pub server_id: String,
}

/// The table as an earlier release kept it: one JSON document, rewritten whole per change.
#[derive(Debug, Deserialize)]
struct LeaseFile {
    leases: Option<BTreeMap<Ipv4Addr, Lease>>,
    /// Set, instead of `leases`, once the table moved into the log. An earlier release, which
    /// requires `leases`, then refuses the file rather than take it for an empty table (after
    /// a downgrade, it would hand out the addresses of running servers again).
    moved_to: Option<String>,
}

/// The log's file name, in the state directory's `provider/`.
const LOG_NAME: &str = "local-leases.log";

/// Longest unterminated end of the log taken for a line torn by a crash in the middle of an
/// append: a whole entry is far shorter (its names are file names, at most 255 bytes each).
const MAX_TORN_BYTES: usize = 4096;

/// One line of the lease log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// `address` is leased to the holder.
    Lease {
        address: Ipv4Addr,
        deployment: String,
        server_id: String,
    },
    /// `address` is free again.
    Free { address: Ipv4Addr },
}

/// The log is written anew, with only the live leases, once it holds more than twice as many
/// entries as leases plus this many: a rewrite per change made launching N servers write
/// N²/2 lease lines, and a log never rewritten would grow with every launch ever made.
const COMPACT_SLACK: usize = 256;

/// The leases file of one state directory.
#[derive(Debug, Clone)]
pub struct Leases {
    dir: PathBuf,
    /// The second octet this state directory starts allocating from, so that control planes
    /// with different state directories (e.g. parallel tests) rarely meet.
    first_octet: u8,
    /// The log as this process last read or wrote it: while the file still begins with those
    /// bytes, only what follows them is parsed (parsing the whole table per launch made
    /// launching N servers cost N² work). Bytes, not the file's inode, size and times,
    /// because those can all repeat: ext4 hands a freed inode out again at once, a rewrite
    /// often keeps the size, and coarse timestamps repeat within a tick.
    known: Arc<Mutex<Option<Seen>>>,
}

/// A log's complete lines and the table they make.
#[derive(Debug, Default)]
struct Seen {
    bytes: Vec<u8>,
    leases: BTreeMap<Ipv4Addr, Lease>,
    /// How many entries `bytes` holds.
    entries: usize,
}

impl Seen {
    /// Applies the entries of `tail`, which follows `self.bytes` in the file.
    fn extend(&mut self, tail: &[u8]) -> Result<(), serde_json::Error> {
        for entry in serde_json::Deserializer::from_slice(tail).into_iter::<Entry>() {
            self.apply(entry?);
        }
        self.bytes.extend_from_slice(tail);
        Ok(())
    }

    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Lease {
                address,
                deployment,
                server_id,
            } => self.leases.insert(
                address,
                Lease {
                    deployment,
                    server_id,
                },
            ),
            Entry::Free { address } => self.leases.remove(&address),
        };
        self.entries += 1;
    }

    /// Whether the log is long enough to be written anew with the live leases alone.
    fn wants_compacting(&self) -> bool {
        self.entries > 2 * self.leases.len() + COMPACT_SLACK
    }
}

/// `entry` as one line of the log.
fn line_of(entry: &Entry) -> Vec<u8> {
    let mut line = serde_json::to_vec(entry).expect("a lease entry serializes");
    line.push(b'\n');
    line
}

impl Leases {
    pub fn new(state_dir: &Path) -> Leases {
        let dir = state_dir.join("provider");
        let key = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let hash = fnv1a(key.as_os_str().as_encoded_bytes());
        Leases {
            dir,
            first_octet: 1 + (hash % 254) as u8,
            known: Arc::default(),
        }
    }

    /// The state directory this table belongs to, as recorded in machine-wide claims.
    fn owner(&self) -> String {
        let state = self.dir.parent().unwrap_or(&self.dir);
        std::fs::canonicalize(state)
            .unwrap_or_else(|_| state.to_path_buf())
            .to_string_lossy()
            .into_owned()
    }

    fn path(&self) -> PathBuf {
        self.dir.join(LOG_NAME)
    }

    /// Where an earlier release kept the table (`LeaseFile`).
    fn legacy_path(&self) -> PathBuf {
        self.dir.join("local-leases.json")
    }

    /// Runs `f` on the lease table while holding the lock, then appends the entry `f` returns,
    /// if any (a rewrite of the whole table per change made launching N servers quadratic).
    fn with_locked<T>(
        &self,
        f: impl FnOnce(&BTreeMap<Ipv4Addr, Lease>) -> Result<(T, Option<Entry>), ProviderError>,
    ) -> Result<T, ProviderError> {
        let _lock = self.lock()?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = self.read()?;
        let whole = self.entries_part(&bytes)?;
        // An error leaves `known` empty: the next call reads the file whole.
        let mut seen = match known.take() {
            Some(mut seen) if whole.starts_with(&seen.bytes) => {
                let tail = &whole[seen.bytes.len()..];
                match seen.extend(tail) {
                    Ok(()) => seen,
                    // Parsed whole again, so that the error names its place in the file.
                    Err(_) => self.parse(whole)?,
                }
            }
            _ => self.parse(whole)?,
        };
        let (out, entry) = f(&seen.leases)?;
        if let Some(entry) = entry {
            let mut line = line_of(&entry);
            // After a last entry written without its newline (by hand).
            if !seen.bytes.is_empty() && !seen.bytes.ends_with(b"\n") {
                line.insert(0, b'\n');
            }
            seen.apply(entry);
            if seen.wants_compacting() {
                seen.bytes = self.rewrite(&seen.leases)?;
                seen.entries = seen.leases.len();
            } else {
                self.append(&line, seen.bytes.len() as u64, bytes.len() > whole.len())?;
                seen.bytes.extend_from_slice(&line);
            }
        }
        *known = Some(seen);
        Ok(out)
    }

    /// The part of the log's `bytes` that holds its entries: all of them, unless they end in an
    /// entry torn by a crash (of the process or the machine) or a full disk in the middle of an
    /// append, which is left out and cut off by the next append. Entries whole but for their
    /// newline count. Any other unterminated end (not whole entries, then at most one cut
    /// short within `MAX_TORN_BYTES`) is an error naming its place.
    fn entries_part<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], ProviderError> {
        let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let rest = &bytes[end..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Entry>();
        let mut entries_end = 0;
        let torn = loop {
            match stream.next() {
                None => return Ok(bytes),
                Some(Ok(_)) => entries_end = stream.byte_offset(),
                Some(Err(e)) => break e.is_eof() && rest.len() - entries_end <= MAX_TORN_BYTES,
            }
        };
        if !torn {
            // Parsed whole, so that the error names its place in the file.
            return self.parse(bytes).map(|_| bytes);
        }
        tracing::warn!(path = %self.path().display(), bytes = rest.len() - entries_end,
            "leaving out a torn last line of the lease log");
        Ok(&bytes[..end + entries_end])
    }

    /// The exclusive lock every reader and writer of this state directory's table holds.
    fn lock(&self) -> Result<Flock<File>, ProviderError> {
        std::fs::create_dir_all(&self.dir).map_err(ProviderError::io(format!(
            "creating {}",
            self.dir.display()
        )))?;
        let lock_path = self.dir.join("local-leases.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(ProviderError::io(format!(
                "opening {}",
                lock_path.display()
            )))?;
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| ProviderError::Io {
            context: format!("locking {}", lock_path.display()),
            source: errno.into(),
        })
    }

    /// The log's bytes; an earlier release's table is made into a log first; none when
    /// there is neither.
    fn read(&self) -> Result<Vec<u8>, ProviderError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.migrate(),
            Err(e) => Err(ProviderError::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Writes the table an earlier release kept as a log, and leaves in the old file only that
    /// it moved; the log's bytes (none if there was no old table, or it had moved already and
    /// the log was removed since).
    fn migrate(&self) -> Result<Vec<u8>, ProviderError> {
        let old = self.legacy_path();
        let bytes = match std::fs::read(&old) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProviderError::io(format!("reading {}", old.display()))(e)),
        };
        let corrupt = |source| ProviderError::Leases {
            path: old.clone(),
            source,
        };
        // Empty only if the machine crashed right after a rewrite: no lease survived it.
        let table = match bytes.is_empty() {
            true => LeaseFile {
                leases: Some(BTreeMap::new()),
                moved_to: None,
            },
            false => serde_json::from_slice::<LeaseFile>(&bytes).map_err(corrupt)?,
        };
        let leases = match table {
            LeaseFile {
                leases: Some(leases),
                moved_to: None,
            } => leases,
            LeaseFile {
                leases: None,
                moved_to: Some(_),
            } => return Ok(Vec::new()),
            _ => {
                let why = "expected either `leases` or `moved_to`";
                return Err(corrupt(serde::de::Error::custom(why)));
            }
        };
        let log = self.rewrite(&leases)?;
        let moved = format!(r#"{{"moved_to":"{LOG_NAME}"}}"#);
        replace_file(&old, moved.as_bytes())
            .map_err(ProviderError::io(format!("writing {}", old.display())))?;
        Ok(log)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Seen, ProviderError> {
        let mut seen = Seen::default();
        seen.extend(bytes).map_err(|source| ProviderError::Leases {
            path: self.path(),
            source,
        })?;
        Ok(seen)
    }

    /// Adds `line` to the log at `at`, the end of its complete lines, cutting off a torn line
    /// first.
    fn append(&self, line: &[u8], at: u64, torn: bool) -> Result<(), ProviderError> {
        use std::os::unix::fs::FileExt;
        let path = self.path();
        let write = || -> std::io::Result<()> {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            if torn {
                file.set_len(at)?;
            }
            file.write_all_at(line, at)
        };
        write().map_err(ProviderError::io(format!("writing {}", path.display())))
    }

    /// Replaces the log with one entry per lease; returns the bytes written.
    fn rewrite(&self, leases: &BTreeMap<Ipv4Addr, Lease>) -> Result<Vec<u8>, ProviderError> {
        let path = self.path();
        let mut text = Vec::new();
        for (address, lease) in leases {
            text.extend(line_of(&Entry::Lease {
                address: *address,
                deployment: lease.deployment.clone(),
                server_id: lease.server_id.clone(),
            }));
        }
        replace_file(&path, &text)
            .map_err(ProviderError::io(format!("writing {}", path.display())))?;
        Ok(text)
    }

    /// Leases an address to the holder: the one it already holds (a relaunch of the same
    /// server), else the first free one, starting in this state directory's own /16. A new
    /// holder is refused once `max` addresses are leased (the provider's `max-servers`).
    pub fn acquire(&self, lease: Lease, max: u64) -> Result<Ipv4Addr, ProviderError> {
        let first = self.first_octet;
        self.with_locked(|table| {
            if let Some((addr, _)) = table.iter().find(|(_, held)| **held == lease) {
                return Ok((*addr, None));
            }
            let used = table.len() as u64;
            if used >= max {
                return Err(ProviderError::Full { max, used });
            }
            let owner = self.owner();
            let free = candidates(first)
                .filter(|a| !table.contains_key(a))
                .find(|a| claim_machine_wide(*a, &owner));
            let address = free.ok_or(ProviderError::NoAddress)?;
            let entry = Entry::Lease {
                address,
                deployment: lease.deployment,
                server_id: lease.server_id,
            };
            Ok((address, Some(entry)))
        })
    }

    /// Gives the address back; releasing a free address is fine.
    pub fn release(&self, addr: Ipv4Addr) -> Result<(), ProviderError> {
        let owner = self.owner();
        self.with_locked(|table| {
            let entry = table
                .contains_key(&addr)
                .then_some(Entry::Free { address: addr });
            let claim = claims_dir().join(addr.to_string());
            if std::fs::read_to_string(&claim).is_ok_and(|o| o == owner) {
                let _ = std::fs::remove_file(claim);
            }
            Ok(((), entry))
        })
    }

    /// Whether `lease`'s holder holds an address.
    pub fn holds(&self, lease: &Lease) -> Result<bool, ProviderError> {
        self.with_locked(|table| Ok((table.values().any(|held| held == lease), None)))
    }

    /// The current leases.
    pub fn list(&self) -> Result<BTreeMap<Ipv4Addr, Lease>, ProviderError> {
        self.with_locked(|table| Ok((table.clone(), None)))
    }
}

/// Replaces `path` with a file holding `bytes` (0600), through a new file renamed over it, so
/// that any process reading it after sees it whole. There is no fsync: only a crash of the
/// machine loses the page cache, and that ends every local server holding a lease too (one
/// fsync per launch was a second of waiting per thousand servers).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

/// Where state directories claim addresses machine-wide: two control planes with different
/// state directories (parallel tests, two operators) must not hand out the same address.
/// Root keeps it in `/run`, where no other user can plant a link in its place.
fn claims_dir() -> PathBuf {
    let run = Path::new("/run");
    let base = match nix::unistd::geteuid().is_root() && run.is_dir() {
        true => run.to_path_buf(),
        false => std::env::temp_dir(),
    };
    base.join("stratus-local-addresses")
}

/// Gives up every machine-wide address claim held for `state_dir`, leaving its lease table as
/// it is: for whoever ends a state directory's servers by other means than `release` (a test
/// harness killing them) and must not leave claims behind in `/run`.
pub fn release_claims_of(state_dir: &Path) {
    let owner = Leases::new(state_dir).owner();
    for claim in std::fs::read_dir(claims_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_to_string(claim.path()).is_ok_and(|o| o == owner) {
            let _ = std::fs::remove_file(claim.path());
        }
    }
}

/// The claims directory, made if absent, only if it is ours: a real directory (not a link
/// another user planted in a shared /tmp), owned by this user and writable by no one else.
fn own_claims_dir() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = claims_dir();
    let _ = std::fs::DirBuilder::new().mode(0o755).create(&dir);
    let ours = owned_alone(&dir);
    if !ours {
        tracing::warn!(dir = %dir.display(), "not using an address claims directory this user does not own alone");
    }
    ours.then_some(dir)
}

/// Whether `dir` is a real directory (not a link) of this user that no one else may write.
fn owned_alone(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.file_type().is_dir()
            && m.uid() == nix::unistd::geteuid().as_raw()
            && m.mode() & 0o022 == 0
    })
}

/// Claims `addr` for `owner` (a state directory) unless another live state directory holds it.
/// A claim whose state directory is gone is stale and taken over.
fn claim_machine_wide(addr: Ipv4Addr, owner: &str) -> bool {
    let Some(dir) = own_claims_dir() else {
        // Without a claims directory we fall back to the per-state-directory table alone.
        return true;
    };
    let path = dir.join(addr.to_string());
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => return f.write_all(owner.as_bytes()).is_ok(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let held_by = std::fs::read_to_string(&path).unwrap_or_default();
                if held_by == owner {
                    return true;
                }
                if held_by.is_empty() || Path::new(&held_by).exists() {
                    return false;
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => return true,
        }
    }
    false
}

/// Every usable address 127.X.Y.Z with X in 1..=254 (127.0.x.x holds 127.0.0.1 and the
/// Debian hostname alias 127.0.1.1) and Z in 1..=254, starting at X = `first`.
fn candidates(first: u8) -> impl Iterator<Item = Ipv4Addr> {
    (0..254u16)
        .map(move |i| 1 + ((u16::from(first) - 1 + i) % 254) as u8)
        .flat_map(|x| (0..=255u8).map(move |y| (x, y)))
        .flat_map(|(x, y)| (1..=254u8).map(move |z| Ipv4Addr::new(127, x, y, z)))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_claims_directory_planted_as_a_link_or_open_to_others_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, PermissionsExt::from_mode(0o755)).unwrap();
        assert!(super::owned_alone(&real));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(
            !super::owned_alone(&link),
            "a link is never the claims directory"
        );
        std::fs::set_permissions(&real, PermissionsExt::from_mode(0o777)).unwrap();
        assert!(
            !super::owned_alone(&real),
            "nor a directory others may write"
        );
    }

    #[test]
    fn a_claim_is_exclusive_between_live_state_dirs_and_stale_ones_are_taken_over() {
        // 127.255.x.x is outside the candidates, so no real allocation can collide with it.
        let addr = Ipv4Addr::new(127, 255, 255, 1);
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let owner = |d: &tempfile::TempDir| d.path().to_string_lossy().into_owned();
        let _ = std::fs::remove_file(claims_dir().join(addr.to_string()));
        assert!(claim_machine_wide(addr, &owner(&a)));
        assert!(
            claim_machine_wide(addr, &owner(&a)),
            "claiming again is idempotent"
        );
        assert!(
            !claim_machine_wide(addr, &owner(&b)),
            "a live state dir keeps its address"
        );
        let gone = owner(&a);
        drop(a);
        assert!(
            claim_machine_wide(addr, &owner(&b)),
            "a vanished state dir's claim is stale"
        );
        assert_ne!(
            std::fs::read_to_string(claims_dir().join(addr.to_string())).unwrap(),
            gone
        );
        std::fs::remove_file(claims_dir().join(addr.to_string())).unwrap();
    }

    use super::*;

    /// A fresh state directory's leases, with their directory made (to plant files in).
    fn with_provider_dir() -> (tempfile::TempDir, Leases) {
        let state = tempfile::tempdir().unwrap();
        let leases = Leases::new(state.path());
        std::fs::create_dir_all(&leases.dir).unwrap();
        (state, leases)
    }

    /// A holder of deployment `web`.
    fn web(server_id: &str) -> Lease {
        Lease {
            deployment: "web".into(),
            server_id: server_id.into(),
        }
    }

    #[test]
    fn a_new_holder_is_refused_at_max_servers_and_a_holder_keeps_its_address() {
        let state = tempfile::tempdir().unwrap();
        let leases = Leases::new(state.path());
        let holder = web;
        let a = leases.acquire(holder("app-1"), 2).unwrap();
        let b = leases.acquire(holder("app-2"), 2).unwrap();
        let full = leases.acquire(holder("app-3"), 2).unwrap_err();
        assert!(
            matches!(full, ProviderError::Full { max: 2, used: 2 }),
            "{full}"
        );
        assert!(full.to_string().contains("max-servers 2"), "{full}");
        assert_eq!(leases.acquire(holder("app-1"), 2).unwrap(), a);
        assert!(leases.holds(&holder("app-1")).unwrap());
        assert!(!leases.holds(&holder("app-3")).unwrap());
        leases.release(a).unwrap();
        assert!(!leases.holds(&holder("app-1")).unwrap());
        leases.release(b).unwrap();
        assert!(leases.list().unwrap().is_empty());
    }

    /// Look-ups and no-op changes leave the log alone; a change appends one line to it, in
    /// place (no new file, so no freed inode per launch).
    #[test]
    fn only_a_change_appends_to_the_log() {
        use std::os::unix::fs::MetadataExt;
        let state = tempfile::tempdir().unwrap();
        let leases = Leases::new(state.path());
        let holder = Lease {
            deployment: "web".into(),
            server_id: "app-1".into(),
        };
        let log = || std::fs::read_to_string(leases.path()).unwrap();
        let inode = || std::fs::metadata(leases.path()).unwrap().ino();
        let a = leases.acquire(holder.clone(), 2).unwrap();
        let (written, file) = (log(), inode());
        assert_eq!(written.lines().count(), 1, "{written}");
        assert!(leases.holds(&holder).unwrap());
        assert_eq!(leases.list().unwrap().len(), 1);
        assert_eq!(leases.acquire(holder, 2).unwrap(), a);
        leases.release(Ipv4Addr::new(127, 255, 255, 2)).unwrap();
        assert_eq!(log(), written, "a look-up wrote to the log");
        leases.release(a).unwrap();
        let after = log();
        assert!(after.starts_with(&written), "{after}");
        assert_eq!(
            after.lines().count(),
            2,
            "a release did not append: {after}"
        );
        assert_eq!(inode(), file, "the log was replaced, not appended to");
        assert!(leases.list().unwrap().is_empty());
    }

    /// A log grown to twice its leases (plus the slack) is written anew with the live ones
    /// alone, and every holder keeps its address through it, as another process reads it.
    #[test]
    fn a_long_log_is_written_anew_with_the_live_leases() {
        let state = tempfile::tempdir().unwrap();
        let leases = Leases::new(state.path());
        let holder = |i: usize| Lease {
            deployment: "web".into(),
            server_id: format!("app-{i}"),
        };
        let count = COMPACT_SLACK + 40;
        let addrs: Vec<_> = (0..count)
            .map(|i| leases.acquire(holder(i), 10_000).unwrap())
            .collect();
        // Another one, whose cache the compaction makes stale.
        let stale = Leases::new(state.path());
        assert_eq!(stale.list().unwrap().len(), count);
        for addr in &addrs[..count - 10] {
            leases.release(*addr).unwrap();
        }
        let lines = std::fs::read_to_string(leases.path())
            .unwrap()
            .lines()
            .count();
        assert!(lines < count, "never written anew: {lines} lines");
        assert!(lines <= 2 * 10 + COMPACT_SLACK + 1, "{lines} lines");
        assert!(lines > 10, "written anew at every change: {lines} lines");
        let elsewhere = Leases::new(state.path()).list().unwrap();
        let expected: BTreeMap<_, _> = (count - 10..count).map(|i| (addrs[i], holder(i))).collect();
        assert_eq!(elsewhere, expected);
        assert_eq!(leases.list().unwrap(), expected);
        assert_eq!(stale.list().unwrap(), expected);
        for addr in &addrs[count - 10..] {
            leases.release(*addr).unwrap();
        }
    }

    /// A state directory an earlier release left (one JSON table) keeps its leases: the table
    /// becomes the log and the old file is left saying it moved.
    #[test]
    fn an_earlier_releases_table_is_taken_over() {
        let (state, leases) = with_provider_dir();
        // The address the state directory would hand out first, had it no table.
        let held = candidates(leases.first_octet).next().unwrap();
        std::fs::write(
            leases.legacy_path(),
            format!(r#"{{"leases":{{"{held}":{{"deployment":"web","server_id":"app-1"}}}}}}"#),
        )
        .unwrap();
        let holder = web;
        assert_eq!(leases.acquire(holder("app-1"), 10).unwrap(), held);
        // The old file says where the table went, and has no `leases` for an earlier release
        // to take for an empty table.
        let moved = std::fs::read_to_string(leases.legacy_path()).unwrap();
        assert_eq!(moved, r#"{"moved_to":"local-leases.log"}"#);
        let other = leases.acquire(holder("app-2"), 10).unwrap();
        assert_ne!(other, held);
        assert_eq!(Leases::new(state.path()).list().unwrap().len(), 2);
        leases.release(other).unwrap();
        // A log removed by hand (after a reboot) leaves no lease, not the moved table's.
        std::fs::remove_file(leases.path()).unwrap();
        assert!(Leases::new(state.path()).list().unwrap().is_empty());
        // Where both are, the log is the table.
        let both = tempfile::tempdir().unwrap();
        let leases = Leases::new(both.path());
        let logged = leases.acquire(holder("app-3"), 10).unwrap();
        std::fs::write(
            leases.legacy_path(),
            format!(r#"{{"leases":{{"{held}":{{"deployment":"web","server_id":"app-1"}}}}}}"#),
        )
        .unwrap();
        let fresh = Leases::new(both.path()).list().unwrap();
        assert_eq!(fresh.keys().collect::<Vec<_>>(), [&logged]);
        leases.release(logged).unwrap();
        // A corrupt old table, or one that is neither a table nor moved, is an error naming
        // it, and is left for the operator.
        for text in [r#"{"leases":"#, "{}", r#"{"leases":{},"moved_to":"x"}"#] {
            let (_broken, leases) = with_provider_dir();
            std::fs::write(leases.legacy_path(), text).unwrap();
            let err = leases.list().unwrap_err().to_string();
            assert!(
                err.contains("local-leases.json is corrupt"),
                "{text}: {err}"
            );
            assert_eq!(std::fs::read_to_string(leases.legacy_path()).unwrap(), text);
        }
    }

    /// A line torn by a crash in the middle of an append is left out and cut off by the next
    /// append; a corrupt line before the end is an error naming the file and the line, and so
    /// is an unterminated end too long for a torn entry.
    #[test]
    fn a_torn_last_line_is_cut_off_and_a_corrupt_one_is_named() {
        let state = tempfile::tempdir().unwrap();
        let leases = Leases::new(state.path());
        let holder = web;
        let a = leases.acquire(holder("app-1"), 10).unwrap();
        let mut file = OpenOptions::new().append(true).open(leases.path()).unwrap();
        // Longer than the line appended next, so that only cutting it off gets rid of it.
        let torn = format!(
            r#"{{"lease":{{"address":"127.2.0.1","server_id":"{}"#,
            "x".repeat(200)
        );
        file.write_all(torn.as_bytes()).unwrap();
        assert_eq!(leases.list().unwrap().len(), 1);
        let b = leases.acquire(holder("app-2"), 10).unwrap();
        let fresh = Leases::new(state.path());
        assert_eq!(
            fresh.list().unwrap().len(),
            2,
            "the torn line was not cut off"
        );
        assert!(
            !std::fs::read_to_string(leases.path())
                .unwrap()
                .contains("xxx")
        );
        file.write_all(b"not json\n").unwrap();
        let line = |l: &Leases| l.list().unwrap_err().to_string();
        for err in [line(&leases), line(&fresh)] {
            assert!(err.contains("local-leases.log is corrupt"), "{err}");
            assert!(err.contains("line 3"), "{err}");
        }
        let log = std::fs::read_to_string(leases.path()).unwrap();
        let log = log.replace("not json\n", "");
        std::fs::write(
            leases.path(),
            format!("{log}{}", "y".repeat(MAX_TORN_BYTES + 1)),
        )
        .unwrap();
        let err = line(&leases);
        assert!(
            err.contains("local-leases.log is corrupt") && err.contains("line 3"),
            "{err}"
        );
        std::fs::remove_file(leases.path()).unwrap();
        for addr in [a, b] {
            leases.release(addr).unwrap();
        }
    }

    /// Each `Leases` keeps the table it last saw; a change made through another (another
    /// control plane or command on the same state directory) or by hand is read again.
    #[test]
    fn a_table_changed_elsewhere_is_read_again() {
        let state = tempfile::tempdir().unwrap();
        let (one, two) = (Leases::new(state.path()), Leases::new(state.path()));
        let holder = web;
        let a = one.acquire(holder("app-1"), 10).unwrap();
        let b = two.acquire(holder("app-2"), 10).unwrap();
        assert_ne!(a, b, "the second holder was given the first one's address");
        assert_eq!(one.list().unwrap().len(), 2, "missed the other's lease");
        one.release(b).unwrap();
        assert!(!two.holds(&holder("app-2")).unwrap(), "missed the release");
        // By hand: same length as what was there, written at once.
        let text = std::fs::read_to_string(one.path()).unwrap();
        let edited = text.replace("app-1", "app-9");
        assert_eq!(edited.len(), text.len());
        std::fs::write(one.path(), edited).unwrap();
        assert!(one.holds(&holder("app-9")).unwrap(), "missed the edit");
        assert!(!one.holds(&holder("app-1")).unwrap());
        one.release(a).unwrap();
    }

    /// A rewrite by another `Leases` that keeps the file's size, reuses its inode and lands
    /// within one timestamp tick (coarse-timestamp filesystems, kernels before 6.13) is still
    /// seen: the cache trusts the file's bytes, not its metadata.
    #[test]
    fn a_rewrite_that_keeps_inode_size_and_times_is_not_missed() {
        let holder = web;
        for _ in 0..20 {
            let state = tempfile::tempdir().unwrap();
            let (one, two) = (Leases::new(state.path()), Leases::new(state.path()));
            let a1 = one.acquire(holder("app-1"), 10).unwrap();
            let a2 = two.acquire(holder("app-2"), 10).unwrap();
            two.release(a1).unwrap();
            assert!(two.holds(&holder("app-2")).unwrap());
            let a3 = one.acquire(holder("app-3"), 10).unwrap();
            assert_ne!(
                a3, a2,
                "app-3 was given app-2's address (and so its program uid)"
            );
            assert!(
                one.holds(&holder("app-2")).unwrap(),
                "app-2's lease was lost"
            );
            for a in [a2, a3] {
                one.release(a).unwrap();
            }
        }
    }

    /// A last entry written by hand without its newline is a lease like any other, and the
    /// next append starts on a line of its own.
    #[test]
    fn a_last_entry_without_its_newline_counts() {
        let (state, leases) = with_provider_dir();
        let held = candidates(leases.first_octet).next().unwrap();
        let entry =
            format!(r#"{{"lease":{{"address":"{held}","deployment":"web","server_id":"app-1"}}}}"#);
        std::fs::write(leases.path(), &entry).unwrap();
        let holder = web;
        assert!(leases.holds(&holder("app-1")).unwrap());
        let other = leases.acquire(holder("app-2"), 10).unwrap();
        assert_ne!(other, held);
        let log = std::fs::read_to_string(leases.path()).unwrap();
        assert!(log.starts_with(&format!("{entry}\n")), "{log}");
        assert_eq!(Leases::new(state.path()).list().unwrap().len(), 2);
        // Two entries on an unterminated line both count; a short end that is no entry cut
        // short is an error, not a torn line to drop.
        let two = [3, 4].map(|i| {
            format!(r#"{{"lease":{{"address":"127.255.255.{i}","deployment":"web","server_id":"h-{i}"}}}}"#)
        });
        let log = std::fs::read_to_string(leases.path()).unwrap();
        std::fs::write(leases.path(), format!("{log}{}{}", two[0], two[1])).unwrap();
        assert_eq!(leases.list().unwrap().len(), 4);
        let log = std::fs::read_to_string(leases.path()).unwrap();
        std::fs::write(leases.path(), format!("{log}\n{}junk", two[0])).unwrap();
        let err = leases.list().unwrap_err().to_string();
        assert!(err.contains("local-leases.log is corrupt"), "{err}");
        std::fs::write(leases.path(), log).unwrap();
        leases.release(other).unwrap();
    }

    /// A state directory's claims go, another's stay, and the lease table is left alone.
    #[test]
    fn releasing_a_state_dirs_claims_leaves_others_and_the_table() {
        let (mine, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let holder = Lease {
            deployment: "web".into(),
            server_id: "app-1".into(),
        };
        let (a, b) = (Leases::new(mine.path()), Leases::new(theirs.path()));
        let (x, y) = (
            a.acquire(holder.clone(), 10).unwrap(),
            b.acquire(holder.clone(), 10).unwrap(),
        );
        let claimed = |addr: Ipv4Addr, l: &Leases| {
            std::fs::read_to_string(claims_dir().join(addr.to_string())).ok() == Some(l.owner())
        };
        assert!(claimed(x, &a) && claimed(y, &b));
        super::release_claims_of(mine.path());
        assert!(!claimed(x, &a), "the claim stayed");
        assert!(claimed(y, &b), "another state directory's claim went");
        assert!(a.holds(&holder).unwrap(), "the table changed");
        a.release(x).unwrap();
        b.release(y).unwrap();
    }

    #[test]
    fn every_address_gets_its_own_program_uid_in_the_reserved_range() {
        // Candidates from 127.1 come in address order: strictly rising uids are distinct ones.
        let mut count = 0u32;
        let mut last = None;
        for addr in candidates(1) {
            let uid = program_uid(addr).unwrap();
            assert!(
                (PROGRAM_UID_BASE..PROGRAM_UID_BASE + ADDRESS_COUNT).contains(&uid),
                "{addr} -> {uid}"
            );
            assert!(last < Some(uid), "{addr} does not get a uid of its own");
            last = Some(uid);
            count += 1;
        }
        assert_eq!(count, ADDRESS_COUNT);
        // Above login.defs' SUB_UID_MAX and systemd's container ranges, below its foreign range
        // and far from (uid_t)-1.
        const {
            assert!(PROGRAM_UID_BASE > 1_879_048_191 && PROGRAM_UID_BASE > 600_100_000);
            assert!(PROGRAM_UID_BASE + ADDRESS_COUNT < 2_147_352_576);
        }
        for outside in [
            "127.0.0.1",
            "127.0.1.1",
            "127.1.0.0",
            "127.1.0.255",
            "10.1.2.3",
        ] {
            assert_eq!(program_uid(outside.parse().unwrap()), None, "{outside}");
        }
        assert_eq!(
            program_uid(Ipv4Addr::new(127, 1, 0, 1)),
            Some(PROGRAM_UID_BASE)
        );
    }

    #[test]
    fn a_holder_keeps_its_program_uid_and_two_holders_never_share_one() {
        let state = tempfile::tempdir().unwrap();
        let leases = Leases::new(state.path());
        let holder = |s: &str| Lease {
            deployment: "uids".into(),
            server_id: s.into(),
        };
        let a = leases.acquire(holder("db-1"), 10).unwrap();
        let b = leases.acquire(holder("db-2"), 10).unwrap();
        let uid = |addr| program_uid(addr).unwrap();
        assert_ne!(uid(a), uid(b));
        // A restarted agent of the same server is launched with the same lease, so the same uid.
        assert_eq!(uid(leases.acquire(holder("db-1"), 10).unwrap()), uid(a));
        // Another state directory on the machine never gets the same address, so never the uid.
        let other = tempfile::tempdir().unwrap();
        let theirs = Leases::new(other.path())
            .acquire(holder("db-1"), 10)
            .unwrap();
        assert!(uid(theirs) != uid(a) && uid(theirs) != uid(b));
        Leases::new(other.path()).release(theirs).unwrap();
        leases.release(a).unwrap();
        leases.release(b).unwrap();
    }

    #[test]
    fn candidates_skip_reserved_addresses_and_wrap() {
        let mut it = candidates(254);
        assert_eq!(it.next(), Some(Ipv4Addr::new(127, 254, 0, 1)));
        let all: Vec<_> = candidates(254).collect();
        assert_eq!(all.len(), 254 * 256 * 254);
        assert!(
            all.iter()
                .all(|a| a.octets()[1] != 0 && a.octets()[3] != 0 && a.octets()[3] != 255)
        );
        assert_eq!(
            all[256 * 254],
            Ipv4Addr::new(127, 1, 0, 1),
            "wraps to 127.1"
        );
    }
}
