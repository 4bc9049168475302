//! Steering tenant traffic into the TAP, and undoing it. Two modes (docs/shaper.md):
//!
//! - `netdev`: an nftables netdev ingress chain on each ingress device `fwd`s tenant frames to
//!   the TAP. Frames come back to the stack from the TAP. If the daemon dies the TAP vanishes and
//!   matched traffic is dropped: it fails **closed** (run it under systemd with Restart=).
//! - `route`: nftables marks tenant packets in prerouting, an `ip rule fwmark` sends them to a
//!   table whose default route is the TAP, and the `local` rule moves after that rule. If the
//!   daemon dies the TAP and its route vanish and lookups fall through to `local`: it fails
//!   **open** (traffic is delivered unshaped).
//!
//! Installation order makes every intermediate state harmless, and a failure part-way undoes
//! what was done before it returns.

pub mod gateway;
pub mod nft;
pub mod route;

use nftables::types::NfFamily;
use tollgate::config::{Config, RedirectMode, ShaperConfig};
use tollgate::kernel::ifindex;
use tollgate::kernel::netlink::Netlink;
use tollgate::names;

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Route(#[from] route::RouteError),
    #[error(
        "gateway tenants are shaped inside what `tollgate apply` built, but {0}; apply the gateway first"
    )]
    GatewayMissing(String),
    #[error(transparent)]
    Netlink(route::NetlinkError),
}

impl From<route::NetlinkError> for RedirectError {
    fn from(e: route::NetlinkError) -> Self {
        RedirectError::Netlink(e)
    }
}

/// True when source-address tenants are shaped (they need the `redirect` mode's objects).
fn has_source_tenants(config: &Config) -> bool {
    config.shaped_tenants().any(|(t, _)| t.gateway.is_none())
}

/// Makes the gateway tenants' macvlans on the TAP (each with its MAC, in its tenant's VRF, up),
/// after checking that what the gateway builds is there. They vanish with the TAP.
pub fn create_macvlans(g: &gateway::GatewayShaping, tap: &str) -> Result<(), RedirectError> {
    if g.is_empty() {
        return Ok(());
    }
    let missing: Vec<&str> = g
        .needed_devices()
        .into_iter()
        .filter(|d| !tollgate::kernel::device_exists(d))
        .collect();
    if !missing.is_empty() {
        return Err(RedirectError::GatewayMissing(format!(
            "{} do(es) not exist",
            missing.join(", ")
        )));
    }
    let nl = Netlink::new()?;
    // each at an index outside the hash buckets of shared devices, as the gateway's own
    let mut indexes = ifindex::chooser_for(&nl.links()?);
    for t in &g.tenants {
        nl.link_create_macvlan(&t.macvlan, tap, t.mac, indexes.choose())?;
        if let Some(v) = &t.vrf {
            nl.link_set_master(&t.macvlan, Some(v))?;
        }
        nl.link_set_up(&t.macvlan)?;
    }
    Ok(())
}

fn route_spec(s: &ShaperConfig) -> route::RouteSpec {
    route::RouteSpec {
        table: s.table,
        mark: s.mark,
        priority: s.rule_priority,
    }
}

/// Removes whatever a previous run of this shaper left (both modes' objects, since the mode in
/// the config may have changed). Safe when nothing is there.
pub fn remove_stale(shaper: &ShaperConfig) -> Result<(), RedirectError> {
    let table = nft::table_name(&shaper.tap);
    nft::apply(&nft::removal(&table, NfFamily::NetDev))?;
    nft::apply(&nft::removal(&table, NfFamily::IP))?;
    nft::apply(&nft::removal(
        &names::shaper_gateway_nft_table(&shaper.tap),
        NfFamily::NetDev,
    ))?;
    route::remove(route_spec(shaper), &shaper.tap)?;
    Ok(())
}

/// Installs the redirect to the TAP `tap_index`; on error, undoes its own partial work.
pub fn install(config: &Config, shaper: &ShaperConfig) -> Result<(), RedirectError> {
    let sel = nft::Selection::from_config(config, shaper.redirect, &shaper.tap);
    let rules = nft::ruleset(&sel, &shaper.tap, shaper.redirect, shaper.mark);
    let result = match shaper.redirect {
        _ if !has_source_tenants(config) => Ok(()),
        RedirectMode::Netdev => nft::apply(&rules).map_err(RedirectError::from),
        RedirectMode::Route => route::install(route_spec(shaper), &shaper.tap)
            .map_err(RedirectError::from)
            .and_then(|()| nft::apply(&rules).map_err(RedirectError::from)),
    };
    let g = gateway::GatewayShaping::from_config(config);
    let result = result.and_then(|()| {
        if g.is_empty() {
            return Ok(());
        }
        let table = names::shaper_gateway_nft_table(&shaper.tap);
        nft::apply(&g.ruleset(&table, &shaper.tap)).map_err(RedirectError::from)
    });
    // a refusal changed nothing, and what it found is not ours to remove
    let refused = matches!(
        result,
        Err(RedirectError::Route(route::RouteError::Conflict(_)))
    );
    if result.is_err()
        && !refused
        && let Err(e) = remove(shaper)
    {
        tracing::error!("while undoing a failed install: {e}");
    }
    result
}

/// Replaces the redirect for a live reload: both tables (source tenants', gateway tenants') in
/// one nft transaction, so every frame meets either the whole old ruleset or the whole new one.
/// A table with nothing left to steer is deleted in the same transaction. Route mode's rule and
/// route are made first if the running config had no source tenant to need them.
pub fn replace(old: &Config, new: &Config, shaper: &ShaperConfig) -> Result<(), RedirectError> {
    let table = nft::table_name(&shaper.tap);
    let family = nft::family(shaper.redirect);
    let mut objects = Vec::new();
    if has_source_tenants(new) {
        if shaper.redirect == RedirectMode::Route && !has_source_tenants(old) {
            route::install(route_spec(shaper), &shaper.tap)?;
        }
        let sel = nft::Selection::from_config(new, shaper.redirect, &shaper.tap);
        let rules = nft::ruleset(&sel, &shaper.tap, shaper.redirect, shaper.mark);
        objects.extend(rules.objects.into_owned());
    } else {
        objects.extend(nft::removal(&table, family).objects.into_owned());
    }
    let g = gateway::GatewayShaping::from_config(new);
    let gw_table = names::shaper_gateway_nft_table(&shaper.tap);
    if g.is_empty() {
        objects.extend(
            nft::removal(&gw_table, NfFamily::NetDev)
                .objects
                .into_owned(),
        );
    } else {
        objects.extend(g.ruleset(&gw_table, &shaper.tap).objects.into_owned());
    }
    nft::apply(&nftables::schema::Nftables {
        objects: std::borrow::Cow::Owned(objects),
    })?;
    Ok(())
}

/// Removes the redirect (nft first, so nothing is steered to a path being torn down).
pub fn remove(shaper: &ShaperConfig) -> Result<(), RedirectError> {
    let table = nft::table_name(&shaper.tap);
    let family = nft::family(shaper.redirect);
    nft::apply(&nft::removal(
        &names::shaper_gateway_nft_table(&shaper.tap),
        NfFamily::NetDev,
    ))?;
    nft::apply(&nft::removal(&table, family))?;
    if shaper.redirect == RedirectMode::Route {
        route::remove(route_spec(shaper), &shaper.tap)?;
    }
    Ok(())
}
