//! Config -> the kernel objects the gateway should consist of. Pure: the only input from the
//! kernel is the public device's own subnets (so tenants can reach them), passed in.
//!
//! Per tenant (id = tunnel key = routing table = packet mark; zone = id mod 65536):
//! - tunnel_mode "per-tenant": keyed device `tgt<id>` (remote = peer) holding `gateway_ip`,
//!   enslaved to the VRF; routes `network dev tgt<id>`.
//! - tunnel_mode "external": one collect_md device `tgtun` for everyone, holding each gateway
//!   IP as /32; routes `network via 169.254.Z onlink encap ip id <id> dst <peer> key dev tgtun`
//!   with one permanent neighbour 169.254.Z -> peer_mac per tenant (a shared L2 device cannot
//!   ARP overlapping tenant addresses). Received packets are told apart by their outer header:
//!   nft marks the underlay packet by (peer, tunnel key) in one map lookup; the mark survives
//!   decapsulation. Anything unmarked that arrives on `tgtun` hits `iif tgtun prohibit`.
//! - the public device's subnets and optional default route in the tenant's table, DNAT/SNAT
//!   of its EIPs, a conntrack zone, its firewall chains.
//!
//! How a packet enters its tenant's routing table:
//! - isolation "vrf" (VRF `tgv<id>`, table id): by arriving on a device enslaved to the VRF,
//!   so the kernel's single l3mdev rule picks the table; no policy rule per tenant. The keyed
//!   tunnel device is enslaved; on the shared external device and on the public device a netdev
//!   ingress chain (table `netdev tollgate_gw`) rewrites the destination MAC to the tenant's
//!   macvlan (`tge<id>` on `tgtun`, by mark; `tgp<id>` on the public device, by EIP), one map
//!   lookup per packet, and the macvlan receives it inside the VRF.
//! - isolation "table": one `fwmark <id> lookup <id>` rule per tenant (EIP traffic, external
//!   tunnel traffic, and replies the gateway itself sends, via fwmark_reflect): a list every
//!   packet walks, which is why VRF is the default.

use crate::config::{
    Config, FwMatch, GatewayConfig, Ipv4Net, Isolation, TenantGateway, Tunnel, TunnelMode,
};
use crate::kernel::model::*;
use crate::names::{self, EXTERNAL_DEV, GATEWAY_NFT_TABLE as NFT_TABLE, RTPROT_GATEWAY};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Matches a packet whose source is one of the gateway's own addresses (or a broadcast or
/// multicast one): what the kernel's source check refuses, for devices that skip it.
pub const GATEWAY_SOURCES: &str = "fib saddr type { local, broadcast, multicast }";

/// The per-tenant next hop on the shared external device (unique: zones are unique).
pub fn external_nexthop(g: &TenantGateway) -> Ipv4Addr {
    let z = g.zone();
    Ipv4Addr::new(169, 254, (z >> 8) as u8, (z & 0xff) as u8)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub links: Vec<Link>,
    pub addresses: BTreeSet<Address>,
    pub routes: BTreeSet<Route>,
    pub rules: BTreeSet<Rule>,
    pub neighs: BTreeSet<Neigh>,
    pub sysctls: Vec<Sysctl>,
    /// The nftables ruleset in nft's own language (one atomic `nft -f`).
    pub ruleset: String,
    /// Digest of `ruleset`, carried in a rule comment to recognise the applied version.
    pub ruleset_digest: String,
}

/// The device a tenant's traffic leaves the gateway on, towards the tenant.
pub fn tenant_device(gw: &GatewayConfig, g: &TenantGateway) -> String {
    match gw.tunnel_mode {
        TunnelMode::PerTenant => names::tunnel(g.id),
        TunnelMode::External => EXTERNAL_DEV.to_string(),
    }
}

/// The shared collect_md device of `tunnel_mode = "external"`, and the rule that refuses
/// what arrives on it unmarked (a peer speaking for no tenant of its own).
fn external_device(gw: &GatewayConfig) -> (Link, Rule) {
    let link = Link {
        name: EXTERNAL_DEV.into(),
        kind: match gw.tunnel {
            Tunnel::Vxlan => LinkKind::Vxlan {
                vni: None,
                local: gw.underlay_address,
                remote: None,
                port: gw.vxlan_port,
                underlay: gw.underlay.clone(),
            },
            Tunnel::Gretap => LinkKind::Gretap {
                key: None,
                local: None,
                remote: None,
            },
        },
        master: None,
    };
    let rule = Rule {
        priority: gw.rule_priority + 1,
        iif: Some(EXTERNAL_DEV.into()),
        fwmark: None,
        tun_id: None,
        l3mdev: false,
        action: RuleAction::Prohibit,
        proto: RTPROT_GATEWAY,
    };
    (link, rule)
}

/// A tenant's objects on its device `dev` towards the shared external tunnel device: its
/// gateway address (/32), the permanent neighbour of its own next hop 169.254.Z, and its
/// networks routed through it with the lightweight-tunnel encapsulation of its id and peer.
fn external_tenant(d: &mut Desired, g: &TenantGateway, dev: &str) {
    d.addresses.insert(Address {
        dev: dev.to_string(),
        addr: g.gateway_ip,
        prefix: 32,
    });
    let nh = external_nexthop(g);
    d.neighs.insert(Neigh {
        dev: dev.to_string(),
        ip: nh,
        mac: g.peer_mac.unwrap_or([2, 0, 0, 0, 0, 1]),
    });
    for n in &g.networks {
        d.routes.insert(Route {
            table: g.id,
            dst: *n,
            dev: dev.to_string(),
            via: Some(nh),
            onlink: true,
            encap: Some(Encap {
                id: g.id,
                dst: g.peer,
            }),
            proto: RTPROT_GATEWAY,
        });
    }
}

/// The sysctls the namespace that routes tenants needs.
fn tenant_sysctls() -> Vec<Sysctl> {
    [
        ("net.ipv4.ip_forward", "1"),
        // replies the gateway generates (ICMP, TCP resets) carry the tenant's mark -> its table
        ("net.ipv4.fwmark_reflect", "1"),
        // and so do connections to the gateway's own services, accepted from a tenant
        ("net.ipv4.tcp_fwmark_accept", "1"),
        // reverse-path checks look in the tenant's table (by mark), not in main
        ("net.ipv4.conf.all.src_valid_mark", "1"),
    ]
    .into_iter()
    .map(|(k, v)| Sysctl {
        key: k.into(),
        value: v.into(),
    })
    .collect()
}

/// What the gateway takes from the kernel about the public device (the operator's).
#[derive(Clone, Debug, Default)]
pub struct PublicDevice {
    /// Its subnets: routed in each tenant's table, so tenants reach them.
    pub subnets: Vec<Ipv4Net>,
    /// Its MAC, which the tenants' entry macvlans keep out of the hash list of.
    pub mac: Option<[u8; 6]>,
    /// The operator's IPv4 addresses in the gateway's namespace (not loopback, not on
    /// tollgate's external device). A shard refuses them as tenant sources: there they are not
    /// local, so the check by route type alone would let them through.
    pub gateway_addresses: Vec<Ipv4Addr>,
}

pub fn build(config: &Config, public: &PublicDevice, offload: bool) -> Desired {
    let mut d = Desired::default();
    let Some(gw) = &config.gateway else {
        return d;
    };
    let tenants: Vec<_> = config.gateway_tenants().collect();
    let p = gw.rule_priority;
    if gw.tunnel_mode == TunnelMode::External {
        let (link, rule) = external_device(gw);
        d.links.push(link);
        d.rules.insert(rule);
    }
    for (_, g) in &tenants {
        let vrf = (gw.isolation == Isolation::Vrf).then(|| names::vrf(g.id));
        if let Some(v) = &vrf {
            d.links.push(Link {
                name: v.clone(),
                kind: LinkKind::Vrf { table: g.id },
                master: None,
            });
        }
        let dev = tenant_device(gw, g);
        match gw.tunnel_mode {
            TunnelMode::PerTenant => {
                d.links.push(Link {
                    name: dev.clone(),
                    kind: match gw.tunnel {
                        Tunnel::Vxlan => LinkKind::Vxlan {
                            vni: Some(g.id),
                            local: gw.underlay_address,
                            remote: Some(g.peer),
                            port: gw.vxlan_port,
                            underlay: gw.underlay.clone(),
                        },
                        Tunnel::Gretap => LinkKind::Gretap {
                            key: Some(g.id),
                            local: Some(gw.underlay_address),
                            remote: Some(g.peer),
                        },
                    },
                    master: vrf.clone(),
                });
                d.addresses.insert(Address {
                    dev: dev.clone(),
                    addr: g.gateway_ip,
                    prefix: g.gateway_prefix,
                });
                for n in &g.networks {
                    d.routes.insert(Route {
                        table: g.id,
                        dst: *n,
                        dev: dev.clone(),
                        via: None,
                        onlink: false,
                        encap: None,
                        proto: RTPROT_GATEWAY,
                    });
                }
            }
            TunnelMode::External => external_tenant(&mut d, g, &dev),
        }
        match &vrf {
            // the tenant's devices are enslaved to its VRF: the l3mdev rule finds the table
            Some(v) => {
                if !g.eips.is_empty() {
                    d.links.push(Link {
                        name: names::public_macvlan(g.id),
                        kind: LinkKind::Macvlan {
                            lower: gw.public.clone(),
                            mac: names::public_macvlan_mac(g.id, public.mac),
                            outside: false,
                        },
                        master: Some(v.clone()),
                    });
                }
                if gw.tunnel_mode == TunnelMode::External {
                    d.links.push(Link {
                        name: names::gateway_macvlan(g.id),
                        kind: LinkKind::Macvlan {
                            lower: EXTERNAL_DEV.into(),
                            mac: names::gateway_macvlan_mac(g.id),
                            outside: false,
                        },
                        master: Some(v.clone()),
                    });
                }
            }
            None => {
                d.rules.insert(Rule {
                    priority: p,
                    iif: None,
                    fwmark: Some(g.id),
                    tun_id: None,
                    l3mdev: false,
                    action: RuleAction::Lookup(g.id),
                    proto: RTPROT_GATEWAY,
                });
            }
        }
        for s in &public.subnets {
            d.routes.insert(Route {
                table: g.id,
                dst: *s,
                dev: gw.public.clone(),
                via: None,
                onlink: false,
                encap: None,
                proto: RTPROT_GATEWAY,
            });
        }
        if let Some(nh) = gw.public_gateway {
            d.routes.insert(Route {
                table: g.id,
                dst: Ipv4Net::DEFAULT,
                dev: gw.public.clone(),
                via: Some(nh),
                onlink: false,
                encap: None,
                proto: RTPROT_GATEWAY,
            });
        }
    }
    // (addresses are a set: tenants sharing a gateway IP on the external device share one)
    d.sysctls = tenant_sysctls();
    d.set_ruleset(ruleset(gw, &tenants, public, offload, false));
    d
}

impl Desired {
    /// The routing tables this state fills (a tenant's VRF table, or its table of routes).
    pub fn tables(&self) -> Vec<u32> {
        let mut t: BTreeSet<u32> = self.routes.iter().map(|r| r.table).collect();
        t.extend(self.links.iter().filter_map(|l| match l.kind {
            LinkKind::Vrf { table } => Some(table),
            _ => None,
        }));
        t.into_iter().collect()
    }

    /// Sets the ruleset and its version marker.
    fn set_ruleset(&mut self, text: String) {
        self.ruleset_digest = digest(&text);
        self.ruleset = text.replace("@DIGEST@", &self.ruleset_digest);
    }
}

/// What `n` policy rules cost: every packet that is not offloaded walks them in order
/// before the kernel's `main` rule, so their number is a per-packet cost (measured here:
/// forwarding with 2,000 non-matching rules ran at about half the speed of none, with 20,000 at
/// about a tenth). One line for `check` and `plan`.
pub fn rule_cost(n: usize) -> String {
    format!(
        "policy rules: {n} ({}); each packet that is not offloaded walks them in order: about 2,000 rules halve forwarding speed, 20,000 cut it to a tenth",
        if n < 100 {
            "a negligible cost"
        } else {
            "a per-packet cost that grows with tenants"
        }
    )
}

/// FNV-1a 64, hex: enough to recognise our own ruleset, not a security property.
pub fn digest(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn fw_expr(m: &FwMatch) -> String {
    let ports = |p: &Option<crate::config::PortRange>| match p {
        None => String::new(),
        Some(r) if r.first == r.last => format!(" dport {}", r.first),
        Some(r) => format!(" dport {}-{}", r.first, r.last),
    };
    match m {
        FwMatch::Icmp => "meta l4proto icmp".into(),
        FwMatch::Tcp { ports: p } if p.is_some() => format!("tcp{}", ports(p)),
        FwMatch::Udp { ports: p } if p.is_some() => format!("udp{}", ports(p)),
        FwMatch::Tcp { .. } => "meta l4proto tcp".into(),
        FwMatch::Udp { .. } => "meta l4proto udp".into(),
    }
}

/// One counted rule of a tenant's firewall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwRule {
    pub chain: String,
    /// The match in nft's language; empty for a chain's final rule.
    pub matches: String,
    pub verdict: &'static str,
}

impl FwRule {
    /// The rule as the ruleset writes it.
    pub fn nft(&self) -> String {
        if self.matches.is_empty() {
            format!("counter {}", self.verdict)
        } else {
            format!("{} counter {}", self.matches, self.verdict)
        }
    }

    /// The rule as `show` reports it: `tcp dport 22 accept`, or the chain's final verdict.
    pub fn summary(&self) -> String {
        if self.matches.is_empty() {
            format!("otherwise {}", self.verdict)
        } else {
            format!("{} {}", self.matches, self.verdict)
        }
    }
}

/// A tenant's counted firewall rules in chain order. The ruleset writes them; `show` pairs them
/// with the kernel's counters of each chain, which come in the same order.
pub fn firewall_rules(g: &TenantGateway) -> Vec<FwRule> {
    let (ic, oc) = (names::chain_in(g.id), names::chain_out(g.id));
    let rule = |chain: &String, matches: String, verdict| FwRule {
        chain: chain.clone(),
        matches,
        verdict,
    };
    let mut out = Vec::new();
    for m in &g.allow_in {
        out.push(rule(&ic, fw_expr(m), "accept"));
    }
    out.push(rule(&ic, String::new(), "drop"));
    for m in &g.deny_out {
        let verdict = match m {
            FwMatch::Tcp { .. } => "reject with tcp reset",
            FwMatch::Udp { .. } => "reject",
            FwMatch::Icmp => "drop",
        };
        out.push(rule(&oc, fw_expr(m), verdict));
    }
    out.push(rule(&oc, String::new(), "accept"));
    out
}

fn map<T: std::fmt::Display, U: std::fmt::Display>(
    pairs: impl IntoIterator<Item = (T, U)>,
) -> String {
    let items: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{k} : {v}"))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// VRF isolation: tenants enter their VRF through macvlans, stamped on the ingress of the
/// devices that belong to no VRF (the external tunnel device, the public device).
pub fn stamps(gw: &GatewayConfig) -> bool {
    gw.isolation == Isolation::Vrf
}

/// External tunnel mode with VRFs: the shared external device belongs to no VRF, so every IPv4
/// packet a tenant sends is stamped with the MAC of the tenant's macvlan on that device (in the
/// tenant's VRF), by the mark its outer header earned, and so routed (or delivered to a local
/// service) inside the tenant's VRF, as in per-tenant mode.
pub fn stamps_external(gw: &GatewayConfig) -> bool {
    gw.tunnel_mode == TunnelMode::External && stamps(gw)
}

/// The underlay match and key field that mark a tunnel packet by (outer source, tunnel key),
/// and a tenant's key as that field holds it: VXLAN's VNI is the top 24 bits of the header's
/// second word (the low 8 are reserved, zero); GRE with only the key flag (as gretap sends
/// with `key`) carries the key in its second word.
fn underlay_key(gw: &GatewayConfig) -> (String, &'static str, fn(u32) -> u64) {
    match gw.tunnel {
        Tunnel::Vxlan => (format!("udp dport {}", gw.vxlan_port), "@th,96,32", |id| {
            u64::from(id) << 8
        }),
        Tunnel::Gretap => (
            // flags: key only, version 0; protocol: transparent Ethernet bridging
            "ip protocol gre @th,0,32 0x20006558".to_string(),
            "@th,32,32",
            u64::from,
        ),
    }
}

/// The tenants' ruleset: in the gateway's namespace (`shard` false: underlay marks, stamps,
/// the public device and the tunnel devices as the tenants' ways in and out), or in a shard's
/// (`shard` true: the gateway's namespace marks and stamps; a tenant enters by its two entry
/// macvlans on the shard's lower and leaves by [`names::SHARD_PUBLIC`] or its tunnel macvlan).
/// The map `peers`: (outer source, tunnel key) -> tenant, so that a peer can speak only for
/// its own tenants (several tenants may share one peer).
fn peers_map(gw: &GatewayConfig, tenants: &[(&crate::config::Tenant, &TenantGateway)]) -> String {
    let (_, field, key) = underlay_key(gw);
    let elems: BTreeSet<(Ipv4Addr, u64, u32)> = tenants
        .iter()
        .map(|(_, g)| (g.peer, key(g.id), g.id))
        .collect();
    let elems: Vec<String> = elems
        .iter()
        .map(|(p, k, id)| format!("{p} . {k:#x} : {id}"))
        .collect();
    format!(
        "\tmap peers {{\n\t\ttypeof ip saddr . {field} : meta mark\n\t\telements = {{ {} }}\n\t}}\n",
        elems.join(", ")
    )
}

/// The `pre_raw` rule that marks an underlay packet by its peer and key, in `peers`; the mark
/// survives decapsulation.
fn underlay_mark(gw: &GatewayConfig) -> String {
    let (matcher, field, _) = underlay_key(gw);
    format!(
        "\t\tiifname \"{}\" {matcher} meta mark set ip saddr . {field} map @peers\n",
        gw.underlay
    )
}

fn ruleset(
    gw: &GatewayConfig,
    tenants: &[(&crate::config::Tenant, &TenantGateway)],
    device: &PublicDevice,
    offload: bool,
    shard: bool,
) -> String {
    let mut s = String::new();
    let public_mac = device.mac;
    let public = if shard {
        names::SHARD_PUBLIC
    } else {
        gw.public.as_str()
    };
    // the device a tenant's packets leave by towards the tenant
    let tunnel_out = |g: &TenantGateway| {
        if shard {
            names::gateway_macvlan(g.id)
        } else {
            tenant_device(gw, g)
        }
    };
    let vrf = stamps(gw);
    let eips: Vec<(Ipv4Addr, &TenantGateway, Ipv4Addr)> = tenants
        .iter()
        .flat_map(|(_, g)| g.eips.iter().map(move |(p, q)| (*p, *g, *q)))
        .collect();
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    if offload {
        let mut devs: BTreeSet<String> = BTreeSet::new();
        devs.insert(public.to_string());
        for (_, g) in tenants {
            devs.insert(tunnel_out(g));
        }
        let devs: Vec<String> = devs.iter().map(|d| format!("\"{d}\"")).collect();
        let _ = writeln!(
            s,
            "\tflowtable ft {{\n\t\thook ingress priority filter\n\t\tdevices = {{ {} }}\n\t\tcounter\n\t}}",
            devs.join(", ")
        );
    }
    let external = gw.tunnel_mode == TunnelMode::External && !tenants.is_empty() && !shard;
    if external {
        s.push_str(&peers_map(gw, tenants));
    }
    // --- prerouting, raw: zones and marks, on every packet (not just NEW)
    let _ = writeln!(
        s,
        "\tchain pre_raw {{\n\t\ttype filter hook prerouting priority raw; policy accept;"
    );
    let _ = writeln!(
        s,
        "\t\tmeta iifkind \"vrf\" accept comment \"tollgate @DIGEST@\""
    );
    if !eips.is_empty() && !vrf {
        let _ = writeln!(
            s,
            "\t\tiifname \"{public}\" ct zone set ip daddr map {}",
            map(eips.iter().map(|(p, g, _)| (p, g.zone())))
        );
        let _ = writeln!(
            s,
            "\t\tiifname \"{public}\" meta mark set ip daddr map {}",
            map(eips.iter().map(|(p, g, _)| (p, g.id)))
        );
    }
    if !tenants.is_empty() && !shard {
        match gw.tunnel_mode {
            TunnelMode::PerTenant => {
                let _ = writeln!(
                    s,
                    "\t\tct zone set iifname map {}",
                    map(tenants
                        .iter()
                        .map(|(_, g)| (format!("\"{}\"", names::tunnel(g.id)), g.zone())))
                );
                let _ = writeln!(
                    s,
                    "\t\tmeta mark set iifname map {}",
                    map(tenants
                        .iter()
                        .map(|(_, g)| (format!("\"{}\"", names::tunnel(g.id)), g.id)))
                );
            }
            TunnelMode::External => {
                s.push_str(&underlay_mark(gw));
                if !vrf {
                    let _ = writeln!(
                        s,
                        "\t\tiifname \"{EXTERNAL_DEV}\" ct zone set meta mark map {}",
                        map(tenants.iter().map(|(_, g)| (g.id, g.zone())))
                    );
                }
            }
        }
    }
    // Devices that tenants' packets arrive on in their VRFs besides their tunnel device: the
    // shaper's macvlans on its TAP (gateway tenants it shapes) and, with VRF isolation, the
    // gateway's macvlans on the external and public devices. Same zone and mark as the tunnel,
    // so conntrack keeps overlapping tenants apart.
    let mut entries: Vec<_> = tenants
        .iter()
        .filter(|(t, _)| t.shaping.is_some())
        .map(|(_, g)| (format!("\"{}\"", names::shaper_macvlan(g.id)), *g))
        .collect();
    if stamps_external(gw) {
        let entry = if shard {
            names::tunnel_entry_macvlan
        } else {
            names::gateway_macvlan
        };
        entries.extend(
            tenants
                .iter()
                .map(|(_, g)| (format!("\"{}\"", entry(g.id)), *g)),
        );
    }
    let public_entries: Vec<_> = tenants
        .iter()
        .filter(|(_, g)| vrf && !g.eips.is_empty())
        .map(|(_, g)| (format!("\"{}\"", names::public_macvlan(g.id)), *g))
        .collect();
    entries.extend(public_entries.iter().cloned());
    if !entries.is_empty() {
        // the entries accept local sources (`accept_local`, which spares the kernel a second
        // route lookup per packet): refuse the gateway's own addresses as sources here, as
        // that lookup did (one lookup in the local table)
        let names: Vec<&str> = entries.iter().map(|(d, _)| d.as_str()).collect();
        let _ = writeln!(
            s,
            "\t\tiifname {{ {} }} {GATEWAY_SOURCES} counter drop",
            names.join(", ")
        );
        if shard && !device.gateway_addresses.is_empty() {
            let addrs: BTreeSet<Ipv4Addr> = device.gateway_addresses.iter().copied().collect();
            let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                s,
                "\t\tiifname {{ {} }} ip saddr {{ {} }} counter drop",
                names.join(", "),
                addrs.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\t\tct zone set iifname map {}",
            map(entries.iter().map(|(d, g)| (d.clone(), g.zone())))
        );
        let _ = writeln!(
            s,
            "\t\tmeta mark set iifname map {}",
            map(entries.iter().map(|(d, g)| (d.clone(), g.id)))
        );
    }
    let _ = writeln!(s, "\t}}");
    // --- NAT
    let _ = writeln!(
        s,
        "\tchain pre_nat {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tmeta iifkind \"vrf\" accept"
    );
    if !eips.is_empty() {
        let from = if vrf {
            let names: Vec<&str> = public_entries.iter().map(|(d, _)| d.as_str()).collect();
            format!("{{ {} }}", names.join(", "))
        } else {
            format!("\"{public}\"")
        };
        let _ = writeln!(
            s,
            "\t\tiifname {from} dnat ip to ip daddr map {}",
            map(eips.iter().map(|(p, _, q)| (p, q)))
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(
        s,
        "\tchain post_nat {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let first_eip: Vec<(u16, Ipv4Addr)> = tenants
        .iter()
        .filter_map(|(_, g)| g.eips.first().map(|(p, _)| (g.zone(), *p)))
        .collect();
    if !first_eip.is_empty() {
        let zones: Vec<String> = first_eip.iter().map(|(z, _)| z.to_string()).collect();
        let _ = writeln!(
            s,
            "\t\toifname \"{public}\" ct zone {{ {} }} snat ip to ct zone map {}",
            zones.join(", "),
            map(first_eip.iter().copied())
        );
    }
    let _ = writeln!(s, "\t}}");
    // every tenant's conntrack zone, as nft set elements
    let zones = tenants
        .iter()
        .map(|(_, g)| g.zone().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // --- input: a tenant reaches the gateway itself only at its own gateway address (its
    // services, the shaper's uploads), never at the operator's addresses on the gateway
    if !tenants.is_empty() {
        let own: Vec<String> = tenants
            .iter()
            .map(|(_, g)| format!("{} . {}", g.zone(), g.gateway_ip))
            .collect();
        let _ = writeln!(
            s,
            "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\tct state established,related accept\n\t\tct zone . ip daddr {{ {} }} accept\n\t\tct zone {{ {zones} }} counter drop\n\t}}",
            own.join(", "),
        );
    }
    // --- forward: tenant traffic only (by zone); other traffic is not ours to judge
    let _ = writeln!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;"
    );
    if offload {
        // flow add applies to TCP/UDP only: keep it apart from the accept (kernel lab note)
        if !tenants.is_empty() {
            let _ = writeln!(
                s,
                "\t\tct zone {{ {zones} }} meta l4proto {{ tcp, udp }} ct state established flow add @ft"
            );
        }
    }
    if !tenants.is_empty() {
        let _ = writeln!(
            s,
            "\t\tct zone vmap {}",
            map(tenants
                .iter()
                .map(|(_, g)| (g.zone(), format!("jump {}", names::chain_tenant(g.id)))))
        );
    }
    let _ = writeln!(s, "\t}}");
    for (t, g) in tenants {
        let (tc, ic, oc) = (
            names::chain_tenant(g.id),
            names::chain_in(g.id),
            names::chain_out(g.id),
        );
        let _ = writeln!(s, "\t# tenant {:?}", t.name);
        // a tenant's packets leave by its tunnel or the public device, nothing else: a
        // destination its table lacks is otherwise found in the tables after it (main), and
        // forwarded to the underlay or the operator's networks (two comparisons, not an
        // anonymous set: that would be one more kernel set per tenant)
        let tunnel = tunnel_out(g);
        let _ = writeln!(
            s,
            "\tchain {tc} {{\n\t\toifname != \"{public}\" oifname != \"{tunnel}\" counter drop\n\t\tct state established,related accept\n\t\tct state invalid counter drop\n\t\toifname \"{public}\" goto {oc}\n\t\tgoto {ic}\n\t}}"
        );
        let _ = writeln!(s, "\tchain {ic} {{");
        let rules = firewall_rules(g);
        for r in rules.iter().filter(|r| r.chain == ic) {
            let _ = writeln!(s, "\t\t{}", r.nft());
        }
        let _ = writeln!(s, "\t}}\n\tchain {oc} {{");
        for r in rules.iter().filter(|r| r.chain == oc) {
            let _ = writeln!(s, "\t\t{}", r.nft());
        }
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "}}");
    // --- VRF entry: the destination MAC of the tenant's macvlan, on the ingress of the devices
    // that belong to no VRF; runs before the flowtable (priority filter), which short-cuts
    // established flows on the same devices
    let stamp_tunnel = stamps_external(gw) && !tenants.is_empty() && !shard;
    let stamp_public = !public_entries.is_empty() && !shard;
    if stamp_tunnel || stamp_public {
        let _ = writeln!(s, "table netdev {NFT_TABLE} {{");
        // one chain per device: `rule` sets the destination MAC to a macvlan's
        let mut chain = |name: &str, dev: &str, rule: String| {
            let _ = writeln!(
                s,
                "\tchain {name} {{\n\t\ttype filter hook ingress device \"{dev}\" priority -10; policy accept;\n\t\t{rule}\n\t}}"
            );
        };
        let mac = |m: [u8; 6]| crate::kernel::model::mac_str(&m);
        if stamp_tunnel {
            chain(
                "stamp",
                EXTERNAL_DEV,
                format!(
                    "meta protocol ip ether daddr set meta mark map {}",
                    map(tenants
                        .iter()
                        .map(|(_, g)| (g.id, mac(names::gateway_macvlan_mac(g.id)))))
                ),
            );
        }
        if stamp_public {
            chain(
                "stamp_public",
                public,
                format!(
                    "meta pkttype host meta protocol ip ether daddr set ip daddr map {}",
                    map(eips
                        .iter()
                        .map(|(p, g, _)| (p, mac(names::public_macvlan_mac(g.id, public_mac)))))
                ),
            );
        }
        let _ = writeln!(s, "}}");
    }
    s
}

mod sharded;
pub use sharded::{Layout, ShardDesired, layout};

#[cfg(test)]
mod tests;
