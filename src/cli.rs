//! What both binaries do the same way at their edge: logging set-up and exit codes.
//!
//! Exit codes (also in each binary's `--help`): 0 success; 1 a runtime failure (the kernel
//! refused, a file could not be written, ...); 2 `tollgate plan` found changes to make (only
//! that); 64 a usage error (unknown flag, missing argument); 65 the config file is invalid.

use crate::config::ConfigError;
use std::io::IsTerminal;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CHANGES_PENDING: u8 = 2;
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_CONFIG: u8 = 65;

/// The exit-code table for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 success; 1 runtime failure; 2 (plan only) changes pending; 64 usage error; 65 invalid config";

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain text (colours only when stderr is a terminal).
    Text,
    /// One JSON object per line (journald, log shippers).
    Json,
}

/// Logs to stderr at `RUST_LOG` (default `default_level`), in `format`; no ANSI codes when
/// stderr is not a terminal.
pub fn init_logging(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// The exit code for an error that ended a command: [`EXIT_CONFIG`] when a config error is in
/// its chain, else [`EXIT_FAILURE`].
pub fn exit_code(err: &(dyn std::error::Error + 'static)) -> u8 {
    let mut e = Some(err);
    while let Some(x) = e {
        if x.is::<ConfigError>() {
            return EXIT_CONFIG;
        }
        e = x.source();
    }
    EXIT_FAILURE
}

/// Parses the command line; help and version exit 0, a usage error exits [`EXIT_USAGE`].
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                i32::from(EXIT_USAGE)
            } else {
                0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_have_their_own_code() {
        let e = crate::config::Config::parse("nonsense", std::path::Path::new("t")).unwrap_err();
        assert_eq!(exit_code(&e), EXIT_CONFIG);
        let io = std::io::Error::other("boom");
        assert_eq!(exit_code(&io), EXIT_FAILURE);
    }
}
