//! `tollgate-gateway-bench`: forwarding through a tollgate gateway (a tenant's EIP and the
//! operator's own traffic) with 1 to 10,000 configured tenants, in network namespaces. Run
//! through `bash bench/gateway.sh`, which builds the release binaries, runs the table-isolation
//! points on this kernel and the VRF points in the VM.

use anyhow::{Result, bail};
use clap::Parser;
use lab::bench::gateway::{Plan, run, run_side_by_side, table};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Forwarding through a tollgate gateway as tenants grow")]
struct Args {
    #[arg(long, default_value = "vxlan")]
    tunnel: String,
    #[arg(long, default_value = "external")]
    tunnel_mode: String,
    #[arg(long, default_value = "table")]
    isolation: String,
    /// Offload settings to measure, comma-separated ("off,on").
    #[arg(long, default_value = "off", value_delimiter = ',')]
    offload: Vec<String>,
    /// Tenant counts, comma-separated.
    #[arg(long, default_value = "1,1000,10000", value_delimiter = ',')]
    tenants: Vec<u32>,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    secs: u32,
    /// Leave the gateway to the namespace's deletion instead of `tollgate destroy`.
    #[arg(long)]
    no_destroy: bool,
    /// Measurements per point; the point reports their median.
    #[arg(long, default_value_t = 1)]
    reps: u32,
    /// Grow one lab through the tenant counts (in the order given) after a discarded warm-up
    /// measurement, instead of a fresh lab per point.
    #[arg(long)]
    grow: bool,
    /// Two tenant counts in two labs side by side, measured alternately (so that the
    /// machine's drift touches both alike), instead of one after the other.
    #[arg(long, conflicts_with = "grow")]
    side_by_side: bool,
    /// With --side-by-side: a shell script run in the second lab's gateway namespace after
    /// its apply (bench/ballast/*.sh), to measure one kernel object's cost alone.
    #[arg(long, requires = "side_by_side")]
    ballast: Option<PathBuf>,
    /// Spread the tenants over this many shards (network namespaces; 0: none).
    #[arg(long, default_value_t = 0)]
    shards: u32,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(why) = lab::missing_prerequisites() {
        bail!("cannot run the benchmark: {why}");
    }
    let tollgate = lab::sibling_binary("tollgate")?;
    let plan = Plan {
        tunnel: a.tunnel,
        tunnel_mode: a.tunnel_mode,
        isolation: a.isolation,
        offloads: a.offload,
        tenants: a.tenants,
        secs: a.secs,
        destroy: !a.no_destroy,
        reps: a.reps,
        grow: a.grow,
        ballast: a.ballast,
        shards: a.shards,
    };
    if plan.grow && plan.destroy {
        bail!("--grow keeps one lab through every count: use it with --no-destroy");
    }
    // each point on stdout as one `POINT <json>` line as soon as it is measured: from the VM
    // only stdout comes back, and a run cut short keeps its points
    let log = |l: &str| eprintln!("{l}");
    let done = |p: &lab::bench::gateway::Point| {
        if let Ok(j) = serde_json::to_string(p) {
            println!("POINT {j}");
        }
    };
    let points = if a.side_by_side {
        run_side_by_side(&plan, &tollgate, log, done)?
    } else {
        run(&plan, &tollgate, log, done)?
    };
    std::fs::write(&a.out, serde_json::to_vec_pretty(&points)?)?;
    print!("{}", table(&points));
    Ok(())
}
