//! The intermediate TAP device, opened with the tun ioctls directly.
//!
//! The usual TAP crate (tun-tap 0.1) sets only IFF_TAP|IFF_NO_PI and has no offload API, which
//! caps a relay at ~2 Gbit/s here; with IFF_VNET_HDR + TUNSETOFFLOAD the kernel hands us GSO
//! frames of up to 64 KiB and a relay runs ~6x faster. The handful of ioctls needed is smaller
//! than adapting a crate (tun-rs's GRO helpers assume IP, not Ethernet), so we own them here.
//!
//! The device is not persistent: it disappears when the daemon's descriptor closes, including on
//! SIGKILL, so a crash never leaves a TAP behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Size of `struct virtio_net_hdr` (without `num_buffers`): the header on every TAP frame.
pub const VNET_HDR_LEN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP {name:?} is in use by another process (is another tollgate-shaper running?)")]
    Busy { name: String },
    #[error("cannot open /dev/net/tun (CONFIG_TUN): {0}")]
    NoTun(io::Error),
    #[error("{op} on TAP {name:?}: {err}")]
    Ioctl {
        op: &'static str,
        name: String,
        err: io::Error,
    },
}

/// `IFF_*` flags as the kernel's 16-bit `ifr_flags`; every flag used here is below 0x8000.
#[allow(clippy::cast_possible_truncation)]
const fn ifr_flags(flags: libc::c_int) -> libc::c_short {
    assert!(flags >= 0 && flags <= libc::c_short::MAX as libc::c_int);
    flags as libc::c_short
}

/// An `ifreq` naming `name` (truncated to IFNAMSIZ-1 bytes; names are validated before).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name and a union of integers and sockaddrs), for
    // which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (o, b) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *o = b as libc::c_char;
    }
    req
}

/// An open TAP with a 10-byte vnet header on every frame, checksum and TSO offloads on.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    mac: [u8; 6],
}

impl Tap {
    /// Creates (or attaches to a free, persistent) TAP `name`, sets offloads and brings it up;
    /// `noarp` sets IFF_NOARP (route mode: the neighbour of the route is the TAP's own MAC).
    pub fn create(name: &str, noarp: bool) -> Result<Tap, TapError> {
        let err = |op, err| TapError::Ioctl {
            op,
            name: name.to_string(),
            err,
        };
        // SAFETY: plain open(2) of a C string literal.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(TapError::NoTun(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = ifr_flags(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads and writes an ifreq we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                return Err(TapError::Busy {
                    name: name.to_string(),
                });
            }
            return Err(err("TUNSETIFF", e));
        }
        let hdr: libc::c_int = 10;
        const _: () = assert!(VNET_HDR_LEN == 10);
        // SAFETY: TUNSETVNETHDRSZ reads an int we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr) } < 0 {
            return Err(err("TUNSETVNETHDRSZ", io::Error::last_os_error()));
        }
        // Always set explicitly: a persistent TAP keeps its previous user's offloads.
        let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offload),
            )
        } < 0
        {
            return Err(err("TUNSETOFFLOAD", io::Error::last_os_error()));
        }
        let sock = Ctl::new().map_err(|e| err("socket", e))?;
        let mac = sock.hwaddr(name).map_err(|e| err("SIOCGIFHWADDR", e))?;
        let mut up = ifr_flags(libc::IFF_UP);
        if noarp {
            up |= ifr_flags(libc::IFF_NOARP);
        }
        sock.set_flags(name, up)
            .map_err(|e| err("SIOCSIFFLAGS", e))?;
        Ok(Tap {
            fd,
            name: name.to_string(),
            mac,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads one frame (vnet header + Ethernet) into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame (vnet header + Ethernet); the kernel receives it as if from a wire.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is valid for frame.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Makes reads return `WouldBlock` instead of sleeping (the reader polls when drained).
    pub fn set_nonblocking(&self) -> io::Result<()> {
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The TAP's interface index.
    pub fn index(&self) -> io::Result<u32> {
        let c = std::ffi::CString::new(self.name.as_str()).map_err(io::Error::other)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        match unsafe { libc::if_nametoindex(c.as_ptr()) } {
            0 => Err(io::Error::last_os_error()),
            i => Ok(i),
        }
    }

    /// Waits up to `timeout_ms` for a frame; false on timeout.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(n > 0)
    }
}

/// An AF_INET datagram socket for interface ioctls.
struct Ctl(OwnedFd);

impl Ctl {
    fn new() -> io::Result<Ctl> {
        // SAFETY: plain socket(2).
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor we own.
        Ok(Ctl(unsafe { OwnedFd::from_raw_fd(s) }))
    }

    fn hwaddr(&self, name: &str) -> io::Result<[u8; 6]> {
        let mut req = ifreq(name);
        // SAFETY: SIOCGIFHWADDR fills the ifreq we own.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR succeeded, so the union holds ifru_hwaddr.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(data.iter()) {
            *m = *b as u8;
        }
        Ok(mac)
    }

    fn set_flags(&self, name: &str, add: libc::c_short) -> io::Result<()> {
        let mut req = ifreq(name);
        // SAFETY: SIOCGIFFLAGS fills the ifreq we own; the union then holds ifru_flags, which
        // SIOCSIFFLAGS reads back.
        unsafe {
            if libc::ioctl(self.0.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= add;
            if libc::ioctl(self.0.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The process holding TAP `name` open (the daemon serving it), found in `/proc/*/fdinfo`: the
/// kernel writes `iff:\t<name>` there for a TUN/TAP descriptor.
pub fn owner_pid(name: &str) -> Option<u32> {
    let want = format!("iff:\t{name}");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_to_string(fd.path())
                .is_ok_and(|t| t.lines().any(|l| l.trim_end() == want))
            {
                return Some(pid);
            }
        }
    }
    None
}
