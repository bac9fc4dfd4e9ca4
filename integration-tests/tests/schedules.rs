//! Scheduled overlays through the real binary, its clock shifted by `REMPART_SCHEDULE_CLOCK` to
//! a few seconds before 07:40 (Europe/Paris) on a school Monday: the overlay comes into force
//! by itself at 07:40, through the same swap as a reload. Clients queued before it keep their
//! places (and the line its order), a ticket given before it still holds its place, a pause and
//! a ban stay; after it, the login queue admits two at once and the per-address limit is the
//! tightened one; `/status` and the metrics name the overlay and the next change; a reload
//! computes again. `rempart -t` reports what schedules do and refuses overlays that collide.
//!
//! Every wait is bounded; orderings are read from the origin's record of what it received, or
//! from the queue's own state, never from how long something took.

use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

/// 15 seconds before the overlay's window opens, on Monday 6 September 2027.
const CLOCK: &str = "2027-09-06T07:39:45+02:00";

const LIMITS_AND_QUEUES: &str = "\
limits:
  per_ip: { key: client_ip, rate: 100/s, burst: 100 }
  strict: { key: client_ip, rate: 1/min, burst: 1 }
shield:
  ban: { after: 3, within: 1m, for: 10m }
login_queues:
  logins:
    concurrency: 1
    tenant: header:X-ENT-UAI
    hold: 40s
    ticket_ttl: 2m
    secret: test-secret-for-the-queue
  portal:
    concurrency: 1
    tenant: header:X-ENT-UAI
    hold: 2s
    ticket_ttl: 2m
    secret: test-secret-for-the-queue
";

/// The school mornings (MTTF) from 07:40 to 09:00: two logins at once, 3 requests per address.
const SCHEDULES: &str = "\
schedules:
  time_zone: Europe/Paris
  overlays:
    school_morning:
      login_queues:
        logins: { concurrency: 2 }
      limits:
        per_ip: { rate: 1/min, burst: 3 }
  windows:
    - overlay: school_morning
      days: [mon, tue, thu, fri]
      from: \"07:40\"
      until: \"09:00\"
";

const ROUTES: &str = "  - name: login
    match: { path_prefix: /auth/ }
    upstream: ent
    login_queue: logins
  - name: portal
    match: { path_prefix: /portal/ }
    upstream: ent
    login_queue: portal
  - name: ban
    match: { path_prefix: /ban/ }
    upstream: ent
    limits: [strict]
  - name: default
    match: { path_prefix: / }
    upstream: ent
    limits: [per_ip]
";

fn yaml_tweak(schedules: &str) -> impl FnOnce(&mut ProxyYaml) + '_ {
    move |y: &mut ProxyYaml| {
        y.server.push("trusted_proxies: [127.0.0.1/32]".into());
        y.server.push("max_connections_per_ip: 10000".into());
        y.routes = ROUTES.into();
        y.extra = format!("{LIMITS_AND_QUEUES}{schedules}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(90))
        .http1_only()
        .build()
        .expect("client")
}

fn status(s: &Stack) -> Value {
    s.rempart.admin_json("/status")
}

/// Poll `/status` (20 s at most) until `pred` holds; the last status otherwise, in the panic.
fn wait_status(s: &Stack, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let got = poll_until(Duration::from_secs(20), || {
        last = status(s);
        pred(&last).then(|| last.clone())
    });
    got.unwrap_or_else(|| panic!("waited for {what}; last /status: {last:#}"))
}

async fn get(c: &reqwest::Client, s: &Stack, path: &str, ip: &str) -> (u16, String) {
    let r = c
        .get(s.url(path))
        .header("X-Forwarded-For", ip)
        .send()
        .await
        .expect("request");
    let code = r.status().as_u16();
    let policy = r
        .headers()
        .get("ratelimit-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _ = r.bytes().await;
    (code, policy)
}

/// A request in the background: its status.
fn spawn(rb: reqwest::RequestBuilder) -> tokio::task::JoinHandle<u16> {
    tokio::spawn(async move {
        let r = rb.send().await.expect("request");
        let code = r.status().as_u16();
        let _ = r.bytes().await;
        code
    })
}

fn active(st: &Value) -> Vec<String> {
    st["schedule"]["active"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_school_morning_overlay_comes_into_force_at_0740_and_keeps_the_state() {
    let origin = Origin::start("a1", &["--latency", "/auth/slow=60s", "--record-requests"]);
    let mut s = Stack::start_with_env(
        vec![origin],
        vec![],
        yaml_tweak(SCHEDULES),
        true,
        &[("REMPART_SCHEDULE_CLOCK", CLOCK)],
    );
    let c = client();

    // Before 07:40: nothing in force, the next change is the overlay's beginning.
    let st = status(&s);
    let sched = &st["schedule"];
    assert_eq!(sched["time_zone"], "Europe/Paris", "{sched:#}");
    assert_eq!(sched["clock_shifted"], true, "{sched:#}");
    assert!(active(&st).is_empty(), "{sched:#}");
    assert_eq!(
        sched["next_change"]["at"], "2027-09-06T07:40:00+02:00",
        "{sched:#}"
    );
    assert_eq!(
        sched["next_change"]["begins"][0], "school_morning",
        "{sched:#}"
    );
    assert_eq!(st["queues"]["logins"]["limit"], 1);

    // The base per-address limit lets 6 requests of one address through.
    for _ in 0..6 {
        assert_eq!(get(&c, &s, "/", "10.0.0.5").await.0, 200);
    }
    // 10.9.9.9 gets itself banned (1 pass, 3 refusals).
    let mut banned = false;
    for _ in 0..8 {
        if get(&c, &s, "/ban/x", "10.9.9.9").await.0 == 403 {
            banned = true;
            break;
        }
    }
    assert!(banned, "10.9.9.9 should be banned before 07:40");

    // The login queue admits one at a time: A holds the slot (60 s at the origin), B then C
    // wait in line, in that order.
    let login = |path: &str, id: &str, ip: &str| {
        c.get(s.url(path))
            .header("X-ENT-UAI", "0750001A")
            .header("X-Forwarded-For", ip)
            .header("X-Test-Id", id)
    };
    let a = spawn(login("/auth/slow", "A", "10.1.0.1"));
    wait_status(&s, "A in flight", |st| {
        st["queues"]["logins"]["in_flight"] == 1
    });
    let b = spawn(login("/auth/login", "B", "10.1.0.2"));
    wait_status(&s, "B waiting", |st| st["queues"]["logins"]["waiting"] == 1);
    let c_task = spawn(login("/auth/login", "C", "10.1.0.3"));
    wait_status(&s, "C waiting", |st| st["queues"]["logins"]["waiting"] == 2);

    // A ticket from the portal queue's waiting room (paused: nobody is admitted).
    let (code, body) = s.rempart.admin_post("/queues/portal/pause");
    assert_eq!(code, 200, "{body}");
    let r = c
        .get(s.url("/portal/login"))
        .header("X-ENT-UAI", "0750001A")
        .header("X-Forwarded-For", "10.2.0.1")
        .header("Accept", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    let ticket = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("rempart_ticket="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .expect("a ticket");

    // All of that happened before 07:40.
    let st = status(&s);
    assert!(
        active(&st).is_empty() && st["queues"]["logins"]["waiting"] == 2,
        "the set-up took too long: the overlay came into force before B and C were in line \
         (a slow machine: move CLOCK earlier); /status: {st:#}"
    );
    let generation = st["generation"].as_u64().expect("generation");

    // 07:40: the overlay comes into force by itself.
    let st = wait_status(&s, "school_morning in force", |st| {
        active(st) == ["school_morning"]
    });
    assert!(
        st["generation"].as_u64() > Some(generation),
        "a new generation"
    );
    assert_eq!(
        st["schedule"]["next_change"]["at"],
        "2027-09-06T09:00:00+02:00"
    );
    assert_eq!(st["schedule"]["next_change"]["ends"][0], "school_morning");
    let overlay = &st["schedule"]["overlays"][0];
    assert_eq!(overlay["active"], true);
    assert_eq!(overlay["changes"]["login_queues.logins.concurrency"], "2");
    assert_eq!(overlay["changes"]["limits.per_ip.rate"], "1/min");

    // B, queued before 07:40, is admitted next to A (still at the origin), then C: the line
    // kept its order across the swap.
    let b_code = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("B answered")
        .expect("B's task");
    assert_eq!(b_code, 200);
    let c_code = tokio::time::timeout(Duration::from_secs(20), c_task)
        .await
        .expect("C answered")
        .expect("C's task");
    assert_eq!(c_code, 200);
    assert!(!a.is_finished(), "A is still at the origin");
    let st = status(&s);
    assert_eq!(st["queues"]["logins"]["limit"], 2, "{:#}", st["queues"]);
    assert_eq!(st["queues"]["logins"]["timed_out"], 0);
    let received = s.dc_a[0].requests();
    let order: Vec<&str> = received
        .iter()
        .filter_map(|r| r.test_id.as_deref())
        .filter(|id| ["A", "B", "C"].contains(id))
        .collect();
    assert_eq!(order, ["A", "B", "C"], "{received:?}");
    assert!(
        received
            .iter()
            .any(|r| r.test_id.as_deref() == Some("A") && !r.completed),
        "A has not completed: B and C were admitted beside it"
    );

    // The per-address limit is the overlay's: a fresh bucket of 3, then 429 from per_ip.
    let mut codes = Vec::new();
    let mut refused_by = String::new();
    for _ in 0..10 {
        let (code, policy) = get(&c, &s, "/", "10.0.0.5").await;
        codes.push(code);
        if code == 429 {
            refused_by = policy;
            break;
        }
    }
    assert_eq!(codes, [200, 200, 200, 429], "after 07:40");
    assert!(refused_by.contains("\"per_ip\";q=3"), "{refused_by}");

    // The ban stayed.
    assert_eq!(get(&c, &s, "/ban/x", "10.9.9.9").await.0, 403);

    // The pause stayed, and the ticket given before 07:40 still holds its place: the holder
    // goes before L, who arrived without one.
    assert_eq!(status(&s)["queues"]["portal"]["paused"], true);
    let portal = |id: &str, ip: &str| {
        c.get(s.url("/portal/login"))
            .header("X-ENT-UAI", "0750001A")
            .header("X-Forwarded-For", ip)
            .header("X-Test-Id", id)
    };
    let late = spawn(portal("L", "10.2.0.2"));
    wait_status(&s, "L waiting", |st| st["queues"]["portal"]["waiting"] == 1);
    let back = spawn(portal("T", "10.2.0.1").header("Cookie", format!("rempart_ticket={ticket}")));
    wait_status(&s, "T waiting", |st| st["queues"]["portal"]["waiting"] == 2);
    let (code, body) = s.rempart.admin_post("/queues/portal/resume");
    assert_eq!(code, 200, "{body}");
    assert_eq!(back.await.expect("T's task"), 200);
    assert_eq!(late.await.expect("L's task"), 200);
    let order: Vec<String> = s.dc_a[0]
        .requests()
        .iter()
        .filter_map(|r| r.test_id.clone())
        .filter(|id| id == "T" || id == "L")
        .collect();
    assert_eq!(order, ["T", "L"], "the ticket holder first");

    let (_, metrics) = s.rempart.admin("/metrics");
    assert!(
        metrics.contains("rempart_schedule_overlay_active{overlay=\"school_morning\"} 1"),
        "{metrics}"
    );

    // A reload computes again: the window moved to Saturdays, nothing is in force now.
    let yaml = s.yaml.replace("days: [mon, tue, thu, fri]", "days: [sat]");
    assert_ne!(yaml, s.yaml);
    s.rempart.write_config(&yaml);
    let (code, body) = s.rempart.admin_post("/reload");
    assert_eq!(code, 200, "{body}");
    let st = status(&s);
    assert!(active(&st).is_empty(), "{:#}", st["schedule"]);
    assert_eq!(st["queues"]["logins"]["limit"], 1);
    assert_eq!(
        st["schedule"]["next_change"]["at"],
        "2027-09-11T07:40:00+02:00"
    );
    let (_, metrics) = s.rempart.admin("/metrics");
    assert!(metrics.contains("rempart_schedule_overlay_active{overlay=\"school_morning\"} 0"));
}

#[test]
fn rempart_t_says_what_the_schedules_do_and_refuses_colliding_overlays() {
    let mut y = ProxyYaml::new(vec![free_addr()], vec![]);
    yaml_tweak(SCHEDULES)(&mut y);
    let yaml = y.render();

    let f = rempart_check_with_env(&yaml, &[("REMPART_SCHEDULE_CLOCK", CLOCK)]);
    assert_eq!(f.code, Some(0), "{}{}", f.stdout, f.stderr);
    assert!(
        f.stdout
            .contains("schedules (Europe/Paris, now 2027-09-06T07:39:")
            && f.stdout.contains(
                "in force now: none; next change 2027-09-06T07:40:00+02:00: school_morning begins"
            ),
        "{}",
        f.stdout
    );
    let f = rempart_check_with_env(
        &yaml,
        &[("REMPART_SCHEDULE_CLOCK", "2027-09-06T08:00:00+02:00")],
    );
    assert!(
        f.stdout.contains("in force now: school_morning; next change 2027-09-06T09:00:00+02:00: school_morning ends"),
        "{}",
        f.stdout
    );

    // A bad clock is refused, by -t and at start.
    let f = rempart_check_with_env(&yaml, &[("REMPART_SCHEDULE_CLOCK", "lundi matin")]);
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr
            .contains("REMPART_SCHEDULE_CLOCK=\"lundi matin\" is not an instant"),
        "{}",
        f.stderr
    );
    let f = rempart_run_expect_exit_with_env(
        &yaml,
        Duration::from_secs(10),
        &[("REMPART_SCHEDULE_CLOCK", "lundi matin")],
    )
    .expect("rempart exits");
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("is not an instant"), "{}", f.stderr);

    // A rentrée overlay on the same field, the same week: refused with both names and a date.
    let colliding =
        format!("{yaml}    - overlay: rentree\n      dates: [2027-09-01..2027-09-07]\n").replace(
            "  windows:\n",
            "    rentree:\n      login_queues:\n        logins: { concurrency: 8 }\n  windows:\n",
        );
    let f = rempart_check_full(&colliding);
    assert_eq!(f.code, Some(1), "{}", f.stdout);
    assert!(
        f.stderr
            .contains("schedules.windows[1]: the overlays \"school_morning\"")
            && f.stderr.contains("\"rentree\"")
            && f.stderr.contains("(on 2027-09-02)")
            && f.stderr.contains("login_queues.logins.concurrency"),
        "{}",
        f.stderr
    );
    // An unknown overlay name and an unknown field.
    let f = rempart_check_full(
        &yaml.replace("- overlay: school_morning", "- overlay: school_mornings"),
    );
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr
            .contains("unknown overlay \"school_mornings\" (defined: school_morning)"),
        "{}",
        f.stderr
    );
    let f = rempart_check_full(&yaml.replace(
        "logins: { concurrency: 2 }",
        "logins: { concurrency: 2, tenant: host }",
    ));
    assert_eq!(f.code, Some(1));
    assert!(f.stderr.contains("unknown field `tenant`"), "{}", f.stderr);
}
