//! End-to-end tests of tollgate-shaper in network namespaces, with real iperf3 traffic.
//!
//! Topology (lab::UploadLab): client namespace with 198.51.100.10 (alpha),
//! .20 (beta), .30 (no tenant) on eth0 <-veth-> server namespace veth-srv 198.51.100.2, where
//! the shaper runs with TAP tg0. Skipped (with a message) without root, nft or iperf3.

mod common;

use common::*;
use lab::{UploadLab, finish_upload};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const ALPHA: &str = "198.51.100.10";
const BETA: &str = "198.51.100.20";
const OTHER: &str = "198.51.100.30";

/// Streams `total` pseudo-random bytes from `src` to the server and returns both SHA-256s.
fn upload_and_hash(lab: &UploadLab, src: &'static str, total: usize) -> ([u8; 32], [u8; 32]) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(lab.srv.name(), move || {
        let l = TcpListener::bind("198.51.100.2:7000").expect("bind");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = l.accept().expect("accept");
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        <[u8; 32]>::from(h.finalize())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    let client = in_netns(lab.cl.name(), move || {
        let sock = socket_from(src);
        let mut s = sock;
        let mut h = Sha256::new();
        let mut x: u64 = 0x243f_6a88_85a3_08d3;
        let mut buf = vec![0u8; 1 << 16];
        let mut left = total;
        while left > 0 {
            for b in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            let n = left.min(buf.len());
            s.write_all(&buf[..n]).expect("write");
            h.update(&buf[..n]);
            left -= n;
        }
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        <[u8; 32]>::from(h.finalize())
    });
    let sent = client.join().expect("client").expect("setns");
    let got = server.join().expect("server").expect("setns");
    (sent, got)
}

/// A TCP connection to 198.51.100.2:7000 bound to `src`.
fn socket_from(src: &str) -> TcpStream {
    // std has no bind-before-connect: do it with libc on a raw socket
    let local: SocketAddr = format!("{src}:0").parse().expect("addr");
    let remote: SocketAddr = "198.51.100.2:7000".parse().expect("addr");
    // SAFETY: socket/bind/connect on a fresh descriptor, sockaddr_in built in place.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let sa = |a: &SocketAddr| {
            let SocketAddr::V4(v4) = a else {
                unreachable!()
            };
            libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits"),
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            }
        };
        let l = sa(&local);
        let r = sa(&remote);
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())
            .expect("sockaddr_in size fits");
        assert_eq!(
            libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(
            libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
        std::os::fd::FromRawFd::from_raw_fd(fd)
    }
}

/// A 50 MB upload through the shaper arrives intact. At `rate` 2 Gbit/s the GSO frames are
/// queued whole; at 400 Mbit/s they are cut into segments by the shaper, which must then have
/// sent at least one frame per MSS of payload.
fn integrity(mode: &str, rate: &str, tag: &str) {
    let Some(_serial) = lab(&format!("integrity_{mode}_{rate}")) else {
        return;
    };
    let lab = UploadLab::new(tag, &[10, 20, 30]).expect("lab");
    let cfg = config(&lab, mode, &[("alpha", "198.51.100.10/32", rate)]);
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let total = 50 * 1000 * 1000;
    let (sent, got) = upload_and_hash(&lab, ALPHA, total);
    assert_eq!(sent, got, "SHA-256 of the 50 MB upload differs");
    // it really went through the shaper: alpha's queue sent at least the payload
    std::thread::sleep(Duration::from_millis(1200));
    let st = stats(&lab);
    let through = tenant_counter(&st, "alpha", "sent_bytes");
    assert!(
        through >= total as u64,
        "only {through} bytes went through the shaper: {st}"
    );
    assert_eq!(tenant_counter(&st, "alpha", "dropped_packets"), 0, "{st}");
    if rate == SPLIT_RATE {
        let frames = tenant_counter(&st, "alpha", "sent_packets");
        assert!(
            frames >= (total / 1448) as u64,
            "{frames} frames for {total} bytes: GSO frames were not cut into segments: {st}"
        );
    }
    stop_shaper(shaper);
}

/// Below the split threshold (524 Mbit/s).
const SPLIT_RATE: &str = "400mbit";

#[test]
fn upload_integrity_netdev() {
    integrity("netdev", "2gbit", "i");
}

#[test]
fn upload_integrity_route() {
    integrity("route", "2gbit", "i");
}

#[test]
fn upload_integrity_split_netdev() {
    integrity("netdev", SPLIT_RATE, "is");
}

#[test]
fn upload_integrity_split_route() {
    integrity("route", SPLIT_RATE, "is");
}

fn two_tenants(mode: &str) {
    let Some(_serial) = lab(&format!("two_tenants_{mode}")) else {
        return;
    };
    let lab = UploadLab::new("r", &[10, 20, 30]).expect("lab");
    let cfg = config(
        &lab,
        mode,
        &[
            ("alpha", "198.51.100.10/32", "20mbit"),
            ("beta", "198.51.100.20/32", "50mbit"),
        ],
    );
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let _s1 = lab.iperf3_server(5201).expect("server 5201");
    let _s2 = lab.iperf3_server(5202).expect("server 5202");
    let a = lab.iperf3_upload(10, 5201, 10).expect("alpha upload");
    let b = lab.iperf3_upload(20, 5202, 10).expect("beta upload");
    let a = finish_upload(a, Duration::from_secs(30)).expect("alpha result");
    let b = finish_upload(b, Duration::from_secs(30)).expect("beta result");
    for (name, rate, up) in [("alpha", 20e6, &a), ("beta", 50e6, &b)] {
        let ratio = up.received_bps / rate;
        eprintln!(
            "{mode} {name}: {:.2} Mbit/s = {ratio:.3}x of {} Mbit/s",
            up.received_bps / 1e6,
            rate / 1e6
        );
        assert!(
            (0.93..=1.02).contains(&ratio),
            "{mode} {name}: goodput {:.2} Mbit/s is {ratio:.3}x of its rate",
            up.received_bps / 1e6
        );
    }
    // a source of no tenant is not shaped (far above the largest tenant rate)
    let o = lab.iperf3_upload(30, 5201, 3).expect("unmatched upload");
    let o = finish_upload(o, Duration::from_secs(20)).expect("unmatched result");
    eprintln!("{mode} unmatched: {:.0} Mbit/s", o.received_bps / 1e6);
    assert!(
        o.received_bps > 500e6,
        "unmatched source got only {:.1} Mbit/s",
        o.received_bps / 1e6
    );
    // ARP and ping still work, for a tenant and for others
    lab.cl
        .ip(&["neigh", "flush", "dev", "eth0"])
        .expect("flush neighbours");
    lab.srv
        .ip(&["neigh", "flush", "dev", "veth-srv"])
        .expect("flush neighbours");
    assert!(ping(&lab, ALPHA), "ping from alpha failed");
    assert!(ping(&lab, OTHER), "ping from an unmatched source failed");
    assert!(ping(&lab, BETA), "ping from beta failed");
    stop_shaper(shaper);
}

#[test]
fn two_tenants_get_their_rates_netdev() {
    two_tenants("netdev");
}

#[test]
fn two_tenants_get_their_rates_route() {
    two_tenants("route");
}

#[test]
fn route_mode_fails_open_on_sigkill() {
    let Some(_serial) = lab("route_mode_fails_open_on_sigkill") else {
        return;
    };
    let lab = UploadLab::new("k", &[10]).expect("lab");
    let before = lab.srv.snapshot().expect("snapshot");
    let cfg = config(&lab, "route", &[("alpha", "198.51.100.10/32", "20mbit")]);
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let _srv = lab.iperf3_server(5201).expect("server");
    let up = lab.iperf3_upload(10, 5201, 8).expect("upload");
    std::thread::sleep(Duration::from_millis(3000));
    shaper.signal(libc::SIGKILL);
    let up = finish_upload(up, Duration::from_secs(30)).expect("upload result");
    drop(shaper);
    let iv: Vec<f64> = up.intervals_bps.iter().map(|b| b / 1e6).collect();
    eprintln!("route SIGKILL at 3 s, Mbit/s per second: {iv:.1?}");
    assert!(iv.len() >= 8, "{iv:?}");
    // sender-side 1 s samples jitter around the rate; unshaped is ~1000x more
    assert!(iv[1] < 30.0, "shaped before the kill: {iv:?}");
    // killed at 3.0 s: from 4 s on the upload runs unshaped
    for (i, v) in iv.iter().enumerate().skip(4) {
        assert!(
            *v > 200.0,
            "second {i} after the kill is still slow: {iv:?}"
        );
    }
    // restart after SIGKILL cleans up and shapes again; SIGTERM then restores everything
    let shaper = start_shaper(&lab, &cfg, "shaper2.log");
    let up = lab.iperf3_upload(10, 5201, 3).expect("upload");
    let up = finish_upload(up, Duration::from_secs(20)).expect("upload result");
    assert!(
        up.received_bps < 22e6,
        "not shaped after restart: {:.1} Mbit/s",
        up.received_bps / 1e6
    );
    stop_shaper(shaper);
    assert_eq!(
        before,
        lab.srv.snapshot().expect("snapshot"),
        "namespace not restored"
    );
}

#[test]
fn netdev_mode_fails_closed_and_restart_restores() {
    let Some(_serial) = lab("netdev_mode_fails_closed_and_restart_restores") else {
        return;
    };
    let lab = UploadLab::new("n", &[10, 30]).expect("lab");
    let before = lab.srv.snapshot().expect("snapshot");
    let cfg = config(&lab, "netdev", &[("alpha", "198.51.100.10/32", "20mbit")]);
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    assert!(ping(&lab, ALPHA));
    shaper.signal(libc::SIGKILL);
    drop(shaper);
    // fails closed: the tenant's traffic is dropped while the daemon is down; others are not
    assert!(!ping(&lab, ALPHA), "netdev mode should fail closed");
    assert!(
        ping(&lab, OTHER),
        "an unmatched source must not be affected"
    );
    let shaper = start_shaper(&lab, &cfg, "shaper2.log");
    assert!(ping(&lab, ALPHA), "restart did not restore service");
    let ruleset = lab.srv.exec("nft", &["list", "ruleset"]).expect("nft");
    assert_eq!(ruleset.matches("table netdev").count(), 1, "{ruleset}");
    assert_eq!(
        ruleset.matches("fwd to").count(),
        1,
        "duplicate rules:\n{ruleset}"
    );
    let _srv = lab.iperf3_server(5201).expect("server");
    let up = lab.iperf3_upload(10, 5201, 4).expect("upload");
    let up = finish_upload(up, Duration::from_secs(20)).expect("upload result");
    let ratio = up.received_bps / 20e6;
    assert!((0.85..=1.05).contains(&ratio), "after restart: {ratio:.3}x");
    stop_shaper(shaper);
    assert_eq!(
        before,
        lab.srv.snapshot().expect("snapshot"),
        "namespace not restored"
    );
}

fn sigterm_restores(mode: &str) {
    signal_restores(mode, libc::SIGTERM);
}

/// Starts the shaper on a strict rp_filter namespace, checks a second daemon refuses, stops
/// the first with `signal`, and checks the namespace is exactly as before.
fn signal_restores(mode: &str, signal: i32) {
    let Some(_serial) = lab(&format!("signal_restores_{mode}_{signal}")) else {
        return;
    };
    let lab = UploadLab::new("t", &[10]).expect("lab");
    // a distro-like strict setting: the shaper must lower `all` without weakening veth-srv
    lab.srv
        .sysctl("net.ipv4.conf.all.rp_filter", "2")
        .expect("sysctl");
    lab.srv
        .sysctl("net.ipv4.conf.veth-srv.rp_filter", "0")
        .expect("sysctl");
    // an interface with a dot in its name (a VLAN's, say) keeps its effective value too
    lab.srv
        .ip(&[
            "link", "add", "vl.100", "type", "veth", "peer", "name", "vl-peer",
        ])
        .expect("vlan-like device");
    lab.srv
        .sysctl("net.ipv4.conf.vl/100.rp_filter", "0")
        .expect("sysctl");
    let before = lab.srv.snapshot().expect("snapshot");
    let cfg = config(&lab, mode, &[("alpha", "198.51.100.10/32", "100mbit")]);
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    assert_eq!(
        lab.srv.read_sysctl("net.ipv4.conf.all.rp_filter").unwrap(),
        "0"
    );
    assert_eq!(
        lab.srv
            .read_sysctl("net.ipv4.conf.veth-srv.rp_filter")
            .unwrap(),
        "2"
    );
    assert_eq!(
        lab.srv
            .read_sysctl("net.ipv4.conf.vl/100.rp_filter")
            .unwrap(),
        "2",
        "a dotted interface name lost its rp_filter"
    );
    assert!(ping(&lab, ALPHA), "ping through the shaper");
    let during = lab.srv.snapshot().expect("snapshot");
    assert_ne!(before, during);
    // a second daemon with the same config refuses and disturbs nothing
    let path = lab.dir.path().join("tollgate.toml");
    let second = lab
        .srv
        .command(shaper_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .expect("second shaper");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(
        during,
        lab.srv.snapshot().expect("snapshot"),
        "the second daemon changed something"
    );
    stop_shaper_with(shaper, signal);
    assert_eq!(
        before,
        lab.srv.snapshot().expect("snapshot"),
        "namespace not restored"
    );
}

/// Every signal that would end the daemon stops it cleanly (SIGHUP reloads: see below).
#[test]
fn sigusr1_restores_namespace_netdev() {
    signal_restores("netdev", libc::SIGUSR1);
}

/// (CapEff, CapBnd) of each thread of `pid`, the main thread first.
fn thread_caps(pid: u32) -> Vec<(u64, u64)> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_by_key(|&t| (t != pid, t));
    tids.iter()
        .map(|t| {
            let status =
                std::fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).expect("status");
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                    .expect("cap field")
            };
            (field("CapEff:"), field("CapBnd:"))
        })
        .collect()
}

/// `cfg` with every tenant on one FIFO without CoDel: the reload tests measure rates across a
/// reload with short uploads, which CoDel's ramp at low rates would make noisy.
fn fifo(cfg: &str) -> String {
    cfg.lines()
        .flat_map(|l| {
            let extra = l
                .starts_with("upload =")
                .then_some("aqm = \"off\"\nflows = 1");
            std::iter::once(l).chain(extra)
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Runs `tollgate-shaper reload` on the lab's config file (after writing `cfg` to it).
fn reload_with(lab: &UploadLab, cfg: &str) -> std::process::Output {
    let path = lab.dir.path().join("tollgate.toml");
    std::fs::write(&path, cfg).expect("write config");
    lab.srv
        .command(shaper_bin())
        .arg("reload")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("tollgate-shaper reload")
}

/// A live reload during an upload: 30 -> 10 Mbit/s takes effect with no interval above the old
/// rate (a restart let hundreds of MB through unshaped), a tenant added by the reload is shaped
/// at once, a bad file or a change that needs a restart is refused with the running config
/// kept, SIGHUP itself reloads, and stopping afterwards restores the namespace.
fn live_reload(mode: &str) {
    let Some(_serial) = lab(&format!("live_reload_{mode}")) else {
        return;
    };
    let lab = UploadLab::new("rl", &[10, 20]).expect("lab");
    let before = lab.srv.snapshot().expect("snapshot");
    let alpha30 = fifo(&config(
        &lab,
        mode,
        &[("alpha", "198.51.100.10/32", "30mbit")],
    ));
    let shaper = start_shaper(&lab, &alpha30, "shaper.log");
    let _s1 = lab.iperf3_server(5201).expect("server 5201");
    let _s2 = lab.iperf3_server(5202).expect("server 5202");
    let up = lab.iperf3_upload(10, 5201, 12).expect("alpha upload");
    std::thread::sleep(Duration::from_secs(5));
    let alpha10_beta5 = fifo(&config(
        &lab,
        mode,
        &[
            ("alpha", "198.51.100.10/32", "10mbit"),
            ("beta", "198.51.100.20/32", "5mbit"),
        ],
    ));
    let out = reload_with(&lab, &alpha10_beta5);
    assert!(
        out.status.success(),
        "reload: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("generation 2"));
    let up = finish_upload(up, Duration::from_secs(30)).expect("alpha result");
    let iv: Vec<String> = up
        .intervals_bps
        .iter()
        .map(|b| format!("{:.1}", b / 1e6))
        .collect();
    eprintln!(
        "{mode} alpha per second across the reload (Mbit/s): {}",
        iv.join(" ")
    );
    // no second (after the first, where the sender fills its socket buffer) went faster than
    // the highest rate configured: no gap where frames passed unshaped
    assert!(up.intervals_bps.len() >= 11, "{iv:?}");
    let peak = up.intervals_bps[1..].iter().cloned().fold(0.0, f64::max);
    assert!(
        peak < 30e6 * 1.15,
        "{mode}: a second at {:.1} Mbit/s",
        peak / 1e6
    );
    // before the reload: 30; from two seconds after it: 10 (sender-side seconds are lumpy at
    // 10 Mbit/s, so compare means)
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    for (range, want) in [(1..4, 30e6), (7..up.intervals_bps.len(), 10e6)] {
        let m = mean(&up.intervals_bps[range.clone()]);
        assert!(
            (0.9..=1.1).contains(&(m / want)),
            "{mode}: seconds {range:?} averaged {:.1} Mbit/s, expected {} (all: {iv:?})",
            m / 1e6,
            want / 1e6
        );
    }
    // set up, the daemon keeps CAP_NET_ADMIN in its main thread (reloads worked with only
    // that) and nothing in its frame threads; no thread can get anything back
    let caps = thread_caps(shaper.child.id());
    assert!(caps.len() >= 4, "{caps:?}");
    for (i, (eff, bnd)) in caps.iter().enumerate() {
        let net_admin = 1u64 << 12;
        let want = if i == 0 { net_admin } else { 0 };
        assert_eq!(*eff, want, "thread {i} CapEff {eff:x} (all: {caps:x?})");
        assert_eq!(*bnd & !net_admin, 0, "thread {i} CapBnd {bnd:x}");
    }
    // beta, added by the reload, is shaped
    // (a short TCP upload at 5 Mbit/s with CoDel ramps up for a while: the bound that matters
    // is the upper one, the lower one only says it is not starved)
    let b = upload_mbit(&lab, 20, 5202, 6);
    eprintln!("{mode} beta after reload: {b:.2} Mbit/s");
    assert!(
        (0.6..=1.05).contains(&(b / 5.0)),
        "{mode}: beta at {b:.2} Mbit/s, shaped to 5"
    );

    // a rate without a unit: refused, the old config keeps running
    let bad = alpha10_beta5.replace("\"10mbit\"", "\"10\"");
    let out = reload_with(&lab, &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("tenant[0].upload"),
        "{err}"
    );
    // the daemon also refuses it itself when signalled directly, and says why
    shaper.signal(libc::SIGHUP);
    assert!(
        lab::wait_until(Duration::from_secs(5), || {
            stats(&lab)["reloads_failed"].as_u64() == Some(1)
        }),
        "SIGHUP with a bad file: {}",
        stats(&lab)
    );
    assert_eq!(stats(&lab)["generation"], 2);
    assert!(
        stats(&lab)["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("did you mean"))
    );
    // a change that needs a restart is refused too
    let out = reload_with(
        &lab,
        &alpha10_beta5.replace("[shaper]\n", "[shaper]\nmark = 4242\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("shaper.mark changed"),
        "{err}"
    );
    let a = alpha_rate(&lab);
    eprintln!("{mode} alpha after refused reloads: {a:.2} Mbit/s");
    assert!(
        (0.7..=1.05).contains(&(a / 10.0)),
        "{mode}: alpha at {a:.2} Mbit/s, the running config says 10"
    );

    // removing every source tenant but one, then stopping: the namespace is as it was
    let out = reload_with(
        &lab,
        &fifo(&config(
            &lab,
            mode,
            &[("beta", "198.51.100.20/32", "5mbit")],
        )),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ping(&lab, ALPHA),
        "alpha, no longer a tenant, still reaches the server"
    );
    stop_shaper(shaper);
    assert_eq!(
        before,
        lab.srv.snapshot().expect("snapshot"),
        "namespace not restored"
    );
}

#[test]
fn live_reload_netdev() {
    live_reload("netdev");
}

#[test]
fn live_reload_route() {
    live_reload("route");
}

#[test]
fn sigquit_restores_namespace_route() {
    signal_restores("route", libc::SIGQUIT);
}

#[test]
fn sigterm_restores_namespace_netdev() {
    sigterm_restores("netdev");
}

#[test]
fn sigterm_restores_namespace_route() {
    sigterm_restores("route");
}

#[test]
fn bad_config_touches_nothing() {
    let Some(_serial) = lab("bad_config_touches_nothing") else {
        return;
    };
    let lab = UploadLab::new("b", &[10]).expect("lab");
    let before = lab.srv.snapshot().expect("snapshot");
    let cfg = config(&lab, "route", &[("alpha", "198.51.100.10/32", "20mbit")])
        .replace("interface = \"veth-srv\"", "interface = \"veth-nope\"");
    let err = refused(&lab, &cfg, "bad.toml");
    assert!(
        err.contains(":2:") && err.contains("shaper.interface") && err.contains("veth-nope"),
        "{err}"
    );
    assert_eq!(before, lab.srv.snapshot().expect("snapshot"));
}

/// `ports` and `interfaces`: a tenant limited to one local port, and a tenant that enters on a
/// second uplink; traffic outside those matches is not shaped.
fn match_fields(mode: &str) {
    let Some(_serial) = lab(&format!("match_fields_{mode}")) else {
        return;
    };
    let lab = UploadLab::new("m", &[10]).expect("lab");
    // a second uplink: client eth1 203.0.113.10 <-> server veth-b 203.0.113.2
    lab.cl.veth("eth1", "veth-b", &lab.srv).expect("veth");
    lab.cl
        .ip(&["addr", "add", "203.0.113.10/24", "dev", "eth1"])
        .expect("addr");
    lab.cl.ip(&["link", "set", "eth1", "up"]).expect("up");
    lab.srv
        .ip(&["addr", "add", "203.0.113.2/24", "dev", "veth-b"])
        .expect("addr");
    lab.srv.ip(&["link", "set", "veth-b", "up"]).expect("up");
    let cfg = format!(
        "{}ports = [5201]\n\n[[tenant]]\nname = \"gamma\"\nsources = [\"203.0.113.10/32\"]\nupload = \"20mbit\"\ninterfaces = [\"veth-b\"]\n",
        config(&lab, mode, &[("alpha", "198.51.100.10/32", "20mbit")])
    );
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let _s1 = lab.iperf3_server(5201).expect("server 5201");
    let _s2 = lab.iperf3_server(5202).expect("server 5202");
    let rate = |src: &str, dst: &str, port: u16| {
        let p = lab.iperf3_upload_from(src, dst, port, 3).expect("upload");
        finish_upload(p, Duration::from_secs(20))
            .expect("result")
            .received_bps
            / 1e6
    };
    let alpha_5201 = rate(ALPHA, "198.51.100.2", 5201);
    let alpha_5202 = rate(ALPHA, "198.51.100.2", 5202);
    let gamma = rate("203.0.113.10", "203.0.113.2", 5201);
    eprintln!(
        "{mode}: alpha:5201 {alpha_5201:.1} Mbit/s, alpha:5202 {alpha_5202:.1}, gamma via veth-b {gamma:.1}"
    );
    assert!(
        alpha_5201 < 21.0,
        "alpha to its port is not shaped: {alpha_5201:.1} Mbit/s"
    );
    assert!(
        alpha_5202 > 500.0,
        "alpha to another port is shaped: {alpha_5202:.1} Mbit/s"
    );
    assert!(
        gamma < 21.0,
        "gamma on its interface is not shaped: {gamma:.1} Mbit/s"
    );
    let st = stats(&lab);
    assert!(
        tenant_counter(&st, "gamma", "sent_bytes") > 1_000_000,
        "{st}"
    );
    stop_shaper(shaper);
}

#[test]
fn ports_and_interfaces_netdev() {
    match_fields("netdev");
}

#[test]
fn ports_and_interfaces_route() {
    match_fields("route");
}

/// Sends `datagrams` UDP datagrams of `size` bytes from `src` to 198.51.100.2:`port`, paced at
/// `mbit` Mbit/s, while the server counts what arrives until `listen` has passed. Returns the
/// bytes received and the seconds the sending took.
fn udp_burst(
    lab: &UploadLab,
    src: &'static str,
    port: u16,
    size: usize,
    mbit: f64,
    secs: f64,
) -> (u64, f64) {
    use std::net::UdpSocket;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listen = Duration::from_secs_f64(secs + 3.0);
    let server = in_netns(lab.srv.name(), move || {
        let s = UdpSocket::bind(("198.51.100.2", port)).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; 65_536];
        let mut got = 0u64;
        while start.elapsed() < listen {
            if let Ok(n) = s.recv(&mut buf) {
                got += n as u64;
            }
        }
        got
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    let client = in_netns(lab.cl.name(), move || {
        let s = UdpSocket::bind((src, 0)).expect("bind");
        let payload = vec![0x5au8; size];
        let gap = Duration::from_secs_f64(size as f64 * 8.0 / (mbit * 1e6));
        let start = std::time::Instant::now();
        let mut next = start;
        while start.elapsed() < Duration::from_secs_f64(secs) {
            let _ = s.send_to(&payload, ("198.51.100.2", port));
            next += gap;
            if let Some(d) = next.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(d);
            }
        }
        start.elapsed().as_secs_f64()
    });
    let took = client.join().expect("client").expect("setns");
    let got = server.join().expect("server").expect("setns");
    (got, took)
}

/// A tenant with `ports` must have all fragments of its datagrams shaped, not only the first
/// (which alone carries the port).
fn fragments_are_shaped(mode: &str) {
    let Some(_serial) = lab(&format!("fragments_are_shaped_{mode}")) else {
        return;
    };
    let lab = UploadLab::new("fr", &[10]).expect("lab");
    let cfg = format!(
        "{}ports = [5201, 9]\n",
        config(&lab, mode, &[("alpha", "198.51.100.10/32", "10mbit")])
    );
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    // 1. below the rate: everything arrives, and the shaper saw every fragment of it
    let (got, _) = udp_burst(&lab, ALPHA, 9, 60_000, 5.0, 3.0);
    std::thread::sleep(Duration::from_millis(1500)); // the stats file is rewritten every second
    let sent = tenant_counter(&stats(&lab), "alpha", "sent_bytes");
    eprintln!("{mode}: below the rate: socket got {got} B, the shaper released {sent} B");
    assert!(got > 1_000_000, "the datagrams did not arrive: {got} B");
    assert!(
        sent as f64 >= 0.95 * got as f64,
        "fragments bypassed the shaper: it released {sent} B of the {got} B delivered"
    );
    // 2. far above the rate: what reaches the socket is held to the rate
    let (got, took) = udp_burst(&lab, ALPHA, 9, 60_000, 150.0, 3.0);
    let mbit = got as f64 * 8.0 / 1e6 / took;
    eprintln!("{mode}: above the rate: {mbit:.1} Mbit/s of datagrams reached the socket");
    assert!(
        mbit < 15.0,
        "fragmented datagrams passed the 10 Mbit/s tenant at {mbit:.1} Mbit/s"
    );
    stop_shaper(shaper);
}

#[test]
fn fragments_are_shaped_netdev() {
    fragments_are_shaped("netdev");
}

#[test]
fn fragments_are_shaped_route() {
    fragments_are_shaped("route");
}

/// Runs the shaper on `cfg` expecting it to refuse to start; returns what it printed.
fn refused(lab: &UploadLab, cfg: &str, name: &str) -> String {
    let path = lab.dir.path().join(name);
    std::fs::write(&path, cfg).expect("write");
    let out = lab
        .srv
        .command(shaper_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .expect("shaper");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the shaper started:\n{text}");
    text
}

/// Receiver goodput (Mbit/s) of a `secs`-second upload from client `host` to `port`.
fn upload_mbit(lab: &UploadLab, host: u8, port: u16, secs: u32) -> f64 {
    let p = lab.iperf3_upload(host, port, secs).expect("upload");
    finish_upload(p, Duration::from_secs(20))
        .expect("result")
        .received_bps
        / 1e6
}

fn alpha_rate(lab: &UploadLab) -> f64 {
    upload_mbit(lab, 10, 5201, 3)
}

/// Two route-mode shapers in one namespace (two TAPs, their own tables and marks): stopping
/// the second leaves the first's rule, route and the moved local rule in place, and a third
/// that wants the first's table is refused without touching it.
#[test]
fn route_shapers_keep_to_their_own() {
    let Some(_serial) = lab("route_shapers_keep_to_their_own") else {
        return;
    };
    let lab = UploadLab::new("own", &[10, 20]).expect("lab");
    let _srv = lab.iperf3_server(5201).expect("server");
    let first = start_shaper(
        &lab,
        &config(&lab, "route", &[("alpha", "198.51.100.10/32", "20mbit")]),
        "first.log",
    );
    let rules_with_first = lab.srv.ip(&["rule"]).expect("rules");
    let second_cfg = config(&lab, "route", &[("beta", "198.51.100.20/32", "50mbit")]).replace(
        "tap = \"tg0\"",
        "tap = \"tg1\"\ntable = 7469\nmark = 0x7468",
    );
    let second = start_shaper(&lab, &second_cfg, "second.log");
    stop_shaper(second);
    assert_eq!(
        lab.srv.ip(&["rule"]).expect("rules"),
        rules_with_first,
        "the second shaper changed the first's rules"
    );
    let alpha = alpha_rate(&lab);
    eprintln!("alpha after the second shaper stopped: {alpha:.1} Mbit/s");
    assert!(alpha < 21.0, "alpha is no longer shaped: {alpha:.1} Mbit/s");

    let third_cfg = config(&lab, "route", &[("beta", "198.51.100.20/32", "50mbit")])
        .replace("tap = \"tg0\"", "tap = \"tg2\"");
    let err = refused(&lab, &third_cfg, "third.toml");
    assert!(err.contains("table 7468"), "{err}");
    assert_eq!(lab.srv.ip(&["rule"]).expect("rules"), rules_with_first);
    let alpha = alpha_rate(&lab);
    assert!(alpha < 21.0, "alpha is no longer shaped: {alpha:.1} Mbit/s");
    stop_shaper(first);
}

/// An operator's route in the shaper's table is refused by name and left in place.
#[test]
fn route_mode_refuses_a_table_in_use() {
    let Some(_serial) = lab("route_mode_refuses_a_table_in_use") else {
        return;
    };
    let lab = UploadLab::new("tbl", &[10]).expect("lab");
    lab.srv
        .ip(&[
            "route",
            "add",
            "10.99.0.0/16",
            "dev",
            "veth-srv",
            "table",
            "7468",
        ])
        .expect("operator's route");
    let before = lab.srv.snapshot().expect("snapshot");
    let cfg = config(&lab, "route", &[("alpha", "198.51.100.10/32", "20mbit")]);
    let err = refused(&lab, &cfg, "t.toml");
    assert!(
        err.contains("table 7468") && err.contains("10.99.0.0/16"),
        "{err}"
    );
    assert_eq!(before, lab.srv.snapshot().expect("snapshot"));
}

/// The gateway and a route-mode shaper in one namespace both need ip_forward = 1: the shaper
/// stopping must not take it from the gateway, and `destroy` (the last holder) puts back the
/// value found before either. The gateway's plan stays "no changes" across the shaper's life.
#[test]
fn gateway_and_shaper_share_sysctls() {
    let Some(_serial) = lab("gateway_and_shaper_share_sysctls") else {
        return;
    };
    let g = lab::GatewayLab::new("gs", "vxlan").expect("lab");
    let before = g.gw.snapshot().expect("snapshot");
    assert_eq!(
        g.gw.read_sysctl("net.ipv4.ip_forward").expect("sysctl"),
        "0"
    );
    let state = g.dir.path().join("state");
    let gw_cfg = g.dir.path().join("gateway.toml");
    std::fs::write(
        &gw_cfg,
        lab::gateway_config("vxlan", "per-tenant", "table", "off", Some(&state)),
    )
    .expect("config");
    let sh_cfg = g.dir.path().join("shaper.toml");
    std::fs::write(
        &sh_cfg,
        format!(
            "[shaper]\ninterface = \"eth-pub\"\ntap = \"tg0\"\nredirect = \"route\"\nstate_dir = \"{}\"\n\n[[tenant]]\nname = \"client\"\nsources = [\"198.51.100.7/32\"]\nupload = \"20mbit\"\n",
            state.display()
        ),
    )
    .expect("config");
    let tollgate = |args: &[&str]| {
        let out =
            g.gw.command(tollgate_bin())
                .args(args)
                .output()
                .expect("tollgate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let c = gw_cfg.to_str().expect("path");

    // the shaper first (it sets ip_forward), then the gateway
    let mut shaper = spawn_shaper(
        &shaper_bin(),
        &g.gw,
        &sh_cfg,
        &g.dir.path().join("shaper.log"),
        Duration::from_secs(10),
    );
    let (code, text) = tollgate(&["apply", "-c", c]);
    assert_eq!(code, Some(0), "{text}");
    shaper.signal(libc::SIGTERM);
    let st = shaper
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    assert!(st.success(), "{}", shaper.log_text());
    assert_eq!(
        g.gw.read_sysctl("net.ipv4.ip_forward").expect("sysctl"),
        "1",
        "stopping the shaper took ip_forward from the gateway"
    );
    let (code, text) = tollgate(&["plan", "-c", c]);
    assert_eq!(
        code,
        Some(0),
        "the shaper left the gateway changed:\n{text}"
    );
    let (code, text) = tollgate(&["destroy", "-c", c]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(before, g.gw.snapshot().expect("snapshot"));
}

/// Removes a file when dropped (also when the test fails).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An unreadable sysctl journal (the record of what must be restored) stops the shaper with
/// the file's name, before it changes anything.
#[test]
fn corrupt_journal_refuses_to_start() {
    use std::os::unix::fs::MetadataExt;
    let Some(_serial) = lab("corrupt_journal_refuses_to_start") else {
        return;
    };
    let lab = UploadLab::new("cj", &[10]).expect("lab");
    let ino = std::fs::metadata(format!("/run/netns/{}", lab.srv.name()))
        .expect("netns")
        .ino();
    let dir = std::path::Path::new(tollgate::names::RUN_DIR);
    tollgate::kernel::state::ensure_dir(dir).expect("run dir");
    let journal = dir.join(format!("sysctl-netns-{ino}.json"));
    let _cleanup = RemoveOnDrop(journal.clone());
    std::fs::write(&journal, b"{\"entries\": [truncated").expect("write");
    let before = lab.srv.snapshot().expect("snapshot");
    let cfg = config(&lab, "route", &[("alpha", "198.51.100.10/32", "20mbit")]);
    let err = refused(&lab, &cfg, "t.toml");
    assert!(
        err.contains(&journal.display().to_string()) && err.contains("remove it"),
        "{err}"
    );
    assert_eq!(before, lab.srv.snapshot().expect("snapshot"));
}

fn shaped_gateway_config(
    tunnel: &str,
    mode: &str,
    isolation: &str,
    state: &std::path::Path,
) -> String {
    lab::shaped_gateway_config(tunnel, mode, isolation, "off", state)
}

/// Two gateway tenants, both 10.0.0.7, upload to the gateway at once: each is held to its own
/// rate, the gateway's plan stays "no changes" while the shaper runs and after it stops, and
/// destroy leaves the namespace as it was.
fn gateway_tenants_are_shaped(mode: &str) {
    let Some(_serial) = lab(&format!("gateway_tenants_are_shaped_{mode}")) else {
        return;
    };
    let g = lab::GatewayLab::new("gts", "vxlan").expect("lab");
    lab::operator_devices_where_tenants_would_land(&g.gw, 2).expect("operator veths");
    let before = g.gw.snapshot().expect("snapshot");
    let state = g.dir.path().join("state");
    let cfg = g.dir.path().join("tollgate.toml");
    std::fs::write(&cfg, shaped_gateway_config("vxlan", mode, "table", &state)).expect("config");
    let c = cfg.to_str().expect("path");
    let tollgate = |args: &[&str]| {
        let out =
            g.gw.command(tollgate_bin())
                .args(args)
                .output()
                .expect("tollgate");
        assert_eq!(
            out.status.code(),
            Some(0),
            "tollgate {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shaped_by = || {
        let v: serde_json::Value =
            serde_json::from_str(&tollgate(&["show", "--json", "-c", c])).expect("show --json");
        v["tenants"][1]["upload"]["shaped_by"].clone()
    };
    tollgate(&["apply", "-c", c]);
    let mut shaper = spawn_shaper(
        &shaper_bin(),
        &g.gw,
        &cfg,
        &g.dir.path().join("shaper.log"),
        Duration::from_secs(10),
    );
    assert!(
        tollgate(&["plan", "-c", c]).contains("no changes"),
        "the shaper disturbed the gateway"
    );
    let per_tenant =
        lab::per_tenant_devices_outside_shared_buckets(&g.gw).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        per_tenant.iter().filter(|n| n.starts_with("tgs")).count(),
        2,
        "the shaper's macvlans"
    );
    drop(connectivity_matrix(
        &g,
        &format!("vxlan/{mode}/table with the shaper"),
    ));
    let _s1 = lab::iperf3_server(&g.gw, g.dir.path(), 5201, None).expect("server");
    let _s2 = lab::iperf3_server(&g.gw, g.dir.path(), 5202, None).expect("server");
    let secs = 8;
    let u1 = lab::iperf3_client(&g.t1, g.dir.path(), None, "10.0.0.1", 5201, secs).expect("t1");
    let u2 = lab::iperf3_client(&g.t2, g.dir.path(), None, "10.0.0.1", 5202, secs).expect("t2");
    let timeout = Duration::from_secs(u64::from(secs) + 20);
    let r1 = finish_upload(u1, timeout).expect("t1 result").received_bps / 20e6;
    let r2 = finish_upload(u2, timeout).expect("t2 result").received_bps / 50e6;
    eprintln!("{mode}: user1 {r1:.3} of 20 Mbit/s, user2 {r2:.3} of 50 Mbit/s");
    for (who, r) in [("user1", r1), ("user2", r2)] {
        assert!((0.93..=1.02).contains(&r), "{who} got {r:.3} of its rate");
    }
    let st = stats_in(&state);
    assert!(
        tenant_counter(&st, "user1", "sent_bytes") > 5_000_000,
        "{st}"
    );
    assert!(
        tenant_counter(&st, "user2", "sent_bytes") > 15_000_000,
        "{st}"
    );
    // show says who shapes the tenant
    let by = shaped_by();
    assert_eq!(by["tap"], "tg0", "{by}");
    assert_eq!(by["pid"], shaper.child.id(), "{by}");

    // SIGKILL: the tenant's uploads to the gateway stop (fails closed, like netdev mode);
    // a restart recovers, with one copy of everything
    shaper.child.kill().expect("kill");
    let _ = shaper.wait_timeout(Duration::from_secs(5));
    let ping = |t: &lab::Netns| {
        t.exec("ping", &["-c", "2", "-i", "0.2", "-W", "1", "10.0.0.1"])
            .is_ok()
    };
    assert!(
        !ping(&g.t2),
        "{mode}: traffic passed with the shaper killed"
    );
    assert!(shaped_by().is_null(), "the TAP is gone with the process");
    let mut shaper = spawn_shaper(
        &shaper_bin(),
        &g.gw,
        &cfg,
        &g.dir.path().join("shaper2.log"),
        Duration::from_secs(10),
    );
    assert!(
        ping(&g.t1) && ping(&g.t2),
        "{mode}: no traffic after the restart"
    );
    let tables = g.gw.exec("nft", &["list", "tables"]).expect("nft");
    assert_eq!(
        tables.matches("tollgate_shaper_tg0_gw").count(),
        1,
        "{tables}"
    );

    // live reload: user1 from 20 to 10 Mbit/s, user2 no longer shaped (its macvlan goes, its
    // traffic takes the gateway's own path again); then user2 back (its macvlan returns)
    let original = std::fs::read_to_string(&cfg).expect("config");
    let macvlans = || {
        let links = g.gw.ip(&["-o", "link", "show"]).expect("links");
        links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .filter(|n| n.trim().starts_with("tgs"))
            .count()
    };
    assert_eq!(macvlans(), 2);
    let reload = |text: &str| {
        std::fs::write(&cfg, text).expect("config");
        let out =
            g.gw.command(shaper_bin())
                .args(["reload", "--config", c])
                .output()
                .expect("reload");
        assert!(
            out.status.success(),
            "reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let changed = original
        .replacen("upload = \"20mbit\"", "upload = \"10mbit\"", 1)
        .replacen("upload = \"50mbit\"", "", 1);
    assert_ne!(changed, original);
    reload(&changed);
    assert_eq!(macvlans(), 1, "user2's macvlan stayed after the reload");
    let u1 = lab::iperf3_client(&g.t1, g.dir.path(), None, "10.0.0.1", 5201, 4).expect("t1");
    let r1 = finish_upload(u1, timeout).expect("t1 result").received_bps / 10e6;
    eprintln!("{mode}: after reload user1 {r1:.3} of 10 Mbit/s");
    assert!((0.7..=1.05).contains(&r1), "user1 got {r1:.3} of 10 Mbit/s");
    assert!(
        ping(&g.t2),
        "{mode}: user2 unshaped after the reload lost its path"
    );
    reload(&original);
    assert_eq!(macvlans(), 2);
    assert!(
        ping(&g.t1) && ping(&g.t2),
        "{mode}: no traffic after reloading back"
    );
    shaper.signal(libc::SIGTERM);
    let st = shaper
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("exit");
    assert!(st.success(), "{}", shaper.log_text());
    assert!(shaped_by().is_null());
    assert!(tollgate(&["plan", "-c", c]).contains("no changes"));
    tollgate(&["destroy", "-c", c]);
    assert_eq!(before, g.gw.snapshot().expect("snapshot"));
}

#[test]
fn gateway_tenants_are_shaped_per_tenant() {
    gateway_tenants_are_shaped("per-tenant");
}

#[test]
fn gateway_tenants_are_shaped_external() {
    gateway_tenants_are_shaped("external");
}

/// A one-off iperf3 server in `ns` on port 5201, bound to VRF `vrf`, reporting JSON.
fn vrf_server(g: &lab::GatewayLab, vrf: &str, tag: &str) -> lab::Proc {
    let mut c = g.gw.command("iperf3");
    c.args(["-s", "-p", "5201", "--bind-dev", vrf, "--one-off", "-J"]);
    lab::Proc::spawn(c, &g.dir.path().join(format!("srv-{vrf}-{tag}.json"))).expect("iperf3 -s")
}

/// Waits until `n` sockets listen on port 5201 in the gateway namespace.
fn listening(g: &lab::GatewayLab, n: usize) {
    let ok = lab::wait_until(Duration::from_secs(20), || {
        g.gw.exec("ss", &["-Htln", "sport = :5201"])
            .map(|o| o.lines().count() >= n)
            .unwrap_or(false)
    });
    assert!(ok, "iperf3 servers did not start");
}

/// Bytes a finished one-off server received, from its JSON report.
fn server_bytes(mut p: lab::Proc) -> u64 {
    p.wait_timeout(Duration::from_secs(60)).expect("wait");
    let v: serde_json::Value = serde_json::from_str(&p.log_text()).expect("server JSON");
    v.pointer("/end/sum_received/bytes")
        .and_then(|b| b.as_u64())
        .unwrap_or_else(|| panic!("no bytes in {v}"))
}

/// Inside the VM (Debian's kernel: VRF, gretap): in both tunnel modes, each tenant's upload to
/// 10.0.0.1:5201 reaches the server bound to its own VRF, first unshaped (external mode needs
/// the gateway's stamp for that), then through the shaper at its own rate (2 and 5 Mbit/s:
/// what TCG emulation carries reliably, also on a busy host), and each server receives only
/// its own tenant's bytes.
#[test]
fn vm_inner_gateway_tenants_in_vrfs() {
    if std::env::var_os("TOLLGATE_IN_VM").is_none() {
        return; // run by vm_gateway_tenants_in_vrfs through tests/vm/run.sh
    }
    let Some(_serial) = lab("vm_inner_gateway_tenants_in_vrfs") else {
        panic!("the VM lacks root, ip, nft or iperf3");
    };
    ensure_dev_net_tun();
    for mode in ["per-tenant", "external"] {
        let g = lab::GatewayLab::new(if mode == "external" { "wve" } else { "wvp" }, "gretap")
            .expect("lab");
        let state = g.dir.path().join("state");
        let cfg = g.dir.path().join("tollgate.toml");
        // GSO frames queued whole: under emulation one vCPU carries sender, tunnel, VRF,
        // shaper and receiver, and forty segments per frame do not fit in it (segments are
        // tested on the host, by gateway_tenants_are_shaped and the upload tests)
        let text = shaped_gateway_config("gretap", mode, "vrf", &state)
            .replace("\"20mbit\"", "\"2mbit\"\ngso = \"keep\"")
            .replace("\"50mbit\"", "\"5mbit\"\ngso = \"keep\"");
        std::fs::write(&cfg, text).expect("config");
        let c = cfg.to_str().expect("path");
        let tollgate = |args: &[&str]| {
            let out =
                g.gw.command(tollgate_bin())
                    .args(args)
                    .output()
                    .expect("tollgate");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(0), "tollgate {args:?}:\n{text}");
        };
        tollgate(&["apply", "-c", c]);

        // unshaped: each tenant reaches the server in its own VRF
        let s1 = vrf_server(&g, "tgv1000", "plain");
        let s2 = vrf_server(&g, "tgv2000", "plain");
        listening(&g, 2);
        for (t, tag) in [(&g.t1, "t1"), (&g.t2, "t2")] {
            let u = lab::iperf3_client(t, g.dir.path(), None, "10.0.0.1", 5201, 2).expect(tag);
            finish_upload(u, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{mode}: {tag} to its VRF's service: {e}"));
        }
        assert!(server_bytes(s1) > 0 && server_bytes(s2) > 0);

        // shaped
        let mut shaper = spawn_shaper(
            &shaper_bin(),
            &g.gw,
            &cfg,
            &g.dir.path().join("shaper.log"),
            Duration::from_secs(30),
        );
        let s1 = vrf_server(&g, "tgv1000", "shaped");
        let s2 = vrf_server(&g, "tgv2000", "shaped");
        listening(&g, 2);
        let secs = 15;
        let u1 = lab::iperf3_client(&g.t1, g.dir.path(), None, "10.0.0.1", 5201, secs).expect("t1");
        let u2 = lab::iperf3_client(&g.t2, g.dir.path(), None, "10.0.0.1", 5201, secs).expect("t2");
        let timeout = Duration::from_secs(u64::from(secs) + 60);
        let r1 = finish_upload(u1, timeout).expect("t1").received_bps / 2e6;
        let r2 = finish_upload(u2, timeout).expect("t2").received_bps / 5e6;
        let (b1, b2) = (server_bytes(s1), server_bytes(s2));
        eprintln!(
            "VM {mode}/vrf: user1 {r1:.3} of 2 Mbit/s ({b1} B in tgv1000), user2 {r2:.3} of 5 Mbit/s ({b2} B in tgv2000)"
        );
        for (who, r) in [("user1", r1), ("user2", r2)] {
            assert!(
                (0.93..=1.02).contains(&r),
                "{mode}: {who} got {r:.3} of its rate"
            );
        }
        // 2 vs 5 Mbit/s: each server got its own tenant's upload, not the other's
        let expect = |rate: f64| rate / 8.0 * f64::from(secs);
        assert!(
            (b1 as f64) < 1.3 * expect(2e6) && (b1 as f64) > 0.7 * expect(2e6),
            "{b1}"
        );
        assert!(
            (b2 as f64) < 1.3 * expect(5e6) && (b2 as f64) > 0.7 * expect(5e6),
            "{b2}"
        );
        shaper.signal(libc::SIGTERM);
        let st = shaper
            .wait_timeout(Duration::from_secs(30))
            .expect("wait")
            .expect("exit");
        assert!(st.success(), "{}", shaper.log_text());
        tollgate(&["destroy", "-c", c]);
    }
}

/// Boots Debian's stock kernel and runs `vm_inner_gateway_tenants_in_vrfs` there.
#[test]
fn vm_gateway_tenants_in_vrfs() {
    let Some(_serial) = lab("vm_gateway_tenants_in_vrfs") else {
        return;
    };
    let _ = tollgate_bin(); // built before the guest needs it
    run_inner_in_vm(
        "vm_gateway_tenants_in_vrfs",
        "vm_inner_gateway_tenants_in_vrfs",
    );
}

/// `tollgate status --json` during an upload: the tenant's current rate is its configured rate
/// (the bucket is saturated), as numbers; without a running shaper it says so.
#[test]
fn status_shows_the_current_rate() {
    let Some(_serial) = lab("status_shows_the_current_rate") else {
        return;
    };
    let lab = UploadLab::new("st", &[10]).expect("lab");
    let cfg = config(&lab, "netdev", &[("alpha", "198.51.100.10/32", "20mbit")]);
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let path = lab.dir.path().join("tollgate.toml");
    let _srv = lab.iperf3_server(5201).expect("server");
    let up = lab.iperf3_upload(10, 5201, 8).expect("upload");
    std::thread::sleep(Duration::from_secs(3));
    let out = lab
        .srv
        .command(tollgate_bin())
        .args(["status", "--json", "--interval", "3", "-c"])
        .arg(&path)
        .output()
        .expect("tollgate status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    let alpha = &rows[0];
    assert_eq!(alpha["tenant"], "alpha", "{rows}");
    assert_eq!(alpha["configured_bits_per_sec"], 20_000_000, "{rows}");
    let current = alpha["current_bits_per_sec"].as_f64().expect("a number");
    eprintln!("status: alpha current {:.2} Mbit/s", current / 1e6);
    assert!(
        (0.9..=1.05).contains(&(current / 20e6)),
        "current rate {current} of 20 Mbit/s"
    );
    finish_upload(up, Duration::from_secs(30)).expect("upload");
    stop_shaper(shaper);
    let out = lab
        .srv
        .command(tollgate_bin())
        .args(["status", "--interval", "1", "-c"])
        .arg(&path)
        .output()
        .expect("tollgate status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is tollgate-shaper running"), "{err}");
}

/// The whole HTTP response to `GET path` from a server on loopback `port` inside the lab's
/// server namespace.
fn http_get(lab: &UploadLab, port: u16, path: &'static str) -> String {
    in_netns(lab.srv.name(), move || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .join()
    .expect("http thread")
    .expect("setns")
    .expect("http request")
}

/// The value of the sample `name` (with its labels) on a metrics page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

/// The Prometheus endpoint during an upload: the tenant's byte counter moves at its configured
/// rate between two scrapes; other paths are 404; the port is closed after the shaper stops.
#[test]
fn metrics_count_a_tenants_bytes_at_its_rate() {
    let Some(_serial) = lab("metrics_count_a_tenants_bytes_at_its_rate") else {
        return;
    };
    let lab = UploadLab::new("me", &[10]).expect("lab");
    let cfg = config(&lab, "netdev", &[("alpha", "198.51.100.10/32", "20mbit")])
        .replace("[shaper]\n", "[shaper]\nmetrics = \"127.0.0.1:9464\"\n");
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let _srv = lab.iperf3_server(5201).expect("server");
    let up = lab.iperf3_upload(10, 5201, 10).expect("upload");
    std::thread::sleep(Duration::from_secs(2));
    let sent = "tollgate_shaper_tenant_sent_bytes_total{tenant=\"alpha\"}";
    let first = http_get(&lab, 9464, "/metrics");
    let t0 = std::time::Instant::now();
    assert!(
        first.starts_with("HTTP/1.1 200") || first.starts_with("HTTP/1.0 200"),
        "{first}"
    );
    assert!(first.contains("application/openmetrics-text"), "{first}");
    std::thread::sleep(Duration::from_secs(5));
    let second = http_get(&lab, 9464, "/metrics");
    let dt = t0.elapsed().as_secs_f64();
    let rate_bits = (sample(&second, sent) - sample(&first, sent)) * 8.0 / dt;
    eprintln!(
        "metrics: alpha's byte counter moved at {:.2} Mbit/s",
        rate_bits / 1e6
    );
    assert!(
        (0.9..=1.1).contains(&(rate_bits / 20e6)),
        "counter rate {:.2} Mbit/s",
        rate_bits / 1e6
    );
    assert_eq!(
        sample(
            &second,
            "tollgate_shaper_tenant_rate_bytes_per_second{tenant=\"alpha\"}"
        ),
        2_500_000.0
    );
    assert!(sample(&second, "tollgate_shaper_frames_read_total") > 0.0);
    // at 20 Mbit/s GSO frames are cut into segments, each in a small buffer
    assert!(
        sample(
            &second,
            "tollgate_shaper_pool_buffers{class=\"small\",state=\"allocated\"}"
        ) > 0.0
    );
    assert!(
        http_get(&lab, 9464, "/")
            .lines()
            .next()
            .is_some_and(|status| status.contains("404"))
    );
    finish_upload(up, Duration::from_secs(30)).expect("upload");
    stop_shaper(shaper);
    let closed = in_netns(lab.srv.name(), || {
        TcpStream::connect(("127.0.0.1", 9464)).is_err()
    })
    .join()
    .expect("thread")
    .expect("setns");
    assert!(
        closed,
        "the metrics port is still open after the shaper stopped"
    );
}

/// Round-trip times (ms) of `count` pings from `src` at `interval` seconds, run in the client
/// namespace while something else loads the tenant.
fn ping_rtts(lab: &UploadLab, src: &str, count: u32, interval: &str) -> Vec<f64> {
    lab::bench::ping_from(lab, src, count, interval).expect("ping")
}

use lab::bench::percentile;

/// The queue discipline inside a tenant: while a UDP stream at twice the tenant's 20 Mbit/s
/// keeps its 1 MiB queue full (420 ms at that rate), a ping from the same tenant waits behind
/// the whole queue with one FIFO and no AQM, and hardly at all with the default flow queues
/// and CoDel: the ping is a new flow, served before the bulk flow's backlog, and CoDel drops
/// from the flow whose frames wait too long.
#[test]
fn flow_queues_and_codel_keep_a_tenants_ping_fast_under_load() {
    let Some(_serial) = lab("flow_queues_and_codel_keep_a_tenants_ping_fast_under_load") else {
        return;
    };
    let lab = UploadLab::new("aq", &[10]).expect("lab");
    let _srv = lab.iperf3_server(5201).expect("server");
    let mut tails = Vec::new();
    for (what, extra) in [
        ("fifo", "queue = \"1mb\"\nflows = 1\naqm = \"off\"\n"),
        ("fq_codel", "queue = \"1mb\"\n"),
    ] {
        let cfg = config(&lab, "netdev", &[("alpha", "198.51.100.10/32", "20mbit")]) + extra;
        let shaper = start_shaper(&lab, &cfg, &format!("shaper-{what}.log"));
        let mut load = lab.cl.command("iperf3");
        load.args([
            "-c",
            lab::SERVER,
            "-p",
            "5201",
            "-u",
            "-b",
            "40M",
            "-l",
            "1400",
            "-t",
            "8",
            "-B",
            ALPHA,
        ]);
        let load = lab::Proc::spawn(load, &lab.dir.path().join(format!("udp-{what}.log")))
            .expect("udp load");
        std::thread::sleep(Duration::from_secs(2));
        let rtts = ping_rtts(&lab, ALPHA, 20, "0.2");
        drop(load);
        let (p50, p99) = (percentile(&rtts, 50), percentile(&rtts, 99));
        let st = stats(&lab);
        eprintln!(
            "{what}: ping beside the tenant's own flood p50 {p50:.1} ms p99 {p99:.1} ms ({} replies); codel drops {}, overflow drops {}",
            rtts.len(),
            tenant_counter(&st, "alpha", "codel_packets"),
            tenant_counter(&st, "alpha", "overflow_packets")
        );
        assert!(rtts.len() >= 18, "{what}: pings lost: {rtts:?}");
        if what == "fq_codel" {
            assert!(tenant_counter(&st, "alpha", "codel_packets") > 0, "{st}");
        } else {
            assert_eq!(tenant_counter(&st, "alpha", "codel_packets"), 0, "{st}");
        }
        tails.push(p99);
        stop_shaper(shaper);
    }
    // the FIFO queue really is deep (the test can tell the difference), and the flow queues
    // take the ping past it
    assert!(tails[0] > 200.0, "FIFO p99 {:.1} ms", tails[0]);
    assert!(tails[1] < 20.0, "fq_codel p99 {:.1} ms", tails[1]);
}

/// Isolation: tenant alpha (1 Mbit/s) floods 16-byte UDP datagrams at 30 Mbit/s while beta
/// uploads at its 20 Mbit/s: beta keeps its rate and its pings, alpha's excess is dropped and
/// counted to alpha (its frame cap), and the reader never stalls.
#[test]
fn a_flooding_tenant_cannot_move_another() {
    let Some(_serial) = lab("a_flooding_tenant_cannot_move_another") else {
        return;
    };
    let lab = UploadLab::new("fl", &[10, 20]).expect("lab");
    let cfg = config(
        &lab,
        "netdev",
        &[
            ("alpha", "198.51.100.10/32", "1mbit"),
            ("beta", "198.51.100.20/32", "20mbit"),
        ],
    );
    let shaper = start_shaper(&lab, &cfg, "shaper.log");
    let _s1 = lab.iperf3_server(5201).expect("server 5201");
    let _s2 = lab.iperf3_server(5202).expect("server 5202");
    let mut flood = lab.cl.command("iperf3");
    flood.args([
        "-c",
        lab::SERVER,
        "-p",
        "5201",
        "-u",
        "-b",
        "30M",
        "-l",
        "16",
        "-t",
        "12",
        "-B",
        ALPHA,
    ]);
    let flood = lab::Proc::spawn(flood, &lab.dir.path().join("flood.log")).expect("flood");
    std::thread::sleep(Duration::from_secs(2));
    let b = lab.iperf3_upload(20, 5202, 6).expect("beta upload");
    let rtts = ping_rtts(&lab, BETA, 20, "0.2");
    let b = finish_upload(b, Duration::from_secs(30)).expect("beta result");
    let st = stats(&lab);
    drop(flood);
    let ratio = b.received_bps / 20e6;
    eprintln!(
        "beta beside alpha's flood: {:.2} Mbit/s ({ratio:.3}), ping p50 {:.2} p99 {:.2} ms; alpha dropped {} (overflow {}, no buffer {}), beta dropped {}",
        b.received_bps / 1e6,
        percentile(&rtts, 50),
        percentile(&rtts, 99),
        tenant_counter(&st, "alpha", "dropped_packets"),
        tenant_counter(&st, "alpha", "overflow_packets"),
        tenant_counter(&st, "alpha", "nobuf_packets"),
        tenant_counter(&st, "beta", "dropped_packets"),
    );
    assert!(
        (0.9..=1.02).contains(&ratio),
        "beta at {ratio:.3} of its rate"
    );
    assert!(
        rtts.len() >= 19,
        "beta's pings were lost: {} of 20",
        rtts.len()
    );
    assert!(
        tenant_counter(&st, "alpha", "overflow_packets") > 10_000,
        "{st}"
    );
    assert_eq!(tenant_counter(&st, "beta", "nobuf_packets"), 0, "{st}");
    // alpha holds at most its frame cap of buffers (1 Mbit/s: 256 KiB queue -> 1024 frames)
    let queued = tenant_counter(&st, "alpha", "backlog_bytes");
    assert!(queued <= 256 * 1024, "alpha backlog {queued}");
    stop_shaper(shaper);
}
