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
