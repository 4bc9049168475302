//! The Prometheus endpoint (`[shaper] metrics = "127.0.0.1:9464"`, off by default): per-tenant
//! and process-wide counters in the OpenMetrics text format, served at `/metrics`.
//!
//! The exposition format is `prometheus-client`'s (a collector that reads the shared snapshot
//! at scrape time, so nothing is kept twice); the HTTP server is `tiny_http`, a small blocking
//! server on its own thread. A scrape never touches the scheduler: it reads the copy the
//! scheduler publishes (see [`crate::stats`]).

use crate::stats::Shared;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads the shared state on each scrape.
#[derive(Debug)]
pub struct ShaperCollector {
    shared: Arc<Shared>,
}

impl ShaperCollector {
    pub fn new(shared: Arc<Shared>) -> ShaperCollector {
        ShaperCollector { shared }
    }
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Fmt {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Fmt {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

impl Collector for ShaperCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        let s = &self.shared;
        let snap = s.snapshot();
        let reload = s.reload_status();
        let c = &s.counters;
        let mode = match s.mode {
            tollgate::config::RedirectMode::Netdev => "netdev",
            tollgate::config::RedirectMode::Route => "route",
        };
        e.encode_descriptor(
            "tollgate_shaper",
            "The shaper's TAP and redirect mode",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("tap", s.tap.as_str()), ("redirect", mode)])?;
        let gen_ = i64::try_from(reload.generation).unwrap_or(i64::MAX);
        gauge(
            &mut e,
            "tollgate_shaper_config_generation",
            "Config generation: 1 at start, +1 per reload that took effect",
            gen_,
        )?;
        counter(
            &mut e,
            "tollgate_shaper_reloads_failed",
            "Reloads refused (the running config stayed)",
            reload.reloads_failed,
        )?;
        counter(
            &mut e,
            "tollgate_shaper_frames_read",
            "Frames read from the TAP",
            c.frames_read.load(Relaxed),
        )?;
        counter(
            &mut e,
            "tollgate_shaper_frames_written",
            "Frames written back to the TAP",
            c.frames_written.load(Relaxed),
        )?;
        {
            let mut m = e.encode_descriptor(
                "tollgate_shaper_passed_frames",
                "Frames written back unqueued, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("not_ipv4", &c.not_ipv4),
                ("malformed", &c.malformed),
                ("no_tenant", &c.no_tenant),
            ] {
                m.encode_family(&[("reason", reason)])?
                    .encode_counter::<NoLabelSet, _, u64>(&v.load(Relaxed), None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "tollgate_shaper_tap_errors",
                "Failed TAP reads and writes",
                None,
                MetricType::Counter,
            )?;
            for (op, v) in [("read", &c.read_errors), ("write", &c.write_errors)] {
                m.encode_family(&[("op", op)])?
                    .encode_counter::<NoLabelSet, _, u64>(&v.load(Relaxed), None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "tollgate_shaper_pool_buffers",
                "Frame buffers by size class: allocated, holding a frame, and the most there can be",
                None,
                MetricType::Gauge,
            )?;
            let (small, large) = s.pool.usage();
            for (class, state, v) in [
                ("small", "allocated", small.allocated),
                ("small", "in_use", small.in_use),
                ("small", "max", small.max),
                ("large", "allocated", large.allocated),
                ("large", "in_use", large.in_use),
                ("large", "max", large.max),
            ] {
                m.encode_family(&[("class", class), ("state", state)])?
                    .encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX))?;
            }
        }
        type Pick = fn(&crate::stats::TenantSnapshot) -> u64;
        let per_tenant: [(&str, &str, MetricType, Pick); 6] = [
            (
                "tollgate_shaper_tenant_sent_bytes",
                "IP bytes released to local delivery",
                MetricType::Counter,
                |t| t.counters.sent_bytes,
            ),
            (
                "tollgate_shaper_tenant_sent_packets",
                "Frames released to local delivery",
                MetricType::Counter,
                |t| t.counters.sent_packets,
            ),
            (
                "tollgate_shaper_tenant_queued_packets",
                "Frames accepted into the queue",
                MetricType::Counter,
                |t| t.counters.queued_packets,
            ),
            (
                "tollgate_shaper_tenant_backlog_bytes",
                "IP bytes waiting in the queue now",
                MetricType::Gauge,
                |t| t.backlog,
            ),
            (
                "tollgate_shaper_tenant_rate_bytes_per_second",
                "Configured rate (IP bytes per second)",
                MetricType::Gauge,
                |t| t.shaping.rate,
            ),
            (
                "tollgate_shaper_tenant_queue_limit_bytes",
                "Configured queue limit",
                MetricType::Gauge,
                |t| t.shaping.queue,
            ),
        ];
        for (name, help, kind, pick) in per_tenant {
            let mut m = e.encode_descriptor(name, help, None, kind)?;
            for t in &snap.tenants {
                let labels = [("tenant", &*t.name)];
                let mut f = m.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => {
                        f.encode_counter::<NoLabelSet, _, u64>(&pick(t), None)?
                    }
                    _ => f.encode_gauge(&i64::try_from(pick(t)).unwrap_or(i64::MAX))?,
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "tollgate_shaper_tenant_tokens_bytes",
                "Token balance (negative: the debt the last frame left)",
                None,
                MetricType::Gauge,
            )?;
            for t in &snap.tenants {
                m.encode_family(&[("tenant", &*t.name)])?
                    .encode_gauge(&t.tokens_at(snap.uptime_ns))?;
            }
        }
        type PickReason = fn(&crate::sched::TenantStats) -> [(&'static str, u64); 3];
        let by_reason: [(&str, &str, PickReason); 2] = [
            (
                "tollgate_shaper_tenant_dropped_packets",
                "Frames dropped, by reason (queue_full, codel, no_buffer)",
                |s| {
                    [
                        ("queue_full", s.overflow_packets),
                        ("codel", s.codel_packets),
                        ("no_buffer", s.nobuf_packets),
                    ]
                },
            ),
            (
                "tollgate_shaper_tenant_dropped_bytes",
                "IP bytes dropped, by reason (queue_full, codel, no_buffer)",
                |s| {
                    [
                        ("queue_full", s.overflow_bytes),
                        ("codel", s.codel_bytes),
                        ("no_buffer", s.nobuf_bytes),
                    ]
                },
            ),
        ];
        for (name, help, pick) in by_reason {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for t in &snap.tenants {
                for (reason, v) in pick(&t.counters) {
                    m.encode_family(&[("tenant", &*t.name), ("reason", reason)])?
                        .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                }
            }
        }
        Ok(())
    }
}

/// The metrics page for `shared`.
pub fn render(collector: ShaperCollector) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The endpoint, bound at start so a taken port stops the daemon before it changes anything.
pub struct Endpoint {
    server: tiny_http::Server,
    pub addr: SocketAddr,
}

impl Endpoint {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Endpoint> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| std::io::Error::other(format!("metrics endpoint {addr}: {e}")))?;
        Ok(Endpoint { server, addr })
    }

    /// Serves `/metrics` until `halt`.
    pub fn serve(self, shared: Arc<Shared>, halt: &AtomicBool) {
        while !halt.load(Relaxed) {
            let req = match self.server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("metrics endpoint: {e}");
                    continue;
                }
            };
            let path = req.url().split('?').next().unwrap_or("");
            let response = if *req.method() != tiny_http::Method::Get || path != "/metrics" {
                tiny_http::Response::from_string("only GET /metrics is served here\n")
                    .with_status_code(404)
            } else {
                match render(ShaperCollector::new(shared.clone())) {
                    Ok(body) => tiny_http::Response::from_string(body).with_header(
                        tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).unwrap_or_else(
                            |()| {
                                tiny_http::Header::from_bytes("Content-Type", "text/plain")
                                    .unwrap_or_else(|()| unreachable!("a valid header"))
                            },
                        ),
                    ),
                    Err(e) => tiny_http::Response::from_string(format!("encoding: {e}\n"))
                        .with_status_code(500),
                }
            };
            if let Err(e) = req.respond(response) {
                tracing::debug!("metrics response: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::Scheduler;
    use tollgate::config::{RedirectMode, Shaping};

    #[test]
    fn per_tenant_counters_in_openmetrics_text() {
        let shaping = [Shaping::new(2_500_000, 65_536, 1 << 20)];
        let mut sched: Scheduler<u32> = Scheduler::new(&shaping, 0);
        sched.enqueue(0, 1, 1500, 0, 0).unwrap();
        sched.dequeue(0).unwrap();
        let shared = Arc::new(Shared::new("tg0", RedirectMode::Route));
        shared.publish(&mut sched, &[Arc::from("alpha")], &shaping, 0, true);
        shared.counters.frames_read.store(7, Relaxed);
        let page = render(ShaperCollector::new(shared)).unwrap();
        for line in [
            "tollgate_shaper_tenant_sent_bytes_total{tenant=\"alpha\"} 1500",
            "tollgate_shaper_tenant_rate_bytes_per_second{tenant=\"alpha\"} 2500000",
            "tollgate_shaper_tenant_dropped_packets_total{tenant=\"alpha\",reason=\"queue_full\"} 0",
            "tollgate_shaper_frames_read_total 7",
            "tollgate_shaper_config_generation 1",
            "tollgate_shaper_info{tap=\"tg0\",redirect=\"route\"} 1",
            "tollgate_shaper_pool_buffers{class=\"large\",state=\"max\"} 4096",
            "# EOF",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} missing in\n{page}");
        }
    }
}
