//! tollgate: a multi-tenant Linux gateway's control plane, and the config model that the
//! `tollgate-shaper` dataplane daemon reads too.
//!
//! - [`config`]: the declarative file (tenants, shaper, units) and its validation.
//! - [`lab`]: network-namespace helpers used by the demo, the integration tests and benchmarks.

pub mod config;
pub mod gateway;
pub mod lab;
