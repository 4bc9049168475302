//! Every kernel name tollgate uses, derived in one place.
//!
//! Two tenants must never share a kernel object by accident, so every per-tenant name comes
//! from the tenant's validated, unique `id` (never from its display name, which may differ only
//! in characters a name transformation would fold together). Names shared by the whole process
//! (the external tunnel device, the nftables tables, the route protocols) are constants here, so
//! the gateway, `show` and the shaper agree on them.

/// Where the per-namespace locks and the shared sysctl journal live, whatever a config's
/// `state_dir`: both halves of every config in a namespace must find the same ones.
pub const RUN_DIR: &str = "/run/tollgate";

/// The alias every gateway link carries: `tollgate: <spec>`; the spec says how it was made.
pub const ALIAS_PREFIX: &str = "tollgate: ";
/// Protocol number on the gateway's routes and rules (`proto 246`).
pub const RTPROT_GATEWAY: u8 = 246;
/// Protocol number on the shaper's routes and rules (`proto 245`).
pub const RTPROT_SHAPER: u8 = 245;
/// The gateway's nftables table (family `inet`).
pub const GATEWAY_NFT_TABLE: &str = "tollgate_gw";
/// The shared collect_md tunnel device of `tunnel_mode = "external"`.
pub const EXTERNAL_DEV: &str = "tgtun";

/// The VRF device of tenant `id`.
pub fn vrf(id: u32) -> String {
    format!("tgv{id}")
}

/// The keyed tunnel device of tenant `id` (`tunnel_mode = "per-tenant"`).
pub fn tunnel(id: u32) -> String {
    format!("tgt{id}")
}

/// Tenant `id`'s firewall dispatch chain (established/invalid, then in or out).
pub fn chain_tenant(id: u32) -> String {
    format!("tenant_{id}")
}

/// Tenant `id`'s inbound firewall chain (traffic towards the tenant).
pub fn chain_in(id: u32) -> String {
    format!("in_{id}")
}

/// Tenant `id`'s outbound firewall chain (traffic from the tenant to the public side).
pub fn chain_out(id: u32) -> String {
    format!("out_{id}")
}

/// The gateway's macvlan for tenant `id` on the external tunnel device, in the tenant's VRF:
/// the tenant's traffic to the gateway itself is stamped with its MAC so it is delivered inside
/// the tenant's VRF (the external device belongs to no VRF).
pub fn gateway_macvlan(id: u32) -> String {
    format!("tge{id}")
}

/// The MAC of [`gateway_macvlan`]`(id)`: locally administered, the id in the last four bytes.
pub fn gateway_macvlan_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0x67, b[0], b[1], b[2], b[3]]
}

/// The gateway's macvlan for tenant `id` on the public device, in the tenant's VRF (VRF
/// isolation, tenants with EIPs): packets to the tenant's EIPs are stamped with its MAC on the
/// public device's ingress, so they enter the tenant's VRF with no policy rule.
pub fn public_macvlan(id: u32) -> String {
    format!("tgp{id}")
}

/// The MAC of [`public_macvlan`]`(id)`: locally administered, the id in the last four bytes,
/// and never in the macvlan driver's hash list of `lower_mac` (the public device's own MAC).
/// The driver looks every unicast frame arriving on the public device up by destination MAC
/// in 256 lists of macvlans (see [`macvlan_bucket`]); a frame for the device itself (the
/// operator's traffic) walks the whole list of the device's MAC, finding nothing. With no
/// tenant MAC in that list, the operator's frames walk none, however many tenants there are.
/// The first byte tells the variants apart (`02`, `06`, `0a`, ...: the first whose bucket
/// differs; the second is almost never needed).
pub fn public_macvlan_mac(id: u32, lower_mac: Option<[u8; 6]>) -> [u8; 6] {
    mac_outside_list(0x70, id, lower_mac)
}

/// A locally administered unicast MAC, second byte `kind`, `id` in the last four, for a
/// macvlan on a device whose own MAC is `lower_mac`: the first variant (first byte `02`,
/// `06`, `0a`, ...) whose hash list is not the device's own (see [`public_macvlan_mac`]).
fn mac_outside_list(kind: u8, id: u32, lower_mac: Option<[u8; 6]>) -> [u8; 6] {
    let b = id.to_be_bytes();
    let mac = |v: u8| [0x02 | (v << 2), kind, b[0], b[1], b[2], b[3]];
    let Some(lower) = lower_mac else {
        return mac(0);
    };
    let avoid = macvlan_bucket(lower);
    (0..64)
        .map(mac)
        .find(|m| macvlan_bucket(*m) != avoid)
        .unwrap_or(mac(0))
}

/// The list (of 256) the Linux macvlan driver keeps a MAC in, and looks it up in: `hash_64`
/// (the golden-ratio multiply, top 8 bits) of the six bytes as the first six of a u64 in
/// memory order, shifted to the top (`macvlan_eth_hash`).
pub fn macvlan_bucket(mac: [u8; 6]) -> u8 {
    const GOLDEN_RATIO_64: u64 = 0x61C8_8646_80B5_83EB;
    let mut word = [0u8; 8];
    word[..6].copy_from_slice(&mac);
    let value = if cfg!(target_endian = "big") {
        u64::from_be_bytes(word) >> 16
    } else {
        u64::from_le_bytes(word) << 16
    };
    (value.wrapping_mul(GOLDEN_RATIO_64) >> 56) as u8
}

/// A MAC (52:54:00:00:xx:xx) in the macvlan driver's list `bucket`: a device MAC for tests.
#[cfg(test)]
pub(crate) fn mac_in_bucket(bucket: u8) -> [u8; 6] {
    (0..=u16::MAX)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            [0x52, 0x54, 0, 0, hi, lo]
        })
        .find(|m| macvlan_bucket(*m) == bucket)
        .expect("65,536 MACs cover every list")
}

/// The shaper's macvlan for gateway tenant `id`: on the TAP, enslaved to the tenant's VRF, so a
/// frame the shaper writes back with this device's MAC is delivered inside the tenant's VRF.
pub fn shaper_macvlan(id: u32) -> String {
    format!("tgs{id}")
}

/// The shard tenant `id` belongs to, of `shards` (at least 1): a fixed hash of the id, so a
/// tenant stays in its shard as others come and go, and ids in steps (1000, 2000, ...) spread
/// as evenly as consecutive ones. Only a change of `shards` moves tenants.
pub fn shard_of(id: u32, shards: u32) -> u32 {
    // Fibonacci hashing: the golden-ratio multiply spreads any arithmetic progression of ids,
    // and the top 32 bits of the product scale onto 0..shards without a modulo's bias
    const GOLDEN_RATIO_64: u64 = 0x9E37_79B9_7F4A_7C15;
    let h = u64::from(id).wrapping_mul(GOLDEN_RATIO_64) >> 32;
    u32::try_from((h * u64::from(shards.max(1))) >> 32).unwrap_or(0)
}

/// The network namespace of shard `j`: the operator's prefix and the shard's number.
pub fn shard_netns(prefix: &str, j: u32) -> String {
    format!("{prefix}{j}")
}

/// Shard `j`'s own lower as the gateway's namespace sees it: the gateway's end of the veth
/// pair whose other end ([`SHARD_LOWER`]) carries the shard's tenants' entry macvlans.
pub fn shard_lower(j: u32) -> String {
    format!("tgl{j}")
}

/// The shard's end of its lower, in the shard's namespace (the same name in every shard).
pub const SHARD_LOWER: &str = "tgl";

/// A sharded tenant's tunnel-side entry: a macvlan on its shard's lower, in the tenant's VRF.
/// The gateway's namespace stamps the tenant's decapsulated packets with its MAC and forwards
/// them to the shard; they enter the VRF here (the public side enters by
/// [`public_macvlan`], on the same lower), so the shard's ruleset still tells the two apart.
pub fn tunnel_entry_macvlan(id: u32) -> String {
    format!("tgi{id}")
}

/// The MAC of [`tunnel_entry_macvlan`]`(id)`: locally administered, the id in the last four.
pub fn tunnel_entry_macvlan_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0x69, b[0], b[1], b[2], b[3]]
}

/// A shard's way out to the public side: a macvlan on the public device, moved into the shard;
/// the tenants' tables route the public side through it.
pub const SHARD_PUBLIC: &str = "tgxp";

/// The MAC of shard `j`'s [`SHARD_PUBLIC`] macvlan: like [`public_macvlan_mac`], kept out of
/// the public device's own hash list (`lower_mac`), with its own second byte.
pub fn shard_public_mac(j: u32, lower_mac: Option<[u8; 6]>) -> [u8; 6] {
    let mut m = public_macvlan_mac(j, lower_mac);
    m[1] = 0x78;
    match lower_mac {
        // the second byte moved it into the device's list: the first variant that is not
        Some(l) if macvlan_bucket(m) == macvlan_bucket(l) => mac_outside_list(0x78, j, lower_mac),
        _ => m,
    }
}

/// True when `name` is one [`shaper_macvlan`] could give (whatever the id).
pub fn is_shaper_macvlan_name(name: &str) -> bool {
    name.strip_prefix("tgs")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// The MAC of [`shaper_macvlan`]`(id)`: locally administered, unicast, the id in its last four
/// bytes, so the redirect (which stamps it) and the shaper (which classifies by it) agree
/// without asking each other.
pub fn shaper_macvlan_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0x74, b[0], b[1], b[2], b[3]]
}

/// True when `mac` is one [`shaper_macvlan_mac`] could give (whatever the id).
pub fn is_shaper_macvlan_mac(mac: &[u8]) -> bool {
    mac.len() == 6 && mac[..2] == [0x02, 0x74]
}

/// The shaper's nftables table (family netdev) for gateway tenants' redirects, TAP `tap`.
pub fn shaper_gateway_nft_table(tap: &str) -> String {
    // `_gw` cannot come out of the escaping in shaper_nft_table ('_' is always followed by one
    // of `_hdapx`), so this name never equals another TAP's table
    format!("{}_gw", shaper_nft_table(tap))
}

/// The shaper's live counters file for TAP `tap` in the network namespace with inode `netns`
/// (in its `state_dir`), read by `tollgate status`.
pub fn shaper_stats_file(tap: &str, netns: u64) -> String {
    format!("shaper-{tap}-{netns}.stats.json")
}

/// The shaper's nftables table for TAP `tap`. Interface names are validated to letters, digits
/// and `-_.@+`; each of those that nft does not take in an identifier gets its own escape, so
/// two TAP names never share a table.
pub fn shaper_nft_table(tap: &str) -> String {
    let mut s = String::from("tollgate_shaper_");
    for c in tap.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => s.push(c),
            '_' => s.push_str("__"),
            '-' => s.push_str("_h"),
            '.' => s.push_str("_d"),
            '@' => s.push_str("_a"),
            '+' => s.push_str("_p"),
            other => s.push_str(&format!("_x{:x}_", u32::from(other))),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn per_tenant_names_are_one_to_one() {
        let ids = [1u32, 10, 11, 100, 1000, 2000, 65_536, u32::MAX];
        for f in [vrf, tunnel, chain_tenant, chain_in, chain_out] {
            let names: BTreeSet<String> = ids.iter().map(|&i| f(i)).collect();
            assert_eq!(names.len(), ids.len());
        }
        // the chain kinds never collide with each other either
        let all: BTreeSet<String> = ids
            .iter()
            .flat_map(|&i| [chain_tenant(i), chain_in(i), chain_out(i)])
            .collect();
        assert_eq!(all.len(), 3 * ids.len());
    }

    #[test]
    fn device_names_fit_ifnamsiz() {
        assert!(vrf(u32::MAX).len() <= 15);
        assert!(tunnel(u32::MAX).len() <= 15);
        assert!(shaper_macvlan(u32::MAX).len() <= 15);
        assert!(gateway_macvlan(u32::MAX).len() <= 15);
        assert!(public_macvlan(u32::MAX).len() <= 15);
        assert_ne!(gateway_macvlan_mac(7), public_macvlan_mac(7, None));
        assert_ne!(public_macvlan_mac(7, None), shaper_macvlan_mac(7));
        assert_ne!(gateway_macvlan_mac(7), shaper_macvlan_mac(7));
    }

    #[test]
    fn shards_are_even_and_stable() {
        // consecutive ids, ids in steps of 1,000, and ids spread over the whole range
        let runs: [Vec<u32>; 3] = [
            (100_000..110_000).collect(),
            (1..=10_000).map(|i| i * 1000).collect(),
            (0..10_000u32)
                .map(|i| i.wrapping_mul(429_497) | 1)
                .collect(),
        ];
        for ids in &runs {
            let mut per = [0u32; 40];
            for &id in ids {
                per[shard_of(id, 40) as usize] += 1;
            }
            // 250 each on average; a shard's lower hashes its macvlans into 256 lists, so a
            // few dozen either way costs nothing
            assert!(per.iter().all(|&n| (240..=260).contains(&n)), "{per:?}");
        }
        // a tenant's shard depends on its id and the shard count alone
        assert_eq!(shard_of(1000, 40), shard_of(1000, 40));
        assert!((0..1000).all(|id| shard_of(id, 1) == 0 && shard_of(id, 0) == 0));
        assert!((0..100_000).all(|id| shard_of(id, 7) < 7));
        assert_eq!(shard_of(u32::MAX, u32::MAX), shard_of(u32::MAX, u32::MAX));
        assert!(shard_of(u32::MAX, u32::MAX) < u32::MAX);
    }

    #[test]
    fn shard_names() {
        assert_eq!(shard_netns("tollgate-shard", 3), "tollgate-shard3");
        assert_eq!(shard_lower(39), "tgl39");
        assert!(shard_lower(u32::MAX).len() <= 15);
        assert!(tunnel_entry_macvlan(u32::MAX).len() <= 15);
        let lower = mac_in_bucket(104);
        let mut macs = BTreeSet::new();
        for j in 0..5000 {
            let m = shard_public_mac(j, Some(lower));
            assert_ne!(macvlan_bucket(m), macvlan_bucket(lower), "shard {j}");
            assert_eq!(m[0] & 0x03, 0x02, "shard {j}: {m:02x?}");
            assert!(macs.insert(m), "shard {j}: {m:02x?} twice");
            assert_ne!(m, public_macvlan_mac(j, Some(lower)));
        }
        for id in [1, 1000, u32::MAX] {
            let m = tunnel_entry_macvlan_mac(id);
            assert!(![gateway_macvlan_mac(id), shaper_macvlan_mac(id)].contains(&m));
            assert_ne!(m, public_macvlan_mac(id, None));
        }
    }

    #[test]
    fn macvlan_macs_are_unicast_local_and_one_to_one() {
        let macs: BTreeSet<[u8; 6]> = [1u32, 256, 1000, 2000, u32::MAX]
            .iter()
            .map(|&i| shaper_macvlan_mac(i))
            .collect();
        assert_eq!(macs.len(), 5);
        for m in macs {
            assert_eq!(m[0] & 0x01, 0, "unicast");
            assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        }
    }

    #[test]
    fn gateway_tables_differ_from_every_source_table() {
        let taps = ["tg0", "tg0_gw", "tg_gw", "a", "a_gw"];
        let mut all = BTreeSet::new();
        for t in taps {
            assert!(all.insert(shaper_nft_table(t)));
            assert!(all.insert(shaper_gateway_nft_table(t)));
        }
    }

    #[test]
    fn shaper_tables_are_identifiers_and_one_to_one() {
        let taps = [
            "tg0", "tg-0", "tg_0", "tg.0", "tg@0", "tg+0", "tg_h0", "tg__0",
        ];
        let tables: BTreeSet<String> = taps.iter().map(|t| shaper_nft_table(t)).collect();
        assert_eq!(tables.len(), taps.len());
        for t in &tables {
            assert!(
                t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{t}"
            );
        }
        assert_eq!(shaper_nft_table("tg0"), "tollgate_shaper_tg0");
    }

    #[test]
    fn macvlan_buckets_are_the_kernels() {
        // computed by the kernel's own macvlan_eth_hash, compiled as C on x86-64
        for (mac, bucket) in [
            ([0x02, 0x70, 0, 0, 0x03, 0xe8], 104),
            ([0x02, 0x67, 0, 0, 0x07, 0xd0], 245),
            ([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 165),
            ([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff], 243),
        ] {
            assert_eq!(macvlan_bucket(mac), bucket, "{mac:02x?}");
        }
    }

    #[test]
    fn public_macvlans_keep_out_of_the_public_devices_hash_list() {
        // without the device's MAC: the plain form
        assert_eq!(
            public_macvlan_mac(1000, None),
            [0x02, 0x70, 0, 0, 0x03, 0xe8]
        );
        // a device MAC in the same list as tenant 1000's plain MAC (bucket 104)
        let lower = mac_in_bucket(104);
        let moved = public_macvlan_mac(1000, Some(lower));
        assert_eq!(moved, [0x06, 0x70, 0, 0, 0x03, 0xe8]);
        let mut macs = BTreeSet::new();
        for id in (1..=20_000).chain(u32::MAX - 100..=u32::MAX) {
            let m = public_macvlan_mac(id, Some(lower));
            assert_ne!(macvlan_bucket(m), macvlan_bucket(lower), "id {id}");
            // unicast, locally administered, and one to one
            assert_eq!(m[0] & 0x03, 0x02, "id {id}: {m:02x?}");
            assert!(macs.insert(m), "id {id}: {m:02x?} twice");
        }
        // the lists the tenants share stay even: about n/255 each
        let mut per = [0u32; 256];
        for id in 1..=20_000 {
            per[usize::from(macvlan_bucket(public_macvlan_mac(id, Some(lower))))] += 1;
        }
        assert_eq!(per[usize::from(macvlan_bucket(lower))], 0);
        assert!(per.iter().all(|&n| n < 200), "{per:?}");
    }
}
