//! The daemon: set-up in a safe order, two threads moving frames, a third watching them, live
//! reloads, and teardown that puts the namespace back exactly as it was.
//!
//! ```text
//!            TAP (kernel -> us)                                TAP (us -> kernel)
//!  reader ── read ─ classify ─┬─ tenant ──► channel ──► scheduler ── write ──►
//!                             └─ pass (ARP, no tenant, malformed) ── write ──►
//!                                                          │ snapshot (4/s)
//!                                                 stats ◄──┘  counters file, /metrics
//! ```
//! The reader reads into a buffer of its own; a tenant's frame moves into a pooled buffer of
//! its size class ([`crate::pool`]), a frame that is passed through is written back from where
//! it was read. No buffer free: the frame is dropped and counted to its tenant, the reader
//! never waits. The scheduler thread owns all queues and buckets ([`crate::sched`]) and
//! sleeps until the next frame arrives or the next release time, whichever is first.
//!
//! A reload (SIGHUP) hands the reader a new classifier; the reader sends the new tenant list
//! down the same channel as the frames, so the scheduler switches exactly between the last frame
//! classified the old way and the first classified the new way, keeping every queued frame.
//! Only then is the redirect ruleset replaced (one nft transaction): a tenant being added is
//! steered to the TAP only once the shaper knows it.

use crate::classify::{Classifier, Pass, Verdict};
use crate::pool::{self, Pool};
use crate::sched::Scheduler;
use crate::segment::Tcp4Segments;
use crate::stats::{PassCounters, Shared};
use crate::vnet::{VNET_HDR_LEN, VnetHdr};
use crate::{metrics, redirect, reload, state, stats, sysctl};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tollgate::config::{Config, RedirectMode, ShaperConfig};
use tollgate::kernel::tap::{Tap, TapError};

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
    #[error(transparent)]
    Caps(#[from] tollgate::kernel::caps::CapsError),
    #[error("a dataplane thread failed: {0}")]
    Thread(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |err| DaemonError::Io { what, err }
}

struct Packet {
    buf: Vec<u8>,
    len: usize,
    tenant: usize,
    cost: u32,
    flow: u32,
}

/// What the reader sends the scheduler: frames, frames it had no buffer for (to count), and,
/// in their order, a new tenant list.
enum Msg {
    Frame(Packet),
    NoBuffer { tenant: usize, cost: u32 },
    Reconfigure(Box<Reconfigure>),
}

/// A new tenant list for the scheduler (see [`reload::ReloadPlan`]).
struct Reconfigure {
    shaping: Vec<tollgate::config::Shaping>,
    names: Vec<Arc<str>>,
    previous: Vec<Option<usize>>,
    generation: u64,
}

/// Where the main thread leaves a new classifier and tenant list for the reader.
#[derive(Default)]
struct ReloadSlot {
    pending: AtomicBool,
    next: Mutex<Option<(Classifier, Box<Reconfigure>)>>,
}

impl ReloadSlot {
    fn put(&self, c: Classifier, r: Reconfigure) {
        if let Ok(mut next) = self.next.lock() {
            *next = Some((c, Box::new(r)));
            self.pending
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Called for every frame: a plain load when nothing is pending (no read-modify-write on
    /// the hot path).
    fn take(&self) -> Option<(Classifier, Box<Reconfigure>)> {
        use std::sync::atomic::Ordering::Acquire;
        if !self.pending.load(Acquire) || !self.pending.swap(false, Acquire) {
            return None;
        }
        self.next.lock().ok()?.take()
    }
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

/// The signals the binary turns into flags for [`run`].
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Stop cleanly (SIGTERM and every other signal that would end the process).
    pub stop: Arc<AtomicBool>,
    /// Reload the config file (SIGHUP).
    pub reload: Arc<AtomicBool>,
}

/// Runs the shaper until `stop` becomes true (set by the binary's signal handler) or a thread
/// fails; always tears down what it set up. `reload` re-reads the config file in place.
pub fn run(config: &Config, control: Control) -> Result<(), DaemonError> {
    let shaper = config.shaper.as_ref().ok_or(DaemonError::NoShaper)?;
    // 1. The TAP first: if it is busy another daemon is running, and we touch nothing else.
    let tap = Arc::new(Tap::create(
        &shaper.tap,
        shaper.redirect == RedirectMode::Route,
    )?);
    tap.set_nonblocking()
        .map_err(io_err("O_NONBLOCK on the TAP"))?;
    tracing::info!(tap = %shaper.tap, mac = %tollgate::kernel::model::mac_str(&tap.mac()), "TAP up with vnet_hdr, csum and TSO offloads");
    let endpoint = match shaper.metrics {
        Some(addr) => Some(metrics::Endpoint::bind(addr).map_err(io_err("metrics"))?),
        None => None,
    };

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
    let split: Vec<bool> = shaping.iter().map(|s| s.split_gso).collect();
    let names: Vec<Arc<str>> = config
        .shaped_tenants()
        .map(|(t, _)| Arc::from(t.name.as_str()))
        .collect();
    let shared = Arc::new(Shared::new(&shaper.tap, shaper.redirect));
    let slot = Arc::new(ReloadSlot::default());
    let (tx, rx) = crossbeam_channel::bounded::<Msg>(CHANNEL);
    let (ack_tx, ack_rx) = crossbeam_channel::bounded::<u64>(4);
    let failed = Arc::new(AtomicBool::new(false));
    let halt = Arc::new(AtomicBool::new(false));
    let stats_path = state::stats_path(&shaper.state_dir, &shaper.tap).map_err(io_err("netns"))?;

    let reader = {
        let (tap, shared, halt, slot) = (tap.clone(), shared.clone(), halt.clone(), slot.clone());
        spawn("tg-reader", failed.clone(), move || {
            let mut r = Reader {
                tap: &tap,
                classifier,
                tx: &tx,
                pool: &shared.pool,
                counters: &shared.counters,
                slot: &slot,
                split,
            };
            r.run(&halt)
        })?
    };
    let scheduler = {
        let (tap, shared, halt) = (tap.clone(), shared.clone(), halt.clone());
        spawn("tg-scheduler", failed.clone(), move || {
            let mut w = Writer {
                tap: &tap,
                pool: &shared.pool,
                counters: &shared.counters,
            };
            scheduler_loop(&mut w, &rx, shaping, names, &shared, &ack_tx, &halt)
        })?
    };
    let watcher = {
        let (shared, halt) = (shared.clone(), halt.clone());
        spawn("tg-stats", failed.clone(), move || {
            background_priority();
            stats_loop(&shared, &stats_path, endpoint, &halt);
            Ok(())
        })?
    };

    let mut result = redirect::install(config, shaper).map_err(DaemonError::from);
    if result.is_ok() {
        installed.redirect = true;
        // from here on: only what reloads and teardown need (netlink, nft, net sysctls)
        result =
            tollgate::kernel::caps::keep_only(&[tollgate::kernel::caps::Capability::CAP_NET_ADMIN])
                .map_err(DaemonError::from);
    }
    if result.is_ok() {
        tracing::info!(mode = ?shaper.redirect, tenants = config.shaped_tenants().count(), "shaping");
        let mut live = Live {
            config: config.clone(),
            slot: &slot,
            acks: &ack_rx,
            failed: &failed,
            shared: &shared,
        };
        while !control.stop.load(Relaxed) && !failed.load(Relaxed) {
            if control.reload.swap(false, Relaxed) {
                live.reload();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // 5. Teardown: stop steering first, then deliver what is queued, then restore.
    installed.remove_redirect();
    halt.store(true, Relaxed);
    let mut thread_error = None;
    for t in [reader, scheduler, watcher] {
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

/// The running config and the way to change it (main thread).
struct Live<'a> {
    config: Config,
    slot: &'a ReloadSlot,
    acks: &'a Receiver<u64>,
    failed: &'a AtomicBool,
    shared: &'a Shared,
}

impl Live<'_> {
    /// Re-reads the config file and switches to it, or keeps the running config and says why.
    fn reload(&mut self) {
        let path = self.config.path.clone();
        tracing::info!(config = %path.display(), "reloading");
        match self.try_reload() {
            Ok(generation) => {
                if let Ok(mut s) = self.shared.reload.lock() {
                    s.generation = generation;
                    s.last_reload_error = None;
                }
                tracing::info!(
                    generation,
                    tenants = self.config.shaped_tenants().count(),
                    "reloaded"
                );
            }
            Err(e) => {
                if let Ok(mut s) = self.shared.reload.lock() {
                    s.reloads_failed += 1;
                    s.last_reload_error = Some(e.clone());
                }
                tracing::error!("reload refused, the running config stays: {e}");
            }
        }
    }

    fn try_reload(&mut self) -> Result<u64, String> {
        let new = Config::load(&self.config.path).map_err(|e| e.to_string())?;
        new.check_devices(tollgate::kernel::device_exists)
            .map_err(|e| e.to_string())?;
        let plan = reload::plan(&self.config, &new).map_err(|e| e.to_string())?;
        let back = reload::plan(&new, &self.config).map_err(|e| e.to_string())?;
        let shaper = self.config.shaper.clone().ok_or("no [shaper] section")?;
        let generation = self.shared.reload_status().generation + 1;

        // 1. devices the new tenants need, before any frame is classified to them
        let mut added = redirect::gateway::GatewayShaping::from_config(&new);
        added
            .tenants
            .retain(|t| plan.add_macvlans.contains(&t.macvlan));
        let made = redirect::create_macvlans(&added, &shaper.tap)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                plan.add_macvlans.iter().try_for_each(|m| {
                    sysctl::set_tap(&sysctl::macvlan_keys(m)).map_err(|e| format!("{m}: {e}"))
                })
            });
        if let Err(e) = made {
            delete_links(&plan.add_macvlans);
            return Err(e);
        }
        // 2. the dataplane, in frame order
        self.switch(Classifier::from_config(&new), &plan, generation)?;
        // 3. the redirect, in one transaction
        if let Err(e) = redirect::replace(&self.config, &new, &shaper) {
            let e = format!("replacing the redirect: {e}");
            if let Err(e2) = self.switch(Classifier::from_config(&self.config), &back, generation) {
                tracing::error!("putting the running tenants back: {e2}");
            }
            delete_links(&plan.add_macvlans);
            return Err(e);
        }
        // 4. what nothing steers to any more
        delete_links(&plan.remove_macvlans);
        self.config = new;
        Ok(generation)
    }

    /// Hands the reader a classifier and the scheduler its tenant list; returns once the
    /// scheduler has taken it.
    fn switch(
        &self,
        classifier: Classifier,
        plan: &reload::ReloadPlan,
        generation: u64,
    ) -> Result<(), String> {
        self.slot.put(
            classifier,
            Reconfigure {
                shaping: plan.shaping.clone(),
                names: plan.names.clone(),
                previous: plan.previous.clone(),
                generation,
            },
        );
        loop {
            match self.acks.recv_timeout(Duration::from_millis(100)) {
                Ok(g) if g == generation => return Ok(()),
                Ok(_) => {}
                Err(_) if self.failed.load(Relaxed) => {
                    return Err("a dataplane thread failed".into());
                }
                Err(_) => {}
            }
        }
    }
}

fn delete_links(names: &[String]) {
    if names.is_empty() {
        return;
    }
    match tollgate::kernel::netlink::Netlink::new() {
        Ok(nl) => {
            for m in names {
                if let Err(e) = nl.link_delete(m) {
                    tracing::warn!("removing {m}: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("removing {}: {e}", names.join(", ")),
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
            // frame and stats threads need no privilege: the TAP and sockets are open already
            let r = tollgate::kernel::caps::keep_only(&[])
                .map_err(io::Error::other)
                .and_then(|()| f());
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
    pool: &'a Pool,
    counters: &'a PassCounters,
}

impl Writer<'_> {
    fn write(&mut self, frame: &[u8]) {
        match self.tap.write(frame) {
            Ok(_) => {
                self.counters.frames_written.fetch_add(1, Relaxed);
            }
            Err(e) => {
                let n = self.counters.write_errors.fetch_add(1, Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(count = n + 1, "writing a frame to the TAP: {e}");
                }
            }
        }
    }

    fn send(&mut self, buf: Vec<u8>, len: usize) {
        self.write(&buf[..len]);
        self.pool.put(buf);
    }
}

/// The reader thread: TAP -> classifier -> scheduler (or straight back).
struct Reader<'a> {
    tap: &'a Tap,
    classifier: Classifier,
    tx: &'a Sender<Msg>,
    pool: &'a Pool,
    counters: &'a PassCounters,
    slot: &'a ReloadSlot,
    /// Per tenant: cut its TCP GSO frames into segments as they are queued.
    split: Vec<bool>,
}

impl Reader<'_> {
    fn to_scheduler(&self, m: Msg) -> io::Result<()> {
        match self.tx.try_send(m) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m)) => self
                .tx
                .send(m)
                .map_err(|e| io::Error::other(format!("scheduler gone: {e}"))),
            Err(TrySendError::Disconnected(_)) => Err(io::Error::other("scheduler gone")),
        }
    }

    fn run(&mut self, halt: &AtomicBool) -> io::Result<()> {
        let mac = self.tap.mac();
        let mut w = Writer {
            tap: self.tap,
            pool: self.pool,
            counters: self.counters,
        };
        // the reader's own buffer: every frame is read here first
        let mut buf = vec![0u8; pool::LARGE_LEN];
        while !halt.load(Relaxed) {
            if let Some((classifier, r)) = self.slot.take() {
                // every frame after this one is classified the new way, and the scheduler
                // sees the new tenant list before any of them
                self.classifier = classifier;
                self.split = r.shaping.iter().map(|s| s.split_gso).collect();
                self.to_scheduler(Msg::Reconfigure(r))?;
            }
            let len = match self.tap.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tap.wait_readable(100)?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.counters.read_errors.fetch_add(1, Relaxed);
                    return Err(io::Error::new(e.kind(), format!("reading the TAP: {e}")));
                }
            };
            self.counters.frames_read.fetch_add(1, Relaxed);
            let Some(vnet) = VnetHdr::parse(&buf[..len]) else {
                self.counters.malformed.fetch_add(1, Relaxed);
                continue;
            };
            if len >= VNET_HDR_LEN + 6
                && !tollgate::names::is_shaper_macvlan_mac(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 6])
            {
                // delivered locally only if addressed to the TAP (netdev mode brings the
                // uplink's MAC); a gateway tenant's frame keeps its macvlan's MAC, which
                // delivers it there
                buf[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&mac);
            }
            match self
                .classifier
                .classify_flow(&vnet, &buf[VNET_HDR_LEN..len])
            {
                (Verdict::Tenant { tenant, cost }, flow) => {
                    let segments = match self.split.get(tenant) {
                        Some(true) if vnet.is_gso() => Tcp4Segments::new(&buf[..len], &vnet),
                        _ => None,
                    };
                    if let Some(segments) = segments {
                        // each segment a frame of its own, in a small buffer; the reader keeps
                        // its buffer
                        for i in 0..segments.count() {
                            let cost = segments.cost_of(i);
                            let msg = match self.pool.take(segments.len_of(i)) {
                                Some(mut b) => match segments.write(i, &mut b) {
                                    Some(len) => Msg::Frame(Packet {
                                        buf: b,
                                        len,
                                        tenant,
                                        cost,
                                        flow,
                                    }),
                                    None => {
                                        self.pool.put(b);
                                        Msg::NoBuffer { tenant, cost }
                                    }
                                },
                                None => Msg::NoBuffer { tenant, cost },
                            };
                            self.to_scheduler(msg)?;
                        }
                        continue;
                    }
                    let packet = |buf| {
                        Msg::Frame(Packet {
                            buf,
                            len,
                            tenant,
                            cost,
                            flow,
                        })
                    };
                    let msg = match self.pool.take(len) {
                        Some(mut b) if b.len() == pool::SMALL_LEN => {
                            b[..len].copy_from_slice(&buf[..len]);
                            packet(b)
                        }
                        Some(mut b) => {
                            // a large frame keeps the buffer it was read into
                            std::mem::swap(&mut b, &mut buf);
                            packet(b)
                        }
                        None => Msg::NoBuffer { tenant, cost },
                    };
                    self.to_scheduler(msg)?;
                }
                (Verdict::Pass(why), _) => {
                    let c = match why {
                        Pass::NotIpv4 => &self.counters.not_ipv4,
                        Pass::Malformed => &self.counters.malformed,
                        Pass::NoTenant => &self.counters.no_tenant,
                    };
                    c.fetch_add(1, Relaxed);
                    w.write(&buf[..len]);
                }
            }
        }
        Ok(())
    }
}

fn scheduler_loop(
    w: &mut Writer<'_>,
    rx: &Receiver<Msg>,
    mut shaping: Vec<tollgate::config::Shaping>,
    mut names: Vec<Arc<str>>,
    shared: &Shared,
    acks: &Sender<u64>,
    halt: &AtomicBool,
) -> io::Result<()> {
    let start = shared.start;
    // u64 nanoseconds last 584 years of uptime
    let now = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut sched: Scheduler<Packet> = Scheduler::new(&shaping, now());
    let mut next_snapshot = Instant::now();
    let take = |sched: &mut Scheduler<Packet>,
                w: &mut Writer<'_>,
                shaping: &mut Vec<tollgate::config::Shaping>,
                names: &mut Vec<Arc<str>>,
                m: Msg,
                t: u64| match m {
        Msg::Frame(p) => enqueue(sched, w, p, t),
        Msg::NoBuffer { tenant, cost } => sched.count_nobuf(tenant, cost),
        Msg::Reconfigure(r) => {
            // the frames of tenants that are gone are no longer shaped: deliver them now
            for p in sched.reconfigure(&r.shaping, &r.previous, t) {
                w.send(p.buf, p.len);
            }
            *shaping = r.shaping;
            *names = r.names;
            shared.publish(sched, names, shaping, t, true);
            let _ = acks.send(r.generation);
        }
    };
    loop {
        let t = now();
        while let Some((_, p)) = sched.dequeue(t) {
            w.send(p.buf, p.len);
        }
        // what the queues dropped (CoDel, room for other flows) gives its buffers back
        for p in sched.take_dropped() {
            w.pool.put(p.buf);
        }
        if Instant::now() >= next_snapshot {
            shared.publish(&mut sched, &names, &shaping, t, false);
            next_snapshot += stats::SNAPSHOT_EVERY;
        }
        if halt.load(Relaxed) {
            break;
        }
        let mut until = Instant::now() + Duration::from_millis(100);
        until = until.min(next_snapshot);
        if let Some(ns) = sched.next_release() {
            until = until.min(start + Duration::from_nanos(ns));
        }
        match rx.recv_deadline(until) {
            Ok(m) => {
                let t = now();
                take(&mut sched, w, &mut shaping, &mut names, m, t);
                // take what else is waiting without sleeping again
                for m in rx.try_iter().take(256) {
                    take(&mut sched, w, &mut shaping, &mut names, m, t);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Delayed, not dropped: deliver everything still queued or in flight.
    for m in rx.try_iter() {
        if let Msg::Frame(p) = m {
            w.send(p.buf, p.len);
        }
    }
    let rest: Vec<Packet> = sched.drain().map(|(_, p)| p).collect();
    for p in rest {
        w.send(p.buf, p.len);
    }
    shared.publish(&mut sched, &names, &shaping, now(), true);
    Ok(())
}

fn enqueue(sched: &mut Scheduler<Packet>, w: &mut Writer<'_>, p: Packet, now: u64) {
    let (tenant, cost, flow) = (p.tenant, p.cost, p.flow);
    if let Err(p) = sched.enqueue(tenant, p, cost, flow, now) {
        // refused: the frame is gone (counted by the scheduler), its buffer is not
        w.pool.put(p.buf);
    }
    // frames it dropped to make room are recycled once per loop, with CoDel's
}

/// Puts the calling thread in SCHED_IDLE: on a machine with fewer cores than busy threads,
/// serialising 10,000 tenants' counters must wait for the frame threads, never delay them.
fn background_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid policy and a
    // parameter struct that lives across the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::debug!(
            "SCHED_IDLE for the stats thread: {}",
            io::Error::last_os_error()
        );
    }
}

/// The stats thread: the counters file once a second, and the metrics endpoint if configured.
fn stats_loop(
    shared: &Arc<Shared>,
    path: &std::path::Path,
    endpoint: Option<metrics::Endpoint>,
    halt: &Arc<AtomicBool>,
) {
    std::thread::scope(|s| {
        if let Some(ep) = endpoint {
            let (shared, halt) = (shared.clone(), halt.clone());
            s.spawn(move || {
                tracing::info!(addr = %ep.addr, "metrics at http://{}/metrics", ep.addr);
                ep.serve(shared, &halt);
            });
        }
        while !halt.load(Relaxed) {
            stats::write_file(shared, path);
            for _ in 0..10 {
                if halt.load(Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
}
