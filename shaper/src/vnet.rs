//! A typed view over the `virtio_net_hdr` that prefixes every frame on an `IFF_VNET_HDR` TAP.
//!
//! With offloads on, the kernel hands the TAP whole GSO super-frames (up to ~64 KiB) plus this
//! header saying how it would have cut them. A frame queued whole is written back with its
//! header unchanged, so the kernel never segments or checksums on our behalf; the header tells
//! the bucket how many segments the frame stands for. Slow tenants' TCP frames are cut into
//! those segments before they are queued ([`crate::segment`]).

/// Size of `struct virtio_net_hdr` (without `num_buffers`), as the TAP is configured.
pub use tollgate::kernel::tap::VNET_HDR_LEN;

/// `gso_type` values (include/uapi/linux/virtio_net.h).
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// The fields of a vnet header the shaper needs. Little-endian: the TAP is little-endian on the
/// hosts we support (x86_64, aarch64), the same as virtio 1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `buf`; None if `buf` is too short.
    pub fn parse(buf: &[u8]) -> Option<VnetHdr> {
        let b = buf.get(..VNET_HDR_LEN)?;
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
        })
    }

    /// True when the frame is a GSO super-frame the kernel would cut into `gso_size` pieces.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE && self.gso_size > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_le_fields() {
        let b = [1u8, GSO_TCPV4, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0xff];
        let h = VnetHdr::parse(&b).unwrap();
        assert_eq!(h.flags, 1);
        assert_eq!(h.hdr_len, 66);
        assert_eq!(h.gso_size, 1448);
        assert!(h.is_gso());
        assert!(VnetHdr::parse(&b[..9]).is_none());
        let plain = VnetHdr::parse(&[0u8; 10]).unwrap();
        assert!(!plain.is_gso());
        let ecn_only = VnetHdr {
            gso_type: GSO_ECN,
            gso_size: 1448,
            ..Default::default()
        };
        assert!(!ecn_only.is_gso());
    }
}
