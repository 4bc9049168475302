//! Frame -> tenant, header by header, with no allocation and no panics on any input.
//!
//! Tenants' source prefixes never overlap (the config refuses it), so the source address alone
//! picks the tenant: a binary search over sorted, disjoint address ranges. A tenant with `ports`
//! only takes TCP/UDP to those local ports, and every IP fragment after the first from its
//! sources (those carry no port; taking none of them would let a fragmented datagram pass
//! unshaped). The result also carries what the frame costs in the
//! tenant's bucket: the bytes of every IP packet it stands for (a GSO frame is charged one set of
//! headers per segment, as if the kernel had segmented it).

use crate::vnet::VnetHdr;
use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use tollgate::config::{Config, PortRange};

/// Why a frame was passed through unshaped (each has a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Not IPv4 (ARP, IPv6, VLAN, ...).
    NotIpv4,
    /// Too short or malformed headers.
    Malformed,
    /// IPv4, but no tenant's source and ports match.
    NoTenant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Queue for tenant `tenant`, charging `cost` bytes.
    Tenant {
        tenant: usize,
        cost: u32,
    },
    Pass(Pass),
}

/// One tenant's match rule beyond its sources.
#[derive(Clone, Debug, Default)]
struct TenantMatch {
    ports: Vec<PortRange>,
}

/// The classifier: a gateway tenant's MAC, or else sorted disjoint source ranges -> tenant index
/// (index into the shaped tenants).
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    /// (first, last, tenant), sorted by `first`, disjoint.
    ranges: Vec<(u32, u32, usize)>,
    /// (MAC of the tenant's macvlan, tenant), sorted: gateway tenants, stamped by the redirect.
    macs: Vec<([u8; 6], usize)>,
    tenants: Vec<TenantMatch>,
}

impl Classifier {
    /// Builds the classifier for the config's shaped tenants, numbered in config order.
    pub fn from_config(config: &Config) -> Classifier {
        let mut c = Classifier::default();
        for (idx, (t, _)) in config.shaped_tenants().enumerate() {
            for s in &t.sources {
                c.ranges.push((s.first(), s.last(), idx));
            }
            if let Some(g) = &t.gateway {
                c.macs
                    .push((tollgate::names::shaper_macvlan_mac(g.id), idx));
            }
            c.tenants.push(TenantMatch {
                ports: t.ports.clone(),
            });
        }
        c.ranges.sort_unstable();
        c.macs.sort_unstable();
        c
    }

    /// The gateway tenant whose macvlan has MAC `dst`, if any.
    pub fn tenant_of_mac(&self, dst: &[u8]) -> Option<usize> {
        let i = self
            .macs
            .binary_search_by(|(m, _)| m.as_slice().cmp(dst))
            .ok()?;
        Some(self.macs[i].1)
    }

    fn tenant_of(&self, src: u32) -> Option<usize> {
        let i = self.ranges.partition_point(|r| r.0 <= src);
        let (first, last, t) = *self.ranges.get(i.checked_sub(1)?)?;
        (first <= src && src <= last).then_some(t)
    }

    /// Classifies an Ethernet frame (the bytes after the vnet header).
    pub fn classify(&self, vnet: &VnetHdr, frame: &[u8]) -> Verdict {
        self.classify_flow(vnet, frame).0
    }

    /// [`Self::classify`], and for a tenant's frame the hash of its flow (addresses, protocol
    /// and, in a first fragment, ports) that picks its flow queue.
    pub fn classify_flow(&self, vnet: &VnetHdr, frame: &[u8]) -> (Verdict, u32) {
        let v = |v: Verdict| (v, 0);
        let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
            return v(Verdict::Pass(Pass::Malformed));
        };
        if eth.ether_type() != EtherType::IPV4 {
            return v(Verdict::Pass(Pass::NotIpv4));
        }
        let l3 = &frame[eth.slice().len()..];
        let Ok(ip) = Ipv4HeaderSlice::from_slice(l3) else {
            return v(Verdict::Pass(Pass::Malformed));
        };
        // a gateway tenant's frame carries its macvlan's MAC (the redirect already chose it:
        // by tunnel, local destination and ports); anything else is told apart by source
        let by_mac = self.tenant_of_mac(eth.destination().as_slice());
        let Some(tenant) = by_mac.or_else(|| self.tenant_of(u32::from_be_bytes(ip.source())))
        else {
            return v(Verdict::Pass(Pass::NoTenant));
        };
        let ip_hdr = ip.slice().len();
        // Transport header: only in the first fragment.
        let l4 = &l3[ip_hdr..];
        let first_fragment = ip.fragments_offset().value() == 0;
        let (ports, l4_hdr) = match ip.protocol() {
            IpNumber::TCP if first_fragment => match TcpHeaderSlice::from_slice(l4) {
                Ok(h) => (
                    Some((h.source_port(), h.destination_port())),
                    h.slice().len(),
                ),
                Err(_) => return v(Verdict::Pass(Pass::Malformed)),
            },
            IpNumber::UDP if first_fragment => match UdpHeaderSlice::from_slice(l4) {
                Ok(h) => (
                    Some((h.source_port(), h.destination_port())),
                    h.slice().len(),
                ),
                Err(_) => return v(Verdict::Pass(Pass::Malformed)),
            },
            _ => (None, 0),
        };
        let dport = ports.map(|p| p.1);
        let m = &self.tenants[tenant];
        // A fragment after the first has no port: it is the tenant's by source alone (the
        // redirect takes every such fragment of a tenant with ports, see redirect::nft).
        if by_mac.is_none() && !m.ports.is_empty() && first_fragment {
            match dport {
                Some(p) if m.ports.iter().any(|r| r.contains(p)) => {}
                _ => return v(Verdict::Pass(Pass::NoTenant)),
            }
        }
        let (sport, dport) = ports.unwrap_or((0, 0));
        let flow = flow_hash(
            u32::from_be_bytes(ip.source()),
            u32::from_be_bytes(ip.destination()),
            ip.protocol().0,
            u32::from(sport) << 16 | u32::from(dport),
        );
        (
            Verdict::Tenant {
                tenant,
                cost: cost(vnet, l3.len(), ip_hdr + l4_hdr),
            },
            flow,
        )
    }
}

/// A well-mixed 32-bit hash of a flow's addresses, protocol and ports (no allocation, no key:
/// it spreads flows over a tenant's own queues, which only that tenant's traffic reaches).
pub fn flow_hash(src: u32, dst: u32, proto: u8, ports: u32) -> u32 {
    let mut h = (u64::from(src) << 32 | u64::from(dst)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= (u64::from(proto) << 32 | u64::from(ports)).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 29;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 32;
    u32::try_from(h & 0xFFFF_FFFF).unwrap_or(0)
}

/// Bytes of IP packets a frame stands for: its L3 length, plus one copy of the IP+transport
/// headers for each segment beyond the first when it is a GSO frame.
pub fn cost(vnet: &VnetHdr, l3_len: usize, l3l4_hdr: usize) -> u32 {
    let mut bytes = l3_len;
    if vnet.is_gso() && l3l4_hdr > 0 && l3_len > l3l4_hdr {
        let payload = l3_len - l3l4_hdr;
        let segs = payload.div_ceil(usize::from(vnet.gso_size));
        bytes += segs.saturating_sub(1) * l3l4_hdr;
    }
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vnet::GSO_TCPV4;
    use std::path::Path;

    pub const CONFIG: &str = r#"
[shaper]
interface = "veth-srv"
tap = "tg0"
redirect = "netdev"
[[tenant]]
name = "alpha"
sources = ["198.51.100.10/32"]
upload = "20mbit"
[[tenant]]
name = "beta"
sources = ["198.51.100.20/32", "198.51.100.128/25"]
upload = "50mbit"
[[tenant]]
name = "gamma"
sources = ["203.0.113.0/24"]
upload = "1gbit"
ports = [22, "8000-8100"]
[[tenant]]
name = "unshaped"
sources = ["10.9.0.0/16"]
"#;

    pub fn classifier() -> Classifier {
        Classifier::from_config(&Config::parse(CONFIG, Path::new("t")).unwrap())
    }

    /// Builds an Ethernet+IPv4+TCP/UDP frame with `payload` bytes.
    pub fn frame(src: [u8; 4], proto: u8, dport: u16, payload: usize) -> Vec<u8> {
        let l4 = if proto == 6 { 20 } else { 8 };
        let total = 20 + l4 + payload;
        let mut f = vec![0u8; 14 + total];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&[198, 51, 100, 2]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        if proto == 6 {
            f[46] = 5 << 4;
        }
        f
    }

    fn plain() -> VnetHdr {
        VnetHdr::default()
    }

    #[test]
    fn by_source() {
        let c = classifier();
        let f = frame([198, 51, 100, 10], 6, 5201, 1448);
        assert_eq!(
            c.classify(&plain(), &f),
            Verdict::Tenant {
                tenant: 0,
                cost: 1488
            }
        );
        let f = frame([198, 51, 100, 200], 17, 53, 100);
        assert_eq!(
            c.classify(&plain(), &f),
            Verdict::Tenant {
                tenant: 1,
                cost: 128
            }
        );
        let f = frame([198, 51, 100, 11], 6, 5201, 10);
        assert_eq!(c.classify(&plain(), &f), Verdict::Pass(Pass::NoTenant));
        // a tenant without `upload` is not shaped
        let f = frame([10, 9, 1, 1], 6, 5201, 10);
        assert_eq!(c.classify(&plain(), &f), Verdict::Pass(Pass::NoTenant));
    }

    #[test]
    fn by_port() {
        let c = classifier();
        for (port, hit) in [
            (22, true),
            (23, false),
            (8000, true),
            (8100, true),
            (8101, false),
        ] {
            let v = c.classify(&plain(), &frame([203, 0, 113, 5], 6, port, 0));
            assert_eq!(
                matches!(v, Verdict::Tenant { tenant: 2, .. }),
                hit,
                "{port}"
            );
        }
        // ICMP from a ports-only tenant is not its traffic
        let mut f = frame([203, 0, 113, 5], 6, 22, 0);
        f[23] = 1;
        assert_eq!(c.classify(&plain(), &f), Verdict::Pass(Pass::NoTenant));
    }

    /// Sets the IPv4 fragment offset (in 8-byte units) and the more-fragments flag.
    fn fragment(f: &mut [u8], offset: u16, more: bool) {
        let v = offset | if more { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn fragments_of_a_ports_tenant_are_its_own() {
        let c = classifier();
        // first fragment: judged by its port, like an unfragmented datagram
        let mut first = frame([203, 0, 113, 5], 17, 22, 1472);
        fragment(&mut first, 0, true);
        assert!(matches!(
            c.classify(&plain(), &first),
            Verdict::Tenant { tenant: 2, .. }
        ));
        fragment(&mut first, 0, true);
        first[36..38].copy_from_slice(&23u16.to_be_bytes());
        assert_eq!(c.classify(&plain(), &first), Verdict::Pass(Pass::NoTenant));
        // later fragments carry no port: the tenant's by source, charged their full length
        let mut later = frame([203, 0, 113, 5], 17, 0, 1472);
        fragment(&mut later, 185, true);
        assert_eq!(
            c.classify(&plain(), &later),
            Verdict::Tenant {
                tenant: 2,
                cost: 1500
            }
        );
        fragment(&mut later, 370, false);
        assert!(matches!(
            c.classify(&plain(), &later),
            Verdict::Tenant { tenant: 2, .. }
        ));
        // and a later fragment from no tenant's source passes
        let mut other = frame([10, 9, 9, 9], 17, 0, 100);
        fragment(&mut other, 185, false);
        assert_eq!(c.classify(&plain(), &other), Verdict::Pass(Pass::NoTenant));
    }

    #[test]
    fn gso_frames_are_charged_per_segment() {
        let c = classifier();
        // 45 segments of 1448 bytes of payload, 20 + 20 bytes of headers each
        let f = frame([198, 51, 100, 10], 6, 5201, 45 * 1448);
        let gso = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
        };
        assert_eq!(
            c.classify(&gso, &f),
            Verdict::Tenant {
                tenant: 0,
                cost: 45 * 1488
            }
        );
        // a last short segment still pays for its headers
        let f = frame([198, 51, 100, 10], 6, 5201, 2 * 1448 + 1);
        assert_eq!(
            c.classify(&gso, &f),
            Verdict::Tenant {
                tenant: 0,
                cost: 3 * 40 + 2 * 1448 + 1
            }
        );
    }

    #[test]
    fn non_ip_and_malformed_pass() {
        let c = classifier();
        let mut arp = frame([198, 51, 100, 10], 6, 1, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(c.classify(&plain(), &arp), Verdict::Pass(Pass::NotIpv4));
        assert_eq!(c.classify(&plain(), &[]), Verdict::Pass(Pass::Malformed));
        let f = frame([198, 51, 100, 10], 6, 5201, 0);
        // every truncation of a valid frame is handled without panic
        for n in 0..f.len() {
            let v = c.classify(&plain(), &f[..n]);
            assert!(matches!(v, Verdict::Pass(_)), "{n}: {v:?}");
        }
        // bad IHL
        let mut bad = f.clone();
        bad[14] = 0x41;
        assert_eq!(c.classify(&plain(), &bad), Verdict::Pass(Pass::Malformed));
    }

    #[test]
    fn mutated_frames_never_panic() {
        // deterministic xorshift mutation of valid frames: classification is total
        let c = classifier();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let gso = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1,
            ..Default::default()
        };
        for i in 0..200_000 {
            let mut f = frame(
                [198, 51, 100, 20],
                if i % 2 == 0 { 6 } else { 17 },
                22,
                (i % 64) as usize,
            );
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let pos = usize::try_from(next() % f.len() as u64).expect("index");
                f[pos] = next().to_le_bytes()[0];
            }
            let len = usize::try_from(next() % (f.len() as u64 + 1)).expect("length");
            let _ = c.classify(&gso, &f[..len]);
        }
    }
}
