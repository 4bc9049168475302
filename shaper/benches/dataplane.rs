//! The per-frame work of the shaper's two threads, without I/O: classify a frame (Ethernet,
//! IPv4, TCP; tenant by source among N configured tenants; flow hash), queue it in its
//! tenant's flow queues, release it (rates far above what one core can offer, so every frame
//! is released at once). Reported as frames per second ("elem/s" = packets per second).
//!
//!   cargo bench -p tollgate-shaper --bench dataplane

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shaper::classify::{Classifier, Verdict};
use shaper::sched::Scheduler;
use shaper::vnet::VnetHdr;
use std::hint::black_box;
use std::path::Path;
use tollgate::config::Config;

/// A config of `n` tenants, tenant i owning 10.(i/256).(i%256).0/24, all at 100 Gbit/s.
fn config(n: usize) -> Config {
    let mut text = String::from("[shaper]\ninterface = \"eth0\"\ntap = \"tg0\"\n");
    for i in 0..n {
        text += &format!(
            "[[tenant]]\nname = \"t{i}\"\nsources = [\"10.{}.{}.0/24\"]\nupload = \"100gbit\"\nqueue = \"64mb\"\n",
            i / 256,
            i % 256
        );
    }
    Config::parse(&text, Path::new("bench.toml")).expect("bench config")
}

/// A 1514-byte Ethernet+IPv4+TCP frame from host `host` of tenant `tenant`.
fn frame(tenant: usize, host: u8, sport: u16) -> Vec<u8> {
    let total = 1500usize;
    let mut f = vec![0u8; 14 + total];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&u16::try_from(total).unwrap_or(1500).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    let t = u8::try_from(tenant % 256).unwrap_or(0);
    let hi = u8::try_from(tenant / 256).unwrap_or(0);
    f[26..30].copy_from_slice(&[10, hi, t, host]);
    f[30..34].copy_from_slice(&[198, 51, 100, 2]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[46] = 5 << 4;
    f
}

fn bench(c: &mut Criterion) {
    let vnet = VnetHdr::default();
    for tenants in [1usize, 1_000, 10_000] {
        let cfg = config(tenants);
        let classifier = Classifier::from_config(&cfg);
        let shaping: Vec<_> = cfg.shaped_tenants().map(|(_, s)| s).collect();
        // 10 active tenants, 8 flows each
        let frames: Vec<Vec<u8>> = (0..80)
            .map(|i| {
                frame(
                    (i % 10) * (tenants / 10).max(1) % tenants,
                    7,
                    40_000 + u16::try_from(i).unwrap_or(0),
                )
            })
            .collect();
        let mut sched: Scheduler<usize> = Scheduler::new(&shaping, 0);
        let mut now = 0u64;
        let mut g = c.benchmark_group("classify+enqueue+dequeue");
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function(format!("{tenants} tenants"), |b| {
            b.iter(|| {
                for (i, f) in frames.iter().enumerate() {
                    let (v, flow) = classifier.classify_flow(&vnet, black_box(f));
                    if let Verdict::Tenant { tenant, cost } = v {
                        let _ = sched.enqueue(tenant, i, cost, flow, now);
                    }
                }
                now += 1_000_000;
                while let Some(x) = sched.dequeue(now) {
                    black_box(x);
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
