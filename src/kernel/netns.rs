//! Named network namespaces, kept the way `ip netns` keeps them: a namespace is pinned by a
//! bind mount of its `ns/net` file on `/run/netns/<name>`, so `ip netns exec <name>` and
//! `ip -n <name>` reach the ones tollgate makes, and tollgate reaches the operator's.
//!
//! Work inside a namespace runs on a thread of its own that has joined it ([`run_in`]):
//! netlink sockets it opens, `nft` processes it starts and the `/proc/sys/net` files it opens
//! all belong to that namespace, while the rest of the process stays where it was.
//!
//! A pinning mount lives in the mount namespace it was made in. Under `ip netns exec` (or a
//! service with private mounts) that is a private copy, and the namespace would vanish with
//! the process: [`private_mounts`] tells callers so they can refuse instead.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where named namespaces are pinned (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace name {0:?} is not usable (1-255 bytes, no '/', not . or ..)")]
    BadName(String),
    #[error("network namespace {0:?} already exists")]
    Exists(String),
    #[error("network namespace {0:?} does not exist")]
    Missing(String),
    #[error("network namespace {name:?}: {what}: {err}")]
    Io {
        name: String,
        what: &'static str,
        err: io::Error,
    },
    #[error("the thread working in network namespace {0:?} panicked")]
    Panicked(String),
}

fn io_err(name: &str, what: &'static str) -> impl FnOnce(io::Error) -> NetnsError {
    let name = name.to_string();
    move |err| NetnsError::Io { name, what, err }
}

/// Refuses names that would escape the directory or that the kernel's path lookup rejects.
pub fn check_name(name: &str) -> Result<(), NetnsError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.contains('\0')
        || name == "."
        || name == ".."
    {
        return Err(NetnsError::BadName(name.to_string()));
    }
    Ok(())
}

/// The file that pins namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn cpath(p: &Path) -> CString {
    // a path built from a checked name has no NUL byte
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn mount(src: &Path, dst: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (src, dst, fstype) = (cpath(src), cpath(dst), c"none");
    // SAFETY: all pointers are NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the namespace directory a shared mount (as iproute2 does), so a namespace pinned
/// here is seen by every mount namespace that shares `/run/netns`.
fn share_dir() -> io::Result<()> {
    let dir = Path::new(NETNS_DIR);
    std::fs::create_dir_all(dir)?;
    let shared = libc::MS_SHARED | libc::MS_REC;
    match mount(Path::new(""), dir, shared) {
        Ok(()) => Ok(()),
        // not a mount point yet: bind it onto itself first
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(dir, dir, libc::MS_BIND | libc::MS_REC)?;
            mount(Path::new(""), dir, shared)
        }
        Err(e) => Err(e),
    }
}

/// True when a namespace of that name is pinned.
pub fn exists(name: &str) -> bool {
    check_name(name).is_ok() && path(name).exists()
}

/// Names of the pinned namespaces that start with `prefix`, sorted.
pub fn list(prefix: &str) -> Result<Vec<String>, NetnsError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(NETNS_DIR, "listing")(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// Creates and pins an empty network namespace (only `lo`, down) named `name`.
pub fn create(name: &str) -> Result<(), NetnsError> {
    check_name(name)?;
    share_dir().map_err(io_err(name, "making /run/netns a shared mount"))?;
    let pin = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&pin)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                NetnsError::Exists(name.to_string())
            } else {
                io_err(name, "creating its pin file")(e)
            }
        })?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: unshare changes only this thread's namespaces; it ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            mount(Path::new("/proc/thread-self/ns/net"), &pin, libc::MS_BIND)
        })
        .join()
    });
    match made {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&pin);
            Err(io_err(name, "creating it")(e))
        }
        Err(_) => {
            let _ = std::fs::remove_file(&pin);
            Err(NetnsError::Panicked(name.to_string()))
        }
    }
}

/// Unpins namespace `name`. The kernel frees it, with every device in it, once nothing else
/// holds it (a process inside it, an open file of it).
pub fn delete(name: &str) -> Result<(), NetnsError> {
    check_name(name)?;
    let pin = path(name);
    if !pin.exists() {
        return Err(NetnsError::Missing(name.to_string()));
    }
    let c = cpath(&pin);
    // SAFETY: c is a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (a pin file left by a failed create): just remove it
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(io_err(name, "unmounting its pin")(e));
        }
    }
    std::fs::remove_file(&pin).map_err(io_err(name, "removing its pin file"))
}

/// An open handle on namespace `name` (for `setns`, or a netlink request's IFLA_NET_NS_FD).
pub fn open(name: &str) -> Result<std::fs::File, NetnsError> {
    check_name(name)?;
    std::fs::File::open(path(name)).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            NetnsError::Missing(name.to_string())
        } else {
            io_err(name, "opening it")(e)
        }
    })
}

/// Runs `f` on a thread that has joined namespace `name`, and returns what it returns.
/// Everything `f` opens (netlink sockets, `nft` processes, `/proc/sys/net` files) belongs to
/// that namespace; the caller's thread is untouched.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = open(name)?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T, NetnsError> {
            // SAFETY: setns on this thread only, with a namespace fd held open for the call.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io_err(name, "entering it")(io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::Panicked(name.to_string()))?
    })
}

/// True when this process has a mount namespace of its own (not init's), as under
/// `ip netns exec` or a service with private mounts: a namespace pinned from here would not
/// outlive the process. False when init's cannot be read (no such distinction to make).
pub fn private_mounts() -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (ino("/proc/self/ns/mnt"), ino("/proc/1/ns/mnt")) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(check_name(bad), Err(NetnsError::BadName(_))),
                "{bad:?}"
            );
        }
        for good in ["tollgate-shard0", "gw.1", "x"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        assert_eq!(path("tg0"), Path::new("/run/netns/tg0"));
    }

    #[test]
    fn a_missing_namespace_is_named() {
        let e = run_in("tollgate-no-such-namespace", || ()).unwrap_err();
        assert!(matches!(e, NetnsError::Missing(ref n) if n == "tollgate-no-such-namespace"));
        assert!(!exists("tollgate-no-such-namespace"));
    }
}
