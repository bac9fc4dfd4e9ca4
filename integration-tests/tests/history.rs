//! `GET /history` and the dashboard's curves, on the real binary over real sockets: a login
//! stampede from two schools, a drain of dc-a through the admin API, and what the last minutes
//! look like afterwards (1 s apart, requests, queue depth and its deepest schools, the answers
//! by reason, the drain and the failover marked); an attack from twenty addresses that get
//! themselves banned (refusals by reason, bans, the ban wave). Each time the dashboard runs in
//! headless Chromium: the banner says "stampede" or "attack" and outlines the curves that made
//! it say so; screenshots are kept in `target/test-artifacts/`. The route is guarded like
//! `/status`, and reloads, pauses and drains are marked once each.
//!
//! Bounded: the stampede is 24 logins that wait in a 60 s line (nobody is served before the
//! test ends it), the attack's clients stop after 3,000 requests each, every poll has a
//! deadline, and nothing is asserted on durations.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::browser::{artifacts_dir, run_chromium, Browser};
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

/// One Chromium run, at most.
const RUN: Duration = Duration::from_secs(60);

/// A screenshot of the dashboard at `url` (after 5 s of virtual time: it has drawn its curves)
/// into the test artifacts; its path.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let shot = artifacts_dir().join(name);
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let out = run_chromium(
        &[
            "--window-size=1400,2000",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            &arg,
        ],
        url,
        RUN,
    );
    assert!(
        shot.exists(),
        "screenshot at {}; stderr: {}",
        shot.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("dashboard screenshot: {}", shot.display());
    shot
}

/// The dashboard at `url` in a live Chromium, once `ready` (a JavaScript expression) holds:
/// the page's HTML, and the values of `probes` (JavaScript expressions) evaluated then. Panics
/// with the page when `ready` never holds within 30 s.
async fn dashboard(url: &str, ready: &str, probes: &[&str]) -> (String, Vec<Value>) {
    let mut page = Browser::open(url, &["--window-size=1400,2000"])
        .await
        .expect("Chromium opens the dashboard");
    let drawn = page.wait_true(ready, Duration::from_secs(30)).await;
    let html = page
        .eval("document.documentElement.outerHTML")
        .await
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(drawn, "the dashboard never showed `{ready}`:\n{html}");
    let mut values = Vec::new();
    for probe in probes {
        values.push(page.eval(probe).await.unwrap_or(Value::Null));
    }
    (html, values)
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

    // The dashboard, while the line is still there: its script draws the curves and reads
    // the verdict from them.
    let url = format!("http://{}/", s.ports.admin);
    let (html, probes) = rt.block_on(dashboard(
        &url,
        "document.body.dataset.verdict === 'stampede' \
         && document.querySelectorAll('svg.history-chart').length >= 5 \
         && !!document.getElementById('chart-queue-logins')",
        &[
            "Number(document.body.dataset.historyPoints)",
            "document.body.dataset.historyEvents",
            "document.getElementById('verdict').textContent",
            "document.getElementById('chart-queue-logins').className",
            "document.getElementById('chart-answers').className",
            "document.getElementById('events').textContent",
        ],
    ));
    assert!(
        probes[0].as_u64().is_some_and(|n| n >= 2),
        "the dashboard drew the history ({}):\n{html}",
        probes[0]
    );
    let marked = probes[1].as_str().unwrap_or("");
    assert!(
        marked.contains("drain") && marked.contains("failover"),
        "the drain and its failover are on the curves: {marked:?}"
    );
    let banner = probes[2].as_str().unwrap_or("");
    assert!(
        banner.contains("file logins") && banner.contains("queue logins"),
        "the banner names the curve that made it say stampede: {banner:?}"
    );
    assert_eq!(
        probes[3], "chart trigger-stampede",
        "the queue's curve is outlined"
    );
    assert_eq!(probes[4], "chart", "the answers' curve did not trigger it");
    assert!(
        probes[5]
            .as_str()
            .is_some_and(|e| e.contains("ent/dc-a (datacenter)")),
        "the events are listed: {}",
        probes[5]
    );
    screenshot(&url, "history-dashboard.png");
    rt.shutdown_background();
}

/// Addresses of the attack (each its own source address on the loopback).
const ATTACKERS: usize = 20;

/// An attack written as the attacker writes it: twenty addresses hammer the site past their
/// limit, are banned, and go on hammering. The history shows the refusals by reason, the bans
/// and a ban wave; the dashboard's banner says "attack" and outlines the answers' and the bans'
/// curves that made it say so.
#[test]
fn an_attack_is_read_from_the_shield_curves() {
    let s = Stack::start(1, 0, |y| {
        y.routes = "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n".into();
        y.extra = "limits:\n  per_ip: { key: client_ip, rate: 1/min, burst: 2 }\nshield:\n  ban: { after: 3, within: 1m, for: 10m }\n".into();
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..ATTACKERS {
        let source: std::net::IpAddr = format!("127.0.0.{}", 100 + i).parse().expect("address");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .http1_only()
            .local_address(source)
            .build()
            .expect("client");
        let url = s.url("/api/search");
        let stop = stop.clone();
        // Bounded: at most 3,000 requests an address (10 a second for 5 minutes).
        flood.push(rt.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..3_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(r) = client.get(&url).send().await {
                    statuses.push(r.status().as_u16());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            statuses
        }));
    }

    let mut last = Value::Null;
    let history = poll_until(Duration::from_secs(60), || {
        let v = s.rempart.admin_json("/history");
        last = v.clone();
        let banned_all = numbers(&v["bans"]["active"]).last() == Some(&(ATTACKERS as u64));
        let wave = events_of(&v).iter().any(|(k, _)| k == "ban_wave");
        let banned_answers: u64 = numbers(&v["answers"]["banned"]).iter().sum();
        (banned_all && wave && banned_answers > 0).then_some(v)
    })
    .unwrap_or_else(|| panic!("/history never showed the bans and the wave: {last}"));
    let new_bans: u64 = numbers(&history["bans"]["new"]).iter().sum();
    assert_eq!(new_bans, ATTACKERS as u64, "one ban an address");
    let limited: u64 = numbers(&history["answers"]["rate_limited"]).iter().sum();
    assert!(
        limited >= ATTACKERS as u64,
        "each address was refused before its ban: {}",
        history["answers"]
    );
    let waves: Vec<String> = events_of(&history)
        .into_iter()
        .filter(|(k, _)| k == "ban_wave")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        waves.len(),
        1,
        "one wave while the bans keep coming: {waves:?}"
    );
    let bans_in_wave: u64 = waves[0]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (10..=ATTACKERS as u64).contains(&bans_in_wave)
            && waves[0].ends_with("new bans within 10 s"),
        "the wave says how many: {waves:?}"
    );

    // The dashboard, while the flood goes on.
    let url = format!("http://{}/", s.ports.admin);
    let (_, probes) = rt.block_on(dashboard(
        &url,
        "document.body.dataset.verdict === 'attack' \
         && document.querySelectorAll('svg.history-chart').length >= 4",
        &[
            "document.getElementById('verdict').textContent",
            "document.getElementById('chart-answers').className",
            "document.getElementById('chart-bans').className",
            "document.body.dataset.historyEvents",
        ],
    ));
    let banner = probes[0].as_str().unwrap_or("");
    assert!(
        banner.contains("banned")
            && banner.contains("seuil 5/s")
            && banner.contains("bannissements"),
        "the banner says which refusals crossed the threshold, and names the curves: {banner:?}"
    );
    assert_eq!(
        probes[1], "chart trigger-attack",
        "the answers' curve is outlined"
    );
    assert_eq!(
        probes[2], "chart trigger-attack",
        "the bans' curve is outlined"
    );
    assert!(
        probes[3].as_str().is_some_and(|e| e.contains("ban_wave")),
        "the wave is on the curves: {}",
        probes[3]
    );
    screenshot(&url, "history-attack.png");

    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = rt.block_on(async {
        let mut all = Vec::new();
        for task in flood {
            all.extend(task.await.unwrap_or_default());
        }
        all
    });
    assert!(
        statuses.contains(&429) && statuses.contains(&403),
        "refused, then banned"
    );
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
