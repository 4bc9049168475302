//! Shared harness for the namespace integration tests of both crates.
//!
//! Every test calls [`lab`] first: without root or the tools it prints why and the test
//! returns early (skipped), so a plain `cargo test` passes anywhere. With them, tests in one
//! binary run one at a time (a process-wide lock): they measure rates, and two at once on two
//! cores would measure each other. Namespaces, TAPs and temp dirs are unique per test and are
//! removed on drop, also when the test fails.

use crate::{self as lab, Netns, Proc, UploadLab};
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
    let mut c = lab.srv.command(bin);
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

/// Runs the `tollgate` CLI `bin` inside a namespace.
pub fn tollgate(bin: &Path, ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.command(bin)
        .args(args)
        .output()
        .expect("running tollgate")
}
