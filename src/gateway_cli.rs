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
    print_counts(changes.iter().map(Change::sign));
}

fn print_counts(signs: impl Iterator<Item = char>) {
    let (mut add, mut change, mut delete) = (0, 0, 0);
    for s in signs {
        match s {
            '+' => add += 1,
            '-' => delete += 1,
            _ => change += 1,
        }
    }
    println!("{add} to create, {change} to change, {delete} to delete");
}

/// The plan of every namespace: the gateway's own changes as they are, a shard's prefixed by
/// its namespace, a shard to make or remove as one line.
fn print_plan(p: &gateway::Prepared) {
    let mut signs = Vec::new();
    for c in &p.front.changes {
        println!("  {c}");
        signs.push(c.sign());
    }
    for s in &p.shards {
        if !s.exists {
            println!("  + netns {} (shard {})", s.netns, s.index);
            signs.push('+');
        }
        for c in &s.plan.changes {
            println!("  [{}] {c}", s.netns);
            signs.push(c.sign());
        }
    }
    for n in &p.stale_shards {
        let c = Change::DeleteShard { netns: n.clone() };
        println!("  {c}");
        signs.push(c.sign());
    }
    print_counts(signs.into_iter());
}

/// The policy rules of every namespace of the plan.
fn rule_count(p: &gateway::Prepared) -> usize {
    p.front.desired.rules.len()
        + p.shards
            .iter()
            .map(|s| s.plan.desired.rules.len())
            .sum::<usize>()
}

pub fn plan(path: &Path, ruleset: bool) -> anyhow::Result<Outcome> {
    let config = load(path)?;
    let p = gateway::prepare(&config)?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let outcome = if p.change_count() == 0 {
        println!("no changes: the kernel matches {}", path.display());
        Outcome::Done
    } else {
        print_plan(&p);
        Outcome::ChangesPending
    };
    println!("{}", gateway::desired::rule_cost(rule_count(&p)));
    if ruleset {
        println!("\n{}", p.front.desired.ruleset);
        for s in &p.shards {
            println!(
                "# shard {} (netns {})\n{}",
                s.index, s.netns, s.plan.desired.ruleset
            );
        }
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
    if p.change_count() == 0 {
        println!("no changes: the kernel matches {}", path.display());
        return Ok(());
    }
    print_plan(&p);
    gateway::apply(&config, &p)?;
    println!("applied {} change(s)", p.change_count());
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
        match &t.shard {
            Some(ns) => println!("tenant {} (id {}, shard netns {ns})", t.name, t.id),
            None => println!("tenant {} (id {})", t.name, t.id),
        }
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
