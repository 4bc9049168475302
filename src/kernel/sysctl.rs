//! Sysctls by their dotted names (`net.ipv4.ip_forward`), and the journal of changes both
//! halves keep: each change records the value it found, so a clean stop (or the next start after
//! a crash, from the state file) can put it back.
//!
//! Interface names may contain dots (`eth0.100`); the kernel's own convention, followed here,
//! writes those dots as `/` in the dotted form (`net.ipv4.conf.eth0/100.rp_filter`), so a key
//! always maps to exactly one file under /proc/sys.

use std::io;
use std::path::PathBuf;

/// A change to one sysctl: the value to set, the value found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub key: String,
    pub value: String,
    pub original: String,
    /// False for keys of a device that vanishes with its owner (nothing to restore).
    pub restore: bool,
}

/// The /proc/sys path of a dotted key: dots separate levels, `/` stands for a dot in a name.
fn path(key: &str) -> PathBuf {
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    PathBuf::from("/proc/sys").join(rel)
}

/// The dotted key of device `dev`'s setting `name` in `net.ipv4.conf` (or another family).
pub fn conf_key(family: &str, dev: &str, name: &str) -> String {
    format!("net.{family}.conf.{}.{name}", dev.replace('.', "/"))
}

/// A sysctl's current value, trimmed. An unreadable sysctl is an error, never "".
pub fn read(key: &str) -> io::Result<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("reading sysctl {key}: {e}")))
}

pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key), value)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}

/// True when the kernel has this sysctl (e.g. IPv6 keys on a kernel without IPv6).
pub fn exists(key: &str) -> bool {
    path(key).exists()
}

/// Applies changes in order; stops at the first error.
pub fn apply(changes: &[Change]) -> io::Result<()> {
    changes.iter().try_for_each(|c| write(&c.key, &c.value))
}

/// Restores the original values, newest first; logs and skips what fails (e.g. an interface
/// that is gone).
pub fn restore(changes: &[Change]) {
    for c in changes.iter().rev().filter(|c| c.restore) {
        if let Err(e) = write(&c.key, &c.original) {
            tracing::warn!(key = %c.key, original = %c.original, "cannot restore sysctl: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_map_to_one_path() {
        assert_eq!(
            path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        let vlan = conf_key("ipv4", "eth0.100", "rp_filter");
        assert_eq!(vlan, "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(
            path(&vlan),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
    }

    #[test]
    fn unreadable_is_an_error() {
        let e = read("net.ipv4.no_such_sysctl_tollgate").unwrap_err();
        assert!(e.to_string().contains("net.ipv4.no_such_sysctl_tollgate"));
    }
}
