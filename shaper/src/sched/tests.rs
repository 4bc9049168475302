use super::*;

const SEC: u64 = 1_000_000_000;

/// One FIFO without CoDel: these tests are about the buckets and the tenants' round robin
/// (the queue discipline inside a tenant has its own tests in `fq`).
fn shaping(rate: u64, burst: u64, queue: u64) -> Shaping {
    let mut s = Shaping::new(rate, burst, queue);
    s.flows = 1;
    s.codel = None;
    s.frames = 1 << 20;
    s
}

/// Keeps every tenant's queue non-empty with frames of `sizes[t]` bytes, advances a fake clock
/// to each release time (or in `tick` steps, modelling a coarse timer) for `duration` ns, and
/// returns the bytes each tenant sent.
fn saturate(tenants: &[Shaping], sizes: &[u32], duration: u64, tick: u64) -> Vec<u64> {
    let mut s: Scheduler<u32> = Scheduler::new(tenants, 0);
    let mut now = 0;
    for (t, &size) in sizes.iter().enumerate() {
        for _ in 0..2 {
            s.enqueue(t, size, size, 0, now).unwrap();
        }
    }
    loop {
        while let Some((t, f)) = s.dequeue(now) {
            s.enqueue(t, f, f, 0, now).unwrap();
        }
        let next = s.next_release().expect("saturated queues are never empty");
        let next = if tick > 0 {
            next.div_ceil(tick) * tick
        } else {
            next
        };
        if next > duration {
            break;
        }
        now = next.max(now);
    }
    (0..tenants.len()).map(|t| s.stats(t).sent_bytes).collect()
}

#[test]
fn exact_rates_across_sizes_and_speeds() {
    // 1 Mbit/s .. 10 Gbit/s, 64 B, 1500 B and 64 KiB frames: over the run the bytes sent are
    // rate * t + burst, to within one frame.
    for rate_bits in [1_000_000u64, 20_000_000, 1_000_000_000, 10_000_000_000] {
        let rate = rate_bits / 8;
        for size in [64u32, 1500, 65_536] {
            // long enough for ~20_000 frames (and at least 1 s)
            let duration = (u64::from(size) * 20_000 * SEC / rate).max(SEC);
            let burst = 100_000;
            let sent = saturate(&[shaping(rate, burst, 1 << 30)], &[size], duration, 0)[0];
            let ideal = u64::try_from(u128::from(rate) * u128::from(duration) / u128::from(SEC))
                .expect("fits")
                + burst;
            let err = sent.abs_diff(ideal);
            assert!(
                err <= u64::from(size),
                "{rate_bits} bit/s, {size} B frames: sent {sent}, ideal {ideal}"
            );
        }
    }
}

#[test]
fn coarse_timer_keeps_long_run_rate() {
    // wake-ups only every 1 ms (a busy host): the bucket catches up, the rate stays exact
    let rate = 10_000_000_000 / 8;
    let burst = rate / 100; // default burst: 10 ms
    let sent = saturate(&[shaping(rate, burst, 1 << 30)], &[1500], SEC, 1_000_000)[0];
    let ideal = rate + burst;
    assert!(sent.abs_diff(ideal) <= 1500, "sent {sent}, ideal {ideal}");
}

#[test]
fn deficit_lets_huge_frames_through_slow_buckets() {
    // 1 Mbit/s, burst 1500 B, 64 KiB frames: each leaves, the debt spaces them exactly
    let rate = 125_000;
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(rate, 1500, 1 << 20)], 0);
    for _ in 0..3 {
        s.enqueue(0, 65_536, 65_536, 0, 0).unwrap();
    }
    assert_eq!(s.dequeue(0), Some((0, 65_536)));
    assert_eq!(s.dequeue(0), None);
    // debt 64036 bytes at 125000 B/s
    let t1 = s.next_release().unwrap();
    assert_eq!(t1, 64_036 * SEC / rate);
    assert_eq!(s.dequeue(t1 - 1), None);
    assert_eq!(s.dequeue(t1), Some((0, 65_536)));
    let t2 = s.next_release().unwrap();
    assert_eq!(t2 - t1, 65_536 * SEC / rate);
}

#[test]
fn queue_limit_tail_drops() {
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(1000, 1, 3000)], 0);
    // an empty queue takes one frame even above the limit
    assert!(s.enqueue(0, 9000, 9000, 0, 0).is_ok());
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(1000, 1, 3000)], 0);
    assert!(s.enqueue(0, 1, 1500, 0, 0).is_ok());
    assert!(s.enqueue(0, 2, 1500, 0, 0).is_ok());
    assert_eq!(s.enqueue(0, 3, 1, 0, 0), Err(3));
    assert_eq!(s.backlog(0), 3000);
    let st = s.stats(0);
    assert_eq!(
        (st.queued_packets, st.dropped_packets, st.dropped_bytes),
        (2, 1, 1)
    );
    // FIFO order, and a freed queue takes frames again
    assert_eq!(s.dequeue(0), Some((0, 1)));
    assert!(s.enqueue(0, 4, 1500, 0, 0).is_ok());
    assert_eq!(s.backlog(0), 3000);
}

#[test]
fn many_tenants_each_get_their_rate() {
    let n = 500;
    let tenants: Vec<Shaping> = (0..n)
        .map(|i| shaping(100_000 + 10_000 * i as u64, 3000, 1 << 20))
        .collect();
    let sizes: Vec<u32> = (0..n).map(|i| [64, 1500, 9000][i % 3]).collect();
    let sent = saturate(&tenants, &sizes, 2 * SEC, 0);
    for (i, (t, sent)) in tenants.iter().zip(sent).enumerate() {
        let ideal = 2 * t.rate + t.burst;
        assert!(
            sent.abs_diff(ideal) <= u64::from(sizes[i]),
            "tenant {i}: sent {sent}, ideal {ideal}"
        );
    }
}

#[test]
fn idle_tenants_are_not_in_the_heap() {
    let tenants = vec![shaping(1000, 1000, 1 << 20); 10_000];
    let mut s: Scheduler<u32> = Scheduler::new(&tenants, 0);
    assert_eq!(s.next_release(), None);
    s.enqueue(7, 1, 500, 0, 0).unwrap();
    s.enqueue(7, 2, 500, 0, 0).unwrap();
    s.enqueue(9000, 3, 500, 0, 0).unwrap();
    assert_eq!(s.heap.len(), 2);
    assert!(s.dequeue(0).is_some());
    assert!(s.dequeue(0).is_some());
    assert!(s.dequeue(0).is_some());
    assert_eq!(s.dequeue(0), None);
    assert_eq!(s.next_release(), None);
}

#[test]
fn ready_tenants_round_robin() {
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(1 << 30, 1 << 30, 1 << 30); 3], 0);
    for t in 0..3 {
        for k in 0..3 {
            s.enqueue(t, u32::try_from(t * 10 + k).expect("small"), 100, 0, 0)
                .unwrap();
        }
    }
    let order: Vec<usize> = std::iter::from_fn(|| s.dequeue(0).map(|(t, _)| t)).collect();
    assert_eq!(order, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn drain_delivers_everything_in_order() {
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(1, 1, 1 << 20); 2], 0);
    for f in 0..4 {
        s.enqueue((f % 2) as usize, f, 100, 0, 0).unwrap();
    }
    let all: Vec<_> = s.drain().collect();
    assert_eq!(all, vec![(0, 0), (0, 2), (1, 1), (1, 3)]);
    assert_eq!(s.next_release(), None);
    assert_eq!(s.backlog(0), 0);
}

#[test]
fn reconfigure_keeps_queues_and_counters_and_applies_new_rates() {
    // tenants a (1000 B/s) and b (1000 B/s); b is removed, c is added, a drops to 500 B/s
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(1000, 100, 10_000); 2], 0);
    for f in 0..3 {
        s.enqueue(0, f, 100, 0, 0).unwrap();
        s.enqueue(1, 10 + f, 100, 0, 0).unwrap();
    }
    assert_eq!(s.dequeue(0).map(|(t, _)| t), Some(0));
    let gone = s.reconfigure(
        &[shaping(500, 100, 150), shaping(2000, 100, 10_000)],
        &[Some(0), None],
        0,
    );
    // b's three queued frames come back in order, to be delivered, not dropped
    assert_eq!(gone, vec![10, 11, 12]);
    assert_eq!(s.tenant_count(), 2);
    // a keeps its two queued frames although its new limit (150) is below its backlog (200)
    assert_eq!(s.backlog(0), 200);
    assert_eq!(s.stats(0).sent_packets, 1);
    assert!(
        s.enqueue(0, 99, 100, 0, 0).is_err(),
        "new limit refuses more"
    );
    // a's debt (100 bytes after the first frame with burst 100) now drains at 500 B/s
    assert_eq!(s.dequeue(0), Some((0, 1)));
    assert_eq!(s.next_release(), Some(SEC / 5));
    assert_eq!(s.dequeue(SEC / 5), Some((0, 2)));
    // the new tenant c starts with a full bucket
    s.enqueue(1, 7, 100, 0, SEC).unwrap();
    assert_eq!(s.dequeue(SEC), Some((1, 7)));
    assert_eq!(s.stats(1).sent_packets, 1);
}

#[test]
fn only_tenants_that_moved_are_dirty() {
    let mut s: Scheduler<u32> = Scheduler::new(&[shaping(1000, 1500, 10_000); 3], 0);
    assert!(s.take_dirty().is_empty());
    s.enqueue(2, 1, 100, 0, 0).unwrap();
    s.enqueue(2, 2, 100, 0, 0).unwrap();
    assert_eq!(s.take_dirty(), vec![2]);
    assert!(s.take_dirty().is_empty(), "taken once");
    assert!(s.dequeue(0).is_some());
    assert_eq!(s.take_dirty(), vec![2], "a release marks it again");
}
