use super::*;
use std::path::Path;

fn config(tunnel: &str, mode: &str, isolation: &str) -> Config {
    let text = crate::config::examples::gateway_variant(tunnel, mode, isolation, "auto", None);
    Config::parse(&text, Path::new("t")).unwrap()
}

fn public() -> PublicDevice {
    PublicDevice {
        subnets: vec!["198.51.100.0/24".parse().unwrap()],
        mac: None,
        gateway_addresses: vec!["198.51.100.1".parse().unwrap()],
    }
}

#[test]
fn per_tenant_table_vxlan() {
    let d = build(&config("vxlan", "per-tenant", "table"), &public(), false);
    let names: Vec<&str> = d.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["tgt1000", "tgt2000"]);
    assert_eq!(
        d.links[0].spec(),
        "vxlan id 1000 local 172.31.0.1 remote 172.31.0.11 dstport 4789 dev eth-ul"
    );
    assert!(d.links.iter().all(|l| l.master.is_none()));
    assert_eq!(d.addresses.len(), 2);
    assert!(d.neighs.is_empty());
    // per tenant: its network on its device, the public subnet
    assert_eq!(d.routes.len(), 4);
    assert!(
        d.routes
            .iter()
            .any(|r| r.table == 2000 && r.dev == "tgt2000" && r.encap.is_none())
    );
    let rules: Vec<String> = d.rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        rules,
        vec![
            "rule pref 10000 fwmark 1000 lookup 1000",
            "rule pref 10000 fwmark 2000 lookup 2000"
        ]
    );
    let rs = &d.ruleset;
    assert!(
        rs.contains("ct zone set iifname map { \"tgt1000\" : 1000, \"tgt2000\" : 2000 }"),
        "{rs}"
    );
    assert!(
        rs.contains("dnat ip to ip daddr map { 203.0.113.11 : 10.0.0.7, 203.0.113.12 : 10.0.0.7 }"),
        "{rs}"
    );
    assert!(
        rs.contains("snat ip to ct zone map { 1000 : 203.0.113.11, 2000 : 203.0.113.12 }"),
        "{rs}"
    );
    assert!(
        rs.contains("ct zone vmap { 1000 : jump tenant_1000, 2000 : jump tenant_2000 }"),
        "{rs}"
    );
    assert!(
        rs.contains("tcp dport 22 counter reject with tcp reset"),
        "{rs}"
    );
    assert!(rs.contains("meta iifkind \"vrf\" accept"), "{rs}");
    assert!(!rs.contains("flowtable"), "{rs}");
    assert!(
        rs.contains(&format!("tollgate {}", d.ruleset_digest)),
        "{rs}"
    );
}

#[test]
fn public_entries_keep_out_of_the_public_devices_macvlan_list() {
    // a public device whose MAC shares the macvlan driver's list with 02:70:00:00:03:e8
    let lower = names::mac_in_bucket(names::macvlan_bucket([2, 0x70, 0, 0, 3, 0xe8]));
    let p = PublicDevice {
        mac: Some(lower),
        ..public()
    };
    let d = build(&config("gretap", "external", "vrf"), &p, false);
    let tgp = d.links.iter().find(|l| l.name == "tgp1000").unwrap();
    assert_eq!(tgp.spec(), "macvlan on eth-pub address 06:70:00:00:03:e8");
    // and the public device's ingress stamps that MAC
    let rs = &d.ruleset;
    assert!(rs.contains("203.0.113.11 : 06:70:00:00:03:e8"), "{rs}");
    // the same config on a device elsewhere keeps the plain MAC
    let d = build(&config("gretap", "external", "vrf"), &public(), false);
    assert!(d.ruleset.contains("203.0.113.11 : 02:70:00:00:03:e8"));
}

#[test]
fn external_vrf_gretap_with_offload() {
    let d = build(&config("gretap", "external", "vrf"), &public(), true);
    let names: Vec<&str> = d.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "tgtun", "tgv1000", "tgp1000", "tge1000", "tgv2000", "tgp2000", "tge2000"
        ]
    );
    assert_eq!(d.links[0].spec(), "gretap external");
    // each tenant's traffic enters its VRF on its macvlan of the external device
    assert_eq!(
        d.links[3].spec(),
        "macvlan on tgtun address 02:67:00:00:03:e8"
    );
    assert_eq!(d.links[3].master.as_deref(), Some("tgv1000"));
    // and traffic to its EIPs on its macvlan of the public device
    assert_eq!(
        d.links[2].spec(),
        "macvlan on eth-pub address 02:70:00:00:03:e8"
    );
    assert_eq!(d.links[2].master.as_deref(), Some("tgv1000"));
    let rs = &d.ruleset;
    assert!(rs.contains("table netdev tollgate_gw"), "{rs}");
    assert!(
        rs.contains(
            "ether daddr set meta mark map { 1000 : 02:67:00:00:03:e8, 2000 : 02:67:00:00:07:d0 }"
        ),
        "{rs}"
    );
    assert!(rs.contains("\"tge2000\" : 2000"), "{rs}");
    // one /32 for the shared gateway IP, one neighbour per tenant
    assert_eq!(d.addresses.len(), 1);
    let n: Vec<String> = d.neighs.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        n,
        vec![
            "neigh 169.254.3.232 lladdr 02:00:00:00:10:07 dev tgtun permanent",
            "neigh 169.254.7.208 lladdr 02:00:00:00:20:07 dev tgtun permanent",
        ]
    );
    let r = d
        .routes
        .iter()
        .find(|r| r.table == 1000 && r.encap.is_some())
        .unwrap();
    assert_eq!(
        r.to_string(),
        "route 10.0.0.0/24 via 169.254.3.232 onlink encap ip id 1000 dst 172.31.0.11 key dev tgtun table 1000"
    );
    // no policy rule per tenant: only what is unmarked on the external device is refused
    let rules: Vec<String> = d.rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(rules, vec!["rule pref 10001 iif tgtun prohibit"]);
    let rs = &d.ruleset;
    assert!(rs.contains("devices = { \"eth-pub\", \"tgtun\" }"), "{rs}");
    assert!(rs.contains("flow add @ft"), "{rs}");
    // the outer packet is marked by (peer, GRE key) in one lookup
    assert!(
        rs.contains("typeof ip saddr . @th,32,32 : meta mark\n\t\telements = { 172.31.0.11 . 0x3e8 : 1000, 172.31.0.12 . 0x7d0 : 2000 }"),
        "{rs}"
    );
    assert!(
        rs.contains("iifname \"eth-ul\" ip protocol gre @th,0,32 0x20006558 meta mark set ip saddr . @th,32,32 map @peers"),
        "{rs}"
    );
    // EIPs: stamped on the public device, zone and mark from the macvlan, DNAT from it
    assert!(
        rs.contains("meta pkttype host meta protocol ip ether daddr set ip daddr map { 203.0.113.11 : 02:70:00:00:03:e8, 203.0.113.12 : 02:70:00:00:07:d0 }"),
        "{rs}"
    );
    assert!(rs.contains("\"tgp1000\" : 1000"), "{rs}");
    assert!(
        rs.contains("iifname { \"tgp1000\", \"tgp2000\" } dnat ip to ip daddr map"),
        "{rs}"
    );
    assert!(!rs.contains("iifname \"eth-pub\" ct zone"), "{rs}");
}

#[test]
fn per_tenant_vrf_enslaves() {
    let d = build(&config("gretap", "per-tenant", "vrf"), &public(), false);
    let t = d.links.iter().find(|l| l.name == "tgt2000").unwrap();
    assert_eq!(t.master.as_deref(), Some("tgv2000"));
    assert_eq!(
        t.spec(),
        "gretap key 2000 local 172.31.0.1 remote 172.31.0.12"
    );
}

#[test]
fn ruleset_version_follows_content() {
    let a = build(&config("vxlan", "per-tenant", "table"), &public(), false);
    let b = build(&config("vxlan", "per-tenant", "table"), &public(), false);
    let c = build(&config("vxlan", "per-tenant", "table"), &public(), true);
    assert_eq!(a.ruleset_digest, b.ruleset_digest);
    assert_ne!(a.ruleset_digest, c.ruleset_digest);
}

/// Tenant names that a name transformation could fold together (`user-1`, `user_1`) still get
/// separate firewall chains: chains are named by id.
#[test]
fn firewall_chains_are_per_id_not_per_name() {
    let text = crate::config::examples::GATEWAY_EXAMPLE
        .replace("name = \"user1\"", "name = \"user-1\"")
        .replace("name = \"user2\"", "name = \"user_1\"");
    let c = Config::parse(&text, Path::new("t")).unwrap();
    let d = build(&c, &public(), false);
    let rs = &d.ruleset;
    for chain in [
        "tenant_1000",
        "in_1000",
        "out_1000",
        "tenant_2000",
        "in_2000",
        "out_2000",
    ] {
        assert_eq!(
            rs.matches(&format!("chain {chain} {{")).count(),
            1,
            "{chain} in\n{rs}"
        );
    }
    assert!(rs.contains("tcp dport 22 counter accept"), "{rs}");
    assert!(rs.contains("tcp dport 23 counter accept"), "{rs}");
    let in_1000 = &rs[rs.find("chain in_1000").unwrap()..];
    let in_1000 = &in_1000[..in_1000.find('}').unwrap()];
    assert!(
        in_1000.contains("dport 22") && !in_1000.contains("dport 23"),
        "{in_1000}"
    );
}

#[test]
fn rule_cost_counts_rules() {
    let d = build(&config("vxlan", "external", "table"), &public(), false);
    let line = rule_cost(d.rules.len());
    // 2 tenants: fwmark rule each, one prohibit
    assert!(
        line.starts_with("policy rules: 3 (a negligible cost)"),
        "{line}"
    );
}

/// A config of `n` tenants (ids 1000, 2000, ... as the example's), each with one EIP.
fn many(tunnel: &str, mode: &str, isolation: &str, n: u32) -> Config {
    let base = crate::config::examples::gateway_variant(tunnel, mode, isolation, "on", None);
    let head = &base[..base.find("[[tenant]]").unwrap()];
    let mut text = head.to_string();
    for i in 1..=n {
        text.push_str(&format!(
            "[[tenant]]\nname = \"u{i}\"\nid = {}\npeer = \"172.31.{}.{}\"\npeer_mac = \"02:00:00:00:{:02x}:07\"\nnetworks = [\"10.0.0.0/24\"]\ngateway_ip = \"10.0.0.1/24\"\neips = {{ \"203.0.{}.{}\" = \"10.0.0.7\" }}\n\n",
            i * 1000,
            i / 200,
            i % 200 + 2,
            i % 256,
            113 + i / 250,
            i % 250 + 1,
        ));
    }
    Config::parse(&text, Path::new("t")).unwrap()
}

/// With VRFs, the number of policy rules does not depend on the number of tenants; with
/// routing tables it grows by one per tenant.
#[test]
fn vrf_isolation_has_no_rule_per_tenant() {
    for mode in ["per-tenant", "external"] {
        for tunnel in ["vxlan", "gretap"] {
            let two = build(&many(tunnel, mode, "vrf", 2), &public(), true);
            let lots = build(&many(tunnel, mode, "vrf", 300), &public(), true);
            assert_eq!(two.rules, lots.rules, "{tunnel}/{mode}");
            assert!(two.rules.len() <= 1, "{tunnel}/{mode}: {:?}", two.rules);
            let table = build(&many(tunnel, mode, "table", 300), &public(), true);
            assert_eq!(table.rules.len(), 300 + lots.rules.len(), "{tunnel}/{mode}");
        }
    }
}

/// A tenant's packets leave only by its tunnel device or the public device, whatever its table
/// lacks: the first rule of its chain drops anything else (a miss in its table would otherwise
/// be routed by the tables after it, main included, onto the underlay).
#[test]
fn tenant_packets_leave_only_by_their_tunnel_or_the_public_device() {
    for (mode, isolation, dev) in [
        ("per-tenant", "table", "tgt1000"),
        ("per-tenant", "vrf", "tgt1000"),
        ("external", "table", "tgtun"),
        ("external", "vrf", "tgtun"),
    ] {
        let d = build(&config("vxlan", mode, isolation), &public(), false);
        let rs = &d.ruleset;
        let chain = &rs[rs.find("chain tenant_1000 {").unwrap()..];
        let first = chain.lines().nth(1).unwrap().trim();
        assert_eq!(
            first,
            format!("oifname != \"eth-pub\" oifname != \"{dev}\" counter drop"),
            "{mode}/{isolation}:\n{chain}"
        );
    }
}

/// Packets of a tenant (its conntrack zone) reach the gateway itself only at its own gateway
/// address; the input chain drops the rest of its zone's packets.
#[test]
fn tenants_reach_the_gateway_only_at_their_gateway_address() {
    for isolation in ["table", "vrf"] {
        let d = build(&config("vxlan", "external", isolation), &public(), false);
        let rs = &d.ruleset;
        let chain = &rs[rs.find("chain input {").unwrap()..];
        let chain: Vec<&str> = chain.lines().take(5).map(str::trim).collect();
        assert_eq!(
            chain[1..],
            [
                "type filter hook input priority filter; policy accept;",
                "ct state established,related accept",
                "ct zone . ip daddr { 1000 . 10.0.0.1, 2000 . 10.0.0.1 } accept",
                "ct zone { 1000, 2000 } counter drop",
            ],
            "{isolation}:\n{rs}"
        );
    }
}

/// The VRF entries accept local sources (they skip the kernel's second source lookup), so
/// `pre_raw` drops packets arriving on them from one of the gateway's own addresses, before
/// anything else sees them.
#[test]
fn entries_refuse_the_gateways_own_addresses_as_sources() {
    let d = build(&config("vxlan", "external", "vrf"), &public(), false);
    let rs = &d.ruleset;
    let pre_raw = &rs[rs.find("chain pre_raw {").unwrap()..];
    let pre_raw = &pre_raw[..pre_raw.find("\n\t}").unwrap()];
    let guard = pre_raw
        .lines()
        .map(str::trim)
        .find(|l| l.contains("fib saddr type"))
        .unwrap_or_else(|| panic!("no source guard in\n{pre_raw}"));
    for dev in ["tge1000", "tge2000", "tgp1000", "tgp2000"] {
        assert!(guard.contains(&format!("\"{dev}\"")), "{dev}: {guard}");
    }
    assert!(
        guard.ends_with("fib saddr type { local, broadcast, multicast } counter drop"),
        "{guard}"
    );
    let zone = pre_raw.find("ct zone set iifname map").unwrap();
    assert!(pre_raw.find(guard).unwrap() < zone, "{pre_raw}");
    // table isolation: the only entries are the shaper's macvlans (user1 is shaped)
    let table = build(&config("vxlan", "external", "table"), &public(), false);
    let guard = table
        .ruleset
        .lines()
        .find(|l| l.contains("fib saddr"))
        .unwrap_or_else(|| panic!("{}", table.ruleset));
    assert!(
        guard.contains("\"tgs1000\"") && !guard.contains("tge") && !guard.contains("tgp"),
        "{guard}"
    );
}

fn sharded(n: u32, shards: u32) -> Config {
    let mut c = many("gretap", "external", "vrf", n);
    if let Some(gw) = c.gateway.as_mut() {
        gw.shards = Some(crate::config::Shards {
            count: shards,
            prefix: "tgtest-s".into(),
        });
        gw.public_gateway = Some("198.51.100.1".parse().unwrap());
    }
    c
}

#[test]
fn without_shards_the_layout_is_the_gateway_alone() {
    let c = many("gretap", "external", "vrf", 4);
    let l = layout(&c, &public(), true);
    assert_eq!(l.front, build(&c, &public(), true));
    assert!(l.shards.is_empty());
}

#[test]
fn shards_leave_the_gateway_namespace_a_constant_few_objects() {
    let (small, large) = (
        layout(&sharded(3, 3), &public(), false),
        layout(&sharded(60, 3), &public(), false),
    );
    assert_eq!(large.shards.len(), 3);
    for l in [&small, &large] {
        let f = &l.front;
        let links: Vec<&str> = f.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(links, ["tgtun"]);
        let rules: Vec<String> = f.rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["rule pref 10001 iif tgtun prohibit"]);
        assert!(f.routes.is_empty() && f.neighs.is_empty());
        // the gateway addresses on the external device (a set: shared by tenants, for ARP)
        assert!(
            f.addresses
                .iter()
                .all(|a| a.dev == "tgtun" && a.prefix == 32)
        );
        assert_eq!(f.addresses.len(), 1);
        assert!(f.sysctls.is_empty());
        // no tenant chain, VRF or entry device is named in the gateway's ruleset
        for absent in ["tenant_", "tgv", "tge", "dnat", "snat", "flowtable"] {
            assert!(!f.ruleset.contains(absent), "{absent}: {}", f.ruleset);
        }
        assert!((1..=3).contains(&l.shards.len()));
        let total: usize = l.shards.iter().map(|s| s.desired.rules.len()).sum();
        assert_eq!(total, 0, "no policy rule in any shard");
    }
}

#[test]
fn each_tenant_lives_in_the_shard_its_id_gives() {
    let c = sharded(60, 3);
    let l = layout(&c, &public(), false);
    let sh = c.gateway.as_ref().unwrap().shards.clone().unwrap();
    let mut seen = BTreeSet::new();
    for s in &l.shards {
        assert_eq!(s.netns, format!("tgtest-s{}", s.index));
        // each tenant's table is its VRF's
        for id in s.desired.tables() {
            assert_eq!(sh.of(id), s.index, "tenant {id}");
            assert!(seen.insert(id), "tenant {id} twice");
        }
    }
    assert_eq!(seen.len(), 60);
    // the gateway sends each tenant's frames to that shard's lower, on both sides
    let f = &l.front.ruleset;
    for (_, g) in c.gateway_tenants() {
        let lower = names::shard_lower(sh.of(g.id));
        assert!(f.contains(&format!("{} : \"{lower}\"", g.id)), "{f}");
        let (eip, _) = g.eips[0];
        assert!(f.contains(&format!("{eip} : \"{lower}\"")), "{f}");
        let mac = mac_str(&names::tunnel_entry_macvlan_mac(g.id));
        assert!(f.contains(&format!("{} : {mac}", g.id)), "{f}");
    }
    assert!(f.contains("device \"tgtun\""), "{f}");
    assert!(f.contains("device \"eth-pub\""), "{f}");
    assert!(
        f.contains("meta mark set ip saddr . @th,32,32 map @peers"),
        "{f}"
    );
}

#[test]
fn a_shard_holds_its_lower_its_way_out_and_its_tenants() {
    let c = sharded(60, 3);
    let l = layout(&c, &public(), false);
    let s = &l.shards[1];
    let d = &s.desired;
    let tgl = d.links.iter().find(|l| l.name == "tgl").unwrap();
    assert_eq!(tgl.spec(), "veth peer tgl1 (gateway namespace)");
    let tgxp = d.links.iter().find(|l| l.name == "tgxp").unwrap();
    assert!(
        tgxp.spec()
            .starts_with("macvlan on eth-pub (gateway namespace) address ")
    );
    assert_eq!(tgxp.lower(), None, "its lower is not in the shard");
    let id = d.tables()[0];
    let link = |n: String| d.links.iter().find(|l| l.name == n).cloned().unwrap();
    let vrf = Some(names::vrf(id));
    assert_eq!(link(names::public_macvlan(id)).master, vrf);
    assert_eq!(link(names::public_macvlan(id)).lower(), Some("tgl"));
    assert_eq!(link(names::tunnel_entry_macvlan(id)).lower(), Some("tgl"));
    let tge = link(names::gateway_macvlan(id));
    assert_eq!(tge.master, vrf);
    assert!(
        tge.spec()
            .starts_with("macvlan on tgtun (gateway namespace)")
    );
    let tge = names::gateway_macvlan(id);
    assert!(d.addresses.iter().any(|a| a.dev == tge && a.prefix == 32));
    assert!(d.neighs.iter().any(|n| n.dev == tge));
    let routes: Vec<String> = d
        .routes
        .iter()
        .filter(|r| r.table == id)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        routes,
        [
            format!("route 0.0.0.0/0 via 198.51.100.1 dev tgxp table {id}"),
            format!(
                "route 10.0.0.0/24 via {} onlink encap ip id {id} dst {} key dev {tge} table {id}",
                external_nexthop(c.gateway_tenants().find(|t| t.1.id == id).unwrap().1),
                c.gateway_tenants().find(|t| t.1.id == id).unwrap().1.peer,
            ),
            format!("route 198.51.100.0/24 dev tgxp table {id}"),
        ]
    );
    let rs = &d.ruleset;
    // zones by both entries; DNAT only from the public one; out by the shard's devices
    for entry in [names::tunnel_entry_macvlan(id), names::public_macvlan(id)] {
        assert!(
            rs.contains(&format!("\"{entry}\" : {}", id % 65536)),
            "{rs}"
        );
    }
    let dnat = rs.lines().find(|l| l.contains("dnat")).unwrap();
    assert!(
        dnat.contains(&names::public_macvlan(id)) && !dnat.contains("tgi"),
        "{dnat}"
    );
    assert!(rs.contains("oifname \"tgxp\" ct zone"), "{rs}");
    // the gateway's own addresses are not local in a shard: refused as sources by name
    assert!(
        rs.contains("ip saddr { 198.51.100.1 } counter drop"),
        "{rs}"
    );
    assert!(
        rs.contains(&format!(
            "oifname != \"tgxp\" oifname != \"{tge}\" counter drop"
        )),
        "{rs}"
    );
    for absent in ["tgtun", "eth-pub", "eth-ul", "peers", "netdev", "flowtable"] {
        assert!(!rs.contains(absent), "{absent}: {rs}");
    }
    assert_eq!(d.sysctls, tenant_sysctls());
    // every shard's ruleset is its own version
    let digests: BTreeSet<&str> = l
        .shards
        .iter()
        .map(|s| s.desired.ruleset_digest.as_str())
        .collect();
    assert_eq!(digests.len(), 3);
}

#[test]
fn a_shard_without_tenants_has_no_namespace() {
    // one tenant, four shards: one namespace
    let c = sharded(1, 4);
    let l = layout(&c, &public(), false);
    let id = c.gateway_tenants().next().unwrap().1.id;
    let indexes: Vec<u32> = l.shards.iter().map(|s| s.index).collect();
    assert_eq!(indexes, [names::shard_of(id, 4)]);
    // with no tenant at all, the gateway's ruleset has no empty map (which nft refuses)
    let mut c = sharded(1, 4);
    c.tenants.clear();
    let l = layout(&c, &public(), false);
    assert!(l.shards.is_empty());
    assert!(!l.front.ruleset.contains("{ }") && !l.front.ruleset.contains("{  }"));
    assert!(!l.front.ruleset.contains("netdev"), "{}", l.front.ruleset);
}
