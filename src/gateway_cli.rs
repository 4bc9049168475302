//! `tollgate plan | apply | show | destroy`: the gateway commands' output.

use crate::Outcome;
use std::path::Path;
use tollgate::config::Config;
use tollgate::gateway::{self, plan::Change};
use tollgate::kernel::device_exists;

fn load(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    anyhow::ensure!(
        config.gateway.is_some(),
        "{}: no [gateway] section",
        path.display()
    );
    config.check_devices(device_exists)?;
    Ok(config)
}

fn print_changes(changes: &[Change]) {
    for c in changes {
        println!("  {c}");
    }
    let count = |s: char| changes.iter().filter(|c| c.sign() == s).count();
    println!(
        "{} to create, {} to change, {} to delete",
        count('+'),
        count('~'),
        count('-')
    );
}

pub fn plan(path: &Path, ruleset: bool) -> anyhow::Result<Outcome> {
    let config = load(path)?;
    let p = gateway::prepare(&config)?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let outcome = if p.changes.is_empty() {
        println!("no changes: the kernel matches {}", path.display());
        Outcome::Done
    } else {
        print_changes(&p.changes);
        Outcome::ChangesPending
    };
    println!("{}", gateway::desired::rule_cost(&p.desired));
    if ruleset {
        println!("\n{}", p.desired.ruleset);
    }
    Ok(outcome)
}

pub fn apply(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let _lock = gateway::lock()?;
    let p = gateway::prepare(&config)?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    if p.changes.is_empty() {
        println!("no changes: the kernel matches {}", path.display());
        return Ok(());
    }
    print_changes(&p.changes);
    gateway::apply(&config, &p)?;
    println!("applied {} change(s)", p.changes.len());
    Ok(())
}

pub fn destroy(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let _lock = gateway::lock()?;
    let changes = gateway::plan_destroy(&config)?;
    if changes.is_empty() {
        println!("nothing of tollgate's is left");
        return Ok(());
    }
    print_changes(&changes);
    gateway::destroy(&config, &changes)?;
    println!("destroyed");
    Ok(())
}

pub fn show(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    let r = gateway::show(&config)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    for t in &r.tenants {
        println!("tenant {} (id {})", t.name, t.id);
        println!(
            "  devices: {}",
            if t.devices.is_empty() {
                "-".into()
            } else {
                t.devices.join(", ")
            }
        );
        for e in &t.eips {
            println!("  eip {e}");
        }
        if let Some(u) = &t.upload {
            let rate = tollgate::config::units::format_rate(u.rate_bits_per_sec / 8);
            match &u.shaped_by {
                Some(s) => println!(
                    "  upload {rate}: shaped by tollgate-shaper{} on {}",
                    s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    s.tap
                ),
                None => println!("  upload {rate}: NOT shaped (no tollgate-shaper serves it)"),
            }
        }
        for rt in &t.routes {
            println!("  {rt}");
        }
        for f in &t.firewall {
            println!(
                "  fw {:<14} {:<40} {:>8} pkts {:>10} bytes",
                f.chain, f.rule, f.packets, f.bytes
            );
        }
    }
    let o = &r.offload;
    println!(
        "offload: {}{}",
        if o.flowtable {
            format!("flowtable on {}", o.devices.join(", "))
        } else {
            "off".into()
        },
        o.offloaded_flows
            .map(|n| format!(", {n} flow(s) offloaded"))
            .unwrap_or_default()
    );
    println!(
        "ruleset: {}",
        match &r.ruleset {
            None => "absent".to_string(),
            Some(d) if d.is_empty() => "present, not made by tollgate (no marker)".to_string(),
            Some(d) => format!("version {d}"),
        }
    );
    if r.pending_changes > 0 {
        println!(
            "{} change(s) pending: run `tollgate plan`",
            r.pending_changes
        );
    }
    Ok(())
}
