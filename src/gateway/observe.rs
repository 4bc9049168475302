//! What of the kernel is the gateway's, from a [`Snapshot`]. Pure, so what counts as ours is
//! unit-tested: links whose alias starts with `tollgate: ` *and* whose kind is the one the alias
//! records (an alias is only a label: anyone can set it), addresses and permanent neighbours on
//! those links, routes and rules with protocol 246.

use crate::config::Ipv4Net;
use crate::kernel::model::*;
use crate::kernel::netlink::Snapshot;
use crate::names::{ALIAS_PREFIX, RTPROT_GATEWAY};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A link of ours as found in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLink {
    pub name: String,
    pub index: u32,
    /// The alias we stored, without the prefix.
    pub spec: String,
    pub master: Option<String>,
    pub up: bool,
    pub kind: String,
}

/// Everything of ours in the kernel, plus what the desired state needs to know about the rest.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub links: Vec<ObservedLink>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub rules: Vec<Rule>,
    pub neighs: Vec<Neigh>,
    /// Index -> name of every link.
    pub names: BTreeMap<u32, String>,
    /// Name -> index of every link.
    pub indexes: BTreeMap<String, u32>,
    /// The `l3mdev` rule the kernel adds with the first VRF.
    pub l3mdev_rule: bool,
    /// Number of VRF devices, ours or not.
    pub vrf_count: usize,
}

impl Observed {
    pub fn index(&self, name: &str) -> Option<u32> {
        self.indexes.get(name).copied()
    }
}

pub fn observe(s: &Snapshot) -> Observed {
    let names = s.names();
    let links: Vec<ObservedLink> = s
        .links
        .iter()
        .filter_map(|l| {
            let spec = l.alias.as_deref()?.strip_prefix(ALIAS_PREFIX)?;
            // the spec starts with the kind it was created as (`vrf table 1`, `gretap key 1 ...`)
            if spec.split(' ').next() != Some(l.kind.as_str()) {
                return None;
            }
            Some(ObservedLink {
                name: l.name.clone(),
                index: l.index,
                spec: spec.to_string(),
                master: l.master.and_then(|m| names.get(&m).cloned()),
                up: l.up,
                kind: l.kind.clone(),
            })
        })
        .collect();
    let our_names: std::collections::BTreeSet<&str> =
        links.iter().map(|l| l.name.as_str()).collect();
    let ours = |dev: &str| our_names.contains(dev);
    Observed {
        addresses: s
            .addresses
            .iter()
            .filter(|a| ours(&a.dev))
            .cloned()
            .collect(),
        routes: s
            .routes
            .iter()
            .filter(|r| r.proto == RTPROT_GATEWAY)
            .cloned()
            .collect(),
        rules: s
            .rules
            .iter()
            .filter(|r| r.proto == RTPROT_GATEWAY)
            .cloned()
            .collect(),
        neighs: s.neighs.iter().filter(|n| ours(&n.dev)).cloned().collect(),
        l3mdev_rule: s.rules.iter().any(|r| r.l3mdev),
        vrf_count: s.links.iter().filter(|l| l.kind == "vrf").count(),
        indexes: names.iter().map(|(i, n)| (n.clone(), *i)).collect(),
        names,
        links,
    }
}

/// Routes in the tenants' tables (`tables`) that are not ours: neither made by the gateway
/// (protocol 246) nor the kernel's own routes for addresses on our devices. A table that holds
/// such a route is someone else's, and the gateway refuses to merge tenants into it.
pub fn foreign_routes<'a>(s: &'a Snapshot, o: &Observed, tables: &[u32]) -> Vec<&'a Route> {
    let tables: std::collections::BTreeSet<u32> = tables.iter().copied().collect();
    let ours: std::collections::BTreeSet<&str> = o.links.iter().map(|l| l.name.as_str()).collect();
    s.routes
        .iter()
        .filter(|r| tables.contains(&r.table))
        .filter(|r| r.proto != RTPROT_GATEWAY && !ours.contains(r.dev.as_str()))
        .collect()
}

/// The public device `dev` as the desired state needs it: its subnets and MAC.
pub fn public_device(s: &Snapshot, dev: &str) -> super::desired::PublicDevice {
    super::desired::PublicDevice {
        subnets: subnets(s, dev),
        mac: s.links.iter().find(|l| l.name == dev).and_then(|l| l.mac),
        gateway_addresses: s
            .addresses
            .iter()
            .filter(|a| a.dev != crate::names::EXTERNAL_DEV && !a.addr.is_loopback())
            .map(|a| a.addr)
            .collect(),
    }
}

/// The IPv4 subnets of device `dev`'s addresses (the public side tenants may reach).
pub fn subnets(s: &Snapshot, dev: &str) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = s
        .addresses
        .iter()
        .filter(|a| a.dev == dev)
        .filter_map(|a| {
            let mask = u32::MAX.checked_shl(32 - u32::from(a.prefix)).unwrap_or(0);
            Ipv4Net::new(Ipv4Addr::from(u32::from(a.addr) & mask), a.prefix).ok()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::decode::LinkState;

    fn link(index: u32, name: &str, alias: Option<&str>, kind: &str) -> LinkState {
        LinkState {
            mac: None,
            index,
            name: name.into(),
            alias: alias.map(str::to_string),
            kind: kind.into(),
            master: None,
            lower: None,
            lower_netns: None,
            up: true,
        }
    }

    #[test]
    fn ours_is_alias_and_protocol() {
        let mut ours = Rule::all(1002, RuleAction::Lookup(1), RTPROT_GATEWAY);
        ours.fwmark = Some(1);
        let mut l3 = Rule::all(1000, RuleAction::Lookup(0), RTPROT_KERNEL);
        l3.l3mdev = true;
        let s = Snapshot {
            links: vec![
                link(1, "eth0", None, ""),
                link(2, "tgv1", Some("tollgate: vrf table 1"), "vrf"),
                link(3, "other", Some("not ours"), "vrf"),
            ],
            addresses: vec![
                Address {
                    dev: "eth0".into(),
                    addr: Ipv4Addr::new(198, 51, 100, 1),
                    prefix: 24,
                },
                Address {
                    dev: "tgv1".into(),
                    addr: Ipv4Addr::new(10, 0, 0, 1),
                    prefix: 24,
                },
            ],
            rules: vec![ours.clone(), l3, Rule::all(0, RuleAction::Lookup(255), 2)],
            ..Snapshot::default()
        };
        let o = observe(&s);
        assert_eq!(
            o.links.len(),
            1,
            "a veth with a forged VRF alias is not ours"
        );
        assert_eq!(o.links[0].spec, "vrf table 1");
        assert_eq!(o.addresses.len(), 1);
        assert_eq!(o.rules, vec![ours]);
        assert!(o.l3mdev_rule);
        assert_eq!(o.vrf_count, 2);

        // a tenant table: the kernel's local route on our VRF is fine, an operator's is not
        let route = |table, dev: &str, proto| Route {
            table,
            dst: Ipv4Net::DEFAULT,
            dev: dev.into(),
            via: None,
            onlink: false,
            encap: None,
            proto,
        };
        let s2 = Snapshot {
            routes: vec![
                route(1, "tgv1", RTPROT_KERNEL),
                route(1, "eth0", RTPROT_GATEWAY),
                route(1, "eth0", 4),
                route(7, "eth0", 4),
            ],
            ..s.clone()
        };
        let foreign = foreign_routes(&s2, &o, &[1, 2]);
        assert_eq!(foreign, vec![&route(1, "eth0", 4)]);
        assert_eq!(o.index("eth0"), Some(1));
        assert_eq!(
            subnets(&s, "eth0"),
            vec![Ipv4Net::new(Ipv4Addr::new(198, 51, 100, 0), 24).unwrap()]
        );
    }
}
