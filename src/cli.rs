//! What both binaries do the same way at their edge: logging set-up, exit codes, and their man
//! pages and shell completions (generated from the clap definitions by the hidden `generate`
//! subcommand, which `make install` and the Debian package use).
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

/// What `generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// Man pages (section 8): the program's and one per subcommand.
    Man,
    /// bash, zsh and fish completions.
    Completions,
}

/// Writes `what` for the command `cmd` into `dir` (created if missing); returns the files.
pub fn generate(
    mut cmd: clap::Command,
    what: Generate,
    dir: &std::path::Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    match what {
        Generate::Man => {
            cmd.build();
            let mut pages = vec![(name.clone(), cmd.clone())];
            for sub in cmd
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                let sub_name = format!("{name}-{}", sub.get_name());
                pages.push((sub_name.clone(), sub.clone().name(sub_name)));
            }
            for (page, c) in pages {
                let path = dir.join(format!("{page}.8"));
                let mut buf = Vec::new();
                clap_mangen::Man::new(c).section("8").render(&mut buf)?;
                std::fs::write(&path, buf)?;
                out.push(path);
            }
        }
        Generate::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                out.push(clap_complete::generate_to(shell, &mut cmd, &name, dir)?);
            }
        }
    }
    Ok(out)
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

    #[test]
    fn man_pages_and_completions_from_a_command() {
        let cmd = clap::Command::new("demo")
            .about("a demo")
            .subcommand(clap::Command::new("run").about("runs"))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = std::env::temp_dir().join(format!("tg-gen-{}", std::process::id()));
        let man = generate(cmd.clone(), Generate::Man, &dir).unwrap();
        let names: Vec<String> = man
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["demo.8", "demo-run.8"]);
        let page = std::fs::read_to_string(&man[0]).unwrap();
        assert!(
            page.contains(".TH demo 8") && page.contains("a demo"),
            "{page}"
        );
        let comp = generate(cmd, Generate::Completions, &dir).unwrap();
        assert_eq!(comp.len(), 3);
        assert!(std::fs::read_to_string(&comp[0]).unwrap().contains("run"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
