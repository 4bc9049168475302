//! The gateway control plane end to end, in namespaces (lab::GatewayLab): `tollgate
//! apply` builds the gateway, then the reference connectivity matrix is checked, apply is
//! shown idempotent and destroy shown to restore the gateway namespace exactly.
//!
//! On this machine's kernel (no VRF, GRE or flowtable): vxlan + table isolation, both tunnel
//! modes. The reference design (VRF + gretap + flowtable) runs the same matrix inside a VM with
//! Debian's stock kernel: `vm_reference_design` below, through tests/vm/run.sh.

mod common;

use common::*;
use lab::GatewayLab;
use std::path::Path;
use std::time::Duration;

/// The gateway example with the variant's keys substituted.
pub fn variant_config(
    tunnel: &str,
    mode: &str,
    isolation: &str,
    offload: &str,
    state: &Path,
) -> String {
    lab::gateway_config(tunnel, mode, isolation, offload, Some(state))
}

fn ok(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

/// The whole matrix for one variant. Returns the lab (still built) for extra checks.
pub fn matrix(
    tag: &str,
    tunnel: &str,
    mode: &str,
    isolation: &str,
    offload: &str,
    extra: impl FnOnce(&GatewayLab, &str),
) {
    let lab = GatewayLab::new(tag, tunnel).expect("lab");
    lab::operator_devices_where_tenants_would_land(&lab.gw, 1).expect("operator veth");
    let before = lab.gw.snapshot().expect("snapshot");
    let cfg = lab.dir.path().join("tollgate.toml");
    std::fs::write(
        &cfg,
        variant_config(
            tunnel,
            mode,
            isolation,
            offload,
            &lab.dir.path().join("state"),
        ),
    )
    .expect("config");
    let c = cfg.to_str().expect("utf-8 path");

    let plan = tollgate(&lab.gw, &["plan", "-c", c]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "plan on a fresh gateway must report changes:\n{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    ok(&tollgate(&lab.gw, &["apply", "-c", c]));
    lab::per_tenant_devices_outside_shared_buckets(&lab.gw).unwrap_or_else(|e| panic!("{e}"));
    let again = ok(&tollgate(&lab.gw, &["apply", "-c", c]));
    assert!(
        again.contains("no changes"),
        "second apply changed something:\n{again}"
    );
    ok(&tollgate(&lab.gw, &["plan", "-c", c]));

    let v = format!("{tunnel}/{mode}/{isolation}/offload={offload}");
    let _servers = connectivity_matrix(&lab, &v);

    let show = ok(&tollgate(&lab.gw, &["show", "--json", "-c", c]));
    let report: serde_json::Value = serde_json::from_str(&show).expect("show --json");
    let u1 = &report["tenants"][0];
    assert_eq!(u1["name"], "user1", "{show}");
    assert!(
        u1["devices"].as_array().is_some_and(|d| !d.is_empty()),
        "{show}"
    );
    let accepted: u64 = u1["firewall"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["chain"] == "in_1000")
        .map(|f| f["packets"].as_u64().unwrap_or(0))
        .sum();
    assert!(accepted > 0, "firewall counters did not move:\n{show}");
    extra(&lab, c);

    let destroyed = ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert!(destroyed.contains("destroyed"), "{destroyed}");
    assert_eq!(
        before,
        lab.gw.snapshot().expect("snapshot"),
        "{v}: destroy did not restore the gateway namespace"
    );
    let again = ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert!(again.contains("nothing"), "{again}");
}

#[test]
fn matrix_vxlan_per_tenant_table() {
    let Some(_serial) = lab("matrix_vxlan_per_tenant_table") else {
        return;
    };
    matrix("gp", "vxlan", "per-tenant", "table", "off", |_, _| {});
}

#[test]
fn matrix_vxlan_external_table() {
    let Some(_serial) = lab("matrix_vxlan_external_table") else {
        return;
    };
    matrix("ge", "vxlan", "external", "table", "off", |_, _| {});
}

#[test]
fn apply_converges_from_drift() {
    let Some(_serial) = lab("apply_converges_from_drift") else {
        return;
    };
    matrix("gd", "vxlan", "per-tenant", "table", "off", |lab, c| {
        // an operator deletes a route and a device, and adds a rule of their own
        lab.gw
            .ip(&["route", "del", "10.0.0.0/24", "table", "2000"])
            .expect("route del");
        lab.gw.ip(&["link", "del", "tgt1000"]).expect("link del");
        lab.gw
            .ip(&["rule", "add", "pref", "500", "fwmark", "77", "lookup", "77"])
            .expect("rule add");
        let plan = tollgate(&lab.gw, &["plan", "-c", c]);
        assert_eq!(plan.status.code(), Some(2));
        ok(&tollgate(&lab.gw, &["apply", "-c", c]));
        assert!(ok(&tollgate(&lab.gw, &["plan", "-c", c])).contains("no changes"));
        assert_eq!(
            connect(lab.cl.name(), "203.0.113.11", 22),
            Ok("t1:22 from 198.51.100.7".into())
        );
        // the operator's own rule is not tollgate's to remove: take it out by hand
        assert!(
            lab.gw
                .ip(&["rule", "show"])
                .expect("rules")
                .contains("fwmark 0x4d lookup 77")
        );
        lab.gw
            .ip(&["rule", "del", "pref", "500"])
            .expect("rule del");
    });
}

#[test]
fn a_failed_apply_is_rolled_back() {
    let Some(_serial) = lab("a_failed_apply_is_rolled_back") else {
        return;
    };
    failed_apply_rolls_back("gr", "vxlan", "per-tenant", "table", "off", |lab| {
        let routes = lab
            .gw
            .ip(&["route", "show", "table", "1000"])
            .expect("routes");
        assert!(
            routes.contains("default via 198.51.100.254 dev eth-pub proto 246"),
            "{routes}"
        );
    });
}

/// An apply the kernel refuses part-way is undone entirely; then, corrected, it applies,
/// converges (`extra` checks more) and is destroyed back to the namespace's first state.
fn failed_apply_rolls_back(
    tag: &str,
    tunnel: &str,
    mode: &str,
    isolation: &str,
    offload: &str,
    extra: impl FnOnce(&GatewayLab),
) {
    let lab = GatewayLab::new(tag, tunnel).expect("lab");
    let before = lab.gw.snapshot().expect("snapshot");
    let state = lab.dir.path().join("state");
    let cfg = lab.dir.path().join("t.toml");
    let c = cfg.to_str().expect("path");
    let base = variant_config(tunnel, mode, isolation, offload, &state);
    // valid config, but the kernel refuses a next hop that is not on the public link: by then
    // links (with VRFs, the entry devices made before them), addresses and other routes
    // exist, and all of it must go again
    let bad = base.replace(
        "[gateway]\n",
        "[gateway]\npublic_gateway = \"203.0.113.254\"\n",
    );
    std::fs::write(&cfg, &bad).expect("config");
    let out = tollgate(&lab.gw, &["apply", "-c", c]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("route 0.0.0.0/0 via 203.0.113.254"), "{err}");
    assert!(err.contains("were undone"), "{err}");
    assert_eq!(
        before,
        lab.gw.snapshot().expect("snapshot"),
        "a failed apply left state behind"
    );
    // with a next hop on the public link it applies, and converges
    let good = base.replace(
        "[gateway]\n",
        "[gateway]\npublic_gateway = \"198.51.100.254\"\n",
    );
    std::fs::write(&cfg, &good).expect("config");
    ok(&tollgate(&lab.gw, &["apply", "-c", c]));
    assert!(ok(&tollgate(&lab.gw, &["plan", "-c", c])).contains("no changes"));
    extra(&lab);
    ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
}

#[test]
fn refuses_a_foreign_device_with_our_name() {
    let Some(_serial) = lab("refuses_a_foreign_device_with_our_name") else {
        return;
    };
    let lab = GatewayLab::new("gf", "vxlan").expect("lab");
    lab.gw
        .ip(&[
            "link", "add", "tgt2000", "type", "veth", "peer", "name", "op-peer",
        ])
        .expect("operator's link");
    let before = lab.gw.snapshot().expect("snapshot");
    let cfg = lab.dir.path().join("t.toml");
    let state = lab.dir.path().join("state");
    std::fs::write(
        &cfg,
        variant_config("vxlan", "per-tenant", "table", "off", &state),
    )
    .expect("config");
    let c = cfg.to_str().expect("path");
    refused_by_plan_and_apply(&lab, c, &["\"tgt2000\" exists but is not tollgate's"]);
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
    // destroy leaves the operator's device alone
    ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
}

#[test]
fn refuses_what_the_kernel_lacks() {
    let Some(_serial) = lab("refuses_what_the_kernel_lacks") else {
        return;
    };
    let lab = GatewayLab::new("gk", "vxlan").expect("lab");
    let before = lab.gw.snapshot().expect("snapshot");
    let state = lab.dir.path().join("state");
    let cfg = lab.dir.path().join("t.toml");
    let c = cfg.to_str().expect("path");
    let kernel_has_vrf = std::path::Path::new("/sys/module/vrf").exists()
        || lab
            .gw
            .exec(
                "sh",
                &[
                    "-c",
                    "ip link add tgprobevrf type vrf table 9 && ip link del tgprobevrf",
                ],
            )
            .is_ok();
    if kernel_has_vrf {
        eprintln!("skipped refuses_what_the_kernel_lacks: this kernel has VRF");
        // the probe above may have added the kernel's l3mdev rule: not part of the test
        return;
    }
    for (isolation, offload, word) in [
        ("vrf", "off", "CONFIG_NET_VRF"),
        ("table", "on", "CONFIG_NFT_FLOW_OFFLOAD"),
    ] {
        std::fs::write(
            &cfg,
            variant_config("vxlan", "per-tenant", isolation, offload, &state),
        )
        .expect("config");
        refused_by_plan_and_apply(&lab, c, &[word, "nothing was changed"]);
        assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
    }
    // offload = "auto" on a kernel without flowtable: a warning, and the gateway is built
    std::fs::write(
        &cfg,
        variant_config("vxlan", "per-tenant", "table", "auto", &state),
    )
    .expect("config");
    let out = tollgate(&lab.gw, &["apply", "-c", c]);
    let err = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/sys/module/nf_flow_table").exists() {
        ok(&out);
    } else {
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("warning") && err.contains("flowtable"),
            "{err}"
        );
    }
    ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
}

/// With VRF isolation a strict reverse-path filter (`all.rp_filter = 1`) would drop tenant
/// traffic entering VRFs through tollgate's macvlans: plan and apply refuse it by name.
#[test]
fn refuses_a_strict_reverse_path_filter_with_vrfs() {
    let Some(_serial) = lab("refuses_a_strict_reverse_path_filter_with_vrfs") else {
        return;
    };
    let lab = GatewayLab::new("gv", "vxlan").expect("lab");
    lab.gw
        .exec("sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=1"])
        .expect("sysctl");
    let before = lab.gw.snapshot().expect("snapshot");
    let cfg = lab.dir.path().join("t.toml");
    let state = lab.dir.path().join("state");
    std::fs::write(
        &cfg,
        variant_config("vxlan", "per-tenant", "vrf", "off", &state),
    )
    .expect("config");
    let c = cfg.to_str().expect("path");
    refused_by_plan_and_apply(
        &lab,
        c,
        &["net.ipv4.conf.all.rp_filter = 1", "nothing was changed"],
    );
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
}

/// Proves flow offload: a TCP flow through the EIP stays established while data flows, the
/// kernel marks it [OFFLOAD] in conntrack and `show` counts it, and its packets really skip
/// the stack: a counter put in front of the gateway's forward chain sees almost none of the
/// bytes sent meanwhile (a flow marked [OFFLOAD] whose packets never match its flowtable entry
/// would cross the forward hook whole).
fn offload_is_active(lab: &GatewayLab, c: &str) {
    use std::io::{BufRead, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sent = Arc::new(AtomicU64::new(0));
    let sent_by_client = sent.clone();
    let client = in_netns(lab.cl.name(), move || {
        let addr: std::net::SocketAddr = "203.0.113.11:22".parse().expect("addr");
        let s =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        r.read_line(&mut line).expect("banner");
        let mut w = s;
        let chunk = vec![7u8; 16 * 1024];
        let _ = tx.send(());
        // keep data flowing until the check is done
        while done_rx.try_recv().is_err() {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent_by_client.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
        line
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("flow established");
    let offloaded = lab::wait_until(Duration::from_secs(20), || {
        lab.gw
            .exec("conntrack", &["-L"])
            .map(|o| o.contains("[OFFLOAD]"))
            .unwrap_or(false)
    });
    let show = ok(&tollgate(&lab.gw, &["show", "--json", "-c", c]));
    // what still crosses the forward hook of this flow (both directions: port 22 either side)
    let table = tollgate::names::GATEWAY_NFT_TABLE;
    let counted: Result<Vec<String>, _> = ["sport", "dport"]
        .iter()
        .map(|port| {
            lab.gw.exec(
                "nft",
                &[
                    "insert", "rule", "inet", table, "forward", "tcp", port, "22", "counter",
                ],
            )
        })
        .collect();
    let before = sent.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let during = sent.load(Ordering::Relaxed) - before;
    let forward = lab
        .gw
        .exec("nft", &["list", "chain", "inet", table, "forward"])
        .unwrap_or_default();
    let _ = done_tx.send(());
    let banner = client.join().expect("client").expect("setns");
    assert!(banner.starts_with("t1:22"), "{banner}");
    let conntrack = lab.gw.exec("conntrack", &["-L"]).unwrap_or_default();
    assert!(offloaded, "no flow was offloaded:\n{conntrack}");
    let report: serde_json::Value = serde_json::from_str(&show).expect("show --json");
    assert_eq!(report["offload"]["flowtable"], true, "{show}");
    assert!(
        report["offload"]["offloaded_flows"].as_u64().unwrap_or(0) >= 1,
        "{show}"
    );
    counted.expect("a counter in the forward chain");
    let slow: u64 = forward
        .lines()
        .filter(|l| l.contains("dport 22 counter") || l.contains("sport 22 counter"))
        .filter_map(|l| {
            l.split("bytes ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        during >= 256 * 1024,
        "the client sent only {during} bytes in 3 s: nothing to judge the fast path by"
    );
    assert!(
        slow * 10 < during,
        "{slow} of the {during} bytes sent while offloaded crossed the forward hook: the flow \
         is marked [OFFLOAD] but its packets take the slow path\n{forward}"
    );
    eprintln!(
        "offload: {}; forward hook saw {slow} of {during} bytes sent",
        report["offload"]
    );
}

/// Inside the VM (Debian's stock kernel): the reference design. Does nothing elsewhere.
#[test]
fn vm_inner_reference_design() {
    if std::env::var_os("TOLLGATE_IN_VM").is_none() {
        return; // run by vm_reference_design through tests/vm/run.sh
    }
    let Some(_serial) = lab("vm_inner_reference_design") else {
        panic!("the VM lacks root, ip, nft or iperf3");
    };
    // with VRFs, apply makes the entry devices before their VRFs: a failure undoes those too
    failed_apply_rolls_back("vr", "gretap", "external", "vrf", "on", |_| {});
    eprintln!("== VM rollback gretap/external/vrf");
    for mode in ["per-tenant", "external"] {
        let tag = if mode == "external" { "ve" } else { "vp" };
        eprintln!("== VM variant gretap/{mode}/vrf/offload=on");
        matrix(tag, "gretap", mode, "vrf", "on", offload_is_active);
    }
}

/// Boots Debian's stock kernel under qemu (tests/vm/run.sh) and runs `vm_inner_reference_design`
/// from this very test binary inside it. Skipped when the VM tooling is not installed
/// (tests/vm/setup.sh, which scripts/test.sh runs).
#[test]
fn vm_reference_design() {
    let Some(_serial) = lab("vm_reference_design") else {
        return;
    };
    let Some(text) = run_inner_in_vm("vm_reference_design", "vm_inner_reference_design") else {
        return;
    };
    assert!(
        text.contains("VM variant gretap/external/vrf/offload=on"),
        "the inner test skipped a variant"
    );
    assert!(
        text.contains("VM rollback gretap/external/vrf"),
        "the inner test skipped the rollback"
    );
}

/// The control plane at 10,000 tenants (vxlan, external tunnel mode, table isolation: what
/// this kernel has): apply, then a no-op apply and `show`, timed and reported; the bounds
/// only catch a return to the old behaviour (seconds per tenant scan, a minute for `show`).
/// The figures that count come from bench/gateway_scale.sh.
#[test]
fn control_plane_at_10000_tenants() {
    let Some(_serial) = lab("control_plane_at_10000_tenants") else {
        return;
    };
    let lab = GatewayLab::new("gs", "vxlan").expect("lab");
    let before = lab.gw.snapshot().expect("snapshot");
    let state = lab.dir.path().join("state");
    let cfg = lab.dir.path().join("t.toml");
    let c = cfg.to_str().expect("path");
    let two = variant_config("vxlan", "external", "table", "off", &state);
    std::fs::write(&cfg, lab::with_filler_tenants(&two, 9998)).expect("config");
    let timed = |args: &[&str]| {
        let t = std::time::Instant::now();
        let text = ok(&tollgate(&lab.gw, args));
        (t.elapsed().as_secs_f64(), text)
    };
    let (apply_s, _) = timed(&["apply", "-c", c]);
    let (noop_s, noop) = timed(&["apply", "-c", c]);
    assert!(noop.contains("no changes"), "{noop:.500}");
    let (show_s, show) = timed(&["show", "--json", "-c", c]);
    let report: serde_json::Value = serde_json::from_str(&show).expect("show --json");
    assert_eq!(report["tenants"].as_array().map(Vec::len), Some(10_000));
    let (destroy_s, _) = timed(&["destroy", "-c", c]);
    eprintln!(
        "10,000 tenants: apply {apply_s:.1} s, no-op apply {noop_s:.2} s, show {show_s:.2} s, destroy {destroy_s:.1} s"
    );
    assert!(
        noop_s < 20.0 && show_s < 20.0,
        "no-op apply {noop_s:.1} s, show {show_s:.1} s"
    );
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
}

/// `plan` and `apply` of config `c` both fail (exit 1) with every one of `needles` in the error.
fn refused_by_plan_and_apply(lab: &GatewayLab, c: &str, needles: &[&str]) {
    for cmd in ["plan", "apply"] {
        let out = tollgate(&lab.gw, &[cmd, "-c", c]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(needles.iter().all(|n| err.contains(n)), "{cmd}: {err}");
    }
}

/// The policy rules of the gateway namespace, one line each.
fn rules(lab: &GatewayLab) -> Vec<String> {
    lab.gw
        .ip(&["rule", "show"])
        .expect("ip rule")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Tenants configured besides the lab's two in the VM's scale test.
const VM_FILLERS: u32 = 1998;

/// Inside the VM: with VRF isolation the policy rules do not grow with tenants. Per tunnel
/// mode, 2 tenants are applied and the rules counted, then 2,000 (the lab's two last): the
/// rules must be the same and the last tenants pass the connectivity matrix.
#[test]
fn vm_inner_rules_do_not_grow_with_tenants() {
    if std::env::var_os("TOLLGATE_IN_VM").is_none() {
        return; // run by vm_rules_do_not_grow_with_tenants through tests/vm/run.sh
    }
    let Some(_serial) = lab("vm_inner_rules_do_not_grow_with_tenants") else {
        panic!("the VM lacks root, ip, nft or iperf3");
    };
    for mode in ["per-tenant", "external"] {
        let tag = if mode == "external" { "se" } else { "sp" };
        let lab = GatewayLab::new(tag, "gretap").expect("lab");
        let state = lab.dir.path().join("state");
        // per-tenant mode needs a flowtable device per tenant, more than a flowtable holds:
        // "auto" goes without offload and says so
        let offload = if mode == "external" { "on" } else { "auto" };
        let two = variant_config("gretap", mode, "vrf", offload, &state);
        let cfg = lab.dir.path().join("t.toml");
        let c = cfg.to_str().expect("utf-8 path");
        std::fs::write(&cfg, &two).expect("config");
        ok(&tollgate(&lab.gw, &["apply", "-c", c]));
        let with_two = rules(&lab);
        std::fs::write(&cfg, lab::with_filler_tenants(&two, VM_FILLERS)).expect("config");
        let t = std::time::Instant::now();
        let applied = ok(&tollgate(&lab.gw, &["apply", "-c", c]));
        let apply_s = t.elapsed().as_secs_f64();
        if offload == "auto" {
            assert!(
                applied.contains("a flowtable holds at most 256 devices"),
                "{mode}: no warning about the flowtable's devices"
            );
        }
        let with_many = rules(&lab);
        let spread = lab::per_tenant_devices_outside_shared_buckets(&lab.gw)
            .unwrap_or_else(|e| panic!("{e}"))
            .len();
        assert!(
            spread > 3 * VM_FILLERS as usize,
            "{mode}: {spread} tenant devices"
        );
        // apply makes the fillers' entry devices before their VRFs and pairs them, so every
        // filler's packet walks about the same, short, way to its devices (the two first
        // tenants, made by the first apply, are behind them all)
        let walks = lab::index_list_walks(&lab.gw).unwrap_or_else(|e| panic!("{e}"));
        let walk = |name: &str| -> usize {
            *walks
                .get(name)
                .unwrap_or_else(|| panic!("{mode}: no device {name}"))
        };
        let fillers = 100_000..100_000 + VM_FILLERS;
        let (mut inbound, mut reply) = (0, 0);
        for id in fillers.clone() {
            let vrf = walk(&format!("tgv{id}"));
            let tunnel_side = if mode == "external" {
                format!("tge{id}")
            } else {
                format!("tgt{id}")
            };
            inbound = inbound.max(vrf + walk(&format!("tgp{id}")));
            reply = reply.max(vrf + walk(&tunnel_side));
        }
        // the longest list holds this many fillers' devices; in plan order (VRFs made first,
        // then all of one side, then the other) the first filler's inbound packet walked
        // about 4/3 of it
        let longest = lab::index_list_lengths(&lab.gw, |name| {
            name.strip_prefix("tg")
                .and_then(|n| n.get(1..))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|id| fillers.contains(&id))
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .max()
        .unwrap_or(0);
        eprintln!(
            "== VM index lists gretap/{mode}/vrf: longest {longest} fillers' devices; worst walk inbound {inbound}, reply {reply}"
        );
        assert!(
            inbound <= longest * 2 / 3 + 2,
            "{mode}: a filler's inbound packet walks {inbound} devices (lists of up to {longest})"
        );
        assert!(
            reply <= longest + 2,
            "{mode}: a filler's reply walks {reply} devices (lists of up to {longest})"
        );
        let links = lab
            .gw
            .ip(&["-br", "link", "show"])
            .expect("links")
            .lines()
            .count();
        eprintln!(
            "== VM scale gretap/{mode}/vrf: {} tenants, {links} links, apply {apply_s:.1} s, {} policy rules (2 tenants: {})",
            VM_FILLERS + 2,
            with_many.len(),
            with_two.len()
        );
        assert_eq!(
            with_two, with_many,
            "{mode}: the policy rules changed with the number of tenants"
        );
        assert!(links > 3 * VM_FILLERS as usize, "{mode}: {links} links");
        let v = format!("gretap/{mode}/vrf with {} tenants", VM_FILLERS + 2);
        // Under emulation, a tenant's first ARP request is copied to each of the 2,000
        // macvlans on the external device before the gateway's answer counts: let each tenant
        // resolve its gateway before the matrix's 2-second connects.
        for t in [&lab.t1, &lab.t2] {
            assert!(
                lab::wait_until(std::time::Duration::from_secs(60), || t
                    .exec("ping", &["-c", "1", "-W", "2", "10.0.0.1"])
                    .is_ok()),
                "{v}: {} never reached its gateway address",
                t.name()
            );
        }
        // likewise the path through each EIP (the client's ARP is copied to the 2,000 macvlans
        // on the public device)
        for eip in ["203.0.113.11", "203.0.113.12"] {
            assert!(
                lab::wait_until(std::time::Duration::from_secs(60), || lab
                    .cl
                    .exec("ping", &["-c", "1", "-W", "2", eip])
                    .is_ok()),
                "{v}: {eip} never answered"
            );
        }
        let servers = connectivity_matrix(&lab, &v);
        drop(servers);
        // destroy at this size is shown by the host test at 10,000 tenants; under emulation
        // it takes minutes, and the VM is thrown away
    }
}

/// Boots the VM with 2 GB (the kernel holds three devices per tenant) and runs
/// `vm_inner_rules_do_not_grow_with_tenants` inside it.
#[test]
fn vm_rules_do_not_grow_with_tenants() {
    let Some(_serial) = lab("vm_rules_do_not_grow_with_tenants") else {
        return;
    };
    let Some(text) = run_inner_in_vm_with(
        "vm_rules_do_not_grow_with_tenants",
        "vm_inner_rules_do_not_grow_with_tenants",
        Some("2G"),
    ) else {
        return;
    };
    assert!(
        text.contains("VM scale gretap/external/vrf"),
        "the inner test skipped a mode"
    );
}

/// What is not tollgate's is refused by name and left alone: an operator's route in a tenant's
/// routing table, an nft table of our name without our marker, and a device whose alias says
/// `tollgate:` but whose kind does not match it.
#[test]
fn refuses_and_keeps_what_is_not_ours() {
    let Some(_serial) = lab("refuses_and_keeps_what_is_not_ours") else {
        return;
    };
    let lab = GatewayLab::new("gn", "vxlan").expect("lab");
    lab.gw
        .ip(&[
            "link", "add", "fake0", "type", "veth", "peer", "name", "fake1",
        ])
        .expect("veth");
    lab.gw
        .ip(&["link", "set", "fake0", "alias", "tollgate: vrf table 1000"])
        .expect("alias");
    lab.gw
        .ip(&[
            "route",
            "add",
            "10.98.0.0/16",
            "dev",
            "eth-ul",
            "table",
            "1000",
        ])
        .expect("operator's route");
    let cfg = lab.dir.path().join("t.toml");
    let state = lab.dir.path().join("state");
    std::fs::write(
        &cfg,
        variant_config("vxlan", "per-tenant", "table", "off", &state),
    )
    .expect("config");
    let c = cfg.to_str().expect("path");
    let before = lab.gw.snapshot().expect("snapshot");
    refused_by_plan_and_apply(&lab, c, &["routing table 1000", "10.98.0.0/16"]);
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));

    lab.gw
        .ip(&[
            "route",
            "del",
            "10.98.0.0/16",
            "dev",
            "eth-ul",
            "table",
            "1000",
        ])
        .expect("route del");
    lab.gw
        .exec("nft", &["add", "table", "inet", "tollgate_gw"])
        .expect("operator's table");
    let before = lab.gw.snapshot().expect("snapshot");
    let out = tollgate(&lab.gw, &["apply", "-c", c]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not made by tollgate"), "{err}");
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
    // destroy removes nothing of this: none of it is ours
    ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
    let links = lab.gw.ip(&["-br", "link"]).expect("links");
    assert!(links.contains("fake0"), "{links}");
}

/// The inode of a test namespace (what tollgate's per-namespace files are named by).
fn netns_inode(ns: &lab::Netns) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{}", ns.name()))
        .expect("netns")
        .ino()
}

/// Two configs with different `state_dir`s still exclude each other: the lock is per network
/// namespace. While the lock is held, an apply waits (and says so); it proceeds once released.
#[test]
fn apply_locks_the_namespace_not_the_state_dir() {
    let Some(_serial) = lab("apply_locks_the_namespace_not_the_state_dir") else {
        return;
    };
    let lab = GatewayLab::new("gl", "vxlan").expect("lab");
    let before = lab.gw.snapshot().expect("snapshot");
    let lock_path = format!(
        "{}/gateway-netns-{}.lock",
        tollgate::names::RUN_DIR,
        netns_inode(&lab.gw)
    );
    let held = tollgate::kernel::state::Lock::acquire(Path::new(&lock_path)).expect("lock");
    let cfg = lab.dir.path().join("other.toml");
    std::fs::write(
        &cfg,
        variant_config(
            "vxlan",
            "per-tenant",
            "table",
            "off",
            &lab.dir.path().join("another-state-dir"),
        ),
    )
    .expect("config");
    let c = cfg.to_str().expect("path");
    let mut cmd = lab.gw.command(tollgate_bin());
    cmd.args(["apply", "-c", c]);
    let mut apply = lab::Proc::spawn(cmd, &lab.dir.path().join("apply.log")).expect("apply");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        apply.child.try_wait().expect("wait").is_none(),
        "apply did not wait for the namespace's lock:\n{}",
        apply.log_text()
    );
    assert!(apply.log_text().contains("waiting"), "{}", apply.log_text());
    drop(held);
    let st = apply
        .wait_timeout(Duration::from_secs(30))
        .expect("wait")
        .expect("apply finished");
    assert!(st.success(), "{}", apply.log_text());
    ok(&tollgate(&lab.gw, &["destroy", "-c", c]));
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));
}

/// Inside the VM: a sharded gateway. Sixteen shards, of which user1 and user2 (ids 1000 and
/// 2000) fill two: refused under `ip netns exec` (its private mounts would take the shards
/// with it); applied, idempotent; the gateway's namespace holds no tenant device; the matrix
/// holds; `show` reads the shards; with one shard the emptied one is deleted and the matrix
/// still holds; destroy leaves the gateway's namespace as it was and no shard behind.
#[test]
fn vm_inner_shards() {
    if std::env::var_os("TOLLGATE_IN_VM").is_none() {
        return; // run by vm_shards through tests/vm/run.sh
    }
    let Some(_serial) = lab("vm_inner_shards") else {
        panic!("the VM lacks root, ip, nft or iperf3");
    };
    let lab = GatewayLab::new("vs", "gretap").expect("lab");
    let before = lab.gw.snapshot().expect("snapshot");
    let prefix = lab.shard_prefix();
    let shards_left = || lab.shards();
    let state = lab.dir.path().join("state");
    let cfg = lab.dir.path().join("t.toml");
    let c = cfg.to_str().expect("path");
    let config = |n: u32| tollgate::config::examples::sharded_variant(n, &prefix, Some(&state));
    std::fs::write(&cfg, config(16)).expect("config");
    let run = |args: &[&str]| tollgate_shared_mounts(&lab.gw, args);

    let refused = tollgate(&lab.gw, &["apply", "-c", c]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("mount namespace"), "{err}");
    assert!(
        shards_left().is_empty(),
        "a refused apply made {:?}",
        shards_left()
    );
    assert_eq!(before, lab.gw.snapshot().expect("snapshot"));

    assert_eq!(run(&["plan", "-c", c]).status.code(), Some(2));
    let applied = ok(&run(&["apply", "-c", c]));
    let (s0, s1) = (format!("{prefix}0"), format!("{prefix}1"));
    assert!(applied.contains(&format!("+ netns {s0}")), "{applied}");
    assert_eq!(shards_left(), [s0.clone(), s1.clone()].into(), "{applied}");
    assert!(ok(&run(&["apply", "-c", c])).contains("no changes"));
    assert_eq!(run(&["plan", "-c", c]).status.code(), Some(0));
    let front = lab.gw.ip(&["-br", "link"]).expect("links");
    for absent in ["tgv", "tge", "tgp", "tgi"] {
        assert!(
            !front.contains(absent),
            "{absent} in the gateway's namespace:\n{front}"
        );
    }
    for (ns, id) in [(&s0, 1000), (&s1, 2000)] {
        let vrf = lab::run(std::process::Command::new("ip").args([
            "-n",
            ns,
            "-br",
            "link",
            "show",
            &format!("tgv{id}"),
        ]));
        assert!(vrf.is_ok(), "tenant {id} is not in {ns}: {vrf:?}");
    }
    let dump = || {
        let sh = |args: &[&str]| {
            let o = std::process::Command::new(args[0])
                .args(&args[1..])
                .output();
            eprintln!(
                "## {}\n{}",
                args.join(" "),
                o.map(|o| format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ))
                .unwrap_or_default()
            );
        };
        sh(&["ip", "-n", lab.gw.name(), "-s", "link"]);
        sh(&["ip", "-n", lab.gw.name(), "addr"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            lab.gw.name(),
            "nft",
            "list",
            "ruleset",
        ]);
        for n in shards_left() {
            sh(&["ip", "-n", &n, "-s", "-d", "link"]);
            sh(&["ip", "-n", &n, "addr"]);
            sh(&["ip", "-n", &n, "route", "show", "table", "all"]);
            sh(&["ip", "-n", &n, "neigh"]);
            sh(&["ip", "netns", "exec", &n, "nft", "list", "ruleset"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &n,
                "sysctl",
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.ip_forward",
            ]);
        }
        sh(&["ip", "-n", lab.t1.name(), "neigh"]);
        sh(&["ip", "-n", lab.t1.name(), "-s", "link"]);
    };
    let matrix_holds = |v: &str| {
        // the first packets of each path resolve neighbours: let them settle
        for t in [&lab.t1, &lab.t2] {
            let reached = lab::wait_until(Duration::from_secs(30), || {
                t.exec("ping", &["-c", "1", "-W", "2", "10.0.0.1"]).is_ok()
            });
            if !reached {
                dump();
            }
            assert!(
                reached,
                "{v}: {} never reached its gateway address",
                t.name()
            );
        }
        connectivity_matrix(&lab, v)
    };
    drop(matrix_holds("gretap/external/vrf/16 shards"));

    let show = ok(&run(&["show", "--json", "-c", c]));
    let report: serde_json::Value = serde_json::from_str(&show).expect("show --json");
    for (i, id) in [(0, 1000), (1, 2000)] {
        let t = &report["tenants"][i];
        assert_eq!(t["id"], id, "{show}");
        assert_eq!(t["shard"], format!("{prefix}{i}"), "{show}");
        let devices = t["devices"].to_string();
        assert!(
            devices.contains(&format!("tgv{id}")) && devices.contains(&format!("tgi{id}")),
            "{show}"
        );
        let accepted: u64 = t["firewall"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["chain"] == format!("in_{id}"))
            .map(|f| f["packets"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            accepted > 0,
            "tenant {id}'s firewall counters did not move:\n{show}"
        );
    }

    // one shard: user2 moves into shard 0 and its old namespace goes
    std::fs::write(&cfg, config(1)).expect("config");
    let moved = ok(&run(&["apply", "-c", c]));
    assert!(moved.contains(&format!("- netns {s1}")), "{moved}");
    assert_eq!(shards_left(), [s0.clone()].into(), "{moved}");
    assert!(ok(&run(&["apply", "-c", c])).contains("no changes"));
    drop(matrix_holds("gretap/external/vrf/1 shard"));

    let destroyed = ok(&run(&["destroy", "-c", c]));
    assert!(destroyed.contains("destroyed"), "{destroyed}");
    assert!(shards_left().is_empty(), "{:?}", shards_left());
    assert_eq!(
        before,
        lab.gw.snapshot().expect("snapshot"),
        "destroy did not restore the gateway namespace"
    );
    assert!(ok(&run(&["destroy", "-c", c])).contains("nothing"));
}

/// Boots the VM and runs `vm_inner_shards` inside it.
#[test]
fn vm_shards() {
    let Some(_serial) = lab("vm_shards") else {
        return;
    };
    let Some(text) = run_inner_in_vm("vm_shards", "vm_inner_shards") else {
        return;
    };
    assert!(text.contains("1 passed"), "{text}");
}
