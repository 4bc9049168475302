//! The daemon: set-up in a safe order, two threads moving frames, and teardown that puts the
//! namespace back exactly as it was.
//!
//! ```text
//!            TAP (kernel -> us)                                TAP (us -> kernel)
//!  reader ── read ─ classify ─┬─ tenant ──► channel ──► scheduler ── write ──►
//!                             └─ pass (ARP, no tenant, malformed) ── write ──►
//! ```
//! Buffers circulate through a free list (allocated once, up to `POOL_MAX`), so the hot path
//! allocates nothing. The scheduler thread owns all queues and buckets ([`crate::sched`]) and
//! sleeps until the next frame arrives or the next release time, whichever is first.

use crate::classify::{Classifier, Pass, Verdict};
use crate::sched::{Scheduler, TenantStats};
use crate::vnet::{VNET_HDR_LEN, VnetHdr};
use crate::{redirect, state, sysctl};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tollgate::config::{Config, RedirectMode, ShaperConfig};
use tollgate::kernel::tap::{Tap, TapError};

/// Room for a vnet header and the largest GSO frame.
const BUF_LEN: usize = VNET_HDR_LEN + 14 + 65_535 + 64;
/// Most buffers ever allocated; bounds memory when every queue is full of small frames.
const POOL_MAX: usize = 16_384;
/// Reader -> scheduler channel depth.
const CHANNEL: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the config has no [shaper] section")]
    NoShaper,
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("redirect: {0}")]
    Redirect(#[from] redirect::RedirectError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sysctl(#[from] sysctl::JournalError),
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("a dataplane thread failed: {0}")]
    Thread(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |err| DaemonError::Io { what, err }
}

/// Counters of frames that were not queued.
#[derive(Debug, Default)]
pub struct PassCounters {
    pub not_ipv4: AtomicU64,
    pub malformed: AtomicU64,
    pub no_tenant: AtomicU64,
    pub read_errors: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The stats file the scheduler writes once a second (and at exit).
#[derive(Debug, serde::Serialize)]
pub struct StatsFile<'a> {
    pub tap: &'a str,
    pub uptime_ms: u64,
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
    pub backlog_bytes: u64,
    #[serde(flatten)]
    pub counters: TenantStats,
}

struct Packet {
    buf: Vec<u8>,
    len: usize,
    tenant: usize,
    cost: u32,
}

/// What has been changed so far; undone in reverse by `teardown` (also on drop).
struct Installed {
    shaper: ShaperConfig,
    journal: sysctl::Journal,
    holder: String,
    holding: bool,
    redirect: bool,
}

impl Installed {
    fn remove_redirect(&mut self) {
        if std::mem::take(&mut self.redirect)
            && let Err(e) = redirect::remove(&self.shaper)
        {
            tracing::error!("removing the redirect: {e}");
        }
    }

    fn teardown(&mut self) {
        self.remove_redirect();
        if std::mem::take(&mut self.holding) {
            match self.journal.release(&self.holder) {
                Ok(restored) => {
                    for e in restored {
                        tracing::info!(key = %e.key, to = %e.original, "sysctl restored");
                    }
                }
                Err(e) => tracing::error!("restoring sysctls: {e}"),
            }
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs the shaper until `stop` becomes true (set by the binary's signal handler) or a thread
/// fails; always tears down what it set up.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let shaper = config.shaper.as_ref().ok_or(DaemonError::NoShaper)?;
    // 1. The TAP first: if it is busy another daemon is running, and we touch nothing else.
    let tap = Arc::new(Tap::create(
        &shaper.tap,
        shaper.redirect == RedirectMode::Route,
    )?);
    tap.set_nonblocking()
        .map_err(io_err("O_NONBLOCK on the TAP"))?;
    tracing::info!(tap = %shaper.tap, mac = %tollgate::kernel::model::mac_str(&tap.mac()), "TAP up with vnet_hdr, csum and TSO offloads");

    // 2. Undo what a run that died left behind. An unreadable record of what must be
    //    restored stops us here: starting anyway would lose the original values for good.
    let journal = sysctl::Journal::for_this_netns(std::path::Path::new(tollgate::names::RUN_DIR))
        .map_err(io_err("reading /proc/self/ns/net"))?;
    let holder = format!("shaper:{}", shaper.tap);
    let stale = journal.release(&holder)?;
    if !stale.is_empty() {
        tracing::warn!(
            restored = stale.len(),
            "restored sysctls left by a previous run that did not stop cleanly"
        );
    }
    redirect::remove_stale(shaper)?;
    let gateway = redirect::gateway::GatewayShaping::from_config(config);
    redirect::create_macvlans(&gateway, &shaper.tap)?;

    // 3. Sysctls: recorded in the journal before they change.
    let macvlans: Vec<&str> = gateway.tenants.iter().map(|t| t.macvlan.as_str()).collect();
    let needs = sysctl::plan(shaper.redirect, &shaper.tap, &macvlans, |k| {
        journal.original(k)
    })?;
    let mut installed = Installed {
        shaper: shaper.clone(),
        journal: journal.clone(),
        holder: holder.clone(),
        holding: true,
        redirect: false,
    };
    for c in journal.hold(&holder, &needs.namespace)? {
        tracing::info!(key = %c.key, from = %c.original, to = %c.value, "sysctl");
    }
    sysctl::set_tap(&needs.tap).map_err(io_err("setting the TAP's sysctls"))?;

    // 4. Threads, then the redirect: nothing is steered to the TAP before it is read.
    let classifier = Classifier::from_config(config);
    let shaping: Vec<_> = config.shaped_tenants().map(|(_, s)| s).collect();
    let names: Vec<String> = config
        .shaped_tenants()
        .map(|(t, _)| t.name.clone())
        .collect();
    let counters = Arc::new(PassCounters::default());
    let (tx, rx) = crossbeam_channel::bounded::<Packet>(CHANNEL);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(POOL_MAX);
    let failed = Arc::new(AtomicBool::new(false));
    let halt = Arc::new(AtomicBool::new(false));
    let stats_path = state::stats_path(&shaper.state_dir, &shaper.tap).map_err(io_err("netns"))?;

    let reader = {
        let (tap, counters, halt, failed) =
            (tap.clone(), counters.clone(), halt.clone(), failed.clone());
        let (free_tx, free_rx) = (free_tx.clone(), free_rx.clone());
        spawn("tg-reader", failed.clone(), move || {
            reader_loop(&tap, &classifier, &tx, &free_tx, &free_rx, &counters, &halt)
                .inspect_err(|_| failed.store(true, Relaxed))
        })?
    };
    let scheduler = {
        let (tap, counters, halt, failed) =
            (tap.clone(), counters.clone(), halt.clone(), failed.clone());
        let tap_name = shaper.tap.clone();
        spawn("tg-scheduler", failed.clone(), move || {
            let mut w = Writer {
                tap: &tap,
                free: &free_tx,
                counters: &counters,
            };
            scheduler_loop(&mut w, &rx, &shaping, &names, &tap_name, &stats_path, &halt)
                .inspect_err(|_| failed.store(true, Relaxed))
        })?
    };

    let result = redirect::install(config, shaper);
    if result.is_ok() {
        installed.redirect = true;
        tracing::info!(mode = ?shaper.redirect, tenants = config.shaped_tenants().count(), "shaping");
        while !stop.load(Relaxed) && !failed.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // 5. Teardown: stop steering first, then deliver what is queued, then restore.
    installed.remove_redirect();
    halt.store(true, Relaxed);
    let mut thread_error = None;
    for t in [reader, scheduler] {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => thread_error = Some(e.to_string()),
            Err(_) => thread_error = Some("a dataplane thread panicked".into()),
        }
    }
    drop(tap);
    installed.teardown();
    state::remove(&state::stats_path(&shaper.state_dir, &shaper.tap).map_err(io_err("netns"))?)?;
    result?;
    match thread_error {
        Some(e) => Err(DaemonError::Thread(e)),
        None => Ok(()),
    }
}

fn spawn(
    name: &str,
    failed: Arc<AtomicBool>,
    f: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> Result<JoinHandle<io::Result<()>>, DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let r = f();
            if let Err(e) = &r {
                failed.store(true, Relaxed);
                tracing::error!("{e}");
            }
            r
        })
        .map_err(io_err(format!("spawning {name}")))
}

/// Writes frames back to the TAP and returns their buffers to the pool.
struct Writer<'a> {
    tap: &'a Tap,
    free: &'a Sender<Vec<u8>>,
    counters: &'a PassCounters,
}

impl Writer<'_> {
    fn send(&mut self, buf: Vec<u8>, len: usize) {
        if let Err(e) = self.tap.write(&buf[..len]) {
            let n = self.counters.write_errors.fetch_add(1, Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(count = n + 1, "writing a frame to the TAP: {e}");
            }
        }
        // the pool is sized for every buffer ever allocated: this never blocks
        let _ = self.free.try_send(buf);
    }
}

fn reader_loop(
    tap: &Tap,
    classifier: &Classifier,
    tx: &Sender<Packet>,
    free_tx: &Sender<Vec<u8>>,
    free_rx: &Receiver<Vec<u8>>,
    counters: &PassCounters,
    halt: &AtomicBool,
) -> io::Result<()> {
    let mac = tap.mac();
    let mut allocated = 0usize;
    let mut w = Writer {
        tap,
        free: free_tx,
        counters,
    };
    let mut spare: Option<Vec<u8>> = None;
    while !halt.load(Relaxed) {
        let mut buf = match spare.take().or_else(|| free_rx.try_recv().ok()) {
            Some(b) => b,
            None if allocated < POOL_MAX => {
                allocated += 1;
                vec![0u8; BUF_LEN]
            }
            // every buffer is queued: wait for the scheduler to free one
            None => match free_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(b) => b,
                Err(_) => continue,
            },
        };
        let len = match tap.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                spare = Some(buf);
                tap.wait_readable(100)?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                spare = Some(buf);
                continue;
            }
            Err(e) => {
                counters.read_errors.fetch_add(1, Relaxed);
                return Err(io::Error::new(e.kind(), format!("reading the TAP: {e}")));
            }
        };
        let Some(vnet) = VnetHdr::parse(&buf[..len]) else {
            counters.malformed.fetch_add(1, Relaxed);
            spare = Some(buf);
            continue;
        };
        if len >= VNET_HDR_LEN + 6
            && classifier
                .tenant_of_mac(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 6])
                .is_none()
        {
            // delivered locally only if addressed to the TAP (netdev mode brings the uplink's
            // MAC); a gateway tenant's frame keeps its macvlan's MAC, which delivers it there
            buf[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&mac);
        }
        match classifier.classify(&vnet, &buf[VNET_HDR_LEN..len]) {
            Verdict::Tenant { tenant, cost } => {
                let p = Packet {
                    buf,
                    len,
                    tenant,
                    cost,
                };
                match tx.try_send(p) {
                    Ok(()) => {}
                    Err(TrySendError::Full(p)) => {
                        if let Err(e) = tx.send(p) {
                            return Err(io::Error::other(format!("scheduler gone: {e}")));
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(io::Error::other("scheduler gone"));
                    }
                }
            }
            Verdict::Pass(why) => {
                let c = match why {
                    Pass::NotIpv4 => &counters.not_ipv4,
                    Pass::Malformed => &counters.malformed,
                    Pass::NoTenant => &counters.no_tenant,
                };
                c.fetch_add(1, Relaxed);
                w.send(buf, len);
            }
        }
    }
    Ok(())
}

fn scheduler_loop(
    w: &mut Writer<'_>,
    rx: &Receiver<Packet>,
    shaping: &[tollgate::config::Shaping],
    names: &[String],
    tap_name: &str,
    stats_path: &std::path::Path,
    halt: &AtomicBool,
) -> io::Result<()> {
    let start = Instant::now();
    // u64 nanoseconds last 584 years of uptime
    let now = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut sched: Scheduler<Packet> = Scheduler::new(shaping, now());
    let mut next_stats = start;
    loop {
        let t = now();
        while let Some((_, p)) = sched.dequeue(t) {
            w.send(p.buf, p.len);
        }
        if Instant::now() >= next_stats {
            write_stats(
                &sched, names, shaping, w.counters, tap_name, start, stats_path,
            );
            next_stats += Duration::from_secs(1);
        }
        if halt.load(Relaxed) {
            break;
        }
        let mut until = Instant::now() + Duration::from_millis(100);
        until = until.min(next_stats);
        if let Some(ns) = sched.next_release() {
            until = until.min(start + Duration::from_nanos(ns));
        }
        match rx.recv_deadline(until) {
            Ok(p) => {
                let t = now();
                enqueue(&mut sched, w, p, t);
                // take what else is waiting without sleeping again
                for p in rx.try_iter().take(256) {
                    enqueue(&mut sched, w, p, t);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Delayed, not dropped: deliver everything still queued or in flight.
    for p in rx.try_iter() {
        w.send(p.buf, p.len);
    }
    let rest: Vec<Packet> = sched.drain().map(|(_, p)| p).collect();
    for p in rest {
        w.send(p.buf, p.len);
    }
    write_stats(
        &sched, names, shaping, w.counters, tap_name, start, stats_path,
    );
    Ok(())
}

fn enqueue(sched: &mut Scheduler<Packet>, w: &mut Writer<'_>, p: Packet, now: u64) {
    let (tenant, cost) = (p.tenant, p.cost);
    if let Err(p) = sched.enqueue(tenant, p, cost, now) {
        // tail drop: the frame is gone (counted by the scheduler), its buffer is not
        let _ = w.free.try_send(p.buf);
    }
}

fn write_stats(
    sched: &Scheduler<Packet>,
    names: &[String],
    shaping: &[tollgate::config::Shaping],
    c: &PassCounters,
    tap: &str,
    start: Instant,
    path: &std::path::Path,
) {
    let file = StatsFile {
        tap,
        uptime_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        tenants: names
            .iter()
            .enumerate()
            .map(|(i, name)| TenantStatsEntry {
                name,
                rate_bytes_per_sec: shaping[i].rate,
                backlog_bytes: sched.backlog(i),
                counters: sched.stats(i),
            })
            .collect(),
        passed_not_ipv4: c.not_ipv4.load(Relaxed),
        passed_malformed: c.malformed.load(Relaxed),
        passed_no_tenant: c.no_tenant.load(Relaxed),
        read_errors: c.read_errors.load(Relaxed),
        write_errors: c.write_errors.load(Relaxed),
    };
    let ok = serde_json::to_vec_pretty(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| state::write_atomic(path, &b, false).map_err(|e| e.to_string()));
    if let Err(e) = ok {
        tracing::debug!("writing {}: {e}", path.display());
    }
}
