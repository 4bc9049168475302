//! Reading and writing sysctls by their dotted names (`net.ipv4.ip_forward`), for both halves:
//! the shaper and the gateway each record what they change and put it back.

use std::io;
use std::path::PathBuf;

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// A sysctl's current value, trimmed (interface names containing '.' are not supported).
pub fn read(key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(key))?.trim().to_string())
}

pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key), value)
}

/// True when the kernel has this sysctl (e.g. IPv6 keys on a kernel without IPv6).
pub fn exists(key: &str) -> bool {
    path(key).exists()
}
