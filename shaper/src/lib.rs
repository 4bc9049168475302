//! tollgate-shaper: userspace IMQ. Tenant ingress bound for local services is redirected into a
//! TAP; this crate reads it back, queues it per tenant behind a byte token bucket and writes it
//! back for local delivery. See docs/shaper.md for the packet path.
//!
//! Pure core (no I/O, unit-tested with a fake clock): [`vnet`], [`classify`], [`segment`], [`bucket`],
//! [`fq`], [`sched`], [`reload`] (what a reload changes). I/O shell (on the kernel layer of the `tollgate` crate): [`redirect`], [`sysctl`], [`state`],
//! [`pool`], [`stats`], [`metrics`], [`daemon`].

pub mod bucket;
pub mod classify;
pub mod daemon;
pub mod fq;
pub mod metrics;
pub mod pool;
pub mod redirect;
pub mod reload;
pub mod sched;
pub mod segment;
pub mod state;
pub mod stats;
pub mod sysctl;
pub mod vnet;
