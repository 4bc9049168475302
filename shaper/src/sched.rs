//! The scheduler: per tenant, a token bucket in front of flow queues served round-robin by
//! bytes with CoDel on each (fq_codel's structure, behind a rate), and a min-heap of the times
//! at which each backlogged tenant may send next.
//!
//! It does no I/O and reads no clock: callers pass `now` in nanoseconds, so unit tests drive it
//! with a fake clock. Only tenants with a backlog are in the heap (at most once each), so idle
//! tenants cost nothing and finding the next release is O(log active). Ties are broken by
//! insertion order, which round-robins tenants that are ready at the same time.
//!
//! Inside a tenant (see [`crate::fq`]): frames are hashed to one of `flows` queues by their
//! 5-tuple; a flow that was idle joins the "new" list and is served before the bulk flows of
//! the "old" list, so an interactive flow's packet does not wait behind a bulk upload's
//! backlog; CoDel drops from the head of a flow whose packets have waited longer than its
//! target for a whole interval, which keeps the tenant's standing queue (and so the RTT of
//! everything in it) near the target instead of the full queue limit. When the byte or frame
//! limit is reached, the head of the fattest flow is dropped (the arriving frame is refused
//! only if its own flow is the fattest), so one flow cannot fill the queue at another's cost.

use crate::bucket::TokenBucket;
use crate::fq::{Drop as FqDrop, FlowQueues};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tollgate::config::Shaping;

/// Counters of one tenant (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantStats {
    pub queued_packets: u64,
    pub queued_bytes: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Every drop, whatever the reason (the sum of the three below).
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Dropped because the queue was full (bytes or frames).
    pub overflow_packets: u64,
    pub overflow_bytes: u64,
    /// Dropped by CoDel (waited too long).
    pub codel_packets: u64,
    pub codel_bytes: u64,
    /// Dropped because no buffer was free (the daemon's pool, shared by all tenants).
    pub nobuf_packets: u64,
    pub nobuf_bytes: u64,
}

impl TenantStats {
    fn drop(&mut self, why: FqDrop, bytes: u64) {
        self.dropped_packets += 1;
        self.dropped_bytes += bytes;
        let (p, b) = match why {
            FqDrop::Overflow => (&mut self.overflow_packets, &mut self.overflow_bytes),
            FqDrop::Codel => (&mut self.codel_packets, &mut self.codel_bytes),
        };
        *p += 1;
        *b += bytes;
    }
}

struct TenantQueue<F> {
    bucket: TokenBucket,
    queues: FlowQueues<F>,
    /// In the heap now.
    scheduled: bool,
    /// In `Scheduler::dirty` (changed since the last `take_dirty`).
    dirty: bool,
    stats: TenantStats,
}

impl<F> TenantQueue<F> {
    fn new(s: &Shaping, now: u64) -> TenantQueue<F> {
        TenantQueue {
            bucket: TokenBucket::new(s.rate, s.burst, now),
            queues: FlowQueues::new(s),
            scheduled: false,
            dirty: false,
            stats: TenantStats::default(),
        }
    }
}

pub struct Scheduler<F> {
    tenants: Vec<TenantQueue<F>>,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    seq: u64,
    /// Tenants whose counters or queue changed since the last `take_dirty`: a snapshot of
    /// 10,000 tenants copies the few that moved, not all of them.
    dirty: Vec<usize>,
    /// Frames dropped inside the queues (CoDel, fattest-flow drops), for the caller to recycle.
    dropped: Vec<F>,
}

impl<F> Scheduler<F> {
    /// One queue per tenant, in the order given (the classifier's tenant numbers).
    pub fn new(tenants: &[Shaping], now: u64) -> Scheduler<F> {
        Scheduler {
            tenants: tenants.iter().map(|s| TenantQueue::new(s, now)).collect(),
            heap: BinaryHeap::new(),
            seq: 0,
            dirty: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn schedule(&mut self, tenant: usize, at: u64) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, tenant)));
        self.tenants[tenant].scheduled = true;
    }

    fn mark(&mut self, tenant: usize) {
        let q = &mut self.tenants[tenant];
        if !q.dirty {
            q.dirty = true;
            self.dirty.push(tenant);
        }
    }

    /// The tenants that changed since the last call (each once).
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let dirty = std::mem::take(&mut self.dirty);
        for &t in &dirty {
            self.tenants[t].dirty = false;
        }
        dirty
    }

    /// Frames the queues dropped since the last call (their buffers go back to the pool).
    pub fn take_dropped(&mut self) -> std::vec::Drain<'_, F> {
        self.dropped.drain(..)
    }

    /// The tenant's token balance in bytes as of its last refill, and that refill's time (ns):
    /// a reader extrapolates at the rate, capped at the burst.
    pub fn balance(&self, tenant: usize) -> (i64, u64) {
        self.tenants[tenant].bucket.balance_at()
    }

    /// Queues a frame of flow `flow` (a hash of its 5-tuple) costing `cost` bytes. Gives the
    /// frame back when it is refused (its flow is the fattest and the queue is full); frames
    /// of other flows dropped to make room go to [`Self::take_dropped`]. An empty queue always
    /// takes one frame, however large.
    pub fn enqueue(
        &mut self,
        tenant: usize,
        frame: F,
        cost: u32,
        flow: u32,
        now: u64,
    ) -> Result<(), F> {
        if tenant >= self.tenants.len() {
            return Err(frame);
        }
        self.mark(tenant);
        let q = &mut self.tenants[tenant];
        let stats = &mut q.stats;
        let dropped = &mut self.dropped;
        let result = q.queues.enqueue(frame, cost, flow, now, |f, c| {
            stats.drop(FqDrop::Overflow, u64::from(c));
            dropped.push(f);
        });
        match result {
            Ok(()) => {
                q.stats.queued_packets += 1;
                q.stats.queued_bytes += u64::from(cost);
            }
            Err(f) => {
                q.stats.drop(FqDrop::Overflow, u64::from(cost));
                return Err(f);
            }
        }
        if !q.scheduled {
            q.bucket.refill(now);
            let at = q.bucket.ready_at().max(now);
            self.schedule(tenant, at);
        }
        Ok(())
    }

    /// Counts a frame of `tenant` that was dropped before it could be queued (no buffer).
    pub fn count_nobuf(&mut self, tenant: usize, cost: u32) {
        if tenant < self.tenants.len() {
            self.mark(tenant);
            let s = &mut self.tenants[tenant].stats;
            s.dropped_packets += 1;
            s.dropped_bytes += u64::from(cost);
            s.nobuf_packets += 1;
            s.nobuf_bytes += u64::from(cost);
        }
    }

    /// The next frame that may leave at `now`, with its tenant; None if none may yet.
    pub fn dequeue(&mut self, now: u64) -> Option<(usize, F)> {
        while let Some(&Reverse((at, _, t))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            let q = &mut self.tenants[t];
            q.scheduled = false;
            q.bucket.refill(now);
            if !q.bucket.ready() {
                let at = q.bucket.ready_at();
                self.schedule(t, at);
                continue;
            }
            let stats = &mut q.stats;
            let dropped = &mut self.dropped;
            let next = q.queues.dequeue(now, |f, c| {
                stats.drop(FqDrop::Codel, u64::from(c));
                dropped.push(f);
            });
            let Some((frame, cost)) = next else {
                // CoDel dropped what was left
                self.mark(t);
                continue;
            };
            let c = u64::from(cost);
            q.bucket.consume(c);
            q.stats.sent_packets += 1;
            q.stats.sent_bytes += c;
            let more = !q.queues.is_empty();
            let at = q.bucket.ready_at().max(now);
            self.mark(t);
            if more {
                self.schedule(t, at);
            }
            return Some((t, frame));
        }
        None
    }

    /// When the next frame may leave; None when every queue is empty.
    pub fn next_release(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes every queued frame regardless of tokens (for shutdown: deliver, do not drop).
    pub fn drain(&mut self) -> impl Iterator<Item = (usize, F)> + '_ {
        self.heap.clear();
        self.tenants.iter_mut().enumerate().flat_map(|(t, q)| {
            q.scheduled = false;
            q.queues.drain().map(move |f| (t, f))
        })
    }

    pub fn stats(&self, tenant: usize) -> TenantStats {
        self.tenants[tenant].stats
    }

    pub fn backlog(&self, tenant: usize) -> u64 {
        self.tenants[tenant].queues.backlog()
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Takes a new tenant list in place, for a live reload. `previous[i]` is the old index of
    /// new tenant `i` (None: a new tenant, with a full bucket). A kept tenant keeps its queued
    /// frames, its counters and its token balance, and continues at its new rate, burst, limits
    /// and queue discipline from `now` (frames already queued stay queued even if the new limit
    /// is smaller: they were accepted). Returns the frames of tenants that are gone, in order,
    /// for the caller to deliver: they are no longer shaped, and nothing queued is lost.
    pub fn reconfigure(
        &mut self,
        tenants: &[Shaping],
        previous: &[Option<usize>],
        now: u64,
    ) -> Vec<F> {
        let mut old: Vec<Option<TenantQueue<F>>> = std::mem::take(&mut self.tenants)
            .into_iter()
            .map(Some)
            .collect();
        self.tenants = tenants
            .iter()
            .zip(previous.iter().chain(std::iter::repeat(&None)))
            .map(
                |(s, prev)| match prev.and_then(|p| old.get_mut(p)?.take()) {
                    Some(mut q) => {
                        q.bucket.set_rate(s.rate, s.burst, now);
                        q.queues.reconfigure(s);
                        q.scheduled = false;
                        q.dirty = false;
                        q
                    }
                    None => TenantQueue::new(s, now),
                },
            )
            .collect();
        self.dirty.clear();
        // release times change with the rates: rebuild the heap from the queues
        self.heap.clear();
        for t in 0..self.tenants.len() {
            if !self.tenants[t].queues.is_empty() {
                let at = self.tenants[t].bucket.ready_at().max(now);
                self.schedule(t, at);
            }
        }
        old.into_iter()
            .flatten()
            .flat_map(|mut q| q.queues.drain().collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests;
