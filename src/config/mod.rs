//! The one declarative file both binaries read (`tollgate` and `tollgate-shaper`).
//!
//! Parsing is two steps: serde reads the TOML into `raw` structs that keep each value's byte span
//! (unknown keys are refused there), then `validate` turns them into the typed model below and
//! checks what serde cannot (units, prefixes, overlaps, duplicates). Every error names the file,
//! line, column and key, and nothing touches the kernel before this has succeeded.

pub mod examples;
mod gateway;
mod net;
mod raw;
mod schema;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use gateway::{
    FwMatch, GatewayConfig, Isolation, Offload, Shards, TenantGateway, Tunnel, TunnelMode,
};
pub use net::Ipv4Net;
use raw::{RawConfig, RawShaper, RawTenant};
use thiserror::Error;
use toml::Spanned;

/// The largest frame the kernel hands a TAP with TSO enabled (64 KiB of IP plus headers): a
/// queue must hold at least one, or such frames could never pass.
pub const MAX_GSO_FRAME: u64 = 65_536;

/// A config problem, with where it is.
#[derive(Debug, Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column; 0 when the problem is not tied to a place (e.g. unreadable file).
    pub line: usize,
    pub column: usize,
    /// The key, as a dotted path (`tenant[1].upload`), or empty.
    pub key: String,
    pub message: String,
    /// Further problems found in the same pass (each reported with its own place).
    pub also: Vec<ConfigError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        for e in &self.also {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

/// How tenant traffic is steered into the TAP (see docs/shaper.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectMode {
    /// nftables netdev ingress `fwd to` the TAP. Fails closed if the daemon dies.
    Netdev,
    /// nft mark + `ip rule fwmark` + a route to the TAP. Fails open if the daemon dies.
    Route,
}

/// The `[shaper]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShaperConfig {
    /// Where source-address tenants' traffic enters this host (those without `interfaces`);
    /// not needed when every shaped tenant is a gateway tenant or names its interfaces.
    pub interface: Option<String>,
    /// Name of the intermediate TAP device the daemon creates.
    pub tap: String,
    pub redirect: RedirectMode,
    /// Where the daemon records what it changed, to undo it after a crash.
    pub state_dir: PathBuf,
    /// Route mode: routing table holding the route to the TAP.
    pub table: u32,
    /// Route mode: packet mark that selects the table.
    pub mark: u32,
    /// Route mode: priority of the fwmark rule; the `local` rule is moved right after it.
    pub rule_priority: u32,
    /// Where the Prometheus metrics endpoint listens (`[shaper] metrics`); off when None.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Per-tenant shaping of traffic towards local services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shaping {
    /// Token rate, bytes of IP packets per second.
    pub rate: u64,
    /// Bucket depth, bytes.
    pub burst: u64,
    /// Queue limit, bytes; beyond it the head of the fullest flow is dropped.
    pub queue: u64,
    /// Most frames queued at once, whatever their size: a flood of tiny frames holds at most
    /// this many buffers.
    pub frames: u64,
    /// Flow queues inside the tenant, served round-robin by bytes, new flows first (1: one
    /// FIFO).
    pub flows: u32,
    /// CoDel on each flow queue; None: off (drops only when the queue is full).
    pub codel: Option<Codel>,
    /// Cut TCP/IPv4 GSO super-frames into segments as they are queued (`gso = "split"`), so
    /// the queue and the bucket work per segment; by default below [`SPLIT_GSO_BELOW`].
    pub split_gso: bool,
}

/// Rates (bytes/s) below which a tenant's GSO frames are cut into segments by default: a
/// 64 KiB frame would hold the tenant for more than a millisecond (524 Mbit/s).
pub const SPLIT_GSO_BELOW: u64 = MAX_GSO_FRAME * 1000;

/// CoDel's two parameters (RFC 8289).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codel {
    /// Acceptable standing queue delay, ns.
    pub target_ns: u64,
    /// Window over which the delay must stay above target before dropping, ns.
    pub interval_ns: u64,
}

impl Codel {
    /// 5 ms / 100 ms, as fq_codel and CAKE.
    pub const DEFAULT: Codel = Codel {
        target_ns: 5_000_000,
        interval_ns: 100_000_000,
    };
}

/// Default flow queues per tenant.
pub const DEFAULT_FLOWS: u32 = 32;

impl Shaping {
    /// `rate`, `burst` and `queue` with the defaults for the rest (frame cap, flow queues,
    /// CoDel on, GSO frames cut below [`SPLIT_GSO_BELOW`]).
    pub fn new(rate: u64, burst: u64, queue: u64) -> Shaping {
        Shaping {
            rate,
            burst,
            queue,
            frames: default_frames(queue),
            flows: DEFAULT_FLOWS,
            codel: Some(Codel::DEFAULT),
            split_gso: rate < SPLIT_GSO_BELOW,
        }
    }
}

/// An inclusive range of destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// Source prefixes; they never overlap another tenant's.
    pub sources: Vec<Ipv4Net>,
    /// Shaping of this tenant's ingress to local services; None = not shaped.
    pub shaping: Option<Shaping>,
    /// Local destination ports (TCP and UDP); empty = all traffic.
    pub ports: Vec<PortRange>,
    /// Ingress devices; empty = the shaper's `interface`.
    pub interfaces: Vec<String>,
    /// The tenant's gateway settings (VRF, tunnel, EIPs, firewall); None without [gateway].
    pub gateway: Option<TenantGateway>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    /// The file's text, for messages that point into it after parsing.
    pub text: String,
    pub shaper: Option<ShaperConfig>,
    pub gateway: Option<GatewayConfig>,
    pub tenants: Vec<Tenant>,
}

impl ConfigError {
    /// An error about the file as a whole (no line or key to point at).
    pub fn whole_file(path: &Path, message: &str) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.to_string(),
            also: Vec::new(),
        }
    }

    /// The first of `errors`, carrying the rest (None if there are none).
    pub fn many(errors: Vec<ConfigError>) -> Option<ConfigError> {
        let mut it = errors.into_iter();
        let mut first = it.next()?;
        first.also.extend(it);
        Some(first)
    }

    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        1 + self.also.len()
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
            also: Vec::new(),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cx = Cx { text, path };
        // 1. syntax (the parser stops at the first error), 2. the shape of every key, all
        // problems at once, 3. serde into the raw structs, 4. values, all sections and tenants
        let doc =
            toml_edit::ImDocument::parse(text).map_err(|e| cx.syntax(e.span(), e.message()))?;
        let shape: Vec<ConfigError> = schema::check(&doc)
            .into_iter()
            .map(|(at, key, message)| cx.err_at(at, &key, &message))
            .collect();
        if let Some(e) = ConfigError::many(shape) {
            return Err(e);
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| cx.syntax(e.span(), e.message()))?;
        let mut errors = Vec::new();
        let gateway = match &raw.gateway {
            Some(g) => cx.gateway(g).map_err(|e| errors.push(e)).ok(),
            None => None,
        };
        let gateway_ok = errors.is_empty();
        let mut tenants = Vec::new();
        for (i, t) in raw.tenant.iter().enumerate() {
            let tenant = cx.tenant(i, t).and_then(|mut tenant| {
                if gateway_ok {
                    tenant.gateway = cx.tenant_gateway(i, t, gateway.as_ref())?;
                }
                Ok(tenant)
            });
            match tenant {
                Ok(t) => tenants.push(t),
                Err(e) => errors.push(e),
            }
        }
        if let Some(e) = ConfigError::many(errors) {
            return Err(e);
        }
        cx.check_tenants(&raw.tenant, &tenants)?;
        let shaper = match &raw.shaper {
            Some(s) => Some(cx.shaper(s, &raw.tenant, &tenants)?),
            None => None,
        };
        cx.check_gateway_tenants(
            &raw.tenant,
            &tenants,
            gateway.as_ref(),
            shaper.as_ref().map(|s| s.table),
        )?;
        Ok(Config {
            path: path.to_path_buf(),
            text: text.to_string(),
            shaper,
            gateway,
            tenants,
        })
    }

    /// Tenants the shaper queues, in config order (the order is the shaper's tenant index):
    /// source-address tenants with `upload` (told apart by source), and gateway tenants with
    /// `upload` (told apart by their tunnel, stamped with their own MAC by the redirect).
    pub fn shaped_tenants(&self) -> impl Iterator<Item = (&Tenant, Shaping)> {
        self.tenants
            .iter()
            .filter_map(|t| t.shaping.map(|s| (t, s)))
    }

    /// Warnings about settings that are accepted but have no effect.
    pub fn warnings(&self) -> Vec<String> {
        if let Some(s) = &self.shaper {
            return s
                .metrics
                .filter(|m| !m.ip().is_loopback())
                .map(|m| {
                    format!(
                        "shaper.metrics: {m} is not a loopback address: anyone who reaches it reads every tenant's counters"
                    )
                })
                .into_iter()
                .collect();
        }
        self.tenants
            .iter()
            .filter(|t| t.shaping.is_some())
            .map(|t| {
                format!(
                    "tenant {:?}: `upload` is enforced by tollgate-shaper, which needs a [shaper] section (at least `tap = \"tg0\"`)",
                    t.name
                )
            })
            .collect()
    }

    /// Tenants of the gateway, with their gateway settings.
    pub fn gateway_tenants(&self) -> impl Iterator<Item = (&Tenant, &TenantGateway)> {
        self.tenants
            .iter()
            .filter_map(|t| t.gateway.as_ref().map(|g| (t, g)))
    }

    /// The devices a tenant's traffic can enter on.
    pub fn tenant_interfaces<'a>(&'a self, tenant: &'a Tenant) -> Vec<&'a str> {
        if !tenant.interfaces.is_empty() {
            tenant.interfaces.iter().map(String::as_str).collect()
        } else {
            self.shaper
                .as_ref()
                .and_then(|s| s.interface.as_deref())
                .map(|i| vec![i])
                .unwrap_or_default()
        }
    }

    /// Checks that every device the config names exists in this network namespace, naming the
    /// key and line of the first that does not. `exists` is injected for testing.
    pub fn check_devices(&self, exists: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        let cx = Cx {
            text: &self.text,
            path: &self.path,
        };
        let raw: RawConfig =
            toml::from_str(&self.text).map_err(|e| cx.err_at(0, "", e.message()))?;
        let missing = |name: &str| format!("device {name:?} does not exist");
        if let (Some(g), Some(rg)) = (&self.gateway, &raw.gateway) {
            for (dev, span, key) in [
                (&g.public, rg.get_ref().public.span(), "gateway.public"),
                (
                    &g.underlay,
                    rg.get_ref().underlay.span(),
                    "gateway.underlay",
                ),
            ] {
                if !exists(dev) {
                    return Err(cx.err_at(span.start, key, &missing(dev)));
                }
            }
        }
        let Some(shaper) = &self.shaper else {
            return Ok(());
        };
        if let Some(i) = &shaper.interface
            && !exists(i)
        {
            let span = raw
                .shaper
                .as_ref()
                .and_then(|s| s.get_ref().interface.as_ref())
                .map(|i| i.span());
            return Err(cx.err_at(
                span.map(|s| s.start).unwrap_or(0),
                "shaper.interface",
                &missing(i),
            ));
        }
        for (i, t) in raw.tenant.iter().enumerate() {
            for iface in t.get_ref().interfaces.iter().flat_map(|v| v.get_ref()) {
                if !exists(iface.get_ref()) {
                    return Err(cx.err_at(
                        iface.span().start,
                        &format!("tenant[{i}].interfaces"),
                        &missing(iface.get_ref()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Validation context: the source text for line numbers and the path for messages.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Cx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
        (line, column)
    }

    /// A problem the TOML parser found, at its span if it has one (no key: the file is not
    /// read as far as keys).
    fn syntax(&self, span: Option<std::ops::Range<usize>>, message: &str) -> ConfigError {
        let (line, column) = span.map(|s| self.line_col(s.start)).unwrap_or((0, 0));
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            key: String::new(),
            message: message.trim().to_string(),
            also: Vec::new(),
        }
    }

    fn err_at(&self, offset: usize, key: &str, message: &str) -> ConfigError {
        let (line, column) = self.line_col(offset);
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message: message.to_string(),
            also: Vec::new(),
        }
    }

    fn err<T>(&self, at: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.err_at(at.span().start, key, &message.into())
    }

    fn tenant(&self, i: usize, t: &Spanned<RawTenant>) -> Result<Tenant, ConfigError> {
        let r = t.get_ref();
        let key = |k: &str| format!("tenant[{i}].{k}");
        let name = r.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err(
                &r.name,
                &key("name"),
                format!("{name:?}: use 1-32 characters of a-z, A-Z, 0-9, '-' and '_'"),
            ));
        }
        let mut sources = Vec::new();
        for s in r.sources.iter().flat_map(|v| v.get_ref()) {
            let net: Ipv4Net = s
                .get_ref()
                .parse()
                .map_err(|e: String| self.err(s, &key("sources"), e))?;
            sources.push(net);
        }
        let rate = match &r.upload {
            None => None,
            Some(u) => Some(
                units::parse_rate(u.get_ref())
                    .map_err(|e| self.err(u, &key("upload"), e.to_string()))?,
            ),
        };
        let size = |v: &Option<Spanned<String>>, k: &str| -> Result<Option<u64>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) => units::parse_size(s.get_ref())
                    .map(Some)
                    .map_err(|e| self.err(s, &key(k), e.to_string())),
            }
        };
        let burst = size(&r.burst, "burst")?;
        let queue = size(&r.queue, "queue")?;
        let shaping = match rate {
            None => {
                let strings = [
                    (r.burst.as_ref().map(|v| v.span()), "burst"),
                    (r.queue.as_ref().map(|v| v.span()), "queue"),
                    (r.queue_frames.as_ref().map(|v| v.span()), "queue_frames"),
                    (r.flows.as_ref().map(|v| v.span()), "flows"),
                    (r.aqm.as_ref().map(|v| v.span()), "aqm"),
                    (r.gso.as_ref().map(|v| v.span()), "gso"),
                    (r.codel_target.as_ref().map(|v| v.span()), "codel_target"),
                    (
                        r.codel_interval.as_ref().map(|v| v.span()),
                        "codel_interval",
                    ),
                ];
                if let Some((Some(span), k)) = strings.into_iter().find(|(s, _)| s.is_some()) {
                    return Err(self.err_at(span.start, &key(k), "has no effect without `upload`"));
                }
                None
            }
            Some(rate) => {
                let queue = queue.unwrap_or_else(|| default_queue(rate));
                if queue < MAX_GSO_FRAME {
                    let at = r.queue.as_ref().map(|s| s.span().start).unwrap_or(0);
                    return Err(self.err_at(
                        at,
                        &key("queue"),
                        &format!(
                            "{queue} bytes cannot hold one 64 KiB GSO frame; use at least 64kb"
                        ),
                    ));
                }
                let split_gso = match r.gso.as_ref().map(|g| (g, g.get_ref().as_str())) {
                    None | Some((_, "auto")) => rate < SPLIT_GSO_BELOW,
                    Some((_, "split")) => true,
                    Some((_, "keep")) => false,
                    Some((g, other)) => {
                        return Err(self.err(
                            g,
                            &key("gso"),
                            format!("{other:?}: expected \"auto\", \"split\" or \"keep\""),
                        ));
                    }
                };
                let burst = burst.unwrap_or_else(|| default_burst(rate, split_gso));
                let mut s = Shaping::new(rate, burst, queue);
                s.split_gso = split_gso;
                if let Some(f) = &r.queue_frames {
                    s.frames = u64::try_from(*f.get_ref())
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .ok_or_else(|| self.err(f, &key("queue_frames"), "must be 1..1000000"))?;
                }
                if let Some(f) = &r.flows {
                    s.flows = u32::try_from(*f.get_ref())
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| {
                            self.err(f, &key("flows"), "must be 1..1024 (1: one FIFO queue)")
                        })?;
                }
                match r.aqm.as_ref().map(|a| (a, a.get_ref().as_str())) {
                    None | Some((_, "codel")) => {
                        let mut c = Codel::DEFAULT;
                        for (v, k, slot) in [
                            (&r.codel_target, "codel_target", &mut c.target_ns),
                            (&r.codel_interval, "codel_interval", &mut c.interval_ns),
                        ] {
                            if let Some(v) = v {
                                *slot = units::parse_duration(v.get_ref())
                                    .map_err(|e| self.err(v, &key(k), e.to_string()))?;
                            }
                        }
                        if c.target_ns >= c.interval_ns {
                            let at = r.codel_target.as_ref().map(|t| t.span().start).unwrap_or(0);
                            return Err(self.err_at(
                                at,
                                &key("codel_target"),
                                "must be shorter than codel_interval",
                            ));
                        }
                        s.codel = Some(c);
                    }
                    Some((_, "off")) => {
                        for (v, k) in [
                            (&r.codel_target, "codel_target"),
                            (&r.codel_interval, "codel_interval"),
                        ] {
                            if let Some(v) = v {
                                return Err(self.err(
                                    v,
                                    &key(k),
                                    "has no effect with aqm = \"off\"",
                                ));
                            }
                        }
                        s.codel = None;
                    }
                    Some((a, other)) => {
                        return Err(self.err(
                            a,
                            &key("aqm"),
                            format!("{other:?}: expected \"codel\" or \"off\""),
                        ));
                    }
                }
                Some(s)
            }
        };
        if shaping.is_some() && sources.is_empty() && r.id.is_none() {
            return Err(self.err(
                t,
                &key("sources"),
                "a tenant with `upload` needs at least one source prefix",
            ));
        }
        let mut ports = Vec::new();
        for p in r.ports.iter().flat_map(|v| v.get_ref()) {
            ports.push(
                p.get_ref()
                    .to_range()
                    .map_err(|e| self.err(p, &key("ports"), e))?,
            );
        }
        ports.sort();
        let mut interfaces = Vec::new();
        for d in r.interfaces.iter().flat_map(|v| v.get_ref()) {
            check_ifname(d.get_ref()).map_err(|e| self.err(d, &key("interfaces"), e))?;
            interfaces.push(d.get_ref().clone());
        }
        Ok(Tenant {
            name,
            sources,
            shaping,
            ports,
            interfaces,
            gateway: None,
        })
    }

    /// Checks across tenants: unique names, no source in two tenants.
    fn check_tenants(
        &self,
        raw: &[Spanned<RawTenant>],
        tenants: &[Tenant],
    ) -> Result<(), ConfigError> {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, t) in tenants.iter().enumerate() {
            if let Some(first) = names.insert(&t.name, i) {
                return Err(self.err(
                    &raw[i].get_ref().name,
                    &format!("tenant[{i}].name"),
                    format!("duplicate tenant name {:?} (also tenant[{first}])", t.name),
                ));
            }
        }
        // sources of different tenants must not overlap: sort every source by its first
        // address and sweep, keeping the one reaching furthest (n log n, not n^2 pairs)
        let mut all: Vec<(u32, u32, usize, usize)> = tenants
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.sources
                    .iter()
                    .enumerate()
                    .map(move |(k, s)| (s.first(), s.last(), i, k))
            })
            .collect();
        all.sort_unstable();
        let mut reach: Option<(u32, usize, usize)> = None; // (last, tenant, source)
        for &(first, last, i, k) in &all {
            if let Some((r_last, j, l)) = reach
                && first <= r_last
                && j != i
            {
                // name the later tenant (in file order) as the one at fault
                let ((i, k), (u, m)) = if i > j {
                    ((i, k), (j, l))
                } else {
                    ((j, l), (i, k))
                };
                let (t, other) = (&tenants[i], &tenants[u]);
                let at = raw[i]
                    .get_ref()
                    .sources
                    .as_ref()
                    .and_then(|v| v.get_ref().get(k).map(|s| s.span().start))
                    .unwrap_or(raw[i].span().start);
                return Err(self.err_at(
                    at,
                    &format!("tenant[{i}].sources"),
                    &format!(
                        "{} of tenant {:?} overlaps {} of tenant {:?}: a source must belong to one tenant",
                        t.sources[k], t.name, other.sources[m], other.name
                    ),
                ));
            }
            if reach.is_none_or(|(r_last, ..)| last > r_last) {
                reach = Some((last, i, k));
            }
        }
        Ok(())
    }

    fn shaper(
        &self,
        s: &Spanned<RawShaper>,
        raw_tenants: &[Spanned<RawTenant>],
        tenants: &[Tenant],
    ) -> Result<ShaperConfig, ConfigError> {
        let r = s.get_ref();
        if let Some(i) = &r.interface {
            check_ifname(i.get_ref()).map_err(|e| self.err(i, "shaper.interface", e))?;
            if i.get_ref() == r.tap.get_ref() {
                return Err(self.err(&r.tap, "shaper.tap", "must differ from shaper.interface"));
            }
        }
        check_ifname(r.tap.get_ref()).map_err(|e| self.err(&r.tap, "shaper.tap", e))?;
        let redirect = match r.redirect.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("netdev") => RedirectMode::Netdev,
            Some("route") => RedirectMode::Route,
            Some(other) => {
                return Err(self.err(
                    r.redirect.as_ref().unwrap_or(&r.tap),
                    "shaper.redirect",
                    format!("{other:?}: expected \"netdev\" or \"route\""),
                ));
            }
        };
        if r.interface.is_none()
            && let Some(i) = tenants.iter().position(|t| {
                t.shaping.is_some() && !t.sources.is_empty() && t.interfaces.is_empty()
            })
        {
            return Err(self.err(
                s,
                "shaper.interface",
                format!(
                    "missing: tenant[{i}] {:?} is told apart by source address and names no `interfaces`, so the shaper needs the `interface` its traffic enters on",
                    tenants[i].name
                ),
            ));
        }
        for (i, t) in tenants.iter().enumerate() {
            if t.interfaces.iter().any(|d| d == r.tap.get_ref()) {
                let at = raw_tenants[i]
                    .get_ref()
                    .interfaces
                    .as_ref()
                    .map(|v| v.span().start)
                    .unwrap_or(0);
                return Err(self.err_at(
                    at,
                    &format!("tenant[{i}].interfaces"),
                    "the shaper's own TAP cannot be an ingress interface",
                ));
            }
        }
        if !tenants.iter().any(|t| t.shaping.is_some()) {
            return Err(self.err(
                s,
                "shaper",
                "no tenant has `upload`: there is nothing to shape",
            ));
        }
        let table = r.table.as_ref().map(|t| *t.get_ref()).unwrap_or(7468);
        if let Some(t) = &r.table
            && (*t.get_ref() == 0 || (253..=255).contains(t.get_ref()))
        {
            return Err(self.err(
                t,
                "shaper.table",
                "tables 0, 253 (default), 254 (main) and 255 (local) are reserved",
            ));
        }
        let mark = r.mark.as_ref().map(|m| *m.get_ref()).unwrap_or(0x7467);
        if mark == 0 {
            let at = r.mark.as_ref().map(|m| m.span().start).unwrap_or(0);
            return Err(self.err_at(at, "shaper.mark", "the mark must not be 0"));
        }
        let rule_priority = r.rule_priority.as_ref().map(|p| *p.get_ref()).unwrap_or(1);
        if !(1..32000).contains(&rule_priority) {
            let at = r
                .rule_priority
                .as_ref()
                .map(|p| p.span().start)
                .unwrap_or(0);
            return Err(self.err_at(
                at,
                "shaper.rule_priority",
                "must be 1..31999 (the local rule is moved to the next priority)",
            ));
        }
        let metrics = match &r.metrics {
            None => None,
            Some(m) => Some(m.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
                self.err(
                    m,
                    "shaper.metrics",
                    format!(
                        "{:?}: expected an address and port, like \"127.0.0.1:9464\"",
                        m.get_ref()
                    ),
                )
            })?),
        };
        Ok(ShaperConfig {
            metrics,
            interface: r.interface.as_ref().map(|i| i.get_ref().clone()),
            tap: r.tap.get_ref().clone(),
            redirect,
            state_dir: r
                .state_dir
                .as_ref()
                .map(|d| PathBuf::from(d.get_ref()))
                .unwrap_or_else(|| PathBuf::from("/run/tollgate")),
            table,
            mark,
            rule_priority,
        })
    }
}

/// Default bucket depth: 10 ms at the rate, and never less than 64 KiB for a tenant whose GSO
/// frames are queued whole, 8 KiB for one whose frames are cut into segments. A frame leaves
/// whenever the balance is not negative, so the depth need not hold a GSO frame; it is what a
/// tenant that paused may send at once. Chosen from measurements (one TCP upload at 1 Mbit/s
/// for 30 s with CoDel on): with whole frames a 1514-byte floor gave 0.870 of the rate, 8 KiB
/// 0.910, 64 KiB 0.961 (the ideal for IP accounting is 0.965): CoDel's drops leave short idle
/// gaps that a shallow bucket cannot make up. With segments, 3 KiB gave 0.949, 8 KiB 0.958 and
/// 64 KiB 0.976: CoDel then drops single segments, and 8 KiB keeps the rate within 1 % while
/// the first burst of a fresh or idle tenant is an eighth (`burst` can be set per tenant).
pub fn default_burst(rate: u64, split_gso: bool) -> u64 {
    (rate / 100).max(if split_gso { 8 * 1024 } else { MAX_GSO_FRAME })
}

/// Default queue limit: 100 ms at the rate, and never less than four GSO frames.
/// Default frame cap: as many frames as the byte limit holds at 256 bytes each, at least 128.
pub fn default_frames(queue: u64) -> u64 {
    (queue / 256).max(128)
}

pub fn default_queue(rate: u64) -> u64 {
    (rate / 10).max(4 * MAX_GSO_FRAME)
}

/// Interface names tollgate accepts: the kernel's rule (1-15 bytes, not "." or "..") narrowed
/// to letters, digits and `-_.@+`. The kernel also allows `"`, `;`, `#` and the like, but such a
/// name would reach nftables rulesets and sysctl paths, where it could end a token; tollgate
/// refuses it rather than quote it.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "{name:?}: an interface name has 1 to 15 characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.@+".contains(*c)))
    {
        return Err(format!(
            "{name:?}: tollgate takes interface names of letters, digits and '-', '_', '.', '@', '+' only (not {c:?}); rename the device"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
