//! Netlink messages -> the model, as pure functions: everything tollgate concludes from a dump
//! (which objects exist, which are its own) rests on these, so they are unit-tested with
//! hand-built messages instead of only through a live kernel.
//!
//! A rule or route is decoded only when the model can say all of it: a rule with a selector
//! the model has no field for (source prefix, `not`, uid range, ...) is left out rather than
//! decoded as something broader than it is, so it can never be mistaken for one of ours or for
//! the kernel's plain `local` rule.

use crate::config::Ipv4Net;
use crate::kernel::model::*;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteIpTunnel, RouteLwTunnelEncap, RouteMessage,
    RouteProtocol,
};
use rtnetlink::packet_route::rule::{
    RuleAction as NlRuleAction, RuleAttribute, RuleFlags, RuleMessage,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    /// `IFLA_INFO_KIND` (`vrf`, `vxlan`, `gretap`, `macvlan`, ...); empty for plain devices.
    pub kind: String,
    /// Index of the device it is enslaved to.
    pub master: Option<u32>,
    /// Its Ethernet address (`IFLA_ADDRESS`), when it has one of six bytes.
    pub mac: Option<[u8; 6]>,
    /// Index of the device it sits on (`IFLA_LINK`: a macvlan's lower), when another one in
    /// this namespace.
    pub lower: Option<u32>,
    /// The namespace its lower (or a veth's peer) lives in, when another one: the id this
    /// namespace knows it by (`IFLA_LINK_NETNSID`). `IFLA_LINK` is then an index over there,
    /// so `lower` is None rather than a device of this namespace that happens to share it.
    pub lower_netns: Option<i32>,
    pub up: bool,
}

pub fn link(m: &LinkMessage) -> Option<LinkState> {
    let mut l = LinkState {
        index: m.header.index,
        name: String::new(),
        alias: None,
        kind: String::new(),
        master: None,
        mac: None,
        lower: None,
        lower_netns: None,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            LinkAttribute::Controller(i) => l.master = Some(*i),
            LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Link(i) if *i != m.header.index && *i != 0 => l.lower = Some(*i),
            LinkAttribute::LinkNetNsId(id) => l.lower_netns = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    if l.lower_netns.is_some() {
        l.lower = None;
    }
    (!l.name.is_empty()).then_some(l)
}

/// An IPv4 address, on the device `names` gives for its index.
pub fn address(m: &AddressMessage, names: &BTreeMap<u32, String>) -> Option<Address> {
    let dev = names.get(&m.header.index)?;
    let addr = m.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
        _ => None,
    });
    // point-to-point devices may report only IFA_ADDRESS
    let addr = addr.or_else(|| {
        m.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        })
    })?;
    Some(Address {
        dev: dev.clone(),
        addr,
        prefix: m.header.prefix_len,
    })
}

fn proto_number(p: RouteProtocol) -> u8 {
    u8::from(p)
}

/// The table of a route, from the attribute when it does not fit the header's byte.
pub fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// An IPv4 route with at most one next hop. Multipath routes and routes with selectors the
/// model lacks (source prefix, mark, ...) are left out.
pub fn route(r: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<Route> {
    if r.header.source_prefix_length != 0 || r.header.tos != 0 {
        return None;
    }
    let mut out = Route {
        table: route_table(r),
        dst: Ipv4Net::DEFAULT,
        dev: String::new(),
        via: None,
        onlink: r.header.flags.contains(RouteFlags::Onlink),
        encap: None,
        proto: proto_number(r.header.protocol),
    };
    let (mut dst, mut encap_id, mut encap_dst) = (Ipv4Addr::UNSPECIFIED, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Oif(i) => out.dev = names.get(i).cloned().unwrap_or_default(),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.via = Some(*g),
            RouteAttribute::Encap(e) => {
                for x in e {
                    match x {
                        RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(id)) => {
                            encap_id = u32::try_from(*id).ok()
                        }
                        RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(d)) => {
                            encap_dst = Some(*d)
                        }
                        _ => {}
                    }
                }
            }
            RouteAttribute::MultiPath(_)
            | RouteAttribute::Source(_)
            | RouteAttribute::Mark(_)
            | RouteAttribute::Iif(_)
            | RouteAttribute::Uid(_)
            | RouteAttribute::IpProto(_)
            | RouteAttribute::Sport(_)
            | RouteAttribute::Dport(_) => return None,
            _ => {}
        }
    }
    out.dst = Ipv4Net::new(dst, r.header.destination_prefix_length).ok()?;
    out.encap = match (encap_id, encap_dst) {
        (Some(id), Some(dst)) => Some(Encap { id, dst }),
        _ => None,
    };
    Some(out)
}

/// An IPv4 policy rule the model can say exactly (see the module comment).
pub fn rule(r: &RuleMessage) -> Option<Rule> {
    if r.header.src_len != 0
        || r.header.dst_len != 0
        || r.header.tos != 0
        || r.header.flags.contains(RuleFlags::Invert)
    {
        return None;
    }
    let mut out = Rule::all(0, RuleAction::Prohibit, 0);
    let mut table = u32::from(r.header.table);
    let mut mask = u32::MAX;
    for a in &r.attributes {
        match a {
            RuleAttribute::Priority(p) => out.priority = *p,
            RuleAttribute::Iifname(i) => out.iif = Some(i.clone()),
            RuleAttribute::FwMark(m) => out.fwmark = Some(*m),
            RuleAttribute::FwMask(m) => mask = *m,
            RuleAttribute::TunId(t) => out.tun_id = Some(u32::try_from(*t).ok()?),
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::L3MDev(on) => out.l3mdev = *on,
            RuleAttribute::Protocol(p) => out.proto = proto_number(*p),
            // the kernel reports these unset as -1
            RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            _ => return None,
        }
    }
    if out.fwmark.is_some() && mask != u32::MAX {
        return None;
    }
    out.action = match r.header.action {
        NlRuleAction::ToTable => RuleAction::Lookup(table),
        NlRuleAction::Prohibit => RuleAction::Prohibit,
        _ => return None,
    };
    Some(out)
}

/// A permanent IPv4 neighbour entry (the only kind tollgate makes); others are left out.
pub fn neigh(n: &NeighbourMessage, names: &BTreeMap<u32, String>) -> Option<Neigh> {
    if n.header.state != NeighbourState::Permanent {
        return None;
    }
    let dev = names.get(&n.header.ifindex)?;
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
            NeighbourAttribute::LinkLayerAddress(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neigh {
        dev: dev.clone(),
        ip: ip?,
        mac: mac?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::link::InfoKind;
    use rtnetlink::packet_route::route::RouteHeader;

    fn names() -> BTreeMap<u32, String> {
        [(1, "lo"), (7, "tgtun"), (9, "tgv1000")]
            .into_iter()
            .map(|(i, n)| (i, n.to_string()))
            .collect()
    }

    #[test]
    fn link_with_alias_kind_and_master() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up;
        m.attributes = vec![
            LinkAttribute::IfName("tgtun".into()),
            LinkAttribute::IfAlias("tollgate: gretap external".into()),
            LinkAttribute::Controller(9),
            LinkAttribute::Link(1),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::GreTap)]),
        ];
        let l = link(&m).unwrap();
        assert_eq!(l.name, "tgtun");
        assert_eq!(l.alias.as_deref(), Some("tollgate: gretap external"));
        assert_eq!(l.kind, "gretap");
        assert_eq!(l.master, Some(9));
        assert_eq!(l.lower, Some(1));
        assert!(l.up);
        assert!(link(&LinkMessage::default()).is_none(), "no name, no link");
    }

    #[test]
    fn a_lower_in_another_namespace_is_not_taken_for_a_local_device() {
        let mut m = LinkMessage::default();
        m.header.index = 12;
        m.attributes = vec![
            LinkAttribute::IfName("tgt1000".into()),
            LinkAttribute::Link(7),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::MacVlan)]),
        ];
        let l = link(&m).unwrap();
        // index 7 is some device over there, not this namespace's device 7
        assert_eq!(l.lower, None);
        assert_eq!(l.lower_netns, Some(0));
    }

    #[test]
    fn address_on_named_device() {
        let mut m = AddressMessage::default();
        m.header.index = 7;
        m.header.prefix_len = 32;
        m.attributes = vec![AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
            10, 0, 0, 1,
        )))];
        let a = address(&m, &names()).unwrap();
        assert_eq!(
            (a.dev.as_str(), a.addr, a.prefix),
            ("tgtun", Ipv4Addr::new(10, 0, 0, 1), 32)
        );
        m.header.index = 42;
        assert!(address(&m, &names()).is_none(), "unknown device");
    }

    fn lwt_route() -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header = RouteHeader {
            address_family: AddressFamily::Inet,
            destination_prefix_length: 24,
            table: 252,
            protocol: RouteProtocol::Other(246),
            flags: RouteFlags::Onlink,
            ..RouteHeader::default()
        };
        r.attributes = vec![
            RouteAttribute::Table(1000),
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 0))),
            RouteAttribute::Oif(7),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(169, 254, 3, 232))),
            RouteAttribute::Encap(vec![
                RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(1000)),
                RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(Ipv4Addr::new(172, 31, 0, 11))),
            ]),
        ];
        r
    }

    #[test]
    fn lightweight_tunnel_route() {
        let r = route(&lwt_route(), &names()).unwrap();
        assert_eq!(r.table, 1000, "the attribute wins over the header byte");
        assert_eq!(r.dst.to_string(), "10.0.0.0/24");
        assert_eq!(r.dev, "tgtun");
        assert_eq!(r.via, Some(Ipv4Addr::new(169, 254, 3, 232)));
        assert!(r.onlink);
        assert_eq!(
            r.encap,
            Some(Encap {
                id: 1000,
                dst: Ipv4Addr::new(172, 31, 0, 11)
            })
        );
        assert_eq!(r.proto, 246);
        assert_eq!(
            r.to_string(),
            "route 10.0.0.0/24 via 169.254.3.232 onlink encap ip id 1000 dst 172.31.0.11 key dev tgtun table 1000"
        );
    }

    #[test]
    fn routes_the_model_cannot_say_are_left_out() {
        let mut r = lwt_route();
        r.header.source_prefix_length = 8;
        assert!(route(&r, &names()).is_none(), "source prefix");
        let mut r = lwt_route();
        r.attributes.push(RouteAttribute::MultiPath(vec![]));
        assert!(route(&r, &names()).is_none(), "multipath");
    }

    fn fwmark_rule() -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.action = NlRuleAction::ToTable;
        // as the kernel dumps it (unset suppress_prefixlength is -1)
        m.header.table = 252;
        m.attributes = vec![
            RuleAttribute::Table(1000),
            RuleAttribute::SuppressPrefixLen(u32::MAX),
            RuleAttribute::Protocol(RouteProtocol::Other(246)),
            RuleAttribute::Priority(1002),
            RuleAttribute::FwMark(1000),
            RuleAttribute::FwMask(u32::MAX),
        ];
        m
    }

    #[test]
    fn rules_decode_exactly() {
        let r = rule(&fwmark_rule()).unwrap();
        assert_eq!(r.to_string(), "rule pref 1002 fwmark 1000 lookup 1000");
        assert_eq!(r.proto, 246);
        assert!(!r.is_local_lookup());

        let mut m = fwmark_rule();
        m.attributes = vec![
            RuleAttribute::Priority(1000),
            RuleAttribute::L3MDev(true),
            RuleAttribute::Protocol(RouteProtocol::Kernel),
        ];
        let r = rule(&m).unwrap();
        assert!(r.l3mdev);
        assert_eq!(r.proto, RTPROT_KERNEL);

        let mut m = RuleMessage::default();
        m.header.action = NlRuleAction::ToTable;
        m.header.table = 255;
        m.attributes = vec![
            RuleAttribute::Table(255),
            RuleAttribute::SuppressPrefixLen(u32::MAX),
            RuleAttribute::Protocol(RouteProtocol::Kernel),
        ];
        let local = rule(&m).unwrap();
        assert!(local.is_local_lookup());
        assert_eq!(local.priority, 0);

        let mut m = fwmark_rule();
        m.attributes.push(RuleAttribute::TunId(2000));
        m.attributes.push(RuleAttribute::Iifname("tgtun".into()));
        let r = rule(&m).unwrap();
        assert_eq!(
            r.to_string(),
            "rule pref 1002 iif tgtun fwmark 1000 tun_id 2000 lookup 1000"
        );
    }

    #[test]
    fn rules_with_selectors_the_model_lacks_are_left_out() {
        let mut m = fwmark_rule();
        m.header.src_len = 24;
        assert!(rule(&m).is_none(), "from prefix");
        let mut m = fwmark_rule();
        m.header.flags = RuleFlags::Invert;
        assert!(rule(&m).is_none(), "not");
        let mut m = fwmark_rule();
        m.attributes
            .retain(|a| !matches!(a, RuleAttribute::FwMask(_)));
        m.attributes.push(RuleAttribute::FwMask(0xff));
        assert!(rule(&m).is_none(), "partial mask");
        let mut m = fwmark_rule();
        m.attributes.push(RuleAttribute::Oifname("eth0".into()));
        assert!(rule(&m).is_none(), "oif");
        let mut m = fwmark_rule();
        m.header.action = NlRuleAction::Goto;
        assert!(rule(&m).is_none(), "goto");
        // a local lookup with a selector is not the plain local rule
        let mut m = RuleMessage::default();
        m.header.action = NlRuleAction::ToTable;
        m.attributes = vec![
            RuleAttribute::Table(255),
            RuleAttribute::SuppressPrefixLen(0),
        ];
        assert!(rule(&m).is_none());
    }

    #[test]
    fn permanent_neighbours_only() {
        let mut n = NeighbourMessage::default();
        n.header.ifindex = 7;
        n.header.state = NeighbourState::Permanent;
        n.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(
                169, 254, 3, 232,
            ))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0x10, 7]),
        ];
        let x = neigh(&n, &names()).unwrap();
        assert_eq!(
            x.to_string(),
            "neigh 169.254.3.232 lladdr 02:00:00:00:10:07 dev tgtun permanent"
        );
        n.header.state = NeighbourState::Reachable;
        assert!(neigh(&n, &names()).is_none());
    }
}
