//! tollgate: a multi-tenant Linux gateway's control plane, and the config model and kernel layer
//! that the `tollgate-shaper` dataplane daemon shares with it.
//!
//! - [`config`]: the declarative file (tenants, shaper, units) and its validation.
//! - [`names`]: every kernel name, derived from a tenant's unique id.
//! - [`kernel`]: the only code that talks to the kernel (netlink, nft, sysctl, state, TAP).
//! - [`gateway`]: the gateway control plane (plan, apply, show, destroy).
//! - [`cli`]: logging and exit codes shared by the binaries.
//! - [`status`]: the shaper's live per-tenant counters, for `tollgate status`.

pub mod cli;
pub mod config;
pub mod gateway;
pub mod kernel;
pub mod names;
pub mod status;
