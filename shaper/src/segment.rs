//! Cutting a TCP/IPv4 GSO super-frame into the segments the kernel would have sent, for
//! tenants slow enough that one super-frame would hold their queue for milliseconds.
//!
//! Why: the bucket charges a frame in full when it leaves, so at 20 Mbit/s a 64 KiB frame
//! holds the tenant for 26 ms, and a ping from the same tenant waits behind it whatever the
//! flow queues do. Cut into MSS-sized segments, each segment is a queue entry of its own: the
//! flow queues let the ping in after one segment (0.6 ms at 20 Mbit/s), CoDel drops one
//! segment instead of forty-five, and the receiver never gets 64 KiB at once.
//!
//! Each segment is what the kernel's `tcp_gso_segment` makes of the frame: the headers copied,
//! the IPv4 total length, identification (+1 per segment) and header checksum rewritten, the
//! TCP sequence number advanced, FIN and PSH kept on the last segment only and CWR on the
//! first only. The TCP checksum is still left to the kernel, as for the super-frame: the vnet
//! header says `NEEDS_CSUM` and the checksum field holds the pseudo-header sum for the
//! segment's own length (what the kernel puts there for a partial checksum).
//!
//! A typed view over the frame, in the style of the rest of the dataplane: nothing is allocated,
//! each segment is written into a buffer the caller provides.

use crate::vnet::{GSO_ECN, GSO_NONE, GSO_TCPV4, VNET_HDR_LEN, VnetHdr};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` is left to the kernel.
pub const F_NEEDS_CSUM: u8 = 1;

const ETH_LEN: usize = 14;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The segments of one TCP/IPv4 GSO frame (vnet header, Ethernet, IPv4, TCP, payload).
#[derive(Debug)]
pub struct Tcp4Segments<'a> {
    frame: &'a [u8],
    /// IPv4 and TCP header lengths.
    ihl: usize,
    thl: usize,
    mss: usize,
    payload: usize,
}

impl<'a> Tcp4Segments<'a> {
    /// A view of `frame` (starting with its vnet header `vnet`) if it is a TCP/IPv4 GSO frame
    /// with a partial checksum and a payload; None for anything else, which is then passed on
    /// whole.
    pub fn new(frame: &'a [u8], vnet: &VnetHdr) -> Option<Tcp4Segments<'a>> {
        if vnet.gso_type & !GSO_ECN != GSO_TCPV4
            || vnet.gso_size == 0
            || vnet.flags & F_NEEDS_CSUM == 0
        {
            return None;
        }
        let l3 = VNET_HDR_LEN + ETH_LEN;
        if frame.get(l3 - 2..l3)? != [0x08, 0x00] {
            return None;
        }
        let ip = frame.get(l3..l3 + 20)?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 {
            return None;
        }
        let l4 = l3 + ihl;
        let thl = usize::from(frame.get(l4 + 12)? >> 4) * 4;
        if thl < 20 || frame.len() <= l4 + thl {
            return None;
        }
        Some(Tcp4Segments {
            frame,
            ihl,
            thl,
            mss: usize::from(vnet.gso_size),
            payload: frame.len() - l4 - thl,
        })
    }

    /// How many segments the frame holds.
    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.mss)
    }

    fn headers(&self) -> usize {
        VNET_HDR_LEN + ETH_LEN + self.ihl + self.thl
    }

    fn payload_of(&self, i: usize) -> usize {
        self.mss.min(self.payload.saturating_sub(i * self.mss))
    }

    /// Segment `i`'s length with its vnet header (the buffer it needs).
    pub fn len_of(&self, i: usize) -> usize {
        self.headers() + self.payload_of(i)
    }

    /// Segment `i`'s IPv4 bytes: what the bucket charges for it.
    pub fn cost_of(&self, i: usize) -> u32 {
        u32::try_from(self.ihl + self.thl + self.payload_of(i)).unwrap_or(u32::MAX)
    }

    /// Writes segment `i` (`i < count()`) into `out`, vnet header first; returns its length,
    /// or None if `i` is out of range or `out` is too short.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count() {
            return None;
        }
        let (h, n) = (self.headers(), self.payload_of(i));
        let out = out.get_mut(..h + n)?;
        out[..h].copy_from_slice(&self.frame[..h]);
        let from = h + i * self.mss;
        out[h..].copy_from_slice(&self.frame[from..from + n]);

        let l3 = VNET_HDR_LEN + ETH_LEN;
        let l4 = l3 + self.ihl;
        // vnet: no GSO, checksum left to the kernel from the TCP header on
        out[..VNET_HDR_LEN].fill(0);
        out[0] = F_NEEDS_CSUM;
        out[1] = GSO_NONE;
        let csum_start = u16::try_from(ETH_LEN + self.ihl).ok()?;
        out[6..8].copy_from_slice(&csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&16u16.to_le_bytes());

        // IPv4: length, identification, header checksum
        let tcp_len = self.thl + n;
        let total = u16::try_from(self.ihl + tcp_len).ok()?;
        out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        let id = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]);
        // identifications wrap at 16 bits, as the kernel's
        let step = u16::try_from(i & 0xffff).unwrap_or(0);
        out[l3 + 4..l3 + 6].copy_from_slice(&id.wrapping_add(step).to_be_bytes());
        out[l3 + 10..l3 + 12].fill(0);
        let ip_sum = !fold(sum16(&out[l3..l4]));
        out[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());

        // TCP: sequence number, flags, pseudo-header sum for a partial checksum
        let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]]);
        let advance = u32::try_from(i * self.mss).ok()?;
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add(advance).to_be_bytes());
        if i + 1 < self.count() {
            out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            out[l4 + 13] &= !TCP_CWR;
        }
        let pseudo = sum16(&out[l3 + 12..l3 + 20]) + 6 + u32::try_from(tcp_len).ok()?;
        out[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        Some(h + n)
    }
}

/// The one's-complement sum of big-endian 16-bit words, not yet folded.
fn sum16(b: &[u8]) -> u32 {
    let mut s: u32 = 0;
    let mut words = b.chunks_exact(2);
    for w in &mut words {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        s += u32::from(*last) << 8;
    }
    s
}

/// Folds a 32-bit sum into 16 bits with end-around carry.
fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const MSS: u16 = 1448;

    /// A GSO frame as the TAP hands it over: vnet header, then a TCP/IPv4 frame of `payload`
    /// bytes with FIN, PSH and CWR set and the pseudo-header sum in the checksum field.
    fn gso_frame(payload: &[u8]) -> (VnetHdr, Vec<u8>) {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 2], [10, 2, 0, 1], 64)
            .tcp(40000, 5201, 0xffff_f000, 512)
            .fin()
            .psh()
            .cwr()
            .ack(7);
        let mut frame = vec![0u8; VNET_HDR_LEN];
        b.write(&mut frame, payload).expect("builds");
        let l3 = VNET_HDR_LEN + ETH_LEN;
        // identification near the wrap, to see it wrap
        frame[l3 + 4..l3 + 6].copy_from_slice(&0xfffeu16.to_be_bytes());
        let vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: MSS,
        };
        frame[0] = vnet.flags;
        frame[1] = vnet.gso_type;
        frame[4..6].copy_from_slice(&MSS.to_le_bytes());
        (vnet, frame)
    }

    /// What the kernel does with a partial checksum: sum from csum_start to the end (the
    /// checksum field holding the pseudo-header sum), fold, invert, store.
    fn finish_checksum(seg: &mut [u8]) {
        let start = VNET_HDR_LEN + usize::from(u16::from_le_bytes([seg[6], seg[7]]));
        let at = start + usize::from(u16::from_le_bytes([seg[8], seg[9]]));
        let c = !fold(sum16(&seg[start..]));
        seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn segments_are_what_the_kernel_would_send() {
        let payload: Vec<u8> = (0..5000u32)
            .map(|i| (i * 7 % 251).to_le_bytes()[0])
            .collect();
        let (vnet, frame) = gso_frame(&payload);
        let s = Tcp4Segments::new(&frame, &vnet).expect("a TCP/IPv4 GSO frame");
        assert_eq!(s.count(), 4);
        let mut joined = Vec::new();
        let mut costs = 0u64;
        for i in 0..s.count() {
            let mut out = vec![0u8; 2048];
            let n = s.write(i, &mut out).expect("fits");
            assert_eq!(n, s.len_of(i));
            costs += u64::from(s.cost_of(i));
            let mut seg = out[..n].to_vec();
            let v = VnetHdr::parse(&seg).expect("vnet");
            assert_eq!(
                (v.flags, v.gso_type, v.gso_size),
                (F_NEEDS_CSUM, GSO_NONE, 0)
            );
            finish_checksum(&mut seg);
            let p = SlicedPacket::from_ethernet(&seg[VNET_HDR_LEN..]).expect("parses");
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                panic!("not IPv4")
            };
            let h = ip.header().to_header();
            assert_eq!(usize::from(h.total_len), n - VNET_HDR_LEN - ETH_LEN);
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "segment {i}");
            assert_eq!(
                h.identification,
                0xfffeu16.wrapping_add(u16::try_from(i).expect("few segments")),
                "one identification per segment, wrapping"
            );
            let Some(TransportSlice::Tcp(t)) = &p.transport else {
                panic!("not TCP")
            };
            let th = t.to_header();
            assert_eq!(
                th.sequence_number,
                0xffff_f000u32.wrapping_add(u32::try_from(i).expect("few segments") * 1448)
            );
            let last = i + 1 == s.count();
            assert_eq!((th.fin, th.psh), (last, last), "segment {i}");
            assert_eq!(th.cwr, i == 0, "segment {i}");
            assert!(th.ack && th.acknowledgment_number == 7);
            let expect = th.calc_checksum_ipv4(&h, t.payload()).expect("checksum");
            assert_eq!(th.checksum, expect, "TCP checksum of segment {i}");
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, payload, "the payload, in order, once");
        let l3_len = frame.len() - VNET_HDR_LEN - ETH_LEN;
        assert_eq!(
            costs,
            u64::from(crate::classify::cost(&vnet, l3_len, 40)),
            "segments cost what the whole frame was charged"
        );
        assert!(s.write(4, &mut [0u8; 2048]).is_none());
        assert!(s.write(0, &mut [0u8; 100]).is_none(), "too short a buffer");
    }

    #[test]
    fn anything_else_is_not_cut() {
        let (vnet, frame) = gso_frame(&[1u8; 3000]);
        let plain = VnetHdr {
            gso_type: GSO_NONE,
            gso_size: 0,
            ..vnet
        };
        assert!(Tcp4Segments::new(&frame, &plain).is_none());
        let no_csum = VnetHdr { flags: 0, ..vnet };
        assert!(Tcp4Segments::new(&frame, &no_csum).is_none());
        let mut udp = frame.clone();
        udp[VNET_HDR_LEN + ETH_LEN + 9] = 17;
        assert!(Tcp4Segments::new(&udp, &vnet).is_none());
        let mut v6 = frame.clone();
        v6[VNET_HDR_LEN + 12] = 0x86;
        v6[VNET_HDR_LEN + 13] = 0xdd;
        assert!(Tcp4Segments::new(&v6, &vnet).is_none());
        let headers_only = &frame[..VNET_HDR_LEN + ETH_LEN + 40];
        assert!(Tcp4Segments::new(headers_only, &vnet).is_none());
        // truncated anywhere: never a panic, at most a view
        for len in 0..frame.len() {
            if let Some(s) = Tcp4Segments::new(&frame[..len], &vnet) {
                let mut out = vec![0u8; 2048];
                for i in 0..s.count() {
                    assert!(s.write(i, &mut out).is_some());
                }
            }
        }
        let ecn = VnetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            ..vnet
        };
        assert_eq!(Tcp4Segments::new(&frame, &ecn).map(|s| s.count()), Some(3));
    }
}
