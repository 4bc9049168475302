//! The benchmark: tollgate against the kernel's own ingress shaping, side by side in one run.
//!
//! Every scenario runs in a fresh [`UploadLab`] (a client and a server namespace joined by a
//! veth pair; clients 198.51.100.10-19). The methods:
//!
//! | method | what shapes the client's uploads on the server |
//! |---|---|
//! | `direct` | nothing (the ceiling) |
//! | `ifb-tbf` | ingress `mirred` to an IFB, TBF on it (burst max(64 KiB, 10 ms), latency 50 ms) |
//! | `ifb-htb` | ingress `mirred` to an IFB, HTB with a class per tenant (u32 by source) |
//! | `netdev`, `route` | tollgate-shaper with that redirect mode, default queue discipline |
//!
//! Scenarios: the unshaped ceiling (1 and 4 streams, CPU seconds per GB), accuracy at several
//! rates with the receiver's 100-ms bins of the first seconds, latency under load (ping from
//! the loaded tenant) and idle, isolation (one tenant floods, another uploads at its rate), and
//! scale (1 to 10,000 configured tenants, 10 active). Everything measured is in the returned
//! [`Report`]; [`report`] turns it into docs/benchmarks.md and SVG plots.

pub mod gateway;
pub mod report;
pub mod settle;

use crate::harness::spawn_shaper;
use crate::{Netns, Proc, SERVER, UploadLab};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Ways to shape the client's uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Direct,
    IfbTbf,
    IfbHtb,
    Netdev,
    Route,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Direct,
        Method::IfbTbf,
        Method::IfbHtb,
        Method::Netdev,
        Method::Route,
    ];
    pub const SHAPING: [Method; 4] = [
        Method::IfbTbf,
        Method::IfbHtb,
        Method::Netdev,
        Method::Route,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Direct => "direct",
            Method::IfbTbf => "ifb-tbf",
            Method::IfbHtb => "ifb-htb",
            Method::Netdev => "tollgate-netdev",
            Method::Route => "tollgate-route",
        }
    }
}

/// How long and how much.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub quick: bool,
    pub ceiling_secs: u32,
    pub accuracy_rates_mbit: Vec<u64>,
    pub accuracy_secs: u32,
    pub latency_rates_mbit: Vec<u64>,
    pub latency_secs: u32,
    pub isolation_secs: u32,
    pub scale_tenants: Vec<usize>,
    pub scale_secs: u32,
    /// Only these scenarios (ceiling, accuracy, latency, isolation, scale); empty: all.
    #[serde(default)]
    pub only: Vec<String>,
}

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 5] = ["ceiling", "accuracy", "latency", "isolation", "scale"];

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            ceiling_secs: 10,
            accuracy_rates_mbit: vec![1, 10, 100, 1000, 5000],
            accuracy_secs: 30,
            latency_rates_mbit: vec![20, 100],
            latency_secs: 14,
            isolation_secs: 10,
            scale_tenants: vec![1, 100, 1000, 10_000],
            scale_secs: 8,
            only: Vec::new(),
        }
    }

    /// Under three minutes: every scenario, fewer and shorter runs.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            ceiling_secs: 3,
            accuracy_rates_mbit: vec![10, 100],
            accuracy_secs: 4,
            latency_rates_mbit: vec![20],
            latency_secs: 8,
            isolation_secs: 4,
            scale_tenants: vec![1, 1000],
            scale_secs: 3,
            only: Vec::new(),
        }
    }

    /// Whether scenario `s` is measured.
    pub fn runs(&self, s: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == s)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ceiling {
    pub method: Method,
    pub streams: u32,
    pub mbit: f64,
    /// Receiver goodput over direct veth's in the same run.
    pub ratio_to_direct: f64,
    /// CPU seconds per GB received: the shaper process (user + system) and softirq time of
    /// the whole machine.
    pub shaper_cpu_s_per_gb: f64,
    pub softirq_cpu_s_per_gb: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accuracy {
    pub method: Method,
    pub rate_mbit: u64,
    pub achieved_mbit: f64,
    /// achieved / configured (goodput: TCP payload; the ideal is 0.965 for IP accounting,
    /// 0.956 for Ethernet accounting).
    pub ratio: f64,
    /// The receiver's largest 100-ms bin in the first 3 s over the rate (iperf3's reports: what
    /// the application read, so TCP's loss recovery shows as clumps).
    pub first_3s_peak_ratio: f64,
    /// The same peak for the bytes the shaping method delivered to the server's stack (its
    /// device counter sampled every 100 ms): the shaping itself, before TCP reorders anything.
    #[serde(default)]
    pub first_3s_peak_delivered: f64,
    /// The receiver's 100-ms bins over the first 5 s, Mbit/s.
    pub first_bins_mbit: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub method: Method,
    pub rate_mbit: u64,
    /// Ping from the loaded tenant every 20 ms, sorted (ms).
    pub rtts_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub idle_p50_ms: f64,
    pub upload_mbit: f64,
    /// TCP request/response (1 byte each way, every 20 ms) from the loaded tenant, ms.
    #[serde(default)]
    pub tcp_rr_p50_ms: f64,
    #[serde(default)]
    pub tcp_rr_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Isolation {
    pub method: Method,
    /// "none" (A idle), "tcp8" (8 TCP streams) or "udp16" (16-byte UDP datagrams at 10x the
    /// rate).
    pub flood: String,
    pub rate_mbit: u64,
    pub b_ratio: f64,
    pub b_p99_ms: f64,
    pub b_ping_replies: usize,
    pub b_pings_sent: usize,
    /// Frames the TAP dropped during the run (its queue to the shaper was full); 0 without one.
    #[serde(default)]
    pub tap_dropped: u64,
    /// Frames the kernel's per-CPU input backlogs dropped during the run (whole machine).
    #[serde(default)]
    pub backlog_dropped: u64,
}

/// The TAP's `tx_dropped` in `ns` (0 when there is no TAP).
fn tap_dropped(ns: &crate::Netns) -> u64 {
    ns.exec("cat", &["/sys/class/net/tg0/statistics/tx_dropped"])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Frames dropped by the per-CPU input backlogs since boot (second column of
/// /proc/net/softnet_stat, summed over CPUs).
fn backlog_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    pub tenants: usize,
    pub active: usize,
    pub total_mbit: f64,
    pub start_s: f64,
    pub rss_mib: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub plan: Plan,
    pub ceiling: Vec<Ceiling>,
    pub accuracy: Vec<Accuracy>,
    pub latency: Vec<Latency>,
    pub isolation: Vec<Isolation>,
    pub scale: Vec<Scale>,
    /// (configured tenants, million frames per second) of classify + enqueue + dequeue on
    /// one core, 10 tenants active, 1514-byte frames.
    pub micro_mpps: Vec<(usize, f64)>,
}

/// A tenant as the benchmark configures it: client host part and rate.
#[derive(Clone, Debug)]
struct Tenant {
    host: u8,
    rate: String,
}

/// What a method installed, removed by [`Installed::remove`].
struct Installed {
    shaper: Option<Proc>,
    ifb: bool,
}

impl Installed {
    fn remove(mut self, lab: &UploadLab) {
        if let Some(p) = self.shaper.take() {
            crate::harness::stop_shaper(p);
        }
        if self.ifb {
            let _ = lab
                .srv
                .exec("tc", &["qdisc", "del", "dev", "veth-srv", "ingress"]);
            let _ = lab.srv.ip(&["link", "del", "ifb0"]);
        }
    }
}

fn rate_bytes(rate: &str) -> Result<u64> {
    tollgate::config::units::parse_rate(rate).map_err(|e| anyhow::anyhow!("{rate}: {e}"))
}

/// Installs `method` for `tenants` on the lab's server; `extra` is config text after the
/// tenants (more tenants, for the shaper).
fn install(
    lab: &UploadLab,
    method: Method,
    tenants: &[Tenant],
    shaper: &Path,
    extra: &str,
) -> Result<Installed> {
    let mut done = Installed {
        shaper: None,
        ifb: false,
    };
    match method {
        Method::Direct => {}
        Method::IfbTbf | Method::IfbHtb => {
            let s = &lab.srv;
            s.ip(&["link", "add", "ifb0", "type", "ifb"])?;
            s.ip(&["link", "set", "ifb0", "up"])?;
            done.ifb = true;
            s.exec(
                "tc",
                &[
                    "qdisc", "add", "dev", "veth-srv", "handle", "ffff:", "ingress",
                ],
            )?;
            s.exec(
                "tc",
                &[
                    "filter", "add", "dev", "veth-srv", "parent", "ffff:", "protocol", "ip", "u32",
                    "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                    "ifb0",
                ],
            )?;
            if method == Method::IfbTbf {
                let [t] = tenants else {
                    bail!("TBF shapes one aggregate: one tenant only");
                };
                let burst = (rate_bytes(&t.rate)? / 100).max(65_536).to_string();
                s.exec(
                    "tc",
                    &[
                        "qdisc", "add", "dev", "ifb0", "root", "tbf", "rate", &t.rate, "burst",
                        &burst, "latency", "50ms",
                    ],
                )?;
            } else {
                s.exec(
                    "tc",
                    &[
                        "qdisc", "add", "dev", "ifb0", "root", "handle", "1:", "htb", "default",
                        "99",
                    ],
                )?;
                for (i, t) in tenants.iter().enumerate() {
                    let class = format!("1:{}", i + 10);
                    s.exec(
                        "tc",
                        &[
                            "class", "add", "dev", "ifb0", "parent", "1:", "classid", &class,
                            "htb", "rate", &t.rate,
                        ],
                    )?;
                    s.exec(
                        "tc",
                        &[
                            "filter",
                            "add",
                            "dev",
                            "ifb0",
                            "parent",
                            "1:",
                            "protocol",
                            "ip",
                            "u32",
                            "match",
                            "ip",
                            "src",
                            &format!("198.51.100.{}/32", t.host),
                            "flowid",
                            &class,
                        ],
                    )?;
                }
            }
        }
        Method::Netdev | Method::Route => {
            let mode = if method == Method::Netdev {
                "netdev"
            } else {
                "route"
            };
            let names: Vec<String> = tenants.iter().map(|t| format!("h{}", t.host)).collect();
            let sources: Vec<String> = tenants
                .iter()
                .map(|t| format!("198.51.100.{}/32", t.host))
                .collect();
            let rows: Vec<(&str, &str, &str)> = tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (names[i].as_str(), sources[i].as_str(), t.rate.as_str()))
                .collect();
            let cfg = crate::harness::config(lab, mode, &rows) + extra;
            let path = lab.dir.path().join("bench.toml");
            std::fs::write(&path, cfg)?;
            done.shaper = Some(spawn_shaper(
                shaper,
                &lab.srv,
                &path,
                &lab.dir.path().join("shaper.log"),
                Duration::from_secs(120),
            ));
        }
    }
    Ok(done)
}

/// `iperf3 -s -1` on `port`, reporting 100-ms bins; waits until it listens.
/// The device and counter through which a method's shaped traffic reaches the server's stack.
fn delivered_counter(m: Method) -> (&'static str, &'static str) {
    match m {
        Method::Direct => ("veth-srv", "rx_bytes"),
        // the IFB sends what TBF/HTB release back into the ingress path
        Method::IfbTbf | Method::IfbHtb => ("ifb0", "tx_bytes"),
        // the shaper writes what it releases into the TAP: the kernel receives it there
        Method::Netdev | Method::Route => ("tg0", "rx_bytes"),
    }
}

/// Samples `/sys/class/net/<dev>/statistics/<counter>` in `ns` about every 100 ms for `secs`
/// seconds: one `<ns since the epoch> <bytes>` line each, in the returned process's log.
fn sample_counter(ns: &Netns, dir: &Path, dev: &str, counter: &str, secs: u32) -> Result<Proc> {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do read b < /sys/class/net/{dev}/statistics/{counter}; \
         echo \"$(date +%s%N) $b\"; sleep 0.1; i=$((i+1)); done",
        n = secs * 10
    );
    let mut c = ns.command("sh");
    c.args(["-c", &script]);
    Ok(Proc::spawn(c, &dir.join(format!("delivered-{dev}.txt")))?)
}

/// The largest rate (Mbit/s) between two consecutive counter samples (`<ns> <bytes>` lines) in
/// the 3 s from the first sample after which bytes arrived; 0 if nothing arrived.
fn first_3s_peak(samples: &str) -> f64 {
    let pts: Vec<(u64, u64)> = samples
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    let Some(start) = pts.windows(2).position(|w| w[1].1 > w[0].1) else {
        return 0.0;
    };
    let t0 = pts[start].0;
    pts[start..]
        .windows(2)
        .take_while(|w| w[0].0 < t0 + 3_000_000_000)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| w[1].1.saturating_sub(w[0].1) as f64 * 8.0 * 1e3 / (w[1].0 - w[0].0) as f64)
        .fold(0.0, f64::max)
}

fn server_once(ns: &Netns, dir: &Path, port: u16) -> Result<Proc> {
    let mut c = ns.command("iperf3");
    c.args(["-s", "-1", "-J", "-i", "0.1", "-p", &port.to_string()]);
    let p = Proc::spawn(c, &dir.join(format!("server-{port}.json")))?;
    let ok = crate::wait_until(Duration::from_secs(5), || {
        ns.exec("ss", &["-Htln", &format!("sport = :{port}")])
            .is_ok_and(|o| !o.trim().is_empty())
    });
    if !ok {
        bail!("iperf3 server on {port} did not start");
    }
    Ok(p)
}

fn client(lab: &UploadLab, host: u8, port: u16, secs: u32, args: &[&str]) -> Result<Proc> {
    let mut c = lab.cl.command("iperf3");
    c.args([
        "-c",
        SERVER,
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
        "-B",
    ])
    .arg(format!("198.51.100.{host}"))
    .args(args);
    Ok(Proc::spawn(
        c,
        &lab.dir.path().join(format!("client-{host}-{port}.json")),
    )?)
}

fn finish(mut p: Proc, secs: u32) -> Result<serde_json::Value> {
    if p.wait_timeout(Duration::from_secs(u64::from(secs) + 30))?
        .is_none()
    {
        bail!("iperf3 did not finish: {}", p.log.display());
    }
    let v: serde_json::Value = serde_json::from_str(&p.log_text())
        .with_context(|| format!("iperf3 output {}", p.log.display()))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

/// Receiver goodput (Mbit/s) from a client's report.
fn received_mbit(v: &serde_json::Value) -> f64 {
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
        / 1e6
}

/// The server's (receiver's) bins, Mbit/s.
fn bins_mbit(v: &serde_json::Value) -> Vec<f64> {
    v.pointer("/intervals")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.pointer("/sum/bits_per_second")?.as_f64())
                .map(|b| b / 1e6)
                .collect()
        })
        .unwrap_or_default()
}

/// `count` pings from client `host` at `interval` seconds: sorted RTTs (ms) and the count sent.
fn ping(lab: &UploadLab, host: u8, count: u32, interval: &str) -> Result<(Vec<f64>, usize)> {
    let rtts = ping_from(lab, &format!("198.51.100.{host}"), count, interval)?;
    Ok((rtts, usize::try_from(count).unwrap_or(0)))
}

/// Sorted round-trip times (ms) of `count` pings from client address `src` to the server, at
/// `interval` seconds (lost pings are simply missing).
pub fn ping_from(lab: &UploadLab, src: &str, count: u32, interval: &str) -> Result<Vec<f64>> {
    let out = lab
        .cl
        .command("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "2",
            "-I",
            src,
        ])
        .arg(SERVER)
        .output()?;
    let mut rtts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

/// A TCP request/response probe: from client `host` (the lab's only client address), one
/// byte to the server and one back,
/// every 20 ms for `secs`; sorted round-trip times (ms). The server answers in the server
/// namespace on `port`.
fn tcp_rr(lab: &UploadLab, host: u8, port: u16, secs: u32) -> Result<Vec<f64>> {
    use std::io::{Read, Write};
    let listener = crate::in_netns(lab.srv.name(), move || {
        std::net::TcpListener::bind(("0.0.0.0", port))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("rr server thread"))???;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    // the latency lab's client has one address, the loaded tenant's: it is the source
    debug_assert_eq!(host, 10);
    let rtts = crate::in_netns(lab.cl.name(), move || -> std::io::Result<Vec<f64>> {
        let mut s = std::net::TcpStream::connect((SERVER, port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = Vec::new();
        let end = Instant::now() + Duration::from_secs(u64::from(secs));
        let mut b = [1u8; 1];
        while Instant::now() < end {
            let t0 = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            out.push(t0.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(out)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("rr client thread"))???;
    let _ = server.join();
    let mut rtts = rtts;
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

/// The `p`th percentile (0-100) of sorted values, by nearest rank.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) * p).div_ceil(100);
    sorted[i.min(sorted.len() - 1)]
}

/// (process CPU ticks, machine softirq ticks); ticks are 1/100 s.
fn cpu_ticks(pid: Option<u32>) -> (u64, u64) {
    let proc_ticks = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // fields after the name: state is [0]; utime is field 14 -> [11], stime [12]
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let softirq = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            line.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0);
    (proc_ticks, softirq)
}

fn lab(tag: &str, hosts: &[u8]) -> Result<UploadLab> {
    Ok(UploadLab::new(tag, hosts)?)
}

fn one(host: u8, rate: &str) -> Vec<Tenant> {
    vec![Tenant {
        host,
        rate: rate.to_string(),
    }]
}

/// Runs the whole benchmark; `progress` gets a line per measurement.
pub fn run(plan: &Plan, shaper: &Path, mut progress: impl FnMut(&str)) -> Result<Report> {
    let mut r = Report {
        command: String::new(),
        date: String::new(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        plan: plan.clone(),
        ceiling: Vec::new(),
        accuracy: Vec::new(),
        latency: Vec::new(),
        isolation: Vec::new(),
        scale: Vec::new(),
        micro_mpps: Vec::new(),
    };

    if plan.runs("ceiling") {
        // 1. the unshaped ceiling
        for streams in [1u32, 4] {
            let mut direct = 0.0;
            for m in Method::ALL {
                let lab = lab("bc", &[10])?;
                let inst = install(&lab, m, &one(10, "40gbit"), shaper, "")?;
                let pid = inst.shaper.as_ref().map(|p| p.child.id());
                let srv = server_once(&lab.srv, lab.dir.path(), 5201)?;
                let before = cpu_ticks(pid);
                let c = client(
                    &lab,
                    10,
                    5201,
                    plan.ceiling_secs,
                    &["-P", &streams.to_string()],
                )?;
                let v = finish(c, plan.ceiling_secs)?;
                let after = cpu_ticks(pid);
                drop(srv);
                inst.remove(&lab);
                let mbit = received_mbit(&v);
                if m == Method::Direct {
                    direct = mbit;
                }
                let gb = mbit * f64::from(plan.ceiling_secs) / 8e3;
                let per_gb = |t: u64| t as f64 / 100.0 / gb.max(1e-9);
                let row = Ceiling {
                    method: m,
                    streams,
                    mbit,
                    ratio_to_direct: mbit / direct.max(1e-9),
                    shaper_cpu_s_per_gb: per_gb(after.0.saturating_sub(before.0)),
                    softirq_cpu_s_per_gb: per_gb(after.1.saturating_sub(before.1)),
                };
                progress(&format!(
                    "ceiling {} x{streams}: {:.0} Mbit/s ({:.3} of direct)",
                    m.name(),
                    row.mbit,
                    row.ratio_to_direct
                ));
                r.ceiling.push(row);
            }
        }
    }
    if plan.runs("accuracy") {
        // 2. accuracy, and the first seconds at the receiver
        for &rate in &plan.accuracy_rates_mbit {
            for m in Method::SHAPING {
                let lab = lab("ba", &[10])?;
                let inst = install(&lab, m, &one(10, &format!("{rate}mbit")), shaper, "")?;
                let srv = server_once(&lab.srv, lab.dir.path(), 5201)?;
                let (dev, counter) = delivered_counter(m);
                let sample_secs = plan.accuracy_secs.min(5);
                let mut sampler =
                    sample_counter(&lab.srv, lab.dir.path(), dev, counter, sample_secs)?;
                let c = client(&lab, 10, 5201, plan.accuracy_secs, &[])?;
                let v = finish(c, plan.accuracy_secs)?;
                let _ = sampler.wait_timeout(Duration::from_secs(u64::from(sample_secs) + 5));
                let delivered_peak = first_3s_peak(&sampler.log_text());
                let mut srv = srv;
                let _ = srv.wait_timeout(Duration::from_secs(5));
                let sv: serde_json::Value =
                    serde_json::from_str(&srv.log_text()).unwrap_or_default();
                inst.remove(&lab);
                let bins = bins_mbit(&sv);
                let peak = bins.iter().take(30).cloned().fold(0.0, f64::max);
                let row = Accuracy {
                    method: m,
                    rate_mbit: rate,
                    achieved_mbit: received_mbit(&v),
                    ratio: received_mbit(&v) / rate as f64,
                    first_3s_peak_ratio: peak / rate as f64,
                    first_3s_peak_delivered: delivered_peak / rate as f64,
                    first_bins_mbit: bins.into_iter().take(50).collect(),
                };
                progress(&format!(
                    "accuracy {} {rate} Mbit/s: {:.3}, first-3s peak {:.2}x (delivered {:.2}x)",
                    m.name(),
                    row.ratio,
                    row.first_3s_peak_ratio,
                    row.first_3s_peak_delivered
                ));
                r.accuracy.push(row);
            }
        }
    }
    if plan.runs("latency") {
        // 3. latency under load, and idle
        for &rate in &plan.latency_rates_mbit {
            for m in Method::SHAPING {
                let lab = lab("bl", &[10])?;
                let inst = install(&lab, m, &one(10, &format!("{rate}mbit")), shaper, "")?;
                let (idle, _) = ping(&lab, 10, 50, "0.02")?;
                let srv = server_once(&lab.srv, lab.dir.path(), 5201)?;
                let c = client(&lab, 10, 5201, plan.latency_secs, &[])?;
                std::thread::sleep(Duration::from_secs(2));
                let probe_secs = plan.latency_secs.saturating_sub(4) / 2;
                let count = probe_secs * 50;
                let (rtts, _) = ping(&lab, 10, count, "0.02")?;
                let rr = tcp_rr(&lab, 10, 7000, probe_secs)?;
                let v = finish(c, plan.latency_secs)?;
                drop(srv);
                inst.remove(&lab);
                let row = Latency {
                    method: m,
                    rate_mbit: rate,
                    p50_ms: percentile(&rtts, 50),
                    p99_ms: percentile(&rtts, 99),
                    max_ms: rtts.last().copied().unwrap_or(f64::NAN),
                    idle_p50_ms: percentile(&idle, 50),
                    upload_mbit: received_mbit(&v),
                    tcp_rr_p50_ms: percentile(&rr, 50),
                    tcp_rr_p99_ms: percentile(&rr, 99),
                    rtts_ms: rtts,
                };
                progress(&format!(
                    "latency {} {rate} Mbit/s: ping p50 {:.2} p99 {:.2} max {:.2} ms (idle {:.3}); tcp rr p50 {:.2} p99 {:.2}",
                    m.name(),
                    row.p50_ms,
                    row.p99_ms,
                    row.max_ms,
                    row.idle_p50_ms,
                    row.tcp_rr_p50_ms,
                    row.tcp_rr_p99_ms
                ));
                r.latency.push(row);
            }
        }
    }
    if plan.runs("isolation") {
        // 4. isolation: A floods at 10x its rate, B uploads at its rate
        let rate = 20u64;
        // "none": A idle, B's own figures to compare with
        for flood in ["none", "tcp8", "udp16"] {
            for m in [Method::IfbHtb, Method::Netdev, Method::Route] {
                let lab = lab("bi", &[10, 20])?;
                let tenants = [
                    Tenant {
                        host: 10,
                        rate: format!("{rate}mbit"),
                    },
                    Tenant {
                        host: 20,
                        rate: format!("{rate}mbit"),
                    },
                ];
                let inst = install(&lab, m, &tenants, shaper, "")?;
                let s1 = server_once(&lab.srv, lab.dir.path(), 5201)?;
                let s2 = server_once(&lab.srv, lab.dir.path(), 5202)?;
                let secs = plan.isolation_secs;
                let flood_args: Vec<String> = match flood {
                    "tcp8" => vec!["-P".into(), "8".into()],
                    _ => vec![
                        "-u".into(),
                        "-b".into(),
                        format!("{}M", rate * 10),
                        "-l".into(),
                        "16".into(),
                    ],
                };
                let fa: Vec<&str> = flood_args.iter().map(String::as_str).collect();
                let (tap0, backlog0) = (tap_dropped(&lab.srv), backlog_dropped());
                let a = match flood {
                    "none" => None,
                    _ => Some(client(&lab, 10, 5201, secs + 2, &fa)?),
                };
                std::thread::sleep(Duration::from_secs(1));
                let b = client(&lab, 20, 5202, secs, &[])?;
                let count = secs.saturating_sub(2) * 25;
                let (rtts, sent) = ping(&lab, 20, count, "0.04")?;
                let bv = finish(b, secs)?;
                if let Some(a) = a {
                    let _ = finish(a, secs + 2);
                }
                let tap_dropped = tap_dropped(&lab.srv).saturating_sub(tap0);
                let backlog_dropped = backlog_dropped().saturating_sub(backlog0);
                drop((s1, s2));
                inst.remove(&lab);
                let row = Isolation {
                    method: m,
                    flood: flood.into(),
                    rate_mbit: rate,
                    b_ratio: received_mbit(&bv) / rate as f64,
                    b_p99_ms: percentile(&rtts, 99),
                    b_ping_replies: rtts.len(),
                    b_pings_sent: sent,
                    tap_dropped,
                    backlog_dropped,
                };
                progress(&format!(
                    "isolation {} {flood}: B {:.3} of its rate, p99 {:.2} ms, {}/{} pings; dropped by the TAP {}, by input backlogs {}",
                    m.name(),
                    row.b_ratio,
                    row.b_p99_ms,
                    row.b_ping_replies,
                    row.b_pings_sent,
                    row.tap_dropped,
                    row.backlog_dropped
                ));
                r.isolation.push(row);
            }
        }
    }
    if plan.runs("scale") {
        // 5. scale: N configured tenants, 10 active (hosts 10-19), netdev
        for &n in &plan.scale_tenants {
            let hosts: Vec<u8> = (10..20).collect();
            let lab = lab("bs", &hosts)?;
            let active = n.min(hosts.len());
            let mut tenants: Vec<Tenant> = hosts[..active]
                .iter()
                .map(|&h| Tenant {
                    host: h,
                    rate: "1gbit".into(),
                })
                .collect();
            let mut cfg_extra = String::new();
            for i in active..n {
                cfg_extra += &format!(
                    "\n[[tenant]]\nname = \"idle{i}\"\nsources = [\"10.{}.{}.0/24\"]\nupload = \"10mbit\"\n",
                    (i / 256) % 256,
                    i % 256
                );
            }
            tenants.truncate(active);
            let t0 = Instant::now();
            let inst = install(&lab, Method::Netdev, &tenants, shaper, &cfg_extra)?;
            let start_s = t0.elapsed().as_secs_f64();
            let pid = inst.shaper.as_ref().map(|p| p.child.id());
            let mut servers = Vec::new();
            let mut clients = Vec::new();
            for (i, t) in tenants.iter().enumerate() {
                let port = 5201 + u16::try_from(i).unwrap_or(0);
                servers.push(server_once(&lab.srv, lab.dir.path(), port)?);
                clients.push(client(&lab, t.host, port, plan.scale_secs, &[])?);
            }
            let mut total = 0.0;
            for c in clients {
                total += received_mbit(&finish(c, plan.scale_secs)?);
            }
            let rss_mib = pid
                .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                })
                .unwrap_or(0.0)
                / 1024.0;
            drop(servers);
            inst.remove(&lab);
            let row = Scale {
                tenants: n,
                active,
                total_mbit: total,
                start_s,
                rss_mib,
            };
            r.micro_mpps.push((n, micro_mpps(n)));
            progress(&format!(
                "scale {n} tenants ({active} active, 1 Gbit/s each): {:.0} Mbit/s, start {:.2} s, RSS {:.1} MiB",
                row.total_mbit, row.start_s, row.rss_mib
            ));
            r.scale.push(row);
        }
    }
    Ok(r)
}

/// The micro-benchmark's workload: `n` configured tenants (tenant i owns
/// 10.(i/256).(i%256).0/24, all at 100 Gbit/s, so nothing waits for tokens), 80 frames of
/// 1514 bytes from 10 of them, 8 flows each. Shared with `cargo bench -p tollgate-shaper`.
pub struct Micro {
    pub classifier: shaper::classify::Classifier,
    pub shaping: Vec<tollgate::config::Shaping>,
    pub frames: Vec<Vec<u8>>,
}

impl Micro {
    pub fn new(n: usize) -> Result<Micro> {
        let mut text = String::from("[shaper]\ninterface = \"eth0\"\ntap = \"tg0\"\n");
        for i in 0..n {
            text += &format!(
                "[[tenant]]\nname = \"t{i}\"\nsources = [\"10.{}.{}.0/24\"]\nupload = \"100gbit\"\nqueue = \"64mb\"\n",
                (i / 256) % 256,
                i % 256
            );
        }
        let cfg = tollgate::config::Config::parse(&text, Path::new("micro.toml"))?;
        let frames = (0..80usize)
            .map(|i| {
                let t = (i % 10) * (n / 10).max(1) % n.max(1);
                let mut f = vec![0u8; 1514];
                f[12] = 0x08;
                f[14] = 0x45;
                f[16..18].copy_from_slice(&1500u16.to_be_bytes());
                f[22] = 64;
                f[23] = 6;
                let b = |x: usize| u8::try_from(x % 256).unwrap_or(0);
                f[26..30].copy_from_slice(&[10, b(t / 256), b(t), 7]);
                f[30..34].copy_from_slice(&[198, 51, 100, 2]);
                f[34..36].copy_from_slice(&(40_000 + u16::try_from(i).unwrap_or(0)).to_be_bytes());
                f[36..38].copy_from_slice(&5201u16.to_be_bytes());
                f[46] = 5 << 4;
                f
            })
            .collect();
        Ok(Micro {
            classifier: shaper::classify::Classifier::from_config(&cfg),
            shaping: cfg.shaped_tenants().map(|(_, s)| s).collect(),
            frames,
        })
    }

    /// A scheduler for these tenants.
    pub fn scheduler(&self) -> shaper::sched::Scheduler<usize> {
        shaper::sched::Scheduler::new(&self.shaping, 0)
    }

    /// Classifies and queues every frame at `now`, then releases what may leave; returns the
    /// frames released.
    pub fn round(&self, sched: &mut shaper::sched::Scheduler<usize>, now: u64) -> u64 {
        use shaper::classify::Verdict;
        let vnet = shaper::vnet::VnetHdr::default();
        for (i, f) in self.frames.iter().enumerate() {
            let (v, flow) = self
                .classifier
                .classify_flow(&vnet, std::hint::black_box(f));
            if let Verdict::Tenant { tenant, cost } = v {
                let _ = sched.enqueue(tenant, i, cost, flow, now);
            }
        }
        let mut released = 0;
        while let Some(x) = sched.dequeue(now) {
            std::hint::black_box(x);
            released += 1;
        }
        released
    }
}

/// Million frames per second through classify + enqueue + dequeue with `n` configured
/// tenants ([`Micro`]): the best of five 200-ms rounds on this thread.
pub fn micro_mpps(n: usize) -> f64 {
    let Ok(m) = Micro::new(n) else {
        return f64::NAN;
    };
    let mut sched = m.scheduler();
    let mut best = 0.0f64;
    let mut now = 0u64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut done = 0u64;
        while t0.elapsed() < Duration::from_millis(200) {
            now += 1_000_000;
            done += m.round(&mut sched, now);
        }
        best = best.max(done as f64 / t0.elapsed().as_secs_f64() / 1e6);
    }
    best
}

/// Where results go by default.
pub fn results_dir() -> PathBuf {
    PathBuf::from("bench/results")
}

#[cfg(test)]
mod tests {
    use super::first_3s_peak;

    #[test]
    fn the_delivered_peak_starts_with_the_first_bytes_and_lasts_three_seconds() {
        // idle, then 1 Mbit/s (12,500 B per 100 ms) with one 25,000-byte sample at 1 s and one
        // 50,000-byte sample after the 3 s have passed
        let mut lines = vec!["1000000000 500".to_string(), "1100000000 500".to_string()];
        let mut bytes = 500u64;
        for i in 1..=40u64 {
            bytes += match i {
                10 => 25_000,
                35 => 50_000,
                _ => 12_500,
            };
            lines.push(format!("{} {bytes}", 1_100_000_000 + i * 100_000_000));
        }
        let peak = first_3s_peak(&lines.join("\n"));
        assert!((peak - 2.0).abs() < 1e-9, "{peak}");
        assert_eq!(first_3s_peak("1 10\n2 10\nnot a sample\n"), 0.0);
        assert_eq!(first_3s_peak(""), 0.0);
    }
}
