//! The Debian package: built by the script `make deb` runs (given the test's own binary, so no
//! release build is needed here), then read with the tools an operator's machine has: the files
//! and their modes (`dpkg-deb -c`), the control fields, the conffiles and the maintainer scripts
//! (`dpkg-deb -I`), the unit (`systemd-analyze verify`), and the configuration it installs, which
//! `rempart -t` accepts once the files it names exist. Nothing is installed on this machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use integration_tests::process::{rempart_bin, repo_path, workspace_root};

/// The package, built once for the tests of this file.
struct Package {
    deb: PathBuf,
    /// `dpkg-deb -x` of it.
    root: PathBuf,
    version: String,
    arch: String,
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (make deps installs the tools)"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `[package]` version of the workspace's top Cargo.toml.
fn cargo_version() -> String {
    let manifest =
        std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("version") {
                return v
                    .trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string();
            }
        }
    }
    panic!("no [package] version in Cargo.toml");
}

fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let out = repo_path("target/test-artifacts/deb");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("output directory");
        let binary = rempart_bin().unwrap_or_else(|e| panic!("{e}"));
        let built = run(Command::new(repo_path("deploy/debian/build-deb.sh"))
            .arg("--binary")
            .arg(&binary)
            .arg("--out")
            .arg(&out)
            .args(["--compression", "none"]));
        let deb = PathBuf::from(text(&built).lines().last().unwrap_or_default().trim());
        assert!(
            deb.is_file(),
            "the script names the package it built: {}",
            text(&built)
        );
        let arch = text(&run(Command::new("dpkg").arg("--print-architecture")))
            .trim()
            .to_string();
        let root = out.join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        Package {
            deb,
            root,
            version: cargo_version(),
            arch,
        }
    })
}

fn control_file(name: &str) -> String {
    text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&package().deb)
        .arg(name)))
}

#[test]
fn the_package_is_named_after_the_version_and_holds_the_binary_the_unit_and_the_configuration() {
    let p = package();
    assert_eq!(
        p.deb.file_name().map(|n| n.to_string_lossy().into_owned()),
        Some(format!("rempart_{}_{}.deb", p.version, p.arch))
    );
    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(&p.deb)));
    for field in [
        "Package: rempart".to_string(),
        format!("Version: {}", p.version),
        format!("Architecture: {}", p.arch),
    ] {
        assert!(info.contains(&field), "control has {field:?}:\n{info}");
    }
    let depends = text(&run(Command::new("dpkg-deb")
        .arg("-f")
        .arg(&p.deb)
        .arg("Depends")));
    assert!(
        depends.contains("libc6") && depends.contains("adduser"),
        "it depends on the C library and on adduser (postinst): {depends}"
    );

    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&p.deb)));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is in the package:\n{listing}"))
            .to_string()
    };
    for (path, mode) in [
        ("/usr/bin/rempart", "-rwxr-xr-x root/root"),
        ("/usr/sbin/rempart-upgrade", "-rwxr-xr-x root/root"),
        (
            "/lib/systemd/system/rempart.service",
            "-rw-r--r-- root/root",
        ),
        ("/etc/rempart/rempart.yaml", "-rw-r--r-- root/root"),
        ("/etc/logrotate.d/rempart", "-rw-r--r-- root/root"),
        ("/usr/share/rempart/default", "-rw-r--r-- root/root"),
        (
            "/usr/share/rempart/prometheus/rempart-rules.yml",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/rempart/grafana/rempart.json",
            "-rw-r--r-- root/root",
        ),
        ("/usr/share/doc/rempart/copyright", "-rw-r--r-- root/root"),
        (
            "/usr/share/doc/rempart/operations.md",
            "-rw-r--r-- root/root",
        ),
        (
            "/usr/share/doc/rempart/examples/pages/waiting-room.html",
            "-rw-r--r-- root/root",
        ),
    ] {
        let line = entry(path);
        assert!(line.starts_with(mode), "{path} is {mode}: {line}");
    }
    assert!(
        listing
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with("drwxr-xr-x root/root"),
        "the tree's root is 0755: {listing}"
    );
    // The pages are built into the binary: nothing under /etc/rempart but the configuration
    // (and the tls/ directory postinst makes, with its own owner and mode).
    let etc: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(" ./etc/rempart/"))
        .collect();
    assert_eq!(
        etc.len(),
        2,
        "/etc/rempart holds rempart.yaml alone: {etc:?}"
    );
    let md5sums = control_file("md5sums");
    assert!(
        md5sums.contains(" usr/bin/rempart\n") && md5sums.contains(" etc/rempart/rempart.yaml\n"),
        "md5sums lists the files: {md5sums}"
    );

    // The binary in it runs.
    let version = text(&run(
        Command::new(p.root.join("usr/bin/rempart")).arg("--version")
    ));
    assert!(version.contains(&p.version), "rempart --version: {version}");
}

#[test]
fn the_configuration_is_a_conffile_and_the_maintainer_scripts_create_the_user_and_spare_a_running_service(
) {
    let conffiles = control_file("conffiles");
    for path in ["/etc/rempart/rempart.yaml", "/etc/logrotate.d/rempart"] {
        assert!(
            conffiles.lines().any(|l| l.trim() == path),
            "{path} is a conffile (an operator's edits survive upgrades): {conffiles}"
        );
    }

    let postinst = control_file("postinst");
    assert!(
        postinst.contains("adduser --system") && postinst.contains(" rempart"),
        "postinst creates the rempart system user:\n{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper") && postinst.contains("[ -d /run/systemd/system ]"),
        "postinst enables the unit and only talks to systemd when it runs:\n{postinst}"
    );
    assert!(
        postinst.contains("/usr/sbin/rempart-upgrade"),
        "an upgrade of the package hands the sockets to the new binary:\n{postinst}"
    );
    let prerm = control_file("prerm");
    assert!(
        prerm.contains("\"$1\" = \"remove\"") && prerm.contains("[ -d /run/systemd/system ]"),
        "prerm stops the service on removal only, and only when systemd runs:\n{prerm}"
    );
    let postrm = control_file("postrm");
    assert!(
        postrm.contains("purge") && postrm.contains("deb-systemd-helper"),
        "postrm forgets the unit on purge:\n{postrm}"
    );

    // The scripts parse, and the upgrade script says why it cannot run here when systemd does not.
    let root = &package().root;
    let scripts = tempfile::tempdir().expect("scripts dir");
    for name in ["postinst", "prerm", "postrm"] {
        let path = scripts.path().join(name);
        std::fs::write(&path, control_file(name)).expect("write the script");
        run(Command::new("sh").arg("-n").arg(&path));
    }
    let upgrade = root.join("usr/sbin/rempart-upgrade");
    run(Command::new("sh").arg("-n").arg(&upgrade));
    if !Path::new("/run/systemd/system").is_dir() {
        let out = Command::new(&upgrade)
            .output()
            .expect("run rempart-upgrade");
        assert_eq!(
            out.status.code(),
            Some(1),
            "rempart-upgrade without systemd"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("systemd is not running here"),
            "it says why: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_is_hardened() {
    let root = &package().root;
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/rempart.service"))
        .expect("the unit is in the package");
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "User=rempart",
        "ExecStart=/usr/bin/rempart -c /etc/rempart/rempart.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RuntimeDirectory=rempart",
        "RuntimeDirectoryMode=0700",
        "RuntimeDirectoryPreserve=yes",
        "LimitNOFILE=",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit has {line:?}:\n{unit}"
        );
    }

    // systemd-analyze checks that the programs exist: point them at the package's copy.
    let dir = tempfile::tempdir().expect("unit dir");
    let checked = dir.path().join("rempart.service");
    let binary = root.join("usr/bin/rempart");
    std::fs::write(
        &checked,
        unit.replace("/usr/bin/rempart", &binary.display().to_string()),
    )
    .expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze ({e}): make deps installs systemd"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify accepts the unit without a warning ({}):\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_installed_configuration_is_valid_once_its_certificate_exists() {
    let root = &package().root;
    let yaml = std::fs::read_to_string(root.join("etc/rempart/rempart.yaml"))
        .expect("the configuration is in the package");
    assert!(
        yaml.contains("address: 127.0.0.1:9901"),
        "admin on loopback"
    );
    assert!(
        yaml.contains("runtime_dir: /run/rempart"),
        "systemd's runtime directory"
    );
    assert!(
        yaml.contains("/etc/rempart/tls/"),
        "certificates under /etc/rempart/tls"
    );

    assert!(
        !yaml.lines().any(|l| l.starts_with("pages:")),
        "the built-in pages serve (no pages section in force)"
    );

    // The same file with /etc/rempart and /var/log/rempart moved into a scratch directory, and
    // the development certificate as the edge's.
    let scratch = tempfile::tempdir().expect("scratch");
    let etc = scratch.path().join("etc");
    let log = scratch.path().join("log");
    std::fs::create_dir_all(etc.join("tls")).expect("tls dir");
    std::fs::create_dir_all(&log).expect("log dir");
    std::fs::copy(
        repo_path("certs/dev/localhost.crt"),
        etc.join("tls/ent.crt"),
    )
    .expect("cert");
    std::fs::copy(
        repo_path("certs/dev/localhost.key"),
        etc.join("tls/ent.key"),
    )
    .expect("key");
    let moved = yaml
        .replace("/etc/rempart/", &format!("{}/", etc.display()))
        .replace("/var/log/rempart/", &format!("{}/", log.display()));
    let file = etc.join("rempart.yaml");
    std::fs::write(&file, moved).expect("write the configuration");
    let mut check = Command::new(root.join("usr/bin/rempart"));
    check.arg("-t").arg("-c").arg(&file);
    for (k, _) in std::env::vars() {
        if k.starts_with("REMPART_") {
            check.env_remove(k);
        }
    }
    let out = run(&mut check);
    assert!(
        text(&out).contains("is valid"),
        "rempart -t accepts it: {}",
        text(&out)
    );
}
