//! Shared harness for the namespace integration tests of both crates.
//!
//! Every test calls [`lab`] first: without root or the tools it prints why and the test
//! returns early (skipped), so a plain `cargo test` passes anywhere. With them, tests in one
//! binary run one at a time (a process-wide lock): they measure rates, and two at once on two
//! cores would measure each other. Namespaces, TAPs and temp dirs are unique per test and are
//! removed on drop, also when the test fails.

use crate::{self as lab, Netns, Proc, UploadLab, connect, serve};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// None (after printing why) when this machine cannot run namespace tests.
pub fn lab(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Some(why) = lab::missing_prerequisites() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    Some(guard)
}

/// A shaper config for [`UploadLab`]: tenants as (name, source, upload) plus extra lines.
pub fn config(lab: &UploadLab, mode: &str, tenants: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "[shaper]\ninterface = \"veth-srv\"\ntap = \"tg0\"\nredirect = \"{mode}\"\nstate_dir = \"{}\"\n",
        lab.dir.path().join("state").display()
    );
    for (name, src, rate) in tenants {
        s += &format!(
            "\n[[tenant]]\nname = \"{name}\"\nsources = [\"{src}\"]\nupload = \"{rate}\"\n"
        );
    }
    s
}

/// Starts the shaper `bin` in the server namespace and waits until it is shaping.
pub fn start_shaper(bin: &Path, lab: &UploadLab, config: &str, log: &str) -> Proc {
    let path = lab.dir.path().join("tollgate.toml");
    std::fs::write(&path, config).expect("writing config");
    spawn_shaper(
        bin,
        &lab.srv,
        &path,
        &lab.dir.path().join(log),
        Duration::from_secs(10),
    )
}

/// Starts the shaper `bin` in `ns` on config file `config` (log to `log`) and waits up to
/// `timeout` until it is shaping; panics with its log if it exits or does not get there.
pub fn spawn_shaper(bin: &Path, ns: &Netns, config: &Path, log: &Path, timeout: Duration) -> Proc {
    let mut c = ns.command(bin);
    c.arg("--config").arg(config).env("RUST_LOG", "info");
    let mut p = Proc::spawn(c, log).expect("spawning shaper");
    let ready = lab::wait_until(timeout, || {
        p.log_text().contains("shaping") || matches!(p.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        ready && p.log_text().contains("shaping"),
        "shaper did not start:\n{}",
        p.log_text()
    );
    p
}

/// Sends SIGTERM and asserts a clean exit 0.
pub fn stop_shaper(p: Proc) {
    stop_shaper_with(p, libc::SIGTERM);
}

/// Sends `signal` and asserts a clean exit 0 (every signal that ends the shaper stops it
/// cleanly).
pub fn stop_shaper_with(mut p: Proc, signal: i32) {
    p.signal(signal);
    let st = p
        .wait_timeout(Duration::from_secs(10))
        .expect("waiting for shaper");
    let st = st.unwrap_or_else(|| panic!("shaper ignored signal {signal}:\n{}", p.log_text()));
    assert!(st.success(), "shaper exited {st}:\n{}", p.log_text());
}

/// The shaper's live counters (the stats file it rewrites every second).
pub fn stats(lab: &UploadLab) -> serde_json::Value {
    stats_in(&lab.dir.path().join("state"))
}

/// The shaper's live counters from its `state_dir`.
pub fn stats_in(dir: &Path) -> serde_json::Value {
    let file = std::fs::read_dir(dir)
        .expect("state dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".stats.json"))
        .expect("stats file");
    serde_json::from_str(&std::fs::read_to_string(file).expect("stats")).expect("stats JSON")
}

/// A tenant's counter from [`stats`].
pub fn tenant_counter(stats: &serde_json::Value, tenant: &str, key: &str) -> u64 {
    stats["tenants"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == tenant))
        .and_then(|t| t[key].as_u64())
        .unwrap_or_else(|| panic!("no {key} for {tenant} in {stats}"))
}

/// Ping from the client namespace, sourced from `src`.
pub fn ping(lab: &UploadLab, src: &str) -> bool {
    lab.cl
        .exec(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "1", "-I", src, lab::SERVER],
        )
        .is_ok()
}

/// Runs the `tollgate` CLI `bin` inside a namespace.
pub fn tollgate(bin: &Path, ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.command(bin)
        .args(args)
        .output()
        .expect("running tollgate")
}

/// Runs the `tollgate` binary `bin` in `ns`'s network namespace but this process's mount
/// namespace (`nsenter --net`, where `ip netns exec` would give it a private one): what a
/// sharded gateway needs, since the shard namespaces it pins must outlive it.
pub fn tollgate_shared_mounts(bin: &Path, ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.command_shared_mounts(bin)
        .args(args)
        .output()
        .expect("running tollgate")
}

/// The reference gateway's connectivity matrix, asserted (`v` names the variant in messages):
/// each EIP reaches its own tenant although both are 10.0.0.7, the tenants' firewalls allow and
/// deny their ports, outbound traffic leaves with the tenant's own EIP as source, and each
/// tenant reaches the gateway's address in its network. Returns the servers it started (tcp 22
/// and 23 in each tenant, 22, 23 and 80 in the client), for checks that follow.
#[must_use]
pub fn connectivity_matrix(lab: &crate::GatewayLab, v: &str) -> Vec<crate::Server> {
    let (cl, t1, t2) = (lab.cl.name(), lab.t1.name(), lab.t2.name());
    let servers = vec![
        serve(t1, 22, "t1:22").expect("server"),
        serve(t1, 23, "t1:23").expect("server"),
        serve(t2, 22, "t2:22").expect("server"),
        serve(t2, 23, "t2:23").expect("server"),
        serve(cl, 22, "cl:22").expect("server"),
        serve(cl, 23, "cl:23").expect("server"),
        serve(cl, 80, "cl:80").expect("server"),
    ];
    // inbound through the EIPs, each to its own tenant although both are 10.0.0.7
    assert_eq!(
        connect(cl, "203.0.113.11", 22),
        Ok("t1:22 from 198.51.100.7".into()),
        "{v}"
    );
    assert_eq!(
        connect(cl, "203.0.113.12", 23),
        Ok("t2:23 from 198.51.100.7".into()),
        "{v}"
    );
    assert!(
        connect(cl, "203.0.113.11", 23).is_err(),
        "{v}: user1 must not allow tcp/23 in"
    );
    assert!(
        connect(cl, "203.0.113.12", 22).is_err(),
        "{v}: user2 must not allow tcp/22 in"
    );
    for eip in ["203.0.113.11", "203.0.113.12"] {
        assert!(ping_twice(&lab.cl, &[], eip).is_ok(), "{v}: ping {eip}");
    }
    // outbound: denied ports are refused, the rest leaves through SNAT to the tenant's own EIP
    assert!(
        connect(t1, "198.51.100.7", 22).is_err(),
        "{v}: t1 must not reach tcp/22 out"
    );
    assert!(
        connect(t2, "198.51.100.7", 23).is_err(),
        "{v}: t2 must not reach tcp/23 out"
    );
    assert_eq!(
        connect(t1, "198.51.100.7", 80),
        Ok("cl:80 from 203.0.113.11".into()),
        "{v}"
    );
    assert_eq!(
        connect(t2, "198.51.100.7", 80),
        Ok("cl:80 from 203.0.113.12".into()),
        "{v}"
    );
    assert_eq!(
        connect(t1, "198.51.100.7", 23),
        Ok("cl:23 from 203.0.113.11".into()),
        "{v}"
    );
    assert_eq!(
        connect(t2, "198.51.100.7", 22),
        Ok("cl:22 from 203.0.113.12".into()),
        "{v}"
    );

    for t in [&lab.t1, &lab.t2] {
        assert!(
            ping_twice(t, &[], "10.0.0.1").is_ok(),
            "{v}: {} cannot reach its gateway address",
            t.name()
        );
    }
    tenants_reach_nothing_outside_their_tables(lab, v);
    tenants_reach_the_gateway_only_at_their_gateway_address(lab, v);
    spoofed_gateway_sources_are_dropped(lab, v);
    servers
}

/// Two pings from `ns` to `dst` with `opts` (`-I` a device or a source address), one second's
/// wait for each: Ok when answered.
fn ping_twice(ns: &Netns, opts: &[&str], dst: &str) -> lab::Result<String> {
    let mut args = opts.to_vec();
    args.extend(["-c", "2", "-i", "0.2", "-W", "1", dst]);
    ns.exec("ping", &args)
}

/// An nftables counter in `ns`'s prerouting for packets matching `rule`, in a table of its
/// own that is removed on drop: what reached a namespace, whether or not it was answered.
struct ArrivalCount<'a> {
    ns: &'a Netns,
    table: &'static str,
}

impl<'a> ArrivalCount<'a> {
    fn new(ns: &'a Netns, table: &'static str, rule: &str) -> ArrivalCount<'a> {
        for cmd in [
            format!("add table ip {table}"),
            format!("add chain ip {table} pre {{ type filter hook prerouting priority 0; }}"),
            format!("add rule ip {table} pre {rule} counter"),
        ] {
            ns.exec("nft", &[&cmd]).expect("nft");
        }
        ArrivalCount { ns, table }
    }

    /// The chain as nft lists it (`... counter packets N bytes M`).
    fn listing(&self) -> String {
        self.ns
            .exec("nft", &[&format!("list chain ip {} pre", self.table)])
            .expect("nft list")
    }
}

impl Drop for ArrivalCount<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .exec("nft", &[&format!("delete table ip {}", self.table)]);
    }
}

/// A tenant's packet whose source is one of the gateway's own addresses (here its public
/// address) is dropped on entry, not forwarded: the client counts echo requests reaching it
/// while each tenant pings it from that address through its tunnel.
fn spoofed_gateway_sources_are_dropped(lab: &crate::GatewayLab, v: &str) {
    let count = ArrivalCount::new(&lab.cl, "tgspoof", "icmp type echo-request");
    for t in [&lab.t1, &lab.t2] {
        t.ip(&["addr", "add", "198.51.100.1/32", "dev", "tun0"])
            .expect("spoofed address");
        let sent = ping_twice(t, &["-I", "198.51.100.1"], "198.51.100.7");
        t.ip(&["addr", "del", "198.51.100.1/32", "dev", "tun0"])
            .expect("spoofed address");
        assert!(
            sent.is_err(),
            "{v}: {} pinged the client from the gateway's address",
            t.name()
        );
    }
    let listed = count.listing();
    assert!(
        listed.contains("packets 0 "),
        "{v}: packets from the gateway's own address were forwarded from a tenant:\n{listed}"
    );
}

/// The gateway's own services answer a tenant only at the tenant's gateway address: an
/// address of the operator's on the gateway (a management network on a device of its own)
/// is not reachable through a tenant's tunnel, its gateway address is.
fn tenants_reach_the_gateway_only_at_their_gateway_address(lab: &crate::GatewayLab, v: &str) {
    let gw = &lab.gw;
    gw.ip(&[
        "link", "add", "tgmgmt", "type", "veth", "peer", "name", "tgmgmt1",
    ])
    .expect("operator device");
    gw.ip(&["addr", "add", "172.31.9.1/24", "dev", "tgmgmt"])
        .expect("operator address");
    gw.ip(&["link", "set", "tgmgmt", "up"]).expect("up");
    gw.ip(&["link", "set", "tgmgmt1", "up"]).expect("up");
    let server = serve(gw.name(), 2222, "gw:2222").expect("gateway service");
    for t in [&lab.t1, &lab.t2] {
        t.ip(&[
            "route",
            "add",
            "172.31.9.0/24",
            "via",
            "10.0.0.1",
            "dev",
            "tun0",
        ])
        .expect("route to the operator's network");
        let got = connect(t.name(), "172.31.9.1", 2222);
        assert!(
            got.is_err(),
            "{v}: {} reached a service on the operator's address: {got:?}",
            t.name()
        );
        t.ip(&["route", "del", "172.31.9.0/24"]).expect("route");
    }
    drop(server);
    gw.ip(&["link", "del", "tgmgmt"]).expect("operator device");
}

/// A tenant's packets to a destination its own routing table does not hold (here a host on the
/// underlay, where the operator's hosts and the other tenants' tunnel endpoints are) must not be
/// forwarded through the gateway's main table. An underlay host counts what reaches it from
/// tenant addresses; the tenants send through their tunnels (`ping -I tun0`).
fn tenants_reach_nothing_outside_their_tables(lab: &crate::GatewayLab, v: &str) {
    let sw = &lab.sw;
    sw.ip(&["addr", "add", "172.31.0.98/24", "dev", "br0"])
        .expect("underlay host address");
    let count = ArrivalCount::new(sw, "tgleak", "ip saddr 10.0.0.0/8 ip daddr 172.31.0.98");
    for t in [&lab.t1, &lab.t2] {
        assert!(
            ping_twice(t, &["-I", "tun0"], "172.31.0.98").is_err(),
            "{v}: {} reached an underlay host through the gateway",
            t.name()
        );
    }
    let listed = count.listing();
    assert!(
        listed.contains("packets 0 "),
        "{v}: tenant packets reached the underlay through the gateway's main table:\n{listed}"
    );
    drop(count);
    sw.ip(&["addr", "del", "172.31.0.98/24", "dev", "br0"])
        .expect("underlay host address");
}

/// Boots Debian's stock kernel under qemu (`tests/vm/run.sh`) and runs the test `inner` of the
/// running test binary inside it, with `TOLLGATE_IN_VM=1`; asserts that it passed and returns
/// what it printed. None (after printing why `test` is skipped) when the VM tooling is not
/// installed (`tests/vm/setup.sh`, which `scripts/test.sh` runs).
pub fn run_inner_in_vm(test: &str, inner: &str) -> Option<String> {
    run_inner_in_vm_with(test, inner, None)
}

/// [`run_inner_in_vm`] with the VM's memory (e.g. "2G") instead of tests/vm/run.sh's default.
pub fn run_inner_in_vm_with(test: &str, inner: &str, memory: Option<&str>) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let vng = Path::new("/opt/tollgate-vng/bin/vng");
    let kernel = std::fs::read_dir("/lib/modules")
        .into_iter()
        .flatten()
        .flatten()
        .any(|m| {
            Path::new("/boot")
                .join(format!("vmlinuz-{}", m.file_name().to_string_lossy()))
                .exists()
        });
    if !vng.exists() || !kernel {
        eprintln!(
            "skipped {test}: run tests/vm/setup.sh to install qemu, a Debian kernel and virtme-ng"
        );
        return None;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = std::process::Command::new("bash");
    if let Some(m) = memory {
        cmd.env("VM_MEM", m);
    }
    let out = cmd
        .arg(root.join("tests/vm/run.sh"))
        .arg("env")
        .arg("TOLLGATE_IN_VM=1")
        .arg(&exe)
        .args(["--exact", inner, "--nocapture", "--test-threads=1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("tests/vm/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{inner} failed in the VM");
    assert!(
        text.contains(&format!("test {inner} ... ok")),
        "{inner} did not run in the VM"
    );
    Some(text)
}

/// In the VM the root filesystem is the host's, read-only, with a fresh /dev: the TUN device
/// node the shaper opens has to be made.
pub fn ensure_dev_net_tun() {
    let p = Path::new("/dev/net/tun");
    if p.exists() {
        return;
    }
    let _ = std::fs::create_dir_all("/dev/net");
    let st = std::process::Command::new("mknod")
        .args(["/dev/net/tun", "c", "10", "200"])
        .status()
        .expect("mknod");
    assert!(st.success(), "mknod /dev/net/tun failed");
}
