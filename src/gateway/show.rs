//! `tollgate show`: per tenant, what the kernel has of it (devices, routes, EIPs, firewall
//! counters) and the offload state, read back rather than assumed from the config.

use super::{GatewayError, NsPlan, gateway, prepare};
use crate::config::{Config, Isolation};
use crate::names;

/// Per tenant: devices, routes, EIPs, firewall counters and offload, as observed.
#[derive(Debug, serde::Serialize)]
pub struct TenantReport {
    pub name: String,
    pub id: u32,
    /// The shard's network namespace its devices (and local services) are in, when sharded.
    pub shard: Option<String>,
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

/// Each chain's rule counters, in rule order, and the flowtable, of the calling thread's
/// namespace: read straight from the kernel (listing the table through nft builds nft's whole
/// cache first: seconds at 10,000 tenants).
type Counters = (
    std::collections::HashMap<String, std::vec::IntoIter<(u64, u64)>>,
    Option<(String, Vec<String>)>,
);

fn counters() -> Result<Counters, GatewayError> {
    let io = |err| GatewayError::Io {
        what: "reading the gateway's nft counters".into(),
        err,
    };
    let by_chain = crate::kernel::nft_dump::rule_counters(names::GATEWAY_NFT_TABLE)
        .map_err(io)?
        .into_iter()
        .map(|(chain, counters)| (chain, counters.into_iter()))
        .collect();
    let flowtable = crate::kernel::nft_dump::flowtables(names::GATEWAY_NFT_TABLE)
        .map_err(io)?
        .into_iter()
        .next();
    Ok((by_chain, flowtable))
}

pub fn show(config: &Config) -> Result<Report, GatewayError> {
    let p = prepare(config)?;
    let gw = gateway(config)?;
    let (by_chain, flowtable) = counters()?;
    let mut tenants = match gw.sharding() {
        None => tenant_reports(config, &p.front, by_chain, None, |_| true),
        Some(sh) => {
            let mut all = Vec::new();
            for s in &p.shards {
                if !s.exists {
                    continue;
                }
                let (by_chain, _) = crate::kernel::netns::run_in(&s.netns, counters)??;
                all.extend(tenant_reports(
                    config,
                    &s.plan,
                    by_chain,
                    Some(&s.netns),
                    |id| sh.of(id) == s.index,
                ));
            }
            all
        }
    };
    // in the config's order
    let order: std::collections::HashMap<u32, usize> = config
        .gateway_tenants()
        .enumerate()
        .map(|(i, (_, g))| (g.id, i))
        .collect();
    tenants.sort_by_key(|t| order.get(&t.id).copied());
    let offloaded_flows = crate::kernel::conntrack::offloaded_flows();
    Ok(Report {
        tenants,
        ruleset: p.front.extra.ruleset_digest.clone(),
        offload: OffloadReport {
            flowtable: flowtable.is_some(),
            devices: flowtable.map(|(_, devs)| devs).unwrap_or_default(),
            offloaded_flows,
        },
        pending_changes: p.change_count(),
    })
}

/// The reports of the tenants (those `include` takes) whose objects are in the namespace
/// `plan` observed, with that namespace's counters.
fn tenant_reports(
    config: &Config,
    plan: &NsPlan,
    mut by_chain: std::collections::HashMap<String, std::vec::IntoIter<(u64, u64)>>,
    shard: Option<&str>,
    include: impl Fn(u32) -> bool,
) -> Vec<TenantReport> {
    let Some(gw) = config.gateway.as_ref() else {
        return Vec::new();
    };
    // index everything once: a tenant's lookups are then map reads, not scans (10,000 tenants)
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let ours: BTreeSet<&str> = plan
        .observed
        .links
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    let mut routes: HashMap<u32, Vec<String>> = HashMap::new();
    for r in &plan.observed.routes {
        routes.entry(r.table).or_default().push(r.to_string());
    }
    let links: HashMap<&str, &crate::kernel::netlink::decode::LinkState> = plan
        .snapshot
        .links
        .iter()
        .map(|l| (l.name.as_str(), l))
        .collect();
    let by_index: HashMap<u32, &str> = plan
        .snapshot
        .links
        .iter()
        .map(|l| (l.index, l.name.as_str()))
        .collect();
    let mut owners: BTreeMap<String, Option<u32>> = BTreeMap::new();
    let mut tenants = Vec::new();
    for (t, g) in config.gateway_tenants().filter(|(_, g)| include(g.id)) {
        let mut devices = vec![super::desired::tenant_device(gw, g)];
        if gw.isolation == Isolation::Vrf {
            devices.insert(0, names::vrf(g.id));
            // the macvlans the tenant's traffic enters its VRF on (and, in a shard, leaves
            // it by towards the tunnel)
            devices.push(names::gateway_macvlan(g.id));
            devices.push(names::tunnel_entry_macvlan(g.id));
            devices.push(names::public_macvlan(g.id));
        }
        let devices = devices
            .into_iter()
            .filter(|d| ours.contains(d.as_str()))
            .collect();
        tenants.push(TenantReport {
            name: t.name.clone(),
            id: g.id,
            shard: shard.map(str::to_string),
            devices,
            routes: routes.remove(&g.id).unwrap_or_default(),
            eips: g.eips.iter().map(|(a, b)| format!("{a} -> {b}")).collect(),
            upload: t.shaping.map(|sh| {
                let mv = names::shaper_macvlan(g.id);
                let shaped_by = links
                    .get(mv.as_str())
                    .and_then(|l| l.lower)
                    .and_then(|i| by_index.get(&i))
                    .map(|tap| ShaperRef {
                        tap: tap.to_string(),
                        pid: *owners
                            .entry(tap.to_string())
                            .or_insert_with(|| crate::kernel::tap::owner_pid(tap)),
                    });
                UploadReport {
                    rate_bits_per_sec: sh.rate.saturating_mul(8),
                    shaped_by,
                }
            }),
            firewall: super::desired::firewall_rules(g)
                .into_iter()
                .filter_map(|r| {
                    let (packets, bytes) = by_chain.get_mut(&r.chain)?.next()?;
                    Some(FirewallCounter {
                        rule: r.summary(),
                        chain: r.chain,
                        packets,
                        bytes,
                    })
                })
                .collect(),
        });
    }
    tenants
}
