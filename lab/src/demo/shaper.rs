//! The demo's shaper part: the whole shaper story in one command, inside namespaces it makes and
//! removes. A client uploads from two tenants' addresses at once (and then from an address of
//! no tenant) to iperf3 servers behind `tollgate-shaper`, and the configured rates are printed
//! next to what the receiver got.

use crate::{Proc, UploadLab, finish_upload};
use anyhow::{Context, bail};
use std::time::Duration;
use tollgate::config::{Config, units::format_rate};

/// The shaper example users read: the demo proves it works as written.
pub const DEMO_CONFIG: &str = tollgate::config::examples::SHAPER_EXAMPLE;

/// Goodput band a shaped tenant must land in (see docs/shaper.md for why not 1.0).
const BAND: (f64, f64) = (0.93, 1.02);

pub fn run(mode: Option<&str>, seconds: u32) -> anyhow::Result<()> {
    if let Some(why) = crate::missing_prerequisites() {
        bail!("the demo {why}");
    }
    let bin = crate::sibling_binary("tollgate-shaper")?;
    let mut text = DEMO_CONFIG.to_string();
    if let Some(m) = mode {
        text = text.replace("redirect = \"netdev\"", &format!("redirect = \"{m}\""));
    }
    let lab = UploadLab::new("demo", &[10, 20, 30]).context("building the demo namespaces")?;
    let path = lab.dir.path().join("tollgate.toml");
    std::fs::write(&path, &text)?;
    let config = Config::parse(&text, &path)?;
    let shaper_cfg = config.shaper.as_ref().context("demo config has [shaper]")?;
    println!(
        "namespaces: client {} (198.51.100.10 alpha, .20 beta, .30 no tenant) -> server {} (198.51.100.2, {})",
        lab.cl.name(),
        lab.srv.name(),
        shaper_cfg.interface.as_deref().unwrap_or("-")
    );
    println!(
        "shaper: {} redirect through TAP {}",
        format!("{:?}", shaper_cfg.redirect).to_lowercase(),
        shaper_cfg.tap
    );

    let mut cmd = lab.srv.command(&bin);
    cmd.arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn,shaper=info");
    let log = lab.dir.path().join("shaper.log");
    let mut shaper = Proc::spawn(cmd, &log)?;
    let up = crate::wait_until(Duration::from_secs(10), || {
        shaper.log_text().contains("shaping") || matches!(shaper.child.try_wait(), Ok(Some(_)))
    });
    if !up || !shaper.log_text().contains("shaping") {
        bail!("tollgate-shaper did not start:\n{}", shaper.log_text());
    }
    let _s1 = lab.iperf3_server(5201)?;
    let _s2 = lab.iperf3_server(5202)?;
    println!("uploading for {seconds} s from alpha and beta at once...");
    let a = lab.iperf3_upload(10, 5201, seconds)?;
    let b = lab.iperf3_upload(20, 5202, seconds)?;
    let timeout = Duration::from_secs(u64::from(seconds) + 20);
    let a = finish_upload(a, timeout)?;
    let b = finish_upload(b, timeout)?;
    println!("uploading for 3 s from 198.51.100.30 (no tenant)...");
    let o = finish_upload(lab.iperf3_upload(30, 5201, 3)?, Duration::from_secs(25))?;

    shaper.signal(libc::SIGTERM);
    let status = shaper.wait_timeout(Duration::from_secs(10))?;

    println!();
    println!(
        "{:<8} {:<36} {:>12} {:>16} {:>7}",
        "tenant", "sources", "configured", "achieved", "ratio"
    );
    let mut ok = true;
    for (t, up) in config.tenants.iter().zip([&a, &b]) {
        let rate = t.shaping.map(|s| s.rate).unwrap_or(0);
        let ratio = up.received_bps / (rate as f64 * 8.0);
        let inside = (BAND.0..=BAND.1).contains(&ratio);
        ok &= inside;
        let sources: Vec<String> = t.sources.iter().map(|s| s.to_string()).collect();
        println!(
            "{:<8} {:<36} {:>12} {:>11.3}Mbit {:>7.3}{}",
            t.name,
            sources.join(", "),
            format_rate(rate),
            up.received_bps / 1e6,
            ratio,
            if inside { "" } else { "  <- outside 0.93-1.02" }
        );
    }
    println!(
        "{:<8} {:<36} {:>12} {:>11.3}Mbit",
        "-",
        "198.51.100.30 (no tenant)",
        "unshaped",
        o.received_bps / 1e6
    );
    println!();
    println!(
        "achieved = iperf3 receiver goodput (TCP payload); a rate counts whole IP packets, so"
    );
    println!("the ideal goodput at MTU 1500 is 1448/1500 = 0.965x of the configured rate.");
    match status {
        Some(s) if s.success() => println!("shaper stopped cleanly; namespaces removed."),
        other => bail!(
            "tollgate-shaper did not stop cleanly ({other:?}):\n{}",
            shaper.log_text()
        ),
    }
    if !ok {
        bail!(
            "a tenant's goodput was outside {:.2}-{:.2}x of its rate",
            BAND.0,
            BAND.1
        );
    }
    Ok(())
}
