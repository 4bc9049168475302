//! The gateway's kernel objects over rtnetlink: read back what is ours, and make or remove one
//! object at a time. One builder per object kind, named as the kernel names it.
//!
//! Ours means: links whose alias starts with `tollgate: `, addresses and permanent neighbours
//! on those links, routes and rules with protocol 246.

use super::model::*;
use crate::config::Ipv4Net;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteIpTunnel, RouteIpTunnelFlags,
    RouteLwTunnelEncap, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::rule::{RuleAction as NlRuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, LinkGre, LinkUnspec, LinkVrf, LinkVxlan, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {err}")]
    Kernel { what: String, err: rtnetlink::Error },
    #[error("{0}")]
    Missing(String),
}

fn k(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |err| NetlinkError::Kernel { what, err }
}

/// Every IPv4 policy rule.
pub async fn dump_rules(h: &Handle) -> Result<Vec<RuleMessage>, rtnetlink::Error> {
    h.rule().get(IpVersion::V4).execute().try_collect().await
}

/// Every IPv4 route, in every table.
pub async fn dump_routes(h: &Handle) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let mut q = RouteMessage::default();
    q.header.address_family = AddressFamily::Inet;
    h.route().get(q).execute().try_collect().await
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

/// A link as found in the kernel.
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
    /// The `l3mdev` rule the kernel adds with the first VRF.
    pub l3mdev_rule: bool,
    /// Number of VRF devices, ours or not.
    pub vrf_count: usize,
}

impl Observed {
    pub fn index(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| *n == name).map(|(i, _)| *i)
    }
}

/// A netlink connection on its own single-threaded runtime.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    pub fn new() -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::Socket)?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
            tokio::spawn(conn);
            Ok::<_, NetlinkError>(handle)
        })?;
        Ok(Netlink { rt, handle })
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    pub fn observe(&self) -> Result<Observed, NetlinkError> {
        let h = self.handle.clone();
        self.run(async move {
            let mut o = Observed::default();
            let links: Vec<LinkMessage> = h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(k("list links"))?;
            let mut masters = BTreeMap::new();
            for l in &links {
                let mut name = None;
                for a in &l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::Controller(m) => {
                            masters.insert(l.header.index, *m);
                        }
                        LinkAttribute::LinkInfo(infos)
                            if infos
                                .iter()
                                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vrf))) =>
                        {
                            o.vrf_count += 1;
                        }
                        _ => {}
                    }
                }
                if let Some(n) = name {
                    o.names.insert(l.header.index, n);
                }
            }
            for l in &links {
                let alias = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfAlias(s) => Some(s.clone()),
                    _ => None,
                });
                let Some(spec) =
                    alias.and_then(|a| a.strip_prefix(ALIAS_PREFIX).map(str::to_string))
                else {
                    continue;
                };
                let kind = l
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                            LinkInfo::Kind(k) => Some(k.to_string()),
                            _ => None,
                        }),
                        _ => None,
                    })
                    .unwrap_or_default();
                o.links.push(ObservedLink {
                    name: o.names.get(&l.header.index).cloned().unwrap_or_default(),
                    index: l.header.index,
                    spec,
                    master: masters
                        .get(&l.header.index)
                        .and_then(|m| o.names.get(m).cloned()),
                    up: l.header.flags.contains(LinkFlags::Up),
                    kind,
                });
            }
            let ours: BTreeMap<u32, String> =
                o.links.iter().map(|l| (l.index, l.name.clone())).collect();

            let addrs: Vec<AddressMessage> = h
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(k("list addresses"))?;
            for a in addrs {
                let Some(dev) = ours.get(&a.header.index) else {
                    continue;
                };
                let ip = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Local(IpAddr::V4(v))
                    | AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                    _ => None,
                });
                if let Some(ip) = ip {
                    o.addresses.push(Address {
                        dev: dev.clone(),
                        addr: ip,
                        prefix: a.header.prefix_len,
                    });
                }
            }

            for r in dump_routes(&h).await.map_err(k("list routes"))? {
                if r.header.protocol != RouteProtocol::Other(RTPROT_GATEWAY) {
                    continue;
                }
                let table = route_table(&r);
                let (mut dst, mut dev, mut via, mut encap_id, mut encap_dst) =
                    (Ipv4Addr::UNSPECIFIED, String::new(), None, None, None);
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                        RouteAttribute::Oif(i) => dev = o.names.get(i).cloned().unwrap_or_default(),
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
                        RouteAttribute::Encap(e) => {
                            for x in e {
                                match x {
                                    RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(id)) => {
                                        encap_id = Some(*id as u32)
                                    }
                                    RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(d)) => {
                                        encap_dst = Some(*d)
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let Ok(dst) = Ipv4Net::new(dst, r.header.destination_prefix_length) else {
                    continue;
                };
                o.routes.push(Route {
                    table,
                    dst,
                    dev,
                    via,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                    encap: match (encap_id, encap_dst) {
                        (Some(id), Some(dst)) => Some(Encap { id, dst }),
                        _ => None,
                    },
                });
            }

            for r in dump_rules(&h).await.map_err(k("list rules"))? {
                if r.header.action == NlRuleAction::ToTable
                    && r.attributes
                        .iter()
                        .any(|a| matches!(a, RuleAttribute::L3MDev(true)))
                {
                    o.l3mdev_rule = true;
                }
                if !r
                    .attributes
                    .contains(&RuleAttribute::Protocol(RouteProtocol::Other(
                        RTPROT_GATEWAY,
                    )))
                {
                    continue;
                }
                let mut rule = Rule {
                    priority: 0,
                    iif: None,
                    fwmark: None,
                    tun_id: None,
                    action: RuleAction::Prohibit,
                };
                let mut table = u32::from(r.header.table);
                for a in &r.attributes {
                    match a {
                        RuleAttribute::Priority(p) => rule.priority = *p,
                        RuleAttribute::Iifname(i) => rule.iif = Some(i.clone()),
                        RuleAttribute::FwMark(m) => rule.fwmark = Some(*m),
                        RuleAttribute::TunId(t) => rule.tun_id = Some(*t as u32),
                        RuleAttribute::Table(t) => table = *t,
                        _ => {}
                    }
                }
                rule.action = match r.header.action {
                    NlRuleAction::Prohibit => RuleAction::Prohibit,
                    _ => RuleAction::Lookup(table),
                };
                o.rules.push(rule);
            }

            let neighs: Vec<NeighbourMessage> = h
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
                .try_collect()
                .await
                .map_err(k("list neighbours"))?;
            for n in neighs {
                let Some(dev) = ours.get(&n.header.ifindex) else {
                    continue;
                };
                if n.header.state != NeighbourState::Permanent {
                    continue;
                }
                let mut ip = None;
                let mut mac = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
                        NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                            let mut x = [0u8; 6];
                            x.copy_from_slice(m);
                            mac = Some(x);
                        }
                        _ => {}
                    }
                }
                if let (Some(ip), Some(mac)) = (ip, mac) {
                    o.neighs.push(Neigh {
                        dev: dev.clone(),
                        ip,
                        mac,
                    });
                }
            }
            Ok(o)
        })
    }

    fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        let h = self.handle.clone();
        let name = name.to_string();
        self.run(async move {
            let mut s = h.link().get().match_name(name.clone()).execute();
            match s.try_next().await {
                Ok(Some(l)) => Ok(l.header.index),
                _ => Err(NetlinkError::Missing(format!(
                    "device {name:?} does not exist"
                ))),
            }
        })
    }

    pub fn create_link(&self, l: &Link) -> Result<(), NetlinkError> {
        let msg = match &l.kind {
            LinkKind::Vrf { table } => LinkVrf::new(&l.name, *table).build(),
            LinkKind::Vxlan {
                vni,
                local,
                remote,
                port,
                underlay,
            } => {
                let dev = self.index_of(underlay)?;
                let mut b = LinkVxlan::new(&l.name, vni.unwrap_or(0))
                    .local(*local)
                    .port(*port)
                    .dev(dev);
                if let Some(r) = remote {
                    b = b.remote(*r);
                }
                if vni.is_none() {
                    b = b.collect_metadata(true);
                }
                b.learning(false).build()
            }
            LinkKind::Gretap { key, local, remote } => {
                let mut b = LinkGre::new_gretap(&l.name);
                if let Some(a) = local {
                    b = b.local(*a);
                }
                if let Some(a) = remote {
                    b = b.remote(*a);
                }
                match key {
                    Some(k) => {
                        use rtnetlink::packet_route::link::GreIOFlags;
                        b = b
                            .iflags(GreIOFlags::Key)
                            .oflags(GreIOFlags::Key)
                            .ikey(*k)
                            .okey(*k);
                    }
                    None => b = b.collect_metadata(true),
                }
                b.build()
            }
        };
        let h = self.handle.clone();
        let what = format!("create {l}");
        self.run(async move { h.link().add(msg).execute().await.map_err(k(what)) })?;
        // the kernel takes IFLA_IFALIAS only on a change, not at creation
        let idx = self.index_of(&l.name)?;
        let msg = LinkUnspec::new_with_index(idx)
            .append_extra_attribute(LinkAttribute::IfAlias(l.alias()))
            .build();
        let h = self.handle.clone();
        let what = format!("set alias of {}", l.name);
        if let Err(e) = self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) })
        {
            // not recognisable as ours: do not leave it behind
            let _ = self.delete_link(&l.name);
            return Err(e);
        }
        if let Some(m) = &l.master {
            self.set_master(&l.name, Some(m))?;
        }
        self.set_up(&l.name)
    }

    pub fn set_master(&self, name: &str, master: Option<&str>) -> Result<(), NetlinkError> {
        let idx = self.index_of(name)?;
        let b = LinkUnspec::new_with_index(idx);
        let msg = match master {
            Some(m) => b.controller(self.index_of(m)?).build(),
            None => b.nocontroller().build(),
        };
        let h = self.handle.clone();
        let what = format!("set {name} master {master:?}");
        self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) })
    }

    pub fn set_up(&self, name: &str) -> Result<(), NetlinkError> {
        let idx = self.index_of(name)?;
        let msg = LinkUnspec::new_with_index(idx).up().build();
        let h = self.handle.clone();
        let what = format!("set {name} up");
        self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) })
    }

    pub fn delete_link(&self, name: &str) -> Result<(), NetlinkError> {
        let idx = self.index_of(name)?;
        let h = self.handle.clone();
        let what = format!("delete link {name}");
        self.run(async move { h.link().del(idx).execute().await.map_err(k(what)) })
    }

    pub fn add_address(&self, a: &Address) -> Result<(), NetlinkError> {
        let idx = self.index_of(&a.dev)?;
        let h = self.handle.clone();
        let what = format!("add {a}");
        let (ip, prefix) = (a.addr, a.prefix);
        self.run(async move {
            let mut req = h.address().add(idx, IpAddr::V4(ip), prefix);
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
            req.execute().await.map_err(k(what))
        })
    }

    pub fn delete_address(&self, a: &Address) -> Result<(), NetlinkError> {
        let idx = self.index_of(&a.dev)?;
        let h = self.handle.clone();
        let what = format!("delete {a}");
        let (ip, prefix) = (a.addr, a.prefix);
        self.run(async move {
            let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
                .index(idx)
                .address(ip, prefix)
                .build();
            h.address().del(msg).execute().await.map_err(k(what))
        })
    }

    pub fn add_neigh(&self, n: &Neigh) -> Result<(), NetlinkError> {
        let idx = self.index_of(&n.dev)?;
        let h = self.handle.clone();
        let what = format!("add {n}");
        let (ip, mac) = (n.ip, n.mac);
        self.run(async move {
            h.neighbours()
                .add(idx, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(k(what))
        })
    }

    pub fn delete_neigh(&self, n: &Neigh) -> Result<(), NetlinkError> {
        let idx = self.index_of(&n.dev)?;
        let h = self.handle.clone();
        let what = format!("delete {n}");
        let ip = n.ip;
        self.run(async move {
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.ifindex = idx;
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
            h.neighbours().del(msg).execute().await.map_err(k(what))
        })
    }

    fn route_message(&self, r: &Route) -> Result<RouteMessage, NetlinkError> {
        let idx = self.index_of(&r.dev)?;
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(r.table)
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .output_interface(idx)
            .protocol(RouteProtocol::Other(RTPROT_GATEWAY));
        match r.via {
            Some(v) if r.onlink => b = b.gateway(v).onlink(),
            Some(v) => b = b.gateway(v),
            None => b = b.scope(RouteScope::Link),
        }
        if let Some(e) = &r.encap {
            b = b.encap_ip(vec![
                RouteIpTunnel::Id(u64::from(e.id)),
                RouteIpTunnel::Destination(e.dst),
                RouteIpTunnel::Flags(RouteIpTunnelFlags::Key),
            ]);
        }
        let mut m = b.build();
        if r.onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
        Ok(m)
    }

    pub fn add_route(&self, r: &Route) -> Result<(), NetlinkError> {
        let msg = self.route_message(r)?;
        let h = self.handle.clone();
        let what = format!("add {r}");
        self.run(async move {
            h.route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(k(what))
        })
    }

    pub fn delete_route(&self, r: &Route) -> Result<(), NetlinkError> {
        let msg = self.route_message(r)?;
        let h = self.handle.clone();
        let what = format!("delete {r}");
        self.run(async move { h.route().del(msg).execute().await.map_err(k(what)) })
    }

    fn rule_message(r: &Rule) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.attributes.push(RuleAttribute::Priority(r.priority));
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(
                RTPROT_GATEWAY,
            )));
        if let Some(i) = &r.iif {
            m.attributes.push(RuleAttribute::Iifname(i.clone()));
        }
        if let Some(mark) = r.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(u32::MAX));
        }
        if let Some(t) = r.tun_id {
            m.attributes.push(RuleAttribute::TunId(u64::from(t)));
        }
        match r.action {
            RuleAction::Lookup(t) => {
                m.header.action = NlRuleAction::ToTable;
                if t < 256 {
                    m.header.table = t as u8;
                }
                m.attributes.push(RuleAttribute::Table(t));
            }
            RuleAction::Prohibit => m.header.action = NlRuleAction::Prohibit,
        }
        m
    }

    pub fn add_rule(&self, r: &Rule) -> Result<(), NetlinkError> {
        let h = self.handle.clone();
        let what = format!("add {r}");
        let msg = Self::rule_message(r);
        self.run(async move {
            let mut req = h.rule().add();
            *req.message_mut() = msg;
            req.execute().await.map_err(k(what))
        })
    }

    pub fn delete_rule(&self, r: &Rule) -> Result<(), NetlinkError> {
        let h = self.handle.clone();
        let what = format!("delete {r}");
        let msg = Self::rule_message(r);
        self.run(async move { h.rule().del(msg).execute().await.map_err(k(what)) })
    }

    /// Removes the kernel's `l3mdev` rule (added with the first VRF).
    pub fn delete_l3mdev_rule(&self) -> Result<(), NetlinkError> {
        let h = self.handle.clone();
        self.run(async move {
            for r in dump_rules(&h).await.map_err(k("list rules"))? {
                if r.attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::L3MDev(true)))
                {
                    h.rule()
                        .del(r)
                        .execute()
                        .await
                        .map_err(k("delete the l3mdev rule"))?;
                }
            }
            Ok(())
        })
    }

    /// IPv4 subnets of a device's addresses (the public side tenants may reach).
    pub fn subnets(&self, dev: &str) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let idx = self.index_of(dev)?;
        let h = self.handle.clone();
        self.run(async move {
            let addrs: Vec<AddressMessage> = h
                .address()
                .get()
                .set_link_index_filter(idx)
                .execute()
                .try_collect()
                .await
                .map_err(k("list addresses"))?;
            let mut out = Vec::new();
            for a in addrs {
                for x in &a.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(v)) = x {
                        let len = a.header.prefix_len;
                        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(u32::from(*v) & mask), len)
                            && !out.contains(&n)
                        {
                            out.push(n);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
    }
}
