use super::*;
use crate::config::Config;
use crate::gateway::desired::{self, Desired};
use crate::gateway::observe::ObservedLink;
use std::path::Path;

fn public() -> desired::PublicDevice {
    desired::PublicDevice {
        subnets: vec!["198.51.100.0/24".parse().unwrap()],
        mac: None,
        gateway_addresses: vec!["198.51.100.1".parse().unwrap()],
    }
}

fn desired(mode: &str) -> Desired {
    let text = include_str!("../../../examples/gateway.toml").replace(
        "tunnel_mode = \"external\"",
        &format!("tunnel_mode = \"{mode}\""),
    );
    let c = Config::parse(&text, Path::new("t")).unwrap();
    desired::build(&c, &public(), false)
}

/// The kernel after a successful apply of `d`.
fn applied(d: &Desired) -> (Observed, Extra) {
    let o = Observed {
        links: d
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| ObservedLink {
                name: l.name.clone(),
                index: u32::try_from(i).expect("small") + 10,
                spec: l.spec(),
                master: l.master.clone(),
                up: true,
                kind: l.kind_name().into(),
            })
            .collect(),
        addresses: d.addresses.iter().cloned().collect(),
        routes: d.routes.iter().cloned().collect(),
        rules: d.rules.iter().cloned().collect(),
        neighs: d.neighs.iter().cloned().collect(),
        l3mdev_rule: true,
        vrf_count: 2,
        ..Default::default()
    };
    let x = Extra {
        sysctls: d
            .sysctls
            .iter()
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect(),
        ruleset_digest: Some(d.ruleset_digest.clone()),
    };
    (o, x)
}

#[test]
fn fresh_kernel_gets_everything_in_order() {
    let d = desired("per-tenant");
    let changes = plan(&d, &Observed::default(), &Extra::default());
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| match c {
            Change::Sysctl { .. } => "sysctl",
            Change::CreateLink { .. } => "link",
            Change::AddAddress { .. } => "addr",
            Change::AddRoute { .. } => "route",
            Change::AddRule { .. } => "rule",
            Change::Ruleset { .. } => "nft",
            other => panic!("unexpected {other}"),
        })
        .collect();
    let mut sorted = kinds.clone();
    let rank = |k: &&str| {
        ["sysctl", "link", "addr", "route", "rule", "nft"]
            .iter()
            .position(|x| x == k)
    };
    sorted.sort_by_key(rank);
    assert_eq!(kinds, sorted, "apply order");
    // VRFs before the tunnels enslaved to them
    let links: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateLink { link } => Some(link.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        links,
        vec![
            "tgv1000", "tgv2000", "tgt1000", "tgt2000", "tgp1000", "tgp2000"
        ]
    );
}

#[test]
fn converged_kernel_plans_nothing() {
    for mode in ["per-tenant", "external"] {
        let d = desired(mode);
        let (o, x) = applied(&d);
        assert_eq!(plan(&d, &o, &x), vec![], "{mode}");
    }
}

#[test]
fn changed_link_is_recreated_with_its_contents() {
    let d = desired("per-tenant");
    let (mut o, x) = applied(&d);
    o.links
        .iter_mut()
        .find(|l| l.name == "tgt1000")
        .unwrap()
        .spec = "gretap key 999".into();
    let changes = plan(&d, &o, &x);
    assert!(matches!(&changes[0], Change::RecreateLink { link, .. } if link.name == "tgt1000"));
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::AddAddress { address } if address.dev == "tgt1000"))
    );
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::AddRoute { route } if route.dev == "tgt1000"))
    );
    assert!(!changes.iter().any(|c| c.sign() == '-'), "{changes:?}");
}

#[test]
fn drift_is_repaired_and_strays_removed() {
    let d = desired("per-tenant");
    let (mut o, mut x) = applied(&d);
    o.links
        .iter_mut()
        .find(|l| l.name == "tgt2000")
        .unwrap()
        .master = None;
    o.links.iter_mut().find(|l| l.name == "tgv1000").unwrap().up = false;
    let mut stray = Rule::all(
        10002,
        RuleAction::Lookup(3000),
        crate::names::RTPROT_GATEWAY,
    );
    stray.fwmark = Some(3000);
    o.rules.push(stray.clone());
    x.ruleset_digest = Some(String::new());
    x.sysctls[0].1 = "0".into();
    let changes = plan(&d, &o, &x);
    let text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "~ sysctl net.ipv4.ip_forward 0 -> 1",
            "~ link tgv1000 up",
            "~ link tgt2000 master tgv2000",
            &format!(
                "~ nft table inet tollgate_gw (replace atomically, version {})",
                d.ruleset_digest
            ),
            "- rule pref 10002 fwmark 3000 lookup 3000",
        ]
    );
}

#[test]
fn removed_tenant_is_deleted_innermost_first() {
    let d = desired("per-tenant");
    let (o, x) = applied(&d);
    let text = include_str!("../../../examples/gateway.toml")
        .replace("tunnel_mode = \"external\"", "tunnel_mode = \"per-tenant\"");
    let cut = text.rfind("[[tenant]]").unwrap();
    let one = Config::parse(&text[..cut], Path::new("t")).unwrap();
    let d1 = desired::build(&one, &public(), false);
    let changes = plan(&d1, &o, &x);
    let deletes: Vec<String> = changes
        .iter()
        .filter(|c| c.sign() == '-')
        .map(|c| c.to_string())
        .collect();
    // routes on tgt2000 vanish with it; the public route in table 2000 is deleted explicitly
    assert_eq!(
        deletes,
        vec![
            "- route 198.51.100.0/24 dev eth-pub table 2000",
            "- link tgp2000",
            "- link tgt2000",
            "- link tgv2000",
        ]
    );
}

#[test]
fn destroy_removes_ours_and_the_kernels_l3mdev_rule_only_if_we_caused_it() {
    let d = desired("per-tenant");
    let (o, x) = applied(&d);
    let restore = vec![("net.ipv4.ip_forward".to_string(), "0".to_string())];
    let c = destroy(&o, &x, &restore, false);
    assert_eq!(c.first(), Some(&Change::DeleteRuleset));
    assert!(c.contains(&Change::DeleteL3mdevRule));
    assert_eq!(
        c.last(),
        Some(&Change::RestoreSysctl {
            key: "net.ipv4.ip_forward".into(),
            to: "0".into()
        })
    );
    let links: Vec<&Change> = c
        .iter()
        .filter(|c| matches!(c, Change::DeleteLink { .. }))
        .collect();
    assert_eq!(links.len(), 6);
    assert!(!destroy(&o, &x, &restore, true).contains(&Change::DeleteL3mdevRule));
    let mut others = o.clone();
    others.vrf_count = 3; // an operator's VRF still needs the rule
    assert!(!destroy(&others, &x, &restore, false).contains(&Change::DeleteL3mdevRule));
}

fn link_changes(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateLink { link } => Some(format!("+{}", link.name)),
            Change::RecreateLink { link, .. } => Some(format!("~{}", link.name)),
            Change::DeleteLink { link } => Some(format!("-{link}")),
            _ => None,
        })
        .collect()
}

/// Macvlans sit on the external device: made after it, removed before it, and made again when
/// it is recreated (the kernel removes them with it).
#[test]
fn uppers_follow_their_lower() {
    let d = desired("external");
    assert_eq!(
        link_changes(&plan(&d, &Observed::default(), &Extra::default())),
        vec![
            "+tgv1000", "+tgv2000", "+tgtun", "+tge1000", "+tge2000", "+tgp1000", "+tgp2000"
        ]
    );
    let (mut o, x) = applied(&d);
    o.links.iter_mut().find(|l| l.name == "tgtun").unwrap().spec =
        "gretap key 9 local any remote any".into();
    assert_eq!(
        link_changes(&plan(&d, &o, &x)),
        vec!["~tgtun", "+tge1000", "+tge2000"]
    );
    let (o, x) = applied(&d);
    assert_eq!(
        link_changes(&destroy(&o, &x, &[], true)),
        vec![
            "-tge1000", "-tge2000", "-tgp1000", "-tgp2000", "-tgtun", "-tgv1000", "-tgv2000"
        ]
    );
}
