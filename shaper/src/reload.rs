//! What a live reload changes, worked out before anything is touched.
//!
//! A reload keeps the TAP, its threads and every queued frame; it swaps the tenant list (rates,
//! bursts, queue limits, tenants added and removed) and the redirect ruleset. Settings that
//! name kernel objects the running shaper owns (its TAP, redirect mode, routing table, mark,
//! rule priority, state directory, ingress interface, metrics address) cannot change under it:
//! a new file that changes one is refused, naming the key, and the old config keeps running.

use crate::redirect::gateway::GatewayShaping;
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate::config::{Config, Shaping};

/// A refused reload: the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] tollgate::config::ConfigError),
    #[error("the new file has no [shaper] section")]
    NoShaper,
    #[error("shaper.{0} changed: that needs a restart (`systemctl restart tollgate-shaper`)")]
    NeedsRestart(&'static str),
}

/// The new tenant list in the scheduler's terms, and the devices that come and go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadPlan {
    pub shaping: Vec<Shaping>,
    pub names: Vec<Arc<str>>,
    /// For each new tenant, its index in the running list (None: new).
    pub previous: Vec<Option<usize>>,
    /// Gateway tenants' macvlans to create before the new classifier takes frames.
    pub add_macvlans: Vec<String>,
    /// Macvlans of gateway tenants that are gone, removed after the redirect no longer
    /// stamps their MAC.
    pub remove_macvlans: Vec<String>,
}

/// Compares the running config with the new one.
pub fn plan(old: &Config, new: &Config) -> Result<ReloadPlan, ReloadError> {
    let (Some(o), Some(n)) = (&old.shaper, &new.shaper) else {
        return Err(ReloadError::NoShaper);
    };
    let fixed: [(&'static str, bool); 8] = [
        ("tap", o.tap == n.tap),
        ("redirect", o.redirect == n.redirect),
        ("interface", o.interface == n.interface),
        ("table", o.table == n.table),
        ("mark", o.mark == n.mark),
        ("rule_priority", o.rule_priority == n.rule_priority),
        ("state_dir", o.state_dir == n.state_dir),
        ("metrics", o.metrics == n.metrics),
    ];
    if let Some((key, _)) = fixed.iter().find(|(_, same)| !same) {
        return Err(ReloadError::NeedsRestart(key));
    }
    let running: BTreeMap<&str, usize> = old
        .shaped_tenants()
        .enumerate()
        .map(|(i, (t, _))| (t.name.as_str(), i))
        .collect();
    let (mut shaping, mut names, mut previous) = (Vec::new(), Vec::new(), Vec::new());
    for (t, s) in new.shaped_tenants() {
        shaping.push(s);
        names.push(Arc::from(t.name.as_str()));
        previous.push(running.get(t.name.as_str()).copied());
    }
    let macvlans = |c: &Config| -> Vec<String> {
        GatewayShaping::from_config(c)
            .tenants
            .into_iter()
            .map(|t| t.macvlan)
            .collect()
    };
    let (before, after) = (macvlans(old), macvlans(new));
    Ok(ReloadPlan {
        shaping,
        names,
        previous,
        add_macvlans: after
            .iter()
            .filter(|m| !before.contains(m))
            .cloned()
            .collect(),
        remove_macvlans: before
            .iter()
            .filter(|m| !after.contains(m))
            .cloned()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra_shaper: &str, tenants: &str) -> Config {
        let text =
            format!("[shaper]\ninterface = \"eth0\"\ntap = \"tg0\"\n{extra_shaper}\n{tenants}");
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    const AB: &str = r#"
[[tenant]]
name = "a"
sources = ["10.0.0.0/24"]
upload = "30mbit"
[[tenant]]
name = "b"
sources = ["10.0.1.0/24"]
upload = "5mbit"
"#;

    #[test]
    fn tenants_are_matched_by_name_and_rates_follow() {
        let b_removed_c_added = r#"
[[tenant]]
name = "c"
sources = ["10.0.2.0/24"]
upload = "1mbit"
[[tenant]]
name = "a"
sources = ["10.0.0.0/24"]
upload = "10mbit"
"#;
        let p = plan(&config("", AB), &config("", b_removed_c_added)).unwrap();
        assert_eq!(p.names, vec![Arc::from("c"), Arc::from("a")]);
        assert_eq!(p.previous, vec![None, Some(0)]);
        assert_eq!(p.shaping[1].rate, 10_000_000 / 8);
        assert!(p.add_macvlans.is_empty() && p.remove_macvlans.is_empty());
    }

    #[test]
    fn settings_owning_kernel_objects_need_a_restart() {
        let old = config("", AB);
        for (extra, key) in [
            ("redirect = \"route\"", "redirect"),
            ("mark = 7", "mark"),
            ("table = 99", "table"),
            ("metrics = \"127.0.0.1:9464\"", "metrics"),
            ("state_dir = \"/tmp/x\"", "state_dir"),
        ] {
            let err = plan(&old, &config(extra, AB)).unwrap_err();
            assert!(
                matches!(err, ReloadError::NeedsRestart(k) if k == key),
                "{extra}: {err}"
            );
            assert!(err.to_string().contains("needs a restart"));
        }
        let other_tap = Config::parse(
            &format!("[shaper]\ninterface = \"eth0\"\ntap = \"tg1\"\n{AB}"),
            Path::new("t"),
        )
        .unwrap();
        assert!(matches!(
            plan(&old, &other_tap),
            Err(ReloadError::NeedsRestart("tap"))
        ));
    }
}
