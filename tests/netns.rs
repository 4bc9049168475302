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
