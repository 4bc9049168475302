//! `tollgate`: validate the config, and run the demo lab.

mod demo;
mod demo_gateway;
mod gateway_cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tollgate::config::{Config, units::format_rate};

#[derive(Parser)]
#[command(
    version,
    about = "Multi-tenant Linux gateway: control plane and ingress shaping"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a config file and print what it configures; exit 1 on any problem.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Do not check that the devices it names exist in this network namespace.
        #[arg(long)]
        offline: bool,
    },
    /// Print what `apply` would change; exit 0 when nothing, 2 when there are changes.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        /// Also print the nftables ruleset that apply would load.
        #[arg(long)]
        ruleset: bool,
    },
    /// Converge the kernel to the config (prints the plan first); a second apply changes nothing.
    Apply {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print each tenant's devices, routes, EIPs, firewall counters and offload state.
    Show {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove everything tollgate made (and nothing else); restore the sysctls it changed.
    Destroy {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Build labs in network namespaces: shape two tenants' uploads and print configured vs
    /// achieved rates; then build the gateway with `apply`, prove its connectivity matrix and
    /// destroy it. Cleans up after itself. Needs root, iperf3 and nft.
    Demo {
        /// Run only one part.
        #[arg(long, value_parser = ["shaper", "gateway"])]
        only: Option<String>,
        /// Redirect mode to demonstrate (default: the example config's, netdev).
        #[arg(long, value_parser = ["netdev", "route"])]
        mode: Option<String>,
        /// Length of the shaped uploads.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=600))]
        seconds: u32,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Cmd::Check { config, offline } => check(&config, offline),
        Cmd::Demo {
            only,
            mode,
            seconds,
        } => {
            let part = only.as_deref();
            let shaper = if part != Some("gateway") {
                println!("=== shaper: queued ingress shaping per tenant\n");
                demo::run(mode.as_deref(), seconds)
            } else {
                Ok(())
            };
            let gateway = if part != Some("shaper") {
                println!("\n=== gateway: declarative control plane\n");
                demo_gateway::run()
            } else {
                Ok(())
            };
            shaper.and(gateway)
        }
        Cmd::Plan { config, ruleset } => gateway_cli::plan(&config, ruleset),
        Cmd::Apply { config } => gateway_cli::apply(&config),
        Cmd::Show { config, json } => gateway_cli::show(&config, json),
        Cmd::Destroy { config } => gateway_cli::destroy(&config),
    };
    match result {
        Ok(()) if gateway_cli::changes_pending() => std::process::ExitCode::from(2),
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check(path: &PathBuf, offline: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::parse(&text, path)?;
    if !offline {
        config.check_devices(&text, device_exists)?;
    }
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    if let Some(s) = &config.shaper {
        println!(
            "shaper: interface {} tap {} redirect {:?}",
            s.interface, s.tap, s.redirect
        );
    }
    if let Some(g) = &config.gateway {
        println!(
            "gateway: public {} underlay {} ({}) tunnel {:?} mode {:?} isolation {:?} offload {:?}",
            g.public,
            g.underlay,
            g.underlay_address,
            g.tunnel,
            g.tunnel_mode,
            g.isolation,
            g.offload
        );
    }
    for (t, g) in config.gateway_tenants() {
        let eips: Vec<String> = g.eips.iter().map(|(p, q)| format!("{p}->{q}")).collect();
        println!(
            "tenant {}: id {} peer {} networks {} eips {}",
            t.name,
            g.id,
            g.peer,
            g.networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            eips.join(",")
        );
    }
    for t in config.tenants.iter().filter(|t| t.gateway.is_none()) {
        let sources: Vec<String> = t.sources.iter().map(|s| s.to_string()).collect();
        match t.shaping {
            Some(s) => println!(
                "tenant {}: sources {} upload {} burst {} B queue {} B",
                t.name,
                sources.join(","),
                format_rate(s.rate),
                s.burst,
                s.queue
            ),
            None => println!(
                "tenant {}: sources {} (not shaped)",
                t.name,
                sources.join(",")
            ),
        }
    }
    println!("{}: OK", path.display());
    Ok(())
}

pub(crate) fn device_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
