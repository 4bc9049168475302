//! Sysctls by their dotted names (`net.ipv4.ip_forward`), and the [`Journal`] both halves
//! share: one record per network namespace of what tollgate changed, who needs it, and the
//! value it found, so a key is put back exactly once, when the last holder lets it go (the
//! gateway and a shaper both need `ip_forward = 1`; stopping one must not break the other).
//!
//! Interface names may contain dots (`eth0.100`); the kernel's own convention, followed here,
//! writes those dots as `/` in the dotted form (`net.ipv4.conf.eth0/100.rp_filter`), so a key
//! always maps to exactly one file under /proc/sys. Keys are checked before any file is
//! touched: only `net.` sysctls that tollgate plans, with path components that cannot climb
//! out of /proc/sys.

use crate::kernel::state::{self, Lock, StateError};
use std::io;
use std::path::{Path, PathBuf};

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
/// Refuses anything but a `net.` key of plain components (no empty, `.` or `..` component, no
/// character outside letters, digits and `-_.@+`).
fn path(key: &str) -> io::Result<PathBuf> {
    path_in(Path::new(PROC_SYS), key)
}

const PROC_SYS: &str = "/proc/sys";

fn path_in(root: &Path, key: &str) -> io::Result<PathBuf> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("sysctl key {key:?}: {why}"),
        )
    };
    if !key.starts_with("net.") {
        return Err(bad("not under net."));
    }
    let mut p = root.to_path_buf();
    for part in key.split('.') {
        let name = part.replace('/', ".");
        if name.is_empty() || name == "." || name == ".." {
            return Err(bad("empty, . or .. component"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c))
        {
            return Err(bad("unexpected character"));
        }
        p.push(name);
    }
    Ok(p)
}

/// True for the keys tollgate itself plans (the gateway's and the shaper's); a journal entry
/// naming any other key is refused, so a tampered record cannot make tollgate write elsewhere.
pub fn planned_key(key: &str) -> bool {
    const EXACT: [&str; 7] = [
        "net.ipv4.ip_forward",
        "net.ipv4.fwmark_reflect",
        "net.ipv4.tcp_fwmark_accept",
        "net.ipv4.conf.all.src_valid_mark",
        "net.ipv4.tcp_early_demux",
        "net.ipv4.conf.all.ignore_routes_with_linkdown",
        "net.ipv4.conf.all.rp_filter",
    ];
    if EXACT.contains(&key) {
        return true;
    }
    // the device a per-device key names (`net.<family>.conf.<dev>.<name>`)
    let dev = |family: &str, name: &str| {
        key.strip_prefix(&format!("net.{family}.conf."))
            .and_then(|rest| rest.strip_suffix(&format!(".{name}")))
            .filter(|dev| !dev.is_empty() && !dev.contains('.'))
    };
    dev("ipv4", "rp_filter").is_some()
        // a device's own, never conf.all's or conf.default's
        || dev("ipv4", "accept_local").is_some_and(|d| d != "all" && d != "default")
        || dev("ipv4", "ignore_routes_with_linkdown").is_some()
        || dev("ipv6", "disable_ipv6").is_some()
}

/// A VRF-entry macvlan's own keys (they vanish with it): no reverse-path filter (packets
/// arrive there whose route back leaves by another device: the tunnel, the public device);
/// `accept_local`, which with no reverse-path filter lets the kernel skip the source check's
/// second route lookup (one more walk through the VRF and its table per packet; the one thing
/// that lookup still refused, a source that is one of the gateway's own addresses, the
/// gateway's ruleset drops on these devices instead); and no IPv6 (no addresses, router
/// solicitations or DAD from thousands of devices). Used for the gateway's macvlans and the
/// shaper's.
pub fn macvlan_keys(m: &str) -> Vec<(String, String)> {
    let mut keys = vec![
        (conf_key("ipv4", m, "rp_filter"), "0".into()),
        (conf_key("ipv4", m, "accept_local"), "1".into()),
    ];
    if exists(&conf_key("ipv6", m, "disable_ipv6")) {
        keys.push((conf_key("ipv6", m, "disable_ipv6"), "1".into()));
    }
    keys
}

/// The dotted key of device `dev`'s setting `name` in `net.ipv4.conf` (or another family).
pub fn conf_key(family: &str, dev: &str, name: &str) -> String {
    format!("net.{family}.conf.{}.{name}", dev.replace('.', "/"))
}

/// A sysctl's current value, trimmed. An unreadable sysctl is an error, never "".
pub fn read(key: &str) -> io::Result<String> {
    std::fs::read_to_string(path(key)?)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("reading sysctl {key}: {e}")))
}

pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key)?, value)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}

/// True when the kernel has this sysctl (e.g. IPv6 keys on a kernel without IPv6).
pub fn exists(key: &str) -> bool {
    path(key).is_ok_and(|p| p.exists())
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

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "{path}: entry {key:?} is not a sysctl tollgate changes (or its value {value:?} is not a number); refusing to use this record. Inspect it, then remove it to start afresh"
    )]
    Tampered {
        path: PathBuf,
        key: String,
        value: String,
    },
    #[error("sysctl {key} must be {want} for {holder}, but {held_by} holds it at {have}")]
    Conflict {
        key: String,
        want: String,
        have: String,
        holder: String,
        held_by: String,
    },
}

/// One sysctl tollgate changed: the value set, the value found, and who needs it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub original: String,
    pub holders: Vec<String>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Record {
    entries: Vec<Entry>,
}

/// The per-namespace record of sysctls tollgate changed (see the module comment). Every
/// operation takes the journal's lock, so the gateway and the shapers of one namespace never
/// interleave.
#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
    lock: PathBuf,
    /// Where the sysctls are: /proc/sys (a scratch directory in unit tests).
    root: PathBuf,
}

fn is_number(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty() && digits.len() <= 11 && digits.chars().all(|c| c.is_ascii_digit())
}

impl Journal {
    /// The journal of this network namespace, under `dir`.
    pub fn for_this_netns(dir: &Path) -> io::Result<Journal> {
        let ino = state::netns_inode()?;
        Ok(Journal {
            path: dir.join(format!("sysctl-netns-{ino}.json")),
            lock: dir.join(format!("sysctl-netns-{ino}.lock")),
            root: PathBuf::from(PROC_SYS),
        })
    }

    fn read(&self, key: &str) -> io::Result<String> {
        std::fs::read_to_string(path_in(&self.root, key)?)
            .map(|s| s.trim().to_string())
            .map_err(|e| io::Error::new(e.kind(), format!("reading sysctl {key}: {e}")))
    }

    fn write(&self, key: &str, value: &str) -> io::Result<()> {
        std::fs::write(path_in(&self.root, key)?, value)
            .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Record, JournalError> {
        let r: Record = state::load(&self.path)?.unwrap_or_default();
        for e in &r.entries {
            if !planned_key(&e.key) || !is_number(&e.original) || !is_number(&e.value) {
                return Err(JournalError::Tampered {
                    path: self.path.clone(),
                    key: e.key.clone(),
                    value: e.original.clone(),
                });
            }
        }
        Ok(r)
    }

    fn store(&self, r: &Record) -> Result<(), JournalError> {
        if r.entries.is_empty() {
            state::remove(&self.path)?;
        } else {
            state::save(&self.path, r)?;
        }
        Ok(())
    }

    /// The value tollgate found before it changed `key`, or the current value if it did not.
    pub fn original(&self, key: &str) -> Result<String, JournalError> {
        let _l = Lock::acquire(&self.lock)?;
        let r = self.load()?;
        match r.entries.iter().find(|e| e.key == key) {
            Some(e) => Ok(e.original.clone()),
            None => Ok(self.read(key)?),
        }
    }

    /// `holder` needs each key at its value: joins an entry that already sets it, or records the
    /// value found and sets it (recorded before written). A key already at the value with no
    /// entry is nobody's change and is not recorded. Refuses, changing nothing, when another
    /// holder needs a different value. Returns the changes written.
    pub fn hold(
        &self,
        holder: &str,
        wants: &[(String, String)],
    ) -> Result<Vec<Change>, JournalError> {
        let _l = Lock::acquire(&self.lock)?;
        let mut r = self.load()?;
        let mut writes = Vec::new();
        for (key, value) in wants {
            path_in(&self.root, key)?;
            if let Some(e) = r.entries.iter_mut().find(|e| &e.key == key) {
                if &e.value != value && e.holders.iter().any(|h| h != holder) {
                    return Err(JournalError::Conflict {
                        key: key.clone(),
                        want: value.clone(),
                        have: e.value.clone(),
                        holder: holder.to_string(),
                        held_by: e.holders.join(", "),
                    });
                }
                if !e.holders.iter().any(|h| h == holder) {
                    e.holders.push(holder.to_string());
                }
                if &e.value != value || self.read(key)? != *value {
                    e.value = value.clone();
                    writes.push(Change {
                        key: key.clone(),
                        value: value.clone(),
                        original: e.original.clone(),
                        restore: true,
                    });
                }
                continue;
            }
            let original = self.read(key)?;
            if &original != value {
                r.entries.push(Entry {
                    key: key.clone(),
                    value: value.clone(),
                    original: original.clone(),
                    holders: vec![holder.to_string()],
                });
                writes.push(Change {
                    key: key.clone(),
                    value: value.clone(),
                    original,
                    restore: true,
                });
            }
        }
        self.store(&r)?;
        for c in &writes {
            self.write(&c.key, &c.value)?;
        }
        Ok(writes)
    }

    /// The entries `holder` holds (alone or with others).
    pub fn held_by(&self, holder: &str) -> Result<Vec<Entry>, JournalError> {
        let _l = Lock::acquire(&self.lock)?;
        Ok(self
            .load()?
            .entries
            .into_iter()
            .filter(|e| e.holders.iter().any(|h| h == holder))
            .collect())
    }

    /// What [`Journal::release`] would restore for `holder`: the entries it holds alone.
    pub fn held_only_by(&self, holder: &str) -> Result<Vec<Entry>, JournalError> {
        let _l = Lock::acquire(&self.lock)?;
        Ok(self
            .load()?
            .entries
            .into_iter()
            .filter(|e| e.holders == [holder])
            .collect())
    }

    /// `holder` no longer needs anything: keys nobody else holds go back to the value found.
    /// Every key is attempted; the errors of those that could not be restored are returned
    /// together (their entries are dropped all the same: a device that is gone has nothing to
    /// restore).
    pub fn release(&self, holder: &str) -> Result<Vec<Entry>, JournalError> {
        let _l = Lock::acquire(&self.lock)?;
        let mut r = self.load()?;
        let mut restored = Vec::new();
        let mut errors = Vec::new();
        r.entries.retain_mut(|e| {
            if !e.holders.iter().any(|h| h == holder) {
                return true;
            }
            e.holders.retain(|h| h != holder);
            if !e.holders.is_empty() {
                return true;
            }
            match self.write(&e.key, &e.original) {
                Ok(()) => restored.push(e.clone()),
                Err(err) => errors.push(err.to_string()),
            }
            false
        });
        self.store(&r)?;
        if !errors.is_empty() {
            return Err(JournalError::Io(io::Error::other(format!(
                "cannot restore: {}",
                errors.join("; ")
            ))));
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_map_to_one_path() {
        assert_eq!(
            path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        let vlan = conf_key("ipv4", "eth0.100", "rp_filter");
        assert_eq!(vlan, "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(
            path(&vlan).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert!(planned_key(&vlan));
    }

    #[test]
    fn keys_cannot_leave_proc_sys_net() {
        for bad in [
            "/etc/passwd",
            "kernel.core_pattern",
            "net.ipv4.conf.//.//.//.etc.passwd",
            "net..x",
            "net.ipv4.conf.a b.rp_filter",
            "net.ipv4.conf.x\";drop.rp_filter",
        ] {
            assert!(path(bad).is_err(), "{bad:?} accepted");
            assert!(!planned_key(bad) || path(bad).is_err(), "{bad:?}");
        }
        assert!(planned_key("net.ipv4.ip_forward"));
        assert!(planned_key("net.ipv6.conf.tg0.disable_ipv6"));
        assert!(!planned_key("net.ipv4.conf.all.forwarding"));
        assert!(!planned_key("net.core.rmem_max"));
    }

    /// An entry macvlan skips the kernel's second source lookup (`accept_local` with no
    /// reverse-path filter), and the journal accepts the keys it is given.
    #[test]
    fn entry_macvlans_accept_local_sources() {
        let keys = macvlan_keys("tge1000");
        for want in [
            ("net.ipv4.conf.tge1000.rp_filter", "0"),
            ("net.ipv4.conf.tge1000.accept_local", "1"),
        ] {
            assert!(
                keys.iter().any(|(k, v)| (k.as_str(), v.as_str()) == want),
                "{want:?} missing in {keys:?}"
            );
        }
        assert!(keys.iter().all(|(k, _)| planned_key(k)), "{keys:?}");
        assert!(!planned_key("net.ipv4.conf.all.accept_local"));
    }

    fn journal(tag: &str) -> (Journal, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tg-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (
            Journal {
                path: dir.join("j.json"),
                lock: dir.join("j.lock"),
                root: dir.join("sys"),
            },
            dir,
        )
    }

    fn set(j: &Journal, key: &str, v: &str) {
        let p = path_in(&j.root, key).unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    fn want(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_last_holder_restores() {
        let (j, dir) = journal("holders");
        set(&j, "net.ipv4.ip_forward", "0");
        set(&j, "net.ipv4.tcp_early_demux", "1");
        // the gateway first: it changes ip_forward and records 0
        let w = j
            .hold("gateway", &[want("net.ipv4.ip_forward", "1")])
            .unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(j.read("net.ipv4.ip_forward").unwrap(), "1");
        // a shaper needs it too (already 1: it joins) and changes early demux
        let w = j
            .hold(
                "shaper:tg0",
                &[
                    want("net.ipv4.ip_forward", "1"),
                    want("net.ipv4.tcp_early_demux", "0"),
                ],
            )
            .unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(j.original("net.ipv4.ip_forward").unwrap(), "0");
        assert_eq!(j.held_only_by("shaper:tg0").unwrap().len(), 1);
        // the shaper stops: early demux back, ip_forward stays for the gateway
        let r = j.release("shaper:tg0").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(j.read("net.ipv4.tcp_early_demux").unwrap(), "1");
        assert_eq!(j.read("net.ipv4.ip_forward").unwrap(), "1");
        // the gateway goes: ip_forward back to 0, the journal file is gone
        j.release("gateway").unwrap();
        assert_eq!(j.read("net.ipv4.ip_forward").unwrap(), "0");
        assert!(!j.path.exists());
        // releasing again is a no-op
        assert!(j.release("gateway").unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn conflicting_values_are_refused_unchanged() {
        let (j, dir) = journal("conflict");
        set(&j, "net.ipv4.conf.all.rp_filter", "2");
        j.hold("shaper:tg0", &[want("net.ipv4.conf.all.rp_filter", "0")])
            .unwrap();
        let e = j
            .hold("other", &[want("net.ipv4.conf.all.rp_filter", "1")])
            .unwrap_err();
        assert!(e.to_string().contains("shaper:tg0"), "{e}");
        assert_eq!(j.read("net.ipv4.conf.all.rp_filter").unwrap(), "0");
        j.release("shaper:tg0").unwrap();
        assert_eq!(j.read("net.ipv4.conf.all.rp_filter").unwrap(), "2");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tampered_journal_is_refused() {
        let (j, dir) = journal("tamper");
        state::ensure_dir(&dir).unwrap();
        for (key, value) in [("/etc/passwd", "0"), ("net.ipv4.ip_forward", "0; rm -rf /")] {
            let r = Record {
                entries: vec![Entry {
                    key: key.into(),
                    value: "1".into(),
                    original: value.into(),
                    holders: vec!["gateway".into()],
                }],
            };
            state::save(&j.path, &r).unwrap();
            assert!(matches!(
                j.release("gateway"),
                Err(JournalError::Tampered { .. })
            ));
        }
        std::fs::write(&j.path, b"{broken").unwrap();
        let e = j.release("gateway").unwrap_err();
        assert!(e.to_string().contains("j.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_is_an_error() {
        let e = read("net.ipv4.no_such_sysctl_tollgate").unwrap_err();
        assert!(e.to_string().contains("net.ipv4.no_such_sysctl_tollgate"));
    }
}
