//! The order apply creates a tenant's devices in, which decides how far the kernel walks to
//! find them.
//!
//! The kernel finds a device by index in one of 256 lists (`index & 255`), each kept newest
//! first. A tenant's forwarded packet looks up two devices by index on its route lookup: the
//! device it arrived on (the tenant's macvlan on the public device, or its tunnel-side
//! device) and that device's VRF. The VRF is on both directions' path, so it is the device
//! worth having nearest the head of its list.
//!
//! A plan creates VRFs first (a device can only be enslaved to a VRF that exists), then the
//! tenants' entry devices. Carried out in that order, every VRF ends up behind all the entry
//! devices, and the first tenants' devices behind all later ones: at 10,000 tenants the
//! first tenant's inbound packet walked about 158 devices, the last's about 79. So apply
//! creates the entry devices of VRFs it makes *first*, down and enslaved to nothing (a down
//! macvlan is in no receive list, so it takes no frame), then the VRFs, and enslaves and
//! brings up each entry device where the plan has it. The lists then read, from the head:
//! VRFs, public-side macvlans, tunnel-side devices.
//!
//! Within those blocks a tenant's VRF and its entry devices are paired so that their places add
//! up to about the same for every tenant: VRFs are made in plan order (the first made ends
//! last among the VRFs), entry devices in the opposite order (the first tenant's is made last,
//! nearest the head). At 10,000 tenants every tenant's inbound packet then walks at most about
//! 79 devices, and its replies 119, instead of up to 158 and 198.
//!
//! Tenants added by a later apply are made the same way among themselves, in front of the
//! older ones, which each move back by the new devices in their lists; a fresh apply (after
//! a reboot, or destroy and apply) restores the balance.
//!
//! Not balanced here: the macvlan driver's MAC hash of each lower device (also 256 lists,
//! newest first), which a macvlan enters when it comes up. Entry devices come up in the plan's
//! order, so the first tenant's are last in those lists; as with the index lists, the sum of
//! those walks is fixed by the number of tenants on the lower, and an order only moves it.

use super::plan::Change;
use crate::kernel::model::{Link, LinkKind};
use crate::names::EXTERNAL_DEV;
use std::collections::{HashMap, HashSet};

/// One step of carrying out a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A change, carried out as planned.
    Change(&'a Change),
    /// The first half of a planned link creation: the link is made down and enslaved to
    /// nothing.
    AddDown(&'a Link),
    /// The second half, where the plan has the creation: enslaved, configured, brought up.
    Finish(&'a Link),
}

/// Where a deferred entry device goes among the others: made earlier = further back.
fn side(link: &Link, created: &HashSet<&str>) -> u8 {
    match &link.kind {
        // a keyed tunnel device
        LinkKind::Vxlan { .. }
        | LinkKind::Gretap { .. }
        | LinkKind::Vrf { .. }
        | LinkKind::Veth { .. } => 0,
        // a macvlan on the tunnel side (made after its lower, in front of the tunnel devices)
        LinkKind::Macvlan { lower, .. }
            if lower == EXTERNAL_DEV || created.contains(lower.as_str()) =>
        {
            1
        }
        // a macvlan on the public device
        LinkKind::Macvlan { .. } => 2,
    }
}

/// The steps that carry out `changes`: the plan's own order, except that entry devices of
/// VRFs this plan creates are made (down) before the first of those VRFs, together with the
/// devices they sit on that the plan creates after it.
pub fn schedule(changes: &[Change]) -> Vec<Step<'_>> {
    let creates = || {
        changes.iter().filter_map(|c| match c {
            Change::CreateLink { link } => Some(link),
            _ => None,
        })
    };
    let vrf_rank: HashMap<&str, usize> = creates()
        .filter(|l| l.is_vrf())
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    let mut deferred: Vec<&Link> = creates()
        .filter(|l| {
            !l.is_vrf()
                && l.master
                    .as_deref()
                    .is_some_and(|m| vrf_rank.contains_key(m))
        })
        .collect();
    let first_vrf = changes
        .iter()
        .position(|c| matches!(c, Change::CreateLink { link } if link.is_vrf()));
    let (Some(first_vrf), false) = (first_vrf, deferred.is_empty()) else {
        return changes.iter().map(Step::Change).collect();
    };
    let created: HashSet<&str> = creates().map(|l| l.name.as_str()).collect();
    // tunnel side first; within a side, the last VRF's device first
    deferred.sort_by_key(|l| {
        let vrf = l.master.as_deref().map_or(0, |m| vrf_rank[m]);
        (side(l, &created), std::cmp::Reverse(vrf))
    });
    let deferred_names: HashSet<&str> = deferred.iter().map(|l| l.name.as_str()).collect();
    let (before, after) = changes.split_at(first_vrf);
    // devices the deferred ones sit on that the plan makes after the first VRF: made earlier
    let lower_names: HashSet<&str> = deferred.iter().filter_map(|l| l.lower()).collect();
    let is_lower = |c: &Change| {
        matches!(c, Change::CreateLink { link }
            if lower_names.contains(link.name.as_str())
                && !deferred_names.contains(link.name.as_str()))
    };
    let mut out: Vec<Step> = before.iter().map(Step::Change).collect();
    out.extend(after.iter().filter(|c| is_lower(c)).map(Step::Change));
    out.extend(deferred.iter().map(|l| Step::AddDown(l)));
    for c in after {
        match c {
            Change::CreateLink { link } if deferred_names.contains(link.name.as_str()) => {
                out.push(Step::Finish(link));
            }
            _ if is_lower(c) => {}
            _ => out.push(Step::Change(c)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
