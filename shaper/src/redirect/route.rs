//! Route mode's kernel objects, through the kernel layer's netlink builders: a default route to
//! the TAP in the shaper's table, an `fwmark` rule selecting that table, and the `local` rule
//! moved after it (a rule at priority 0 would otherwise deliver every local packet before ours
//! is consulted).
//!
//! Every rule and route we add carries protocol [`RTPROT_SHAPER`]: that is how a restart after
//! SIGKILL finds the stale ones, and how stop removes exactly ours. A `lookup local` rule with
//! our protocol means we moved the kernel's: undoing puts one back at priority 0 first, so
//! there is never a moment without local delivery.

use tollgate::config::Ipv4Net;
use tollgate::kernel::model::{RT_TABLE_LOCAL, RTPROT_KERNEL, Route, Rule, RuleAction};
pub use tollgate::kernel::netlink::NetlinkError;
use tollgate::kernel::netlink::{Netlink, RouteAdd};
pub use tollgate::names::RTPROT_SHAPER;

/// Route mode parameters.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub table: u32,
    pub mark: u32,
    pub priority: u32,
}

fn local_rule(priority: u32, proto: u8) -> Rule {
    Rule::all(priority, RuleAction::Lookup(RT_TABLE_LOCAL), proto)
}

/// Installs route, local-rule move and fwmark rule for the TAP `tap`.
pub fn install(spec: RouteSpec, tap: &str) -> Result<(), NetlinkError> {
    let nl = Netlink::new()?;
    nl.route_add(
        &Route {
            table: spec.table,
            dst: Ipv4Net::DEFAULT,
            dev: tap.to_string(),
            via: None,
            onlink: false,
            encap: None,
            proto: RTPROT_SHAPER,
        },
        RouteAdd::Replace,
    )?;
    let local_first: Vec<Rule> = nl
        .snapshot()?
        .rules
        .into_iter()
        .filter(|r| r.is_local_lookup() && r.priority <= spec.priority)
        .collect();
    if !local_first.is_empty() {
        nl.rule_add(&local_rule(spec.priority + 1, RTPROT_SHAPER))?;
        for r in &local_first {
            nl.rule_delete(r)?;
        }
    }
    let mut rule = Rule::all(spec.priority, RuleAction::Lookup(spec.table), RTPROT_SHAPER);
    rule.fwmark = Some(spec.mark);
    nl.rule_add(&rule)
}

/// Removes every rule and route of ours (in `table`), putting the kernel's `local` rule back at
/// priority 0 first if we had moved it. Safe to call when nothing is installed.
pub fn remove(table: u32) -> Result<(), NetlinkError> {
    let nl = Netlink::new()?;
    let s = nl.snapshot()?;
    let ours = |p: u8| p == RTPROT_SHAPER;
    let moved_local = s.rules.iter().any(|r| ours(r.proto) && r.is_local_lookup());
    let has_kernel_local = s
        .rules
        .iter()
        .any(|r| !ours(r.proto) && r.is_local_lookup() && r.priority == 0);
    if moved_local && !has_kernel_local {
        nl.rule_add(&local_rule(0, RTPROT_KERNEL))?;
    }
    for r in s.rules.iter().filter(|r| ours(r.proto)) {
        nl.rule_delete(r)?;
    }
    for r in s
        .routes
        .iter()
        .filter(|r| r.table == table && ours(r.proto))
    {
        nl.route_delete(r)?;
    }
    Ok(())
}
