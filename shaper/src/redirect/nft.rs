//! The redirect's nftables ruleset as data (nftables crate schema), applied in one atomic
//! transaction by `nft -j -f -` with its stderr captured, so a refusal comes back word for word.
//!
//! One table per TAP, owned entirely by the shaper (`tollgate_shaper_<tap>`). Tenants are
//! selected by interval sets, not one rule per tenant; each ingress device has its own sets
//! (numbered in device order), so the key holds no interface name:
//! - `hosts_<n>`: `ip saddr` for tenants without `ports`;
//! - `ports_<n>`: `ip saddr . l4proto . th dport` for tenants with `ports` (TCP and UDP);
//! - `fragments_<n>`: `ip saddr` of tenants with `ports`, for IP fragments after the first
//!   (`ip frag-off & 0x1fff != 0`), which carry no port: without it, all but the first
//!   fragment of a shaped datagram would reach the socket unshaped.
//!
//! Why per device: a key that starts with `iifname` (16 bytes) makes every set a concatenation
//! of ranges, which the kernel keeps in a pipapo set whose lookup walks bitmaps as long as the
//! set (at 10,000 tenants, tens of kilobytes per packet); a set of plain `ip saddr` ranges is a
//! red-black tree (a few dozen comparisons). In netdev mode each device's chain matches its own
//! sets; in route mode the one prerouting chain has one rule per device (`iifname` first).
//!
//! Only traffic to a local address (`fib daddr type local`) is taken: the shaper is for ingress
//! to local services, never for forwarded traffic.

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload,
    PayloadField, Prefix, Range, SetItem,
};
use nftables::schema::{
    Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, FWD, Mangle, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::collections::BTreeSet;
use tollgate::config::{Config, RedirectMode};

pub use tollgate::kernel::nft::NftError;

/// What the ruleset selects, derived from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub table: String,
    pub family: NfFamily,
    /// Devices whose ingress is hooked (netdev mode: one chain each).
    pub devices: Vec<String>,
    pub hosts: Vec<(String, tollgate::config::Ipv4Net)>,
    pub ports: Vec<(String, tollgate::config::Ipv4Net, &'static str, u16, u16)>,
    /// Sources of tenants with `ports`: their non-first IP fragments carry no port, so every
    /// such fragment is taken (and charged to the tenant by source) rather than none.
    pub fragments: Vec<(String, tollgate::config::Ipv4Net)>,
}

pub use tollgate::names::shaper_nft_table as table_name;

/// The family of the source tenants' table in redirect mode `mode`.
pub fn family(mode: RedirectMode) -> NfFamily {
    match mode {
        RedirectMode::Netdev => NfFamily::NetDev,
        RedirectMode::Route => NfFamily::IP,
    }
}

impl Selection {
    pub fn from_config(config: &Config, mode: RedirectMode, tap: &str) -> Selection {
        let mut devices = BTreeSet::new();
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        let mut fragments = Vec::new();
        for (t, _) in config.shaped_tenants() {
            for dev in config.tenant_interfaces(t) {
                devices.insert(dev.to_string());
                for src in &t.sources {
                    if t.ports.is_empty() {
                        hosts.push((dev.to_string(), *src));
                    } else {
                        fragments.push((dev.to_string(), *src));
                    }
                    for p in &t.ports {
                        for proto in ["tcp", "udp"] {
                            ports.push((dev.to_string(), *src, proto, p.first, p.last));
                        }
                    }
                }
            }
        }
        Selection {
            table: table_name(tap),
            family: family(mode),
            devices: devices.into_iter().collect(),
            hosts,
            ports,
            fragments,
        }
    }
}

pub(super) fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn prefix(n: &tollgate::config::Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(&n.addr().to_string())),
        len: u32::from(n.prefix_len()),
    }))
}

pub(super) fn port_expr(first: u16, last: u16) -> Expression<'static> {
    if first == last {
        Expression::Number(u32::from(first))
    } else {
        Expression::Range(Box::new(Range {
            range: [
                Expression::Number(u32::from(first)),
                Expression::Number(u32::from(last)),
            ],
        }))
    }
}

pub(super) fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Owned(protocol.to_string()),
            field: Cow::Owned(field.to_string()),
        },
    )))
}

pub(super) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub(super) fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

pub(super) fn local_daddr() -> Statement<'static> {
    local_daddr_by(false)
}

/// `ip frag-off & 0x1fff != 0`: an IP fragment after the first (it carries no port).
pub(super) fn not_first_fragment() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            payload("ip", "frag-off"),
            Expression::Number(0x1fff),
        ))),
        right: Expression::Number(0),
        op: Operator::NEQ,
    })
}

/// `fib daddr [. iif] type local`. With `iif`, the lookup is in the ingress device's VRF and
/// the address must be on that device: a VRF's local addresses are in the VRF's table, which a
/// plain `fib daddr type local` (the local table) does not see.
pub(super) fn local_daddr_by(iif: bool) -> Statement<'static> {
    let mut flags: std::collections::HashSet<FibFlag> = [FibFlag::Daddr].into_iter().collect();
    if iif {
        flags.insert(FibFlag::Iif);
    }
    matches(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags,
        })),
        s("local"),
    )
}

pub(super) fn concat(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(items))
}

/// A batch that starts with `add table; delete table; add table`: applied in one transaction,
/// it replaces any stale copy of the table atomically (no window without it, no duplicates).
pub(super) fn fresh_table(family: NfFamily, table: &str) -> Batch<'static> {
    let mut b = Batch::new();
    let t = || {
        NfListObject::Table(Table {
            family,
            name: Cow::Owned(table.to_string()),
            handle: None,
        })
    };
    b.add(t());
    b.delete(t());
    b.add(t());
    b
}

/// An interval set of `types` (one type, or a concatenation) holding `elems`.
pub(super) fn interval_set(
    family: NfFamily,
    table: &str,
    name: &str,
    types: Vec<SetType>,
    elems: Vec<Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Owned(name.to_string()),
        handle: None,
        set_type: match types.as_slice() {
            [one] => SetTypeValue::Single(*one),
            _ => SetTypeValue::Concatenated(Cow::Owned(types)),
        },
        policy: None,
        flags: Some([SetFlag::Interval].into_iter().collect()),
        elem: (!elems.is_empty()).then_some(Cow::Owned(elems)),
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }))
}

/// A rule of `stmts` in `chain`.
pub(super) fn rule(
    family: NfFamily,
    table: &str,
    chain: &str,
    stmts: &[Statement<'static>],
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Owned(chain.to_string()),
        expr: Cow::Owned(stmts.to_vec()),
        handle: None,
        index: None,
        comment: None,
    })
}

/// The whole ruleset: `add table; delete table; table {...}` in one transaction, so applying it
/// replaces any stale copy atomically (no window without the redirect, no duplicates).
pub fn ruleset(sel: &Selection, tap: &str, mode: RedirectMode, mark: u32) -> Nftables<'static> {
    let family = sel.family;
    let table: Cow<'static, str> = Cow::Owned(sel.table.clone());
    let mut b = fresh_table(family, &table);
    let set = |name: &str, types: Vec<SetType>, elems: Vec<Expression<'static>>| {
        interval_set(family, &table, name, types, elems)
    };
    let action = match mode {
        RedirectMode::Netdev => Statement::FWD(Some(FWD {
            dev: Some(s(tap)),
            family: None,
            addr: None,
        })),
        RedirectMode::Route => Statement::Mangle(Mangle {
            key: meta(MetaKey::Mark),
            value: Expression::Number(mark),
        }),
    };
    // mangle priority (route mode): before conntrack's NAT and before the routing decision
    if mode == RedirectMode::Route {
        b.add(chain(
            family,
            &table,
            "prerouting",
            NfHook::Prerouting,
            None,
            -150,
        ));
    }
    for (n, dev) in sel.devices.iter().enumerate() {
        let on = |d: &str| d == dev.as_str();
        let sources_on = |list: &[(String, tollgate::config::Ipv4Net)]| -> Vec<_> {
            list.iter()
                .filter(|(d, _)| on(d))
                .map(|(_, net)| prefix(net))
                .collect()
        };
        let hosts = sources_on(&sel.hosts);
        let fragments = sources_on(&sel.fragments);
        let ports: Vec<_> = sel
            .ports
            .iter()
            .filter(|(d, ..)| on(d))
            .map(|(_, net, proto, a, z)| concat(vec![prefix(net), s(proto), port_expr(*a, *z)]))
            .collect();
        let (hosts_set, ports_set, fragments_set) = (
            format!("hosts_{n}"),
            format!("ports_{n}"),
            format!("fragments_{n}"),
        );
        // a rule only for a set with elements
        let used = [!hosts.is_empty(), !ports.is_empty(), !fragments.is_empty()];
        b.add(set(&hosts_set, vec![SetType::Ipv4Addr], hosts));
        b.add(set(&fragments_set, vec![SetType::Ipv4Addr], fragments));
        b.add(set(
            &ports_set,
            vec![SetType::Ipv4Addr, SetType::InetProto, SetType::InetService],
            ports,
        ));
        // netdev: a chain on the device itself; route: the shared chain, this device's rules
        let (chain_name, device_match) = match mode {
            RedirectMode::Netdev => {
                let name = format!("ingress_{dev}");
                b.add(chain(family, &table, &name, NfHook::Ingress, Some(dev), 0));
                (name, None)
            }
            RedirectMode::Route => (
                "prerouting".to_string(),
                Some(matches(meta(MetaKey::Iifname), s(dev))),
            ),
        };
        let at = |set: &str| s(&format!("@{set}"));
        let by_host = [matches(payload("ip", "saddr"), at(&hosts_set))];
        let by_port = [
            matches(
                meta(MetaKey::L4proto),
                Expression::Named(NamedExpression::Set(vec![
                    SetItem::Element(s("tcp")),
                    SetItem::Element(s("udp")),
                ])),
            ),
            matches(
                concat(vec![
                    payload("ip", "saddr"),
                    meta(MetaKey::L4proto),
                    payload("th", "dport"),
                ]),
                at(&ports_set),
            ),
        ];
        let by_fragment = [
            not_first_fragment(),
            matches(payload("ip", "saddr"), at(&fragments_set)),
        ];
        for (used, selects) in used
            .into_iter()
            .zip([&by_host[..], &by_port[..], &by_fragment[..]])
        {
            if !used {
                continue;
            }
            let mut stmts: Vec<Statement<'static>> = device_match.iter().cloned().collect();
            stmts.push(local_daddr());
            stmts.extend(selects.iter().cloned());
            stmts.push(Statement::Counter(Counter::Anonymous(None)));
            stmts.push(action.clone());
            b.add(rule(family, &table, &chain_name, &stmts));
        }
    }
    b.to_nftables()
}

/// A base chain of the filter type, policy accept, on `hook` (`dev` for netdev ingress).
pub(super) fn chain(
    family: NfFamily,
    table: &str,
    name: &str,
    hook: NfHook,
    dev: Option<&str>,
    prio: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family,
        table: Cow::Owned(table.to_string()),
        name: Cow::Owned(name.to_string()),
        newname: None,
        handle: None,
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        dev: dev.map(|d| Cow::Owned(d.to_string())),
        policy: Some(NfChainPolicy::Accept),
    })
}

/// `add table; delete table` in one transaction: removes the table if it exists, else no-op.
pub fn removal(table: &str, family: NfFamily) -> Nftables<'static> {
    let mut b = Batch::new();
    let t = || {
        NfListObject::Table(Table {
            family,
            name: Cow::Owned(table.to_string()),
            handle: None,
        })
    };
    b.add(t());
    b.delete(t());
    b.to_nftables()
}

/// Runs `nft -j -f -` with the ruleset on stdin; nft's own message on failure.
pub fn apply(ruleset: &Nftables<'_>) -> Result<(), NftError> {
    let json = serde_json::to_vec(ruleset).map_err(|e| NftError::Output(e.to_string()))?;
    tollgate::kernel::nft::load_json(&json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn selection_uses_sets_not_rules_per_tenant() {
        let c = Config::parse(crate::classify::tests::CONFIG, Path::new("t")).unwrap();
        let sel = Selection::from_config(&c, RedirectMode::Netdev, "tg0");
        assert_eq!(sel.devices, vec!["veth-srv"]);
        assert_eq!(sel.hosts.len(), 3); // alpha 1 + beta 2; unshaped tenant left out
        assert_eq!(sel.ports.len(), 4); // gamma: 2 port ranges x tcp/udp
        let rs = ruleset(&sel, "tg0", RedirectMode::Netdev, 0);
        let j = serde_json::to_string(&rs).unwrap();
        // one chain, three rules (hosts, ports, fragments), regardless of the number of tenants
        assert_eq!(sel.fragments.len(), 1); // gamma's one source
        assert_eq!(j.matches("{\"rule\":{").count(), 3, "{j}");
        assert!(j.contains("\"frag-off\""), "{j}");
        assert!(j.contains("\"@fragments_0\""), "{j}");
        assert!(
            !j.contains("\"ifname\""),
            "no set is keyed by interface name (a pipapo set): {j}"
        );
        assert_eq!(j.matches("{\"chain\":{").count(), 1, "{j}");
        assert!(j.contains("\"fwd\":{\"dev\":\"tg0\"}"), "{j}");
        assert!(j.contains("\"delete\""), "{j}");
        let route = ruleset(
            &Selection::from_config(&c, RedirectMode::Route, "tg0"),
            "tg0",
            RedirectMode::Route,
            0x7467,
        );
        let j = serde_json::to_string(&route).unwrap();
        assert!(j.contains("\"mangle\""), "{j}");
        assert!(j.contains("\"family\":\"ip\""), "{j}");
    }

    #[test]
    fn each_device_has_its_own_sets_and_rules() {
        let text = format!(
            "{}\n[[tenant]]\nname = \"delta\"\nsources = [\"172.31.9.0/28\"]\nupload = \"1mbit\"\ninterfaces = [\"eth9\"]\n",
            crate::classify::tests::CONFIG
        );
        let c = Config::parse(&text, Path::new("t")).unwrap();
        for mode in [RedirectMode::Netdev, RedirectMode::Route] {
            let sel = Selection::from_config(&c, mode, "tg0");
            assert_eq!(sel.devices, vec!["eth9", "veth-srv"]);
            let j = serde_json::to_string(&ruleset(&sel, "tg0", mode, 1)).unwrap();
            // eth9: delta's hosts only; veth-srv: hosts, ports and fragments
            assert_eq!(j.matches("{\"rule\":{").count(), 4, "{mode:?}: {j}");
            assert_eq!(j.matches("{\"set\":{").count(), 6, "{mode:?}: {j}");
            assert!(
                j.contains("\"@hosts_0\"") && j.contains("\"@hosts_1\""),
                "{j}"
            );
            let chains = j.matches("{\"chain\":{").count();
            match mode {
                RedirectMode::Netdev => assert_eq!(chains, 2, "one chain per device: {j}"),
                RedirectMode::Route => {
                    assert_eq!(chains, 1, "{j}");
                    assert_eq!(
                        j.matches("\"iifname\"").count(),
                        4,
                        "each rule names its device: {j}"
                    );
                }
            }
        }
    }
}
