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

#[allow(unused_imports)]
pub use tollgate::lab::{connect, in_netns, serve};

/// Runs the `tollgate` CLI inside a namespace.
pub fn tollgate(ns: &tollgate::lab::Netns, args: &[&str]) -> std::process::Output {
    ns.command(tollgate_bin())
        .args(args)
        .output()
        .expect("running tollgate")
}
