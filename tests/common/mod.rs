//! Shared harness for the namespace integration tests.
//!
//! Every test calls [`lab`] first: without root or the tools it prints why and the test
//! returns early (skipped), so a plain `cargo test` passes anywhere. With them, tests in one
//! binary run one at a time (a process-wide lock): they measure rates, and two at once on two
//! cores would measure each other. Namespaces, TAPs and temp dirs are unique per test and are
//! removed on drop, also when the test fails.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tollgate::lab::{self, Proc, UploadLab};

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

/// The `tollgate-shaper` binary of this build profile, built once per test binary.
pub fn shaper_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut c = Command::new(env!("CARGO"));
        c.args([
            "build",
            "-q",
            "-p",
            "tollgate-shaper",
            "--bin",
            "tollgate-shaper",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            c.arg("--release");
        }
        let st = c.status().expect("running cargo build");
        assert!(st.success(), "building tollgate-shaper failed");
        lab::shaper_binary().expect("tollgate-shaper built")
    })
    .clone()
}

/// The `tollgate` CLI binary (same package as the tests, so cargo built it).
pub fn tollgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
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

/// Starts the shaper in the server namespace and waits until it is shaping.
pub fn start_shaper(lab: &UploadLab, config: &str, log: &str) -> Proc {
    let path = lab.dir.path().join("tollgate.toml");
    std::fs::write(&path, config).expect("writing config");
    let mut c = lab.srv.command(shaper_bin());
    c.arg("--config").arg(&path).env("RUST_LOG", "info");
    let mut p = Proc::spawn(c, &lab.dir.path().join(log)).expect("spawning shaper");
    let ready = lab::wait_until(Duration::from_secs(10), || {
        p.log_text().contains("shaping") || matches!(p.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        ready && p.log_text().contains("shaping"),
        "shaper did not start:\n{}",
        p.log_text()
    );
    let _ = p.wait_timeout(Duration::ZERO);
    p
}

/// Sends SIGTERM and asserts a clean exit 0.
pub fn stop_shaper(mut p: Proc) {
    p.signal(libc::SIGTERM);
    let st = p
        .wait_timeout(Duration::from_secs(10))
        .expect("waiting for shaper");
    let st = st.unwrap_or_else(|| panic!("shaper ignored SIGTERM:\n{}", p.log_text()));
    assert!(st.success(), "shaper exited {st}:\n{}", p.log_text());
}

/// The shaper's live counters (the stats file it rewrites every second).
pub fn stats(lab: &UploadLab) -> serde_json::Value {
    let dir = lab.dir.path().join("state");
    let file = std::fs::read_dir(&dir)
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

/// Runs `f` on a thread that has joined namespace `ns`: sockets it makes live there.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A TCP server in a namespace that answers every connection with `<banner> from <peer>`, then
/// reads (and discards) until the client closes, so a connection can stay established.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn serve(ns: &str, port: u16, banner: &str) -> Server {
    use std::io::Write;
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
        l.set_nonblocking(true).expect("nonblocking");
        let _ = tx.send(Ok(()));
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, peer)) => {
                    let line = format!("{banner} from {}", peer.ip());
                    std::thread::spawn(move || {
                        use std::io::Read;
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
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server thread")
        .unwrap_or_else(|e| panic!("bind {ns}:{port}: {e}"));
    Server {
        stop,
        thread: Some(thread),
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
pub fn connect(ns: &str, addr: &str, port: u16) -> Result<String, String> {
    use std::io::BufRead;
    let addr: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("address");
    in_netns(ns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        std::io::BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    })
    .join()
    .expect("connect thread")
}

/// Runs the `tollgate` CLI inside a namespace.
pub fn tollgate(ns: &tollgate::lab::Netns, args: &[&str]) -> std::process::Output {
    ns.command(tollgate_bin())
        .args(args)
        .output()
        .expect("running tollgate")
}
