//! The gateway control plane: config -> desired kernel objects -> plan -> apply.
//!
//! ```text
//!  config ──► desired (pure) ──┐
//!                              ├──► plan (pure) ──► apply: netlink one object at a time,
//!  kernel ──► observed ────────┘                     nftables one transaction
//! ```
//! `prepare` refuses before anything changes: a feature the kernel lacks is named with its
//! CONFIG_ option unless the config chose a variant without it. `apply` records the sysctls
//! it changes (for `destroy`) and, if a step fails, removes what this run created.

pub mod desired;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod plan;
pub mod probe;

use crate::config::{Config, GatewayConfig, Isolation, Offload, Tunnel, TunnelMode};
use netlink::{Netlink, Observed};
use plan::{Change, Extra};
use probe::Feature;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the config has no [gateway] section")]
    NoGateway,
    #[error("this kernel lacks {}; nothing was changed", .0.join("; "))]
    Missing(Vec<String>),
    #[error("{0}")]
    Probe(String),
    #[error(
        "device {0:?} exists but is not tollgate's (no `tollgate:` alias): rename or remove it; nothing was changed"
    )]
    Foreign(String),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{failed}\n  {undone} change(s) of this run were undone")]
    Applied { failed: String, undone: usize },
}

/// What apply has to know before it starts.
#[derive(Debug)]
pub struct Prepared {
    pub desired: desired::Desired,
    pub observed: Observed,
    pub extra: Extra,
    pub changes: Vec<Change>,
    pub offload: bool,
    pub warnings: Vec<String>,
    /// Our nft table as `nft -j` lists it (None if absent).
    pub listing: Option<serde_json::Value>,
}

fn gateway(config: &Config) -> Result<&GatewayConfig, GatewayError> {
    config.gateway.as_ref().ok_or(GatewayError::NoGateway)
}

/// Features the config needs, and whether offload is wanted.
pub fn needed_features(gw: &GatewayConfig) -> Vec<Feature> {
    let mut f = vec![Feature::NftNatZones];
    if gw.isolation == Isolation::Vrf {
        f.push(Feature::Vrf);
    }
    f.push(match gw.tunnel {
        Tunnel::Gretap => Feature::Gretap,
        Tunnel::Vxlan => Feature::Vxlan,
    });
    if gw.tunnel_mode == TunnelMode::External {
        f.push(Feature::Lwtunnel);
        f.push(Feature::TunIdRule);
    }
    if gw.offload != Offload::Off {
        f.push(Feature::Flowtable);
    }
    f
}

fn read_sysctls(d: &desired::Desired) -> Vec<(String, String)> {
    d.sysctls
        .iter()
        .map(|s| {
            let v = crate::sysctl::read(&s.key).unwrap_or_default();
            (s.key.clone(), v)
        })
        .collect()
}

/// Probes the kernel, reads it, and plans. Changes nothing.
pub fn prepare(config: &Config) -> Result<Prepared, GatewayError> {
    let gw = gateway(config)?;
    let missing = probe::missing(&needed_features(gw)).map_err(GatewayError::Probe)?;
    let mut warnings = Vec::new();
    let mut offload = gw.offload != Offload::Off;
    let mut fatal = Vec::new();
    for (f, why) in missing {
        tracing::debug!(feature = ?f, "probe failed: {why}");
        if f == Feature::Flowtable && gw.offload == Offload::Auto {
            offload = false;
            warnings.push(format!(
                "offload = \"auto\": this kernel lacks {}; flows are not offloaded",
                f.describe()
            ));
            continue;
        }
        let hint = match f {
            Feature::Vrf => " (or set isolation = \"table\")",
            Feature::Gretap => " (or set tunnel = \"vxlan\")",
            Feature::Flowtable => " (or set offload = \"off\" or \"auto\")",
            _ => "",
        };
        fatal.push(format!("{}{hint}", f.describe()));
    }
    if !fatal.is_empty() {
        return Err(GatewayError::Missing(fatal));
    }
    let nl = Netlink::new()?;
    let observed = nl.observe()?;
    let public = nl.subnets(&gw.public)?;
    let desired = desired::build(config, &public, offload);
    for l in &desired.links {
        let ours = observed.links.iter().any(|o| o.name == l.name);
        if !ours && observed.index(&l.name).is_some() {
            return Err(GatewayError::Foreign(l.name.clone()));
        }
    }
    let listing = nft::list()?;
    let extra = Extra {
        sysctls: read_sysctls(&desired),
        ruleset_digest: nft::digest(&listing),
    };
    let changes = plan::plan(&desired, &observed, &extra);
    Ok(Prepared {
        desired,
        observed,
        extra,
        changes,
        offload,
        warnings,
        listing,
    })
}

/// What apply records for destroy: sysctl originals, and whether the l3mdev rule predates us.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub sysctls: Vec<(String, String)>,
    pub l3mdev_rule_preexisting: Option<bool>,
}

fn state_path(gw: &GatewayConfig) -> Result<PathBuf, GatewayError> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/self/ns/net")
        .map_err(|err| GatewayError::Io {
            what: "netns".into(),
            err,
        })?
        .ino();
    Ok(gw.state_dir.join(format!("gateway-{ino}.json")))
}

/// An exclusive lock on this namespace's gateway state, held while apply or destroy runs, so
/// two runs never interleave their changes. Released when dropped (or when the process dies).
pub struct Lock {
    _file: std::fs::File,
}

pub fn lock(config: &Config) -> Result<Lock, GatewayError> {
    use std::os::fd::AsRawFd;
    let path = state_path(gateway(config)?)?.with_extension("lock");
    let io = |what: &'static str| {
        let p = path.display().to_string();
        move |err| GatewayError::Io {
            what: format!("{what} {p}"),
            err,
        }
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io("creating the directory of"))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tracing::warn!(
            "another tollgate apply/destroy holds {}; waiting",
            path.display()
        );
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("locking")(std::io::Error::last_os_error()));
        }
    }
    Ok(Lock { _file: f })
}

fn load_state(path: &PathBuf) -> State {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(path: &PathBuf, s: &State) -> Result<(), GatewayError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |err| GatewayError::Io { what, err }
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io("creating"))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())
        .map_err(io("writing"))?;
    std::fs::rename(&tmp, path).map_err(io("writing"))
}

fn write_sysctl(key: &str, value: &str) -> Result<(), GatewayError> {
    crate::sysctl::write(key, value).map_err(|err| GatewayError::Io {
        what: format!("sysctl {key}={value}"),
        err,
    })
}

fn execute(nl: &Netlink, d: &desired::Desired, c: &Change) -> Result<(), GatewayError> {
    match c {
        Change::Sysctl { key, to, .. } | Change::RestoreSysctl { key, to } => {
            write_sysctl(key, to)?
        }
        Change::CreateLink { link } => nl.create_link(link)?,
        Change::RecreateLink { link, .. } => {
            nl.delete_link(&link.name)?;
            nl.create_link(link)?;
        }
        Change::SetMaster { link, master } => nl.set_master(link, master.as_deref())?,
        Change::SetUp { link } => nl.set_up(link)?,
        Change::AddAddress { address } => nl.add_address(address)?,
        Change::AddNeigh { neigh } => nl.add_neigh(neigh)?,
        Change::AddRoute { route } => nl.add_route(route)?,
        Change::AddRule { rule } => nl.add_rule(rule)?,
        Change::Ruleset { .. } => nft::apply(&d.ruleset)?,
        Change::DeleteRule { rule } => nl.delete_rule(rule)?,
        Change::DeleteRoute { route } => nl.delete_route(route)?,
        Change::DeleteNeigh { neigh } => nl.delete_neigh(neigh)?,
        Change::DeleteAddress { address } => nl.delete_address(address)?,
        Change::DeleteLink { link } => nl.delete_link(link)?,
        Change::DeleteRuleset => nft::delete()?,
        Change::DeleteL3mdevRule => nl.delete_l3mdev_rule()?,
    }
    Ok(())
}

/// The inverse of a change that created something (for rollback); None for others.
fn undo(c: &Change) -> Option<Change> {
    Some(match c {
        Change::Sysctl { key, from, .. } => Change::RestoreSysctl {
            key: key.clone(),
            to: from.clone(),
        },
        Change::CreateLink { link } => Change::DeleteLink {
            link: link.name.clone(),
        },
        Change::AddAddress { address } => Change::DeleteAddress {
            address: address.clone(),
        },
        Change::AddNeigh { neigh } => Change::DeleteNeigh {
            neigh: neigh.clone(),
        },
        Change::AddRoute { route } => Change::DeleteRoute {
            route: route.clone(),
        },
        Change::AddRule { rule } => Change::DeleteRule { rule: rule.clone() },
        Change::Ruleset { replace: false, .. } => Change::DeleteRuleset,
        _ => return None,
    })
}

/// Carries out a prepared plan. On failure, undoes what this run created, newest first.
pub fn apply(config: &Config, p: &Prepared) -> Result<(), GatewayError> {
    let gw = gateway(config)?;
    if p.changes.is_empty() {
        return Ok(());
    }
    let path = state_path(gw)?;
    let mut state = load_state(&path);
    for c in &p.changes {
        if let Change::Sysctl { key, from, .. } = c
            && !state.sysctls.iter().any(|(k, _)| k == key)
        {
            state.sysctls.push((key.clone(), from.clone()));
        }
    }
    if state.l3mdev_rule_preexisting.is_none() {
        state.l3mdev_rule_preexisting = Some(p.observed.l3mdev_rule);
    }
    save_state(&path, &state)?;
    let nl = Netlink::new()?;
    let mut done: Vec<&Change> = Vec::new();
    for c in &p.changes {
        if let Err(e) = execute(&nl, &p.desired, c) {
            let mut undone = 0;
            for d in done.iter().rev() {
                if let Some(u) = undo(d) {
                    match execute(&nl, &p.desired, &u) {
                        Ok(()) => undone += 1,
                        Err(e2) => tracing::error!("undoing `{d}`: {e2}"),
                    }
                }
            }
            return Err(GatewayError::Applied {
                failed: format!("`{c}` failed: {e}"),
                undone,
            });
        }
        done.push(c);
    }
    Ok(())
}

/// Plans the removal of everything tollgate made (no kernel probing needed).
pub fn plan_destroy(config: &Config) -> Result<Vec<Change>, GatewayError> {
    let gw = gateway(config)?;
    let nl = Netlink::new()?;
    let observed = nl.observe()?;
    let state = load_state(&state_path(gw)?);
    let d = desired::Desired {
        sysctls: state
            .sysctls
            .iter()
            .map(|(k, v)| model::Sysctl {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    };
    let extra = Extra {
        sysctls: read_sysctls(&d),
        ruleset_digest: nft::digest(&nft::list()?),
    };
    Ok(plan::destroy(
        &observed,
        &extra,
        &state.sysctls,
        state.l3mdev_rule_preexisting.unwrap_or(true),
    ))
}

/// Removes everything tollgate made, and the state file.
pub fn destroy(config: &Config, changes: &[Change]) -> Result<(), GatewayError> {
    let gw = gateway(config)?;
    let nl = Netlink::new()?;
    let empty = desired::Desired::default();
    for c in changes {
        execute(&nl, &empty, c)?;
    }
    let path = state_path(gw)?;
    if path.exists() {
        std::fs::remove_file(&path).map_err(|err| GatewayError::Io {
            what: format!("removing {}", path.display()),
            err,
        })?;
    }
    Ok(())
}

/// Per tenant: devices, routes, EIPs, firewall counters and offload, as observed.
#[derive(Debug, serde::Serialize)]
pub struct TenantReport {
    pub name: String,
    pub id: u32,
    pub devices: Vec<String>,
    pub routes: Vec<String>,
    pub eips: Vec<String>,
    pub firewall: Vec<FirewallCounter>,
}

#[derive(Debug, serde::Serialize)]
pub struct FirewallCounter {
    pub chain: String,
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub tenants: Vec<TenantReport>,
    pub ruleset: Option<String>,
    pub offload: OffloadReport,
    pub pending_changes: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct OffloadReport {
    pub flowtable: bool,
    pub devices: Vec<String>,
    /// Flows conntrack marks [OFFLOAD] (None when the conntrack tool is not installed).
    pub offloaded_flows: Option<usize>,
}

pub fn show(config: &Config) -> Result<Report, GatewayError> {
    let p = prepare(config)?;
    let listing = &p.listing;
    let counters = listing.as_ref().map(nft::counters).unwrap_or_default();
    let gw = gateway(config)?;
    let mut tenants = Vec::new();
    for (t, g) in config.gateway_tenants() {
        let mut devices = vec![desired::tenant_device(gw, g)];
        if gw.isolation == Isolation::Vrf {
            devices.insert(0, desired::vrf_name(g.id));
        }
        let devices = devices
            .into_iter()
            .filter(|d| p.observed.links.iter().any(|l| &l.name == d))
            .collect();
        let suffix = t.name.replace('-', "_");
        tenants.push(TenantReport {
            name: t.name.clone(),
            id: g.id,
            devices,
            routes: p
                .observed
                .routes
                .iter()
                .filter(|r| r.table == g.id)
                .map(|r| r.to_string())
                .collect(),
            eips: g.eips.iter().map(|(a, b)| format!("{a} -> {b}")).collect(),
            firewall: counters
                .iter()
                .filter(|(c, ..)| *c == format!("in_{suffix}") || *c == format!("out_{suffix}"))
                .map(|(c, r, pk, by)| FirewallCounter {
                    chain: c.clone(),
                    rule: r.clone(),
                    packets: *pk,
                    bytes: *by,
                })
                .collect(),
        });
    }
    let flowtable = listing
        .as_ref()
        .and_then(|l| l["nftables"].as_array().cloned())
        .into_iter()
        .flatten()
        .find_map(|o| o.get("flowtable").cloned());
    let offloaded_flows = std::process::Command::new("conntrack")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .matches("[OFFLOAD]")
                .count()
        });
    Ok(Report {
        tenants,
        ruleset: p.extra.ruleset_digest.clone(),
        offload: OffloadReport {
            flowtable: flowtable.is_some(),
            devices: flowtable
                .and_then(|f| f["dev"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            offloaded_flows,
        },
        pending_changes: p.changes.len(),
    })
}
