//! tc(8)-style units for rates and sizes, so operators can copy values from their tc scripts.
//!
//! Rates: `bit kbit mbit gbit tbit` (powers of 1000, bits per second), `kibit mibit gibit tibit`
//! (powers of 1024) and `bps kbps mbps gbps tbps` which, as in tc, mean **bytes** per second.
//! A rate needs its unit: a bare number (tc would read bits per second) is refused, since
//! `upload = "20"` meant as 20 Mbit/s would stall an upload at 20 bit/s. Sizes: `b`, `k`/`kb`, `m`/`mb`, `g`/`gb` (powers of 1024,
//! bytes, as tc reads `burst`/`limit`), `kbit mbit gbit` (bits), a bare number is bytes.

use thiserror::Error;

/// A unit string that could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("{0:?} is not a number followed by a unit")]
    Malformed(String),
    #[error("unknown unit {unit:?} in {value:?} (expected one of {expected})")]
    UnknownUnit {
        value: String,
        unit: String,
        expected: &'static str,
    },
    #[error("{0:?} is out of range")]
    OutOfRange(String),
    #[error("{0:?} must be greater than zero")]
    Zero(String),
    #[error(
        "{0:?} has no unit: a rate needs one (bit kbit mbit gbit tbit; bps kbps mbps gbps tbps are bytes/s); did you mean \"{0}mbit\"?"
    )]
    NoUnit(String),
}

const RATE_UNITS: &str = "bit kbit mbit gbit tbit kibit mibit gibit tibit bps kbps mbps gbps tbps";
const SIZE_UNITS: &str = "b k kb m mb g gb kbit mbit gbit";

fn split(value: &str) -> Result<(f64, String), UnitError> {
    let v = value.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(end);
    let n: f64 = num
        .parse()
        .map_err(|_| UnitError::Malformed(value.to_string()))?;
    if !n.is_finite() {
        return Err(UnitError::Malformed(value.to_string()));
    }
    Ok((n, unit.trim().to_ascii_lowercase()))
}

fn to_u64(x: f64, value: &str) -> Result<u64, UnitError> {
    if x < 1.0 {
        return Err(UnitError::Zero(value.to_string()));
    }
    if x > u64::MAX as f64 / 2.0 {
        return Err(UnitError::OutOfRange(value.to_string()));
    }
    // in range (checked above), so the float-to-integer conversion is exact up to rounding
    #[allow(clippy::cast_possible_truncation)]
    Ok(x.round() as u64)
}

/// Parses a rate and returns it in **bytes per second** (the unit the shaper's buckets use).
pub fn parse_rate(value: &str) -> Result<u64, UnitError> {
    let (n, unit) = split(value)?;
    let bits_per_unit: f64 = match unit.as_str() {
        "" => return Err(UnitError::NoUnit(value.trim().to_string())),
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kibit" => 1024.0,
        "mibit" => 1024.0 * 1024.0,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "tibit" => 1024.0f64.powi(4),
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        "tbps" => 8e12,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_string(),
                unit,
                expected: RATE_UNITS,
            });
        }
    };
    to_u64(n * bits_per_unit / 8.0, value)
}

/// Parses a size and returns it in bytes.
pub fn parse_size(value: &str) -> Result<u64, UnitError> {
    let (n, unit) = split(value)?;
    let bytes_per_unit: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_string(),
                unit,
                expected: SIZE_UNITS,
            });
        }
    };
    to_u64(n * bytes_per_unit, value)
}

const TIME_UNITS: &str = "us ms s";

/// A duration like tc writes it (`5ms`, `100ms`, `1s`, `500us`), in nanoseconds; a unit is
/// required.
pub fn parse_duration(value: &str) -> Result<u64, UnitError> {
    let (n, unit) = split(value)?;
    let ns_per_unit: f64 = match unit.as_str() {
        "us" => 1e3,
        "ms" => 1e6,
        "s" | "sec" => 1e9,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_string(),
                unit,
                expected: TIME_UNITS,
            });
        }
    };
    to_u64(n * ns_per_unit, value)
}

/// Formats a rate given in bytes per second the way tc prints it (bits, SI prefixes).
pub fn format_rate(bytes_per_sec: u64) -> String {
    let bits = bytes_per_sec as f64 * 8.0;
    if bits >= 1e9 {
        format!("{:.3}Gbit", bits / 1e9)
    } else if bits >= 1e6 {
        format!("{:.3}Mbit", bits / 1e6)
    } else if bits >= 1e3 {
        format!("{:.3}Kbit", bits / 1e3)
    } else {
        format!("{bits:.0}bit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("5ms").unwrap(), 5_000_000);
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration("250us").unwrap(), 250_000);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn rates_follow_tc() {
        assert_eq!(parse_rate("20mbit"), Ok(2_500_000));
        assert_eq!(parse_rate("8bit"), Ok(1));
        assert_eq!(parse_rate("10gbit"), Ok(1_250_000_000));
        assert_eq!(parse_rate("1.5mbit"), Ok(187_500));
        assert_eq!(parse_rate("1kibit"), Ok(128));
        // bps is BYTES per second in tc
        assert_eq!(parse_rate("1mbps"), Ok(1_000_000));
        assert_eq!(parse_rate("8000bit"), Ok(1000));
        let e = parse_rate("20").unwrap_err();
        assert_eq!(e, UnitError::NoUnit("20".into()));
        assert!(e.to_string().contains("did you mean \"20mbit\""), "{e}");
        assert_eq!(parse_rate(" 50MBit "), Ok(6_250_000));
    }

    #[test]
    fn bad_rates_are_named() {
        assert!(matches!(
            parse_rate("20mbits"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_rate("fast"), Err(UnitError::Malformed(_))));
        assert!(matches!(parse_rate("0mbit"), Err(UnitError::Zero(_))));
        assert!(matches!(parse_rate("1bit"), Err(UnitError::Zero(_))));
        assert!(matches!(parse_rate(""), Err(UnitError::Malformed(_))));
        assert!(matches!(
            parse_rate("1.2.3mbit"),
            Err(UnitError::Malformed(_))
        ));
        let msg = parse_rate("3furlongs").unwrap_err().to_string();
        assert!(msg.contains("furlongs") && msg.contains("mbit"), "{msg}");
    }

    #[test]
    fn sizes_follow_tc() {
        assert_eq!(parse_size("256kb"), Ok(262_144));
        assert_eq!(parse_size("2mb"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("8kbit"), Ok(1000));
        assert!(matches!(
            parse_size("2 parsecs"),
            Err(UnitError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn formats_like_tc() {
        assert_eq!(format_rate(2_500_000), "20.000Mbit");
        assert_eq!(format_rate(1_250_000_000), "10.000Gbit");
    }
}
