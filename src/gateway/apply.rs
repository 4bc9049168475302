//! Carrying out a plan: one netlink request per object and one nft transaction, in the plan's
//! order except that a new VRF's entry devices are made (down) before it
//! ([`super::creation_order`]), and rollback of this run's creations, newest first, when a
//! step fails. Sysctls go through the namespace's shared journal (held as `gateway`), so a
//! shaper in the same namespace that needs the same value keeps it when the gateway is
//! destroyed, and the other way round.

use super::creation_order::{self, Step};
use super::plan::{Change, Extra};
use super::{GatewayError, Prepared, desired, gateway, nft, observe, plan, read_sysctls};
use crate::config::{Config, GatewayConfig};
use crate::kernel::ifindex::{self, IndexChooser};
use crate::kernel::model::{self, Link, LinkKind};
use crate::kernel::netlink::{Netlink, RouteAdd};
use crate::kernel::state::{self, Lock};
use crate::kernel::sysctl::{self, Journal};
use crate::names::{self, RUN_DIR};
use std::path::{Path, PathBuf};

/// The holder name of the gateway in the sysctl journal.
pub const HOLDER: &str = "gateway";

/// What apply records for destroy: whether the l3mdev rule predates us.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub l3mdev_rule_preexisting: Option<bool>,
}

fn journal() -> Result<Journal, GatewayError> {
    Journal::for_this_netns(Path::new(RUN_DIR)).map_err(|err| GatewayError::Io {
        what: "reading /proc/self/ns/net".into(),
        err,
    })
}

fn state_path(gw: &GatewayConfig) -> Result<PathBuf, GatewayError> {
    let ino = state::netns_inode().map_err(|err| GatewayError::Io {
        what: "reading /proc/self/ns/net".into(),
        err,
    })?;
    Ok(gw.state_dir.join(format!("gateway-{ino}.json")))
}

/// An exclusive lock on this network namespace's gateway, held while apply or destroy runs, so
/// two runs never interleave their changes. Released when dropped (or when the process dies).
pub fn lock() -> Result<Lock, GatewayError> {
    let ino = state::netns_inode().map_err(|err| GatewayError::Io {
        what: "reading /proc/self/ns/net".into(),
        err,
    })?;
    // one place for every config, whatever its `state_dir`, so two applies with different
    // state directories still exclude each other
    let path = PathBuf::from(RUN_DIR).join(format!("gateway-netns-{ino}.lock"));
    Ok(Lock::acquire(&path)?)
}

fn load_state(path: &std::path::Path) -> Result<State, GatewayError> {
    Ok(state::load(path)?.unwrap_or_default())
}

/// A VRF-entry macvlan's own settings ([`sysctl::macvlan_keys`]), before it comes up.
fn link_settings(link: &Link, name: &str) -> std::io::Result<()> {
    if !matches!(link.kind, LinkKind::Macvlan { .. }) {
        return Ok(());
    }
    sysctl::macvlan_keys(name)
        .iter()
        .try_for_each(|(k, v)| sysctl::write(k, v))
}

/// Creates `link`: a per-tenant device at an index `indexes` chooses, a shared one (the
/// external tunnel device) where the kernel puts it, its bucket then closed to tenants.
fn create_link(
    nl: &Netlink,
    link: &Link,
    indexes: &mut Option<IndexChooser>,
) -> Result<(), GatewayError> {
    add_link_down(nl, link, indexes)?;
    finish_link(nl, link)
}

/// The first half of [`create_link`]: the device, down and enslaved to nothing.
fn add_link_down(
    nl: &Netlink,
    link: &Link,
    indexes: &mut Option<IndexChooser>,
) -> Result<(), GatewayError> {
    let per_tenant = link.name != names::EXTERNAL_DEV;
    let index = match indexes.as_mut() {
        Some(c) if per_tenant => c.choose(),
        _ => None,
    };
    nl.link_add_down(link, index)?;
    if !per_tenant && let Some(c) = indexes.as_mut() {
        c.share(nl.link_index(&link.name)?);
    }
    Ok(())
}

/// The second half of [`create_link`]: enslaved, configured, up.
fn finish_link(nl: &Netlink, link: &Link) -> Result<(), GatewayError> {
    Ok(nl.link_finish(link, |n| link_settings(link, n))?)
}

/// What [`apply`] carries along while executing changes.
struct Executor<'a> {
    nl: &'a Netlink,
    desired: &'a desired::Desired,
    /// None while destroying (nothing is created then).
    indexes: Option<IndexChooser>,
}

fn execute(x: &mut Executor, c: &Change) -> Result<(), GatewayError> {
    let (nl, d) = (x.nl, x.desired);
    match c {
        // held and released through the journal (apply, destroy), not one by one
        Change::Sysctl { .. } | Change::RestoreSysctl { .. } => {}
        Change::CreateLink { link } => create_link(nl, link, &mut x.indexes)?,
        Change::RecreateLink { link, .. } => {
            nl.link_delete(&link.name)?;
            create_link(nl, link, &mut x.indexes)?;
        }
        Change::SetMaster { link, master } => nl.link_set_master(link, master.as_deref())?,
        Change::SetUp { link } => nl.link_set_up(link)?,
        Change::AddAddress { address } => nl.addr_add(address)?,
        Change::AddNeigh { neigh } => nl.neigh_add(neigh)?,
        Change::AddRoute { route } => nl.route_add(route, RouteAdd::Replace)?,
        Change::AddRule { rule } => nl.rule_add(rule)?,
        Change::Ruleset { .. } => nft::apply(&d.ruleset)?,
        Change::DeleteRule { rule } => nl.rule_delete(rule)?,
        Change::DeleteRoute { route } => nl.route_delete(route)?,
        Change::DeleteNeigh { neigh } => nl.neigh_delete(neigh)?,
        Change::DeleteAddress { address } => nl.addr_delete(address)?,
        Change::DeleteLink { link } => nl.link_delete(link)?,
        Change::DeleteRuleset => nft::delete()?,
        Change::DeleteL3mdevRule => {
            for r in nl.snapshot()?.rules.iter().filter(|r| r.l3mdev) {
                nl.rule_delete(r)?;
            }
        }
    }
    Ok(())
}

/// The inverse of a change that created something (for rollback); None for others.
fn undo(c: &Change) -> Option<Change> {
    Some(match c {
        Change::Sysctl { key, from, .. } => Change::RestoreSysctl {
            key: key.clone(),
            to: from.clone(),
        },
        Change::CreateLink { link } => Change::DeleteLink {
            link: link.name.clone(),
        },
        Change::AddAddress { address } => Change::DeleteAddress {
            address: address.clone(),
        },
        Change::AddNeigh { neigh } => Change::DeleteNeigh {
            neigh: neigh.clone(),
        },
        Change::AddRoute { route } => Change::DeleteRoute {
            route: route.clone(),
        },
        Change::AddRule { rule } => Change::DeleteRule { rule: rule.clone() },
        Change::Ruleset { replace: false, .. } => Change::DeleteRuleset,
        _ => return None,
    })
}

/// How a step reads in an error: the planned change it carries out, or the half of it.
fn step_name(step: &Step) -> String {
    match step {
        Step::Change(c) => c.to_string(),
        Step::AddDown(l) => format!("create {} (down)", l.name),
        Step::Finish(l) => format!("finish creating {l}"),
    }
}

/// Carries out a prepared plan. On failure, undoes what this run created, newest first.
pub fn apply(config: &Config, p: &Prepared) -> Result<(), GatewayError> {
    let gw = gateway(config)?;
    if p.changes.is_empty() {
        return Ok(());
    }
    let path = state_path(gw)?;
    let mut state = load_state(&path)?;
    if state.l3mdev_rule_preexisting.is_none() {
        state.l3mdev_rule_preexisting = Some(p.observed.l3mdev_rule);
    }
    state::save(&path, &state)?;
    let journal = journal()?;
    let was_holding = !journal.held_by(HOLDER)?.is_empty();
    let wants: Vec<(String, String)> = p
        .desired
        .sysctls
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect();
    journal.hold(HOLDER, &wants)?;
    let nl = Netlink::new()?;
    let mut x = Executor {
        nl: &nl,
        desired: &p.desired,
        indexes: Some(ifindex::chooser_for(&p.snapshot.links)),
    };
    // what undoes the steps carried out so far, in order
    let mut done: Vec<Change> = Vec::new();
    // the kernel adds its l3mdev rule with the first VRF, and keeps it when the VRFs go
    let mut l3mdev_rule = p.observed.l3mdev_rule;
    for step in creation_order::schedule(&p.changes) {
        let result = match step {
            Step::Change(c) => execute(&mut x, c),
            Step::AddDown(link) => add_link_down(&nl, link, &mut x.indexes),
            Step::Finish(link) => finish_link(&nl, link),
        };
        if let Err(e) = result {
            let mut undone = 0;
            for u in done.iter().rev() {
                match execute(&mut x, u) {
                    Ok(()) => undone += 1,
                    Err(e2) => tracing::error!("undoing with `{u}`: {e2}"),
                }
            }
            if !was_holding && let Err(e2) = journal.release(HOLDER) {
                tracing::error!("restoring sysctls: {e2}");
            }
            return Err(GatewayError::Applied {
                failed: format!("`{}` failed: {e}", step_name(&step)),
                undone,
            });
        }
        match step {
            Step::Change(c) => {
                if matches!(c, Change::CreateLink { link } if link.is_vrf()) && !l3mdev_rule {
                    l3mdev_rule = true;
                    done.push(Change::DeleteL3mdevRule);
                }
                done.extend(undo(c));
            }
            Step::AddDown(link) => done.push(Change::DeleteLink {
                link: link.name.clone(),
            }),
            // undone with its first half
            Step::Finish(_) => {}
        }
    }
    Ok(())
}

/// Plans the removal of everything tollgate made (no kernel probing needed).
pub fn plan_destroy(config: &Config) -> Result<Vec<Change>, GatewayError> {
    let gw = gateway(config)?;
    let nl = Netlink::new()?;
    let observed = observe::observe(&nl.snapshot()?);
    let state = load_state(&state_path(gw)?)?;
    let restore: Vec<(String, String)> = journal()?
        .held_only_by(HOLDER)?
        .into_iter()
        .map(|e| (e.key, e.original))
        .collect();
    let d = desired::Desired {
        sysctls: restore
            .iter()
            .map(|(k, v)| model::Sysctl {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    };
    let extra = Extra {
        sysctls: read_sysctls(&d)?,
        ruleset_digest: nft::marker()?,
    };
    Ok(plan::destroy(
        &observed,
        &extra,
        &restore,
        state.l3mdev_rule_preexisting.unwrap_or(true),
    ))
}

/// Runs every change in order even when some fail; returns the failures, in order, each
/// naming its change.
fn run_all(
    changes: &[Change],
    mut exec: impl FnMut(&Change) -> Result<(), GatewayError>,
) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| exec(c).err().map(|e| format!("`{c}`: {e}")))
        .collect()
}

/// True when the error says the object is already gone (removed with its device, or by hand):
/// for destroy, that is success.
fn already_gone(e: &GatewayError) -> bool {
    match e {
        GatewayError::Netlink(n) => {
            matches!(n, crate::kernel::netlink::NetlinkError::NoDevice(_))
                || matches!(n.errno(), Some(libc::ENOENT | libc::ESRCH | libc::ENODEV))
        }
        _ => false,
    }
}

/// Removes everything tollgate made, and the state file. A failing step does not stop the
/// others: everything that can be removed is, and every failure is reported (the state file
/// stays then, so a second destroy tries again).
pub fn destroy(config: &Config, changes: &[Change]) -> Result<(), GatewayError> {
    let gw = gateway(config)?;
    let nl = Netlink::new()?;
    let empty = desired::Desired::default();
    let mut x = Executor {
        nl: &nl,
        desired: &empty,
        indexes: None,
    };
    let mut failed = run_all(changes, |c| match execute(&mut x, c) {
        Err(e) if already_gone(&e) => Ok(()),
        r => r,
    });
    if let Err(e) = journal().and_then(|j| j.release(HOLDER).map_err(GatewayError::from)) {
        failed.push(format!("restoring sysctls: {e}"));
    }
    if !failed.is_empty() {
        return Err(GatewayError::Destroyed {
            total: changes.len(),
            failed,
        });
    }
    state::remove(&state_path(gw)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroy_carries_on_past_failures_and_reports_each() {
        let changes: Vec<Change> = ["tgv1", "tgv2", "tgv3", "tgv4"]
            .iter()
            .map(|l| Change::DeleteLink {
                link: l.to_string(),
            })
            .collect();
        let mut ran = Vec::new();
        let failed = run_all(&changes, |c| {
            ran.push(c.to_string());
            match c {
                Change::DeleteLink { link } if link == "tgv2" || link == "tgv4" => {
                    Err(GatewayError::Probe(format!("{link} is busy")))
                }
                _ => Ok(()),
            }
        });
        assert_eq!(ran.len(), 4, "every change ran: {ran:?}");
        assert_eq!(failed.len(), 2);
        assert!(
            failed[0].contains("tgv2") && failed[0].contains("busy"),
            "{failed:?}"
        );
        assert!(failed[1].contains("tgv4"), "{failed:?}");
        let e = GatewayError::Destroyed { total: 4, failed };
        let text = e.to_string();
        assert!(
            text.contains("2 of 4") && text.lines().count() >= 3,
            "{text}"
        );
    }

    #[test]
    fn objects_already_gone_count_as_removed() {
        assert!(already_gone(&GatewayError::Netlink(
            crate::kernel::netlink::NetlinkError::NoDevice("tgv1".into())
        )));
        assert!(!already_gone(&GatewayError::Probe("x".into())));
    }
}
