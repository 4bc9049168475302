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

mod apply;
mod creation_order;
pub mod desired;
pub mod nft;
pub mod observe;
pub mod plan;
pub mod probe;
mod show;

pub use apply::{apply, destroy, lock, plan_destroy};
pub use show::{
    FirewallCounter, OffloadReport, Report, ShaperRef, TenantReport, UploadReport, show,
};

use crate::config::{Config, GatewayConfig, Isolation, Offload, Tunnel, TunnelMode};
use crate::kernel::netlink::{Netlink, NetlinkError};
use crate::kernel::state::StateError;
use crate::names;
use observe::Observed;
use plan::{Change, Extra};
use probe::Feature;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the config has no [gateway] section")]
    NoGateway,
    #[error("this kernel lacks {}; nothing was changed", .0.join("; "))]
    Missing(Vec<String>),
    #[error("{0}")]
    Probe(String),
    #[error("{0}; nothing was changed")]
    Refused(String),
    #[error(
        "device {0:?} exists but is not tollgate's (no `tollgate:` alias): rename or remove it; nothing was changed"
    )]
    Foreign(String),
    #[error(
        "routing table {table} already holds routes that are not tollgate's ({routes}): a tenant's table must be empty; choose another id or remove them; nothing was changed"
    )]
    ForeignTable { table: u32, routes: String },
    #[error(
        "nft table {0} exists but was not made by tollgate (it has no tollgate version marker): rename or delete it; nothing was changed"
    )]
    ForeignRuleset(&'static str),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] crate::kernel::netns::NetnsError),
    #[error(transparent)]
    Sysctl(#[from] crate::kernel::sysctl::JournalError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{failed}\n  {undone} change(s) of this run were undone")]
    Applied { failed: String, undone: usize },
    #[error(
        "{} of {total} removal(s) failed; everything else was removed (run destroy again once fixed):\n  {}",
        failed.len(),
        failed.join("\n  ")
    )]
    Destroyed { total: usize, failed: Vec<String> },
}

/// The kernel's limit on the devices of one flowtable (`NFT_NETDEVICE_MAX`).
pub const FLOWTABLE_DEVICES_MAX: usize = 256;

/// One network namespace's part of the gateway: what it should hold, what it holds, and the
/// changes between the two.
#[derive(Debug, Default)]
pub struct NsPlan {
    pub desired: desired::Desired,
    pub observed: Observed,
    pub extra: Extra,
    pub changes: Vec<Change>,
    /// Everything the kernel showed (ours and not), for reports.
    pub snapshot: crate::kernel::netlink::Snapshot,
}

/// A shard's namespace and its plan.
#[derive(Debug)]
pub struct ShardPlan {
    pub index: u32,
    pub netns: String,
    /// False: the namespace is made first (its plan then creates everything in it).
    pub exists: bool,
    pub plan: NsPlan,
}

/// What apply has to know before it starts.
#[derive(Debug)]
pub struct Prepared {
    /// The gateway's own namespace (the one tollgate runs in).
    pub front: NsPlan,
    pub shards: Vec<ShardPlan>,
    /// Shard namespaces of ours the config no longer has (fewer shards): removed whole.
    pub stale_shards: Vec<String>,
    pub offload: bool,
    pub warnings: Vec<String>,
}

impl Prepared {
    /// Every planned change, shards included, and one per namespace to make or remove.
    pub fn change_count(&self) -> usize {
        self.front.changes.len()
            + self
                .shards
                .iter()
                .map(|s| s.plan.changes.len() + usize::from(!s.exists))
                .sum::<usize>()
            + self.stale_shards.len()
    }
}

fn gateway(config: &Config) -> Result<&GatewayConfig, GatewayError> {
    config.gateway.as_ref().ok_or(GatewayError::NoGateway)
}

/// Features the config needs, and whether offload is wanted.
pub fn needed_features(gw: &GatewayConfig) -> Vec<Feature> {
    let mut f = vec![Feature::NftNatZones, Feature::NftFib];
    if gw.isolation == Isolation::Vrf {
        f.push(Feature::Vrf);
        f.push(Feature::VrfEntry);
    }
    f.push(match gw.tunnel {
        Tunnel::Gretap => Feature::Gretap,
        Tunnel::Vxlan => Feature::Vxlan,
    });
    if gw.tunnel_mode == TunnelMode::External {
        f.push(Feature::Lwtunnel);
    }
    if gw.tunnel_mode == TunnelMode::External || gw.isolation == Isolation::Table {
        f.push(Feature::PolicyRules);
    }
    // a sharded gateway's flows are not offloaded (config refuses offload = "on" with shards)
    if gw.offload != Offload::Off && gw.sharding().is_none() {
        f.push(Feature::Flowtable);
    }
    f
}

/// The current value of each sysctl the desired state sets; an unreadable one is an error.
fn read_sysctls(d: &desired::Desired) -> Result<Vec<(String, String)>, GatewayError> {
    d.sysctls
        .iter()
        .map(|s| {
            crate::kernel::sysctl::read(&s.key)
                .map(|v| (s.key.clone(), v))
                .map_err(|err| GatewayError::Io {
                    what: "reading sysctls".into(),
                    err,
                })
        })
        .collect()
}

/// With VRF isolation, packets enter a tenant's VRF on tollgate's macvlans while their route
/// back leaves by the tunnel or the public device: a strict reverse-path filter drops them. The
/// kernel applies max(conf.all, conf.<device>), so tollgate's 0 on its macvlans only holds when
/// `all` is not 1.
fn strict_rp_filter() -> Result<(), GatewayError> {
    let key = "net.ipv4.conf.all.rp_filter";
    let v = crate::kernel::sysctl::read(key).map_err(|err| GatewayError::Io {
        what: "reading sysctls".into(),
        err,
    })?;
    if v == "1" {
        return Err(GatewayError::Refused(format!(
            "{key} = 1 (strict) would drop tenant traffic entering its VRF through tollgate's macvlans (their route back is another device): set it to 0 or 2 (loose); each interface's own rp_filter still applies"
        )));
    }
    Ok(())
}

/// Probes the kernel, reads it, and plans. Changes nothing.
pub fn prepare(config: &Config) -> Result<Prepared, GatewayError> {
    let gw = gateway(config)?;
    // with shards, the VRFs and their entries are in the shards (checked there)
    if gw.isolation == Isolation::Vrf && gw.sharding().is_none() {
        strict_rp_filter()?;
    }
    let missing = probe::missing(&needed_features(gw)).map_err(GatewayError::Probe)?;
    let mut warnings = Vec::new();
    let mut offload = gw.offload != Offload::Off;
    if offload && gw.sharding().is_some() {
        offload = false;
        warnings.push(
            "offload = \"auto\": a shard's flows enter by its lower and leave by other devices, which a flowtable cannot short-cut; flows are not offloaded".into(),
        );
    }
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
    // a flowtable hooks at most FLOWTABLE_DEVICES_MAX devices: the public one and the tunnels
    let devices = 1 + match gw.tunnel_mode {
        TunnelMode::External => 1,
        TunnelMode::PerTenant => config.gateway_tenants().count(),
    };
    if offload && devices > FLOWTABLE_DEVICES_MAX {
        let why = format!(
            "a flowtable holds at most {FLOWTABLE_DEVICES_MAX} devices and tunnel_mode = \"per-tenant\" with {} tenants needs {devices} (one tunnel each, and the public device)",
            devices - 1
        );
        if gw.offload == Offload::On {
            return Err(GatewayError::Refused(format!(
                "offload = \"on\": {why}; use tunnel_mode = \"external\" (one device for all) or offload = \"off\" or \"auto\""
            )));
        }
        offload = false;
        warnings.push(format!(
            "offload = \"auto\": {why}; flows are not offloaded"
        ));
    }
    if gw.sharding().is_some() && crate::kernel::netns::private_mounts() {
        return Err(GatewayError::Refused(
            "shards are network namespaces pinned under /run/netns, and this process has a mount namespace of its own (as under `ip netns exec` or a service with private mounts): they would vanish with it. Run tollgate in the host's mount namespace (to work in another network namespace: `nsenter --net=/run/netns/NAME tollgate ...`)".into(),
        ));
    }
    let snapshot = Netlink::new()?.snapshot()?;
    let public = observe::public_device(&snapshot, &gw.public);
    let layout = desired::layout(config, &public, offload);
    let front = plan_namespace(layout.front, snapshot)?;
    let mut shards = Vec::new();
    for s in layout.shards {
        let exists = crate::kernel::netns::exists(&s.netns);
        let plan = if exists {
            let d = s.desired;
            let netns = s.netns.clone();
            crate::kernel::netns::run_in(&s.netns, move || {
                let snapshot = Netlink::new()?.snapshot()?;
                if !ours_shard(&snapshot) {
                    return Err(GatewayError::Refused(format!(
                        "network namespace {netns:?} exists and is not a shard of tollgate's (no `{}` device with a tollgate alias): rename or delete it, or choose another shard_prefix",
                        names::SHARD_LOWER
                    )));
                }
                if gw.isolation == Isolation::Vrf {
                    strict_rp_filter()?;
                }
                plan_namespace(d, snapshot)
            })??
        } else {
            let lower = names::shard_lower(s.index);
            if front.observed.index(&lower).is_some() {
                return Err(GatewayError::Foreign(lower));
            }
            let changes = plan::plan(&s.desired, &Observed::default(), &Extra::default());
            NsPlan {
                desired: s.desired,
                changes,
                ..NsPlan::default()
            }
        };
        shards.push(ShardPlan {
            index: s.index,
            netns: s.netns,
            exists,
            plan,
        });
    }
    let keep: std::collections::BTreeSet<u32> = shards.iter().map(|s| s.index).collect();
    let stale_shards = stale_shards(gw, &keep)?;
    Ok(Prepared {
        front,
        shards,
        stale_shards,
        offload,
        warnings,
    })
}

/// True when the namespace of this snapshot is a shard tollgate made: its lower carries
/// tollgate's alias.
fn ours_shard(s: &crate::kernel::netlink::Snapshot) -> bool {
    s.link(names::SHARD_LOWER).is_some_and(|l| {
        l.kind == "veth"
            && l.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(names::ALIAS_PREFIX))
    })
}

/// Shard namespaces of tollgate's (`<prefix><number>`) but those numbered as in `keep`.
fn stale_shards(
    gw: &GatewayConfig,
    keep: &std::collections::BTreeSet<u32>,
) -> Result<Vec<String>, GatewayError> {
    let prefix = gw.shard_prefix();
    let mut out = Vec::new();
    let names = crate::kernel::netns::list(prefix)?;
    for n in names {
        let Some(j) = n
            .strip_prefix(prefix)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        if keep.contains(&j) || n != names::shard_netns(prefix, j) {
            continue;
        }
        let ours = crate::kernel::netns::run_in(&n, || {
            Netlink::new()
                .and_then(|nl| nl.snapshot())
                .map(|s| ours_shard(&s))
        })??;
        if ours {
            out.push(n);
        }
    }
    Ok(out)
}

/// One namespace's plan: reads it (the calling thread's), refuses what is not ours, and plans.
fn plan_namespace(
    desired: desired::Desired,
    snapshot: crate::kernel::netlink::Snapshot,
) -> Result<NsPlan, GatewayError> {
    let observed = observe::observe(&snapshot);
    let ours: std::collections::BTreeSet<&str> =
        observed.links.iter().map(|l| l.name.as_str()).collect();
    for l in &desired.links {
        if !ours.contains(l.name.as_str()) && observed.index(&l.name).is_some() {
            return Err(GatewayError::Foreign(l.name.clone()));
        }
    }
    let tables = desired.tables();
    if let Some(r) = observe::foreign_routes(&snapshot, &observed, &tables).first() {
        let routes: Vec<String> = observe::foreign_routes(&snapshot, &observed, &[r.table])
            .iter()
            .map(|r| r.to_string())
            .collect();
        return Err(GatewayError::ForeignTable {
            table: r.table,
            routes: routes.join("; "),
        });
    }
    // only the marker rule is read here (one chain), not the whole table: at 10,000 tenants
    // listing the table takes seconds
    let digest = nft::marker()?;
    if digest.as_deref().is_some_and(str::is_empty) {
        return Err(GatewayError::ForeignRuleset("inet tollgate_gw"));
    }
    if digest.is_none() && nft::netdev_table_exists()? {
        return Err(GatewayError::ForeignRuleset("netdev tollgate_gw"));
    }
    let extra = Extra {
        sysctls: read_sysctls(&desired)?,
        ruleset_digest: digest,
    };
    let changes = plan::plan(&desired, &observed, &extra);
    Ok(NsPlan {
        desired,
        observed,
        extra,
        changes,
        snapshot,
    })
}
