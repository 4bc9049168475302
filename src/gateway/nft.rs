//! The gateway's nftables table: applied as one `nft -f` transaction (add; delete; define, so
//! a replace is atomic), read back with `nft -j`.
//!
//! The ruleset is written in nft's language rather than built from JSON schema types: it is what
//! `tollgate plan --ruleset` shows and what an operator compares with `nft list table`.

use crate::kernel::nft;
pub use crate::kernel::nft::NftError;
use crate::names::GATEWAY_NFT_TABLE as TABLE;

/// Removes both of our tables (inet: the ruleset; netdev: the external device's stamp), if
/// they exist: `add` then `delete` in the same transaction is a no-op for an absent table.
fn delete_text() -> String {
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable netdev {TABLE}\ndelete table netdev {TABLE}\n"
    )
}

/// Replaces our tables with `ruleset` in one transaction.
pub fn apply(ruleset: &str) -> Result<(), NftError> {
    nft::load_text(&format!("{}{ruleset}", delete_text()))
}

pub fn delete() -> Result<(), NftError> {
    nft::load_text(&delete_text())
}

/// True when a netdev table of our name exists (ours only if the inet table carries our marker).
pub fn netdev_table_exists() -> Result<bool, NftError> {
    Ok(nft::tables()?
        .iter()
        .any(|(f, n)| f == "netdev" && n == TABLE))
}

/// The version marker of the applied ruleset, read from its first chain only: None without
/// table, Some("") if the table exists without a marker (not made by tollgate, or edited by
/// hand).
pub fn marker() -> Result<Option<String>, NftError> {
    match nft::list_chain("inet", TABLE, "pre_raw")? {
        nft::Listing::Found(v) => Ok(digest(&Some(v))),
        nft::Listing::NoTable => Ok(None),
        nft::Listing::NoChain => Ok(Some(String::new())),
    }
}

/// The version marker in a listing: None without one, Some("") if it has no marker.
pub fn digest(listing: &Option<serde_json::Value>) -> Option<String> {
    let v = listing.as_ref()?;
    let marker = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["rule"]["comment"].as_str())
        .find_map(|c| c.strip_prefix("tollgate ").map(str::to_string));
    Some(marker.unwrap_or_default())
}
