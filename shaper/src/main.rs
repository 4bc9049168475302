//! `tollgate-shaper --config tollgate.toml`: runs the userspace ingress shaper in the
//! foreground until a signal that would end it (SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2,
//! SIGALRM), then restores the namespace and exits 0. SIGHUP reloads the config file in place;
//! `tollgate-shaper reload --config tollgate.toml` checks the file, sends SIGHUP to the running
//! shaper and waits for its answer.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tollgate::cli::LogFormat;
use tollgate::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Userspace IMQ: per-tenant queued ingress shaping through a TAP",
    after_help = tollgate::cli::EXIT_CODES_HELP
)]
pub struct Args {
    /// The tollgate config file (its [shaper] section and [[tenant]] upload keys).
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/tollgate/tollgate.toml"
    )]
    config: PathBuf,
    /// Log format (plain text has colours only on a terminal).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shaper in the foreground (the default).
    Run,
    /// Check the config file, make the running shaper (same TAP, this namespace) reload it, and
    /// wait until it has taken it or said why not. Exit 0 only if it took effect.
    Reload {
        /// How long to wait for the shaper's answer, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Write man pages or shell completions into a directory (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: tollgate::cli::Generate,
        dir: PathBuf,
    },
}

/// Signals whose default action ends the process: each stops the shaper cleanly instead (its
/// redirect removed, queued frames delivered, the namespace restored), so none can leave a
/// tenant cut off behind a redirect to a TAP that is gone. SIGHUP reloads instead.
const STOP_SIGNALS: [i32; 6] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
    signal_hook::consts::SIGALRM,
];

fn main() -> std::process::ExitCode {
    let args: Args = tollgate::cli::parse_args();
    tollgate::cli::init_logging("info", args.log_format);
    let result = match args.command {
        None | Some(Command::Run) => run(&args.config),
        Some(Command::Reload { timeout }) => reload(&args.config, Duration::from_secs(timeout)),
        Some(Command::Generate { what, dir }) => {
            use clap::CommandFactory;
            tollgate::cli::generate(Args::command(), what, &dir)
                .map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                })
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-shaper: {e:#}");
            std::process::ExitCode::from(tollgate::cli::exit_code(e.as_ref()))
        }
    }
}

/// Loads the file and runs every check the daemon runs before it touches anything.
fn checked(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    if config.shaper.is_none() {
        bail!("{}: no [shaper] section", path.display());
    }
    config.check_devices(tollgate::kernel::device_exists)?;
    Ok(config)
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = checked(path)?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    tollgate::kernel::nft::available()?;
    let control = shaper::daemon::Control::default();
    for sig in STOP_SIGNALS {
        signal_hook::flag::register(sig, control.stop.clone())
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing signal handlers")?;
    shaper::daemon::run(&config, control)?;
    tracing::info!("stopped; everything installed was removed");
    Ok(())
}

fn reload(path: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let config = checked(path)?;
    let stats = tollgate::status::counters_path(&config)?;
    let before = tollgate::status::read(&stats)?.with_context(|| {
        format!(
            "no shaper is running for this config here ({} does not exist)",
            stats.display()
        )
    })?;
    let pid = i32::try_from(before.pid).context("pid out of range")?;
    // SAFETY: kill(2) with a pid read from the shaper's own counters file and a valid signal
    // number; it touches no memory of ours.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "signalling the shaper (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let Some(now) = tollgate::status::read(&stats)? else {
            bail!("the shaper stopped");
        };
        if now.generation > before.generation {
            println!(
                "reloaded: generation {}, {} tenant(s)",
                now.generation,
                now.tenants.len()
            );
            return Ok(());
        }
        if now.reloads_failed > before.reloads_failed {
            bail!(
                "the shaper refused the new config and keeps running the old one: {}",
                now.last_reload_error.unwrap_or_default()
            );
        }
    }
    bail!("the shaper did not answer within {timeout:?} (pid {pid})")
}
