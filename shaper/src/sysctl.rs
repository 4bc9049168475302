//! The sysctls a redirect needs. Those of the namespace go through the shared journal
//! ([`tollgate::kernel::sysctl::Journal`]): recorded before they change, restored when the last
//! holder (this shaper, another shaper, the gateway) lets them go, including after a crash. The
//! TAP's own keys vanish with the TAP and are set directly.
//!
//! rp_filter needs care: the kernel uses max(conf.all, conf.<dev>), so the TAP only gets an
//! effective 0 when `all` is 0. Lowering `all` would weaken every other interface, so each
//! interface whose own value is below `all` is first raised to it: their effective value never
//! changes, only the TAP's does. The comparison uses the values tollgate found, not the current
//! ones, so a second shaper asks for the same raises as the first and holds them too.

use std::fs;
use std::io;
use tollgate::config::RedirectMode;
use tollgate::kernel::sysctl;

pub use tollgate::kernel::sysctl::{Journal, JournalError, conf_key, read, write};

/// What a redirect mode needs: namespace keys (to hold in the journal) and the TAP's own keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub namespace: Vec<(String, String)>,
    pub tap: Vec<(String, String)>,
}

/// The sysctls a redirect mode needs, given what tollgate found before changing anything
/// (`original`: the journal's record, else the current value).
pub fn plan(
    mode: RedirectMode,
    tap: &str,
    macvlans: &[&str],
    original: impl Fn(&str) -> Result<String, JournalError>,
) -> Result<Needs, JournalError> {
    let mut n = Needs::default();
    let ns = |n: &mut Needs, k: String, v: &str| n.namespace.push((k, v.to_string()));
    // rp_filter: keep every other device's effective value, give the TAP 0.
    let all: u32 = original("net.ipv4.conf.all.rp_filter")?
        .parse()
        .unwrap_or(0);
    if all != 0 {
        for dev in fs::read_dir("/proc/sys/net/ipv4/conf").map_err(JournalError::Io)? {
            let dev = dev
                .map_err(JournalError::Io)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if dev == "all" || dev == "default" || dev == tap || macvlans.contains(&dev.as_str()) {
                continue;
            }
            let key = conf_key("ipv4", &dev, "rp_filter");
            let found: u32 = original(&key)?.parse().unwrap_or(0);
            if found < all {
                ns(&mut n, key, &all.to_string());
            }
        }
    }
    ns(&mut n, "net.ipv4.conf.all.rp_filter".into(), "0");
    n.tap.push((conf_key("ipv4", tap, "rp_filter"), "0".into()));
    if sysctl::exists(&conf_key("ipv6", tap, "disable_ipv6")) {
        // no router solicitations, DAD or MLD from the TAP to loop back through the daemon
        n.tap
            .push((conf_key("ipv6", tap, "disable_ipv6"), "1".into()));
    }
    // gateway tenants' macvlans: frames from the tenant arrive there, its route back is the
    // tunnel (rp_filter would drop them), and they send nothing of their own
    for m in macvlans {
        n.tap.extend(macvlan_keys(m));
    }
    if mode == RedirectMode::Route {
        ns(&mut n, "net.ipv4.ip_forward".into(), "1");
        // early demux attaches the local socket on the first pass and ip_forward() then drops
        // the skb: the connection gets RST.
        ns(&mut n, "net.ipv4.tcp_early_demux".into(), "0");
        // fail open: when the TAP goes down its route is ignored and `local` delivers
        ns(
            &mut n,
            "net.ipv4.conf.all.ignore_routes_with_linkdown".into(),
            "1",
        );
        n.tap.push((
            conf_key("ipv4", tap, "ignore_routes_with_linkdown"),
            "1".into(),
        ));
    }
    Ok(n)
}

pub use tollgate::kernel::sysctl::macvlan_keys;

/// Sets the TAP's own keys (they vanish with it: nothing to restore).
pub fn set_tap(keys: &[(String, String)]) -> io::Result<()> {
    keys.iter().try_for_each(|(k, v)| write(k, v))
}
