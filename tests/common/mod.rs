//! The namespace harness (the `tollgate-lab` crate), bound to this package's `tollgate` binary.
#![allow(dead_code, unused_imports)]

pub use lab::harness::*;
pub use lab::{connect, in_netns, serve};
use std::path::PathBuf;

/// The `tollgate` CLI binary (same package as the tests, so cargo built it).
pub fn tollgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}

/// Runs the `tollgate` CLI inside a namespace.
pub fn tollgate(ns: &lab::Netns, args: &[&str]) -> std::process::Output {
    lab::harness::tollgate(&tollgate_bin(), ns, args)
}

/// Runs the `tollgate` CLI in a namespace's network, keeping this process's mounts (a sharded
/// gateway's shard namespaces must outlive the command).
pub fn tollgate_shared_mounts(ns: &lab::Netns, args: &[&str]) -> std::process::Output {
    lab::harness::tollgate_shared_mounts(&tollgate_bin(), ns, args)
}
