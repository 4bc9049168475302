//! What the daemon changed that the kernel cannot tell us afterwards: the original sysctl
//! values. Written (and fsynced) before any change, removed after a clean stop; found at start
//! it means the last run died, and its values are restored first.
//!
//! Everything else the daemon installs is recognisable in the kernel itself (its nft table, its
//! rule/route protocol number, its non-persistent TAP), so stale copies are found by looking.

use crate::sysctl::Change;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub tap: String,
    pub netns: u64,
    pub pid: u32,
    pub sysctls: Vec<Change>,
}

/// The inode of this process's network namespace: state files are per namespace.
pub fn netns_inode() -> io::Result<u64> {
    Ok(fs::metadata("/proc/self/ns/net")?.ino())
}

/// `<dir>/shaper-<tap>-<netns inode>.json`
pub fn path(dir: &Path, tap: &str) -> io::Result<PathBuf> {
    Ok(dir.join(format!("shaper-{tap}-{}.json", netns_inode()?)))
}

/// Path of the live counters file next to the state file.
pub fn stats_path(dir: &Path, tap: &str) -> io::Result<PathBuf> {
    Ok(dir.join(format!("shaper-{tap}-{}.stats.json", netns_inode()?)))
}

pub fn load(path: &Path) -> io::Result<Option<State>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes atomically (temp file + fsync + rename).
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

pub fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("tg-state-{}", std::process::id()));
        let p = dir.join("s.json");
        assert!(load(&p).unwrap().is_none());
        let s = State {
            tap: "tg0".into(),
            netns: 1,
            pid: 2,
            sysctls: vec![Change {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
                original: "0".into(),
                restore: true,
            }],
        };
        save(&p, &s).unwrap();
        let back = load(&p).unwrap().unwrap();
        assert_eq!(back.sysctls, s.sysctls);
        remove(&p);
        assert!(load(&p).unwrap().is_none());
        fs::write(&p, b"{not json").unwrap();
        assert!(load(&p).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
