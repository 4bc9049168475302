//! `tollgate`: validate the config, and run the demo lab.

mod demo;

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
    /// Build a lab in network namespaces, shape two tenants' uploads, print configured vs
    /// achieved rates, and clean up. Needs root, iperf3 and nft.
    Demo {
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
        Cmd::Demo { mode, seconds } => demo::run(mode.as_deref(), seconds),
    };
    match result {
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
    if let Some(s) = &config.shaper {
        println!(
            "shaper: interface {} tap {} redirect {:?}",
            s.interface, s.tap, s.redirect
        );
    }
    for t in &config.tenants {
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

fn device_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
