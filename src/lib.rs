//! tollgate: a multi-tenant Linux gateway's control plane, and the config model that the
//! `tollgate-shaper` dataplane daemon reads too.
//!
//! - [`config`]: the declarative file (tenants, shaper, units) and its validation.
//! - [`lab`]: network-namespace helpers used by the demo, the integration tests and benchmarks.
//! - [`gateway`]: the gateway control plane (plan, apply, show, destroy).
//! - [`nft`]: running the `nft` command with its errors captured.
//! - [`sysctl`]: sysctls by dotted name.

pub mod config;
pub mod gateway;
pub mod lab;
pub mod nft;
pub mod sysctl;
