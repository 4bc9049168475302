//! Network-namespace lab: the demo, the integration tests and the benchmarks build their
//! topologies with this, so every one of them lives entirely inside namespaces it made and
//! removes them when dropped (also when a test panics).
//!
//! Nothing here touches the root namespace except creating and deleting namespaces.
//!
//! This is a development crate: the demo binary, the integration tests and the benchmarks use
//! it; the `tollgate` and `tollgate-shaper` binaries do not link it.

pub mod bench;
pub mod demo;
pub mod harness;

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, LabError>;

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: describe(cmd),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: describe(cmd),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// Why the lab cannot run here, or None when it can (root, and the tools it drives).
pub fn missing_prerequisites() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    for tool in ["ip", "nft", "iperf3"] {
        let found = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (scripts/deps.sh installs it)"
            ));
        }
    }
    None
}

/// A unique name for this process: `tg<tag><pid>x<n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "tg{tag}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop (with everything in it).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name, `lo` up and IPv6 off (no DAD/RS noise).
    pub fn new(tag: &str) -> Result<Netns> {
        let name = unique(tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in ["all", "default"] {
            // best effort: kernels without IPv6 have no such key
            let _ = ns.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1");
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A command that runs in the namespace's network but this process's mount namespace
    /// (`nsenter --net`; `ip netns exec` gives its command private mounts): what a sharded
    /// gateway needs, since the shard namespaces it pins must outlive the command.
    pub fn command_shared_mounts(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        c
    }

    /// Runs a command in the namespace and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A veth pair: `name` here, `peer` in namespace `other`.
    pub fn veth(&self, name: &str, peer: &str, other: &Netns) -> Result<()> {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            other.name(),
        ])
        .map(|_| ())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        Ok(self.exec("sysctl", &["-n", key])?.trim().to_string())
    }

    /// What a test compares before and after: rules, routes, links, ruleset, the sysctls the
    /// shaper may touch.
    pub fn snapshot(&self) -> Result<String> {
        let mut s = String::new();
        s += &self.ip(&["rule", "show"])?;
        s += &self.ip(&["-4", "route", "show", "table", "all"])?;
        // configuration, not carrier: drop the operational state and carrier flags
        for line in self.ip(&["-br", "link", "show"])?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = f.last().copied().unwrap_or("");
            let flags: Vec<&str> = flags
                .trim_matches(|c| c == '<' || c == '>')
                .split(',')
                .filter(|x| *x != "LOWER_UP" && *x != "NO-CARRIER")
                .collect();
            s += &format!(
                "{} {} <{}>\n",
                f.first().copied().unwrap_or(""),
                f.get(2).copied().unwrap_or(""),
                flags.join(",")
            );
        }
        s += &self.exec("nft", &["list", "ruleset"])?;
        let sysctls = self.exec(
            "sh",
            &[
                "-c",
                "sysctl net.ipv4.ip_forward net.ipv4.tcp_early_demux net.ipv4.fwmark_reflect \
                 net.ipv4.tcp_fwmark_accept net.ipv4.conf.all.src_valid_mark; \
                 sysctl -a 2>/dev/null | grep -E 'net.ipv4.conf.*(rp_filter|ignore_routes_with_linkdown)'",
            ],
        )?;
        s += &sysctls;
        Ok(s)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // kill what still runs inside (daemons, iperf3), then delete
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) on a pid we just listed.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A background process, killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout/stderr to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc> {
        let f = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .map_err(|e| LabError::Command {
                cmd: describe(&cmd),
                detail: e.to_string(),
            })?;
        Ok(Proc {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `timeout` for exit; None if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A client and a server namespace joined by a veth pair:
/// `cl` eth0 198.51.100.{clients}/24  <->  `srv` veth-srv 198.51.100.2/24.
#[derive(Debug)]
pub struct UploadLab {
    pub cl: Netns,
    pub srv: Netns,
    pub dir: TempDir,
}

/// The server's address in [`UploadLab`].
pub const SERVER: &str = "198.51.100.2";

impl UploadLab {
    /// `clients`: the host parts of the client's addresses (e.g. 10, 20, 30).
    pub fn new(tag: &str, clients: &[u8]) -> Result<UploadLab> {
        let cl = Netns::new(&format!("{tag}c"))?;
        let srv = Netns::new(&format!("{tag}s"))?;
        let dir = TempDir::new(&format!("{tag}d"))?;
        cl.veth("eth0", "veth-srv", &srv)?;
        for c in clients {
            cl.ip(&["addr", "add", &format!("198.51.100.{c}/24"), "dev", "eth0"])?;
        }
        cl.ip(&["link", "set", "eth0", "up"])?;
        srv.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "veth-srv"])?;
        srv.ip(&["link", "set", "veth-srv", "up"])?;
        Ok(UploadLab { cl, srv, dir })
    }

    /// Starts an iperf3 server on `port` in the server namespace and waits until it listens.
    pub fn iperf3_server(&self, port: u16) -> Result<Proc> {
        iperf3_server(&self.srv, self.dir.path(), port, None)
    }

    pub fn iperf3_upload(&self, client: u8, port: u16, secs: u32) -> Result<Proc> {
        self.iperf3_upload_from(&format!("198.51.100.{client}"), SERVER, port, secs)
    }

    /// Starts an iperf3 upload from address `src` (in the client namespace) to `dst`, once the
    /// server on `port` has closed the previous test's connections (an iperf3 server serves one
    /// test at a time and answers "busy" until then).
    pub fn iperf3_upload_from(&self, src: &str, dst: &str, port: u16, secs: u32) -> Result<Proc> {
        wait_iperf3_idle(&self.srv, port);
        iperf3_client(&self.cl, self.dir.path(), Some(src), dst, port, secs)
    }
}

/// Waits (up to 3 s) until the iperf3 server on `port` in `ns` has closed the previous test's
/// connections: it serves one test at a time and answers "busy" until then.
pub fn wait_iperf3_idle(ns: &Netns, port: u16) {
    let filter = format!("( sport = :{port} )");
    wait_until(Duration::from_secs(3), || {
        ns.exec(
            "ss",
            &[
                "-Htn",
                "state",
                "connected",
                "exclude",
                "time-wait",
                &filter,
            ],
        )
        .is_ok_and(|o| o.trim().is_empty())
    });
}

pub use tollgate::config::examples::gateway_variant as gateway_config;

/// `config` (a gateway config) with `n` more tenants before its own, so its tenants are the
/// last ones: ids 100000.., each with one network, gateway IP and EIP (10.200.x.y) like the
/// example's, and a tunnel peer on a part of the underlay nothing listens on (nothing is ever
/// sent to them: they only make the gateway as big as `n` tenants make it).
///
/// `tollgate apply` makes devices in the order of their names (`tgp1000` < `tgp100000` <
/// ... < `tgp109999` < `tgp2000`), and the kernel's lists of devices (by index, and a
/// macvlan driver's by MAC) are walked newest first: with these ids the example's user1
/// (1000) is made before every filler, the oldest tenant, and user2 (2000) after them all,
/// the newest.
pub fn with_filler_tenants(config: &str, n: u32) -> String {
    let at = config.find("[[tenant]]").unwrap_or(config.len());
    let mut out = String::with_capacity(config.len() + n as usize * 220);
    out.push_str(&config[..at]);
    for i in 0..n {
        let _ = write!(
            out,
            "[[tenant]]\nname = \"filler{i}\"\nid = {}\npeer = \"172.31.{}.{}\"\npeer_mac = \"02:00:ff:{:02x}:{:02x}:07\"\nnetworks = [\"10.0.0.0/24\"]\ngateway_ip = \"10.0.0.1/24\"\neips = {{ \"10.200.{}.{}\" = \"10.0.0.7\" }}\n\n",
            100_000 + i,
            8 + i / 250,
            i % 250 + 1,
            (i >> 8) & 0xff,
            i & 0xff,
            i / 250,
            i % 250 + 1,
        );
    }
    out.push_str(&config[at..]);
    out
}

/// [`gateway_config`] with both tenants' uploads shaped (user1 20 Mbit/s as in the example,
/// user2 50 Mbit/s) and a `[shaper]` section holding only the TAP and its `state_dir`.
pub fn shaped_gateway_config(
    tunnel: &str,
    mode: &str,
    isolation: &str,
    offload: &str,
    state_dir: &Path,
) -> String {
    gateway_config(tunnel, mode, isolation, offload, Some(state_dir)).replace(
        "deny_out = [\"tcp/23\"]",
        "deny_out = [\"tcp/23\"]\nupload = \"50mbit\"",
    ) + &format!(
        "\n[shaper]\ntap = \"tg0\"\nstate_dir = \"{}\"\n",
        state_dir.display()
    )
}

/// Starts `iperf3 -s` in `ns` on `port` (bound to device `dev` when given, e.g. a VRF) and
/// waits until it listens; its log goes to `dir`.
pub fn iperf3_server(ns: &Netns, dir: &Path, port: u16, dev: Option<&str>) -> Result<Proc> {
    let mut c = ns.command("iperf3");
    c.args(["-s", "-p", &port.to_string()]);
    if let Some(d) = dev {
        c.args(["--bind-dev", d]);
    }
    let tag = dev.map(|d| format!("-{d}")).unwrap_or_default();
    let p = Proc::spawn(c, &dir.join(format!("iperf3-s-{port}{tag}.log")))?;
    let listening = wait_until(Duration::from_secs(5), || {
        ns.exec("ss", &["-Htln", &format!("sport = :{port}")])
            .map(|o| !o.trim().is_empty())
            .unwrap_or(false)
    });
    if !listening {
        return Err(LabError::Other(format!(
            "iperf3 server on port {port} did not start"
        )));
    }
    Ok(p)
}

/// Starts an `iperf3 -c dst -p port -t secs -J` upload in `ns` (from `src` when given); its JSON
/// report goes to `dir` (see [`finish_upload`]).
pub fn iperf3_client(
    ns: &Netns,
    dir: &Path,
    src: Option<&str>,
    dst: &str,
    port: u16,
    secs: u32,
) -> Result<Proc> {
    let mut c = ns.command("iperf3");
    c.args([
        "-c",
        dst,
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    if let Some(s) = src {
        c.args(["-B", s]);
    }
    Proc::spawn(
        c,
        &dir.join(format!(
            "iperf3-c-{}-{}-{dst}-{port}.json",
            ns.name(),
            src.unwrap_or("any")
        )),
    )
}

/// The reference gateway topology, in five namespaces:
///
/// ```text
///  cl 198.51.100.7 ── eth-pub [gw] eth-ul ── sw (bridge) ─┬─ t1 172.31.0.11, tunnel key 1000, 10.0.0.7
///     (public)     198.51.100.1    172.31.0.1             └─ t2 172.31.0.12, tunnel key 2000, 10.0.0.7
/// ```
/// The gateway namespace gets only its two uplinks and their addresses: everything else is
/// for `tollgate apply` to build. Tenants' tunnel endpoints use MACs 02:00:00:00:i0:07.
#[derive(Debug)]
pub struct GatewayLab {
    pub cl: Netns,
    pub gw: Netns,
    pub sw: Netns,
    pub t1: Netns,
    pub t2: Netns,
    pub dir: TempDir,
}

impl Drop for GatewayLab {
    /// Deletes the shards a sharded gateway in this lab left (a test that failed part-way, a
    /// benchmark that does not destroy): namespaces named [`GatewayLab::shard_prefix`]`<j>`.
    fn drop(&mut self) {
        for name in self.shards() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

impl GatewayLab {
    /// The `shard_prefix` for a sharded gateway in this lab: unique to the lab, so that
    /// parallel labs never share a shard, and what the lab deletes when dropped.
    pub fn shard_prefix(&self) -> String {
        format!("{}s", self.gw.name())
    }

    /// The shard namespaces that exist for this lab's gateway (`<shard_prefix><number>`).
    pub fn shards(&self) -> std::collections::BTreeSet<String> {
        let prefix = self.shard_prefix();
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect()
    }

    /// `tunnel`: "vxlan" or "gretap", the tenants' side of the tunnels.
    pub fn new(tag: &str, tunnel: &str) -> Result<GatewayLab> {
        let lab = GatewayLab {
            cl: Netns::new(&format!("{tag}cl"))?,
            gw: Netns::new(&format!("{tag}gw"))?,
            sw: Netns::new(&format!("{tag}sw"))?,
            t1: Netns::new(&format!("{tag}ta"))?,
            t2: Netns::new(&format!("{tag}tb"))?,
            dir: TempDir::new(&format!("{tag}d"))?,
        };
        let (cl, gw, sw) = (&lab.cl, &lab.gw, &lab.sw);
        cl.veth("eth0", "eth-pub", gw)?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        sw.veth("p0", "eth-ul", gw)?;
        for (i, t) in [(1, &lab.t1), (2, &lab.t2)] {
            sw.veth(&format!("p{i}"), "ul0", t)?;
        }
        for p in ["p0", "p1", "p2"] {
            sw.ip(&["link", "set", p, "master", "br0", "up"])?;
        }
        cl.ip(&["addr", "add", "198.51.100.7/24", "dev", "eth0"])?;
        cl.ip(&["link", "set", "eth0", "up"])?;
        cl.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.1"])?;
        gw.ip(&["addr", "add", "198.51.100.1/24", "dev", "eth-pub"])?;
        gw.ip(&["link", "set", "eth-pub", "up"])?;
        gw.ip(&["addr", "add", "172.31.0.1/24", "dev", "eth-ul"])?;
        gw.ip(&["link", "set", "eth-ul", "up"])?;
        for (i, t) in [(1, &lab.t1), (2, &lab.t2)] {
            let local = format!("172.31.0.1{i}");
            let key = format!("{i}000");
            let mac = format!("02:00:00:00:{i}0:07");
            t.ip(&["addr", "add", &format!("{local}/24"), "dev", "ul0"])?;
            t.ip(&["link", "set", "ul0", "up"])?;
            match tunnel {
                "gretap" => t.ip(&[
                    "link",
                    "add",
                    "tun0",
                    "address",
                    &mac,
                    "type",
                    "gretap",
                    "local",
                    &local,
                    "remote",
                    "172.31.0.1",
                    "key",
                    &key,
                ])?,
                _ => t.ip(&[
                    "link",
                    "add",
                    "tun0",
                    "address",
                    &mac,
                    "type",
                    "vxlan",
                    "id",
                    &key,
                    "local",
                    &local,
                    "remote",
                    "172.31.0.1",
                    "dstport",
                    "4789",
                    "dev",
                    "ul0",
                ])?,
            };
            t.ip(&["addr", "add", "10.0.0.7/24", "dev", "tun0"])?;
            t.ip(&["link", "set", "tun0", "up"])?;
            t.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
        }
        let gw = &lab.gw;
        let carrier = wait_until(Duration::from_secs(10), || {
            gw.ip(&["-br", "link", "show"])
                .map(|o| {
                    o.lines()
                        .filter(|l| l.starts_with("eth-"))
                        .all(|l| !l.contains("NO-CARRIER"))
                })
                .unwrap_or(false)
        });
        if !carrier {
            return Err(LabError::Other(
                "the gateway's links did not come up".into(),
            ));
        }
        Ok(lab)
    }
}

/// Runs `f` on a thread that has joined namespace `ns`: sockets it makes live there.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path)?;
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::Other(format!(
                "setns {path}: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(f())
    })
}

/// A TCP server in a namespace that answers every connection with `<banner> from <peer>`, then
/// reads (and discards) until the client closes, so a connection can stay established.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

pub fn serve(ns: &str, port: u16, banner: &str) -> Result<Server> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let banner = banner.to_string();
    let s = stop.clone();
    let thread = in_netns(ns, move || {
        let l = match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        if let Err(e) = l.set_nonblocking(true) {
            let _ = tx.send(Err(e.to_string()));
            return;
        }
        let _ = tx.send(Ok(()));
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, peer)) => {
                    let line = format!("{banner} from {}", peer.ip());
                    std::thread::spawn(move || {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                        let _ = writeln!(c, "{line}");
                        let mut buf = [0u8; 65536];
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let server = Server {
        stop,
        thread: Some(thread),
    };
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(server),
        Ok(Err(e)) => Err(LabError::Other(format!("bind {ns}:{port}: {e}"))),
        Err(_) => Err(LabError::Other(format!("server in {ns} did not start"))),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from a namespace and returns the first line the server sends, or why not.
pub fn connect(ns: &str, addr: &str, port: u16) -> std::result::Result<String, String> {
    use std::io::BufRead;
    let addr: std::net::SocketAddr = format!("{addr}:{port}")
        .parse()
        .map_err(|e| format!("{addr}:{port}: {e}"))?;
    let t = in_netns(ns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        std::io::BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    });
    match t.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect thread panicked".into()),
    }
}

/// What an iperf3 upload measured, read from its JSON report.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Receiver-side goodput over the whole run, bits/s.
    pub received_bps: f64,
    /// Sender-side bits/s per reporting interval (1 s).
    pub intervals_bps: Vec<f64>,
    pub retransmits: u64,
}

/// Waits for an upload started with [`UploadLab::iperf3_upload`] and parses its report.
pub fn finish_upload(mut p: Proc, timeout: Duration) -> Result<Upload> {
    match p.wait_timeout(timeout)? {
        Some(_) => {}
        None => return Err(LabError::Other("iperf3 client did not finish".into())),
    }
    parse_iperf3(&p.log_text())
}

pub fn parse_iperf3(json: &str) -> Result<Upload> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| LabError::Other(format!("iperf3 report is not JSON ({e}): {json:.300}")))?;
    if let Some(err) = v.get("error") {
        return Err(LabError::Other(format!("iperf3: {err}")));
    }
    let f = |p: &str| v.pointer(p).and_then(|x| x.as_f64());
    let received_bps = f("/end/sum_received/bits_per_second")
        .ok_or_else(|| LabError::Other("iperf3 report lacks end.sum_received".into()))?;
    let intervals_bps = v
        .pointer("/intervals")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.pointer("/sum/bits_per_second").and_then(|x| x.as_f64()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Upload {
        received_bps,
        intervals_bps,
        retransmits: v
            .pointer("/end/sum_sent/retransmits")
            .and_then(|x| x.as_u64())
            .unwrap_or(0),
    })
}

/// Finds a workspace binary (`tollgate`, `tollgate-shaper`) next to the running executable, or
/// one directory up (test binaries live under `target/*/deps`).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(LabError::Other(format!(
        "{name} not found next to {} (cargo build --workspace)",
        exe.display()
    )))
}

/// (index, name, alias) of every device in `ns` (`ip -j link show`).
fn device_indexes(ns: &Netns) -> Result<Vec<(u64, String, String)>> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link", "show"])?)
        .map_err(|e| LabError::Other(format!("ip -j link show: {e}")))?;
    Ok(v.as_array()
        .ok_or_else(|| LabError::Other("ip -j link show: not an array".into()))?
        .iter()
        .filter_map(|l| {
            Some((
                l["ifindex"].as_u64()?,
                l["ifname"].as_str().unwrap_or_default().to_string(),
                l["ifalias"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect())
}

/// For every device of `ns`, how many devices the kernel walks past before it when it looks it
/// up by index: those in the same list of its index hash (`index & 255`) that were made after
/// it, i.e. (indexes only growing) those with a higher index.
pub fn index_list_walks(ns: &Netns) -> Result<std::collections::HashMap<String, usize>> {
    let mut all = device_indexes(ns)?;
    // newest first, counting each list's devices seen so far
    all.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
    let mut seen = std::collections::HashMap::<u64, usize>::new();
    Ok(all
        .into_iter()
        .map(|(index, name, _)| {
            let list = seen.entry(index % 256).or_default();
            let ahead = *list;
            *list += 1;
            (name, ahead)
        })
        .collect())
}

/// How many of the devices of `ns` that `pick` (given the name) selects each list of the
/// kernel's index hash holds, for the lists that hold any.
pub fn index_list_lengths(ns: &Netns, pick: impl Fn(&str) -> bool) -> Result<Vec<usize>> {
    let mut lists = std::collections::BTreeMap::<u64, usize>::new();
    for (index, name, _) in device_indexes(ns)? {
        if pick(&name) {
            *lists.entry(index % 256).or_default() += 1;
        }
    }
    Ok(lists.into_values().collect())
}

/// `pairs` operator veth pairs in `ns`, in the device-index hash buckets of the next
/// 2 x `pairs` indexes the kernel would hand out: devices made at the kernel's choice after
/// this would share their buckets.
pub fn operator_devices_where_tenants_would_land(ns: &Netns, pairs: u64) -> Result<()> {
    let max = device_indexes(ns)?.iter().map(|l| l.0).max().unwrap_or(1);
    for p in 0..pairs {
        let a = (max + 2 * p + 1 + 256).to_string();
        let b = (max + 2 * p + 2 + 256).to_string();
        let (na, nb) = (format!("opx{p}a"), format!("opx{p}b"));
        ns.ip(&[
            "link", "add", &na, "index", &a, "type", "veth", "peer", "name", &nb, "index", &b,
        ])?;
    }
    Ok(())
}

/// The per-tenant devices of `ns` (the gateway's, recognised by their alias, all but the
/// shared `tgtun`; the shaper's `tgs<id>` macvlans), after checking that none shares a
/// device-index hash bucket with index 0 or with any other device.
pub fn per_tenant_devices_outside_shared_buckets(ns: &Netns) -> Result<Vec<String>> {
    let all = device_indexes(ns)?;
    let per_tenant = |name: &str, alias: &str| {
        (alias.starts_with("tollgate: ") && name != "tgtun")
            || name
                .strip_prefix("tgs")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    };
    let shared: Vec<u64> = std::iter::once(0)
        .chain(
            all.iter()
                .filter(|(_, n, a)| !per_tenant(n, a))
                .map(|l| l.0),
        )
        .collect();
    let buckets: std::collections::BTreeSet<u64> = shared.iter().map(|i| i % 256).collect();
    let mut out = Vec::new();
    for (index, name, _) in all.iter().filter(|(_, n, a)| per_tenant(n, a)) {
        if buckets.contains(&(index % 256)) {
            return Err(LabError::Other(format!(
                "{name} (index {index}) shares a hash bucket with a shared device or index 0: {shared:?}"
            )));
        }
        out.push(name.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        assert_ne!(unique("a"), unique("a"));
    }

    #[test]
    fn parses_iperf3_reports() {
        let j = r#"{"intervals":[{"sum":{"bits_per_second":1.5e7}},{"sum":{"bits_per_second":2e7}}],
                   "end":{"sum_received":{"bits_per_second":1.9e7},"sum_sent":{"retransmits":3}}}"#;
        let u = parse_iperf3(j).unwrap();
        assert_eq!(u.received_bps, 1.9e7);
        assert_eq!(u.intervals_bps, vec![1.5e7, 2e7]);
        assert_eq!(u.retransmits, 3);
        assert!(parse_iperf3(r#"{"error":"unable to connect"}"#).is_err());
        assert!(parse_iperf3("garbage").is_err());
    }
}
