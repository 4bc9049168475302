//! Interface indexes for per-tenant devices, chosen away from the devices traffic shares.
//!
//! The kernel finds a device by index through a hash of 256 buckets (`index & 255`; so does
//! Debian's 6.1), each a list walked from the newest device. The forwarding path looks
//! devices up by index on every route lookup (the input device, its VRF), so 30,000
//! per-tenant devices (10,000 tenants) put about 120 devices in front of the public device,
//! the underlay or `lo` in their buckets. Operator traffic, which belongs to no tenant, would
//! pay for every tenant.
//!
//! So per-tenant devices are created with an index of tollgate's choosing (RTM_NEWLINK with
//! `ifi_index` set, as `ip link add ... index N`): never in bucket 0 nor in the bucket of a
//! device that is not per-tenant (the public and underlay devices, the shared tunnel device,
//! anything of the operator's). A tenant's own lookups still walk its bucket of tenants, which
//! no choice of index avoids; how far each tenant walks there is set by the order apply makes
//! the devices in (`gateway::creation_order`).

use crate::kernel::netlink::decode::LinkState;
use crate::names;
use std::collections::BTreeSet;

/// Buckets in the kernel's device-index hash (`NETDEV_HASHENTRIES`).
pub const BUCKETS: u32 = 256;

/// True for a device that belongs to one tenant: the gateway's (its alias says tollgate made
/// it; all but the shared external tunnel device) and the shaper's macvlans. Everything else
/// is shared. (An alias is only a label: a foreign device that copies it merely loses its
/// bucket's protection.)
pub fn is_per_tenant(l: &LinkState) -> bool {
    let gateway = l
        .alias
        .as_deref()
        .is_some_and(|a| a.starts_with(names::ALIAS_PREFIX))
        && l.name != names::EXTERNAL_DEV;
    gateway || (l.kind == "macvlan" && names::is_shaper_macvlan_name(&l.name))
}

/// A chooser for a namespace whose devices are `links`.
pub fn chooser_for(links: &[LinkState]) -> IndexChooser {
    let (tenants, shared): (Vec<&LinkState>, Vec<&LinkState>) =
        links.iter().partition(|l| is_per_tenant(l));
    IndexChooser::new(
        shared.iter().map(|l| l.index),
        tenants.iter().map(|l| l.index),
    )
}

/// Hands out free indexes outside the reserved buckets.
#[derive(Clone, Debug)]
pub struct IndexChooser {
    reserved: [bool; BUCKETS as usize],
    taken: BTreeSet<u32>,
    next: u32,
}

impl IndexChooser {
    /// `shared`: indexes of devices that carry other traffic (their buckets stay free);
    /// `tenants`: indexes of existing per-tenant devices (only taken).
    pub fn new(
        shared: impl IntoIterator<Item = u32>,
        tenants: impl IntoIterator<Item = u32>,
    ) -> IndexChooser {
        let mut c = IndexChooser {
            reserved: [false; BUCKETS as usize],
            taken: BTreeSet::new(),
            next: 1,
        };
        c.reserved[0] = true;
        for i in shared {
            c.share(i);
        }
        c.taken.extend(tenants);
        c.next = c.taken.last().map_or(1, |m| m + 1);
        c
    }

    /// Marks `index` as a shared device's (made after the chooser, e.g. the tunnel device).
    pub fn share(&mut self, index: u32) {
        self.reserved[(index % BUCKETS) as usize] = true;
        self.taken.insert(index);
        self.next = self.next.max(index + 1);
    }

    /// A free index outside the reserved buckets; None when every bucket is reserved or the
    /// index space is used up (the kernel then chooses).
    pub fn choose(&mut self) -> Option<u32> {
        if self.reserved.iter().all(|r| *r) {
            return None;
        }
        let mut i = self.next;
        // indexes are positive ints
        while i < i32::MAX as u32 {
            if !self.reserved[(i % BUCKETS) as usize] && !self.taken.contains(&i) {
                self.taken.insert(i);
                self.next = i + 1;
                return Some(i);
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_indexes_avoid_bucket_zero_and_shared_devices_buckets() {
        // lo 1, the public device 2, the underlay 3, the tunnel device 300 (bucket 44)
        let mut c = IndexChooser::new([1, 2, 3, 300], [301, 302]);
        let got: Vec<u32> = (0..1000).filter_map(|_| c.choose()).collect();
        assert_eq!(got.len(), 1000);
        for i in &got {
            assert!(
                ![0, 1, 2, 3, 44].contains(&(i % BUCKETS)),
                "{i} is in a shared bucket"
            );
            assert!(*i > 302, "{i} was taken or below the existing ones");
        }
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "an index was handed out twice");
        // 251 of 256 buckets are open: 1,000 devices fill them evenly
        let mut per = [0u32; BUCKETS as usize];
        for i in &got {
            per[(i % BUCKETS) as usize] += 1;
        }
        assert!(per.iter().all(|n| *n <= 5), "{per:?}");
    }

    #[test]
    fn a_device_shared_later_closes_its_bucket() {
        let mut c = IndexChooser::new([1], []);
        let first = c.choose().expect("free");
        assert_eq!(first, 2);
        c.share(3);
        assert_eq!(c.choose(), Some(4));
        // 259 is bucket 3: skipped once the chooser gets there
        let later: Vec<u32> = (0..300).filter_map(|_| c.choose()).collect();
        assert!(!later.iter().any(|i| i % BUCKETS == 3 || i % BUCKETS == 1));
    }

    fn link(index: u32, name: &str, alias: Option<&str>, kind: &str) -> LinkState {
        LinkState {
            mac: None,
            index,
            name: name.into(),
            alias: alias.map(Into::into),
            kind: kind.into(),
            master: None,
            lower: None,
            lower_netns: None,
            up: true,
        }
    }

    #[test]
    fn tenants_devices_are_told_from_shared_ones() {
        let links = [
            link(1, "lo", None, ""),
            link(2, "eth-pub", None, "veth"),
            link(3, "tgtun", Some("tollgate: gretap external"), "gretap"),
            link(4, "tgv7", Some("tollgate: vrf table 7"), "vrf"),
            link(5, "tgs7", None, "macvlan"),
            link(6, "tgsx", None, "macvlan"),
            link(7, "tgs8", None, "veth"),
        ];
        let per: Vec<&str> = links
            .iter()
            .filter(|l| is_per_tenant(l))
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(per, ["tgv7", "tgs7"]);
        // the shared devices' buckets (1, 2, 3, 6, 7) and 0 stay closed; tenants' (4, 5) do not
        let mut c = chooser_for(&links);
        let got: Vec<u32> = (0..600).filter_map(|_| c.choose()).collect();
        assert!(
            got.iter()
                .all(|i| ![0, 1, 2, 3, 6, 7].contains(&(i % BUCKETS)))
        );
        assert!(got.iter().any(|i| i % BUCKETS == 4) && got.iter().any(|i| i % BUCKETS == 5));
    }

    #[test]
    fn every_bucket_reserved_leaves_the_choice_to_the_kernel() {
        let mut c = IndexChooser::new(0..BUCKETS, []);
        assert_eq!(c.choose(), None);
    }
}
