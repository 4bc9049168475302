//! Carrying out a plan: one netlink request per object and one nft transaction, in the plan's
//! order except that a new VRF's entry devices are made (down) before it
//! ([`super::creation_order`]), and rollback of this run's creations, newest first, when a
//! step fails. Sysctls go through the namespace's shared journal (held as `gateway`), so a
//! shaper in the same namespace that needs the same value keeps it when the gateway is
//! destroyed, and the other way round.

use super::creation_order::{self, Step};
use super::plan::{Change, Extra};
use super::{GatewayError, NsPlan, Prepared, desired, gateway, nft, observe, plan, read_sysctls};
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
        what: "reading /proc/thread-self/ns/net".into(),
        err,
    })
}

fn state_path(gw: &GatewayConfig) -> Result<PathBuf, GatewayError> {
    let ino = state::netns_inode().map_err(|err| GatewayError::Io {
        what: "reading /proc/thread-self/ns/net".into(),
        err,
    })?;
    Ok(gw.state_dir.join(format!("gateway-{ino}.json")))
}

/// An exclusive lock on this network namespace's gateway, held while apply or destroy runs, so
/// two runs never interleave their changes. Released when dropped (or when the process dies).
pub fn lock() -> Result<Lock, GatewayError> {
    let ino = state::netns_inode().map_err(|err| GatewayError::Io {
        what: "reading /proc/thread-self/ns/net".into(),
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

/// A VRF-entry macvlan's own settings ([`sysctl::macvlan_keys`]), before it comes up. A
/// shard's macvlan on a device of the gateway's namespace also answers no ARP request
/// (`arp_ignore = 8`): each request on the external device is copied to every tenant's, and
/// the gateway's namespace answers it.
fn link_settings(link: &Link, name: &str) -> std::io::Result<()> {
    let LinkKind::Macvlan { outside, .. } = link.kind else {
        return Ok(());
    };
    let mut keys = sysctl::macvlan_keys(name);
    if outside {
        keys.push((sysctl::conf_key("ipv4", name, "arp_ignore"), "8".into()));
    }
    keys.iter().try_for_each(|(k, v)| sysctl::write(k, v))
}

/// The namespace a shard's plan reaches into: the gateway's own, by a connection opened there.
/// A shard's lower (a veth pair) and its macvlans on the gateway's devices are made there and
/// moved into the shard.
struct Outside {
    nl: Netlink,
    /// The shard's namespace, where such devices go.
    netns: String,
}

/// What [`apply_namespace`] carries along while executing changes.
struct Executor<'a> {
    gw: &'a GatewayConfig,
    nl: &'a Netlink,
    desired: &'a desired::Desired,
    /// None while destroying (nothing is created then), and in shards.
    indexes: Option<IndexChooser>,
    /// In a shard: the gateway's namespace.
    outside: Option<&'a Outside>,
}

impl<'a> Executor<'a> {
    /// An executor that only removes (destroy, undo): it makes nothing, so it needs no
    /// desired state, no index chooser and no way into the gateway's namespace.
    fn removing(gw: &'a GatewayConfig, nl: &'a Netlink, empty: &'a desired::Desired) -> Self {
        Executor {
            gw,
            nl,
            desired: empty,
            indexes: None,
            outside: None,
        }
    }

    fn outside(&self, link: &Link) -> Result<&Outside, GatewayError> {
        self.outside.ok_or_else(|| {
            GatewayError::Refused(format!(
                "{link} belongs in a shard, made from the gateway's namespace"
            ))
        })
    }
}

/// Creates `link`: down, then enslaved, configured and up.
fn create_link(x: &mut Executor, link: &Link) -> Result<(), GatewayError> {
    add_link_down(x, link)?;
    finish_link(x.nl, link)
}

/// The first half of [`create_link`]: the device, down and enslaved to nothing. A per-tenant
/// device of the gateway's namespace goes at an index the chooser picks; a shared one (the
/// external tunnel device) where the kernel puts it, its bucket then closed to tenants. A
/// shard's devices whose other side is in the gateway's namespace are made there and moved.
fn add_link_down(x: &mut Executor, link: &Link) -> Result<(), GatewayError> {
    match &link.kind {
        LinkKind::Veth { peer } => {
            let o = x.outside(link)?;
            o.nl.link_create_veth_into(peer, &link.name, &o.netns)?;
            if let Err(e) = x.nl.link_set_alias(&link.name, &link.alias()) {
                let _ = o.nl.link_delete(peer);
                return Err(e.into());
            }
            o.nl.link_set_up(peer)?;
            return Ok(());
        }
        LinkKind::Macvlan { outside: true, .. } => {
            let o = x.outside(link)?;
            o.nl.link_add_down(link, None)?;
            if let Err(e) = o.nl.link_set_netns(&link.name, &o.netns) {
                let _ = o.nl.link_delete(&link.name);
                return Err(e.into());
            }
            return Ok(());
        }
        _ => {}
    }
    let per_tenant = link.name != names::EXTERNAL_DEV;
    let index = match x.indexes.as_mut() {
        Some(c) if per_tenant => c.choose(),
        _ => None,
    };
    x.nl.link_add_down(link, index)?;
    if !per_tenant && let Some(c) = x.indexes.as_mut() {
        c.share(x.nl.link_index(&link.name)?);
    }
    Ok(())
}

/// The second half of [`create_link`]: enslaved, configured, up.
fn finish_link(nl: &Netlink, link: &Link) -> Result<(), GatewayError> {
    Ok(nl.link_finish(link, |n| link_settings(link, n))?)
}

fn execute(x: &mut Executor, c: &Change) -> Result<(), GatewayError> {
    let (nl, d) = (x.nl, x.desired);
    match c {
        // held and released through the journal (apply, destroy), not one by one
        Change::Sysctl { .. } | Change::RestoreSysctl { .. } => {}
        Change::CreateLink { link } => create_link(x, link)?,
        Change::RecreateLink { link, .. } => {
            nl.link_delete(&link.name)?;
            create_link(x, link)?;
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
        Change::DeleteShard { netns } => delete_shard(x.gw, netns)?,
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

/// What undoes one namespace's applied changes: its creations' inverses, in order, and
/// whether it took the sysctl journal in this run (released again on undo).
struct Undo {
    changes: Vec<Change>,
    took_journal: bool,
}

/// Carries out `changes` of `plan` in the calling thread's namespace. On failure, undoes what
/// it created there, newest first, and says so in the error; on success, returns what would
/// undo it (for a failure in a later namespace).
fn apply_namespace(
    gw: &GatewayConfig,
    plan: &NsPlan,
    changes: &[Change],
    outside: Option<&Outside>,
) -> Result<Undo, GatewayError> {
    let path = state_path(gw)?;
    let mut state = load_state(&path)?;
    if state.l3mdev_rule_preexisting.is_none() {
        state.l3mdev_rule_preexisting = Some(plan.observed.l3mdev_rule);
    }
    state::save(&path, &state)?;
    let journal = journal()?;
    let was_holding = !journal.held_by(HOLDER)?.is_empty();
    let wants: Vec<(String, String)> = plan
        .desired
        .sysctls
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect();
    journal.hold(HOLDER, &wants)?;
    let nl = Netlink::new()?;
    let mut x = Executor {
        gw,
        nl: &nl,
        desired: &plan.desired,
        // a shard's lists are short: its devices go where the kernel puts them
        indexes: outside
            .is_none()
            .then(|| ifindex::chooser_for(&plan.snapshot.links)),
        outside,
    };
    // what undoes the steps carried out so far, in order
    let mut done: Vec<Change> = Vec::new();
    // the kernel adds its l3mdev rule with the first VRF, and keeps it when the VRFs go
    let mut l3mdev_rule = plan.observed.l3mdev_rule;
    for step in creation_order::schedule(changes) {
        let result = match step {
            Step::Change(c) => execute(&mut x, c),
            Step::AddDown(link) => add_link_down(&mut x, link),
            Step::Finish(link) => finish_link(&nl, link),
        };
        if let Err(e) = result {
            let undone = undo_all(&mut x, &done);
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
    Ok(Undo {
        changes: done,
        took_journal: !was_holding,
    })
}

/// Runs `done` backwards; returns how many succeeded.
fn undo_all(x: &mut Executor, done: &[Change]) -> usize {
    let mut undone = 0;
    for u in done.iter().rev() {
        match execute(x, u) {
            Ok(()) => undone += 1,
            Err(e2) => tracing::error!("undoing with `{u}`: {e2}"),
        }
    }
    undone
}

/// Undoes a namespace's applied changes (in the calling thread's namespace).
fn undo_namespace(gw: &GatewayConfig, undo: &Undo) -> usize {
    let Ok(nl) = Netlink::new() else {
        tracing::error!("undoing: no netlink connection");
        return 0;
    };
    let empty = desired::Desired::default();
    let mut x = Executor::removing(gw, &nl, &empty);
    let n = undo_all(&mut x, &undo.changes);
    if undo.took_journal
        && let Err(e) = journal().and_then(|j| j.release(HOLDER).map_err(GatewayError::from))
    {
        tracing::error!("restoring sysctls: {e}");
    }
    n
}

/// Forgets a shard namespace's records (sysctl journal, state file) before it is deleted:
/// they are keyed by the namespace's inode, which a later namespace may get.
fn forget_namespace(gw: &GatewayConfig) -> Result<(), GatewayError> {
    journal()?.release(HOLDER)?;
    state::remove(&state_path(gw)?)?;
    Ok(())
}

/// Deletes shard namespace `netns` and what it holds, and its records.
fn delete_shard(gw: &GatewayConfig, netns: &str) -> Result<(), GatewayError> {
    crate::kernel::netns::run_in(netns, || forget_namespace(gw))??;
    Ok(crate::kernel::netns::delete(netns)?)
}

/// Carries out, in each shard that has any, those of its planned changes that `pick` takes
/// (from a thread inside the shard; `outside` reaches the gateway's namespace). What undoes
/// them goes to `done` for shards that existed before this run (a new one is deleted whole).
fn apply_in_shards(
    gw: &GatewayConfig,
    p: &Prepared,
    pick: impl Fn(&Change) -> bool,
    outside: &mut Outside,
    done: &mut Vec<Done>,
) -> Result<(), GatewayError> {
    for s in &p.shards {
        let changes: Vec<Change> = s.plan.changes.iter().filter(|c| pick(c)).cloned().collect();
        if changes.is_empty() {
            continue;
        }
        outside.netns = s.netns.clone();
        // lent mutably: a netlink connection may move to another thread but not be shared
        let o = &mut *outside;
        let undo = crate::kernel::netns::run_in(&s.netns, move || {
            apply_namespace(gw, &s.plan, &changes, Some(&*o))
        })??;
        if s.exists {
            done.push(Done::Shard(s.netns.clone(), undo));
        }
    }
    Ok(())
}

/// What undoes one step of [`apply`], oldest first.
enum Done {
    Netns(String),
    Front(Undo),
    Shard(String, Undo),
}

/// Carries out a prepared plan, namespace by namespace: shards' namespaces are made first,
/// then the gateway's devices; then every shard's removals and the shards the config no
/// longer has (so a tenant moving between shards has left the old one), every shard's other
/// changes (in the shard), and last the gateway's ruleset (its stamps forward to the shards'
/// lowers, which must exist). On failure, everything this run did is undone, newest
/// first, in every namespace.
pub fn apply(config: &Config, p: &Prepared) -> Result<(), GatewayError> {
    let gw = gateway(config)?;
    if p.change_count() == 0 {
        return Ok(());
    }
    let mut done: Vec<Done> = Vec::new();
    let result = (|| -> Result<(), GatewayError> {
        for s in p.shards.iter().filter(|s| !s.exists) {
            crate::kernel::netns::create(&s.netns)?;
            done.push(Done::Netns(s.netns.clone()));
            // loopback up: without an address outside the VRFs, the namespace has no local
            // table, and every source address would look like a broadcast one to the
            // ruleset's check of the gateway's own addresses
            Netlink::new_in(&s.netns)?.link_set_up("lo")?;
        }
        let sharded = !p.shards.is_empty();
        // with shards, the gateway's ruleset comes last: its stamps forward to their lowers
        let (later, now): (Vec<Change>, Vec<Change>) = p
            .front
            .changes
            .iter()
            .cloned()
            .partition(|c| sharded && matches!(c, Change::Ruleset { .. }));
        if !now.is_empty() {
            done.push(Done::Front(apply_namespace(gw, &p.front, &now, None)?));
        }
        if !sharded {
            return Ok(());
        }
        let lower_made = p.shards.iter().any(|s| {
            s.plan.changes.iter().any(|c| {
                matches!(c, Change::CreateLink { link } | Change::RecreateLink { link, .. }
                    if matches!(link.kind, LinkKind::Veth { .. }))
            })
        });
        let mut outside = Outside {
            nl: Netlink::new()?,
            netns: String::new(),
        };
        // removals in every shard first, then the shards the config no longer has: a tenant
        // moving between shards frees its MACs on the gateway's devices before its devices
        // are made in the new shard
        let removal = |c: &Change| c.sign() == '-';
        apply_in_shards(gw, p, removal, &mut outside, &mut done)?;
        for n in &p.stale_shards {
            delete_shard(gw, n).map_err(|e| GatewayError::Applied {
                failed: format!("`{}` failed: {e}", Change::DeleteShard { netns: n.clone() }),
                undone: 0,
            })?;
        }
        apply_in_shards(gw, p, |c| !removal(c), &mut outside, &mut done)?;
        // the stamps' `fwd` resolves each lower's index when loaded: reload after a new one
        if !later.is_empty() || lower_made {
            nft::apply(&p.front.desired.ruleset)?;
            if p.front.extra.ruleset_digest.is_none() {
                done.push(Done::Front(Undo {
                    changes: vec![Change::DeleteRuleset],
                    took_journal: false,
                }));
            }
        }
        Ok(())
    })();
    let Err(e) = result else {
        return Ok(());
    };
    let mut undone = 0;
    for d in done.iter().rev() {
        match d {
            Done::Front(u) => undone += undo_namespace(gw, u),
            Done::Shard(n, u) => match crate::kernel::netns::run_in(n, || undo_namespace(gw, u)) {
                Ok(k) => undone += k,
                Err(e2) => tracing::error!("undoing in {n}: {e2}"),
            },
            Done::Netns(n) => match delete_shard(gw, n) {
                Ok(()) => undone += 1,
                Err(e2) => tracing::error!("undoing: {e2}"),
            },
        }
    }
    Err(match e {
        GatewayError::Applied { failed, undone: u } => GatewayError::Applied {
            failed,
            undone: u + undone,
        },
        other => GatewayError::Applied {
            failed: other.to_string(),
            undone,
        },
    })
}

/// Plans the removal of everything tollgate made (no kernel probing needed): in the gateway's
/// namespace object by object, and every shard namespace of tollgate's whole.
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
    let mut changes = plan::destroy(
        &observed,
        &extra,
        &restore,
        state.l3mdev_rule_preexisting.unwrap_or(true),
    );
    // after the ruleset whose stamps forward to them
    let at = usize::from(matches!(changes.first(), Some(Change::DeleteRuleset)));
    for (k, netns) in super::stale_shards(gw, &Default::default())?
        .into_iter()
        .enumerate()
    {
        changes.insert(at + k, Change::DeleteShard { netns });
    }
    Ok(changes)
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
    let mut x = Executor::removing(gw, &nl, &empty);
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
