use super::*;
use crate::kernel::ifindex::{BUCKETS, IndexChooser};
use crate::names;
use std::collections::BTreeMap;

fn vrf(id: u32) -> Link {
    Link {
        name: names::vrf(id),
        kind: LinkKind::Vrf { table: id },
        master: None,
    }
}

fn macvlan(name: String, lower: &str, id: u32) -> Link {
    Link {
        name,
        kind: LinkKind::Macvlan {
            lower: lower.into(),
            mac: names::gateway_macvlan_mac(id),
            outside: false,
        },
        master: Some(names::vrf(id)),
    }
}

fn external() -> Link {
    Link {
        name: EXTERNAL_DEV.into(),
        kind: LinkKind::Gretap {
            key: None,
            local: None,
            remote: None,
        },
        master: None,
    }
}

/// The link creations of a plan for `n` tenants in external mode with EIPs, in the plan's
/// order (rank, then name), after a sysctl and followed by an address.
fn plan_for(n: u32) -> Vec<Change> {
    let mut links = vec![external()];
    for id in 1..=n {
        links.push(vrf(id));
        links.push(macvlan(names::public_macvlan(id), "eth0", id));
        links.push(macvlan(names::gateway_macvlan(id), EXTERNAL_DEV, id));
    }
    links.sort_by_key(|l| (l.rank(), l.name.clone()));
    let mut changes = vec![Change::Sysctl {
        key: "net.ipv4.ip_forward".into(),
        from: "0".into(),
        to: "1".into(),
    }];
    changes.extend(links.into_iter().map(|link| Change::CreateLink { link }));
    changes.push(Change::SetUp {
        link: "eth0".into(),
    });
    changes
}

/// Creates the devices as apply would (per-tenant ones at chosen indexes; lo, eth0 and the
/// underlay hold 1 to 3) and returns, per device, how many devices the kernel walks past
/// before it in its index list (those made later in the same list).
fn walks(steps: &[Step]) -> BTreeMap<String, usize> {
    let mut chooser = IndexChooser::new([1, 2, 3], []);
    let mut made: Vec<(String, u32)> = Vec::new();
    let mut make = |l: &Link| {
        let index = if l.name == EXTERNAL_DEV {
            let i = 4;
            chooser.share(i);
            i
        } else {
            chooser.choose().expect("a free index")
        };
        made.push((l.name.clone(), index));
    };
    for s in steps {
        match *s {
            Step::AddDown(l) | Step::Change(Change::CreateLink { link: l }) => make(l),
            _ => {}
        }
    }
    // newest first, counting each list's devices seen so far
    let mut seen = [0usize; BUCKETS as usize];
    let mut out = BTreeMap::new();
    for (name, index) in made.iter().rev() {
        let list = &mut seen[(index % BUCKETS) as usize];
        out.insert(name.clone(), *list);
        *list += 1;
    }
    out
}

/// Per tenant: devices walked by an inbound packet (its public macvlan and VRF) and by a
/// reply (its tunnel-side macvlan and VRF); the largest of each over all tenants.
fn worst(n: u32, w: &BTreeMap<String, usize>) -> (usize, usize) {
    (1..=n)
        .map(|id| {
            let v = w[&names::vrf(id)];
            (
                v + w[&names::public_macvlan(id)],
                v + w[&names::gateway_macvlan(id)],
            )
        })
        .fold((0, 0), |(a, b), (i, r)| (a.max(i), b.max(r)))
}

#[test]
fn every_tenant_walks_about_the_same_short_way() {
    let n = 10_000;
    let changes = plan_for(n);
    // 30,000 per-tenant devices in the 252 lists not reserved for lo, eth0, the underlay and
    // the tunnel device: about 119 a list, a third of each VRFs, a third of each kind of
    // macvlan
    let per_list = 30_000 / 252;
    let (plan_in, plan_reply) = worst(n, &walks(&plan_order(&changes)));
    let (inbound, reply) = worst(n, &walks(&schedule(&changes)));
    // (at the time of writing: 158 / 198 in plan order, 79 / 119 as applied)
    // in the plan's own order the first tenant's VRF is last in its list
    assert!(plan_in >= per_list * 4 / 3 - 2, "plan order: {plan_in}");
    assert!(
        plan_reply >= per_list * 5 / 3 - 2,
        "plan order: {plan_reply}"
    );
    // VRFs at the head, then the public side: two thirds of a list at most, for every tenant
    assert!(
        inbound <= per_list * 2 / 3 + 2,
        "inbound walks up to {inbound} devices (lists of ~{per_list})"
    );
    assert!(
        reply <= per_list + 2,
        "replies walk up to {reply} devices (lists of ~{per_list})"
    );
}

fn plan_order(changes: &[Change]) -> Vec<Step<'_>> {
    changes.iter().map(Step::Change).collect()
}

#[test]
fn each_change_is_carried_out_once_and_a_device_after_what_it_needs() {
    let changes = plan_for(5);
    let steps = schedule(&changes);
    let position = |want: Step| steps.iter().position(|s| *s == want);
    // every change once, either whole or as its second half
    for c in &changes {
        let whole = steps.iter().filter(|s| **s == Step::Change(c)).count();
        let finished = match c {
            Change::CreateLink { link } => {
                steps.iter().filter(|s| **s == Step::Finish(link)).count()
            }
            _ => 0,
        };
        assert_eq!(whole + finished, 1, "{c}");
    }
    let created = |name: &str| {
        steps
            .iter()
            .position(|s| match *s {
                Step::AddDown(l) | Step::Change(Change::CreateLink { link: l }) => l.name == name,
                _ => false,
            })
            .unwrap_or_else(|| panic!("{name} is never made"))
    };
    let first_vrf = created(&names::vrf(1));
    for c in &changes {
        let Change::CreateLink { link } = c else {
            continue;
        };
        let Some(master) = &link.master else {
            continue;
        };
        let add = position(Step::AddDown(link)).expect("made down first");
        let finish = position(Step::Finish(link)).expect("finished");
        assert!(add < first_vrf, "{} is made before the VRFs", link.name);
        assert!(created(EXTERNAL_DEV) < add, "{} after its lower", link.name);
        assert!(created(master) < finish, "{} after its VRF", link.name);
    }
    // the sysctl stays first, the last change last
    assert_eq!(steps[0], Step::Change(&changes[0]));
    assert_eq!(
        steps.last(),
        Some(&Step::Change(&changes[changes.len() - 1]))
    );
}

#[test]
fn without_new_vrfs_the_plan_order_stands() {
    // a tenant's new macvlan in a VRF that already exists, and a new tunnel device
    let changes = vec![
        Change::CreateLink { link: external() },
        Change::CreateLink {
            link: macvlan(names::public_macvlan(7), "eth0", 7),
        },
    ];
    assert_eq!(schedule(&changes), plan_order(&changes));
}

#[test]
fn keyed_tunnel_devices_go_behind_the_public_side() {
    let mut changes = vec![Change::CreateLink { link: vrf(1) }];
    let tunnel = Link {
        name: names::tunnel(1),
        kind: LinkKind::Gretap {
            key: Some(1),
            local: None,
            remote: None,
        },
        master: Some(names::vrf(1)),
    };
    changes.push(Change::CreateLink {
        link: tunnel.clone(),
    });
    let public = macvlan(names::public_macvlan(1), "eth0", 1);
    changes.push(Change::CreateLink {
        link: public.clone(),
    });
    let steps = schedule(&changes);
    assert_eq!(
        steps,
        vec![
            Step::AddDown(&tunnel),
            Step::AddDown(&public),
            Step::Change(&changes[0]),
            Step::Finish(&tunnel),
            Step::Finish(&public),
        ]
    );
}
