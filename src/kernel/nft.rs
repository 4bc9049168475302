//! The `nft` command, in one place. Rulesets are loaded with `nft -f -` (one atomic
//! transaction: all of it or none of it), as nft's own language (the gateway, which an operator
//! reads in `tollgate plan --ruleset`) or as JSON built from typed data (the shaper). A refusal
//! comes back with nft's own words.
//!
//! Whether a table exists is read from `nft -j list tables`, not guessed from an error text.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `nft` (install the nftables package): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("unreadable `nft -j` output: {0}")]
    Output(String),
}

/// Runs `nft ARGS` with `stdin` fed to it; its stdout, or its stderr as the error.
fn run(args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
    let mut c = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(bytes), Some(mut i)) = (stdin, c.stdin.take()) {
        i.write_all(bytes).map_err(NftError::Spawn)?;
    }
    let o = c.wait_with_output().map_err(NftError::Spawn)?;
    if o.status.success() {
        return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
    Err(NftError::Refused(if msg.is_empty() {
        format!("exit status {}", o.status)
    } else {
        msg
    }))
}

/// Checks that the `nft` command can be run.
pub fn available() -> Result<(), NftError> {
    run(&["--version"], None).map(|_| ())
}

/// Loads a ruleset written in nft's language, in one transaction.
pub fn load_text(ruleset: &str) -> Result<(), NftError> {
    run(&["-f", "-"], Some(ruleset.as_bytes())).map(|_| ())
}

/// Loads a ruleset in nft's JSON form, in one transaction.
pub fn load_json(ruleset: &[u8]) -> Result<(), NftError> {
    run(&["-j", "-f", "-"], Some(ruleset)).map(|_| ())
}

fn json(out: &str) -> Result<serde_json::Value, NftError> {
    serde_json::from_str(out).map_err(|e| NftError::Output(e.to_string()))
}

/// Every table in this namespace, as (family, name).
pub fn tables() -> Result<Vec<(String, String)>, NftError> {
    Ok(parse_tables(&json(&run(&["-j", "list", "tables"], None)?)?))
}

fn parse_tables(v: &serde_json::Value) -> Vec<(String, String)> {
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let t = o.get("table")?;
            Some((
                t["family"].as_str()?.to_string(),
                t["name"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// What listing one chain found.
#[derive(Debug)]
pub enum Listing {
    Found(serde_json::Value),
    NoTable,
    NoChain,
}

/// Chain `chain` of table `family name`, as `nft -j -t` lists it: far cheaper than the whole
/// table when the table is large.
pub fn list_chain(family: &str, name: &str, chain: &str) -> Result<Listing, NftError> {
    match run(&["-j", "-t", "list", "chain", family, name, chain], None) {
        Ok(out) => json(&out).map(Listing::Found),
        Err(e) => {
            if !has_table(family, name)? {
                return Ok(Listing::NoTable);
            }
            // the table is there: is the chain?
            match run(&["-j", "-t", "list", "chains", family], None) {
                Ok(out) if !chain_listed(&json(&out)?, name, chain) => Ok(Listing::NoChain),
                _ => Err(e),
            }
        }
    }
}

fn has_table(family: &str, name: &str) -> Result<bool, NftError> {
    Ok(tables()?.iter().any(|(f, n)| f == family && n == name))
}

fn chain_listed(v: &serde_json::Value, table: &str, chain: &str) -> bool {
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("chain"))
        .any(|c| c["table"] == table && c["name"] == chain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_tables_from_json() {
        let v = super::json(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"table":{"family":"inet","name":"tollgate_gw","handle":3}}]}"#,
        )
        .unwrap();
        assert_eq!(
            super::parse_tables(&v),
            vec![("inet".to_string(), "tollgate_gw".to_string())]
        );
        assert!(super::json("not json").is_err());
        let chains = super::json(
            r#"{"nftables":[{"chain":{"family":"inet","table":"tollgate_gw","name":"pre_raw"}}]}"#,
        )
        .unwrap();
        assert!(super::chain_listed(&chains, "tollgate_gw", "pre_raw"));
        assert!(!super::chain_listed(&chains, "tollgate_gw", "forward"));
        assert!(!super::chain_listed(&chains, "other", "pre_raw"));
    }
}
