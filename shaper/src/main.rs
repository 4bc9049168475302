//! `tollgate-shaper --config tollgate.toml`: runs the userspace ingress shaper in the
//! foreground until a signal that would end it (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1,
//! SIGUSR2, SIGALRM), then restores the namespace and exits 0.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tollgate::cli::LogFormat;
use tollgate::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Userspace IMQ: per-tenant queued ingress shaping through a TAP",
    after_help = tollgate::cli::EXIT_CODES_HELP
)]
struct Args {
    /// The tollgate config file (its [shaper] section and [[tenant]] upload keys).
    #[arg(long, short)]
    config: PathBuf,
    /// Log format (plain text has colours only on a terminal).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Signals whose default action ends the process: each stops the shaper cleanly instead (its
/// redirect removed, queued frames delivered, the namespace restored), so none can leave a
/// tenant cut off behind a redirect to a TAP that is gone.
const STOP_SIGNALS: [i32; 7] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
    signal_hook::consts::SIGALRM,
];

fn main() -> std::process::ExitCode {
    let args: Args = tollgate::cli::parse_args();
    tollgate::cli::init_logging("info", args.log_format);
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-shaper: {e:#}");
            std::process::ExitCode::from(tollgate::cli::exit_code(e.as_ref()))
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
    for sig in STOP_SIGNALS {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    shaper::daemon::run(&config, stop)?;
    tracing::info!("stopped; everything installed was removed");
    Ok(())
}
