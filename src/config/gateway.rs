//! Validation of the gateway half of the config: `[gateway]` and each tenant's gateway keys.
//!
//! Kept apart from the shaper's validation in `mod.rs`; both report through the same `Cx`, so
//! errors read alike (file:line:column: key: problem).

use super::raw::{RawGateway, RawTenant};
use super::{ConfigError, Cx, Ipv4Net, PortRange, check_ifname};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use toml::Spanned;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    Gretap,
    Vxlan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelMode {
    /// One collect_md device for all tenants, lightweight-tunnel routes carry the encapsulation.
    External,
    /// One keyed tunnel device per tenant.
    PerTenant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One VRF (l3mdev) per tenant.
    Vrf,
    /// One policy-routing table per tenant, selected by ip rules (kernels without VRF).
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    Auto,
    On,
    Off,
}

/// The `[gateway]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub public: String,
    pub underlay: String,
    pub underlay_address: Ipv4Addr,
    pub tunnel: Tunnel,
    pub tunnel_mode: TunnelMode,
    pub isolation: Isolation,
    pub offload: Offload,
    /// Next hop on the public side for tenants' outbound traffic (a default route in each
    /// tenant table); without it only the public device's own subnets are reachable.
    pub public_gateway: Option<Ipv4Addr>,
    pub vxlan_port: u16,
    /// Priority of tollgate's ip rules (EIP fwmark, and in table isolation the tenant rules).
    pub rule_priority: u32,
    /// Where apply records the sysctl values it changed, for destroy to restore.
    pub state_dir: std::path::PathBuf,
    /// Tenants spread over network namespaces of their own (None: all in the gateway's).
    pub shards: Option<Shards>,
}

impl GatewayConfig {
    /// The shards tenants are spread over, if any (a count of 0 means none).
    pub fn sharding(&self) -> Option<&Shards> {
        self.shards.as_ref().filter(|s| s.count > 0)
    }

    /// The prefix of shard namespaces: also without shards, so that those left from an
    /// earlier config are found and removed.
    pub fn shard_prefix(&self) -> &str {
        self.shards
            .as_ref()
            .map_or(DEFAULT_SHARD_PREFIX, |s| s.prefix.as_str())
    }
}

/// The most shards a gateway may have.
pub const MAX_SHARDS: u32 = 4096;

/// A shard prefix gives namespace names (`<prefix><number>`) under /run/netns: a letter, then
/// letters, digits, `-`, `_` or `.`; at most 200 bytes.
fn check_shard_prefix(p: &str) -> Result<(), String> {
    let ok = p.len() <= 200
        && p.starts_with(|c: char| c.is_ascii_alphabetic())
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{p:?}: a namespace name prefix starts with a letter and holds only letters, digits, '-', '_' and '.' (at most 200)"
        ))
    }
}

/// The default `shard_prefix`: shard namespaces `tollgate-shard0`, `tollgate-shard1`, ...
pub const DEFAULT_SHARD_PREFIX: &str = "tollgate-shard";

/// How the gateway spreads its tenants over shards: network namespaces `<prefix><j>` for j in
/// 0..count, each with a lower of its own, a tenant in the one `names::shard_of` gives. The
/// gateway's namespace then holds no per-tenant device, and no list the kernel searches per
/// packet grows with the number of tenants, only with the number per shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shards {
    pub count: u32,
    pub prefix: String,
}

impl Shards {
    /// The namespace of shard `j`.
    pub fn netns(&self, j: u32) -> String {
        crate::names::shard_netns(&self.prefix, j)
    }

    /// The shard tenant `id` belongs to.
    pub fn of(&self, id: u32) -> u32 {
        crate::names::shard_of(id, self.count)
    }
}

/// One firewall selector: `icmp`, `tcp/22`, `udp/53`, `tcp/8000-8100`, `tcp`, `udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "proto", rename_all = "lowercase")]
pub enum FwMatch {
    Icmp,
    Tcp { ports: Option<PortRange> },
    Udp { ports: Option<PortRange> },
}

impl std::str::FromStr for FwMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<FwMatch, String> {
        let (proto, ports) = match s.split_once('/') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        let ports = match ports {
            None => None,
            Some(r) => {
                let raw = super::raw::RawPort::Range(r.to_string());
                Some(raw.to_range().map_err(|e| format!("{s:?}: {e}"))?)
            }
        };
        match (proto, ports) {
            ("icmp", None) => Ok(FwMatch::Icmp),
            ("icmp", Some(_)) => Err(format!("{s:?}: icmp has no ports")),
            ("tcp", ports) => Ok(FwMatch::Tcp { ports }),
            ("udp", ports) => Ok(FwMatch::Udp { ports }),
            _ => Err(format!(
                "{s:?}: expected icmp, tcp, udp, tcp/PORT, udp/PORT or tcp/FIRST-LAST"
            )),
        }
    }
}

/// A tenant's gateway settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantGateway {
    /// Tunnel key / VNI, routing table, packet mark; conntrack zone is `id & 0xffff`.
    pub id: u32,
    pub peer: Ipv4Addr,
    pub networks: Vec<Ipv4Net>,
    /// The gateway's address inside the tenant network, with its prefix length.
    pub gateway_ip: Ipv4Addr,
    pub gateway_prefix: u8,
    /// Elastic IPs: (public, private), sorted by public.
    pub eips: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub allow_in: Vec<FwMatch>,
    pub deny_out: Vec<FwMatch>,
    /// External mode: the MAC the tenant's tunnel endpoint answers to (a shared collect_md
    /// device cannot resolve overlapping tenant addresses by ARP).
    pub peer_mac: Option<[u8; 6]>,
}

impl TenantGateway {
    pub fn zone(&self) -> u16 {
        (self.id & 0xffff) as u16
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address like 02:00:00:00:00:07"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address like 02:00:00:00:00:07"))?;
    }
    if mac[0] & 1 == 1 {
        return Err(format!("{s:?} is a multicast MAC address"));
    }
    Ok(mac)
}

fn one_of<T: Copy>(
    cx: &Cx,
    v: &Spanned<String>,
    key: &str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    choices
        .iter()
        .find(|(n, _)| *n == v.get_ref())
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            cx.err(
                v,
                key,
                format!("{:?}: expected {}", v.get_ref(), names.join(" or ")),
            )
        })
}

fn ipv4(cx: &Cx, v: &Spanned<String>, key: &str) -> Result<Ipv4Addr, ConfigError> {
    v.get_ref()
        .trim()
        .parse()
        .map_err(|_| cx.err(v, key, format!("{:?} is not an IPv4 address", v.get_ref())))
}

impl Cx<'_> {
    pub(super) fn gateway(&self, g: &Spanned<RawGateway>) -> Result<GatewayConfig, ConfigError> {
        let r = g.get_ref();
        check_ifname(r.public.get_ref()).map_err(|e| self.err(&r.public, "gateway.public", e))?;
        check_ifname(r.underlay.get_ref())
            .map_err(|e| self.err(&r.underlay, "gateway.underlay", e))?;
        let offload = match &r.offload {
            None => Offload::Auto,
            Some(o) => one_of(
                self,
                o,
                "gateway.offload",
                &[
                    ("auto", Offload::Auto),
                    ("on", Offload::On),
                    ("off", Offload::Off),
                ],
            )?,
        };
        let vxlan_port = match &r.vxlan_port {
            None => 4789,
            Some(p) => u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| self.err(p, "gateway.vxlan_port", "must be 1-65535"))?,
        };
        let rule_priority = match &r.rule_priority {
            None => 10_000,
            Some(p) => u32::try_from(*p.get_ref())
                .ok()
                .filter(|p| (1..32_000).contains(p))
                .ok_or_else(|| self.err(p, "gateway.rule_priority", "must be 1-31999"))?,
        };
        let isolation = one_of(
            self,
            &r.isolation,
            "gateway.isolation",
            &[("vrf", Isolation::Vrf), ("table", Isolation::Table)],
        )?;
        let tunnel_mode = one_of(
            self,
            &r.tunnel_mode,
            "gateway.tunnel_mode",
            &[
                ("external", TunnelMode::External),
                ("per-tenant", TunnelMode::PerTenant),
            ],
        )?;
        let count = match &r.shards {
            None => 0,
            Some(n) => u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| *n <= MAX_SHARDS)
                .ok_or_else(|| self.err(n, "gateway.shards", format!("must be 0-{MAX_SHARDS}")))?,
        };
        let prefix = match &r.shard_prefix {
            None => DEFAULT_SHARD_PREFIX.to_string(),
            Some(p) => {
                check_shard_prefix(p.get_ref())
                    .map_err(|e| self.err(p, "gateway.shard_prefix", e))?;
                p.get_ref().clone()
            }
        };
        if let Some(n) = r.shards.as_ref().filter(|_| count > 0) {
            let refuse = |why: &str| Err(self.err(n, "gateway.shards", why));
            if isolation != Isolation::Vrf {
                return refuse(
                    "shards hold tenants' VRFs: they need isolation = \"vrf\" (with \"table\" there is nothing to shard)",
                );
            }
            if tunnel_mode != TunnelMode::External {
                return refuse(
                    "shards need tunnel_mode = \"external\" (per-tenant tunnel devices are not spread over shards)",
                );
            }
            if offload == Offload::On {
                return refuse(
                    "a shard's flows enter by its lower and leave by other devices, which a flowtable cannot short-cut: set offload = \"off\" or \"auto\" (then off), or remove shards",
                );
            }
        }
        Ok(GatewayConfig {
            public: r.public.get_ref().clone(),
            underlay: r.underlay.get_ref().clone(),
            underlay_address: ipv4(self, &r.underlay_address, "gateway.underlay_address")?,
            tunnel: one_of(
                self,
                &r.tunnel,
                "gateway.tunnel",
                &[("gretap", Tunnel::Gretap), ("vxlan", Tunnel::Vxlan)],
            )?,
            tunnel_mode,
            isolation,
            offload,
            public_gateway: match &r.public_gateway {
                None => None,
                Some(p) => Some(ipv4(self, p, "gateway.public_gateway")?),
            },
            vxlan_port,
            rule_priority,
            state_dir: r
                .state_dir
                .as_ref()
                .map(|d| std::path::PathBuf::from(d.get_ref()))
                .unwrap_or_else(|| std::path::PathBuf::from("/run/tollgate")),
            shards: (count > 0 || r.shard_prefix.is_some()).then_some(Shards { count, prefix }),
        })
    }

    /// A tenant's gateway keys; None when it has none (a shaper-only tenant).
    pub(super) fn tenant_gateway(
        &self,
        i: usize,
        t: &Spanned<RawTenant>,
        gw: Option<&GatewayConfig>,
    ) -> Result<Option<TenantGateway>, ConfigError> {
        let r = t.get_ref();
        let key = |k: &str| format!("tenant[{i}].{k}");
        let has_any = r.id.is_some()
            || r.peer.is_some()
            || r.networks.is_some()
            || r.gateway_ip.is_some()
            || r.eips.is_some()
            || r.allow_in.is_some()
            || r.deny_out.is_some()
            || r.peer_mac.is_some();
        let Some(gw) = gw else {
            if has_any {
                return Err(self.err(
                    t,
                    &format!("tenant[{i}]"),
                    "gateway keys (id, peer, networks, ...) need a [gateway] section",
                ));
            }
            return Ok(None);
        };
        if !has_any && r.sources.is_some() {
            // a source-address tenant of the shaper, in the same file as the gateway
            return Ok(None);
        }
        if has_any && let Some(s) = &r.sources {
            return Err(self.err(
                s,
                &key("sources"),
                "a gateway tenant is told apart by its tunnel, not by source address: give either gateway keys (id, peer, ...) or `sources`, not both",
            ));
        }
        let missing = |k: &str| {
            self.err(
                t,
                &key(k),
                format!(
                    "missing: every tenant of a gateway needs `{k}` (or `sources`, for a tenant the shaper tells apart by source address)"
                ),
            )
        };
        let id_s = r.id.as_ref().ok_or_else(|| missing("id"))?;
        let peer_s = r.peer.as_ref().ok_or_else(|| missing("peer"))?;
        let networks_s = r.networks.as_ref().ok_or_else(|| missing("networks"))?;
        let gip = r.gateway_ip.as_ref().ok_or_else(|| missing("gateway_ip"))?;
        let max = match gw.tunnel {
            Tunnel::Vxlan => (1 << 24) - 1,
            Tunnel::Gretap => i64::from(u32::MAX),
        };
        let id = *id_s.get_ref();
        if !(1..=max).contains(&id) || (253..=255).contains(&id) {
            return Err(self.err(
                id_s,
                &key("id"),
                format!(
                    "{id}: must be 1-{max} (a {:?} key and a routing table), not 253-255",
                    gw.tunnel
                ),
            ));
        }
        let id = u32::try_from(id)
            .map_err(|_| self.err(id_s, &key("id"), format!("{id}: out of range")))?;
        let peer = ipv4(self, peer_s, &key("peer"))?;
        let mut networks = Vec::new();
        for n in networks_s.get_ref() {
            networks.push(
                n.get_ref()
                    .parse::<Ipv4Net>()
                    .map_err(|e| self.err(n, &key("networks"), e))?,
            );
        }
        if networks.is_empty() {
            return Err(self.err(networks_s, &key("networks"), "needs at least one prefix"));
        }
        let in_networks = |a: Ipv4Addr| networks.iter().any(|n| n.contains(a));
        let (ga, gl) = gip.get_ref().split_once('/').ok_or_else(|| {
            self.err(
                gip,
                &key("gateway_ip"),
                format!(
                    "{:?}: write address/prefix, e.g. 10.0.0.1/24",
                    gip.get_ref()
                ),
            )
        })?;
        let gateway_ip: Ipv4Addr = ga.parse().map_err(|_| {
            self.err(
                gip,
                &key("gateway_ip"),
                format!("{ga:?} is not an IPv4 address"),
            )
        })?;
        let gateway_prefix: u8 = gl.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
            self.err(
                gip,
                &key("gateway_ip"),
                format!("{gl:?} is not a prefix length 0-32"),
            )
        })?;
        if !in_networks(gateway_ip) {
            return Err(self.err(
                gip,
                &key("gateway_ip"),
                format!("{gateway_ip} is not inside the tenant's networks"),
            ));
        }
        let mut eips = Vec::new();
        if let Some(m) = &r.eips {
            for (public, private) in m.get_ref() {
                let p = ipv4(self, public, &key("eips"))?;
                let q = ipv4(self, private, &key("eips"))?;
                if !in_networks(q) {
                    return Err(self.err(
                        private,
                        &key("eips"),
                        format!("{q} is not inside the tenant's networks"),
                    ));
                }
                if q == gateway_ip {
                    return Err(self.err(
                        private,
                        &key("eips"),
                        format!("{q} is the gateway's own address"),
                    ));
                }
                eips.push((p, q));
            }
        }
        eips.sort();
        let fw = |v: &Option<Spanned<Vec<Spanned<String>>>>,
                  k: &str|
         -> Result<Vec<FwMatch>, ConfigError> {
            v.iter()
                .flat_map(|v| v.get_ref())
                .map(|s| {
                    s.get_ref()
                        .parse::<FwMatch>()
                        .map_err(|e| self.err(s, &key(k), e))
                })
                .collect()
        };
        let peer_mac = match &r.peer_mac {
            None => None,
            Some(m) => Some(parse_mac(m.get_ref()).map_err(|e| self.err(m, &key("peer_mac"), e))?),
        };
        if gw.tunnel_mode == TunnelMode::External && peer_mac.is_none() {
            return Err(self.err(
                t,
                &key("peer_mac"),
                "missing: with tunnel_mode = \"external\" the shared tunnel device cannot ARP per tenant; give the MAC of the tenant's tunnel endpoint",
            ));
        }
        Ok(Some(TenantGateway {
            id,
            peer,
            networks,
            gateway_ip,
            gateway_prefix,
            eips,
            allow_in: fw(&r.allow_in, "allow_in")?,
            deny_out: fw(&r.deny_out, "deny_out")?,
            peer_mac,
        }))
    }

    /// Across tenants: unique ids and zones, each EIP in one place only, and (external tunnel
    /// mode, where the outer source address is what tells tenants apart) unique peers.
    pub(super) fn check_gateway_tenants(
        &self,
        raw: &[Spanned<RawTenant>],
        tenants: &[super::Tenant],
        gateway: Option<&GatewayConfig>,
        shaper_table: Option<u32>,
    ) -> Result<(), ConfigError> {
        let external = gateway.is_some_and(|g| g.tunnel_mode == TunnelMode::External);
        let sharded = gateway.is_some_and(|g| g.sharding().is_some());
        let mut peers: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        let mut ids: BTreeMap<u32, usize> = BTreeMap::new();
        let mut zones: BTreeMap<u16, usize> = BTreeMap::new();
        let mut eips: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for (i, t) in tenants.iter().enumerate() {
            let Some(g) = &t.gateway else { continue };
            let r = raw[i].get_ref();
            let id_span = r.id.as_ref().map(|s| s.span().start).unwrap_or(0);
            if let Some(j) = ids.insert(g.id, i) {
                return Err(self.err_at(
                    id_span,
                    &format!("tenant[{i}].id"),
                    &format!(
                        "duplicate id {} (also tenant[{j}] {:?})",
                        g.id, tenants[j].name
                    ),
                ));
            }
            if let Some(j) = zones.insert(g.zone(), i) {
                return Err(self.err_at(id_span, &format!("tenant[{i}].id"), &format!(
                    "id {} and tenant[{j}]'s id {} share conntrack zone {} (zones are id mod 65536)",
                    g.id, tenants[j].gateway.as_ref().map(|g| g.id).unwrap_or(0), g.zone()
                )));
            }
            if external && let Some(j) = peers.insert(g.peer, i) {
                let at = r.peer.as_ref().map(|s| s.span().start).unwrap_or(id_span);
                return Err(self.err_at(
                    at,
                    &format!("tenant[{i}].peer"),
                    &format!(
                        "peer {} is also tenant[{j}] {:?}'s: with tunnel_mode = \"external\" a tenant's traffic is told apart by its peer address, so each tenant needs its own",
                        g.peer, tenants[j].name
                    ),
                ));
            }
            if sharded && t.shaping.is_some() {
                let at = r.upload.as_ref().map(|s| s.span().start).unwrap_or(id_span);
                return Err(self.err_at(
                    at,
                    &format!("tenant[{i}].upload"),
                    "with gateway.shards a gateway tenant's VRF is in a shard's namespace, where tollgate-shaper does not reach it: remove `upload` from gateway tenants or remove shards",
                ));
            }
            if Some(g.id) == shaper_table {
                return Err(self.err_at(
                    id_span,
                    &format!("tenant[{i}].id"),
                    &format!("{} is the shaper's routing table", g.id),
                ));
            }
            for (public, _) in &g.eips {
                if let Some(j) = eips.insert(*public, i) {
                    let at = r
                        .eips
                        .as_ref()
                        .and_then(|m| {
                            m.get_ref()
                                .keys()
                                .find(|k| k.get_ref().trim() == public.to_string())
                                .map(|k| k.span().start)
                        })
                        .unwrap_or(id_span);
                    return Err(self.err_at(
                        at,
                        &format!("tenant[{i}].eips"),
                        &format!(
                            "elastic IP {public} is also tenant[{j}] {:?}'s",
                            tenants[j].name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
