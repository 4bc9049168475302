//! Kernel objects as plain data: what the gateway's `desired` state is made of, what
//! [`super::netlink::decode`] turns netlink messages into, and what the builders in
//! [`super::netlink`] turn back into requests. Names follow the kernel's (iproute2's) words:
//! link, address, route, rule, neighbour.

use crate::config::Ipv4Net;
use crate::names::ALIAS_PREFIX;
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;

/// `proto kernel`: routes and rules the kernel made itself (the default `local` rule).
pub const RTPROT_KERNEL: u8 = 2;
/// The kernel's `local` routing table.
pub const RT_TABLE_LOCAL: u32 = 255;
/// The kernel's `main` routing table.
pub const RT_TABLE_MAIN: u32 = 254;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LinkKind {
    Vrf {
        table: u32,
    },
    /// `vni` None = `external` (collect_md).
    Vxlan {
        vni: Option<u32>,
        local: Ipv4Addr,
        remote: Option<Ipv4Addr>,
        port: u16,
        underlay: String,
    },
    /// `key` None = `external` (collect_md).
    Gretap {
        key: Option<u32>,
        local: Option<Ipv4Addr>,
        remote: Option<Ipv4Addr>,
    },
    /// A macvlan (private mode) on `lower`, with address `mac`. `outside`: `lower` is a
    /// device of the gateway's own namespace while the macvlan lives in a shard's (made over
    /// there, then moved).
    Macvlan {
        lower: String,
        mac: [u8; 6],
        outside: bool,
    },
    /// A shard's end of a veth pair whose other end, `peer`, is in the gateway's namespace.
    Veth {
        peer: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Link {
    pub name: String,
    pub kind: LinkKind,
    /// The VRF it is enslaved to.
    pub master: Option<String>,
}

impl Link {
    /// The creation parameters as text, stored in the link's alias.
    pub fn spec(&self) -> String {
        let opt = |v: Option<Ipv4Addr>| v.map(|a| a.to_string()).unwrap_or_else(|| "any".into());
        match &self.kind {
            LinkKind::Vrf { table } => format!("vrf table {table}"),
            LinkKind::Vxlan {
                vni,
                local,
                remote,
                port,
                underlay,
            } => match vni {
                Some(v) => format!(
                    "vxlan id {v} local {local} remote {} dstport {port} dev {underlay}",
                    opt(*remote)
                ),
                None => format!("vxlan external local {local} dstport {port} dev {underlay}"),
            },
            LinkKind::Gretap { key, local, remote } => match key {
                Some(k) => format!(
                    "gretap key {k} local {} remote {}",
                    opt(*local),
                    opt(*remote)
                ),
                None => "gretap external".to_string(),
            },
            LinkKind::Macvlan {
                lower,
                mac,
                outside,
            } => format!(
                "macvlan on {lower}{} address {}",
                if *outside { " (gateway namespace)" } else { "" },
                mac_str(mac)
            ),
            LinkKind::Veth { peer } => format!("veth peer {peer} (gateway namespace)"),
        }
    }

    pub fn alias(&self) -> String {
        format!("{ALIAS_PREFIX}{}", self.spec())
    }

    pub fn is_vrf(&self) -> bool {
        matches!(self.kind, LinkKind::Vrf { .. })
    }

    /// The device of this namespace this one sits on (a macvlan's lower), if any.
    pub fn lower(&self) -> Option<&str> {
        match &self.kind {
            LinkKind::Macvlan {
                lower,
                outside: false,
                ..
            } => Some(lower),
            _ => None,
        }
    }

    /// Creation order: VRFs, then devices on nothing, then devices on those. Removal runs the
    /// other way round (a lower device takes its uppers with it).
    pub fn rank(&self) -> u8 {
        rank(self.kind_name())
    }

    /// The kernel's name for the kind (`IFLA_INFO_KIND`).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            LinkKind::Vrf { .. } => "vrf",
            LinkKind::Vxlan { .. } => "vxlan",
            LinkKind::Gretap { .. } => "gretap",
            LinkKind::Macvlan { .. } => "macvlan",
            LinkKind::Veth { .. } => "veth",
        }
    }
}

/// [`Link::rank`] by the kernel's kind name.
pub fn rank(kind: &str) -> u8 {
    match kind {
        "vrf" => 0,
        "macvlan" => 2,
        _ => 1,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Address {
    pub dev: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Encap {
    pub id: u32,
    pub dst: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Net,
    pub dev: String,
    pub via: Option<Ipv4Addr>,
    /// The next hop is on the link whatever the device's addresses say (external mode).
    pub onlink: bool,
    /// Lightweight-tunnel encapsulation (`encap ip id <id> dst <dst> key`).
    pub encap: Option<Encap>,
    /// Who made it (`proto N`): how tollgate recognises its own routes.
    pub proto: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Lookup(u32),
    Prohibit,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Rule {
    pub priority: u32,
    pub iif: Option<String>,
    /// Matched with the full mask.
    pub fwmark: Option<u32>,
    pub tun_id: Option<u32>,
    /// The `l3mdev` rule (table chosen by the ingress VRF).
    pub l3mdev: bool,
    pub action: RuleAction,
    /// Who made it (`proto N`): how tollgate recognises its own rules.
    pub proto: u8,
}

impl Rule {
    /// A rule with no selector at all (`from all`), doing `action`.
    pub fn all(priority: u32, action: RuleAction, proto: u8) -> Rule {
        Rule {
            priority,
            iif: None,
            fwmark: None,
            tun_id: None,
            l3mdev: false,
            action,
            proto,
        }
    }

    /// True for `from all lookup local` (the rule that delivers to local addresses).
    pub fn is_local_lookup(&self) -> bool {
        self.action == RuleAction::Lookup(RT_TABLE_LOCAL)
            && self.iif.is_none()
            && self.fwmark.is_none()
            && self.tun_id.is_none()
            && !self.l3mdev
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Neigh {
    pub dev: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
}

pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {} ({})", self.name, self.spec())?;
        if let Some(m) = &self.master {
            write!(f, " master {m}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "address {}/{} dev {} noprefixroute",
            self.addr, self.prefix, self.dev
        )
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}", self.dst)?;
        if let Some(v) = self.via {
            write!(f, " via {v}{}", if self.onlink { " onlink" } else { "" })?;
        }
        if let Some(e) = &self.encap {
            write!(f, " encap ip id {} dst {} key", e.id, e.dst)?;
        }
        write!(f, " dev {} table {}", self.dev, self.table)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule pref {}", self.priority)?;
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(m) = self.fwmark {
            write!(f, " fwmark {m}")?;
        }
        if let Some(t) = self.tun_id {
            write!(f, " tun_id {t}")?;
        }
        if self.l3mdev {
            write!(f, " l3mdev")?;
        }
        match self.action {
            RuleAction::Lookup(t) => write!(f, " lookup {t}"),
            RuleAction::Prohibit => write!(f, " prohibit"),
        }
    }
}

impl fmt::Display for Neigh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "neigh {} lladdr {} dev {} permanent",
            self.ip,
            mac_str(&self.mac),
            self.dev
        )
    }
}
