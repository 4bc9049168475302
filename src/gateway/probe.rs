//! What the running kernel can do, found by trying it in a throwaway network namespace (a
//! thread that unshares its netns), so probing never touches the real one: creating a VRF
//! there, for instance, would add the kernel's l3mdev rule.
//!
//! Each feature names the kernel config options it needs, so a refusal can say exactly what
//! to build or load.

use crate::config::Ipv4Net;
use crate::kernel::model::{Encap, Link, LinkKind, RT_TABLE_MAIN, Route, Rule, RuleAction};
use crate::kernel::netlink::{Netlink, RouteAdd};
use crate::kernel::nft;
use std::net::Ipv4Addr;

/// Protocol number on the probe's throwaway routes and rules (`proto static`).
const RTPROT_STATIC: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Feature {
    Vrf,
    Gretap,
    Vxlan,
    Lwtunnel,
    PolicyRules,
    VrfEntry,
    NftNatZones,
    NftFib,
    Flowtable,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Vrf => "VRF devices",
            Feature::Gretap => "GRE/gretap tunnels",
            Feature::Vxlan => "VXLAN tunnels",
            Feature::Lwtunnel => "lightweight tunnel routes (encap ip)",
            Feature::PolicyRules => "policy routing rules (ip rule)",
            Feature::VrfEntry => "macvlan devices and nftables netdev ingress (entry into VRFs)",
            Feature::NftNatZones => "nftables NAT with conntrack zones",
            Feature::NftFib => "nftables route lookups (fib, refusing local source addresses)",
            Feature::Flowtable => "nftables flowtable (flow offload)",
        }
    }

    pub fn config_options(self) -> &'static str {
        match self {
            Feature::Vrf => "CONFIG_NET_VRF",
            Feature::Gretap => "CONFIG_NET_IPGRE (and CONFIG_NET_IPGRE_DEMUX)",
            Feature::Vxlan => "CONFIG_VXLAN",
            Feature::Lwtunnel => "CONFIG_LWTUNNEL, CONFIG_NET_IP_TUNNEL",
            Feature::PolicyRules => "CONFIG_IP_MULTIPLE_TABLES",
            Feature::VrfEntry => "CONFIG_MACVLAN, CONFIG_NF_TABLES_NETDEV",
            Feature::NftNatZones => "CONFIG_NFT_NAT, CONFIG_NFT_CT, CONFIG_NF_CONNTRACK_ZONES",
            Feature::NftFib => "CONFIG_NFT_FIB_INET, CONFIG_NFT_FIB_IPV4",
            Feature::Flowtable => {
                "CONFIG_NF_FLOW_TABLE, CONFIG_NF_FLOW_TABLE_INET, CONFIG_NFT_FLOW_OFFLOAD"
            }
        }
    }

    /// "VRF devices (CONFIG_NET_VRF)"
    pub fn describe(self) -> String {
        format!("{} ({})", self.name(), self.config_options())
    }
}

/// Probes each feature; returns those that failed, with the kernel's answer.
pub fn missing(features: &[Feature]) -> Result<Vec<(Feature, String)>, String> {
    let features = features.to_vec();
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which exits when done.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot create a network namespace to probe the kernel: {}",
                std::io::Error::last_os_error()
            ));
        }
        let nl = Netlink::new().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for f in features {
            if let Err(e) = try_feature(&nl, f) {
                out.push((f, e));
            }
        }
        Ok(out)
    })
    .join()
    .map_err(|_| "the kernel probe panicked".to_string())?
}

fn load(ruleset: &str) -> Result<(), String> {
    nft::load_text(ruleset).map_err(|e| e.to_string())
}

fn try_feature(nl: &Netlink, f: Feature) -> Result<(), String> {
    let link = |name: &str, kind: LinkKind| Link {
        name: name.into(),
        kind,
        master: None,
    };
    let lo = Ipv4Addr::LOCALHOST;
    let text = |e: crate::kernel::netlink::NetlinkError| e.to_string();
    match f {
        Feature::Vrf => nl
            .link_create(&link("p-vrf", LinkKind::Vrf { table: 10 }))
            .map_err(text),
        Feature::Gretap => nl
            .link_create(&link(
                "p-gre",
                LinkKind::Gretap {
                    key: Some(1),
                    local: Some(lo),
                    remote: Some(lo),
                },
            ))
            .map_err(text),
        Feature::Vxlan => nl
            .link_create(&link(
                "p-vx",
                LinkKind::Vxlan {
                    vni: Some(1),
                    local: lo,
                    remote: Some(lo),
                    port: 4789,
                    underlay: "lo".into(),
                },
            ))
            .map_err(text),
        Feature::Lwtunnel => {
            nl.link_create_veth("p-lwt", "p-lwt1").map_err(text)?;
            nl.link_set_up("p-lwt").map_err(text)?;
            let dst = Ipv4Net::new(Ipv4Addr::new(10, 255, 0, 0), 24).map_err(|e| e.to_string())?;
            nl.route_add(
                &Route {
                    table: RT_TABLE_MAIN,
                    dst,
                    dev: "p-lwt".into(),
                    via: None,
                    onlink: false,
                    encap: Some(Encap {
                        id: 1,
                        dst: Ipv4Addr::new(127, 0, 0, 2),
                    }),
                    proto: RTPROT_STATIC,
                },
                RouteAdd::Create,
            )
            .map_err(text)
        }
        Feature::PolicyRules => {
            let mut r = Rule::all(100, RuleAction::Lookup(10), RTPROT_STATIC);
            r.fwmark = Some(1);
            nl.rule_add(&r).map_err(text)
        }
        Feature::VrfEntry => {
            nl.link_create_veth("p-ve0", "p-ve1").map_err(text)?;
            nl.link_create_macvlan("p-mv", "p-ve0", [2, 0, 0, 0, 0, 9], None)
                .map_err(text)?;
            load(
                "table netdev p {\n\
                 chain s { type filter hook ingress device \"p-ve0\" priority -10; meta protocol ip ether daddr set ip daddr map { 10.0.0.1 : 02:00:00:00:00:09 }\n}\n}\n",
            )
        }
        Feature::NftNatZones => load(
            "table inet p {\n\
             chain r { type filter hook prerouting priority raw; ct zone set 1\n}\n\
             chain n { type nat hook prerouting priority dstnat; ip daddr 198.51.100.1 dnat ip to 10.0.0.1\n}\n\
             chain s { type nat hook postrouting priority srcnat; ct zone 1 snat ip to 198.51.100.1\n}\n}\n",
        ),
        Feature::NftFib => load(&format!(
            "table inet p {{\n\
             chain r {{ type filter hook prerouting priority raw; {} drop\n}}\n}}\n",
            crate::gateway::desired::GATEWAY_SOURCES
        )),
        Feature::Flowtable => {
            nl.link_create_veth("p-ft0", "p-ft1").map_err(text)?;
            load(
                "table inet pf {\n\
                 flowtable ft { hook ingress priority filter; devices = { \"p-ft0\" }; }\n\
                 chain f { type filter hook forward priority filter; meta l4proto tcp flow add @ft\n}\n}\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_config_options() {
        assert!(Feature::Vrf.describe().contains("CONFIG_NET_VRF"));
        assert!(
            Feature::Flowtable
                .describe()
                .contains("CONFIG_NFT_FLOW_OFFLOAD")
        );
    }
}
