//! The example configs shipped in `examples/`, and the variants of the gateway example that the
//! demo and the tests build (tunnel, tunnel mode, isolation, offload): one place, so every
//! variant starts from the file users read.

use std::path::Path;

/// `examples/shaper.toml`.
pub const SHAPER_EXAMPLE: &str = include_str!("../../examples/shaper.toml");
/// `examples/gateway.toml` (the reference design).
pub const GATEWAY_EXAMPLE: &str = include_str!("../../examples/gateway.toml");

/// [`GATEWAY_EXAMPLE`] with a variant's keys substituted, and a `state_dir` when given.
pub fn gateway_variant(
    tunnel: &str,
    mode: &str,
    isolation: &str,
    offload: &str,
    state_dir: Option<&Path>,
) -> String {
    let offload_line = match state_dir {
        Some(d) => format!("offload = \"{offload}\"\nstate_dir = \"{}\"", d.display()),
        None => format!("offload = \"{offload}\""),
    };
    GATEWAY_EXAMPLE
        .replace("tunnel = \"gretap\"", &format!("tunnel = \"{tunnel}\""))
        .replace(
            "tunnel_mode = \"external\"",
            &format!("tunnel_mode = \"{mode}\""),
        )
        .replace(
            "isolation = \"vrf\"",
            &format!("isolation = \"{isolation}\""),
        )
        .replace("offload = \"auto\"", &offload_line)
}

/// [`GATEWAY_EXAMPLE`] spread over `shards` shards named `<prefix><j>` (gretap, external,
/// VRF, offload off, as shards need), without the shaper's `upload`, which shards do not serve.
pub fn sharded_variant(shards: u32, prefix: &str, state_dir: Option<&Path>) -> String {
    with_shards(
        &gateway_variant("gretap", "external", "vrf", "off", state_dir),
        shards,
        prefix,
    )
}

/// A gateway config `text` spread over `shards` shards named `<prefix><j>`, without the
/// shaper's `upload` lines, which shards do not serve.
pub fn with_shards(text: &str, shards: u32, prefix: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("upload ="))
        .collect::<Vec<_>>()
        .join("\n")
        .replacen(
            "[gateway]\n",
            &format!("[gateway]\nshards = {shards}\nshard_prefix = \"{prefix}\"\n"),
            1,
        )
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_substitute_every_key() {
        let v = gateway_variant("vxlan", "per-tenant", "table", "off", None);
        for want in [
            "tunnel = \"vxlan\"",
            "tunnel_mode = \"per-tenant\"",
            "isolation = \"table\"",
            "offload = \"off\"",
        ] {
            assert!(v.contains(want), "{want} missing in\n{v}");
        }
    }
}
