//! State on disk: the few facts tollgate cannot read back from the kernel (the sysctl values it
//! found before changing them, whether the l3mdev rule predates it), and the locks that keep
//! two runs from interleaving their changes.
//!
//! State files are written atomically (temp file, fsync, rename, fsync of the directory), so a
//! crash leaves the old file or the new one, never half of one. Everything here runs as root in
//! a directory others may be able to reach, so nothing follows a symbolic link: files are
//! created with O_EXCL|O_NOFOLLOW, mode 0600, in a directory of mode 0700.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: io::Error,
    },
    #[error(
        "{path}: unreadable state ({err}); it records what tollgate changed and must restore. Inspect it, then remove it to start afresh"
    )]
    Corrupt { path: PathBuf, err: String },
    #[error("{path}: {why}; refusing to use it")]
    Unsafe { path: PathBuf, why: String },
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |err| StateError::Io { path, what, err }
}

/// The inode of the calling thread's network namespace (a thread may have joined another
/// one than the process's): state and locks are per namespace.
pub fn netns_inode() -> io::Result<u64> {
    Ok(fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Creates `dir` (mode 0700) if needed and checks that it is a real directory of ours that no
/// one else can write to.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(io_err(dir, "creating the directory")(e)),
    }
    let m = fs::symlink_metadata(dir).map_err(io_err(dir, "reading the directory"))?;
    let unsafe_dir = |why: &str| StateError::Unsafe {
        path: dir.to_path_buf(),
        why: why.to_string(),
    };
    if !m.file_type().is_dir() {
        return Err(unsafe_dir("not a directory (a symbolic link?)"));
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if m.uid() != uid {
        return Err(unsafe_dir(&format!(
            "owned by uid {}, not by this process (uid {uid})",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir, "making the directory private"))?;
    }
    Ok(())
}

/// Reads a JSON state file: None when absent, an error naming the file when it is unreadable
/// (a corrupt record of what must be restored is never silently ignored).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StateError::Unsafe {
                path: path.to_path_buf(),
                why: "a symbolic link".into(),
            });
        }
        Err(e) => return Err(io_err(path, "opening")(e)),
    };
    serde_json::from_reader(io::BufReader::new(f))
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            err: e.to_string(),
        })
}

/// Writes a JSON state file atomically (temp file + fsync + rename + directory fsync).
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        what: "encoding",
        err: io::Error::other(e),
    })?;
    write_atomic(path, &bytes, true)
}

/// Replaces `path` with `bytes` by a private temp file and a rename, so readers see the old
/// content or the new, never part of it. `durable` adds the fsyncs that make it survive a
/// crash of the machine (state records need them; a counters file rewritten every second does
/// not).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    // a temp file left by a crashed run of the same pid: unlink does not follow links
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err(&tmp, "creating"))?;
    f.write_all(bytes)
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
        .map_err(io_err(&tmp, "writing"))?;
    fs::rename(&tmp, path).map_err(io_err(path, "replacing"))?;
    if durable && let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes a state file; absent is fine.
pub fn remove(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, "removing")(e)),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, waiting for another holder if there is one (logged).
    pub fn acquire(path: &Path) -> Result<Lock, StateError> {
        if let Some(d) = path.parent() {
            ensure_dir(d)?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err(path, "opening the lock"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            tracing::warn!("another tollgate run holds {}; waiting", path.display());
            // SAFETY: as above, blocking this time.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io_err(path, "locking")(io::Error::last_os_error()));
            }
        }
        Ok(Lock { _file: f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tg-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_private_and_atomic() {
        let dir = scratch("rt");
        let p = dir.join("s.json");
        assert!(load::<Vec<u32>>(&p).unwrap().is_none());
        save(&p, &vec![1u32, 2]).unwrap();
        assert_eq!(load::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        remove(&p).unwrap();
        remove(&p).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = scratch("corrupt");
        ensure_dir(&dir).unwrap();
        let p = dir.join("s.json");
        fs::write(&p, b"{not json").unwrap();
        let e = load::<Vec<u32>>(&p).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }));
        assert!(e.to_string().contains("s.json"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn symbolic_links_are_not_followed() {
        let dir = scratch("link");
        ensure_dir(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = dir.join("s.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert!(matches!(
            load::<Vec<u32>>(&p),
            Err(StateError::Unsafe { .. })
        ));
        // a temp file planted as a link to the victim is replaced, not written through
        let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        fs::remove_file(&p).unwrap();
        save(&p, &vec![3u32]).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let lock = dir.join("l.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        assert!(Lock::acquire(&lock).is_err());
        // a directory that is a link is refused
        let linkdir = dir.join("linkdir");
        std::os::unix::fs::symlink(&dir, &linkdir).unwrap();
        assert!(matches!(
            ensure_dir(&linkdir),
            Err(StateError::Unsafe { .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
