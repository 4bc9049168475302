//! The namespace harness (the `tollgate-lab` crate), bound to this package's shaper binary.
#![allow(dead_code, unused_imports)]

pub use lab::harness::*;
pub use lab::in_netns;
use lab::{Proc, UploadLab};
use std::path::PathBuf;

/// The `tollgate-shaper` binary (same package as the tests, so cargo built it).
pub fn shaper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-shaper"))
}

/// Starts the shaper in the server namespace and waits until it is shaping.
pub fn start_shaper(lab: &UploadLab, config: &str, log: &str) -> Proc {
    lab::harness::start_shaper(&shaper_bin(), lab, config, log)
}

/// The `tollgate` CLI of this build profile (another package: built once per test binary).
pub fn tollgate_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let bin = shaper_bin().parent().expect("target dir").join("tollgate");
        if std::env::var_os("TOLLGATE_IN_VM").is_some() {
            return bin; // no toolchain in the guest: built by the host test before booting
        }
        let mut c = std::process::Command::new(env!("CARGO"));
        c.args(["build", "-q", "-p", "tollgate", "--bin", "tollgate"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            c.arg("--release");
        }
        let st = c.status().expect("running cargo build");
        assert!(st.success(), "building tollgate failed");
        shaper_bin().parent().expect("target dir").join("tollgate")
    })
    .clone()
}
