//! The scheduler: per-tenant byte-bounded FIFO queues behind token buckets, and a min-heap of
//! the times at which each backlogged tenant may send next.
//!
//! It does no I/O and reads no clock: callers pass `now` in nanoseconds, so unit tests drive it
//! with a fake clock. Only tenants with a backlog are in the heap (at most once each), so idle
//! tenants cost nothing and finding the next release is O(log active). Ties are broken by
//! insertion order, which round-robins tenants that are ready at the same time.

use crate::bucket::TokenBucket;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use tollgate::config::Shaping;

/// Counters of one tenant (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantStats {
    pub queued_packets: u64,
    pub queued_bytes: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

struct TenantQueue<F> {
    bucket: TokenBucket,
    frames: VecDeque<(F, u32)>,
    /// Sum of the queued frames' costs.
    backlog: u64,
    limit: u64,
    /// In the heap now.
    scheduled: bool,
    /// In `Scheduler::dirty` (changed since the last `take_dirty`).
    dirty: bool,
    stats: TenantStats,
}

pub struct Scheduler<F> {
    tenants: Vec<TenantQueue<F>>,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    seq: u64,
    /// Tenants whose counters or queue changed since the last `take_dirty`: a snapshot of
    /// 10,000 tenants copies the few that moved, not all of them.
    dirty: Vec<usize>,
}

impl<F> Scheduler<F> {
    /// One queue per tenant, in the order given (the classifier's tenant numbers).
    pub fn new(tenants: &[Shaping], now: u64) -> Scheduler<F> {
        Scheduler {
            tenants: tenants
                .iter()
                .map(|s| TenantQueue {
                    bucket: TokenBucket::new(s.rate, s.burst, now),
                    frames: VecDeque::new(),
                    backlog: 0,
                    limit: s.queue,
                    scheduled: false,
                    dirty: false,
                    stats: TenantStats::default(),
                })
                .collect(),
            heap: BinaryHeap::new(),
            seq: 0,
            dirty: Vec::new(),
        }
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

    /// The tenant's token balance in bytes as of its last refill, and that refill's time (ns):
    /// a reader extrapolates at the rate, capped at the burst.
    pub fn balance(&self, tenant: usize) -> (i64, u64) {
        self.tenants[tenant].bucket.balance_at()
    }

    fn schedule(&mut self, tenant: usize, at: u64) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, tenant)));
        self.tenants[tenant].scheduled = true;
    }

    /// Queues a frame costing `cost` bytes. Tail drop: gives the frame back when the queue would
    /// exceed its limit (an empty queue always takes one frame, however large).
    pub fn enqueue(&mut self, tenant: usize, frame: F, cost: u32, now: u64) -> Result<(), F> {
        if tenant >= self.tenants.len() {
            return Err(frame);
        }
        self.mark(tenant);
        let q = &mut self.tenants[tenant];
        let c = u64::from(cost);
        if !q.frames.is_empty() && q.backlog + c > q.limit {
            q.stats.dropped_packets += 1;
            q.stats.dropped_bytes += c;
            return Err(frame);
        }
        q.frames.push_back((frame, cost));
        q.backlog += c;
        q.stats.queued_packets += 1;
        q.stats.queued_bytes += c;
        if !q.scheduled {
            q.bucket.refill(now);
            let at = q.bucket.ready_at().max(now);
            self.schedule(tenant, at);
        }
        Ok(())
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
            let Some((frame, cost)) = q.frames.pop_front() else {
                continue;
            };
            if !q.dirty {
                q.dirty = true;
                self.dirty.push(t);
            }
            let c = u64::from(cost);
            q.backlog -= c;
            q.bucket.consume(c);
            q.stats.sent_packets += 1;
            q.stats.sent_bytes += c;
            if !q.frames.is_empty() {
                let at = q.bucket.ready_at().max(now);
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
            q.backlog = 0;
            q.frames.drain(..).map(move |(f, _)| (t, f))
        })
    }

    pub fn stats(&self, tenant: usize) -> TenantStats {
        self.tenants[tenant].stats
    }

    pub fn backlog(&self, tenant: usize) -> u64 {
        self.tenants[tenant].backlog
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Takes a new tenant list in place, for a live reload. `previous[i]` is the old index of
    /// new tenant `i` (None: a new tenant, with a full bucket). A kept tenant keeps its queued
    /// frames, its counters and its token balance, and continues at its new rate, burst and
    /// queue limit from `now` (frames already queued stay queued even if the new limit is
    /// smaller: they were accepted). Returns the frames of tenants that are gone, in order,
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
                        q.limit = s.queue;
                        q.scheduled = false;
                        q.dirty = false;
                        q
                    }
                    None => TenantQueue {
                        bucket: TokenBucket::new(s.rate, s.burst, now),
                        frames: VecDeque::new(),
                        backlog: 0,
                        limit: s.queue,
                        scheduled: false,
                        dirty: false,
                        stats: TenantStats::default(),
                    },
                },
            )
            .collect();
        self.dirty.clear();
        // release times change with the rates: rebuild the heap from the queues
        self.heap.clear();
        for t in 0..self.tenants.len() {
            if !self.tenants[t].frames.is_empty() {
                let at = self.tenants[t].bucket.ready_at().max(now);
                self.schedule(t, at);
            }
        }
        old.into_iter()
            .flatten()
            .flat_map(|q| q.frames.into_iter().map(|(f, _)| f))
            .collect()
    }
}

#[cfg(test)]
mod tests;
