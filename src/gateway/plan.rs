//! Desired vs observed -> the ordered list of changes that converges the kernel. Pure.
//!
//! Order: sysctls; links (VRFs first), masters, up; addresses; neighbours; routes; rules; the
//! nftables ruleset (one transaction); then removals, innermost first. A link whose creation
//! parameters changed is recreated, and what lived on it (addresses, routes, neighbours) is
//! planned again rather than assumed present.

use super::desired::Desired;
use super::observe::Observed;
use crate::kernel::model::{rank as model_rank, *};
use crate::names::GATEWAY_NFT_TABLE as NFT_TABLE;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Sysctl {
        key: String,
        from: String,
        to: String,
    },
    CreateLink {
        link: Link,
    },
    RecreateLink {
        link: Link,
        was: String,
    },
    SetMaster {
        link: String,
        master: Option<String>,
    },
    SetUp {
        link: String,
    },
    AddAddress {
        address: Address,
    },
    AddNeigh {
        neigh: Neigh,
    },
    AddRoute {
        route: Route,
    },
    AddRule {
        rule: Rule,
    },
    /// Create or replace the whole ruleset atomically.
    Ruleset {
        replace: bool,
        digest: String,
    },
    DeleteRule {
        rule: Rule,
    },
    DeleteRoute {
        route: Route,
    },
    DeleteNeigh {
        neigh: Neigh,
    },
    DeleteAddress {
        address: Address,
    },
    DeleteLink {
        link: String,
    },
    DeleteRuleset,
    /// The `l3mdev` rule the kernel added with the first VRF, when no VRF is left.
    DeleteL3mdevRule,
    RestoreSysctl {
        key: String,
        to: String,
    },
    /// A shard's namespace, with everything in it (a shard the config no longer has).
    DeleteShard {
        netns: String,
    },
}

impl Change {
    /// `+` create, `~` change, `-` delete (as in the plan listing).
    pub fn sign(&self) -> char {
        match self {
            Change::CreateLink { .. }
            | Change::AddAddress { .. }
            | Change::AddNeigh { .. }
            | Change::AddRoute { .. }
            | Change::AddRule { .. } => '+',
            Change::Ruleset { replace: false, .. } => '+',
            Change::DeleteRule { .. }
            | Change::DeleteRoute { .. }
            | Change::DeleteNeigh { .. }
            | Change::DeleteAddress { .. }
            | Change::DeleteLink { .. }
            | Change::DeleteRuleset
            | Change::DeleteL3mdevRule
            | Change::DeleteShard { .. } => '-',
            _ => '~',
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.sign())?;
        match self {
            Change::Sysctl { key, from, to } => write!(f, "sysctl {key} {from} -> {to}"),
            Change::CreateLink { link } => write!(f, "{link}"),
            Change::RecreateLink { link, was } => write!(f, "{link} (recreate, was: {was})"),
            Change::SetMaster { link, master } => match master {
                Some(m) => write!(f, "link {link} master {m}"),
                None => write!(f, "link {link} nomaster"),
            },
            Change::SetUp { link } => write!(f, "link {link} up"),
            Change::AddAddress { address } | Change::DeleteAddress { address } => {
                write!(f, "{address}")
            }
            Change::AddNeigh { neigh } | Change::DeleteNeigh { neigh } => write!(f, "{neigh}"),
            Change::AddRoute { route } | Change::DeleteRoute { route } => write!(f, "{route}"),
            Change::AddRule { rule } | Change::DeleteRule { rule } => write!(f, "{rule}"),
            Change::Ruleset { replace, digest } => write!(
                f,
                "nft table inet {NFT_TABLE} ({}, version {digest})",
                if *replace {
                    "replace atomically"
                } else {
                    "create"
                }
            ),
            Change::DeleteLink { link } => write!(f, "link {link}"),
            Change::DeleteRuleset => write!(f, "nft table inet {NFT_TABLE}"),
            Change::DeleteL3mdevRule => {
                write!(f, "rule l3mdev (added by the kernel with the first VRF)")
            }
            Change::RestoreSysctl { key, to } => write!(f, "sysctl {key} -> {to} (restore)"),
            Change::DeleteShard { netns } => {
                write!(f, "netns {netns} (a shard, with everything in it)")
            }
        }
    }
}

/// What the kernel has that `plan` needs besides `Observed`.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Current values of the desired sysctls.
    pub sysctls: Vec<(String, String)>,
    /// Digest in our ruleset's marker comment, if the table exists; Some("") if it exists
    /// without a recognisable marker (hand-edited).
    pub ruleset_digest: Option<String>,
}

pub fn plan(d: &Desired, o: &Observed, x: &Extra) -> Vec<Change> {
    let mut out = Vec::new();
    for s in &d.sysctls {
        let cur = x
            .sysctls
            .iter()
            .find(|(k, _)| *k == s.key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if cur != s.value {
            out.push(Change::Sysctl {
                key: s.key.clone(),
                from: cur,
                to: s.value.clone(),
            });
        }
    }
    // links
    let mut gone: BTreeSet<String> = BTreeSet::new(); // links whose contents vanish
    let mut links = d.links.clone();
    links.sort_by_key(|l| (l.rank(), l.name.clone()));
    let observed: std::collections::HashMap<&str, &super::observe::ObservedLink> =
        o.links.iter().map(|l| (l.name.as_str(), l)).collect();
    for l in &links {
        // an upper device goes with its lower when that is recreated
        let lower_gone = l.lower().is_some_and(|x| gone.contains(x));
        match observed.get(l.name.as_str()).copied() {
            _ if lower_gone => {
                out.push(Change::CreateLink { link: l.clone() });
                gone.insert(l.name.clone());
            }
            None => {
                out.push(Change::CreateLink { link: l.clone() });
                gone.insert(l.name.clone());
            }
            Some(ol) if ol.spec != l.spec() => {
                out.push(Change::RecreateLink {
                    link: l.clone(),
                    was: ol.spec.clone(),
                });
                gone.insert(l.name.clone());
            }
            Some(ol) => {
                if ol.master != l.master {
                    out.push(Change::SetMaster {
                        link: l.name.clone(),
                        master: l.master.clone(),
                    });
                }
                if !ol.up {
                    out.push(Change::SetUp {
                        link: l.name.clone(),
                    });
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = d.links.iter().map(|l| l.name.as_str()).collect();
    let removed: Vec<&super::observe::ObservedLink> = o
        .links
        .iter()
        .filter(|ol| !wanted.contains(ol.name.as_str()))
        .collect();
    for ol in &removed {
        gone.insert(ol.name.clone());
    }
    let alive = |dev: &str| !gone.contains(dev);
    let o_addr: BTreeSet<&Address> = o.addresses.iter().filter(|a| alive(&a.dev)).collect();
    let o_neigh: BTreeSet<&Neigh> = o.neighs.iter().filter(|n| alive(&n.dev)).collect();
    // a route on a recreated/removed link vanishes with it
    let o_route: BTreeSet<&Route> = o.routes.iter().filter(|r| alive(&r.dev)).collect();
    let o_rule: BTreeSet<&Rule> = o.rules.iter().collect();
    for a in d.addresses.iter().filter(|a| !o_addr.contains(a)) {
        out.push(Change::AddAddress { address: a.clone() });
    }
    for n in d.neighs.iter().filter(|n| !o_neigh.contains(n)) {
        out.push(Change::AddNeigh { neigh: n.clone() });
    }
    for r in d.routes.iter().filter(|r| !o_route.contains(r)) {
        out.push(Change::AddRoute { route: r.clone() });
    }
    for r in d.rules.iter().filter(|r| !o_rule.contains(r)) {
        out.push(Change::AddRule { rule: r.clone() });
    }
    match &x.ruleset_digest {
        None => out.push(Change::Ruleset {
            replace: false,
            digest: d.ruleset_digest.clone(),
        }),
        Some(dg) if *dg != d.ruleset_digest => out.push(Change::Ruleset {
            replace: true,
            digest: d.ruleset_digest.clone(),
        }),
        Some(_) => {}
    }
    for r in o.rules.iter().filter(|r| !d.rules.contains(r)) {
        out.push(Change::DeleteRule { rule: r.clone() });
    }
    for r in o_route.iter().filter(|r| !d.routes.contains(r)) {
        out.push(Change::DeleteRoute {
            route: (*r).clone(),
        });
    }
    for n in o_neigh.iter().filter(|n| !d.neighs.contains(n)) {
        out.push(Change::DeleteNeigh {
            neigh: (*n).clone(),
        });
    }
    for a in o_addr.iter().filter(|a| !d.addresses.contains(a)) {
        out.push(Change::DeleteAddress {
            address: (*a).clone(),
        });
    }
    let mut removed: Vec<_> = removed.into_iter().collect();
    removed.sort_by_key(|l| (std::cmp::Reverse(model_rank(&l.kind)), l.name.clone()));
    for ol in removed {
        out.push(Change::DeleteLink {
            link: ol.name.clone(),
        });
    }
    out
}

/// Everything of ours, removed: the inverse of an apply. `restore` are the sysctl originals
/// recorded at the first apply; `l3mdev_was_there` whether the l3mdev rule predates us.
pub fn destroy(
    o: &Observed,
    x: &Extra,
    restore: &[(String, String)],
    l3mdev_was_there: bool,
) -> Vec<Change> {
    let mut out = Vec::new();
    // a table of that name without our marker is not ours to delete
    if x.ruleset_digest.as_deref().is_some_and(|d| !d.is_empty()) {
        out.push(Change::DeleteRuleset);
    }
    for r in &o.rules {
        out.push(Change::DeleteRule { rule: r.clone() });
    }
    for r in &o.routes {
        out.push(Change::DeleteRoute { route: r.clone() });
    }
    let mut links: Vec<_> = o.links.iter().collect();
    links.sort_by_key(|l| (std::cmp::Reverse(model_rank(&l.kind)), l.name.clone()));
    let ours_vrfs = links.iter().filter(|l| l.kind == "vrf").count();
    for l in links {
        out.push(Change::DeleteLink {
            link: l.name.clone(),
        });
    }
    if o.l3mdev_rule && !l3mdev_was_there && ours_vrfs > 0 && o.vrf_count == ours_vrfs {
        out.push(Change::DeleteL3mdevRule);
    }
    for (k, v) in restore {
        let cur = x
            .sysctls
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str());
        if cur != Some(v.as_str()) {
            out.push(Change::RestoreSysctl {
                key: k.clone(),
                to: v.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
