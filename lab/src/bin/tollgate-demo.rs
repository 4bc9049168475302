//! `tollgate-demo`: the whole story in network namespaces it makes and removes. First the shaper
//! (two tenants' uploads, configured vs achieved rates), then the gateway built by
//! `tollgate apply` (plan, apply, a second apply that changes nothing, the connectivity matrix,
//! show, destroy). Needs root, iperf3 and nft, and the workspace's release binaries.

use clap::Parser;
use lab::demo;

#[derive(Parser)]
#[command(version, about = "tollgate's demo lab, in network namespaces")]
struct Args {
    /// Run only one part.
    #[arg(long, value_parser = ["shaper", "gateway"])]
    only: Option<String>,
    /// Redirect mode to demonstrate (default: the example config's, netdev).
    #[arg(long, value_parser = ["netdev", "route"])]
    mode: Option<String>,
    /// Length of the shaped uploads.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=600))]
    seconds: u32,
}

fn main() -> std::process::ExitCode {
    let args: Args = tollgate::cli::parse_args();
    tollgate::cli::init_logging("warn", tollgate::cli::LogFormat::Text);
    let part = args.only.as_deref();
    let shaper = if part != Some("gateway") {
        println!("=== shaper: queued ingress shaping per tenant\n");
        demo::shaper::run(args.mode.as_deref(), args.seconds)
    } else {
        Ok(())
    };
    let gateway = if part != Some("shaper") {
        println!("\n=== gateway: declarative control plane\n");
        demo::gateway::run()
    } else {
        Ok(())
    };
    match shaper.and(gateway) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
