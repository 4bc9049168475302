//! Giving up capabilities: a daemon keeps only what it needs once it is set up.
//!
//! Capabilities belong to threads, not processes: each thread calls [`keep_only`] itself (the
//! shaper's frame threads keep nothing; its main thread, which reloads and tears down, keeps
//! CAP_NET_ADMIN). The bounding set shrinks too, so a program it runs (`nft`) cannot get back
//! what was given up, even as uid 0.

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities: {0}")]
pub struct CapsError(String);

/// Reduces the calling thread's capabilities (bounding, permitted, effective; inheritable and
/// ambient emptied) to `keep`, or to what it already had of `keep`.
pub fn keep_only(keep: &[Capability]) -> Result<(), CapsError> {
    let e = |e: caps::errors::CapsError| CapsError(e.to_string());
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).map_err(e)? {
            caps::drop(None, CapSet::Bounding, cap).map_err(e)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(e)?;
    caps::clear(None, CapSet::Inheritable).map_err(e)?;
    let had = caps::read(None, CapSet::Permitted).map_err(e)?;
    let kept: CapsHashSet = keep.iter().copied().filter(|c| had.contains(c)).collect();
    caps::set(None, CapSet::Effective, &kept).map_err(e)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(e)?;
    Ok(())
}
