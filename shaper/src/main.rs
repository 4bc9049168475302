//! `tollgate-shaper --config tollgate.toml`: runs the userspace ingress shaper in the
//! foreground until SIGINT/SIGTERM, then restores the namespace and exits 0.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tollgate::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Userspace IMQ: per-tenant queued ingress shaping through a TAP"
)]
struct Args {
    /// The tollgate config file (its [shaper] section and [[tenant]] upload keys).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-shaper: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if config.shaper.is_none() {
        bail!("{}: no [shaper] section", args.config.display());
    }
    config.check_devices(tollgate::kernel::device_exists)?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    tollgate::kernel::nft::available()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    shaper::daemon::run(&config, stop)?;
    tracing::info!("stopped; everything installed was removed");
    Ok(())
}
