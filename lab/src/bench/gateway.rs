//! The gateway benchmark: what forwarding through a tollgate gateway costs as the number of
//! configured tenants grows, for a tenant's EIP and for the operator's own traffic.
//!
//! Each point is a fresh [`GatewayLab`]: `tollgate apply` of the lab's two tenants, preceded
//! by filler tenants up to the point's count (only the first tenant, user1, for a count of 1),
//! then from the client namespace:
//! - **EIP**: to user1's EIP 203.0.113.11 (DNAT to 10.0.0.7 in tenant namespace `t1`, through
//!   the tenant's firewall and tunnel);
//! - **operator**: to 172.31.0.99, a host on the underlay switch, forwarded by the gateway in
//!   its main table (not a tenant's: every policy rule is walked before `main`).
//!
//! - **newest EIP** (from 2 tenants on): to user2's EIP 203.0.113.12 (t2), the tenant applied
//!   last. The kernel keeps devices in 256 lists by interface index, newest first, and looks a
//!   tenant's devices up by index several times per packet: user1, grown from the first
//!   point, is the oldest tenant and sits at the end of its lists; user2 at their head (apply
//!   makes devices in the order of their names, and the fillers' ids sort between the two:
//!   see `with_filler_tenants`).
//!
//! For each: one TCP stream (iperf3, receiver's goodput), 64-byte UDP sent as fast as iperf3
//! can (packets/s the receiver got) and ping (100 at 10 ms, average RTT). With table
//! isolation every tenant adds a policy rule; with VRFs none (their count is reported).
//!
//! Under emulation one measurement repeats poorly (the first also pays for translating the
//! guest's code), so a plan can instead *grow* one lab: every count is applied on top of the
//! previous one (apply is idempotent and only adds the new tenants), a warm-up measurement is
//! taken and discarded first, and each point is measured `reps` times and reported as the
//! median, with every repetition kept.
//!
//! Every point waits for the machine to go quiet after its apply (see [`settle`]) and records
//! how long that took: thousands of new devices keep kernel workers busy after `apply`
//! returns, longest under emulation.

use super::settle::{Settled, settle};
use crate::{GatewayLab, Netns, Proc, iperf3_server, wait_iperf3_idle, with_filler_tenants};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// One path's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PathFigures {
    pub tcp_bps: f64,
    pub udp64_pps: f64,
    pub ping_avg_ms: f64,
}

/// One configuration measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub tenants: u32,
    pub tunnel: String,
    pub tunnel_mode: String,
    pub isolation: String,
    pub offload: String,
    /// The shards the tenants were spread over (0: none).
    #[serde(default)]
    pub shards: u32,
    pub policy_rules: usize,
    pub apply_s: f64,
    /// None when the point was not destroyed by tollgate.
    pub destroy_s: Option<f64>,
    /// The wait for the machine to go quiet after the apply, before measuring.
    #[serde(default)]
    pub settled: Option<Settled>,
    /// Medians over the repetitions.
    pub eip: PathFigures,
    pub operator: PathFigures,
    /// The newest tenant's EIP (None for one tenant).
    #[serde(default)]
    pub newest: Option<PathFigures>,
    /// Every repetition, in order (one when the plan asks for one).
    #[serde(default)]
    pub eip_runs: Vec<PathFigures>,
    #[serde(default)]
    pub operator_runs: Vec<PathFigures>,
    #[serde(default)]
    pub newest_runs: Vec<PathFigures>,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub tunnel: String,
    pub tunnel_mode: String,
    pub isolation: String,
    pub offloads: Vec<String>,
    pub tenants: Vec<u32>,
    /// Seconds per iperf3 run.
    pub secs: u32,
    /// `tollgate destroy` after each point (and time it); otherwise the lab's namespaces are
    /// simply deleted (under emulation, destroying 30,000 devices one by one takes long).
    pub destroy: bool,
    /// Measurements per point (the point reports their median).
    pub reps: u32,
    /// One lab for every count, grown in order, after a discarded warm-up measurement;
    /// otherwise a fresh lab per point.
    pub grow: bool,
    /// Side by side only: a shell script run in the second lab's gateway namespace after its
    /// apply (`bench/ballast/`): one of the kernel objects 10,000 tenants make, alone, so
    /// that two labs of one tenant each measure what that object costs.
    pub ballast: Option<std::path::PathBuf>,
    /// Tenants spread over this many shards (0: none, all in the gateway's namespace).
    pub shards: u32,
}

const EIP: &str = "203.0.113.11";
const NEWEST_EIP: &str = "203.0.113.12";
const OPERATOR_HOST: &str = "172.31.0.99";
const PORT: u16 = 5201;
/// Quiet means under 5 % busy over 5 s; a machine that never gets there is measured after
/// 30 minutes anyway, and the report says how busy it was.
const SETTLE_WINDOW: Duration = Duration::from_secs(5);
const SETTLE_BUSY: f64 = 0.05;
const SETTLE_MAX: Duration = Duration::from_secs(1800);

/// The lab's config for `n` tenants: user1 alone for 1, else fillers before the lab's two.
/// user1 and user2 let the benchmark's port in.
pub fn config(plan: &Plan, offload: &str, n: u32, state: &Path, shard_prefix: &str) -> String {
    let base = crate::gateway_config(
        &plan.tunnel,
        &plan.tunnel_mode,
        &plan.isolation,
        offload,
        Some(state),
    )
    .replace(
        "allow_in = [\"tcp/22\", \"icmp\"]",
        &format!("allow_in = [\"tcp/22\", \"icmp\", \"tcp/{PORT}\", \"udp/{PORT}\"]"),
    )
    .replace(
        "allow_in = [\"tcp/23\", \"icmp\"]",
        &format!("allow_in = [\"tcp/23\", \"icmp\", \"tcp/{PORT}\", \"udp/{PORT}\"]"),
    );
    let base = if plan.shards > 0 {
        tollgate::config::examples::with_shards(&base, plan.shards, shard_prefix)
    } else {
        base
    };
    if n <= 1 {
        let first = base.find("[[tenant]]").unwrap_or(0);
        let second = base[first + 1..]
            .find("[[tenant]]")
            .map(|i| first + 1 + i)
            .unwrap_or(base.len());
        return base[..second].to_string();
    }
    with_filler_tenants(&base, n.saturating_sub(2))
}

/// Measures every point of `plan`, `log` told of each step and `done` given each point as soon
/// as it is measured (a long run that is cut short keeps what it measured).
pub fn run(
    plan: &Plan,
    tollgate: &Path,
    log: impl Fn(&str),
    mut done: impl FnMut(&Point),
) -> Result<Vec<Point>> {
    let mut out = Vec::new();
    for offload in &plan.offloads {
        let mut grown: Option<GatewayLab> = None;
        for (i, &n) in plan.tenants.iter().enumerate() {
            log(&heading(plan, offload, n));
            let fresh;
            let lab = match (&grown, plan.grow) {
                (Some(lab), true) => lab,
                (None, true) => grown.insert(bench_lab(&plan.tunnel)?),
                _ => {
                    fresh = bench_lab(&plan.tunnel)?;
                    &fresh
                }
            };
            let p = point(plan, lab, offload, n, tollgate, plan.grow && i == 0, &log)
                .with_context(|| format!("{n} tenants, offload {offload}"))?;
            log(&format!(
                "  apply {:.1} s, {} policy rules; EIP {:.2} Gbit/s, {:.0} pps, {:.3} ms; operator {:.2} Gbit/s, {:.0} pps, {:.3} ms (medians of {})",
                p.apply_s,
                p.policy_rules,
                p.eip.tcp_bps / 1e9,
                p.eip.udp64_pps,
                p.eip.ping_avg_ms,
                p.operator.tcp_bps / 1e9,
                p.operator.udp64_pps,
                p.operator.ping_avg_ms,
                p.eip_runs.len()
            ));
            if let Some(f) = &p.newest {
                log(&format!(
                    "  newest tenant's EIP {:.2} Gbit/s, {:.0} pps, {:.3} ms",
                    f.tcp_bps / 1e9,
                    f.udp64_pps,
                    f.ping_avg_ms
                ));
            }
            done(&p);
            out.push(p);
        }
    }
    Ok(out)
}

/// What a point is: "gretap/external/vrf offload=off: 10000 tenant(s)".
fn heading(plan: &Plan, offload: &str, n: u32) -> String {
    format!(
        "{}/{}/{} offload={offload}{}: {n} tenant(s)",
        plan.tunnel,
        plan.tunnel_mode,
        plan.isolation,
        if plan.shards > 0 {
            format!(" shards={}", plan.shards)
        } else {
            String::new()
        }
    )
}

/// A gateway lab with the operator's host on the underlay, reached through the gateway's main
/// table (forwarding enabled by the operator).
fn bench_lab(tunnel: &str) -> Result<GatewayLab> {
    let lab = GatewayLab::new("gb", tunnel)?;
    lab.sw
        .ip(&["addr", "add", &format!("{OPERATOR_HOST}/24"), "dev", "br0"])?;
    lab.sw
        .ip(&["route", "add", "198.51.100.0/24", "via", "172.31.0.1"])?;
    lab.cl
        .ip(&["route", "add", "172.31.0.0/24", "via", "198.51.100.1"])?;
    // the operator's routing between its networks is the operator's to enable (tollgate sets
    // it only where tenants are routed: in a sharded gateway, in the shards)
    lab.gw.sysctl("net.ipv4.ip_forward", "1")?;
    Ok(lab)
}

/// Applies `n` tenants to `lab` and measures them `plan.reps` times (after one discarded
/// measurement when `warmup`).
fn point(
    plan: &Plan,
    lab: &GatewayLab,
    offload: &str,
    n: u32,
    tollgate: &Path,
    warmup: bool,
    log: &impl Fn(&str),
) -> Result<Point> {
    let applied = apply_count(plan, lab, offload, n, tollgate, log)?;
    let _servers = servers(lab, n)?;
    if warmup {
        log("  warm-up measurement (discarded)");
        // the EIP and the operator's path (a count of 1 leaves out the newest tenant's)
        measure_once(plan, lab, 1)?;
    }
    let mut runs = Runs::default();
    for _ in 0..plan.reps.max(1) {
        runs.push(measure_once(plan, lab, n)?);
    }
    finish(plan, lab, offload, applied, runs, tollgate)
}

/// Two counts in two labs side by side (`plan.tenants` = [a, b]), measured alternately (a, b,
/// a, b, ...) after a discarded warm-up of each: slow drift of the machine (under emulation,
/// from one quarter of an hour to the next) then touches both counts alike.
pub fn run_side_by_side(
    plan: &Plan,
    tollgate: &Path,
    log: impl Fn(&str),
    mut done: impl FnMut(&Point),
) -> Result<Vec<Point>> {
    let &[a, b] = plan.tenants.as_slice() else {
        bail!(
            "side by side takes two tenant counts, not {:?}",
            plan.tenants
        );
    };
    let mut out = Vec::new();
    for offload in &plan.offloads {
        let labs = [bench_lab(&plan.tunnel)?, bench_lab(&plan.tunnel)?];
        let mut applied = Vec::new();
        for (lab, n) in labs.iter().zip([a, b]) {
            log(&format!("{}, side by side", heading(plan, offload, n)));
            applied.push(apply_count(plan, lab, offload, n, tollgate, &log)?);
        }
        if let Some(script) = &plan.ballast {
            add_ballast(&labs[1], script, &log)?;
        }
        let _servers = (servers(&labs[0], a)?, servers(&labs[1], b)?);
        log("  warm-up measurements (discarded)");
        for (lab, n) in labs.iter().zip([a, b]) {
            measure_once(plan, lab, n)?;
        }
        let mut runs = [Runs::default(), Runs::default()];
        for rep in 0..plan.reps.max(1) {
            for (i, (lab, n)) in labs.iter().zip([a, b]).enumerate() {
                let m = measure_once(plan, lab, n)?;
                log(&format!(
                    "  round {}: {n} tenant(s): EIP {:.3} Gbit/s, {:.0} pps; operator {:.3} Gbit/s, {:.0} pps",
                    rep + 1,
                    m.0.tcp_bps / 1e9,
                    m.0.udp64_pps,
                    m.1.tcp_bps / 1e9,
                    m.1.udp64_pps
                ));
                runs[i].push(m);
            }
        }
        for ((lab, applied), runs) in labs.iter().zip(applied).zip(runs) {
            let p = finish(plan, lab, offload, applied, runs, tollgate)?;
            done(&p);
            out.push(p);
        }
    }
    Ok(out)
}

/// Runs `script` in `lab`'s gateway namespace and waits for a quiet machine.
fn add_ballast(lab: &GatewayLab, script: &Path, log: &impl Fn(&str)) -> Result<()> {
    let t = Instant::now();
    let o = lab.gw.command("sh").arg(script).output()?;
    if !o.status.success() {
        bail!(
            "ballast {}: {}",
            script.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let settled = settle(SETTLE_WINDOW, SETTLE_BUSY, SETTLE_MAX)?;
    log(&format!(
        "  ballast {} in the second lab: {:.0} s, settled in {:.0} s; {}",
        script.display(),
        t.elapsed().as_secs_f64(),
        settled.waited_s,
        String::from_utf8_lossy(&o.stdout).trim()
    ));
    Ok(())
}

/// A count applied to a lab, the machine quiet again.
struct Applied {
    n: u32,
    /// The config applied (what destroy is given).
    config: std::path::PathBuf,
    apply_s: f64,
    policy_rules: usize,
    settled: Settled,
}

/// The repetitions of one point.
#[derive(Default)]
struct Runs {
    eip: Vec<PathFigures>,
    operator: Vec<PathFigures>,
    newest: Vec<PathFigures>,
}

impl Runs {
    fn push(&mut self, (eip, operator, newest): Measured) {
        self.eip.push(eip);
        self.operator.push(operator);
        self.newest.extend(newest);
    }
}

/// Runs `tollgate` in the lab's gateway namespace, keeping this process's mounts (the shards
/// a sharded gateway pins must outlive the command).
fn in_gateway(lab: &GatewayLab, tollgate: &Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(lab.gw.command_shared_mounts(tollgate).args(args).output()?)
}

/// One measurement of each path: the EIP, the operator's, the newest tenant's EIP.
type Measured = (PathFigures, PathFigures, Option<PathFigures>);

/// Applies `n` tenants to `lab` (on top of what it has) and waits for a quiet machine.
fn apply_count(
    plan: &Plan,
    lab: &GatewayLab,
    offload: &str,
    n: u32,
    tollgate: &Path,
    log: &impl Fn(&str),
) -> Result<Applied> {
    let state = lab.dir.path().join("state");
    let cfg = lab.dir.path().join("bench.toml");
    std::fs::write(&cfg, config(plan, offload, n, &state, &lab.shard_prefix()))?;
    let c = cfg.to_str().context("utf-8 path")?;
    let t = Instant::now();
    let applied = in_gateway(lab, tollgate, &["apply", "-c", c])?;
    let apply_s = t.elapsed().as_secs_f64();
    if !applied.status.success() {
        bail!(
            "tollgate apply failed: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
    }
    let policy_rules = lab.gw.ip(&["rule", "show"])?.lines().count();
    // the kernel finishes with new devices after apply returns: measure the path, not that
    let settled = settle(SETTLE_WINDOW, SETTLE_BUSY, SETTLE_MAX)?;
    log(&format!(
        "  settled in {:.0} s ({:.0} % busy in the last {} s; busiest meanwhile: {})",
        settled.waited_s,
        settled.busy * 100.0,
        SETTLE_WINDOW.as_secs(),
        settled.busiest.join(", ")
    ));
    Ok(Applied {
        n,
        config: cfg,
        apply_s,
        policy_rules,
        settled,
    })
}

/// iperf3 servers for the paths measured with `n` tenants (user2's only from 2 on).
fn servers(lab: &GatewayLab, n: u32) -> Result<Vec<Proc>> {
    let dir = lab.dir.path();
    let mut s = vec![
        iperf3_server(&lab.t1, dir, PORT, None)?,
        iperf3_server(&lab.sw, dir, PORT, None)?,
    ];
    if n > 1 {
        s.push(iperf3_server(&lab.t2, dir, PORT, None)?);
    }
    Ok(s)
}

fn measure_once(plan: &Plan, lab: &GatewayLab, n: u32) -> Result<Measured> {
    let dir = lab.dir.path();
    let eip = figures(&lab.cl, &lab.t1, dir, EIP, plan.secs)?;
    let operator = figures(&lab.cl, &lab.sw, dir, OPERATOR_HOST, plan.secs)?;
    let newest = if n > 1 {
        Some(figures(&lab.cl, &lab.t2, dir, NEWEST_EIP, plan.secs)?)
    } else {
        None
    };
    Ok((eip, operator, newest))
}

/// Destroys the lab's gateway when the plan says so, and makes the point.
fn finish(
    plan: &Plan,
    lab: &GatewayLab,
    offload: &str,
    applied: Applied,
    runs: Runs,
    tollgate: &Path,
) -> Result<Point> {
    let mut destroy_s = None;
    if plan.destroy {
        let c = applied.config.to_str().context("utf-8 path")?;
        let t = Instant::now();
        let destroyed = in_gateway(lab, tollgate, &["destroy", "-c", c])?;
        if !destroyed.status.success() {
            bail!(
                "tollgate destroy failed: {}",
                String::from_utf8_lossy(&destroyed.stderr)
            );
        }
        destroy_s = Some(t.elapsed().as_secs_f64());
    }
    Ok(Point {
        tenants: applied.n,
        tunnel: plan.tunnel.clone(),
        tunnel_mode: plan.tunnel_mode.clone(),
        isolation: plan.isolation.clone(),
        offload: offload.to_string(),
        shards: plan.shards,
        policy_rules: applied.policy_rules,
        apply_s: applied.apply_s,
        destroy_s,
        settled: Some(applied.settled),
        eip: median(&runs.eip),
        operator: median(&runs.operator),
        newest: (!runs.newest.is_empty()).then(|| median(&runs.newest)),
        eip_runs: runs.eip,
        operator_runs: runs.operator,
        newest_runs: runs.newest,
    })
}

/// Each figure's median over `runs` (the mean of the middle two for an even count).
fn median(runs: &[PathFigures]) -> PathFigures {
    let m = |f: fn(&PathFigures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    PathFigures {
        tcp_bps: m(|p| p.tcp_bps),
        udp64_pps: m(|p| p.udp64_pps),
        ping_avg_ms: m(|p| p.ping_avg_ms),
    }
}

/// TCP goodput, 64-byte UDP packets/s and ping from `ns` to `dst` (iperf3 server on PORT).
fn figures(ns: &Netns, server: &Netns, dir: &Path, dst: &str, secs: u32) -> Result<PathFigures> {
    let tcp = iperf3(ns, server, dir, dst, secs, &[])?;
    let tcp_bps = tcp
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|x| x.as_f64())
        .context("iperf3 TCP report lacks end.sum_received")?;
    let udp = iperf3(ns, server, dir, dst, secs, &["-u", "-l", "64", "-b", "0"])?;
    let sum = udp
        .pointer("/end/sum")
        .context("iperf3 UDP report lacks end.sum")?;
    let f = |k: &str| sum.get(k).and_then(|x| x.as_f64());
    let (packets, lost, seconds) = (
        f("packets").context("packets")?,
        f("lost_packets").unwrap_or(0.0),
        f("seconds").context("seconds")?,
    );
    let udp64_pps = if seconds > 0.0 {
        (packets - lost).max(0.0) / seconds
    } else {
        0.0
    };
    let ping = ns
        .command("ping")
        .args(["-n", "-q", "-c", "100", "-i", "0.01", "-W", "2", dst])
        .output()?;
    let text = String::from_utf8_lossy(&ping.stdout);
    let ping_avg_ms = text
        .lines()
        .find_map(|l| l.split(" = ").nth(1)?.split('/').nth(1)?.parse().ok())
        .with_context(|| format!("ping {dst}: {text}"))?;
    Ok(PathFigures {
        tcp_bps,
        udp64_pps,
        ping_avg_ms,
    })
}

/// One iperf3 client run from `ns` to `dst` (served in `server`) with `extra` arguments; its
/// JSON report.
fn iperf3(
    ns: &Netns,
    server: &Netns,
    dir: &Path,
    dst: &str,
    secs: u32,
    extra: &[&str],
) -> Result<serde_json::Value> {
    wait_iperf3_idle(server, PORT);
    let mut c = ns.command("iperf3");
    c.args([
        "-c",
        dst,
        "-p",
        &PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ])
    .args(extra);
    let log = dir.join(format!("gw-iperf3-{dst}-{}.json", extra.len()));
    let mut p = Proc::spawn(c, &log)?;
    if p.wait_timeout(Duration::from_secs(u64::from(secs) + 30))?
        .is_none()
    {
        bail!("iperf3 to {dst} did not finish");
    }
    let text = p.log_text();
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("iperf3 report: {text:.300}"))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3 to {dst}: {e}");
    }
    Ok(v)
}

/// The points as a markdown table.
pub fn table(points: &[Point]) -> String {
    let mut s = String::from(
        "| tenants | isolation | offload | policy rules | apply s | EIP TCP Gbit/s | EIP 64 B kpps | EIP ping ms | operator TCP Gbit/s | operator 64 B kpps | operator ping ms | newest EIP TCP Gbit/s | newest EIP 64 B kpps |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.3} | {:.2} | {:.1} | {:.3} | {} | {} |\n",
            p.tenants,
            p.isolation,
            p.offload,
            p.policy_rules,
            p.apply_s,
            p.eip.tcp_bps / 1e9,
            p.eip.udp64_pps / 1e3,
            p.eip.ping_avg_ms,
            p.operator.tcp_bps / 1e9,
            p.operator.udp64_pps / 1e3,
            p.operator.ping_avg_ms,
            p.newest
                .as_ref()
                .map_or("-".into(), |f| format!("{:.2}", f.tcp_bps / 1e9)),
            p.newest
                .as_ref()
                .map_or("-".into(), |f| format!("{:.1}", f.udp64_pps / 1e3)),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            tunnel: "vxlan".into(),
            tunnel_mode: "external".into(),
            isolation: "table".into(),
            offloads: vec!["off".into()],
            tenants: vec![1, 1000],
            secs: 1,
            destroy: true,
            reps: 1,
            grow: false,
            ballast: None,
            shards: 0,
        }
    }

    #[test]
    fn side_by_side_takes_two_counts() {
        let mut p = plan();
        p.tenants = vec![1, 1000, 10000];
        let e = run_side_by_side(&p, Path::new("/nonexistent"), |_| {}, |_| {})
            .expect_err("three counts");
        assert!(e.to_string().contains("two tenant counts"), "{e}");
    }

    #[test]
    fn median_takes_the_middle_of_each_figure() {
        let f = |t: f64, u: f64, p: f64| PathFigures {
            tcp_bps: t,
            udp64_pps: u,
            ping_avg_ms: p,
        };
        let m = median(&[f(3.0, 10.0, 0.5), f(1.0, 30.0, 0.1), f(2.0, 20.0, 0.9)]);
        assert_eq!((m.tcp_bps, m.udp64_pps, m.ping_avg_ms), (2.0, 20.0, 0.5));
        let even = median(&[f(1.0, 1.0, 1.0), f(4.0, 2.0, 3.0)]);
        assert_eq!(even.tcp_bps, 2.5);
        assert_eq!(median(&[]).tcp_bps, 0.0);
    }

    #[test]
    fn one_tenant_is_user1_alone_and_more_end_with_the_labs_two() {
        let p = plan();
        let one = config(&p, "off", 1, Path::new("/s"), "x");
        assert_eq!(one.matches("[[tenant]]").count(), 1, "{one}");
        assert!(one.contains("name = \"user1\"") && one.contains("tcp/5201"));
        let many = config(&p, "off", 1000, Path::new("/s"), "x");
        assert_eq!(many.matches("[[tenant]]").count(), 1000);
        // user1 and user2 (the newest, measured too) let the benchmark's port in
        assert_eq!(
            many.matches("\"tcp/5201\", \"udp/5201\"").count(),
            2,
            "{many:.200}"
        );
        assert!(
            many.trim_end().ends_with("deny_out = [\"tcp/23\"]"),
            "{many:.200}"
        );
        let parsed = tollgate::config::Config::parse(&many, Path::new("t")).expect("parses");
        assert_eq!(parsed.gateway_tenants().count(), 1000);
    }

    #[test]
    fn sharded_configs_name_their_shards_and_shape_nothing() {
        let p = Plan {
            tunnel: "gretap".into(),
            isolation: "vrf".into(),
            shards: 40,
            ..plan()
        };
        for n in [1, 1000] {
            let text = config(&p, "off", n, Path::new("/s"), "gbs");
            let parsed = tollgate::config::Config::parse(&text, Path::new("t")).expect("parses");
            let gw = parsed.gateway.as_ref().expect("gateway");
            let sh = gw.sharding().expect("shards");
            assert_eq!((sh.count, sh.prefix.as_str()), (40, "gbs"));
            assert_eq!(parsed.shaped_tenants().count(), 0);
        }
    }
}
