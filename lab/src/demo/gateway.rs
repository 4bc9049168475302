//! The demo's gateway part: builds the reference gateway topology in namespaces (client,
//! gateway, underlay switch, two tenants both at 10.0.0.7), lets `tollgate apply` build the
//! gateway from the example config, proves the connectivity matrix, and destroys it again.
//!
//! The reference design needs VRF, gretap and a flowtable; on a kernel without them the demo
//! says so and uses the variant this kernel supports (vxlan, table isolation, no offload).

use crate::{GatewayLab, connect, serve};
use anyhow::{Context, bail};
use std::process::Command;
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
        Feature::Gretap,
        Feature::Lwtunnel,
        Feature::TunIdRule,
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
    let isolation = if has(Feature::Vrf) { "vrf" } else { "table" };
    let mode = if has(Feature::Lwtunnel) && has(Feature::TunIdRule) {
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
    let text = crate::gateway_config(tunnel, mode, isolation, "auto", Some(&state));
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

    let (_, out) = tollgate(&lab, &["show", "-c", c])?;
    println!("$ tollgate show\n{}", indent(&out));
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
