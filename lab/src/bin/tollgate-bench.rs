//! `tollgate-bench`: tollgate-shaper against the kernel's ingress shaping (IFB + TBF / HTB) and
//! direct veth, in network namespaces, with every figure written to a JSON file and
//! docs/benchmarks.md (tables and SVG plots) regenerated from it. Run through
//! `bash bench/run.sh`, which builds the release binaries first.
//!
//!   tollgate-bench                 full run (about 20 minutes); updates docs/benchmarks.md
//!   tollgate-bench --quick         under 3 minutes; writes into target/bench-quick/ only
//!   tollgate-bench --report FILE   regenerates the page from a saved JSON file
//!   tollgate-bench --only latency,isolation   those scenarios of the full run; writes into
//!                                  target/bench-only/ (for working on one of them)

use anyhow::{Context, Result, bail};
use clap::Parser;
use lab::bench::{self, Plan, Report};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Benchmarks tollgate-shaper against the kernel's ingress shaping")]
struct Args {
    /// Short runs of every scenario (under 3 minutes); results go to target/bench-quick/.
    #[arg(long)]
    quick: bool,
    /// Regenerate the page and plots from this JSON file instead of measuring.
    #[arg(long, value_name = "JSON")]
    report: Option<PathBuf>,
    /// Only these scenarios of the full (or quick) plan, comma-separated: ceiling, accuracy,
    /// latency, isolation, scale. Results go to target/bench-only/.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn timestamp() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(bad) = args
        .only
        .iter()
        .find(|s| !bench::SCENARIOS.contains(&s.as_str()))
    {
        bail!(
            "--only: unknown scenario {bad:?}; expected some of {}",
            bench::SCENARIOS.join(", ")
        );
    }
    let (results, md, plots, plots_rel) = if args.quick || !args.only.is_empty() {
        let d = PathBuf::from(if args.only.is_empty() {
            "target/bench-quick"
        } else {
            "target/bench-only"
        });
        (d.clone(), d.join("benchmarks.md"), d.join("plots"), "plots")
    } else {
        (
            bench::results_dir(),
            PathBuf::from("docs/benchmarks.md"),
            PathBuf::from("docs/plots"),
            "plots",
        )
    };
    std::fs::create_dir_all(&results)?;
    let (report, json_path) = match &args.report {
        Some(path) => {
            let r: Report = serde_json::from_slice(&std::fs::read(path)?)
                .with_context(|| format!("reading {}", path.display()))?;
            (r, path.clone())
        }
        None => {
            if let Some(why) = lab::missing_prerequisites() {
                bail!("cannot run the benchmark: {why}");
            }
            let shaper = lab::sibling_binary("tollgate-shaper")?;
            let mut plan = if args.quick {
                Plan::quick()
            } else {
                Plan::full()
            };
            plan.only = args.only.clone();
            let started = std::time::Instant::now();
            let mut r = bench::run(&plan, &shaper, |line| eprintln!("{line}"))?;
            r.command = match (args.quick, args.only.is_empty()) {
                (true, true) => "bash bench/run.sh --quick".into(),
                (false, true) => "bash bench/run.sh".into(),
                (quick, false) => format!(
                    "bash bench/run.sh {}--only {}",
                    if quick { "--quick " } else { "" },
                    args.only.join(",")
                ),
            };
            let ts = timestamp();
            r.date = ts.clone();
            let path = results.join(format!("shaping-{ts}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&r)?)?;
            eprintln!(
                "measured in {:.0} s; results: {}",
                started.elapsed().as_secs_f64(),
                path.display()
            );
            (r, path)
        }
    };
    bench::report::write(
        &report,
        &json_path.display().to_string(),
        &md,
        &plots,
        plots_rel,
    )?;
    println!("{}", md.display());
    Ok(())
}
