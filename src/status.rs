//! `tollgate status`: what the shaper is doing now, per tenant, read from the counters file it
//! rewrites every second (`<state_dir>/shaper-<tap>-<netns inode>.stats.json`). Two readings an
//! interval apart give the current rate; the rows are plain numbers (for `--json`).

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One tenant in the shaper's counters file.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TenantCounters {
    pub name: String,
    pub rate_bytes_per_sec: u64,
    pub backlog_bytes: u64,
    #[serde(default)]
    pub queued_packets: u64,
    #[serde(default)]
    pub sent_bytes: u64,
    #[serde(default)]
    pub sent_packets: u64,
    #[serde(default)]
    pub dropped_packets: u64,
    #[serde(default)]
    pub dropped_bytes: u64,
}

/// The shaper's counters file.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Counters {
    pub tap: String,
    #[serde(default)]
    pub pid: u32,
    pub uptime_ms: u64,
    /// Config generation: 1 at start, +1 per reload that took effect.
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub reloads_failed: u64,
    #[serde(default)]
    pub last_reload_error: Option<String>,
    pub tenants: Vec<TenantCounters>,
}

/// A tenant's status row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub tenant: String,
    pub configured_bits_per_sec: u64,
    /// IP bits per second released over the last interval.
    pub current_bits_per_sec: u64,
    pub queued_bytes: u64,
    pub queued_packets: u64,
    pub sent_bytes: u64,
    pub dropped_packets: u64,
}

/// The counters file of `config`'s shaper in this network namespace.
pub fn counters_path(config: &Config) -> std::io::Result<PathBuf> {
    let s = config.shaper.as_ref().ok_or_else(|| {
        std::io::Error::other(format!("{}: no [shaper] section", config.path.display()))
    })?;
    let ino = crate::kernel::state::netns_inode()?;
    Ok(s.state_dir
        .join(crate::names::shaper_stats_file(&s.tap, ino)))
}

/// Reads a counters file (None if the shaper is not running: no file).
pub fn read(path: &Path) -> std::io::Result<Option<Counters>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Rows from two readings: the current rate is the bytes sent between them over the shaper's
/// own clock (its uptime), so a slow reader does not skew it.
pub fn rows(before: &Counters, now: &Counters) -> Vec<Row> {
    let dt_ms = now.uptime_ms.saturating_sub(before.uptime_ms).max(1);
    now.tenants
        .iter()
        .map(|t| {
            let prev = before
                .tenants
                .iter()
                .find(|p| p.name == t.name)
                .map(|p| p.sent_bytes)
                .unwrap_or(t.sent_bytes);
            let bits = t.sent_bytes.saturating_sub(prev).saturating_mul(8 * 1000) / dt_ms;
            Row {
                tenant: t.name.clone(),
                configured_bits_per_sec: t.rate_bytes_per_sec.saturating_mul(8),
                current_bits_per_sec: bits,
                queued_bytes: t.backlog_bytes,
                queued_packets: t.queued_packets,
                sent_bytes: t.sent_bytes,
                dropped_packets: t.dropped_packets,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(uptime_ms: u64, sent: u64) -> Counters {
        serde_json::from_str(&format!(
            r#"{{"tap":"tg0","uptime_ms":{uptime_ms},"tenants":[{{"name":"alpha","rate_bytes_per_sec":2500000,"backlog_bytes":3000,"queued_packets":2,"sent_packets":10,"sent_bytes":{sent},"dropped_packets":1,"dropped_bytes":1500}}],"passed_not_ipv4":0}}"#
        ))
        .unwrap()
    }

    #[test]
    fn current_rate_over_the_shapers_clock() {
        let r = rows(&reading(1000, 1_000_000), &reading(3000, 6_000_000));
        assert_eq!(
            r,
            vec![Row {
                tenant: "alpha".into(),
                configured_bits_per_sec: 20_000_000,
                current_bits_per_sec: 20_000_000,
                queued_bytes: 3000,
                queued_packets: 2,
                sent_bytes: 6_000_000,
                dropped_packets: 1,
            }]
        );
        // a restarted shaper (counters went back): no negative rate
        assert_eq!(
            rows(&reading(5000, 9_000_000), &reading(6000, 100))[0].current_bits_per_sec,
            0
        );
    }
}
