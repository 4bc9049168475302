//! One tenant's queue: flow queues served by deficit round robin, new flows first, with CoDel
//! on each (the structure of Linux's fq_codel, RFC 8290, with CoDel per RFC 8289).
//!
//! Pure and clock-free like the rest of the scheduler: `now` is passed in. A frame's flow is
//! the classifier's hash of its 5-tuple, looked up set-associatively among the tenant's queues. A flow that was empty goes to the
//! *new* list and is served before the *old* list, one quantum at a time, so a sparse flow (a
//! ping, a keystroke, a request) overtakes a bulk flow's backlog. Each flow runs CoDel on the
//! time its head frame has waited (shaping delay included): once it stays above `target` for
//! a whole `interval`, frames are dropped from the head at increasing frequency until it falls
//! back, which tells a TCP sender to slow down long before the queue limit is reached.
//!
//! At low rates one MTU takes longer to send than the target: as CAKE does, the target becomes
//! at least 1.5 MTU times and the interval grows with it.

use std::collections::VecDeque;
use tollgate::config::Shaping;

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The queue's byte or frame limit.
    Overflow,
    /// CoDel.
    Codel,
}

/// Bytes one round of the round robin gives a flow (one Ethernet MTU, as fq_codel).
pub const QUANTUM: i64 = 1514;
/// Queues per set in the set-associative flow lookup.
const WAYS: u32 = 8;
/// A flow holding no more than this is never dropped by CoDel (RFC 8289's maxpacket).
const MTU: u64 = 1514;

struct Entry<F> {
    frame: F,
    cost: u32,
    hash: u32,
    /// When it was queued (ns).
    at: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct CodelState {
    /// When the sojourn time will have been above target for an interval (0: it is not above).
    first_above: u64,
    dropping: bool,
    drop_next: u64,
    count: u32,
    lastcount: u32,
}

struct Flow<F> {
    /// The hash of the flow using this queue (set-associative lookup, see `index`).
    tag: u32,
    frames: VecDeque<Entry<F>>,
    bytes: u64,
    deficit: i64,
    /// In the new or the old list.
    listed: bool,
    codel: CodelState,
}

impl<F> Default for Flow<F> {
    fn default() -> Self {
        Flow {
            tag: 0,
            frames: VecDeque::new(),
            bytes: 0,
            deficit: 0,
            listed: false,
            codel: CodelState::default(),
        }
    }
}

/// A tenant's flow queues.
pub struct FlowQueues<F> {
    /// Allocated on the first frame: idle tenants cost no flow table.
    flows: Vec<Flow<F>>,
    nflows: u32,
    new_flows: VecDeque<u32>,
    old_flows: VecDeque<u32>,
    backlog: u64,
    frames: u64,
    limit: u64,
    frame_limit: u64,
    /// Effective (target, interval) in ns; None: CoDel off.
    codel: Option<(u64, u64)>,
}

/// CoDel's parameters for a rate (bytes/s): the target is at least 1.5 MTU times.
fn codel_for(s: &Shaping) -> Option<(u64, u64)> {
    let c = s.codel?;
    let mtu_ns = u64::try_from(u128::from(MTU) * 1_000_000_000 / u128::from(s.rate.max(1)))
        .unwrap_or(u64::MAX);
    let target = c.target_ns.max(mtu_ns.saturating_mul(3) / 2);
    let interval = (c.interval_ns + (target - c.target_ns)).max(target.saturating_mul(2));
    Some((target, interval))
}

/// `t + interval / sqrt(count)`, in integers.
fn control_law(t: u64, count: u32, interval: u64) -> u64 {
    let root = (u64::from(count.max(1)) << 20).isqrt(); // sqrt(count) * 1024
    t.saturating_add(interval.saturating_mul(1024) / root.max(1))
}

impl<F> FlowQueues<F> {
    pub fn new(s: &Shaping) -> FlowQueues<F> {
        FlowQueues {
            flows: Vec::new(),
            nflows: s.flows.max(1),
            new_flows: VecDeque::new(),
            old_flows: VecDeque::new(),
            backlog: 0,
            frames: 0,
            limit: s.queue,
            frame_limit: s.frames.max(1),
            codel: codel_for(s),
        }
    }

    /// Bytes queued (the sum of the frames' costs).
    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The queue for flow `hash`: set-associative, as CAKE does, so two flows of a tenant
    /// share a queue only when more than `WAYS` of its flows are active in one set (a plain
    /// hash would put a ping in the same queue as the tenant's upload once in `flows` tries).
    /// The set is picked by the hash; in it, the queue already tagged with this flow, else a
    /// free one (tagged now), else the hash's own way.
    fn index(&mut self, hash: u32) -> u32 {
        let n = self.nflows;
        let ways = WAYS.min(n);
        let sets = n / ways;
        // multiply-shift: an even spread of a well-mixed hash over [0, sets)
        let set = u32::try_from((u64::from(hash) * u64::from(sets)) >> 32).unwrap_or(0);
        let base = set * ways;
        // one pass over the set: this flow's queue, else the first free one
        let mut free = None;
        for i in base..base + ways {
            let f = &self.flows[i as usize];
            let busy = f.listed || !f.frames.is_empty();
            if busy && f.tag == hash {
                return i;
            }
            if !busy && free.is_none() {
                free = Some(i);
            }
        }
        if let Some(i) = free {
            self.flows[i as usize].tag = hash;
            return i;
        }
        base + hash % ways
    }

    fn pop(&mut self, idx: u32) -> Option<Entry<F>> {
        let fl = self.flows.get_mut(idx as usize)?;
        let e = fl.frames.pop_front()?;
        let c = u64::from(e.cost);
        fl.bytes -= c;
        self.backlog -= c;
        self.frames -= 1;
        Some(e)
    }

    fn push(&mut self, idx: u32, e: Entry<F>) {
        let c = u64::from(e.cost);
        let fl = &mut self.flows[idx as usize];
        fl.bytes += c;
        fl.frames.push_back(e);
        self.backlog += c;
        self.frames += 1;
        if !fl.listed {
            fl.listed = true;
            fl.deficit = QUANTUM;
            self.new_flows.push_back(idx);
        }
    }

    /// Queues a frame. When the byte or frame limit is reached, frames are dropped from the
    /// head of the fattest flow (`on_drop` gets them) until this one fits; if its own flow is
    /// the fattest the arriving frame is refused instead. An empty queue takes any frame.
    pub fn enqueue(
        &mut self,
        frame: F,
        cost: u32,
        hash: u32,
        now: u64,
        mut on_drop: impl FnMut(F, u32),
    ) -> Result<(), F> {
        if self.flows.is_empty() {
            self.flows = (0..self.nflows).map(|_| Flow::default()).collect();
        }
        let idx = self.index(hash);
        let c = u64::from(cost);
        while self.frames > 0 && (self.backlog + c > self.limit || self.frames >= self.frame_limit)
        {
            let fat = (0..self.nflows)
                .max_by_key(|&i| self.flows[i as usize].bytes)
                .unwrap_or(idx);
            if fat == idx {
                return Err(frame);
            }
            match self.pop(fat) {
                Some(e) => on_drop(e.frame, e.cost),
                None => return Err(frame),
            }
        }
        self.push(
            idx,
            Entry {
                frame,
                cost,
                hash,
                at: now,
            },
        );
        Ok(())
    }

    /// Pops the head of flow `idx`, telling whether CoDel may drop it (RFC 8289 `dodequeue`).
    fn do_dequeue(
        &mut self,
        idx: u32,
        now: u64,
        target: u64,
        interval: u64,
    ) -> Option<(Entry<F>, bool)> {
        let Some(e) = self.pop(idx) else {
            self.flows[idx as usize].codel.first_above = 0;
            return None;
        };
        let fl = &mut self.flows[idx as usize];
        let sojourn = now.saturating_sub(e.at);
        let ok = if sojourn < target || fl.bytes <= MTU {
            fl.codel.first_above = 0;
            false
        } else if fl.codel.first_above == 0 {
            fl.codel.first_above = now.saturating_add(interval).max(1);
            false
        } else {
            now >= fl.codel.first_above
        };
        Some((e, ok))
    }

    /// The next frame of flow `idx` that CoDel lets through, dropping (to `on_drop`) those it
    /// does not (RFC 8289 `dequeue`).
    fn codel_dequeue(
        &mut self,
        idx: u32,
        now: u64,
        on_drop: &mut impl FnMut(F, u32),
    ) -> Option<(F, u32)> {
        let Some((target, interval)) = self.codel else {
            return self.pop(idx).map(|e| (e.frame, e.cost));
        };
        let Some((mut e, mut ok)) = self.do_dequeue(idx, now, target, interval) else {
            self.flows[idx as usize].codel.dropping = false;
            return None;
        };
        let st = self.flows[idx as usize].codel;
        if st.dropping {
            if !ok {
                self.flows[idx as usize].codel.dropping = false;
            }
            loop {
                let st = self.flows[idx as usize].codel;
                if !(st.dropping && now >= st.drop_next) {
                    break;
                }
                on_drop(e.frame, e.cost);
                let count = st.count.saturating_add(1);
                self.flows[idx as usize].codel.count = count;
                match self.do_dequeue(idx, now, target, interval) {
                    None => {
                        self.flows[idx as usize].codel.dropping = false;
                        return None;
                    }
                    Some((next, next_ok)) => {
                        e = next;
                        ok = next_ok;
                    }
                }
                let cs = &mut self.flows[idx as usize].codel;
                if ok {
                    cs.drop_next = control_law(cs.drop_next, count, interval);
                } else {
                    cs.dropping = false;
                }
            }
        } else if ok {
            on_drop(e.frame, e.cost);
            let next = self.do_dequeue(idx, now, target, interval);
            let cs = &mut self.flows[idx as usize].codel;
            cs.dropping = true;
            let delta = cs.count.wrapping_sub(cs.lastcount);
            cs.count = if delta > 1 && now.saturating_sub(cs.drop_next) < 16 * interval {
                delta
            } else {
                1
            };
            cs.drop_next = control_law(now, cs.count, interval);
            cs.lastcount = cs.count;
            match next {
                None => return None,
                Some((next, _)) => e = next,
            }
        }
        Some((e.frame, e.cost))
    }

    /// The next frame to send: new flows first, then old ones, a quantum each per round.
    pub fn dequeue(&mut self, now: u64, mut on_drop: impl FnMut(F, u32)) -> Option<(F, u32)> {
        loop {
            let (from_new, idx) = match (self.new_flows.front(), self.old_flows.front()) {
                (Some(&i), _) => (true, i),
                (None, Some(&i)) => (false, i),
                (None, None) => return None,
            };
            let list = |q: &mut Self| {
                if from_new {
                    q.new_flows.pop_front();
                } else {
                    q.old_flows.pop_front();
                }
            };
            if self.flows[idx as usize].deficit <= 0 {
                self.flows[idx as usize].deficit += QUANTUM;
                list(self);
                self.old_flows.push_back(idx);
                continue;
            }
            match self.codel_dequeue(idx, now, &mut on_drop) {
                Some((f, c)) => {
                    self.flows[idx as usize].deficit -= i64::from(c);
                    return Some((f, c));
                }
                None => {
                    list(self);
                    // an emptied new flow goes through the old list once (no queue-jumping
                    // by a flow that keeps going idle for an instant)
                    if from_new && !self.old_flows.is_empty() {
                        self.old_flows.push_back(idx);
                    } else {
                        self.flows[idx as usize].listed = false;
                    }
                }
            }
        }
    }

    /// Every queued frame, flow by flow (shutdown, a tenant removed by a reload).
    pub fn drain(&mut self) -> impl Iterator<Item = F> + '_ {
        self.new_flows.clear();
        self.old_flows.clear();
        self.backlog = 0;
        self.frames = 0;
        self.flows.iter_mut().flat_map(|fl| {
            fl.bytes = 0;
            fl.listed = false;
            fl.codel = CodelState::default();
            fl.frames.drain(..).map(|e| e.frame)
        })
    }

    /// New limits and discipline for a live reload; queued frames stay (re-hashed if the
    /// number of flows changed).
    pub fn reconfigure(&mut self, s: &Shaping) {
        self.limit = s.queue;
        self.frame_limit = s.frames.max(1);
        self.codel = codel_for(s);
        let nflows = s.flows.max(1);
        if nflows == self.nflows {
            return;
        }
        let entries: Vec<Entry<F>> = self
            .flows
            .iter_mut()
            .flat_map(|fl| fl.frames.drain(..))
            .collect();
        self.nflows = nflows;
        self.flows.clear();
        self.new_flows.clear();
        self.old_flows.clear();
        self.backlog = 0;
        self.frames = 0;
        if !entries.is_empty() {
            self.flows = (0..nflows).map(|_| Flow::default()).collect();
        }
        for e in entries {
            let idx = self.index(e.hash);
            self.push(idx, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::config::Codel;

    const MS: u64 = 1_000_000;

    fn shaping(flows: u32, codel: bool) -> Shaping {
        let mut s = Shaping::new(1_250_000, 65_536, 1 << 20);
        s.flows = flows;
        s.codel = codel.then_some(Codel::DEFAULT);
        s
    }

    /// Hashes that land in distinct sets of 32 queues (4 sets of 8).
    fn h(flow: u32) -> u32 {
        flow << 27
    }

    #[test]
    fn colliding_hashes_get_queues_of_their_own() {
        // same set (same top bits), different flows: a plain hash would share one queue
        let (bulk, ping) = (0x1000_0000, 0x1000_0001);
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(32, false));
        for i in 0..100 {
            q.enqueue(i, 1500, bulk, 0, |_, _| {}).unwrap();
        }
        q.dequeue(0, |_, _| {}).unwrap();
        q.enqueue(999, 84, ping, 0, |_, _| {}).unwrap();
        let next: Vec<u32> = (0..2)
            .filter_map(|_| q.dequeue(0, |_, _| {}))
            .map(|f| f.0)
            .collect();
        assert!(next.contains(&999), "{next:?}");
        // nine flows in one set of eight: the ninth shares a queue, nothing is lost
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(32, false));
        for f in 0..9 {
            q.enqueue(f, 100, 0x1000_0000 + f, 0, |_, _| {}).unwrap();
        }
        assert_eq!(q.backlog(), 900);
        let out: Vec<u32> = std::iter::from_fn(|| q.dequeue(0, |_, _| {}).map(|f| f.0)).collect();
        assert_eq!(out.len(), 9);
    }

    #[test]
    fn a_sparse_flow_overtakes_a_bulk_backlog() {
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(32, false));
        for i in 0..100 {
            q.enqueue(i, 1500, h(1), 0, |_, _| {}).unwrap();
        }
        // serve a few bulk frames, then a ping arrives
        for _ in 0..3 {
            q.dequeue(0, |_, _| {}).unwrap();
        }
        q.enqueue(999, 84, h(2), 0, |_, _| {}).unwrap();
        // the ping leaves within one more bulk frame, not after the 97 queued before it
        let next: Vec<u32> = (0..2)
            .filter_map(|_| q.dequeue(0, |_, _| {}))
            .map(|f| f.0)
            .collect();
        assert!(next.contains(&999), "{next:?}");
    }

    #[test]
    fn two_bulk_flows_share_by_bytes() {
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(32, false));
        for i in 0..200 {
            q.enqueue(i, 1500, h(1), 0, |_, _| {}).unwrap();
            q.enqueue(1000 + i, 300, h(2), 0, |_, _| {}).unwrap();
        }
        let (mut a, mut b) = (0u64, 0u64);
        for _ in 0..120 {
            let (f, c) = q.dequeue(0, |_, _| {}).unwrap();
            if f < 1000 {
                a += u64::from(c)
            } else {
                b += u64::from(c)
            }
        }
        let ratio = a as f64 / b as f64;
        assert!((0.8..1.25).contains(&ratio), "bytes {a} vs {b}");
    }

    #[test]
    fn a_full_queue_drops_from_the_fattest_flow() {
        let mut s = shaping(32, false);
        s.frames = 10;
        let mut q: FlowQueues<u32> = FlowQueues::new(&s);
        for i in 0..10 {
            q.enqueue(i, 100, h(1), 0, |_, _| {}).unwrap();
        }
        // the fat flow's own next frame is refused
        assert_eq!(q.enqueue(10, 100, h(1), 0, |_, _| {}), Err(10));
        // another flow's frame gets in, and the fat flow loses its head
        let mut dropped = Vec::new();
        q.enqueue(20, 100, h(2), 0, |f, _| dropped.push(f)).unwrap();
        assert_eq!(dropped, vec![0]);
        assert_eq!(q.backlog(), 1000);
    }

    #[test]
    fn codel_drops_a_standing_queue_and_stops_when_it_drains() {
        // one flow, 1500-byte frames queued 20 ms apart in time but served late: every head
        // has waited 50 ms, well above the 5 ms target
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(1, true));
        for i in 0..400 {
            q.enqueue(i, 1500, 0, 0, |_, _| {}).unwrap();
        }
        let mut drops = 0;
        let mut now = 50 * MS;
        let mut sent = 0;
        // serve one frame per ms for 300 ms, the backlog never waiting less than 50 ms
        while now < 350 * MS {
            if q.dequeue(now, |_, _| drops += 1).is_some() {
                sent += 1;
            }
            now += MS;
        }
        assert!(drops > 0, "no drop in 300 ms of a 50 ms standing queue");
        assert!(
            sent > 200,
            "CoDel dropped too much: sent {sent}, dropped {drops}"
        );
        // below target: no drops
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(1, true));
        let mut drops = 0;
        for i in 0..300u64 {
            q.enqueue(u32::try_from(i).unwrap(), 1500, 0, i * MS, |_, _| {})
                .unwrap();
            q.enqueue(u32::try_from(i).unwrap(), 1500, 0, i * MS, |_, _| {})
                .unwrap();
            q.dequeue(i * MS + 2 * MS, |_, _| drops += 1);
            q.dequeue(i * MS + 2 * MS, |_, _| drops += 1);
        }
        assert_eq!(drops, 0);
    }

    #[test]
    fn low_rates_get_a_target_of_one_and_a_half_mtu_times() {
        let mut s = Shaping::new(125_000, 65_536, 1 << 20); // 1 Mbit/s: an MTU is 12.1 ms
        s.codel = Some(Codel::DEFAULT);
        let (target, interval) = codel_for(&s).unwrap();
        assert_eq!(target, 1514 * 1_000_000_000 / 125_000 * 3 / 2);
        assert!(interval >= 2 * target && interval > Codel::DEFAULT.interval_ns);
        let fast = Shaping::new(125_000_000, 65_536, 1 << 20);
        assert_eq!(codel_for(&fast), Some((5 * MS, 100 * MS)));
    }

    #[test]
    fn reconfigure_rehashes_when_the_flow_count_changes() {
        let mut q: FlowQueues<u32> = FlowQueues::new(&shaping(32, false));
        for i in 0..8 {
            q.enqueue(i, 100, h(i), 0, |_, _| {}).unwrap();
        }
        q.reconfigure(&shaping(1, false));
        assert_eq!(q.backlog(), 800);
        let out: Vec<u32> = std::iter::from_fn(|| q.dequeue(0, |_, _| {}).map(|f| f.0)).collect();
        assert_eq!(out.len(), 8);
    }
}
