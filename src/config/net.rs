//! IPv4 prefixes as the config writes them ("198.51.100.128/25"), stored as integer ranges so
//! overlap checks and the shaper's classifier are simple comparisons.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: address with host bits clear, and a prefix length 0..=32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    /// 0.0.0.0/0
    pub const DEFAULT: Ipv4Net = Ipv4Net {
        addr: Ipv4Addr::UNSPECIFIED,
        len: 0,
    };

    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is larger than 32"));
        }
        let net = Ipv4Net { addr, len };
        if u32::from(addr) & !net.mask() != 0 {
            let fixed = Ipv4Addr::from(u32::from(addr) & net.mask());
            return Err(format!(
                "{addr}/{len} has host bits set (did you mean {fixed}/{len}?)"
            ));
        }
        Ok(net)
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }
    /// First address, as an integer.
    pub fn first(&self) -> u32 {
        u32::from(self.addr)
    }
    /// Last address, as an integer.
    pub fn last(&self) -> u32 {
        self.first() | !self.mask()
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let x = u32::from(ip);
        x >= self.first() && x <= self.last()
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| {
            if a.contains(':') {
                format!("{s:?}: IPv6 is not supported yet, only IPv4 prefixes")
            } else {
                format!("{s:?} is not an IPv4 address or prefix")
            }
        })?;
        let len = match l {
            None => 32,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?}: prefix length {l:?} is not a number 0-32"))?,
        };
        Ipv4Net::new(addr, len)
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_host_bits() {
        let n: Ipv4Net = "198.51.100.128/25".parse().unwrap();
        assert_eq!(n.first(), u32::from(Ipv4Addr::new(198, 51, 100, 128)));
        assert_eq!(n.last(), u32::from(Ipv4Addr::new(198, 51, 100, 255)));
        let h: Ipv4Net = "198.51.100.10".parse().unwrap();
        assert_eq!(h.prefix_len(), 32);
        let e = "198.51.100.129/25".parse::<Ipv4Net>().unwrap_err();
        assert!(e.contains("did you mean 198.51.100.128/25"), "{e}");
        assert!(
            "2001:db8::/32"
                .parse::<Ipv4Net>()
                .unwrap_err()
                .contains("IPv6")
        );
        assert!("1.2.3.4/33".parse::<Ipv4Net>().is_err());
        assert!("1.2.3.4/x".parse::<Ipv4Net>().is_err());
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.last(), u32::MAX);
    }

    #[test]
    fn overlap() {
        let a: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let b: Ipv4Net = "10.0.0.128/25".parse().unwrap();
        let c: Ipv4Net = "10.0.1.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains(Ipv4Addr::new(10, 0, 0, 200)));
    }
}
