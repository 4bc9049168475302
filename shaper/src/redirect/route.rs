//! Route mode's kernel objects, through the kernel layer's netlink builders: a default route to
//! the TAP in the shaper's table, an `fwmark` rule selecting that table, and the `local` rule
//! moved after it (a rule at priority 0 would otherwise deliver every local packet before ours
//! is consulted).
//!
//! Ownership. Every rule and route we add carries protocol [`RTPROT_SHAPER`], but so do those of
//! another shaper in the same namespace (another TAP), so ours are told apart by more than the
//! label: the route is ours when it is in our table on our TAP, the fwmark rule when it has our
//! mark, table and priority. The moved `local` rule is shared by every route-mode shaper of the
//! namespace: the last one to stop puts the kernel's back at priority 0 (first, so there is
//! never a moment without local delivery) and removes the moved one.
//!
//! Refusals, before anything changes: a table holding any route that is not ours (an
//! operator's, or a running shaper's on another TAP), and a rule of someone else using our mark
//! or table.

use tollgate::config::Ipv4Net;
use tollgate::kernel::model::{RT_TABLE_LOCAL, RTPROT_KERNEL, Route, Rule, RuleAction};
pub use tollgate::kernel::netlink::NetlinkError;
use tollgate::kernel::netlink::{Netlink, RouteAdd, Snapshot};
pub use tollgate::names::RTPROT_SHAPER;

/// Route mode parameters.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub table: u32,
    pub mark: u32,
    pub priority: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0}; nothing was changed")]
    Conflict(String),
}

fn local_rule(priority: u32, proto: u8) -> Rule {
    Rule::all(priority, RuleAction::Lookup(RT_TABLE_LOCAL), proto)
}

fn tap_route(spec: RouteSpec, tap: &str) -> Route {
    Route {
        table: spec.table,
        dst: Ipv4Net::DEFAULT,
        dev: tap.to_string(),
        via: None,
        onlink: false,
        encap: None,
        proto: RTPROT_SHAPER,
    }
}

fn fwmark_rule(spec: RouteSpec) -> Rule {
    let mut r = Rule::all(spec.priority, RuleAction::Lookup(spec.table), RTPROT_SHAPER);
    r.fwmark = Some(spec.mark);
    r
}

fn is_moved_local(r: &Rule) -> bool {
    r.proto == RTPROT_SHAPER && r.is_local_lookup()
}

/// Why the kernel's state keeps us from installing `spec` for `tap` (None: free to install).
/// Pure, so every case is unit-tested. Our own leftovers (a route on our TAP, our exact rule)
/// are not conflicts: [`remove`] clears them first.
pub fn conflict(s: &Snapshot, spec: RouteSpec, tap: &str) -> Option<String> {
    let mine = fwmark_rule(spec);
    if let Some(r) = s
        .routes
        .iter()
        .find(|r| r.table == spec.table && !(r.proto == RTPROT_SHAPER && r.dev == tap))
    {
        return Some(format!(
            "routing table {} is not empty ({r}); it belongs to someone else (another shaper, or the operator): set [shaper] table to a free one",
            spec.table
        ));
    }
    if let Some(r) = s.rules.iter().find(|r| {
        **r != mine && (r.fwmark == Some(spec.mark) || r.action == RuleAction::Lookup(spec.table))
    }) {
        return Some(format!(
            "{r} already uses mark {:#x} or table {}: set [shaper] mark and table to free ones",
            spec.mark, spec.table
        ));
    }
    if let Some(r) = s
        .rules
        .iter()
        .find(|r| is_moved_local(r) && r.priority <= spec.priority)
    {
        return Some(format!(
            "another shaper moved the local rule to {r}, before rule_priority {}: use a rule_priority below {}",
            spec.priority, r.priority
        ));
    }
    None
}

/// Installs route, local-rule move and fwmark rule for the TAP `tap`; refuses (changing
/// nothing) when [`conflict`] finds a reason.
pub fn install(spec: RouteSpec, tap: &str) -> Result<(), RouteError> {
    let nl = Netlink::new()?;
    let s = nl.snapshot()?;
    if let Some(why) = conflict(&s, spec, tap) {
        return Err(RouteError::Conflict(why));
    }
    nl.route_add(&tap_route(spec, tap), RouteAdd::Create)?;
    let kernel_local_first: Vec<&Rule> = s
        .rules
        .iter()
        .filter(|r| r.is_local_lookup() && !is_moved_local(r) && r.priority <= spec.priority)
        .collect();
    let moved_exists = s.rules.iter().any(is_moved_local);
    if !kernel_local_first.is_empty() {
        if !moved_exists {
            nl.rule_add(&local_rule(spec.priority + 1, RTPROT_SHAPER))?;
        }
        for r in kernel_local_first {
            nl.rule_delete(r)?;
        }
    }
    nl.rule_add(&fwmark_rule(spec))?;
    Ok(())
}

/// Removes our rule and our route (in `spec.table` on `tap`); if no other shaper's fwmark rule
/// is left, puts the kernel's `local` rule back at priority 0 and removes the moved one. Safe to
/// call when nothing is installed, and when a running shaper on another TAP uses the same
/// table and mark (its route in the table says so): then the rule is its, and stays.
pub fn remove(spec: RouteSpec, tap: &str) -> Result<(), NetlinkError> {
    let nl = Netlink::new()?;
    let s = nl.snapshot()?;
    let live_elsewhere = s
        .routes
        .iter()
        .any(|r| r.table == spec.table && r.dev != tap && !r.dev.is_empty());
    let mine = (!live_elsewhere).then(|| fwmark_rule(spec));
    let others_left = s
        .rules
        .iter()
        .any(|r| r.proto == RTPROT_SHAPER && r.fwmark.is_some() && Some(r) != mine.as_ref());
    let moved: Vec<&Rule> = s.rules.iter().filter(|r| is_moved_local(r)).collect();
    let kernel_local_at_0 = s
        .rules
        .iter()
        .any(|r| r.is_local_lookup() && !is_moved_local(r) && r.priority == 0);
    if !others_left && !moved.is_empty() && !kernel_local_at_0 {
        nl.rule_add(&local_rule(0, RTPROT_KERNEL))?;
    }
    for r in s.rules.iter().filter(|r| Some(*r) == mine.as_ref()) {
        nl.rule_delete(r)?;
    }
    if !others_left {
        for r in moved {
            nl.rule_delete(r)?;
        }
    }
    for r in s
        .routes
        .iter()
        .filter(|r| r.table == spec.table && r.proto == RTPROT_SHAPER && r.dev == tap)
    {
        nl.route_delete(r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::kernel::model::RT_TABLE_MAIN;

    const SPEC: RouteSpec = RouteSpec {
        table: 7468,
        mark: 0x7467,
        priority: 1,
    };

    fn kernel_rules() -> Vec<Rule> {
        vec![
            local_rule(0, RTPROT_KERNEL),
            Rule::all(32766, RuleAction::Lookup(RT_TABLE_MAIN), RTPROT_KERNEL),
        ]
    }

    #[test]
    fn a_fresh_namespace_is_free() {
        let s = Snapshot {
            rules: kernel_rules(),
            ..Snapshot::default()
        };
        assert_eq!(conflict(&s, SPEC, "tg0"), None);
    }

    #[test]
    fn our_own_leftovers_are_not_conflicts() {
        let mut rules = kernel_rules();
        rules.push(fwmark_rule(SPEC));
        let s = Snapshot {
            rules,
            routes: vec![tap_route(SPEC, "tg0")],
            ..Snapshot::default()
        };
        assert_eq!(conflict(&s, SPEC, "tg0"), None);
    }

    #[test]
    fn a_foreign_route_in_the_table_is_refused() {
        let mut operators = tap_route(SPEC, "eth0");
        operators.proto = 4; // static
        let s = Snapshot {
            rules: kernel_rules(),
            routes: vec![operators],
            ..Snapshot::default()
        };
        let why = conflict(&s, SPEC, "tg0").unwrap();
        assert!(why.contains("table 7468") && why.contains("eth0"), "{why}");
        // another shaper's route (same protocol, another TAP) too
        let s = Snapshot {
            rules: kernel_rules(),
            routes: vec![tap_route(SPEC, "tg1")],
            ..Snapshot::default()
        };
        assert!(conflict(&s, SPEC, "tg0").unwrap().contains("tg1"));
    }

    #[test]
    fn a_rule_using_our_mark_or_table_is_refused() {
        let mut rules = kernel_rules();
        let mut other = Rule::all(100, RuleAction::Lookup(7468), 4);
        other.iif = Some("eth0".into());
        rules.push(other);
        let s = Snapshot {
            rules,
            ..Snapshot::default()
        };
        assert!(conflict(&s, SPEC, "tg0").unwrap().contains("table 7468"));
    }

    #[test]
    fn a_moved_local_rule_before_ours_is_refused() {
        let mut rules = vec![local_rule(2, RTPROT_SHAPER)];
        let mut first = fwmark_rule(SPEC);
        first.fwmark = Some(0x9999);
        first.action = RuleAction::Lookup(9999);
        rules.push(first);
        let s = Snapshot {
            rules,
            ..Snapshot::default()
        };
        let later = RouteSpec {
            priority: 5,
            ..SPEC
        };
        assert!(conflict(&s, later, "tg0").unwrap().contains("below 2"));
        assert_eq!(conflict(&s, SPEC, "tg0"), None, "priority 1 is before it");
    }
}
