use super::*;

/// The shipped shaper example: it must keep working as users read it.
pub const SHAPER_EXAMPLE: &str = super::examples::SHAPER_EXAMPLE;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"))
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn shaper_example_parses() {
    let c = parse(SHAPER_EXAMPLE).unwrap();
    let s = c.shaper.as_ref().unwrap();
    assert_eq!(s.interface.as_deref(), Some("veth-srv"));
    assert_eq!(s.tap, "tg0");
    assert_eq!(s.redirect, RedirectMode::Netdev);
    assert_eq!(c.tenants.len(), 2);
    let a = c.tenants[0].shaping.unwrap();
    assert_eq!(a.rate, 2_500_000);
    assert_eq!(
        a.burst, 25_000,
        "10 ms at 20 Mbit/s (above the 8 KiB floor of split tenants)"
    );
    assert_eq!(a.queue, 4 * MAX_GSO_FRAME);
    let b = c.tenants[1].shaping.unwrap();
    assert_eq!(b.rate, 6_250_000);
    assert_eq!(b.burst, 256 * 1024);
    assert_eq!(b.queue, 2 * 1024 * 1024);
    assert_eq!(c.tenants[1].sources.len(), 2);
    assert_eq!(c.tenant_interfaces(&c.tenants[0]), vec!["veth-srv"]);
}

#[test]
fn gso_frames_are_split_below_the_threshold_unless_told() {
    let c = parse(SHAPER_EXAMPLE).unwrap();
    assert!(c.tenants[0].shaping.unwrap().split_gso, "20 Mbit/s: split");
    let fast = parse(&SHAPER_EXAMPLE.replace("upload = \"50mbit\"", "upload = \"1gbit\"")).unwrap();
    assert!(
        !fast.tenants[1].shaping.unwrap().split_gso,
        "1 Gbit/s: whole"
    );
    let edge = SPLIT_GSO_BELOW * 8;
    for (rate, split) in [(edge - 8, true), (edge, false)] {
        let c = parse(
            &SHAPER_EXAMPLE.replace("upload = \"50mbit\"", &format!("upload = \"{rate}bit\"")),
        )
        .unwrap();
        assert_eq!(
            c.tenants[1].shaping.unwrap().split_gso,
            split,
            "{rate} bit/s"
        );
    }
    for (value, split) in [("split", true), ("keep", false), ("auto", false)] {
        let c = parse(&format!(
            "{}gso = \"{value}\"\n",
            SHAPER_EXAMPLE.replace("upload = \"50mbit\"", "upload = \"1gbit\"")
        ))
        .unwrap();
        assert_eq!(c.tenants[1].shaping.unwrap().split_gso, split, "{value}");
    }
    // the burst floor: 8 KiB with segments, 64 KiB with whole frames (1 Mbit/s: 1,250 B/10 ms)
    let slow = SHAPER_EXAMPLE.replace("upload = \"20mbit\"", "upload = \"1mbit\"");
    assert_eq!(
        parse(&slow).unwrap().tenants[0].shaping.unwrap().burst,
        8 * 1024
    );
    let kept = slow.replace("upload = \"1mbit\"", "upload = \"1mbit\"\ngso = \"keep\"");
    let kept = parse(&kept).unwrap().tenants[0].shaping.unwrap();
    assert_eq!((kept.burst, kept.split_gso), (MAX_GSO_FRAME, false));
    let e = err(&format!("{SHAPER_EXAMPLE}gso = \"sometimes\"\n"));
    assert_eq!(e.key, "tenant[1].gso", "{e}");
    assert!(e.message.contains("\"split\""), "{e}");
}

#[test]
fn ports_and_interfaces() {
    let c = parse(&format!(
        "{SHAPER_EXAMPLE}\n[[tenant]]\nname = \"gamma\"\nsources = [\"203.0.113.0/24\"]\nupload = \"1gbit\"\nports = [22, \"8000-8100\"]\ninterfaces = [\"eth1\"]\n"
    ))
    .unwrap();
    let g = &c.tenants[2];
    assert_eq!(
        g.ports,
        vec![
            PortRange {
                first: 22,
                last: 22
            },
            PortRange {
                first: 8000,
                last: 8100
            }
        ]
    );
    assert_eq!(c.tenant_interfaces(g), vec!["eth1"]);
}

#[test]
fn unknown_key_names_line() {
    let e = err(&SHAPER_EXAMPLE.replace("upload = \"50mbit\"", "uplaod = \"50mbit\""));
    assert_eq!(e.line, 14, "{e}");
    assert!(e.to_string().contains("uplaod"), "{e}");
    let e = err("[shaper]\ninterface = \"a\"\ntap = \"b\"\nredirect = \"netdev\"\ncolour = 1\n");
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn bad_unit_names_key_and_line() {
    let e = err(&SHAPER_EXAMPLE.replace("\"20mbit\"", "\"20mbits\""));
    assert_eq!((e.line, e.key.as_str()), (9, "tenant[0].upload"), "{e}");
    assert!(e.message.contains("mbits"), "{e}");
    let e = err(&SHAPER_EXAMPLE.replace("\"2mb\"", "\"2 furlongs\""));
    assert_eq!((e.line, e.key.as_str()), (16, "tenant[1].queue"), "{e}");
}

#[test]
fn overlapping_sources_refused() {
    let e = err(&SHAPER_EXAMPLE.replace("198.51.100.10/32", "198.51.100.200/32"));
    assert_eq!(e.key, "tenant[1].sources", "{e}");
    assert_eq!(e.line, 13, "{e}");
    assert!(e.message.contains("overlaps"), "{e}");
    assert!(
        e.message.contains("alpha") && e.message.contains("beta"),
        "{e}"
    );
}

#[test]
fn duplicate_names_refused() {
    let e = err(&SHAPER_EXAMPLE.replace("name = \"beta\"", "name = \"alpha\""));
    assert_eq!((e.line, e.key.as_str()), (12, "tenant[1].name"), "{e}");
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn other_bad_values() {
    let cases = [
        (
            "redirect = \"netdev\"",
            "redirect = \"bpf\"",
            "shaper.redirect",
        ),
        (
            "tap = \"tg0\"",
            "tap = \"a-very-long-tap-name\"",
            "shaper.tap",
        ),
        (
            "198.51.100.128/25",
            "198.51.100.129/25",
            "tenant[1].sources",
        ),
        ("queue = \"2mb\"", "queue = \"4kb\"", "tenant[1].queue"),
        ("name = \"beta\"", "name = \"be ta\"", "tenant[1].name"),
    ];
    for (from, to, key) in cases {
        let e = err(&SHAPER_EXAMPLE.replace(from, to));
        assert_eq!(e.key, key, "{to}: {e}");
        assert!(e.line > 0, "{e}");
    }
    let e = err(&format!("{SHAPER_EXAMPLE}ports = [0]\n"));
    assert_eq!(e.key, "tenant[1].ports", "{e}");
    let e = err(&format!("{SHAPER_EXAMPLE}ports = [\"90-80\"]\n"));
    assert!(e.message.contains("reversed"), "{e}");
    let e = err("[shaper]\ninterface = \"a\"\ntap = \"b\"\nredirect = \"netdev\"\n");
    assert!(e.message.contains("nothing to shape"), "{e}");
    let e = err("[[tenant]]\nname = \"x\"\nupload = \"1mbit\"\n");
    assert!(e.message.contains("source"), "{e}");
}

#[test]
fn missing_device_names_key_and_line() {
    let c = parse(SHAPER_EXAMPLE).unwrap();
    let e = c.check_devices(|d| d != "veth-srv").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "shaper.interface"), "{e}");
    assert!(c.check_devices(|_| true).is_ok());
    let text = format!("{SHAPER_EXAMPLE}interfaces = [\"eth9\"]\n");
    let c = parse(&text).unwrap();
    let e = c.check_devices(|d| d != "eth9").unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (17, "tenant[1].interfaces"),
        "{e}"
    );
}

#[test]
fn error_display_has_file_line_key() {
    let e = err(&SHAPER_EXAMPLE.replace("\"20mbit\"", "\"20mbits\""));
    let s = e.to_string();
    assert!(s.starts_with("t.toml:9:"), "{s}");
    assert!(s.contains("tenant[0].upload"), "{s}");
}

const GATEWAY_EXAMPLE: &str = include_str!("../../examples/gateway.toml");

#[test]
fn gateway_example_parses() {
    let c = parse(GATEWAY_EXAMPLE).unwrap();
    let g = c.gateway.as_ref().unwrap();
    assert_eq!(g.public, "eth-pub");
    assert_eq!(g.tunnel, Tunnel::Gretap);
    assert_eq!(g.tunnel_mode, TunnelMode::External);
    assert_eq!(g.isolation, Isolation::Vrf);
    assert_eq!(g.offload, Offload::Auto);
    let t: Vec<_> = c.gateway_tenants().collect();
    assert_eq!(t.len(), 2);
    let u1 = t[0].1;
    assert_eq!(u1.id, 1000);
    assert_eq!(
        u1.eips,
        vec![("203.0.113.11".parse().unwrap(), "10.0.0.7".parse().unwrap())]
    );
    assert_eq!(u1.gateway_prefix, 24);
    assert_eq!(
        u1.allow_in,
        vec![
            FwMatch::Tcp {
                ports: Some(PortRange {
                    first: 22,
                    last: 22
                })
            },
            FwMatch::Icmp
        ]
    );
    // a gateway tenant's upload is shaped by tollgate-shaper: without [shaper], a warning
    assert!(c.tenants[0].shaping.is_some());
    assert_eq!(c.shaped_tenants().count(), 1);
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("user1") && w[0].contains("[shaper]"), "{w:?}");
    // `[shaper]` with only a TAP is enough for gateway tenants
    let c = parse(&format!("{GATEWAY_EXAMPLE}\n[shaper]\ntap = \"tg0\"\n")).unwrap();
    assert!(c.warnings().is_empty());
    assert_eq!(c.shaper.as_ref().unwrap().interface, None);
}

#[test]
fn a_file_holds_gateway_and_source_tenants() {
    let text = format!(
        "{GATEWAY_EXAMPLE}\n[shaper]\ntap = \"tg0\"\ninterface = \"eth-pub\"\n\n[[tenant]]\nname = \"client\"\nsources = [\"198.51.100.7/32\"]\nupload = \"5mbit\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.gateway_tenants().count(), 2);
    assert_eq!(c.shaped_tenants().count(), 2, "user1 and client");
    assert!(c.tenants[2].gateway.is_none());
    // a source tenant needs the shaper's interface unless it names its own
    let e = err(&text.replace("interface = \"eth-pub\"\n", ""));
    assert_eq!(e.key, "shaper.interface", "{e}");
    // gateway keys and sources together are refused
    let e = err(&text.replace("name = \"client\"", "name = \"client\"\nid = 3000"));
    assert_eq!(e.key, "tenant[2].sources", "{e}");
}

#[test]
fn gateway_errors_name_key_and_line() {
    let cases = [
        (
            "\"203.0.113.12\" = \"10.0.0.7\"",
            "\"203.0.113.11\" = \"10.0.0.7\"",
            "tenant[1].eips",
            "also",
        ),
        ("id = 2000", "id = 1000", "tenant[1].id", "duplicate"),
        ("id = 2000", "id = 66536", "tenant[1].id", "zone"),
        (
            "allow_in = [\"tcp/23\", \"icmp\"]",
            "allow_in = [\"tcp/99999\"]",
            "tenant[1].allow_in",
            "65535",
        ),
        (
            "deny_out = [\"tcp/23\"]",
            "deny_out = [\"sctp/1\"]",
            "tenant[1].deny_out",
            "expected",
        ),
        (
            "tunnel = \"gretap\"",
            "tunnel = \"geneve\"",
            "gateway.tunnel",
            "expected",
        ),
        (
            "isolation = \"vrf\"",
            "isolation = \"netns\"",
            "gateway.isolation",
            "expected",
        ),
        (
            "gateway_ip = \"10.0.0.1/24\"  #",
            "gateway_ip = \"10.1.0.1/24\"  #",
            "tenant[0].gateway_ip",
            "inside",
        ),
        (
            "\"203.0.113.11\" = \"10.0.0.7\"",
            "\"203.0.113.11\" = \"10.9.0.7\"",
            "tenant[0].eips",
            "inside",
        ),
        (
            "peer_mac = \"02:00:00:00:20:07\"",
            "peer_mac = \"zz\"",
            "tenant[1].peer_mac",
            "MAC",
        ),
        (
            "underlay_address = \"172.31.0.1\"",
            "underlay_address = \"172.31.0\"",
            "gateway.underlay_address",
            "IPv4",
        ),
    ];
    for (from, to, key, word) in cases {
        assert!(GATEWAY_EXAMPLE.contains(from), "{from}");
        let e = err(&GATEWAY_EXAMPLE.replacen(from, to, 1));
        assert_eq!(e.key, key, "{to}: {e}");
        assert!(e.message.contains(word), "{to}: {e}");
        assert!(e.line > 0, "{e}");
    }
    let e =
        err(&GATEWAY_EXAMPLE.replace("offload = \"auto\"", "offload = \"auto\"\nflowtable = 1"));
    assert_eq!(e.line, 9, "{e}");
    assert!(e.message.contains("flowtable"), "{e}");
    // gateway keys without [gateway]
    let e = err("[[tenant]]\nname = \"a\"\nid = 1\n");
    assert!(e.message.contains("[gateway]"), "{e}");
    // a missing required key is named
    let e = err(&GATEWAY_EXAMPLE.replacen("peer = \"172.31.0.12\"\n", "", 1));
    assert_eq!(e.key, "tenant[1].peer", "{e}");
}

/// Every config string that reaches an nftables ruleset (or a sysctl path) is refused when it
/// could end a token there: the kernel allows `"`, `;` and `#` in device names, tollgate not.
#[test]
fn strings_that_reach_nft_cannot_inject() {
    let evil = r#"x\";drop#"#;
    let gw = [
        ("public = \"eth-pub\"", "public", "gateway.public"),
        ("underlay = \"eth-ul\"", "underlay", "gateway.underlay"),
        ("name = \"user1\"", "name", "tenant[0].name"),
    ];
    for (from, key, path) in gw {
        let text = GATEWAY_EXAMPLE.replace(from, &format!("{key} = \"{evil}\""));
        let e = err(&text);
        assert_eq!(e.key, path, "{e}");
    }
    let sh = [
        ("interface = \"veth-srv\"", "interface", "shaper.interface"),
        ("tap = \"tg0\"", "tap", "shaper.tap"),
    ];
    for (from, key, path) in sh {
        let text = SHAPER_EXAMPLE.replace(from, &format!("{key} = \"{evil}\""));
        let e = err(&text);
        assert_eq!(e.key, path, "{e}");
    }
    let text = format!("{SHAPER_EXAMPLE}interfaces = [\"{evil}\"]\n");
    assert_eq!(err(&text).key, "tenant[1].interfaces");
    for bad in [
        "a b", "a;b", "a#b", "a{b", "a\\b", "a$b", "a/b", "a:b", "..",
    ] {
        assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["eth0", "eth0.100", "br-lan", "veth_a", "wg+0", "vlan@x"] {
        assert!(check_ifname(good).is_ok(), "{good:?} refused");
    }
}

#[test]
fn external_mode_refuses_a_shared_peer() {
    let text = GATEWAY_EXAMPLE.replace("peer = \"172.31.0.12\"", "peer = \"172.31.0.11\"");
    let e = err(&text);
    assert_eq!(e.key, "tenant[1].peer", "{e}");
    assert!(e.to_string().contains("172.31.0.11"), "{e}");
    // per-tenant mode: each tenant has its own keyed device, a shared peer is fine
    let per_tenant = text.replace("tunnel_mode = \"external\"", "tunnel_mode = \"per-tenant\"");
    assert!(parse(&per_tenant).is_ok());
}

#[test]
fn a_rate_without_unit_is_refused_with_a_hint() {
    let e = err(&SHAPER_EXAMPLE.replace("\"20mbit\"", "\"20\""));
    assert_eq!(e.key, "tenant[0].upload", "{e}");
    assert!(e.line > 0, "{e}");
    assert!(e.message.contains("did you mean \"20mbit\""), "{e}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_place() {
    // shape problems: all of them, in file order
    let e = err("[shaper]\ntap = \"tg0\"\nintreface = \"eth0\"\n\n[tenant]\nname = \"a\"\n");
    assert_eq!(e.count(), 2, "{e}");
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("t.toml:3:1: shaper.intreface: unknown key")
            && lines[0].contains("did you mean \"interface\""),
        "{text}"
    );
    assert!(
        lines[1].starts_with("t.toml:5:1: tenant: write [[tenant]]"),
        "{text}"
    );
    // value problems in different tenants: all of them too
    let e = err(
        "[shaper]\ninterface = \"eth0\"\ntap = \"tg0\"\n\n[[tenant]]\nname = \"a\"\nsources = [\"10.0.0.0/33\"]\nupload = \"20mbit\"\n\n[[tenant]]\nname = \"b\"\nsources = [\"10.1.0.0/24\"]\nupload = \"20\"\n",
    );
    assert_eq!(e.count(), 2, "{e}");
    assert_eq!((e.line, e.key.as_str()), (7, "tenant[0].sources"));
    assert_eq!(
        (e.also[0].line, e.also[0].key.as_str()),
        (13, "tenant[1].upload")
    );
    assert!(e.also[0].message.contains("did you mean"), "{e}");
}

/// The gateway example with `extra` lines added to its [gateway] section.
fn gateway_with(extra: &str) -> String {
    super::examples::sharded_variant(0, "tollgate-shard", None).replacen(
        "shards = 0\nshard_prefix = \"tollgate-shard\"\n",
        &format!("{extra}\n"),
        1,
    )
}

#[test]
fn shards_are_read_and_checked() {
    let c = parse(&gateway_with("shards = 40")).unwrap();
    let gw = c.gateway.as_ref().unwrap();
    let sh = gw.sharding().unwrap();
    assert_eq!((sh.count, sh.prefix.as_str()), (40, "tollgate-shard"));
    assert_eq!(sh.netns(7), "tollgate-shard7");
    // no shards: none, but a chosen prefix is kept so that old shards are found
    let c = parse(&gateway_with("")).unwrap();
    assert!(c.gateway.as_ref().unwrap().sharding().is_none());
    assert_eq!(c.gateway.as_ref().unwrap().shard_prefix(), "tollgate-shard");
    let c = parse(&gateway_with("shards = 0\nshard_prefix = \"gw1-s\"")).unwrap();
    let gw = c.gateway.as_ref().unwrap();
    assert!(gw.sharding().is_none());
    assert_eq!(gw.shard_prefix(), "gw1-s");
    let cases = [
        ("shards = -1", "gateway.shards", "0-4096"),
        ("shards = 5000", "gateway.shards", "0-4096"),
        ("shard_prefix = \"a/b\"", "gateway.shard_prefix", "letters"),
        (
            "shard_prefix = \"-x\"",
            "gateway.shard_prefix",
            "starts with a letter",
        ),
        (
            "shard_prefix = \"\"",
            "gateway.shard_prefix",
            "starts with a letter",
        ),
    ];
    for (line, key, says) in cases {
        let e = err(&gateway_with(line)).to_string();
        assert!(e.contains(key) && e.contains(says), "{line}: {e}");
        assert!(e.contains("t.toml:"), "{line}: {e}");
    }
    // what shards cannot do, said at the `shards` key
    for (from, to, says) in [
        (
            "isolation = \"vrf\"",
            "isolation = \"table\"",
            "isolation = \"vrf\"",
        ),
        (
            "tunnel_mode = \"external\"",
            "tunnel_mode = \"per-tenant\"",
            "tunnel_mode = \"external\"",
        ),
        ("offload = \"off\"", "offload = \"on\"", "flowtable"),
    ] {
        let text = gateway_with("shards = 4").replace(from, to);
        let e = err(&text).to_string();
        assert!(
            e.contains("gateway.shards") && e.contains(says),
            "{to}: {e}"
        );
    }
    // a shaped gateway tenant has its VRF in a shard, out of the shaper's reach
    let text =
        gateway_with("shards = 4").replacen("id = 1000", "id = 1000\nupload = \"20mbit\"", 1);
    assert!(parse(&gateway_with("shards = 4")).is_ok());
    assert!(parse(&super::examples::sharded_variant(4, "s", None)).is_ok());
    let e = err(&text).to_string();
    assert!(e.contains("tenant[0].upload") && e.contains("shard"), "{e}");
}
