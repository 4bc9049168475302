//! The kernel layer's named network namespaces (`tollgate::kernel::netns`) against the real
//! kernel: a namespace it makes is empty, pinned where iproute2 finds it, and separate from
//! the caller's; work run in it (netlink, nft, sysctls) stays in it; delete frees it.
//! Nothing is changed in the caller's namespace: it is only read.

mod common;

use std::process::Command;
use tollgate::kernel::{netlink::Netlink, netns, nft, sysctl};

/// Deletes the namespace on drop, also when an assertion failed.
struct Pinned(String);

impl Drop for Pinned {
    fn drop(&mut self) {
        if netns::exists(&self.0) {
            let _ = netns::delete(&self.0);
        }
    }
}

fn text(c: &mut Command) -> String {
    let out = c.output().expect("running a command");
    assert!(out.status.success(), "{c:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_named_namespace_is_made_entered_and_removed() {
    let Some(_guard) = common::lab("a_named_namespace_is_made_entered_and_removed") else {
        return;
    };
    let name = lab::unique("ns");
    netns::create(&name).expect("creating a namespace");
    let _pin = Pinned(name.clone());
    assert!(netns::exists(&name));
    // this process shares init's mount namespace, so a namespace pinned here outlives it
    assert!(!netns::private_mounts());
    assert!(netns::list("tgns").expect("listing").contains(&name));
    assert!(matches!(
        netns::create(&name),
        Err(netns::NetnsError::Exists(ref n)) if n == &name
    ));

    // only lo inside, whatever the caller's namespace holds
    let links = netns::run_in(&name, || {
        let snap = Netlink::new()
            .expect("netlink")
            .snapshot()
            .expect("snapshot");
        snap.links
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
    })
    .expect("entering it");
    assert_eq!(links, ["lo"]);
    // iproute2 finds it where it looks
    assert!(text(Command::new("ip").args(["-n", &name, "-br", "link"])).starts_with("lo"));

    // a sysctl written in it stays in it; the caller's is untouched
    let key = "net.ipv4.ip_forward";
    let outside = sysctl::read(key).expect("reading outside");
    let inside = if outside == "1" { "0" } else { "1" };
    netns::run_in(&name, || sysctl::write(key, inside))
        .expect("entering it")
        .expect("writing inside");
    assert_eq!(
        netns::run_in(&name, || sysctl::read(key))
            .expect("entering it")
            .expect("reading inside"),
        inside
    );
    assert_eq!(sysctl::read(key).expect("reading outside"), outside);

    // an nft process started from inside loads its ruleset inside
    netns::run_in(&name, || {
        nft::load_text("table inet tollgate_netns_test {}\n")
    })
    .expect("entering it")
    .expect("loading a table inside");
    let inside_tables = netns::run_in(&name, nft::tables)
        .expect("entering it")
        .expect("listing inside");
    assert!(
        inside_tables
            .iter()
            .any(|(_, t)| t == "tollgate_netns_test"),
        "{inside_tables:?}"
    );
    assert!(
        !nft::tables()
            .expect("listing outside")
            .iter()
            .any(|(_, t)| t == "tollgate_netns_test")
    );

    // a connection opened in it works on it from this thread
    let nl = Netlink::new_in(&name).expect("netlink in it");
    nl.link_create_veth("nsv0", "nsv1").expect("a veth in it");
    let mut names: Vec<String> = nl
        .links()
        .expect("links")
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    assert_eq!(names, ["lo", "nsv0", "nsv1"]);
    assert!(
        !tollgate::kernel::device_exists("nsv0"),
        "made here, not there"
    );
    drop(nl);

    netns::delete(&name).expect("deleting it");
    assert!(!netns::exists(&name));
    assert!(!netns::list("tgns").expect("listing").contains(&name));
    assert!(matches!(
        netns::run_in(&name, || ()),
        Err(netns::NetnsError::Missing(_))
    ));
    assert!(matches!(
        netns::delete(&name),
        Err(netns::NetnsError::Missing(_))
    ));
}

#[test]
fn links_span_namespaces_and_their_lowers_are_not_misread() {
    let Some(_guard) = common::lab("links_span_namespaces_and_their_lowers_are_not_misread") else {
        return;
    };
    let (a, b) = (lab::unique("nsa"), lab::unique("nsb"));
    netns::create(&a).expect("creating a");
    let _pa = Pinned(a.clone());
    netns::create(&b).expect("creating b");
    let _pb = Pinned(b.clone());

    // in a: a veth whose peer is made in b, and a macvlan on it moved into b with its alias
    let b2 = b.clone();
    netns::run_in(
        &a,
        move || -> Result<(), tollgate::kernel::netlink::NetlinkError> {
            let nl = Netlink::new()?;
            nl.link_create_veth_into("low0", "low", &b2)?;
            nl.link_create_macvlan("mv0", "low0", [2, 0, 0, 0, 0, 9], None)?;
            nl.link_set_alias("mv0", "tollgate: macvlan on low0 address 02:00:00:00:00:09")?;
            nl.link_set_netns("mv0", &b2)
        },
    )
    .expect("entering a")
    .expect("making the links");

    let links = |ns: &str| {
        netns::run_in(ns, || {
            Netlink::new()
                .expect("netlink")
                .snapshot()
                .expect("snapshot")
                .links
        })
        .expect("entering")
    };
    let in_a = links(&a);
    let in_b = links(&b);
    let find = |ls: &[tollgate::kernel::netlink::decode::LinkState], n: &str| {
        ls.iter()
            .find(|l| l.name == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} missing: {ls:?}"))
    };
    let low0 = find(&in_a, "low0");
    assert!(in_a.iter().all(|l| l.name != "mv0"), "mv0 left a: {in_a:?}");
    let low = find(&in_b, "low");
    let mv0 = find(&in_b, "mv0");
    assert_eq!(mv0.kind, "macvlan");
    assert_eq!(
        mv0.alias.as_deref(),
        Some("tollgate: macvlan on low0 address 02:00:00:00:00:09")
    );
    // each sits on a device of the other namespace: never read as a local index, even where
    // a local device has that index (b's lo is 1, and its own veth end is low)
    for l in [&low0, &low, &mv0] {
        assert_eq!(l.lower, None, "{l:?}");
        assert!(l.lower_netns.is_some(), "{l:?}");
    }
    assert_eq!(low0.kind, "veth");
    assert_eq!(low.kind, "veth");
}
