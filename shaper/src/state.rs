//! What the daemon changed that the kernel cannot tell us afterwards: the original sysctl
//! values. Written (and fsynced) before any change, removed after a clean stop; found at start
//! it means the last run died, and its values are restored first.
//!
//! Everything else the daemon installs is recognisable in the kernel itself (its nft table, its
//! rule/route protocol number, its non-persistent TAP), so stale copies are found by looking.

use std::io;
use std::path::{Path, PathBuf};
pub use tollgate::kernel::state::{StateError, load, netns_inode, remove, save, write_atomic};
use tollgate::kernel::sysctl::Change;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub tap: String,
    pub netns: u64,
    pub pid: u32,
    pub sysctls: Vec<Change>,
}

/// `<dir>/shaper-<tap>-<netns inode>.json`
pub fn path(dir: &Path, tap: &str) -> io::Result<PathBuf> {
    Ok(dir.join(format!("shaper-{tap}-{}.json", netns_inode()?)))
}

/// Path of the live counters file next to the state file.
pub fn stats_path(dir: &Path, tap: &str) -> io::Result<PathBuf> {
    Ok(dir.join(format!("shaper-{tap}-{}.stats.json", netns_inode()?)))
}
