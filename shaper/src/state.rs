//! Files of the daemon's own: the live counters file. (What it changes in the namespace is
//! recorded in the shared sysctl journal; everything else it installs is recognisable in the
//! kernel itself: its nft table, its rule/route protocol number and table, its non-persistent
//! TAP.)

use std::io;
use std::path::{Path, PathBuf};
pub use tollgate::kernel::state::{StateError, netns_inode, remove, write_atomic};

/// `<dir>/shaper-<tap>-<netns inode>.stats.json`: the live counters.
pub fn stats_path(dir: &Path, tap: &str) -> io::Result<PathBuf> {
    Ok(dir.join(tollgate::names::shaper_stats_file(tap, netns_inode()?)))
}
