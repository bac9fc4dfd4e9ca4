//! The built-in pages as a pupil sees them, in headless Chromium: the waiting room and the
//! maintenance page, in French and in English by `Accept-Language`, their place in line, wait
//! and school, the waiting room's script polling the place in the same page and letting the
//! pupil in once the line does; and the poll itself (`X-Rempart-Poll`), answered by Rempart
//! without spending the ticket. Screenshots go to `target/test-artifacts/` (not committed).
//!
//! The admin API's pause is what keeps a request out of the line's reach (with `hold: 0s` every
//! login is answered with the waiting room at once), so nothing here depends on timing; every
//! wait is bounded.

use std::time::Duration;

use integration_tests::browser::{artifacts_dir, run_chromium, Browser};
use integration_tests::*;
use serde_json::Value;

const SCHOOL: &str = "0750004D";
const FR: &str = "--accept-lang=fr-FR,fr";
const EN: &str = "--accept-lang=en-GB,en";
/// One Chromium run, at most.
const RUN: Duration = Duration::from_secs(60);

/// A login queue of one slot answering the waiting room at once, the school named by `?uai=`,
/// no `pages` section: the built-in pages.
fn start_queue() -> Stack {
    let origin = Origin::start("a1", &["--login-cost", "300ms", "--record-requests"]);
    Stack::start_with(
        vec![origin],
        vec![],
        |y| {
            y.routes = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into();
            y.extra = "login_queues:\n  logins:\n    concurrency: 1\n    tenant: query:uai\n    hold: 0s\n    ticket_ttl: 2m\n    secret: test-secret-for-the-queue\n".into();
        },
        true,
    )
}

fn pause(s: &Stack) {
    let (code, body) = s.rempart.admin_post("/queues/logins/pause");
    assert_eq!(code, 200, "{body}");
}

fn resume(s: &Stack) {
    let (code, body) = s.rempart.admin_post("/queues/logins/resume");
    assert_eq!(code, 200, "{body}");
}

fn login_url(s: &Stack) -> String {
    s.url(&format!("/auth/login?uai={SCHOOL}"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The DOM after Chromium loaded `url` and ran its scripts for `budget_ms` of virtual time.
fn dump_dom(url: &str, lang: &str, budget_ms: u32) -> String {
    let budget = format!("--virtual-time-budget={budget_ms}");
    let out = run_chromium(&[lang, &budget, "--dump-dom"], url, RUN);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<html"),
        "Chromium dumped no DOM; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// A screenshot of `url` (800×900, after 3 s of virtual time: the waiting room has polled once)
/// into the test artifacts; its path.
fn screenshot(url: &str, lang: &str, name: &str) -> std::path::PathBuf {
    let shot = artifacts_dir().join(name);
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let out = run_chromium(
        &[
            lang,
            "--window-size=800,900",
            "--virtual-time-budget=3000",
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
    println!("screenshot: {}", shot.display());
    shot
}

/// The value of `data-polls` on the body (how many times the script updated the place).
fn polls(dom: &str) -> u32 {
    dom.split("data-polls=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_in_french_and_english_as_a_browser_shows_it() {
    let s = start_queue();
    pause(&s);
    let url = login_url(&s);

    // The answer itself: the built-in page, its policy and its language.
    let c = client();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert_eq!(
        csp,
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:"
    );
    assert_eq!(
        r.headers()["content-language"],
        "fr",
        "no Accept-Language: French"
    );
    let retry = r.headers()["retry-after"].to_str().unwrap().to_string();
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("rempart_ticket="));
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!(
        "<noscript><meta http-equiv=\"refresh\" content=\"{retry}\"></noscript>"
    )));
    assert!(
        html.contains("Votre place dans la file&nbsp;: <strong data-field=\"position\">1</strong>"),
        "readable without a script"
    );

    // French, as a French pupil's browser asks.
    let dom = dump_dom(&url, FR, 5000);
    assert!(dom.contains("<html lang=\"fr\">"), "{dom}");
    for text in [
        "<title>File d'attente</title>",
        "<h1>Beaucoup de connexions en ce moment</h1>",
        "Votre place dans la file",
        "<strong data-field=\"position\">1</strong>",
        "Attente estimée",
        "Gardez cette page ouverte",
        "Établissement&nbsp;: 0750004D",
        "English version below",
        "<h2>Many people are signing in right now</h2>",
    ] {
        assert!(dom.contains(text), "the French page shows {text:?}:\n{dom}");
    }
    assert!(
        dom.find("Votre place dans la file") < dom.find("Your place in line"),
        "French first"
    );
    // The script polled (5 s of virtual time, every 2 s at least) and updated this page.
    assert!(polls(&dom) >= 1, "the script updated the place: {dom}");
    assert!(
        dom.contains("data-field=\"checked\">Dernière vérification à <time>"),
        "the time of the last check is shown: {dom}"
    );

    // English, as a browser that prefers it asks.
    let dom = dump_dom(&url, EN, 1000);
    assert!(dom.contains("<html lang=\"en\">"), "{dom}");
    for text in [
        "<title>Waiting line</title>",
        "<h1>Many people are signing in right now</h1>",
        "Your place in line: <strong data-field=\"position\">1</strong>",
        "Estimated wait: <span data-field=\"eta\">about",
        "Keep this page open",
        "School: 0750004D",
        "Version française ci-dessous",
        "<section class=\"other\" id=\"other\" lang=\"fr\">",
    ] {
        assert!(
            dom.contains(text),
            "the English page shows {text:?}:\n{dom}"
        );
    }
    assert!(dom.find("Your place in line") < dom.find("Votre place dans la file"));

    screenshot(&url, FR, "waiting-room-fr.png");
    screenshot(&url, EN, "waiting-room-en.png");

    // Paused: no login reached the origin, whatever the browsers and their scripts asked.
    let logins = s.dc_a[0]
        .requests()
        .iter()
        .filter(|r| r.path == "/auth/login")
        .count();
    assert_eq!(logins, 0);
    resume(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_updates_in_place_then_lets_the_pupil_in() {
    let s = start_queue();
    pause(&s);
    let url = login_url(&s);
    let mut page = Browser::open(&url, &[FR]).await.unwrap();

    assert!(
        page.wait_true(
            "document.documentElement.lang === 'fr' && \
             document.querySelector('[data-field=position]').textContent === '1'",
            Duration::from_secs(20),
        )
        .await,
        "the waiting room in French, place 1: {:?}",
        page.eval("document.body && document.body.innerText").await
    );
    // A mark on this document: a reload would lose it.
    assert_eq!(
        page.eval("window.sameDocument = true").await,
        Some(Value::Bool(true))
    );
    assert!(
        page.wait_true(
            "window.sameDocument === true && Number(document.body.dataset.polls || 0) >= 2 && \
             !document.querySelector('[data-field=checked]').hidden",
            Duration::from_secs(30),
        )
        .await,
        "the script asked for the place twice and updated the page without reloading it: {:?}",
        page.eval("document.body.outerHTML").await
    );
    let st = s.rempart.admin_json("/status")["queues"]["logins"].clone();
    assert!(
        st["timed_out"].as_u64().is_some_and(|n| n >= 3),
        "the page and its polls were answered by the waiting room: {st}"
    );

    // The line moves: the next poll is let through, and the page loads the login again.
    resume(&s);
    assert!(
        page.wait_true(
            "window.sameDocument === undefined && document.body !== null && \
             document.body.innerText.indexOf('\"origin\":\"a1\"') >= 0",
            Duration::from_secs(30),
        )
        .await,
        "the page reloaded into the origin's answer: {:?}",
        page.eval("document.body && document.body.innerText").await
    );
    let text = page
        .eval("document.body.innerText")
        .await
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let echo: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    assert_eq!(
        echo["method"], "GET",
        "the page came back with a GET: {text}"
    );
    assert_eq!(echo["query"], format!("uai={SCHOOL}"));
    assert!(
        echo["headers"]["accept"]
            .as_str()
            .is_some_and(|a| a.starts_with("text/html")),
        "the page, not the script's poll: {text}"
    );
    assert!(
        echo["headers"]["cookie"]
            .as_str()
            .is_some_and(|c| c.contains("rempart_ticket=")),
        "the page came back with its ticket, which the poll did not spend: {text}"
    );
    let logins: Vec<_> = s.dc_a[0]
        .requests()
        .into_iter()
        .filter(|r| r.path == "/auth/login")
        .collect();
    assert_eq!(
        logins.len(),
        1,
        "the polls never reached the origin, the page's GET did: {logins:?}"
    );
    let turn = s
        .rempart
        .wait_access_log(Duration::from_secs(5), |l| l["reason"] == "queue_turn")
        .expect("the poll that the line let through, answered by Rempart");
    assert_eq!(turn["status"], 200);
}

/// The value of the `rempart_ticket` cookie this answer sets.
fn ticket(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("rempart_ticket="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_is_answered_by_rempart_and_keeps_the_ticket() {
    let s = start_queue();
    let c = client();
    let url = login_url(&s);
    let poll = |cookie: Option<&str>| {
        let rb = c
            .get(&url)
            .header("Accept", "application/json")
            .header("X-Rempart-Poll", "1");
        match cookie {
            Some(t) => rb.header("Cookie", format!("rempart_ticket={t}")),
            None => rb,
        }
    };
    pause(&s);
    let r = poll(None).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let first = ticket(&r).expect("a ticket");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["queued"], true);
    assert_eq!(v["position"], 1);

    // The line lets it through: Rempart says so, the ticket renewed, nothing sent upstream.
    resume(&s);
    let r = poll(Some(&first)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let renewed = ticket(&r).expect("the ticket, renewed");
    assert!(!renewed.is_empty());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, serde_json::json!({"queued": false, "tenant": SCHOOL}));
    assert_eq!(s.dc_a[0].requests().len(), 0, "the poll stayed at Rempart");

    // The page's own request goes in with the ticket, which is spent then.
    let r = c
        .get(&url)
        .header("Cookie", format!("rempart_ticket={renewed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ticket(&r).as_deref(), Some(""), "the ticket is cleared");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/auth/login");

    // Only a GET is a poll: a POST with the header is a login like any other.
    let r = c
        .post(&url)
        .header("X-Rempart-Poll", "1")
        .header("Accept", "application/json")
        .body("username=eleve&password=secret")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    let st = s.rempart.admin_json("/status")["queues"]["logins"].clone();
    assert_eq!(
        st["admitted"], 2,
        "the polls were not counted as admitted: {st}"
    );
}

/// Health checks fast enough for a test.
fn fast(y: &mut ProxyYaml) {
    y.upstream = vec![
        "health_check: { path: /healthz, interval: 100ms, timeout: 1s, rise: 2, fall: 2 }".into(),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_page_in_french_and_english_as_a_browser_shows_it() {
    let s = Stack::start(1, 1, fast);
    s.dc_a[0].fail_health();
    s.dc_b[0].fail_health();
    let down = poll_until(Duration::from_secs(10), || {
        s.rempart.admin_json("/status")["upstreams"]["ent"]["active_datacenter"]
            .is_null()
            .then_some(())
    });
    assert!(down.is_some(), "every datacenter down");
    let url = s.url("/");

    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    assert!(r.headers().contains_key("content-security-policy"));
    assert_eq!(r.headers()["content-language"], "fr");

    let dom = dump_dom(&url, FR, 1000);
    assert!(dom.contains("<html lang=\"fr\">"), "{dom}");
    for text in [
        "<meta http-equiv=\"refresh\" content=\"30\">",
        "<h1>Service momentanément indisponible</h1>",
        "Merci de revenir dans quelques minutes",
        "Cette page se recharge toute seule toutes les 30&nbsp;secondes",
        "English version below",
        "<h2>Service temporarily unavailable</h2>",
    ] {
        assert!(dom.contains(text), "the French page shows {text:?}:\n{dom}");
    }
    let dom = dump_dom(&url, EN, 1000);
    assert!(dom.contains("<html lang=\"en\">"), "{dom}");
    for text in [
        "<h1>Service temporarily unavailable</h1>",
        "Please come back in a few minutes",
        "This page reloads itself every 30&nbsp;seconds",
        "Version française ci-dessous",
    ] {
        assert!(
            dom.contains(text),
            "the English page shows {text:?}:\n{dom}"
        );
    }
    screenshot(&url, FR, "maintenance-fr.png");
    screenshot(&url, EN, "maintenance-en.png");
    let (a, b) = s.served();
    assert_eq!((a, b), (vec![0], vec![0]), "nothing reached an origin");
}
