//! docs/benchmarks.md and its plots, from a [`Report`]: tables of every figure and four SVG
//! plots drawn with plotters (achieved vs configured rate; the receiver's first seconds; RTT
//! CDF under load; unshaped ratio and CPU per GB).

use super::{Method, Report, percentile};
use anyhow::{Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

const COLORS: [RGBColor; 5] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn color(m: Method) -> RGBColor {
    let i = Method::ALL.iter().position(|x| *x == m).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

type Plot = Result<(), Box<dyn std::error::Error>>;

/// Draws `pts` as a line in method `m`'s colour with its legend entry.
fn method_line<'a, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    m: Method,
    pts: Vec<(f64, f64)>,
) -> Plot {
    chart
        .draw_series(LineSeries::new(pts, color(m).stroke_width(2)))?
        .label(m.name())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color(m)));
    Ok(())
}

/// The legend box.
fn legend<'a, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    at: SeriesLabelPosition,
) -> Plot {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn plot_accuracy(r: &Report, path: &Path) -> Plot {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let rates: Vec<u64> = r.plan.accuracy_rates_mbit.clone();
    let (lo, hi) = (
        rates.iter().copied().min().unwrap_or(1) as f64,
        rates.iter().copied().max().unwrap_or(10) as f64,
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Achieved / configured rate (receiver goodput)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.8f64..1.1f64)?;
    chart
        .configure_mesh()
        .x_desc("configured rate, Mbit/s")
        .y_desc("achieved / configured")
        .draw()?;
    for m in Method::SHAPING {
        let pts: Vec<(f64, f64)> = r
            .accuracy
            .iter()
            .filter(|a| a.method == m)
            .map(|a| (a.rate_mbit as f64, a.ratio))
            .collect();
        method_line(&mut chart, m, pts.clone())?;
        chart.draw_series(
            pts.into_iter()
                .map(|p| Circle::new(p, 3, color(m).filled())),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn plot_first_seconds(r: &Report, rate: u64, path: &Path) -> Plot {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = r
        .accuracy
        .iter()
        .filter(|a| a.rate_mbit == rate)
        .flat_map(|a| a.first_bins_mbit.iter().copied())
        .fold(rate as f64 * 1.2, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Receiver rate, first 5 s, 100-ms bins ({rate} Mbit/s configured)"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..5f64, 0f64..ymax * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("Mbit/s")
        .draw()?;
    for a in r.accuracy.iter().filter(|a| a.rate_mbit == rate) {
        let m = a.method;
        let pts: Vec<(f64, f64)> = a
            .first_bins_mbit
            .iter()
            .enumerate()
            .map(|(i, b)| (i as f64 * 0.1 + 0.05, *b))
            .collect();
        method_line(&mut chart, m, pts)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn plot_rtt_cdf(r: &Report, rate: u64, path: &Path) -> Plot {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let xmax = r
        .latency
        .iter()
        .filter(|l| l.rate_mbit == rate)
        .map(|l| percentile(&l.rtts_ms, 99))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("RTT under load, CDF (ping in the loaded tenant, {rate} Mbit/s)"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax * 1.1, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("RTT, ms")
        .y_desc("fraction of pings")
        .draw()?;
    for l in r.latency.iter().filter(|l| l.rate_mbit == rate) {
        let m = l.method;
        let n = l.rtts_ms.len().max(1) as f64;
        let pts: Vec<(f64, f64)> = l
            .rtts_ms
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, (i + 1) as f64 / n))
            .collect();
        method_line(&mut chart, m, pts)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

fn plot_ceiling(r: &Report, path: &Path) -> Plot {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = r
        .ceiling
        .iter()
        .map(|c| c.shaper_cpu_s_per_gb + c.softirq_cpu_s_per_gb)
        .fold(0.5, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Unshaped: throughput / direct (x) against CPU seconds per GB (y)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1.1f64, 0f64..ymax * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("receiver goodput / direct veth")
        .y_desc("CPU s per GB (shaper + softirq)")
        .draw()?;
    for c in &r.ceiling {
        let m = c.method;
        let p = (
            c.ratio_to_direct,
            c.shaper_cpu_s_per_gb + c.softirq_cpu_s_per_gb,
        );
        chart.draw_series(std::iter::once(Circle::new(p, 5, color(m).filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{} x{}", m.name(), c.streams),
            (p.0 + 0.01, p.1),
            ("sans-serif", 12),
        )))?;
    }
    root.present()?;
    Ok(())
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// Writes `<dir>/benchmarks.md`'s body to `md` and the plots next to it (`<plots>/*.svg`,
/// linked relative to the markdown file).
pub fn write(r: &Report, json_path: &str, md: &Path, plots: &Path, plots_rel: &str) -> Result<()> {
    std::fs::create_dir_all(plots)?;
    let p = |name: &str| plots.join(name);
    let e = |e: Box<dyn std::error::Error>| anyhow::anyhow!("plot: {e}");
    plot_accuracy(r, &p("accuracy.svg")).map_err(e)?;
    let first_rate = r
        .plan
        .accuracy_rates_mbit
        .iter()
        .copied()
        .find(|&x| x >= 10)
        .unwrap_or(10);
    plot_first_seconds(r, first_rate, &p("first-seconds.svg")).map_err(e)?;
    let lat_rate = r.plan.latency_rates_mbit.first().copied().unwrap_or(20);
    plot_rtt_cdf(r, lat_rate, &p("rtt-cdf.svg")).map_err(e)?;
    plot_ceiling(r, &p("ceiling.svg")).map_err(e)?;

    let mut s = String::new();
    let w = &mut s;
    writeln!(
        w,
        "## Shaping: tollgate against the kernel's ingress shaping\n"
    )?;
    writeln!(
        w,
        "Reproduce: `{}` (as root). It builds release binaries, runs every scenario in fresh network \
namespaces (a client and a server joined by a veth pair), writes every figure to \
`{json_path}` and regenerates this page and its plots from it. Methods: `direct` (no shaping), \
`ifb-tbf` and `ifb-htb` (the kernel's answer: ingress `mirred` to an IFB, TBF with burst \
max(64 KiB, 10 ms) and latency 50 ms, or HTB with a class per tenant), `tollgate-netdev` and \
`tollgate-route` (tollgate-shaper with default queues: 32 flow queues and CoDel per tenant).\n",
        r.command
    )?;
    writeln!(
        w,
        "Run: {} · kernel {} · {} CPUs{}.\n",
        r.date,
        r.kernel,
        r.cpus,
        if r.plan.quick {
            " · **quick mode** (short runs; indicative only)"
        } else {
            ""
        }
    )?;

    writeln!(w, "### 1. Unshaped ceiling\n")?;
    writeln!(
        w,
        "Limit far above line rate (40 Gbit/s); iperf3 TCP, {} s.\n",
        r.plan.ceiling_secs
    )?;
    w.push_str(&row(&[
        "method",
        "streams",
        "Mbit/s",
        "/ direct",
        "shaper CPU s/GB",
        "softirq CPU s/GB",
    ]
    .map(String::from)));
    w.push_str("|---|---:|---:|---:|---:|---:|\n");
    for c in &r.ceiling {
        w.push_str(&row(&[
            c.method.name().into(),
            c.streams.to_string(),
            format!("{:.0}", c.mbit),
            format!("{:.3}", c.ratio_to_direct),
            format!("{:.2}", c.shaper_cpu_s_per_gb),
            format!("{:.2}", c.softirq_cpu_s_per_gb),
        ]));
    }
    writeln!(w, "\n![unshaped ratio and CPU]({plots_rel}/ceiling.svg)\n")?;

    writeln!(w, "### 2. Accuracy and the first seconds\n")?;
    writeln!(
        w,
        "One TCP upload, {} s per rate. Goodput is TCP payload: the ideal ratio is 0.965 when a \
rate counts IP bytes (tollgate) and 0.956 when it counts Ethernet frames (TBF, HTB). The peak \
is the largest 100-ms bin in the first 3 s over the configured rate, as the receiving \
application read it (iperf3's reports: a loss that TCP repairs holds back what follows and \
releases it at once) and as the method delivered it to the server's stack (its device's \
byte counter, sampled every 100 ms: the IFB's for TBF/HTB, the TAP's for tollgate).\n",
        r.plan.accuracy_secs
    )?;
    w.push_str(&row(&[
        "rate",
        "method",
        "achieved Mbit/s",
        "achieved / configured",
        "first-3-s peak, application",
        "first-3-s peak, delivered",
    ]
    .map(String::from)));
    w.push_str("|---:|---|---:|---:|---:|---:|\n");
    for a in &r.accuracy {
        w.push_str(&row(&[
            format!("{} Mbit/s", a.rate_mbit),
            a.method.name().into(),
            format!("{:.2}", a.achieved_mbit),
            format!("{:.3}", a.ratio),
            format!("{:.2}x", a.first_3s_peak_ratio),
            format!("{:.2}x", a.first_3s_peak_delivered),
        ]));
    }
    writeln!(w, "\n![accuracy]({plots_rel}/accuracy.svg)\n")?;
    writeln!(w, "![first seconds]({plots_rel}/first-seconds.svg)\n")?;

    writeln!(w, "### 3. Latency under load\n")?;
    writeln!(
        w,
        "A TCP upload saturates the tenant; from the same tenant, a ping every 20 ms for {0} s, \
then a TCP request/response (one byte each way on a connection of its own) every 20 ms for \
{0} s. Idle: 50 pings with no load, through the same method.\n",
        r.plan.latency_secs.saturating_sub(4) / 2
    )?;
    w.push_str(&row(&[
        "rate",
        "method",
        "ping p50 ms",
        "ping p99 ms",
        "ping max ms",
        "TCP RR p50 ms",
        "TCP RR p99 ms",
        "idle ping p50 ms",
        "upload Mbit/s",
    ]
    .map(String::from)));
    w.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for l in &r.latency {
        w.push_str(&row(&[
            format!("{} Mbit/s", l.rate_mbit),
            l.method.name().into(),
            format!("{:.2}", l.p50_ms),
            format!("{:.2}", l.p99_ms),
            format!("{:.2}", l.max_ms),
            format!("{:.2}", l.tcp_rr_p50_ms),
            format!("{:.2}", l.tcp_rr_p99_ms),
            format!("{:.3}", l.idle_p50_ms),
            format!("{:.2}", l.upload_mbit),
        ]));
    }
    writeln!(w, "\n![RTT CDF]({plots_rel}/rtt-cdf.svg)\n")?;

    writeln!(w, "### 4. Isolation\n")?;
    writeln!(
        w,
        "Tenants A and B at 20 Mbit/s each. A floods (`tcp8`: 8 TCP streams; `udp16`: 16-byte \
UDP datagrams at 10x its rate; `none`: A idle, B's own figures) while B uploads one TCP stream \
and pings every 40 ms. TBF \
shapes one aggregate and cannot keep tenants apart, so it is not in this table. Frames lost \
before any queue: dropped by the TAP (its queue to the shaper full) and by the kernel's input \
backlogs (the whole machine).\n"
    )?;
    w.push_str(&row(&[
        "flood",
        "method",
        "B achieved / configured",
        "B p99 RTT ms",
        "B pings answered",
        "TAP drops",
        "backlog drops",
    ]
    .map(String::from)));
    w.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for i in &r.isolation {
        w.push_str(&row(&[
            i.flood.clone(),
            i.method.name().into(),
            format!("{:.3}", i.b_ratio),
            format!("{:.2}", i.b_p99_ms),
            format!("{}/{}", i.b_ping_replies, i.b_pings_sent),
            i.tap_dropped.to_string(),
            i.backlog_dropped.to_string(),
        ]));
    }
    writeln!(w)?;

    writeln!(w, "### 5. Scale\n")?;
    writeln!(
        w,
        "tollgate-netdev with N configured tenants, 10 of them uploading at once (1 Gbit/s each), \
{} s; start is until the shaper reports it is shaping. The micro-benchmark is classify + \
enqueue + dequeue of 1514-byte frames on one core (10 active tenants, 8 flows each; also \
`cargo bench -p tollgate-shaper --bench dataplane`).\n",
        r.plan.scale_secs
    )?;
    w.push_str(&row(&[
        "tenants",
        "total Mbit/s",
        "start s",
        "RSS MiB",
        "micro Mpps",
    ]
    .map(String::from)));
    w.push_str("|---:|---:|---:|---:|---:|\n");
    for sc in &r.scale {
        let mpps = r
            .micro_mpps
            .iter()
            .find(|(n, _)| *n == sc.tenants)
            .map_or("-".to_string(), |(_, m)| format!("{m:.1}"));
        w.push_str(&row(&[
            sc.tenants.to_string(),
            format!("{:.0}", sc.total_mbit),
            format!("{:.2}", sc.start_s),
            format!("{:.1}", sc.rss_mib),
            mpps,
        ]));
    }
    writeln!(w)?;
    let old = std::fs::read_to_string(md).unwrap_or_default();
    std::fs::write(md, splice(&old, &s)).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

pub const BEGIN: &str = "<!-- generated by tollgate-bench: begin -->";
pub const END: &str = "<!-- generated by tollgate-bench: end -->";

/// `old` with the generated part (between the markers) replaced by `new`; a file without the
/// markers gets them at its top, after its title.
pub fn splice(old: &str, new: &str) -> String {
    let block = format!("{BEGIN}\n{new}{END}\n");
    if let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END))
        && b < e
    {
        return format!(
            "{}{block}\n{}",
            &old[..b],
            old[e + END.len()..].trim_start_matches('\n')
        );
    }
    if old.is_empty() {
        return format!("# Benchmarks\n\n{block}");
    }
    match old.find('\n') {
        Some(i) if old.starts_with("# ") => {
            format!("{}\n\n{block}\n{}", &old[..i], old[i + 1..].trim_start())
        }
        _ => format!("{block}\n{old}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_part_is_replaced_and_the_rest_kept() {
        let first = splice("# Benchmarks\n\n## Other\nkept\n", "## Shaping\nv1\n");
        assert!(first.starts_with("# Benchmarks\n\n<!--"), "{first}");
        assert!(first.contains("v1") && first.contains("## Other\nkept"));
        let second = splice(&first, "## Shaping\nv2\n");
        assert!(second.contains("v2") && !second.contains("v1"), "{second}");
        assert!(second.contains("## Other\nkept"));
        assert_eq!(second.matches(BEGIN).count(), 1);
    }
}
