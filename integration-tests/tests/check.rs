//! `rempart -t -c FILE` (SPEC section 1) and `rempart --version`.

use std::net::SocketAddr;
use std::process::Command;

use integration_tests::*;

fn valid() -> ProxyYaml {
    let a: SocketAddr = "127.0.0.1:18081".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:18082".parse().unwrap();
    ProxyYaml::new(vec![a], vec![b])
}

/// Run the check on a YAML that must fail; return stderr after checking the exit code.
fn check_fails(yaml: &str) -> String {
    let (code, stdout, stderr) = rempart_check(yaml);
    assert_eq!(
        code, 1,
        "rempart -t should exit 1 on this file.\nstdout: {stdout}\nstderr: {stderr}\n--- configuration ---\n{yaml}"
    );
    assert!(
        !stderr.trim().is_empty(),
        "rempart -t exited 1 without a message on stderr"
    );
    stderr
}

fn assert_names(stderr: &str, path: &str, yaml: &str) {
    assert!(
        stderr.contains(path),
        "the error message should name the field `{path}`; rempart -t said:\n{stderr}\n--- configuration ---\n{yaml}"
    );
}

#[test]
fn valid_configuration_exits_0_and_says_so() {
    let yaml = valid().render();
    let f = rempart_check_full(&yaml);
    assert_eq!(
        f.code,
        Some(0),
        "rempart -t rejected a valid file.\nstdout: {}\nstderr: {}\n--- configuration ---\n{yaml}",
        f.stdout,
        f.stderr
    );
    let expected = format!("configuration {} is valid", f.config.display());
    assert!(
        f.stdout.contains(&expected),
        "stdout should say `{expected}`, it says: {:?} (stderr: {:?})",
        f.stdout,
        f.stderr
    );
}

#[test]
fn unknown_field_is_an_error_naming_it() {
    let mut y = valid();
    y.server.push("colour: blue".into());
    let yaml = y.render();
    let err = check_fails(&yaml);
    assert_names(&err, "colour", &yaml);
    assert_names(&err, "server", &yaml);
}

#[test]
fn bad_duration_names_the_field_path() {
    let mut y = valid();
    y.upstream
        .push("timeouts: { connect: 1parsec, response: 30s }".into());
    let yaml = y.render();
    let err = check_fails(&yaml);
    assert_names(&err, "upstreams.ent.timeouts.connect", &yaml);
}

#[test]
fn bad_address_names_the_server_and_the_value() {
    let mut y = valid();
    y.dc_a = vec![];
    let yaml = y
        .render()
        .replace("servers: []", "servers: [\"10.0.0.1:80x\"]");
    let err = check_fails(&yaml);
    assert_names(&err, "upstreams.ent.datacenters[0].servers[0]", &yaml);
    assert_names(&err, "10.0.0.1:80x", &yaml);
}

#[test]
fn dangling_upstream_reference_names_the_route() {
    let mut y = valid();
    y.routes = "  - name: x\n    match: { path_prefix: / }\n    upstream: nowhere\n".into();
    let yaml = y.render();
    let err = check_fails(&yaml);
    assert_names(&err, "routes[0].upstream", &yaml);
    assert_names(&err, "nowhere", &yaml);
}

#[test]
fn missing_certificate_file_names_the_listener() {
    let yaml = valid()
        .render()
        .replace("certs/dev/localhost.crt", "certs/dev/does-not-exist.crt");
    let err = check_fails(&yaml);
    assert_names(&err, "listeners[1].tls.certificates[0].cert", &yaml);
}

#[test]
fn missing_certificate_of_first_listener_names_listeners_0() {
    // The brief's own example: the TLS listener is the only (first) one.
    let y = valid();
    let yaml = y
        .render()
        .replacen(&format!("  - address: {}\n", y.ports.http), "", 1);
    let yaml = yaml.replace("certs/dev/localhost.crt", "certs/dev/does-not-exist.crt");
    let err = check_fails(&yaml);
    assert_names(&err, "listeners[0].tls.certificates[0].cert", &yaml);
}

#[test]
fn every_problem_is_reported_on_its_own_line() {
    // Three value problems in different sections (a structural error such as an unknown field
    // may stop the parse early; these are well-formed YAML of the right shape).
    let mut y = valid();
    y.dc_b = vec![];
    y.upstream.push("timeouts: { connect: 1parsec }".into());
    y.routes = "  - name: x\n    match: { path_prefix: / }\n    upstream: nowhere\n".into();
    let yaml = y
        .render()
        .replace("servers: [127.0.0.1:18081]", "servers: [\"10.0.0.1:80x\"]");
    let err = check_fails(&yaml);
    let paths = [
        "upstreams.ent.timeouts.connect",
        "upstreams.ent.datacenters[0].servers[0]",
        "routes[0].upstream",
    ];
    for path in paths {
        assert!(
            err.lines().any(|l| l.contains(path)),
            "all problems should be reported at once; `{path}` is missing from:\n{err}\n--- configuration ---\n{yaml}"
        );
    }
    let lines: std::collections::HashSet<usize> = paths
        .iter()
        .filter_map(|p| err.lines().position(|l| l.contains(p)))
        .collect();
    assert_eq!(lines.len(), 3, "one line per problem expected:\n{err}");
}

#[test]
fn version_prints_the_version() {
    let bin = rempart_bin().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("run rempart --version");
    assert!(out.status.success(), "rempart --version failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let manifest = std::fs::read_to_string(repo_path("Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .skip_while(|l| l.trim() != "[package]")
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("version in Cargo.toml");
    assert!(
        text.contains(&version),
        "rempart --version printed {text:?}, expected it to contain {version}"
    );
}

#[test]
fn risky_failover_settings_are_warned_about_but_accepted() {
    let mut y = valid();
    y.upstream
        .push("timeouts: { connect: 5s, response: 30s, per_try: 30s, unacked: off }".into());
    y.upstream
        .push("retries: { attempts: 0, budget: 20% }".into());
    y.routes = "  - name: login\n    match: { path_prefix: /auth/login }\n    upstream: ent\n    retries: { resend_post: true }\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
    let yaml = y.render();
    let (code, stdout, stderr) = rempart_check(&yaml);
    assert_eq!(code, 0, "warnings do not fail the check: {stdout} {stderr}");
    for path in [
        "upstreams.ent.timeouts.unacked",
        "upstreams.ent.timeouts.per_try",
        "upstreams.ent.timeouts.connect",
        "upstreams.ent.retries.attempts",
        "routes[0].retries.resend_post",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: ") && l.contains(path)),
            "no warning naming {path}: {stderr}"
        );
    }
    // The safe defaults warn about nothing.
    let (code, _, stderr) = rempart_check(&valid().render());
    assert_eq!(code, 0);
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// `rempart -t -c FILE` from the repository root (as `make run` reads it), with what the cluster
/// demo's script sets for each node and an admin token: (success, stdout and stderr).
fn check_shipped(root: &std::path::Path, file: &str, runtime: &std::path::Path) -> (bool, String) {
    let out = Command::new(rempart_bin().expect("the rempart binary"))
        .current_dir(root)
        .args(["-t", "-c", file])
        .env("REMPART_NODE", "a")
        .env("REMPART_LISTEN", "127.0.0.1:8080")
        .env("REMPART_ADMIN", "127.0.0.1:9901")
        .env("REMPART_RUNTIME_DIR", runtime)
        .env("REMPART_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef")
        .env("REMPART_ADMIN_TOKEN", "an-admin-token")
        .output()
        .expect("rempart -t runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The configurations in conf/ pass `rempart -t`: the demo, the cluster demo and the minimal
/// example as they are; the two-datacenter example (written for an installed machine) with no
/// error but the files it names under /etc and /var. (The package's is checked by deb.rs.)
#[test]
fn the_shipped_configurations_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf();
    let runtime = tempfile::tempdir().expect("a directory");
    for file in [
        "conf/rempart.yaml",
        "conf/cluster.yaml",
        "conf/examples/minimal.yaml",
    ] {
        let (ok, said) = check_shipped(&root, file, runtime.path());
        assert!(ok, "{file} is refused by rempart -t:\n{said}");
    }
    let file = "conf/examples/two-datacenters.yaml";
    let (_, said) = check_shipped(&root, file, runtime.path());
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("\"/etc/rempart/") || line.contains("\"/var/log/rempart\""),
            "{file}: an error other than a file of an installed machine: {line}\n{said}"
        );
    }
}
