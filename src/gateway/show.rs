//! `tollgate show`: per tenant, what the kernel has of it (devices, routes, EIPs, firewall
//! counters) and the offload state, read back rather than assumed from the config.

use super::{GatewayError, gateway, nft, prepare};
use crate::config::{Config, Isolation};
use crate::names;

/// Per tenant: devices, routes, EIPs, firewall counters and offload, as observed.
#[derive(Debug, serde::Serialize)]
pub struct TenantReport {
    pub name: String,
    pub id: u32,
    pub devices: Vec<String>,
    pub routes: Vec<String>,
    pub eips: Vec<String>,
    pub firewall: Vec<FirewallCounter>,
    /// The tenant's upload limit, when it has one, and who enforces it.
    pub upload: Option<UploadReport>,
}

#[derive(Debug, serde::Serialize)]
pub struct UploadReport {
    /// Configured rate, bits per second (IP bytes).
    pub rate_bits_per_sec: u64,
    /// The shaper enforcing it: the tenant's macvlan exists on its TAP; None when no shaper
    /// is running for it (the upload is then not limited).
    pub shaped_by: Option<ShaperRef>,
}

#[derive(Debug, serde::Serialize)]
pub struct ShaperRef {
    pub tap: String,
    /// The process holding the TAP (None if it could not be read from /proc).
    pub pid: Option<u32>,
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
        let mut devices = vec![super::desired::tenant_device(gw, g)];
        if gw.isolation == Isolation::Vrf {
            devices.insert(0, names::vrf(g.id));
        }
        let devices = devices
            .into_iter()
            .filter(|d| p.observed.links.iter().any(|l| &l.name == d))
            .collect();
        let (chain_in, chain_out) = (names::chain_in(g.id), names::chain_out(g.id));
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
            upload: t.shaping.map(|sh| {
                let mv = names::shaper_macvlan(g.id);
                let shaped_by = p
                    .snapshot
                    .link(&mv)
                    .and_then(|l| l.lower)
                    .and_then(|i| p.snapshot.links.iter().find(|x| x.index == i))
                    .map(|tap| ShaperRef {
                        tap: tap.name.clone(),
                        pid: crate::kernel::tap::owner_pid(&tap.name),
                    });
                UploadReport {
                    rate_bits_per_sec: sh.rate.saturating_mul(8),
                    shaped_by,
                }
            }),
            firewall: counters
                .iter()
                .filter(|(c, ..)| *c == chain_in || *c == chain_out)
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
    let offloaded_flows = crate::kernel::conntrack::offloaded_flows();
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
