//! The systemd units in dist/: `systemd-analyze verify` finds nothing to say about them, and
//! `systemd-analyze security` rates each "OK" or better. Needs no root; skipped (with a
//! message) where systemd-analyze is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["tollgate-shaper.service", "tollgate-gateway.service"];

fn analyze_available() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The units with their binaries pointed at this build (verify checks they are executable).
fn units_here(dir: &Path) -> Vec<PathBuf> {
    let bin = common::tollgate_bin();
    let bindir = bin.parent().expect("target dir");
    UNITS
        .iter()
        .map(|u| {
            let text =
                std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dist").join(u))
                    .expect("unit");
            // both binaries live in the same target directory; the shaper's may not be built
            // by this package's tests, so each ExecStart* names one that is
            let text = text
                .replace("/usr/local/bin/tollgate-shaper", &bin.display().to_string())
                .replace("/usr/local/bin/", &format!("{}/", bindir.display()));
            let path = dir.join(u);
            std::fs::write(&path, text).expect("write unit");
            path
        })
        .collect()
}

#[test]
fn units_verify_cleanly() {
    if !analyze_available() {
        eprintln!("skipped units_verify_cleanly: systemd-analyze is not installed");
        return;
    }
    let dir = lab::TempDir::new("units").expect("tempdir");
    for unit in units_here(dir.path()) {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze verify");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", unit.display());
        // unknown keys are only warnings: a unit that verifies says nothing at all
        let unit_name = unit
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let own: Vec<&str> = err.lines().filter(|l| l.contains(&unit_name)).collect();
        assert!(own.is_empty(), "{unit_name}: {own:?}");
    }
}

#[test]
fn units_are_confined() {
    if !analyze_available() {
        eprintln!("skipped units_are_confined: systemd-analyze is not installed");
        return;
    }
    let dir = lab::TempDir::new("units-sec").expect("tempdir");
    for unit in units_here(dir.path()) {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no rating for {}: {text}", unit.display()));
        eprintln!("{overall}");
        let score: f64 = overall
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("a score");
        assert!(
            ["PERFECT", "SAFE", "OK"]
                .iter()
                .any(|l| overall.contains(&format!(" {l}"))),
            "{overall}"
        );
        assert!(score < 4.0, "{overall}");
    }
}
