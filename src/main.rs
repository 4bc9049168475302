//! `tollgate`: validate the config; plan, apply, show and destroy the gateway.

mod gateway_cli;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use tollgate::cli::LogFormat;
use tollgate::config::{Config, units::format_rate};
use tollgate::kernel::device_exists;

#[derive(Parser)]
#[command(
    version,
    about = "Multi-tenant Linux gateway: control plane and ingress shaping",
    after_help = tollgate::cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log format (plain text has colours only on a terminal).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
        /// Also require what this program needs of the file (`shaper`: a [shaper] section;
        /// `gateway`: a [gateway] section), so a file the program would refuse never passes.
        #[arg(long = "for", value_enum)]
        for_: Vec<Program>,
    },
    /// Print what `apply` would change; exit 0 when nothing, 2 when there are changes (and only
    /// then).
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
    /// The shaper's tenants now: configured and current rate, queue, drops (from the counters
    /// the running tollgate-shaper writes every second).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON (numbers, not formatted strings).
        #[arg(long)]
        json: bool,
        /// Print again every interval until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between the two readings that give the current rate.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
        interval: u64,
    },
    /// Remove everything tollgate made (and nothing else); restore the sysctls it changed.
    Destroy {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write man pages or shell completions into a directory (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: tollgate::cli::Generate,
        dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli: Cli = tollgate::cli::parse_args();
    tollgate::cli::init_logging("warn", cli.log_format);
    let result = match cli.command {
        Cmd::Check {
            config,
            offline,
            for_,
        } => check(&config, offline, &for_).map(|()| Outcome::Done),
        Cmd::Plan { config, ruleset } => gateway_cli::plan(&config, ruleset),
        Cmd::Apply { config } => gateway_cli::apply(&config).map(|()| Outcome::Done),
        Cmd::Show { config, json } => gateway_cli::show(&config, json).map(|()| Outcome::Done),
        Cmd::Status {
            config,
            json,
            watch,
            interval,
        } => status(&config, json, watch, interval).map(|()| Outcome::Done),
        Cmd::Destroy { config } => gateway_cli::destroy(&config).map(|()| Outcome::Done),
        Cmd::Generate { what, dir } => {
            use clap::CommandFactory;
            tollgate::cli::generate(Cli::command(), what, &dir)
                .map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                    Outcome::Done
                })
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(Outcome::ChangesPending) => {
            std::process::ExitCode::from(tollgate::cli::EXIT_CHANGES_PENDING)
        }
        Ok(Outcome::Done) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            std::process::ExitCode::from(tollgate::cli::exit_code(e.as_ref()))
        }
    }
}

/// How a successful command ended; `plan` tells "changes pending" apart by its exit code.
pub enum Outcome {
    Done,
    ChangesPending,
}

/// A program that reads the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Program {
    Shaper,
    Gateway,
}

fn check(path: &Path, offline: bool, programs: &[Program]) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    for p in programs {
        let (missing, what) = match p {
            Program::Shaper => (config.shaper.is_none(), "[shaper] section: tollgate-shaper"),
            Program::Gateway => (
                config.gateway.is_none(),
                "[gateway] section: tollgate apply",
            ),
        };
        if missing {
            return Err(tollgate::config::ConfigError::whole_file(
                path,
                &format!("no {what} would refuse this file"),
            )
            .into());
        }
    }
    if !offline {
        config.check_devices(device_exists)?;
    }
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    if let Some(s) = &config.shaper {
        println!(
            "shaper: interface {} tap {} redirect {:?}",
            s.interface.as_deref().unwrap_or("-"),
            s.tap,
            s.redirect
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
            "tenant {}: id {} peer {} networks {} eips {} upload {}",
            t.name,
            g.id,
            g.peer,
            g.networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            eips.join(","),
            t.shaping
                .map(|s| format_rate(s.rate))
                .unwrap_or_else(|| "-".into())
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
    if config.gateway.is_some() {
        // the public device's subnets only add routes, not rules: none are needed here
        let l = tollgate::gateway::desired::layout(&config, &Default::default(), false);
        println!("{}", tollgate::gateway::desired::rule_cost(l.rule_count()));
    }
    println!("{}: OK", path.display());
    Ok(())
}

fn status(path: &Path, json: bool, watch: bool, interval: u64) -> anyhow::Result<()> {
    use tollgate::status;
    let config = Config::load(path)?;
    let file = status::counters_path(&config)?;
    let reading = || -> anyhow::Result<status::Counters> {
        status::read(&file)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no counters: is tollgate-shaper running in this network namespace?",
                file.display()
            )
        })
    };
    let mut before = reading()?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(interval));
        let now = reading()?;
        let rows = status::rows(&before, &now);
        if json {
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            println!(
                "{:<16} {:>14} {:>14} {:>12} {:>10}",
                "tenant", "configured", "current", "queued", "dropped"
            );
            for r in &rows {
                println!(
                    "{:<16} {:>14} {:>14} {:>10} B {:>10}",
                    r.tenant,
                    format_rate(r.configured_bits_per_sec / 8),
                    format_rate(r.current_bits_per_sec / 8),
                    r.queued_bytes,
                    r.dropped_packets
                );
            }
        }
        if !watch {
            return Ok(());
        }
        before = now;
    }
}
