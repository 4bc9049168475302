//! The config file as serde reads it: every value keeps its span for error messages, and
//! unknown keys are refused (`deny_unknown_fields`).

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub shaper: Option<Spanned<RawShaper>>,
    pub gateway: Option<Spanned<RawGateway>>,
    #[serde(default)]
    pub tenant: Vec<Spanned<RawTenant>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShaper {
    pub interface: Option<Spanned<String>>,
    pub tap: Spanned<String>,
    pub redirect: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub table: Option<Spanned<u32>>,
    pub mark: Option<Spanned<u32>>,
    pub rule_priority: Option<Spanned<u32>>,
    pub metrics: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub name: Spanned<String>,
    pub sources: Option<Spanned<Vec<Spanned<String>>>>,
    pub upload: Option<Spanned<String>>,
    pub burst: Option<Spanned<String>>,
    pub queue: Option<Spanned<String>>,
    pub queue_frames: Option<Spanned<i64>>,
    pub flows: Option<Spanned<i64>>,
    pub aqm: Option<Spanned<String>>,
    pub gso: Option<Spanned<String>>,
    pub codel_target: Option<Spanned<String>>,
    pub codel_interval: Option<Spanned<String>>,
    pub ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    // gateway keys
    pub id: Option<Spanned<i64>>,
    pub peer: Option<Spanned<String>>,
    pub networks: Option<Spanned<Vec<Spanned<String>>>>,
    pub gateway_ip: Option<Spanned<String>>,
    pub eips: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub allow_in: Option<Spanned<Vec<Spanned<String>>>>,
    pub deny_out: Option<Spanned<Vec<Spanned<String>>>>,
    pub peer_mac: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub public: Spanned<String>,
    pub underlay: Spanned<String>,
    pub underlay_address: Spanned<String>,
    pub tunnel: Spanned<String>,
    pub tunnel_mode: Spanned<String>,
    pub isolation: Spanned<String>,
    pub offload: Option<Spanned<String>>,
    pub public_gateway: Option<Spanned<String>>,
    pub vxlan_port: Option<Spanned<i64>>,
    pub rule_priority: Option<Spanned<i64>>,
    pub state_dir: Option<Spanned<String>>,
    pub shards: Option<Spanned<i64>>,
    pub shard_prefix: Option<Spanned<String>>,
}

/// `22` or `"8000-8100"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawPort {
    Number(i64),
    Range(String),
}

impl RawPort {
    pub fn to_range(&self) -> Result<super::PortRange, String> {
        let port = |n: i64| -> Result<u16, String> {
            u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {n} is not in 1-65535"))
        };
        let parse = |s: &str| -> Result<u16, String> {
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("{s:?} is not a port number"))
                .and_then(port)
        };
        match self {
            RawPort::Number(n) => {
                let p = port(*n)?;
                Ok(super::PortRange { first: p, last: p })
            }
            RawPort::Range(s) => {
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                let (first, last) = (parse(a)?, parse(b)?);
                if first > last {
                    return Err(format!("port range {s:?} is reversed"));
                }
                Ok(super::PortRange { first, last })
            }
        }
    }
}
