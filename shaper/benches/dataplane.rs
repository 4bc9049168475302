//! The per-frame work of the shaper's two threads, without I/O: classify a frame (Ethernet,
//! IPv4, TCP; tenant by source among N configured tenants; flow hash), queue it in its
//! tenant's flow queues, release it (rates far above what one core can offer, so every frame
//! is released at once). Reported as frames per second ("elem/s" = packets per second). The
//! workload is the benchmark's own ([`lab::bench::Micro`]).
//!
//!   cargo bench -p tollgate-shaper --bench dataplane

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lab::bench::Micro;

fn bench(c: &mut Criterion) {
    for tenants in [1usize, 1_000, 10_000] {
        let m = Micro::new(tenants).expect("micro-benchmark config");
        let mut sched = m.scheduler();
        let mut now = 0u64;
        let mut g = c.benchmark_group("classify+enqueue+dequeue");
        g.throughput(Throughput::Elements(m.frames.len() as u64));
        g.bench_function(format!("{tenants} tenants"), |b| {
            b.iter(|| {
                now += 1_000_000;
                m.round(&mut sched, now)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
