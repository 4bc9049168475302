//! Waiting for the machine to go quiet before a measurement.
//!
//! Creating thousands of devices leaves the kernel work to finish after the command that made
//! them has returned (workqueues, link-watch, address configuration). On one emulated CPU that
//! tail can last minutes, and whatever is measured during it measures the tail. [`settle`]
//! samples `/proc/stat` until the CPUs are idle over a whole window and says which threads were
//! busy meanwhile, so a report can tell a slow path from a busy machine.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How the wait went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Settled {
    /// Seconds waited.
    pub waited_s: f64,
    /// Share of CPU time busy in the last window (0..1).
    pub busy: f64,
    /// The busiest threads over the whole wait: "name: CPU seconds", busiest first.
    pub busiest: Vec<String>,
}

/// Busy and total jiffies of all CPUs (the first line of `/proc/stat`).
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    if f.len() < 8 {
        return None;
    }
    let idle = f[3] + f[4];
    let total: u64 = f[..8].iter().sum();
    Some((total - idle, total))
}

/// CPU jiffies (user + system) of every thread of every process, keyed by "pid/tid" with its
/// name; threads that end between reads are simply missing.
fn thread_times() -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("stat"))
                && let Some((name, jiffies)) = parse_task_stat(&s)
            {
                let tid = t.file_name().to_string_lossy().into_owned();
                out.insert(format!("{pid}/{tid}"), (name, jiffies));
            }
        }
    }
    out
}

/// (comm, utime + stime) from a `/proc/<pid>/task/<tid>/stat` line. The name is in
/// parentheses and may itself hold spaces or parentheses, so fields count from the last ')'.
fn parse_task_stat(s: &str) -> Option<(String, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // after the name: state(0) ppid(1) ... utime(11) stime(12)
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Waits until the CPUs were busy less than `threshold` (0..1) over one `window`, or `max`
/// has passed (then returns what it saw: the caller reports it).
pub fn settle(window: Duration, threshold: f64, max: Duration) -> Result<Settled> {
    let start = Instant::now();
    let before = thread_times();
    let read = || -> Result<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        cpu_times(&s).context("/proc/stat has no cpu line")
    };
    let mut busy;
    loop {
        let (b0, t0) = read()?;
        std::thread::sleep(window);
        let (b1, t1) = read()?;
        let total = t1.saturating_sub(t0).max(1);
        busy = b1.saturating_sub(b0) as f64 / total as f64;
        if busy < threshold || start.elapsed() >= max {
            break;
        }
    }
    let after = thread_times();
    let mut used: Vec<(u64, String)> = after
        .iter()
        .filter_map(|(k, (name, j))| {
            let was = before.get(k).map_or(0, |(_, j0)| *j0);
            let d = j.saturating_sub(was);
            (d > 0).then(|| (d, name.clone()))
        })
        .collect();
    used.sort_by_key(|u| std::cmp::Reverse(u.0));
    // jiffies are 1/100 s on every Linux that reports them through procfs (USER_HZ)
    let busiest = used
        .iter()
        .take(3)
        .map(|(d, n)| format!("{n}: {:.1} s", *d as f64 / 100.0))
        .collect();
    Ok(Settled {
        waited_s: start.elapsed().as_secs_f64(),
        busy,
        busiest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line_gives_busy_and_total() {
        let s = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(cpu_times(s), Some((160, 980)));
        assert_eq!(cpu_times("cpu 1 2\n"), None);
        assert_eq!(cpu_times(""), None);
    }

    #[test]
    fn task_stat_names_may_hold_spaces_and_parentheses() {
        let s = "42 (kworker/u2:1-events (x)) R 2 0 0 0 -1 69238880 0 0 0 0 150 250 0 0 20 0 1 0";
        assert_eq!(
            parse_task_stat(s),
            Some(("kworker/u2:1-events (x)".to_string(), 400))
        );
        assert_eq!(parse_task_stat("42 (short) R 2"), None);
    }
}
