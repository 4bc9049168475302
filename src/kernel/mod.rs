//! The only place tollgate talks to the kernel. Everything above it (the gateway's desired
//! state and planner, the shaper's classifier and scheduler) is pure and tested without root;
//! everything here is a thin, typed shell around one kernel interface each:
//!
//! - [`netlink`]: links, addresses, routes, rules, neighbours (one connection, one builder per
//!   object, and a pure decoder from messages to [`model`]);
//! - [`nft`]: rulesets in one atomic transaction, tables listed as JSON;
//! - [`nft_dump`]: a table's rule counters and flowtables read by netlink (fast at any size);
//! - [`netns`]: named network namespaces, and work done inside one;
//! - [`sysctl`]: values by dotted key, and the journal of changes to restore;
//! - [`state`]: atomic state files and locks, never following symbolic links;
//! - [`tap`]: the TAP device with vnet headers and offloads;
//! - [`conntrack`]: the count of offloaded flows, for `show`;
//! - [`caps`]: giving up capabilities once set up.

pub mod caps;
pub mod conntrack;
pub mod ifindex;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod nft_dump;
pub mod state;
pub mod sysctl;
pub mod tap;

/// True when a network device of that name exists in this network namespace.
pub fn device_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}
