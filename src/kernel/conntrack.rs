//! The conntrack table, read through the `conntrack` tool (optional: `show` reports the count
//! of offloaded flows only where the tool is installed).

/// Flows conntrack marks `[OFFLOAD]` (in the flowtable fast path); None without the tool.
pub fn offloaded_flows() -> Option<usize> {
    let o = std::process::Command::new("conntrack")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(count_offloaded(&String::from_utf8_lossy(&o.stdout)))
}

fn count_offloaded(listing: &str) -> usize {
    listing.lines().filter(|l| l.contains("[OFFLOAD]")).count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_offloaded_lines() {
        let l = "tcp 6 src=10.0.0.7 [OFFLOAD] mark=0 zone=1000 use=2\nudp 17 src=10.0.0.7 mark=0\n";
        assert_eq!(super::count_offloaded(l), 1);
    }
}
