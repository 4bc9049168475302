//! Running the `nft` command: both halves load their rulesets through it (the shaper as JSON,
//! the gateway in nft's own language), so a refusal always comes back with nft's own words.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `nft` (install the nftables package): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Runs `nft ARGS` with `stdin` fed to it; its stdout, or its stderr as the error.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
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
