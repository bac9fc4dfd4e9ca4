//! `rempart ctl` against the real binary: the status summary, drains of a datacenter and of a
//! server (tables and `--json`), names that do not exist (exit 4), an admin API nobody serves
//! (exit 3), the token (exit 1 without it, from `--token`, the environment or the file), a
//! reload refused with its errors, and a login queue paused and resumed with its deepest
//! tenants on show.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

/// What a `rempart ctl` run left.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(&self, code: i32, what: &str) -> &Run {
        assert_eq!(
            self.code, code,
            "{what}: exit code {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", self.stdout))
    }

    /// The line of the table whose first column is `name`.
    fn row(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name:?} in:\n{}", self.stdout))
    }
}

/// Runs `rempart ctl ARGS` from an empty directory (no `conf/rempart.yaml` to find), with
/// `env` and without the caller's `REMPART_*` variables; 30 s at most.
fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let bin = rempart_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
    let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let mut cmd = Command::new(&bin);
    cmd.arg("ctl")
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, _) in std::env::vars() {
        if k.starts_with("REMPART_") && k != "REMPART_BIN" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for rempart ctl") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rempart ctl {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: read("stdout"),
        stderr: read("stderr"),
    }
}

fn ctl(args: &[&str]) -> Run {
    ctl_env(args, &[])
}

/// `rempart ctl --admin ADDR ARGS`.
fn ctl_at(s: &Stack, args: &[&str]) -> Run {
    let admin = s.ports.admin.to_string();
    let mut all = vec!["--admin", admin.as_str()];
    all.extend_from_slice(args);
    ctl(&all)
}

fn dc_state(s: &Stack, dc: usize) -> String {
    s.rempart.admin_json("/status")["upstreams"]["ent"]["datacenters"][dc]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait_dc_state(s: &Stack, dc: usize, state: &str) {
    let ok = poll_until(Duration::from_secs(10), || {
        (dc_state(s, dc) == state).then_some(())
    });
    assert!(
        ok.is_some(),
        "datacenter {dc} never {state:?}: {}",
        s.rempart.admin_json("/status")["upstreams"]
    );
}

#[test]
fn status_then_a_datacenter_drained_and_undrained() {
    let s = Stack::start(1, 1, |_| {});
    wait_dc_state(&s, 1, "up");
    let a = s.dc_a[0].addr().to_string();
    let b = s.dc_b[0].addr().to_string();

    let run = ctl_at(&s, &["status"]);
    run.expect(0, "ctl status");
    for want in [
        "rempart 0.1.0, pid ",
        "state:       ready\n",
        "last reload error: none\n",
        "Upstream ent: active datacenter dc-a",
        "DATACENTER / SERVER",
        "Bans: 0 in force",
    ] {
        assert!(
            run.stdout.contains(want),
            "{want:?} missing:\n{}",
            run.stdout
        );
    }
    assert!(run.row("dc-a").contains("up, active"), "{}", run.stdout);
    assert!(run.row(&a).contains("usable"), "{}", run.stdout);
    assert!(run.row(&b).contains("up"), "{}", run.stdout);
    assert!(
        !run.stdout.contains('\x1b'),
        "no colour when stdout is no terminal"
    );

    let run = ctl_at(&s, &["drain", "dc-a"]);
    run.expect(0, "ctl drain dc-a");
    assert_eq!(
        run.stdout,
        "datacenter dc-a drained (upstream ent); active datacenter: dc-b\n"
    );
    let run = ctl_at(&s, &["status"]);
    run.expect(0, "ctl status after the drain");
    assert!(run.row("dc-a").contains("draining"), "{}", run.stdout);
    assert!(run.row("dc-b").contains("up, active"), "{}", run.stdout);
    assert!(
        run.stdout.contains("active datacenter dc-b"),
        "{}",
        run.stdout
    );

    let run = ctl_at(&s, &["--json", "status"]);
    run.expect(0, "ctl --json status");
    let v = run.json();
    assert_eq!(v["upstreams"]["ent"]["datacenters"][0]["state"], "draining");
    assert_eq!(v["upstreams"]["ent"]["active_datacenter"], "dc-b");

    // Options may also follow the command.
    let run = ctl_at(&s, &["drain", "dc-a", "--json"]);
    run.expect(0, "ctl drain dc-a again");
    let v = run.json();
    assert_eq!(
        (v["drained"].as_bool(), v["changed"].as_bool()),
        (Some(true), Some(false))
    );

    let run = ctl_at(&s, &["undrain", "dc-a"]);
    run.expect(0, "ctl undrain dc-a");
    assert!(
        run.stdout
            .starts_with("datacenter dc-a undrained (upstream ent)"),
        "{}",
        run.stdout
    );
    assert_ne!(dc_state(&s, 0), "draining");
    let run = ctl_at(&s, &["status"]);
    assert!(!run.row("dc-a").contains("draining"), "{}", run.stdout);
}

#[test]
fn a_server_drained_and_names_that_do_not_exist() {
    let s = Stack::start(2, 1, |_| {});
    let a2 = s.dc_a[1].addr().to_string();

    let run = ctl_at(&s, &["drain", &a2, "--upstream", "ent"]);
    run.expect(0, "ctl drain SERVER");
    assert!(
        run.stdout.starts_with(&format!(
            "server {a2} of datacenter dc-a drained (upstream ent); active datacenter: dc-a"
        )),
        "{}",
        run.stdout
    );
    let run = ctl_at(&s, &["status"]);
    assert!(run.row(&a2).contains("drained"), "{}", run.stdout);
    let v = ctl_at(&s, &["--json", "status"]).json();
    assert_eq!(
        v["upstreams"]["ent"]["datacenters"][0]["servers"][1]["drained"],
        true
    );
    ctl_at(&s, &["undrain", &a2]).expect(0, "ctl undrain SERVER");
    let v = s.rempart.admin_json("/status");
    assert_eq!(
        v["upstreams"]["ent"]["datacenters"][0]["servers"][1]["drained"],
        false
    );

    let run = ctl_at(&s, &["drain", "nosuch"]);
    run.expect(4, "ctl drain nosuch");
    assert!(
        run.stderr
            .contains("no datacenter \"nosuch\" (datacenters: dc-a, dc-b)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    ctl_at(&s, &["undrain", "10.9.9.9:1"]).expect(4, "ctl undrain of an unknown server");
    ctl_at(&s, &["drain", "dc-a", "--upstream", "nope"]).expect(4, "an unknown upstream");
    let run = ctl_at(&s, &["unban", "203.0.113.9"]);
    run.expect(4, "ctl unban of an address that is not banned");
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    ctl_at(&s, &["unban", "not-an-ip"]).expect(2, "ctl unban of something else");
    ctl_at(&s, &["pause", "nosuch"]).expect(4, "ctl pause of an unknown queue");
    let run = ctl_at(&s, &["--json", "pause", "nosuch"]);
    run.expect(4, "ctl --json pause of an unknown queue");
    assert!(
        run.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("nosuch")),
        "the error's JSON on stdout: {}",
        run.stdout
    );
    ctl_at(&s, &["drain"]).expect(2, "ctl drain without a name");
    ctl_at(&s, &["frobnicate"]).expect(2, "an unknown command");
    assert_eq!(
        dc_state(&s, 0),
        "up",
        "nothing was drained by the failed calls"
    );

    let run = ctl_at(&s, &["bans"]);
    run.expect(0, "ctl bans");
    assert_eq!(run.stdout, "no bans in force\n");
    let v = ctl_at(&s, &["bans", "--json"]).json();
    assert_eq!(v["total"], 0);
    assert_eq!(v["bans"], serde_json::json!([]));
}

#[test]
fn nothing_at_the_admin_address_exits_3() {
    let run = ctl(&["--admin", "127.0.0.1:1", "status"]);
    run.expect(3, "ctl --admin 127.0.0.1:1 status");
    assert!(
        run.stderr
            .contains("cannot reach the admin API at 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    ctl(&["--admin", "127.0.0.1:1", "drain", "dc-a"]).expect(3, "ctl drain with nothing there");
    ctl(&["--admin", "https://127.0.0.1:1", "status"]).expect(2, "an https admin address");
    // Something that is not HTTP answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut c, _)) = listener.accept() {
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
            let mut b = [0u8; 512];
            let _ = c.read(&mut b);
        }
    });
    let run = ctl(&["--admin", &addr, "status"]);
    run.expect(3, "ctl status against something that is not HTTP");
    assert!(run.stderr.contains("not HTTP"), "{}", run.stderr);
    let _ = server.join();
}

#[test]
fn the_token_from_the_flag_the_environment_or_the_file() {
    let s = Stack::start(1, 1, |y| y.admin.push("token: s3cret-token".into()));
    let admin = s.ports.admin.to_string();

    let run = ctl_at(&s, &["status"]);
    run.expect(1, "ctl status without the token");
    assert!(
        run.stderr.contains("the admin API wants its token")
            && run
                .stderr
                .contains("--token, REMPART_ADMIN_TOKEN or admin.token"),
        "{}",
        run.stderr
    );
    let run = ctl_at(&s, &["--token", "wrong", "status"]);
    run.expect(1, "ctl status with a wrong token");
    assert!(
        run.stderr.contains("not the one of admin.token"),
        "{}",
        run.stderr
    );
    ctl_at(&s, &["drain", "dc-a"]).expect(1, "ctl drain without the token");
    assert_eq!(dc_state(&s, 0), "up");

    let run = ctl_at(&s, &["--token", "s3cret-token", "status"]);
    run.expect(0, "ctl status with --token");
    assert!(run.stdout.contains("Upstream ent"), "{}", run.stdout);
    ctl_at(&s, &["--token", "s3cret-token", "drain", "dc-a"]).expect(0, "ctl drain with --token");
    assert_eq!(dc_state(&s, 0), "draining");

    // From the environment.
    ctl_env(
        &["undrain", "dc-a"],
        &[
            ("REMPART_ADMIN", &admin),
            ("REMPART_ADMIN_TOKEN", "s3cret-token"),
        ],
    )
    .expect(0, "ctl undrain with REMPART_ADMIN and REMPART_ADMIN_TOKEN");
    assert_ne!(dc_state(&s, 0), "draining");

    // From the file: its certificates are relative paths that do not resolve from where ctl
    // runs, so the whole file does not load, and the admin keys are read alone.
    let conf = s.rempart.config_path().to_string_lossy().into_owned();
    assert!(Path::new(&conf).is_absolute());
    let run = ctl(&["-c", &conf, "status"]);
    run.expect(0, "ctl -c FILE status");
    assert!(run.stdout.contains("Upstream ent"), "{}", run.stdout);
    assert_eq!(run.stderr, "", "nothing to say about the file");
    // The flag still wins over the file.
    ctl(&["-c", &conf, "--token", "wrong", "status"]).expect(1, "--token over the file's");
    ctl(&["-c", "/nonexistent/rempart.yaml", "status"]).expect(2, "a -c file that does not exist");
}

#[test]
fn a_reload_prints_the_generation_or_the_errors() {
    let mut s = Stack::start(1, 0, |_| {});
    let run = ctl_at(&s, &["reload"]);
    run.expect(0, "ctl reload");
    assert_eq!(run.stdout, "reloaded: generation 2\n");

    let broken = s.yaml.replace("upstream: ent", "upstream: nowhere") + "bogus_section: 1\n";
    s.rempart.write_config(&broken);
    let run = ctl_at(&s, &["reload"]);
    run.expect(1, "ctl reload of a broken file");
    assert!(
        run.stderr
            .contains("reload refused: the configuration has errors; nothing changed"),
        "{}",
        run.stderr
    );
    let conf = s.rempart.config_path().display().to_string();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.trim_start().starts_with(&conf) && l.contains("bogus_section")),
        "each error on its line, with the file and the key:\n{}",
        run.stderr
    );
    let run = ctl_at(&s, &["--json", "reload"]);
    run.expect(1, "ctl --json reload of a broken file");
    assert!(run.json()["errors"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));

    let run = ctl_at(&s, &["status"]);
    assert!(run.stdout.contains("generation:  2,"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("last reload error: ") && l.contains("bogus_section")),
        "{}",
        run.stdout
    );
}

#[test]
fn a_login_queue_paused_and_resumed() {
    let origin = Origin::start("a1", &["--login-cost", "50ms"]);
    let s = Stack::start_with(
        vec![origin],
        vec![],
        |y| {
            y.routes = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
            y.extra = "login_queues:\n  logins:\n    concurrency: 2\n    tenant: header:X-ENT-UAI\n    hold: 10s\n".into();
        },
        true,
    );

    let run = ctl_at(&s, &["pause", "logins"]);
    run.expect(0, "ctl pause logins");
    assert!(
        run.stdout.starts_with("login queue logins paused"),
        "{}",
        run.stdout
    );
    assert_eq!(
        s.rempart.admin_json("/status")["queues"]["logins"]["paused"],
        true
    );

    // Three logins of one school and one of another wait in line.
    let http = s.ports.http;
    let waiting: Vec<_> = ["0750001A", "0750001A", "0750001A", "0750002B"]
        .into_iter()
        .map(|uai| {
            std::thread::spawn(move || {
                http1::request(
                    http,
                    "GET",
                    "/auth/login",
                    &[("X-ENT-UAI", uai)],
                    b"",
                    Duration::from_secs(20),
                )
                .map(|a| a.status)
            })
        })
        .collect();
    let queued = poll_until(Duration::from_secs(10), || {
        (s.rempart.admin_json("/status")["queues"]["logins"]["waiting"] == 4).then_some(())
    });
    assert!(
        queued.is_some(),
        "{}",
        s.rempart.admin_json("/status")["queues"]
    );

    let run = ctl_at(&s, &["status"]);
    run.expect(0, "ctl status with a paused queue");
    let row = run.row("logins");
    assert!(row.contains("PAUSED"), "{}", run.stdout);
    assert_eq!(
        row.split_whitespace().take(6).collect::<Vec<_>>(),
        ["logins", "2", "0", "4", "0", "2"],
        "limit, in flight, waiting, with a pass, tenants:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("deepest tenants of logins: 0750001A 3, 0750002B 1"),
        "{}",
        run.stdout
    );

    let run = ctl_at(&s, &["--json", "resume", "logins"]);
    run.expect(0, "ctl resume logins");
    assert_eq!(run.json()["paused"], false);
    for w in waiting {
        let status = w.join().expect("a login thread");
        assert_eq!(status.ok(), Some(200), "a login admitted after the resume");
    }
    let run = ctl_at(&s, &["status"]);
    assert!(!run.row("logins").contains("PAUSED"), "{}", run.stdout);
    ctl_at(&s, &["resume", "nosuch"]).expect(4, "ctl resume of an unknown queue");
}

#[test]
fn bans_listed_across_pages_and_lifted() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("trusted_proxies: [127.0.0.1/32]".into());
        y.server.push("max_connections_per_ip: 10000".into());
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n".into();
        y.extra = "limits:\n  per_ip: { key: client_ip, rate: 1/min, burst: 1 }\nshield:\n  ban: { after: 1, within: 1m, for: 10m }\n".into();
    });
    // More banned addresses than one page of GET /bans holds (1000).
    const BANNED: usize = 1010;
    let http = s.ports.http;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                for i in (w..BANNED).step_by(4) {
                    let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
                    for _ in 0..2 {
                        let _ = http1::request(
                            http,
                            "GET",
                            "/",
                            &[("X-Forwarded-For", &ip)],
                            b"",
                            Duration::from_secs(5),
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread");
    }
    let count = s.rempart.admin_json("/status")["bans"]["count"].clone();
    assert_eq!(count, BANNED, "every client banned");

    let run = ctl_at(&s, &["bans"]);
    run.expect(0, "ctl bans");
    assert!(
        run.stdout.starts_with("IP ") && run.stdout.contains("  SINCE  "),
        "{}",
        &run.stdout[..run.stdout.len().min(400)]
    );
    assert!(
        run.stdout
            .ends_with(&format!("{BANNED} ban(s) listed, {BANNED} in force\n")),
        "{}",
        &run.stdout[run.stdout.len().saturating_sub(400)..]
    );
    assert_eq!(
        run.stdout.lines().count(),
        BANNED + 2,
        "a header, the bans, the total"
    );
    let v = ctl_at(&s, &["--json", "bans"]).json();
    assert_eq!(v["total"], BANNED);
    assert_eq!(v["bans"].as_array().map(Vec::len), Some(BANNED));

    let run = ctl_at(&s, &["status"]);
    assert!(
        run.stdout.contains(&format!(
            "Bans: {BANNED} in force (rempart ctl bans lists them)"
        )),
        "{}",
        run.stdout
    );

    let run = ctl_at(&s, &["unban", "10.77.0.1"]);
    run.expect(0, "ctl unban");
    assert_eq!(run.stdout, "ban of 10.77.0.1 lifted\n");
    ctl_at(&s, &["unban", "10.77.0.1"]).expect(4, "ctl unban of a ban already lifted");
    let v = ctl_at(&s, &["--json", "bans"]).json();
    assert_eq!(v["total"], BANNED - 1);
    let still: Vec<&str> = v["bans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["ip"].as_str())
        .collect();
    assert!(!still.contains(&"10.77.0.1"), "lifted, not listed");
    let a = http1::request(
        http,
        "GET",
        "/",
        &[("X-Forwarded-For", "10.77.0.1")],
        b"",
        Duration::from_secs(5),
    )
    .expect("a request");
    assert_ne!(a.status, 403, "no longer banned");
}
