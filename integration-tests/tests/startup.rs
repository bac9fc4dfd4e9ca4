//! Start-up failures (SPEC section 1): a listener that cannot start stops the process with exit
//! code 1 and a message; it never leaves a half-started proxy running.

use std::net::TcpListener;
use std::time::Duration;

use integration_tests::*;

fn assert_exit_1_mentioning(f: &Finished, what: &str, yaml: &str) {
    assert_eq!(
        f.code,
        Some(1),
        "rempart should exit with code 1, it ended with {}.\nstderr:\n{}\nstdout:\n{}\n--- configuration ---\n{yaml}",
        describe_exit(&f.status),
        f.stderr,
        f.stdout
    );
    let all = format!("{}{}", f.stderr, f.stdout);
    assert!(
        all.contains(what),
        "the message should mention {what}; rempart said:\nstderr:\n{}\nstdout:\n{}",
        f.stderr,
        f.stdout
    );
}

#[test]
fn listener_port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let mut y = ProxyYaml::new(vec!["127.0.0.1:9".parse().unwrap()], vec![]);
    y.ports.http = taken_addr;
    let yaml = y.render();
    let f = rempart_run_expect_exit(&yaml, Duration::from_secs(15)).unwrap_or_else(|e| {
        panic!("with listener {taken_addr} already in use, rempart must exit with code 1; {e}")
    });
    assert_exit_1_mentioning(&f, &taken_addr.to_string(), &yaml);
    drop(taken);
}

#[test]
fn tls_listener_port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let mut y = ProxyYaml::new(vec!["127.0.0.1:9".parse().unwrap()], vec![]);
    y.ports.https = taken_addr;
    let yaml = y.render();
    let f = rempart_run_expect_exit(&yaml, Duration::from_secs(15)).unwrap_or_else(|e| {
        panic!("with TLS listener {taken_addr} already in use, rempart must exit with code 1; {e}")
    });
    assert_exit_1_mentioning(&f, &taken_addr.to_string(), &yaml);
    drop(taken);
}

#[test]
fn admin_port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let mut y = ProxyYaml::new(vec!["127.0.0.1:9".parse().unwrap()], vec![]);
    y.ports.admin = taken_addr;
    let yaml = y.render();
    let f = rempart_run_expect_exit(&yaml, Duration::from_secs(15)).unwrap_or_else(|e| {
        panic!("with admin.address {taken_addr} already in use, rempart must exit with code 1; {e}")
    });
    assert_exit_1_mentioning(&f, &taken_addr.to_string(), &yaml);
    drop(taken);
}

#[test]
fn invalid_configuration_refuses_to_start() {
    let mut y = ProxyYaml::new(vec!["127.0.0.1:9".parse().unwrap()], vec![]);
    y.routes = "  - name: x\n    match: { path_prefix: / }\n    upstream: nowhere\n".into();
    let yaml = y.render();
    let f = rempart_run_expect_exit(&yaml, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("rempart -c with an invalid file must exit with code 1; {e}"));
    assert_exit_1_mentioning(&f, "routes[0].upstream", &yaml);
    // Nothing is listening.
    assert!(
        std::net::TcpStream::connect(y.ports.http).is_err(),
        "{} still accepts connections after a failed start",
        y.ports.http
    );
}

#[test]
fn starts_and_becomes_ready() {
    let o = Origin::start("a1", &[]);
    let y = ProxyYaml::new(vec![o.addr()], vec![]);
    let yaml = y.render();
    let mut r = start_rempart(&yaml);
    let (status, body) = r.admin("/healthz");
    assert_eq!((status, body.trim()), (200, "ok"), "admin /healthz");
    assert!(r.is_running());
}
