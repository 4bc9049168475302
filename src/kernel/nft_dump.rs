//! Reading counters and flowtables of one nftables table straight from the kernel (a netlink
//! dump on `NETLINK_NETFILTER`), for `tollgate show`.
//!
//! `nft list` builds its whole cache first (every rule, set and map of the table): at 10,000
//! tenants that alone takes seconds, however little is asked for. The kernel's own dump of the
//! rules of one table takes a fraction of that, and the counters are all `show` needs from it:
//! which rule a counter belongs to is known from the ruleset tollgate wrote.

use std::collections::HashMap;
use std::io;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETFLOWTABLE: u16 = 23;
const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
// rule attributes
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
// flowtable attributes
const NFTA_FLOWTABLE_TABLE: u16 = 1;
const NFTA_FLOWTABLE_NAME: u16 = 2;
const NFTA_FLOWTABLE_HOOK: u16 = 3;
const NFTA_FLOWTABLE_HOOK_DEVS: u16 = 3;
const NFTA_DEVICE_NAME: u16 = 1;

/// One counter: packets, bytes.
pub type Counter = (u64, u64);

/// Per chain, the counters of its rules in rule order (rules without a counter are skipped);
/// empty when the table does not exist.
pub fn rule_counters(table: &str) -> io::Result<HashMap<String, Vec<Counter>>> {
    let mut out: HashMap<String, Vec<Counter>> = HashMap::new();
    dump(NFT_MSG_GETRULE, NFTA_RULE_TABLE, table, |attrs| {
        let mut chain = None;
        let mut counters = Vec::new();
        for (t, v) in Attrs(attrs) {
            match t {
                NFTA_RULE_CHAIN => chain = Some(cstr(v)),
                NFTA_RULE_EXPRESSIONS => {
                    for (t, elem) in Attrs(v) {
                        if t == NFTA_LIST_ELEM {
                            counters.extend(counter(elem));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(c) = chain {
            out.entry(c).or_default().extend(counters);
        }
    })?;
    Ok(out)
}

/// Per flowtable of `table`: its name and devices.
pub fn flowtables(table: &str) -> io::Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    dump(NFT_MSG_GETFLOWTABLE, NFTA_FLOWTABLE_TABLE, table, |attrs| {
        let mut name = String::new();
        let mut devs = Vec::new();
        for (t, v) in Attrs(attrs) {
            match t {
                NFTA_FLOWTABLE_NAME => name = cstr(v),
                NFTA_FLOWTABLE_HOOK => {
                    for (t, hv) in Attrs(v) {
                        if t == NFTA_FLOWTABLE_HOOK_DEVS {
                            devs.extend(
                                Attrs(hv)
                                    .filter(|(t, _)| *t == NFTA_DEVICE_NAME)
                                    .map(|(_, d)| cstr(d)),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        out.push((name, devs));
    })?;
    Ok(out)
}

/// A counter expression's packets and bytes, if `elem` is one.
fn counter(elem: &[u8]) -> Option<Counter> {
    let mut name = None;
    let mut data = None;
    for (t, v) in Attrs(elem) {
        match t {
            NFTA_EXPR_NAME => name = Some(cstr(v)),
            NFTA_EXPR_DATA => data = Some(v),
            _ => {}
        }
    }
    if name.as_deref() != Some("counter") {
        return None;
    }
    let (mut packets, mut bytes) = (0, 0);
    for (t, v) in Attrs(data?) {
        let n = <[u8; 8]>::try_from(v).map(u64::from_be_bytes).unwrap_or(0);
        match t {
            NFTA_COUNTER_PACKETS => packets = n,
            NFTA_COUNTER_BYTES => bytes = n,
            _ => {}
        }
    }
    Some((packets, bytes))
}

fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// Netlink attributes of a buffer: (type without flags, payload). Stops at the first malformed
/// one (the kernel does not send those).
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let t = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let payload = &b[4..len];
        self.0 = &b[align4(len).min(b.len())..];
        Some((t, payload))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A file descriptor closed when dropped.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// Sends a dump request of message `msg` (nftables subsystem, family inet) filtered by table
/// attribute `table_attr` = `table`; calls `each` with the attributes of every answer.
fn dump(msg: u16, table_attr: u16, table: &str, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned by Fd from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    let mut name = table.as_bytes().to_vec();
    name.push(0);
    let too_long = |_| io::Error::other("table name too long");
    let attr_len = u16::try_from(4 + name.len()).map_err(too_long)?;
    let total = 16 + 4 + align4(usize::from(attr_len));
    let mut req = Vec::with_capacity(total);
    req.extend_from_slice(&u32::try_from(total).map_err(too_long)?.to_ne_bytes());
    req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    req.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]); // nfgenmsg: family, version, res_id
    req.extend_from_slice(&attr_len.to_ne_bytes());
    req.extend_from_slice(&table_attr.to_ne_bytes());
    req.extend_from_slice(&name);
    req.resize(total, 0);
    // SAFETY: a zeroed sockaddr_nl is valid (the kernel as destination).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).unwrap_or(16);
    // SAFETY: req and sa outlive the call; lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.0,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const sa).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(12),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut b = &buf[..n as usize];
        while b.len() >= 16 {
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            if len < 16 || len > b.len() {
                return Err(io::Error::other("malformed netlink answer"));
            }
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
                    if code == 0 {
                        return Ok(());
                    }
                    // no such table: nothing to report
                    if -code == libc::ENOENT {
                        return Ok(());
                    }
                    return Err(io::Error::from_raw_os_error(-code));
                }
                _ if len >= 20 => each(&b[20..len]),
                _ => {}
            }
            b = &b[align4(len).min(b.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(4 + payload.len())
            .unwrap()
            .to_ne_bytes()
            .to_vec();
        v.extend_from_slice(&t.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn a_counter_expression_is_read_and_others_are_not() {
        let mut data = attr(NFTA_COUNTER_BYTES, &1500u64.to_be_bytes());
        data.extend(attr(NFTA_COUNTER_PACKETS, &3u64.to_be_bytes()));
        let mut elem = attr(NFTA_EXPR_NAME, b"counter\0");
        elem.extend(attr(NFTA_EXPR_DATA | 0x8000, &data));
        assert_eq!(counter(&elem), Some((3, 1500)));
        let other = attr(NFTA_EXPR_NAME, b"cmp\0");
        assert_eq!(counter(&other), None);
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        let mut b = attr(1, b"abc\0");
        b.extend_from_slice(&[200, 0, 1, 0]);
        let all: Vec<_> = Attrs(&b).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(cstr(all[0].1), "abc");
    }
}
