//! The sysctls a redirect needs, set with a write-ahead record of their old values so that a
//! clean stop restores them and a restart after SIGKILL can too (see [`crate::state`]).
//!
//! rp_filter needs care: the kernel uses max(conf.all, conf.<dev>), so the TAP only gets an
//! effective 0 when `all` is 0. Lowering `all` would weaken every other interface, so each
//! interface whose own value is below `all` is first raised to it: their effective value never
//! changes, only the TAP's does.

use std::fs;
use std::io;
use tollgate::config::RedirectMode;
use tollgate::kernel::sysctl;

pub use tollgate::kernel::sysctl::{Change, apply, conf_key, read, restore};

/// The changes a redirect mode needs in this network namespace, given its current values.
/// Keys already at the wanted value are left out.
pub fn plan(mode: RedirectMode, tap: &str) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut want = |key: String, value: &str, restore: bool| -> io::Result<()> {
        let original = read(&key)?;
        if original != value {
            out.push(Change {
                key,
                value: value.to_string(),
                original,
                restore,
            });
        }
        Ok(())
    };
    // rp_filter: keep every other device's effective value, give the TAP 0.
    let all: u32 = read("net.ipv4.conf.all.rp_filter")?.parse().unwrap_or(0);
    if all != 0 {
        for dev in fs::read_dir("/proc/sys/net/ipv4/conf")? {
            let dev = dev?.file_name().to_string_lossy().into_owned();
            if dev == "all" || dev == "default" || dev == tap {
                continue;
            }
            let key = conf_key("ipv4", &dev, "rp_filter");
            let cur: u32 = read(&key)?.parse().unwrap_or(0);
            if cur < all {
                want(key, &all.to_string(), true)?;
            }
        }
        want("net.ipv4.conf.all.rp_filter".into(), "0", true)?;
    }
    want(conf_key("ipv4", tap, "rp_filter"), "0", false)?;
    if sysctl::exists(&conf_key("ipv6", tap, "disable_ipv6")) {
        // no router solicitations, DAD or MLD from the TAP to loop back through the daemon
        want(conf_key("ipv6", tap, "disable_ipv6"), "1", false)?;
    }
    if mode == RedirectMode::Route {
        want("net.ipv4.ip_forward".into(), "1", true)?;
        // early demux attaches the local socket on the first pass and ip_forward() then drops
        // the skb: the connection gets RST.
        want("net.ipv4.tcp_early_demux".into(), "0", true)?;
        // fail open: when the TAP goes down its route is ignored and `local` delivers
        want(
            "net.ipv4.conf.all.ignore_routes_with_linkdown".into(),
            "1",
            true,
        )?;
        want(
            conf_key("ipv4", tap, "ignore_routes_with_linkdown"),
            "1",
            false,
        )?;
    }
    Ok(out)
}
