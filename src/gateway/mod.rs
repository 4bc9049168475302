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

/// What apply has to know before it starts.
#[derive(Debug)]
pub struct Prepared {
    pub desired: desired::Desired,
    pub observed: Observed,
    pub extra: Extra,
    pub changes: Vec<Change>,
    pub offload: bool,
    pub warnings: Vec<String>,
    /// Everything the kernel showed (ours and not), for reports.
    pub snapshot: crate::kernel::netlink::Snapshot,
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
    if gw.offload != Offload::Off {
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
    if gw.isolation == Isolation::Vrf {
        strict_rp_filter()?;
    }
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
    let snapshot = Netlink::new()?.snapshot()?;
    let observed = observe::observe(&snapshot);
    let public = observe::public_device(&snapshot, &gw.public);
    let desired = desired::build(config, &public, offload);
    let ours: std::collections::BTreeSet<&str> =
        observed.links.iter().map(|l| l.name.as_str()).collect();
    for l in &desired.links {
        if !ours.contains(l.name.as_str()) && observed.index(&l.name).is_some() {
            return Err(GatewayError::Foreign(l.name.clone()));
        }
    }
    let tables: Vec<u32> = config.gateway_tenants().map(|(_, g)| g.id).collect();
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
    Ok(Prepared {
        desired,
        observed,
        extra,
        changes,
        offload,
        warnings,
        snapshot,
    })
}
