//! Counters the daemon shares with whoever watches it: the counters file (`tollgate status`)
//! and the metrics endpoint.
//!
//! The scheduler thread owns the queues, so it is the only one that can read them; it copies
//! them into a [`Snapshot`] a few times a second (a memcpy per tenant, taken with `try_lock`
//! so it never waits). Everything slow, serialising and writing the file or answering a scrape,
//! happens on the stats thread from that copy: 10,000 tenants cost the scheduler a copy, not a
//! 2.5 MB JSON document.

use crate::sched::{Scheduler, TenantStats};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tollgate::config::{RedirectMode, Shaping};

/// How often the scheduler refreshes the snapshot.
pub const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Process-wide counters (monotonic unless said otherwise), updated where they happen.
#[derive(Debug, Default)]
pub struct PassCounters {
    pub not_ipv4: AtomicU64,
    pub malformed: AtomicU64,
    pub no_tenant: AtomicU64,
    pub read_errors: AtomicU64,
    pub write_errors: AtomicU64,
    pub frames_read: AtomicU64,
    pub frames_written: AtomicU64,
}

/// One tenant as the scheduler last saw it.
#[derive(Clone, Debug)]
pub struct TenantSnapshot {
    pub name: Arc<str>,
    pub shaping: Shaping,
    pub backlog: u64,
    /// Token balance in bytes (negative: debt) as of `tokens_at_ns`.
    pub tokens: i64,
    pub tokens_at_ns: u64,
    pub counters: TenantStats,
}

impl TenantSnapshot {
    /// The balance at `now_ns`: what the bucket has earned since, capped at its depth.
    pub fn tokens_at(&self, now_ns: u64) -> i64 {
        let earned = u128::from(now_ns.saturating_sub(self.tokens_at_ns))
            * u128::from(self.shaping.rate)
            / 1_000_000_000;
        let burst = i64::try_from(self.shaping.burst).unwrap_or(i64::MAX);
        self.tokens
            .saturating_add(i64::try_from(earned).unwrap_or(i64::MAX))
            .min(burst.max(1))
    }
}

/// The scheduler's last copy of its queues.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When the scheduler last published (ns since start).
    pub uptime_ns: u64,
    pub tenants: Vec<TenantSnapshot>,
}

/// The outcome of the last reload request.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Config generation: 1 at start, +1 per reload that took effect.
    pub generation: u64,
    pub reloads_failed: u64,
    /// Why the last reload was refused (None once one succeeds).
    pub last_reload_error: Option<String>,
}

/// What the threads share.
#[derive(Debug)]
pub struct Shared {
    pub tap: String,
    pub mode: RedirectMode,
    pub start: Instant,
    pub counters: PassCounters,
    /// The frame buffers (its use is read from it directly, at scrape time).
    pub pool: crate::pool::Pool,
    pub snapshot: Mutex<Snapshot>,
    pub reload: Mutex<ReloadStatus>,
}

impl Shared {
    pub fn new(tap: &str, mode: RedirectMode) -> Shared {
        Shared {
            tap: tap.to_string(),
            mode,
            start: Instant::now(),
            counters: PassCounters::default(),
            pool: crate::pool::Pool::default(),
            snapshot: Mutex::new(Snapshot::default()),
            reload: Mutex::new(ReloadStatus {
                generation: 1,
                ..ReloadStatus::default()
            }),
        }
    }

    /// Called by the scheduler: copies its queues' state. `full` (at start, after a reload, at
    /// the end) copies every tenant and waits for the lock; otherwise only the tenants that
    /// changed since the last copy are copied, and nothing at all if a reader holds the lock
    /// (they stay marked for the next time).
    pub fn publish<F>(
        &self,
        sched: &mut Scheduler<F>,
        names: &[Arc<str>],
        shaping: &[Shaping],
        now_ns: u64,
        full: bool,
    ) {
        let guard = if full {
            self.snapshot.lock().ok()
        } else {
            self.snapshot.try_lock().ok()
        };
        let Some(mut snap) = guard else { return };
        let dirty = sched.take_dirty();
        let entry = |i: usize, sched: &Scheduler<F>| {
            let (tokens, tokens_at_ns) = sched.balance(i);
            TenantSnapshot {
                name: names[i].clone(),
                shaping: shaping[i],
                backlog: sched.backlog(i),
                tokens,
                tokens_at_ns,
                counters: sched.stats(i),
            }
        };
        if full || snap.tenants.len() != names.len() {
            snap.tenants.clear();
            snap.tenants
                .extend((0..names.len().min(shaping.len())).map(|i| entry(i, sched)));
        } else {
            for i in dirty {
                if let Some(t) = snap.tenants.get_mut(i) {
                    *t = entry(i, sched);
                }
            }
        }
        snap.uptime_ns = now_ns;
    }

    /// A copy of the snapshot (the lock is held only for the copy).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The counters file (`tollgate status` reads it).
#[derive(Debug, serde::Serialize)]
pub struct StatsFile<'a> {
    pub tap: &'a str,
    pub pid: u32,
    pub uptime_ms: u64,
    #[serde(flatten)]
    pub reload: ReloadStatus,
    pub tenants: Vec<TenantStatsEntry<'a>>,
    pub passed_not_ipv4: u64,
    pub passed_malformed: u64,
    pub passed_no_tenant: u64,
    pub read_errors: u64,
    pub write_errors: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct TenantStatsEntry<'a> {
    pub name: &'a str,
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
    pub queue_limit_bytes: u64,
    pub backlog_bytes: u64,
    pub tokens_bytes: i64,
    #[serde(flatten)]
    pub counters: TenantStats,
}

/// Writes the counters file from the shared state (atomically: readers never see half).
pub fn write_file(shared: &Shared, path: &Path) {
    let snap = shared.snapshot();
    let c = &shared.counters;
    let file = StatsFile {
        tap: &shared.tap,
        pid: std::process::id(),
        uptime_ms: snap.uptime_ns / 1_000_000,
        reload: shared.reload_status(),
        tenants: snap
            .tenants
            .iter()
            .map(|t| TenantStatsEntry {
                name: &t.name,
                rate_bytes_per_sec: t.shaping.rate,
                burst_bytes: t.shaping.burst,
                queue_limit_bytes: t.shaping.queue,
                backlog_bytes: t.backlog,
                tokens_bytes: t.tokens_at(snap.uptime_ns),
                counters: t.counters,
            })
            .collect(),
        passed_not_ipv4: c.not_ipv4.load(Relaxed),
        passed_malformed: c.malformed.load(Relaxed),
        passed_no_tenant: c.no_tenant.load(Relaxed),
        read_errors: c.read_errors.load(Relaxed),
        write_errors: c.write_errors.load(Relaxed),
    };
    let ok = serde_json::to_vec(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| crate::state::write_atomic(path, &b, false).map_err(|e| e.to_string()));
    if let Err(e) = ok {
        tracing::debug!("writing {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies_queues_and_the_file_carries_them() {
        let shaping = [Shaping::new(1000, 1500, 100_000)];
        let mut sched: Scheduler<u32> = Scheduler::new(&shaping, 0);
        sched.enqueue(0, 1, 1500, 0, 0).unwrap();
        sched.enqueue(0, 2, 700, 0, 0).unwrap();
        assert!(sched.dequeue(0).is_some());
        let shared = Shared::new("tg0", RedirectMode::Netdev);
        let names = [Arc::from("alpha")];
        shared.publish(&mut sched, &names, &shaping, 0, true);
        let s = shared.snapshot();
        assert_eq!(s.tenants.len(), 1);
        assert_eq!(s.tenants[0].backlog, 700);
        assert_eq!(s.tenants[0].tokens, 0);
        assert_eq!(s.tenants[0].counters.sent_bytes, 1500);
        // a second later the bucket has earned 1000 bytes (a reader works that out)
        assert_eq!(s.tenants[0].tokens_at(1_000_000_000), 1000);
        assert_eq!(
            s.tenants[0].tokens_at(5_000_000_000),
            1500,
            "capped at the burst"
        );
        // a partial publish copies only what changed
        assert!(sched.dequeue(2_000_000_000).is_some());
        shared.publish(&mut sched, &names, &shaping, 2_000_000_000, false);
        let s = shared.snapshot();
        assert_eq!(s.tenants[0].backlog, 0);
        assert_eq!(s.tenants[0].counters.sent_bytes, 2200);

        let dir = std::env::temp_dir().join(format!("tg-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.json");
        write_file(&shared, &path);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(v["generation"], 1);
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["tenants"][0]["name"], "alpha");
        assert_eq!(v["tenants"][0]["sent_bytes"], 2200);
        assert_eq!(v["tenants"][0]["backlog_bytes"], 0);
        assert_eq!(v["uptime_ms"], 2000);
    }
}
