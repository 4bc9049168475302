//! Frame buffers, in two sizes, reused through free lists: the hot path allocates only until
//! the pool has grown to what the traffic needs, and never more than its maximum.
//!
//! Two classes keep memory proportional to what is queued: a frame of up to
//! [`SMALL_LEN`] bytes (everything but GSO frames) is copied into a small buffer, a larger one
//! keeps the 64 KiB buffer it was read into. A flood of tiny frames then holds 2 KiB per
//! frame, not 64 KiB, and each tenant's own byte and frame limits bound its share. When a class
//! is exhausted the frame is dropped and counted to its tenant: the reader never waits for a
//! buffer, so one tenant's backlog cannot stall everyone else's frames.

use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Room for a vnet header and the largest GSO frame.
pub const LARGE_LEN: usize = crate::vnet::VNET_HDR_LEN + 14 + 65_535 + 64;
/// Room for a vnet header and an Ethernet frame of a 1500-byte MTU (and then some).
pub const SMALL_LEN: usize = 2048;
/// Most buffers of each class (128 MiB and 256 MiB at most).
pub const SMALL_MAX: u64 = 65_536;
pub const LARGE_MAX: u64 = 4_096;

struct Class {
    len: usize,
    max: u64,
    allocated: AtomicU64,
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Class {
    fn new(len: usize, max: u64) -> Class {
        let (tx, rx) = crossbeam_channel::bounded(usize::try_from(max).unwrap_or(usize::MAX));
        Class {
            len,
            max,
            allocated: AtomicU64::new(0),
            tx,
            rx,
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        if let Ok(b) = self.rx.try_recv() {
            return Some(b);
        }
        let n = self.allocated.fetch_add(1, Relaxed);
        if n >= self.max {
            self.allocated.fetch_sub(1, Relaxed);
            return None;
        }
        Some(vec![0u8; self.len])
    }

    fn in_use(&self) -> u64 {
        self.allocated
            .load(Relaxed)
            .saturating_sub(u64::try_from(self.rx.len()).unwrap_or(0))
    }
}

/// Use of one class, for counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassUsage {
    pub allocated: u64,
    pub in_use: u64,
    pub max: u64,
}

/// The two classes.
pub struct Pool {
    small: Class,
    large: Class,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("usage", &self.usage())
            .finish()
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(SMALL_MAX, LARGE_MAX)
    }
}

impl Pool {
    pub fn new(small_max: u64, large_max: u64) -> Pool {
        Pool {
            small: Class::new(SMALL_LEN, small_max),
            large: Class::new(LARGE_LEN, large_max),
        }
    }

    /// A buffer that holds `len` bytes, or None when that class is exhausted.
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        if len <= SMALL_LEN {
            self.small.take()
        } else {
            self.large.take()
        }
    }

    /// Gives a buffer back (its class is its length).
    pub fn put(&self, buf: Vec<u8>) {
        let class = if buf.len() == SMALL_LEN {
            &self.small
        } else {
            &self.large
        };
        // each class's list holds every buffer it ever allocated: this never blocks or fails
        let _ = class.tx.try_send(buf);
    }

    /// (small, large) usage.
    pub fn usage(&self) -> (ClassUsage, ClassUsage) {
        let u = |c: &Class| ClassUsage {
            allocated: c.allocated.load(Relaxed),
            in_use: c.in_use(),
            max: c.max,
        };
        (u(&self.small), u(&self.large))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_size_bounded_and_reused() {
        let p = Pool::new(2, 1);
        let a = p.take(60).unwrap();
        let b = p.take(1514).unwrap();
        assert_eq!(a.len(), SMALL_LEN);
        assert!(p.take(100).is_none(), "small class exhausted");
        let big = p.take(30_000).unwrap();
        assert_eq!(big.len(), LARGE_LEN);
        assert!(p.take(30_000).is_none());
        assert_eq!(p.usage().0.in_use, 2);
        p.put(a);
        p.put(big);
        assert_eq!(p.usage().0.in_use, 1);
        assert_eq!(p.usage().1.in_use, 0);
        assert!(p.take(10).is_some(), "a returned buffer is reused");
        assert_eq!(p.usage().0.allocated, 2, "without allocating");
        drop(b);
    }
}
