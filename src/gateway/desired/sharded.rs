//! The gateway spread over shards: network namespaces of a few hundred tenants each.
//!
//! Why: every device of a namespace sits in one of its 256 by-index lists, and every macvlan
//! of a lower in one of the lower's 256 by-MAC lists; the kernel walks such lists per packet.
//! With all tenants in one namespace those lists grow with the tenant count, and a tenant's
//! packets get slower as tenants are added. In shards, the gateway's own namespace holds a
//! constant few devices, and each shard's lists grow only with the tenants of that shard.
//!
//! ```text
//!  gateway namespace                              shard j (namespace <prefix><j>)
//!  eth-pub ─► stamp_public: dst MAC := tgp<id>,   tgl ─► tgp<id> (public entry) ─┐ VRF tgv<id>:
//!             fwd to tgl<j>     (map by EIP)  ──► tgl ─► tgi<id> (tunnel entry) ─┤ zone, DNAT,
//!  tgtun  ─► stamp: dst MAC := tgi<id>,                                          │ firewall, SNAT
//!             fwd to tgl<j>     (map by mark)                                    │
//!  tgtun  ◄── tge<id> (macvlan on tgtun, moved into the shard; lwtunnel routes) ◄┤
//!  eth-pub ◄── tgxp (macvlan on eth-pub, moved into the shard; public routes)   ◄┘
//! ```
//!
//! The gateway's namespace keeps what must be there once: the external tunnel device, the
//! underlay marks, and the stamps, which now also forward the frame to its shard's lower. A
//! shard holds its end of that lower (a veth pair), the tenants' VRFs with their two entry
//! macvlans on it, their tunnel macvlans and one way out to the public side, and the tenants'
//! ruleset as the unsharded gateway writes it, with those devices in place of the shared ones.
//! Packets cross from the gateway's namespace into a shard once (the `fwd`), and leave it by
//! a macvlan whose lower is in the gateway's namespace, so they never cross back.

use super::{
    Desired, PublicDevice, external_device, external_tenant, map, peers_map, ruleset,
    tenant_sysctls, underlay_mark,
};
use crate::config::{Config, GatewayConfig, Ipv4Net, Shards, Tenant, TenantGateway};
use crate::kernel::model::*;
use crate::names::{self, EXTERNAL_DEV, GATEWAY_NFT_TABLE as NFT_TABLE, RTPROT_GATEWAY};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The gateway as namespaces: what its own holds (`front`), and what each shard's holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub front: Desired,
    pub shards: Vec<ShardDesired>,
}

impl Layout {
    /// Policy rules in all namespaces: each namespace's packets walk only its own.
    pub fn rule_count(&self) -> usize {
        self.front.rules.len()
            + self
                .shards
                .iter()
                .map(|s| s.desired.rules.len())
                .sum::<usize>()
    }
}

/// One shard's namespace and contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDesired {
    pub index: u32,
    pub netns: String,
    pub desired: Desired,
}

type Member<'a> = (&'a Tenant, &'a TenantGateway);

/// The kernel objects of `config`, per namespace. Without shards, everything is the front's.
pub fn layout(config: &Config, public: &PublicDevice, offload: bool) -> Layout {
    let Some(gw) = &config.gateway else {
        return Layout::default();
    };
    let Some(sh) = gw.sharding() else {
        return Layout {
            front: super::build(config, public, offload),
            shards: Vec::new(),
        };
    };
    let tenants: Vec<Member> = config.gateway_tenants().collect();
    let mut members: Vec<Vec<Member>> = vec![Vec::new(); sh.count as usize];
    for m in &tenants {
        if let Some(v) = members.get_mut(sh.of(m.1.id) as usize) {
            v.push(*m);
        }
    }
    // a shard without tenants has no namespace
    let shards = members
        .iter()
        .zip(0u32..)
        .filter(|(ts, _)| !ts.is_empty())
        .map(|(ts, j)| ShardDesired {
            index: j,
            netns: sh.netns(j),
            desired: shard(gw, ts, j, public),
        })
        .collect();
    Layout {
        front: front(gw, &tenants, sh),
        shards,
    }
}

/// The gateway's own namespace: the external device, marks by the underlay header, and the
/// stamps that send each tenant's frames to its shard.
fn front(gw: &GatewayConfig, tenants: &[Member], sh: &Shards) -> Desired {
    let mut d = Desired::default();
    let (link, rule) = external_device(gw);
    d.links.push(link);
    d.rules.insert(rule);
    // the tenants' gateway addresses on the external device, as without shards: ARP requests
    // (which the stamps leave alone) are answered here, through the tunnel they came by;
    // their IPv4 packets are stamped and forwarded to the shards before this namespace's
    // stack sees them
    for (_, g) in tenants {
        d.addresses.insert(Address {
            dev: EXTERNAL_DEV.into(),
            addr: g.gateway_ip,
            prefix: 32,
        });
    }
    d.set_ruleset(front_ruleset(gw, tenants, sh));
    d
}

fn front_ruleset(gw: &GatewayConfig, tenants: &[Member], sh: &Shards) -> String {
    let mut s = String::new();
    let lower = |g: &TenantGateway| format!("\"{}\"", names::shard_lower(sh.of(g.id)));
    let mac = |m: [u8; 6]| mac_str(&m);
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    if !tenants.is_empty() {
        s.push_str(&peers_map(gw, tenants));
    }
    let _ = writeln!(
        s,
        "\tchain pre_raw {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tmeta iifkind \"vrf\" accept comment \"tollgate @DIGEST@\""
    );
    if !tenants.is_empty() {
        s.push_str(&underlay_mark(gw));
    }
    let _ = writeln!(s, "\t}}\n}}");
    let eips: Vec<(Ipv4Addr, &TenantGateway)> = tenants
        .iter()
        .flat_map(|(_, g)| g.eips.iter().map(move |(p, _)| (*p, *g)))
        .collect();
    if tenants.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table netdev {NFT_TABLE} {{");
    let mut chain = |name: &str, dev: &str, rule: String| {
        let _ = writeln!(
            s,
            "\tchain {name} {{\n\t\ttype filter hook ingress device \"{dev}\" priority -10; policy accept;\n\t\t{rule}\n\t}}"
        );
    };
    chain(
        "stamp",
        EXTERNAL_DEV,
        format!(
            "meta protocol ip ether daddr set meta mark map {} fwd to meta mark map {}",
            map(tenants
                .iter()
                .map(|(_, g)| (g.id, mac(names::tunnel_entry_macvlan_mac(g.id))))),
            map(tenants.iter().map(|(_, g)| (g.id, lower(g)))),
        ),
    );
    if !eips.is_empty() {
        chain(
            "stamp_public",
            &gw.public,
            format!(
                "meta pkttype host meta protocol ip ether daddr set ip daddr map {} fwd to ip daddr map {}",
                map(eips
                    .iter()
                    .map(|(p, g)| (p, mac(names::public_macvlan_mac(g.id, None))))),
                map(eips.iter().map(|(p, g)| (p, lower(g)))),
            ),
        );
    }
    let _ = writeln!(s, "}}");
    s
}

/// Shard `j`'s namespace: its lower, its way out to the public side, and its tenants.
fn shard(gw: &GatewayConfig, tenants: &[Member], j: u32, public: &PublicDevice) -> Desired {
    let mut d = Desired::default();
    d.links.push(Link {
        name: names::SHARD_LOWER.into(),
        kind: LinkKind::Veth {
            peer: names::shard_lower(j),
        },
        master: None,
    });
    d.links.push(Link {
        name: names::SHARD_PUBLIC.into(),
        kind: LinkKind::Macvlan {
            lower: gw.public.clone(),
            mac: names::shard_public_mac(j, public.mac),
            outside: true,
        },
        master: None,
    });
    let route = |table: u32, dst: Ipv4Net, dev: &str, via: Option<Ipv4Addr>| Route {
        table,
        dst,
        dev: dev.to_string(),
        via,
        onlink: false,
        encap: None,
        proto: RTPROT_GATEWAY,
    };
    for (_, g) in tenants {
        let vrf = names::vrf(g.id);
        let macvlan = |name: String, lower: &str, mac: [u8; 6], outside: bool| Link {
            name,
            kind: LinkKind::Macvlan {
                lower: lower.to_string(),
                mac,
                outside,
            },
            master: Some(vrf.clone()),
        };
        d.links.push(Link {
            name: vrf.clone(),
            kind: LinkKind::Vrf { table: g.id },
            master: None,
        });
        if !g.eips.is_empty() {
            d.links.push(macvlan(
                names::public_macvlan(g.id),
                names::SHARD_LOWER,
                names::public_macvlan_mac(g.id, None),
                false,
            ));
        }
        d.links.push(macvlan(
            names::tunnel_entry_macvlan(g.id),
            names::SHARD_LOWER,
            names::tunnel_entry_macvlan_mac(g.id),
            false,
        ));
        let tunnel = names::gateway_macvlan(g.id);
        d.links.push(macvlan(
            tunnel.clone(),
            EXTERNAL_DEV,
            names::gateway_macvlan_mac(g.id),
            true,
        ));
        // its gateway address, neighbour and routes on its tunnel macvlan, in its VRF (its
        // local services listen in the shard); the device answers no ARP (the gateway's
        // namespace does, and every tenant's tunnel macvlan is sent a copy of each request)
        external_tenant(&mut d, g, &tunnel);
        for s in &public.subnets {
            d.routes.insert(route(g.id, *s, names::SHARD_PUBLIC, None));
        }
        if let Some(nh) = gw.public_gateway {
            d.routes
                .insert(route(g.id, Ipv4Net::DEFAULT, names::SHARD_PUBLIC, Some(nh)));
        }
    }
    d.sysctls = tenant_sysctls();
    d.set_ruleset(ruleset(gw, tenants, public, false, true));
    d
}
