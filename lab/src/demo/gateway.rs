//! The demo's gateway part: builds the reference gateway topology in namespaces (client,
//! gateway, underlay switch, two tenants both at 10.0.0.7), lets `tollgate apply` build the
//! gateway from the example config, proves the connectivity matrix, and destroys it again.
//!
//! The reference design needs VRF, gretap and a flowtable; on a kernel without them the demo
//! says so and uses the variant this kernel supports (vxlan, table isolation, no offload).

use crate::{GatewayLab, Proc, connect, serve};
use anyhow::{Context, bail};
use std::process::Command;
use std::time::Duration;
use tollgate::gateway::probe::{self, Feature};

fn tollgate(lab: &GatewayLab, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let exe = crate::sibling_binary("tollgate")?;
    let out = lab.gw.command(exe).args(args).output()?;
    // stdout first, then any warnings: a summary line stays the last line of stdout
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let text = if out.status.success() {
        stdout.into_owned()
    } else {
        format!("{stdout}{stderr}")
    };
    Ok((out.status.code().unwrap_or(-1), text))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

pub fn run() -> anyhow::Result<()> {
    if let Some(why) = crate::missing_prerequisites() {
        bail!("the demo {why}");
    }
    let wanted = [
        Feature::Vrf,
        Feature::VrfEntry,
        Feature::Gretap,
        Feature::Lwtunnel,
        Feature::PolicyRules,
        Feature::Flowtable,
    ];
    let missing: Vec<Feature> = probe::missing(&wanted)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    println!(
        "kernel {}:",
        String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout).trim()
    );
    for f in wanted {
        let state = if missing.contains(&f) {
            "missing"
        } else {
            "yes"
        };
        println!("  {state:<7} {:<44} {}", f.name(), f.config_options());
    }
    let has = |f| !missing.contains(&f);
    let tunnel = if has(Feature::Gretap) {
        "gretap"
    } else {
        "vxlan"
    };
    let isolation = if has(Feature::Vrf) && has(Feature::VrfEntry) {
        "vrf"
    } else {
        "table"
    };
    let mode = if has(Feature::Lwtunnel) && has(Feature::PolicyRules) {
        "external"
    } else {
        "per-tenant"
    };
    println!(
        "variant: tunnel = {tunnel:?}, tunnel_mode = {mode:?}, isolation = {isolation:?}, offload = \"auto\"\n"
    );

    let lab = GatewayLab::new("demog", tunnel).context("building the demo namespaces")?;
    let cfg = lab.dir.path().join("tollgate.toml");
    let state = lab.dir.path().join("state");
    let text = crate::shaped_gateway_config(tunnel, mode, isolation, "auto", &state);
    std::fs::write(&cfg, text)?;
    let c = cfg.to_str().context("config path is not UTF-8")?;
    let before = lab.gw.snapshot()?;

    let (code, out) = tollgate(&lab, &["plan", "-c", c])?;
    println!(
        "$ tollgate plan   (in namespace {}, exit {code})\n{}",
        lab.gw.name(),
        indent(&out)
    );
    let (code, out) = tollgate(&lab, &["apply", "-c", c])?;
    if code != 0 {
        bail!("tollgate apply failed:\n{out}");
    }
    println!("$ tollgate apply\n    {}", out.lines().last().unwrap_or(""));
    let (_, out) = tollgate(&lab, &["apply", "-c", c])?;
    println!(
        "$ tollgate apply   (again)\n    {}\n",
        out.lines().last().unwrap_or("")
    );

    let (cl, t1, t2) = (lab.cl.name(), lab.t1.name(), lab.t2.name());
    let _servers = [
        serve(t1, 22, "t1:22")?,
        serve(t1, 23, "t1:23")?,
        serve(t2, 22, "t2:22")?,
        serve(t2, 23, "t2:23")?,
        serve(cl, 22, "cl:22")?,
        serve(cl, 23, "cl:23")?,
        serve(cl, 80, "cl:80")?,
    ];
    let checks: [(&str, &str, &str, u16, Option<&str>); 8] = [
        (
            "cl",
            cl,
            "203.0.113.11",
            22,
            Some("t1:22 from 198.51.100.7"),
        ),
        (
            "cl",
            cl,
            "203.0.113.12",
            23,
            Some("t2:23 from 198.51.100.7"),
        ),
        ("cl", cl, "203.0.113.11", 23, None),
        ("cl", cl, "203.0.113.12", 22, None),
        (
            "t1",
            t1,
            "198.51.100.7",
            80,
            Some("cl:80 from 203.0.113.11"),
        ),
        (
            "t2",
            t2,
            "198.51.100.7",
            80,
            Some("cl:80 from 203.0.113.12"),
        ),
        ("t1", t1, "198.51.100.7", 22, None),
        ("t2", t2, "198.51.100.7", 23, None),
    ];
    println!(
        "{:<4} {:<20} {:<26} {:<26} ok",
        "from", "to", "expected", "got"
    );
    let mut all = true;
    for (who, ns, addr, port, want) in checks {
        let got = connect(ns, addr, port);
        let pass = match (want, &got) {
            (Some(w), Ok(g)) => w == g,
            (None, Err(_)) => true,
            _ => false,
        };
        all &= pass;
        println!(
            "{who:<4} {:<20} {:<26} {:<26} {}",
            format!("{addr}:{port}"),
            want.unwrap_or("refused/blocked"),
            match &got {
                Ok(g) => g.clone(),
                Err(e) => e.chars().take(26).collect(),
            },
            if pass { "yes" } else { "NO" }
        );
    }
    println!(
        "(both tenants are 10.0.0.7: the banners show each EIP reaches its own tenant, and each\n tenant leaves with its own EIP as source)\n"
    );

    let shaper = shaped_uploads(&lab, &cfg, isolation)?;
    all &= shaper.1;

    let (_, out) = tollgate(&lab, &["show", "-c", c])?;
    println!(
        "$ tollgate show   (while tollgate-shaper runs)\n{}",
        indent(&out)
    );
    let mut shaper = shaper.0;
    shaper.signal(libc::SIGTERM);
    shaper.wait_timeout(Duration::from_secs(10))?;
    let (code, out) = tollgate(&lab, &["destroy", "-c", c])?;
    if code != 0 {
        bail!("tollgate destroy failed:\n{out}");
    }
    let restored = before == lab.gw.snapshot()?;
    println!(
        "$ tollgate destroy\n    {}",
        out.lines().last().unwrap_or("")
    );
    println!(
        "gateway namespace after destroy: {}",
        if restored {
            "identical to before apply (links, routes, rules, ruleset, sysctls)"
        } else {
            "DIFFERENT"
        }
    );
    if !all || !restored {
        bail!("the gateway demo did not behave as expected");
    }
    Ok(())
}

/// Goodput band a shaped tenant must land in (rates count IP bytes, iperf3 reports TCP payload).
const BAND: (f64, f64) = (0.93, 1.02);

/// Runs `tollgate-shaper` on the same file and lets both tenants (both 10.0.0.7) upload to
/// the gateway's address at once; prints configured vs achieved. Returns the running shaper
/// and whether both landed in the band.
fn shaped_uploads(
    lab: &GatewayLab,
    cfg: &std::path::Path,
    isolation: &str,
) -> anyhow::Result<(Proc, bool)> {
    let mut cmd = lab.gw.command(crate::sibling_binary("tollgate-shaper")?);
    cmd.arg("--config").arg(cfg).env("RUST_LOG", "warn");
    let shaper = Proc::spawn(cmd, &lab.dir.path().join("shaper.log"))?;
    let up = crate::wait_until(Duration::from_secs(10), || {
        lab.gw
            .ip(&["link", "show", "tgs2000"])
            .is_ok_and(|o| o.contains("UP"))
    });
    if !up {
        bail!("tollgate-shaper did not start:\n{}", shaper.log_text());
    }
    std::thread::sleep(Duration::from_millis(500));
    // with VRFs each tenant's service listens in its own VRF on the same port; without, two ports
    let (p1, p2, d1, d2) = if isolation == "vrf" {
        (5201, 5201, Some("tgv1000"), Some("tgv2000"))
    } else {
        (5201, 5202, None, None)
    };
    let _s1 = crate::iperf3_server(&lab.gw, lab.dir.path(), p1, d1)?;
    let _s2 = crate::iperf3_server(&lab.gw, lab.dir.path(), p2, d2)?;
    let secs = 8;
    println!(
        "$ tollgate-shaper -c tollgate.toml   (same file; [shaper] holds only tap = \"tg0\")\n    user1 and user2 (both 10.0.0.7) upload to 10.0.0.1 at once for {secs} s..."
    );
    let u1 = crate::iperf3_client(&lab.t1, lab.dir.path(), None, "10.0.0.1", p1, secs)?;
    let u2 = crate::iperf3_client(&lab.t2, lab.dir.path(), None, "10.0.0.1", p2, secs)?;
    let timeout = Duration::from_secs(u64::from(secs) + 20);
    let r1 = crate::finish_upload(u1, timeout)?.received_bps;
    let r2 = crate::finish_upload(u2, timeout)?.received_bps;
    println!(
        "    {:<8} {:>12} {:>14} {:>7}",
        "tenant", "configured", "achieved", "ratio"
    );
    let mut ok = true;
    for (name, rate, got) in [("user1", 20e6, r1), ("user2", 50e6, r2)] {
        let ratio = got / rate;
        let inside = (BAND.0..=BAND.1).contains(&ratio);
        ok &= inside;
        println!(
            "    {name:<8} {:>9.3}Mbit {:>11.3}Mbit {ratio:>7.3}{}",
            rate / 1e6,
            got / 1e6,
            if inside { "" } else { "  OUT OF BAND" }
        );
    }
    println!(
        "    (the ideal is 0.965: a rate counts whole IP packets, iperf3 reports TCP payload)\n"
    );
    Ok((shaper, ok))
}
