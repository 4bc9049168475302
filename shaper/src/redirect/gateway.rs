//! Gateway tenants: their uploads to the gateway itself, shaped inside their own VRF.
//!
//! Gateway tenants overlap (two tenants may both be 10.0.0.7), so they are told apart by where
//! their traffic enters, never by address. Per shaped tenant the shaper makes one macvlan on its
//! TAP, `tgs<id>`, with a MAC derived from the id, enslaved to the tenant's VRF:
//!
//! ```text
//!  tenant ─► tunnel (tgt<id>, or tgtun + the peer's mark) ─► netdev ingress:
//!      IPv4 to a local address? ── ether daddr set <tgs<id>'s MAC> ── fwd ──► TAP
//!  TAP ─► shaper: classify by destination MAC ─► queue + bucket ─► write back unchanged
//!  TAP rx ─► macvlan demux by MAC ─► tgs<id> (a slave of the tenant's VRF) ─► local socket
//! ```
//!
//! One netdev chain per ingress device (one per tenant in per-tenant mode, one on the external
//! device), each rule a set or map lookup keyed by the ingress device name or the peer's mark:
//! no rule per tenant is walked. ARP is never redirected (the fib lookup takes IPv4 only), so
//! the gateway address still answers on the tunnel. The gateway's ruleset gives `tgs<id>` the
//! tenant's conntrack zone and mark. The macvlans vanish with the TAP; if the daemon dies, the
//! `fwd` has no target and the tenant's uploads to the gateway stop until it restarts (fails
//! closed, like the netdev redirect).

use super::nft::{
    chain, concat, fresh_table, interval_set, local_daddr_by, matches, meta, not_first_fragment,
    payload, port_expr, rule, s,
};
use nftables::expr::{Expression, MetaKey, NamedExpression};
use nftables::schema::{Map, NfListObject, Nftables, SetType, SetTypeValue};
use nftables::stmt::{Counter, FWD, Mangle, Statement};
use nftables::types::{NfFamily, NfHook};
use std::borrow::Cow;
use std::collections::BTreeSet;
use tollgate::config::{Config, Isolation, PortRange, TunnelMode};
use tollgate::names;

/// A gateway tenant the shaper queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayTenant {
    pub id: u32,
    /// The macvlan on the TAP, and its MAC.
    pub macvlan: String,
    pub mac: [u8; 6],
    /// The VRF the macvlan is enslaved to (None with `isolation = "table"`).
    pub vrf: Option<String>,
    /// The device the tenant's traffic arrives on.
    pub ingress: String,
    pub ports: Vec<PortRange>,
}

/// The shaped gateway tenants, and how they are keyed: by ingress device (per-tenant tunnels)
/// or by the peer's mark on the shared external device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayShaping {
    pub tenants: Vec<GatewayTenant>,
    pub by_mark: bool,
}

impl GatewayShaping {
    pub fn from_config(config: &Config) -> GatewayShaping {
        let Some(gw) = &config.gateway else {
            return GatewayShaping::default();
        };
        let by_mark = gw.tunnel_mode == TunnelMode::External;
        let tenants = config
            .shaped_tenants()
            .filter_map(|(t, _)| t.gateway.as_ref().map(|g| (t, g)))
            .map(|(t, g)| GatewayTenant {
                id: g.id,
                macvlan: names::shaper_macvlan(g.id),
                mac: names::shaper_macvlan_mac(g.id),
                vrf: (gw.isolation == Isolation::Vrf).then(|| names::vrf(g.id)),
                ingress: if by_mark {
                    names::EXTERNAL_DEV.to_string()
                } else {
                    names::tunnel(g.id)
                },
                ports: t.ports.clone(),
            })
            .collect();
        GatewayShaping { tenants, by_mark }
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// The devices that must exist before the shaper starts (made by `tollgate apply`).
    pub fn needed_devices(&self) -> BTreeSet<&str> {
        self.tenants
            .iter()
            .flat_map(|t| std::iter::once(t.ingress.as_str()).chain(t.vrf.as_deref()))
            .collect()
    }

    /// The lookup key of a tenant: its ingress device name, or its id as the peer's mark.
    fn key(&self, t: &GatewayTenant) -> Expression<'static> {
        if self.by_mark {
            Expression::Number(t.id)
        } else {
            s(&t.ingress)
        }
    }

    fn key_expr(&self) -> Expression<'static> {
        meta(if self.by_mark {
            MetaKey::Mark
        } else {
            MetaKey::Iifname
        })
    }

    fn key_type(&self) -> SetType {
        if self.by_mark {
            SetType::Mark
        } else {
            SetType::Ifname
        }
    }

    /// The netdev ruleset: `add table; delete table; table {...}` in one transaction.
    pub fn ruleset(&self, table: &str, tap: &str) -> Nftables<'static> {
        let family = NfFamily::NetDev;
        let table: Cow<'static, str> = Cow::Owned(table.to_string());
        let mut b = fresh_table(family, &table);
        let set = |name: &str, types: Vec<SetType>, elems: Vec<Expression<'static>>| {
            interval_set(family, &table, name, types, elems)
        };
        let mut all = Vec::new();
        let mut ports = Vec::new();
        let mut frags = Vec::new();
        for t in &self.tenants {
            if t.ports.is_empty() {
                all.push(self.key(t));
            } else {
                frags.push(self.key(t));
            }
            for p in &t.ports {
                for proto in ["tcp", "udp"] {
                    ports.push(concat(vec![
                        self.key(t),
                        s(proto),
                        port_expr(p.first, p.last),
                    ]));
                }
            }
        }
        let kt = self.key_type();
        b.add(set("all", vec![kt], all.clone()));
        b.add(set(
            "ports",
            vec![kt, SetType::InetProto, SetType::InetService],
            ports.clone(),
        ));
        b.add(set("fragments", vec![kt], frags.clone()));
        let macs: Vec<Expression<'static>> = self
            .tenants
            .iter()
            .map(|t| {
                Expression::List(vec![
                    self.key(t),
                    s(&tollgate::kernel::model::mac_str(&t.mac)),
                ])
            })
            .collect();
        b.add(NfListObject::Map(Box::new(Map {
            family,
            table: table.clone(),
            name: Cow::Borrowed("mac"),
            handle: None,
            set_type: SetTypeValue::Single(kt),
            map: SetTypeValue::Single(SetType::EtherAddr),
            policy: None,
            flags: None,
            elem: (!macs.is_empty()).then_some(Cow::Owned(macs)),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        })));

        let stamp_and_fwd = |mut stmts: Vec<Statement<'static>>| {
            stmts.push(Statement::Counter(Counter::Anonymous(None)));
            stmts.push(Statement::Mangle(Mangle {
                key: payload("ether", "daddr"),
                value: Expression::Named(NamedExpression::Map(Box::new(nftables::expr::Map {
                    key: self.key_expr(),
                    data: s("@mac"),
                }))),
            }));
            stmts.push(Statement::FWD(Some(FWD {
                dev: Some(s(tap)),
                family: None,
                addr: None,
            })));
            stmts
        };
        // with VRFs, the gateway's address in the tenant network is in the VRF's table, on the
        // tenant's ingress device (its tunnel, or the external device)
        let in_vrf = self.tenants.iter().any(|t| t.vrf.is_some());
        let local_daddr = || local_daddr_by(in_vrf);
        let by_all = stamp_and_fwd(vec![local_daddr(), matches(self.key_expr(), s("@all"))]);
        let by_port = stamp_and_fwd(vec![
            local_daddr(),
            matches(
                concat(vec![
                    self.key_expr(),
                    meta(MetaKey::L4proto),
                    payload("th", "dport"),
                ]),
                s("@ports"),
            ),
        ]);
        let by_fragment = stamp_and_fwd(vec![
            local_daddr(),
            not_first_fragment(),
            matches(self.key_expr(), s("@fragments")),
        ]);
        let devices: BTreeSet<&str> = self.tenants.iter().map(|t| t.ingress.as_str()).collect();
        for dev in devices {
            let name = format!("ingress_{dev}");
            b.add(chain(family, &table, &name, NfHook::Ingress, Some(dev), 0));
            for (stmts, nonempty) in [
                (&by_all, !all.is_empty()),
                (&by_port, !ports.is_empty()),
                (&by_fragment, !frags.is_empty()),
            ] {
                if nonempty {
                    b.add(rule(family, &table, &name, stmts));
                }
            }
        }
        b.to_nftables()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(mode: &str) -> Config {
        let text = tollgate::config::examples::GATEWAY_EXAMPLE
            .replace(
                "tunnel_mode = \"external\"",
                &format!("tunnel_mode = \"{mode}\""),
            )
            .replace(
                "deny_out = [\"tcp/23\"]",
                "deny_out = [\"tcp/23\"]\nupload = \"50mbit\"\nports = [5201]",
            )
            + "\n[shaper]\ntap = \"tg0\"\n";
        Config::parse(&text, Path::new("t")).unwrap()
    }

    #[test]
    fn per_tenant_mode_keys_by_device() {
        let g = GatewayShaping::from_config(&config("per-tenant"));
        assert!(!g.by_mark);
        assert_eq!(g.tenants.len(), 2);
        assert_eq!(g.tenants[0].ingress, "tgt1000");
        assert_eq!(g.tenants[0].macvlan, "tgs1000");
        assert_eq!(g.tenants[0].vrf.as_deref(), Some("tgv1000"));
        assert_eq!(
            g.needed_devices().into_iter().collect::<Vec<_>>(),
            vec!["tgt1000", "tgt2000", "tgv1000", "tgv2000"]
        );
        let j = serde_json::to_string(&g.ruleset("tollgate_shaper_tg0_gw", "tg0")).unwrap();
        // one chain per tunnel device; user1 has no ports (all), user2 has (ports + fragments)
        assert_eq!(j.matches("{\"chain\":{").count(), 2, "{j}");
        assert_eq!(j.matches("{\"rule\":{").count(), 6, "{j}");
        assert!(j.contains("[\"tgt1000\",\"02:74:00:00:03:e8\"]"), "{j}");
        assert!(j.contains("\"fwd\":{\"dev\":\"tg0\"}"), "{j}");
        assert!(j.contains("\"family\":\"netdev\""), "{j}");
    }

    #[test]
    fn external_mode_keys_by_mark_on_one_chain() {
        let g = GatewayShaping::from_config(&config("external"));
        assert!(g.by_mark);
        assert_eq!(g.tenants[1].ingress, "tgtun");
        let j = serde_json::to_string(&g.ruleset("t", "tg0")).unwrap();
        assert_eq!(j.matches("{\"chain\":{").count(), 1, "{j}");
        assert!(j.contains("[2000,\"02:74:00:00:07:d0\"]"), "{j}");
        assert!(j.contains("\"mark\""), "{j}");
    }
}
