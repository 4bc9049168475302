//! The `tollgate` command line: `check` accepts the example and names the key and line of a
//! problem. Needs no root.

mod common;

use std::process::Command;

fn check(text: &str) -> std::process::Output {
    let dir = lab::TempDir::new("cli").expect("tempdir");
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).expect("write");
    Command::new(common::tollgate_bin())
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .output()
        .expect("tollgate check")
}

#[test]
fn check_accepts_the_example() {
    let out = check(include_str!("../examples/shaper.toml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tenant alpha") && text.contains("20.000Mbit"),
        "{text}"
    );
}

#[test]
fn check_names_key_and_line() {
    let bad = include_str!("../examples/shaper.toml").replace("\"50mbit\"", "\"50 parsecs\"");
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t.toml:14:") && err.contains("tenant[1].upload"),
        "{err}"
    );
}

#[test]
fn check_refuses_missing_devices_unless_offline() {
    let dir = lab::TempDir::new("cli").expect("tempdir");
    let path = dir.path().join("t.toml");
    let text = include_str!("../examples/shaper.toml").replace("veth-srv", "tg-no-such-if");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(common::tollgate_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("tollgate check");
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shaper.interface") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_gateway_example_and_names_bad_keys() {
    let out = check(include_str!("../examples/gateway.toml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tenant user2: id 2000"), "{text}");
    // the same EIP for two tenants: refused with key and line, before anything else
    let bad = include_str!("../examples/gateway.toml").replace(
        "\"203.0.113.12\" = \"10.0.0.7\"",
        "\"203.0.113.11\" = \"10.0.0.7\"",
    );
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t.toml:29:") && err.contains("tenant[1].eips"),
        "{err}"
    );
}

#[test]
fn gateway_commands_refuse_bad_config_before_touching_anything() {
    // no root needed: the config is refused before any kernel access
    let dir = lab::TempDir::new("cli").expect("tempdir");
    let path = dir.path().join("t.toml");
    let bad = include_str!("../examples/gateway.toml").replace(
        "allow_in = [\"tcp/23\", \"icmp\"]",
        "allow_in = [\"tcp/70000\"]",
    );
    std::fs::write(&path, bad).expect("write");
    for cmd in ["plan", "apply", "show", "destroy"] {
        let out = Command::new(common::tollgate_bin())
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .expect("tollgate");
        assert_eq!(out.status.code(), Some(65), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tenant[1].allow_in") && err.contains("65535"),
            "{cmd}: {err}"
        );
    }
}

/// Exit codes: a usage error and an invalid config each have their own (documented in --help).
#[test]
fn exit_codes_tell_usage_and_config_errors_apart() {
    let out = Command::new(common::tollgate_bin())
        .args(["check", "--no-such-flag"])
        .output()
        .expect("tollgate");
    assert_eq!(out.status.code(), Some(64), "usage error");
    let out = check("[shaper]\ntap = 7\n");
    assert_eq!(out.status.code(), Some(65), "config error");
    let out = Command::new(common::tollgate_bin())
        .arg("--help")
        .output()
        .expect("tollgate");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("64 usage error") && help.contains("65 invalid config"),
        "{help}"
    );
}

/// `check --for shaper` refuses a file the shaper would refuse (no [shaper] section), so the
/// service's ExecStartPre stops a restart loop before it starts.
#[test]
fn check_for_a_program_requires_its_section() {
    let text = include_str!("../examples/gateway.toml");
    let dir = lab::TempDir::new("cli-for").expect("tempdir");
    let path = dir.path().join("g.toml");
    std::fs::write(&path, text).expect("write");
    let run = |extra: &[&str]| {
        Command::new(common::tollgate_bin())
            .args(["check", "--offline"])
            .args(extra)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("tollgate check")
    };
    assert_eq!(run(&[]).status.code(), Some(0));
    assert_eq!(run(&["--for", "gateway"]).status.code(), Some(0));
    let out = run(&["--for", "shaper"]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no [shaper] section"), "{err}");
}
