//! The install paths: `make install` into a staging directory puts the binaries, man pages,
//! completions, units (pointing at the installed binaries) and docs where a distribution
//! expects them; `make deb` builds a Debian package holding the same. Uses the debug build.
//! Needs no root; skipped (with a message) without make, or without cargo-deb for the package.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Serialises the two tests: both write target/assets.
static MAKE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn make(args: &[&str]) -> std::process::Output {
    let _g = MAKE.lock().unwrap_or_else(|p| p.into_inner());
    Command::new("make")
        .args(["--no-print-directory", "PROFILE=debug"])
        .args(args)
        .current_dir(root())
        .env("CARGO", env!("CARGO"))
        .output()
        .expect("make")
}

#[test]
fn make_install_stages_everything() {
    if !have("make", "--version") {
        eprintln!("skipped make_install_stages_everything: make is not installed");
        return;
    }
    let dir = lab::TempDir::new("install").expect("tempdir");
    let dest = dir.path().display().to_string();
    let out = make(&["install", &format!("DESTDIR={dest}"), "PREFIX=/usr/local"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let p = |rel: &str| dir.path().join(rel.trim_start_matches('/'));
    for f in [
        "/usr/local/bin/tollgate",
        "/usr/local/bin/tollgate-shaper",
        "/usr/local/share/man/man8/tollgate.8",
        "/usr/local/share/man/man8/tollgate-apply.8",
        "/usr/local/share/man/man8/tollgate-shaper.8",
        "/usr/local/share/man/man8/tollgate-shaper-reload.8",
        "/usr/local/share/bash-completion/completions/tollgate",
        "/usr/local/share/bash-completion/completions/tollgate-shaper",
        "/usr/local/share/zsh/site-functions/_tollgate",
        "/usr/local/share/fish/vendor_completions.d/tollgate-shaper.fish",
        "/etc/systemd/system/tollgate-shaper.service",
        "/etc/systemd/system/tollgate-gateway.service",
        "/usr/local/share/doc/tollgate/shaper.md",
        "/usr/local/share/doc/tollgate/examples/gateway.toml",
    ] {
        assert!(p(f).is_file(), "{f} was not installed");
    }
    let v = Command::new(p("/usr/local/bin/tollgate-shaper"))
        .arg("--version")
        .output()
        .expect("installed binary runs");
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("tollgate-shaper "));
    let man = std::fs::read_to_string(p("/usr/local/share/man/man8/tollgate-shaper-reload.8"))
        .expect("man page");
    assert!(man.contains(".TH tollgate-shaper-reload 8"), "{man}");
    let unit =
        std::fs::read_to_string(p("/etc/systemd/system/tollgate-shaper.service")).expect("unit");
    assert!(
        unit.contains("ExecReload=/usr/local/bin/tollgate-shaper reload"),
        "{unit}"
    );
    let bash = std::fs::read_to_string(p("/usr/local/share/bash-completion/completions/tollgate"))
        .expect("completion");
    assert!(
        bash.contains("destroy") && bash.contains("status"),
        "completion lacks commands"
    );
    // uninstall takes back what install put there
    let dest_arg = format!("DESTDIR={dest}");
    let out = make(&["uninstall", &dest_arg, "PREFIX=/usr/local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!p("/usr/local/bin/tollgate").exists());
    assert!(!p("/etc/systemd/system/tollgate-shaper.service").exists());
}

#[test]
fn make_deb_packages_binaries_units_and_pages() {
    if !have("make", "--version") || !have("dpkg-deb", "--version") {
        eprintln!("skipped make_deb_packages_binaries_units_and_pages: needs make and dpkg-deb");
        return;
    }
    if !Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!(
            "skipped make_deb_packages_binaries_units_and_pages: cargo-deb is not installed (cargo install cargo-deb)"
        );
        return;
    }
    let out = make(&["deb"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = text
        .lines()
        .rev()
        .find(|l| l.trim().ends_with(".deb"))
        .map(|l| l.trim().to_string())
        .expect("cargo deb prints the package path");
    let list = Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .expect("dpkg-deb -c");
    let list = String::from_utf8_lossy(&list.stdout);
    for f in [
        "./usr/bin/tollgate",
        "./usr/bin/tollgate-shaper",
        "./lib/systemd/system/tollgate-shaper.service",
        "./lib/systemd/system/tollgate-gateway.service",
        "./usr/share/man/man8/tollgate-shaper",
        "./usr/share/bash-completion/completions/tollgate",
        "./usr/share/doc/tollgate/gateway.md",
    ] {
        assert!(list.contains(f), "{f} not in the package:\n{list}");
    }
    let info = Command::new("dpkg-deb")
        .args(["-f", &deb, "Package", "Depends"])
        .output()
        .expect("dpkg-deb -f");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("Package: tollgate") && info.contains("nftables"),
        "{info}"
    );
    let unit = Command::new("dpkg-deb")
        .args(["--fsys-tarfile", &deb])
        .output()
        .expect("tarfile");
    let tar = String::from_utf8_lossy(&unit.stdout);
    assert!(
        tar.contains("ExecStart=/usr/bin/tollgate-shaper --config"),
        "the packaged unit does not run /usr/bin/tollgate-shaper"
    );
}
