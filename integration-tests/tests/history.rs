//! `GET /history` and the dashboard's curves, on the real binary over real sockets: a login
//! stampede from two schools, a drain of dc-a through the admin API, and what the last minutes
//! look like afterwards (1 s apart, requests, queue depth and its deepest schools, the answers
//! by reason, the drain and the failover marked). Then the dashboard in headless Chromium: the
//! banner says "stampede" and names the queue's curve that triggered it; a screenshot is kept
//! in `target/test-artifacts/`.
//!
//! Bounded: the stampede is 24 logins that wait in a 60 s line (nobody is served before the
//! test ends it), every poll has a deadline, and nothing is asserted on durations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

const LYCEE_USERS: usize = 16;
const ECOLE_USERS: usize = 8;

/// The YAML of the stampede: a login queue of concurrency 1 in front of logins that take 2 s,
/// a `hold` longer than the test, and a small limit on `/api` to have a few refusals.
fn stampede_yaml(y: &mut ProxyYaml) {
    y.server.push("max_connections_per_ip: 10000".into());
    y.routes = "  - name: login\n    match: { path_prefix: /auth/login }\n    upstream: ent\n    login_queue: logins\n  - name: api\n    match: { path_prefix: /api }\n    upstream: ent\n    limits: [api_per_ip]\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
    y.extra = "limits:\n  api_per_ip: { key: client_ip, rate: 1/s, burst: 2 }\nlogin_queues:\n  logins:\n    concurrency: 1\n    tenant: header:X-ENT-UAI\n    hold: 60s\n    max_waiting: 1000\n    per_client_waiting: 1000\n".into();
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn events_of(history: &Value) -> Vec<(String, String)> {
    history["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or("").to_string(),
                        e["detail"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Headless Chromium: the one the repository's dependency script installs, else on PATH.
fn chromium() -> Option<PathBuf> {
    let installed = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    installed.or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
            .find(|p| p.is_file())
    })
}

/// Chromium with a throwaway profile, loading `url` with a few seconds of page time so the
/// dashboard's first `/status` and `/history` calls are rendered.
fn headless(bin: &Path, profile: &Path, url: &str, extra: &[String]) -> std::process::Output {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    // Bounded: a Chromium that hangs is killed.
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("chromium failed: {e}"),
        Err(_) => {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("chromium did not finish within 60 s");
        }
    }
}

/// Take a screenshot of `url` into `target/test-artifacts/NAME`; returns the DOM it rendered,
/// or None (with a message) when no Chromium can be found after `.ci/install-deps.sh`.
fn screenshot(url: &str, name: &str, size: (u32, u32)) -> Option<(String, PathBuf)> {
    let Some(bin) = chromium() else {
        eprintln!(
            "SKIPPED: the dashboard screenshot needs Chromium, which .ci/install-deps.sh installs (make deps); none found"
        );
        return None;
    };
    let profile = tempfile::tempdir().expect("a profile directory");
    let dom = headless(&bin, profile.path(), url, &["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    let artifacts = repo_path("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("target/test-artifacts");
    let shot = artifacts.join(name);
    let _ = std::fs::remove_file(&shot);
    let output = headless(
        &bin,
        profile.path(),
        url,
        &[
            format!("--window-size={},{}", size.0, size.1),
            format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(
        output.status.success() && shot.is_file(),
        "screenshot at {}: {}",
        shot.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((dom, shot))
}

/// The value of `data-NAME="..."` on the dumped `<body>`.
fn body_data<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("data-{name}=\"");
    let start = dom.find(&needle)? + needle.len();
    dom[start..].split('"').next()
}

#[test]
fn history_of_a_stampede_and_a_drain_on_the_dashboard() {
    let a1 = Origin::start("a1", &["--login-cost", "2s"]);
    let b1 = Origin::start("b1", &["--login-cost", "2s"]);
    let s = Stack::start_with(vec![a1], vec![b1], stampede_yaml, true);

    // Traffic before the stampede, and a few refusals by the limit.
    for _ in 0..10 {
        let a = http1::get(s.ports.http, "/page").expect("GET /page");
        assert_eq!(a.status, 200);
    }
    let refused = (0..12)
        .filter(|_| http1::get(s.ports.http, "/api/x").is_ok_and(|a| a.status == 429))
        .count();
    assert!(refused > 0, "the api limit refused nothing");

    // The stampede: two schools log in at once; the line holds them (60 s) while the test
    // looks, and the test ends it by dropping the runtime (the clients go away).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(90))
        .http1_only()
        .build()
        .expect("client");
    for i in 0..(LYCEE_USERS + ECOLE_USERS) {
        let school = if i < LYCEE_USERS { "LYCEE" } else { "ECOLE" };
        let c = client.clone();
        let url = s.url("/auth/login");
        rt.spawn(async move {
            let _ = c
                .post(url)
                .header("X-ENT-UAI", school)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("username=eleve{i}&password=x"))
                .send()
                .await;
        });
    }
    let filled = poll_until(Duration::from_secs(30), || {
        let v = s.rempart.admin_json("/status");
        (v["queues"]["logins"]["waiting"].as_u64()? >= 10).then_some(())
    });
    assert!(
        filled.is_some(),
        "the stampede never filled the line: {}",
        s.rempart.admin_json("/status")["queues"]
    );

    // The drain of dc-a, through the admin API: traffic moves to dc-b.
    let (st, body) = s
        .rempart
        .admin_post("/upstreams/ent/datacenters/dc-a/drain");
    assert_eq!(st, 200, "drain: {body}");
    let drained: Value = serde_json::from_str(&body).expect("drain JSON");
    assert_eq!(drained["changed"], true, "{drained}");
    assert_eq!(drained["active_datacenter"], "dc-b", "{drained}");
    for _ in 0..10 {
        let a = http1::get(s.ports.http, "/after-drain").expect("GET after the drain");
        assert_eq!(a.status, 200);
        assert!(a.text().contains("b1"), "answered by dc-b: {}", a.text());
    }

    // The history shows it all once the sampler has ticked past it.
    let mut last = Value::Null;
    let history = poll_until(Duration::from_secs(20), || {
        let (st, body) = s.rempart.admin("/history");
        assert_eq!(st, 200, "GET /history: {body}");
        let v: Value = serde_json::from_str(&body).expect("/history is JSON");
        last = v.clone();
        let requests: u64 = numbers(&v["requests"]).iter().sum();
        let deepest = numbers(&v["queues"]["logins"]["waiting"])
            .into_iter()
            .max()
            .unwrap_or(0);
        let drain_seen = events_of(&v).iter().any(|(k, _)| k == "drain");
        // At least one point after the drain event, and requests after it.
        let after_drain = v["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["kind"] == "drain"))
            .and_then(|e| e["t"].as_f64())
            .zip(
                v["t"]
                    .as_array()
                    .and_then(|t| t.last())
                    .and_then(Value::as_f64),
            )
            .is_some_and(|(drain, newest)| newest > drain + 1.0);
        let points = v["points"].as_u64().unwrap_or(0);
        (points >= 3 && requests >= 20 && deepest >= 10 && drain_seen && after_drain).then_some(v)
    })
    .unwrap_or_else(|| panic!("/history never showed the stampede and the drain: {last}"));

    assert_eq!(history["step_seconds"], 1);
    assert_eq!(history["capacity"], 900);
    let t = numbers(&history["t"]);
    let points = history["points"].as_u64().expect("points") as usize;
    assert!((3..=900).contains(&points), "{points} points");
    assert_eq!(t.len(), points);
    assert!(
        t.windows(2).all(|w| w[1] == w[0] + 1),
        "points are 1 s apart: {t:?}"
    );
    assert_eq!(history["start"].as_u64(), t.first().copied());
    for series in [
        &history["requests"],
        &history["errors_5xx"],
        &history["latency_ms"]["p50"],
        &history["latency_ms"]["p95"],
        &history["bans"]["new"],
        &history["bans"]["active"],
        &history["queues"]["logins"]["waiting"],
        &history["queues"]["logins"]["admitted"],
    ] {
        assert_eq!(
            series.as_array().map(Vec::len),
            Some(points),
            "one value a point: {series}"
        );
    }
    assert!(
        history["latency_ms"]["p95"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_f64().is_some_and(|ms| ms > 0.0))),
        "a p95 was measured: {}",
        history["latency_ms"]
    );
    let limited: u64 = numbers(&history["answers"]["rate_limited"]).iter().sum();
    assert_eq!(limited as usize, refused, "the refusals, by reason");
    let logins = &history["queues"]["logins"];
    assert!(
        numbers(&logins["limit"]).iter().all(|l| *l == 1),
        "{logins}"
    );
    let deepest = logins["deepest_tenants"]
        .as_array()
        .expect("deepest tenants");
    let lycee = deepest
        .iter()
        .find(|d| d["tenant"] == "LYCEE")
        .unwrap_or_else(|| panic!("LYCEE among the deepest schools: {logins}"));
    assert!(
        numbers(&lycee["waiting"]).iter().any(|w| *w >= 10),
        "LYCEE's depth: {lycee}"
    );
    assert!(
        deepest.iter().any(|d| d["tenant"] == "ECOLE"),
        "ECOLE among the deepest schools: {logins}"
    );
    let events = events_of(&history);
    assert!(
        events.contains(&("drain".into(), "ent/dc-a (datacenter)".into())),
        "the drain is marked: {events:?}"
    );
    assert!(
        events.contains(&("failover".into(), "ent: dc-a → dc-b".into())),
        "the failover it caused is marked: {events:?}"
    );

    // A few more seconds of traffic while the line holds, so the curves have some length.
    let mut points = points;
    for i in 0..300 {
        if points >= 12 {
            break;
        }
        let path = if i % 10 == 0 { "/api/y" } else { "/page" };
        let _ = http1::get(s.ports.http, path);
        std::thread::sleep(Duration::from_millis(50));
        if i % 10 == 9 {
            points = s.rempart.admin_json("/history")["points"]
                .as_u64()
                .unwrap_or(0) as usize;
        }
    }

    // The dashboard, while the line is still there.
    let url = format!("http://{}/", s.ports.admin);
    if let Some((dom, shot)) = screenshot(&url, "history-dashboard.png", (1400, 2000)) {
        let rendered = body_data(&dom, "history-points")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            rendered >= 2,
            "the dashboard drew the history (data-history-points {rendered}):\n{dom}"
        );
        assert!(
            dom.matches("class=\"history-chart\"").count() >= 5,
            "traffic, latency, answers, bans and the logins queue are drawn as SVG"
        );
        assert!(
            dom.contains("id=\"chart-queue-logins\""),
            "the queue's chart"
        );
        assert!(
            body_data(&dom, "history-events").is_some_and(|e| e.contains("drain")),
            "the drain is on the curves"
        );
        assert_eq!(
            body_data(&dom, "verdict"),
            Some("stampede"),
            "the banner reads the queue's curve:\n{dom}"
        );
        assert!(
            dom.contains("file logins")
                && dom.contains("class=\"chart trigger-stampede\" id=\"chart-queue-logins\""),
            "the banner names the curve that made it say stampede, and that curve is marked"
        );
        println!("dashboard screenshot: {}", shot.display());
    }
    rt.shutdown_background();
}

#[test]
fn history_is_guarded_like_the_other_admin_routes() {
    let s = Stack::start(1, 0, |y| y.admin.push("token: s3cret-history".into()));
    let admin = s.ports.admin;
    let (st, body) = s.rempart.admin("/history");
    assert_eq!(st, 200, "with the token: {body}");
    let a = http1::get(admin, "/history").expect("admin answers");
    assert_eq!(a.status, 401, "without the token: {}", a.text());
    let wrong = http1::request(
        admin,
        "GET",
        "/history",
        &[("Authorization", "Bearer wrong")],
        b"",
        Duration::from_secs(5),
    )
    .expect("admin answers");
    assert_eq!(wrong.status, 401);
    let (st, _) = s.rempart.admin_raw(
        "GET",
        "/history",
        &[
            ("Authorization", "Bearer s3cret-history"),
            ("Host", "rebound.example"),
        ],
    );
    assert_eq!(st, 403, "a rebound host name");
    let (st, _) = s.rempart.admin_raw(
        "GET",
        "/history",
        &[
            ("Authorization", "Bearer s3cret-history"),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(st, 403, "a cross-origin call");
}

#[test]
fn reloads_pauses_and_undrains_are_marked() {
    let mut s = Stack::start(1, 1, |y| {
        y.routes = "  - name: login\n    match: { path_prefix: /auth/login }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
        y.extra =
            "login_queues:\n  logins:\n    concurrency: 4\n    tenant: header:X-ENT-UAI\n".into();
    });
    let good = s.yaml.clone();
    let (st, body) = s.rempart.admin_post("/reload");
    assert_eq!(st, 200, "{body}");
    s.rempart
        .write_config(&good.replace("concurrency: 4", "concurrency: -4"));
    let (st, body) = s.rempart.admin_post("/reload");
    assert_eq!(st, 400, "{body}");
    s.rempart.write_config(&good);
    for call in [
        "/queues/logins/pause",
        "/queues/logins/pause",
        "/queues/logins/resume",
        "/upstreams/ent/datacenters/dc-a/drain",
        "/upstreams/ent/datacenters/dc-a/undrain",
        "/upstreams/ent/datacenters/dc-a/undrain",
    ] {
        let (st, body) = s.rempart.admin_post(call);
        assert_eq!(st, 200, "{call}: {body}");
    }
    let server = format!("/upstreams/ent/servers/{}/drain", s.dc_b[0].addr());
    let (st, body) = s.rempart.admin_post(&server);
    assert_eq!(st, 200, "{server}: {body}");

    let history = s.rempart.admin_json("/history");
    let kinds: Vec<String> = events_of(&history)
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "failover" | "failback" | "recovered"))
        .map(|(k, d)| format!("{k} {d}"))
        .collect();
    let b1 = s.dc_b[0].addr();
    assert_eq!(
        kinds,
        [
            "reload_ok generation 2".to_string(),
            kinds
                .get(1)
                .filter(|k| k.starts_with("reload_failed 1 error(s), nothing changed: "))
                .cloned()
                .unwrap_or_else(|| "reload_failed ...".into()),
            "queue_pause logins".into(),
            "queue_resume logins".into(),
            "drain ent/dc-a (datacenter)".into(),
            "undrain ent/dc-a (datacenter)".into(),
            format!("drain ent/dc-b/{b1} (server)"),
        ],
        "each change once, in order (a second pause or undrain changes nothing)"
    );
    let at = history["events"][0]["at"].as_str().unwrap_or("");
    assert!(at.ends_with('Z') && at.len() == 24, "RFC 3339 time: {at}");
}
