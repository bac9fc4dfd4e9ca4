//! Operating Rempart at the edge: live reload under load (route moved, certificate replaced,
//! a broken file refused), SIGHUP and file watch, the admin token, and the dashboard rendered by
//! a real browser. The zero-downtime upgrade has its own file, `upgrade.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::clients::{http_client, tls_probe, TlsVersions};
use integration_tests::poll_until;
use integration_tests::process::{repo_path, Origin};
use integration_tests::stack::{ProxyYaml, Stack};

/// What a load of keep-alive clients saw.
#[derive(Default)]
struct LoadReport {
    ok: AtomicU64,
    failed: AtomicU64,
    by_origin: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    first_failure: std::sync::Mutex<Option<String>>,
}

/// Keep `clients` keep-alive clients looping `GET url` until `stop` (bounded by `limit` in
/// time), counting successes and failures and which origin answered.
fn spawn_load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> (Arc<LoadReport>, std::thread::JoinHandle<()>) {
    let report = Arc::new(LoadReport::default());
    let r = report.clone();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let deadline = Instant::now() + limit;
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (url, stop, r) = (url.clone(), stop.clone(), r.clone());
                tasks.push(tokio::spawn(async move {
                    let client = http_client();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match client.get(&url).send().await {
                            Ok(resp) if resp.status().is_success() => {
                                let origin = resp
                                    .json::<serde_json::Value>()
                                    .await
                                    .ok()
                                    .and_then(|v| v["origin"].as_str().map(str::to_string))
                                    .unwrap_or_default();
                                r.ok.fetch_add(1, Ordering::Relaxed);
                                *r.by_origin.lock().unwrap().entry(origin).or_default() += 1;
                            }
                            other => {
                                r.failed.fetch_add(1, Ordering::Relaxed);
                                let mut first = r.first_failure.lock().unwrap();
                                if first.is_none() {
                                    *first = Some(match other {
                                        Ok(resp) => format!("status {}", resp.status()),
                                        Err(e) => format!("error {e:?}"),
                                    });
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    (report, handle)
}

fn served_by(report: &LoadReport, origin: &str) -> u64 {
    report
        .by_origin
        .lock()
        .unwrap()
        .get(origin)
        .copied()
        .unwrap_or(0)
}

/// Two upstreams: `ent` (origin a1) and `other` (origin o1); the route goes to `upstream`.
fn two_upstreams(yaml: &mut ProxyYaml, other: SocketAddr, upstream: &str) {
    yaml.extra_upstreams = format!(
        "  other:\n    datacenters:\n      - name: dc-o\n        servers: [{other}]\n    health_check: {{ path: /healthz, interval: 100ms, timeout: 500ms, rise: 1, fall: 2 }}\n"
    );
    yaml.routes =
        format!("  - name: default\n    match: {{ path_prefix: / }}\n    upstream: {upstream}\n");
}

fn render_two(yaml: &ProxyYaml) -> String {
    yaml.render()
}

#[test]
fn reload_under_load_moves_a_route_changes_a_limit_and_replaces_a_certificate_without_failing_a_request(
) {
    let other = Origin::start("o1", &[]);
    let other_addr = other.addr();
    let mut yaml_state = None;
    let mut stack = Stack::start(1, 0, |yaml| {
        two_upstreams(yaml, other_addr, "ent");
        yaml_state = Some(yaml.clone());
    });
    let mut yaml = yaml_state.expect("yaml");
    yaml.routes = yaml
        .routes
        .replace("upstream: ent\n", "upstream: ent\n    limits: [probe]\n");
    yaml.extra =
        "limits:\n  probe: { key: \"header:x-probe\", rate: 1000/s, burst: 1000 }\n".into();
    stack.rempart.write_config(&render_two(&yaml));
    let (status, body) = stack.rempart.admin_post("/reload");
    assert_eq!(status, 200, "a reload of the same file is accepted: {body}");

    let stop = Arc::new(AtomicBool::new(false));
    let (report, load) = spawn_load(stack.url("/"), 16, stop.clone(), Duration::from_secs(30));
    assert!(
        poll_until(Duration::from_secs(10), || (served_by(&report, "a1") > 50)
            .then_some(()))
        .is_some(),
        "the load reaches a1 through the route before the reload"
    );

    // Move the route to `other` and swap the certificates' order (the default changes).
    two_upstreams(&mut yaml, other_addr, "other");
    // A limit changes too: `probe` (keyed on a header the load never sends) becomes tight.
    yaml.routes = yaml.routes.replace(
        "upstream: other\n",
        "upstream: other\n    limits: [probe]\n",
    );
    yaml.extra = "limits:\n  probe: { key: \"header:x-probe\", rate: 1/min, burst: 1 }\n".into();
    let new_yaml = render_two(&yaml).replace(
        "        - { cert: certs/dev/localhost.crt, key: certs/dev/localhost.key }\n        - { cert: certs/dev/ent-example.crt, key: certs/dev/ent-example.key }\n",
        "        - { cert: certs/dev/ent-example.crt, key: certs/dev/ent-example.key }\n        - { cert: certs/dev/localhost.crt, key: certs/dev/localhost.key }\n",
    );
    assert_ne!(
        new_yaml,
        render_two(&yaml),
        "the certificate swap applies to the YAML"
    );
    stack.rempart.write_config(&new_yaml);
    let (status, body) = stack.rempart.admin_post("/reload");
    assert_eq!(status, 200, "POST /reload accepts the new file: {body}");
    let generation: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        generation["generation"], 3,
        "each reload is one generation more: {body}"
    );

    let moved = poll_until(Duration::from_secs(10), || {
        (served_by(&report, "o1") > 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert!(
        moved.is_some(),
        "after the reload the route's traffic reaches the other upstream"
    );
    let failed = report.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "no request fails across the reload ({} ok); first failure: {:?}",
        report.ok.load(Ordering::Relaxed),
        report.first_failure.lock().unwrap()
    );

    // The changed limit is in force: one probe passes, the next is refused.
    let probe = |n: usize| {
        integration_tests::http1::request(
            stack.ports.http,
            "GET",
            "/probe",
            &[("X-Probe", "p1")],
            b"",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("probe {n}: {e}"))
        .status
    };
    assert_eq!(probe(1), 200, "the first probe fits the new burst of 1");
    assert_eq!(
        probe(2),
        429,
        "the second probe meets the new, tighter limit"
    );

    // New handshakes without SNI get the new default certificate.
    let https = stack.ports.https;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let probe = rt
        .block_on(tls_probe(https, None, TlsVersions::Both, &["http/1.1"]))
        .expect("TLS handshake");
    assert!(
        probe.leaf_is("certs/dev/ent-example.crt"),
        "after the reload the default certificate is the new first one, got {:?}",
        probe.names
    );

    let status = stack.rempart.admin_json("/status");
    assert_eq!(status["generation"], 3);
    assert!(status["last_reload_error"].is_null());
    drop(other);
}

#[test]
fn a_broken_file_changes_nothing_and_is_reported() {
    let mut yaml_state = None;
    let mut stack = Stack::start(1, 0, |yaml| yaml_state = Some(yaml.clone()));
    let yaml = yaml_state.expect("yaml");
    let broken = yaml.render().replace("upstream: ent", "upstream: nowhere") + "bogus_section: 1\n";
    stack.rempart.write_config(&broken);
    let (status, body) = stack.rempart.admin_post("/reload");
    assert_eq!(status, 400, "a broken file is refused: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let errors = answer["errors"].as_array().expect("errors list");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap_or("").contains("bogus_section")),
        "the errors name the unknown field: {body}"
    );
    let status = stack.rempart.admin_json("/status");
    assert_eq!(status["generation"], 1, "nothing changed");
    assert!(
        status["last_reload_error"]
            .as_str()
            .unwrap_or("")
            .contains("bogus_section"),
        "/status shows the last reload error: {status}"
    );
    let resp = integration_tests::http1::get(stack.ports.http, "/still").expect("request");
    assert_eq!(resp.status, 200, "the old configuration still serves");
    let metrics = stack.rempart.admin("/metrics").1;
    assert!(
        metrics.contains("rempart_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sighup_and_file_watch_reload() {
    let mut yaml_state = None;
    let mut stack = Stack::start(1, 0, |yaml| {
        yaml.server.push("watch_config: true".into());
        yaml_state = Some(yaml.clone());
    });
    let mut yaml = yaml_state.expect("yaml");

    // SIGHUP: a route that answers 404 after the reload.
    yaml.routes = "  - name: default\n    match: { path_prefix: /app }\n    upstream: ent\n".into();
    let (code_before, _) = (
        integration_tests::http1::get(stack.ports.http, "/x")
            .expect("get")
            .status,
        (),
    );
    assert_eq!(code_before, 200);
    stack.rempart.write_config(&yaml.render());
    stack.rempart.signal(libc::SIGHUP);
    let reloaded = poll_until(Duration::from_secs(10), || {
        let generation = stack.rempart.admin_json("/status")["generation"].as_u64();
        (generation >= Some(2)).then_some(())
    });
    assert!(reloaded.is_some(), "SIGHUP (or the watch) reloads the file");
    let resp = integration_tests::http1::get(stack.ports.http, "/x").expect("get");
    assert_eq!(resp.status, 404, "the new routes are in force");
    assert!(
        stack.rempart.is_running(),
        "SIGHUP does not stop the process"
    );

    // The file watch alone: no signal, no admin call.
    yaml.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    stack.rempart.write_config(&yaml.render());
    let watched = poll_until(Duration::from_secs(10), || {
        (integration_tests::http1::get(stack.ports.http, "/x")
            .ok()?
            .status
            == 200)
            .then_some(())
    });
    assert!(
        watched.is_some(),
        "server.watch_config reloads a changed file by itself"
    );
}

#[test]
fn admin_token_guards_everything_but_healthz() {
    let stack = Stack::start(1, 0, |yaml| yaml.admin.push("token: s3cret-token".into()));
    let url = |p: &str| format!("http://{}{}", stack.ports.admin, p);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = http_client();
        for path in ["/status", "/metrics", "/config", "/readyz"] {
            let resp = client.get(url(path)).send().await.expect("admin answers");
            assert_eq!(resp.status(), 401, "{path} without the token");
            let resp = client
                .get(url(path))
                .header("Authorization", "Bearer wrong")
                .send()
                .await
                .expect("admin answers");
            assert_eq!(resp.status(), 401, "{path} with a wrong token");
            let resp = client
                .get(url(path))
                .header("Authorization", "Bearer s3cret-token")
                .send()
                .await
                .expect("admin answers");
            assert_eq!(resp.status(), 200, "{path} with the token");
        }
        let resp = client
            .post(url("/reload"))
            .send()
            .await
            .expect("admin answers");
        assert_eq!(resp.status(), 401, "POST /reload without the token");
        let resp = client
            .get(url("/healthz"))
            .send()
            .await
            .expect("admin answers");
        assert_eq!(resp.status(), 200, "/healthz needs no token");
        let resp = client.get(url("/")).send().await.expect("admin answers");
        assert_eq!(
            resp.status(),
            200,
            "the dashboard page itself holds no data"
        );
        let page = resp.text().await.expect("page");
        assert!(!page.contains("s3cret-token"));
    });
}

/// Headless Chromium, as the project installs it (`.ci/install-deps.sh`).
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn chromium_command(bin: &PathBuf, profile: &std::path::Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn dashboard_renders_datacenters_in_a_real_browser() {
    let bin = chromium().expect(
        "Chromium is needed to test the dashboard: `make test` installs Debian's chromium (.ci/install-deps.sh)",
    );
    let stack = Stack::start(1, 1, |_| {});
    for _ in 0..20 {
        let _ = integration_tests::http1::get(stack.ports.http, "/warm");
    }
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{}/", stack.ports.admin);
    let output = chromium_command(&bin, profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("data-generation=\"1\""),
        "the page loaded /status and rendered it (generation 1); stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for needle in [
        "dc-a",
        "dc-b",
        &stack.dc_a[0].addr().to_string(),
        "ent → dc-a",
    ] {
        assert!(dom.contains(needle), "the dashboard shows {needle:?}");
    }
    assert!(dom.contains("Calme") || dom.contains("Afflux") || dom.contains("Attaque"));

    // A screenshot as a test artifact, for people.
    let artifacts = repo_path("target/test-artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    let shot = artifacts.join("dashboard.png");
    let status = chromium_command(&bin, profile.path())
        .arg("--window-size=1300,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(status.status.success(), "screenshot taken");
    assert!(shot.exists(), "screenshot at {}", shot.display());
}
