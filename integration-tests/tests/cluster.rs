//! Several Rempart nodes, one shield and one login queue (issue 13): a real `redis-server` on a
//! free loopback port and two real Rempart processes (their own runtime directory, listener and
//! admin ports, the same secret) in front of one `ent-origin`.
//!
//! - a `scope: cluster` limit driven at 3x its rate across both nodes admits what one bucket
//!   does, a `scope: local` one about twice that, side by side;
//! - a client banned through node A is refused by node B, which never refused it; a lift on B
//!   lifts it on A;
//! - the origin never sees more than the queue's `concurrency` logins in flight from both nodes,
//!   and a small school on B is not stuck behind a big one flooding A;
//! - a waiting line asks the store for slots about once per admission or tick, not in a loop;
//! - `kill -9` of a node holding slots frees them within one lease;
//! - the store paused (`SIGSTOP`) or killed: no 5xx, `/status` says so, and the nodes are back
//!   in cluster mode after its return;
//! - a waiting-room ticket given by A keeps its place in B's line, a forged one does not.
//!
//! Every loop is bounded in count and time; waits poll with generous deadlines. Durations and
//! rates are measured and printed, never asserted (the machine is shared and noisy): the
//! assertions are on counts and states.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

/// The secret every node of a test shares (32 bytes at least).
const SECRET: &str = "a-cluster-secret-shared-by-every-node-of-these-tests";

/// The heartbeat of every node: a node unheard of for three beats (600 ms) is gone.
const HEARTBEAT_MS: u64 = 200;

const LOGIN_ROUTES: &str = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n";

const FORM: &str = "application/x-www-form-urlencoded";

// ---------------------------------------------------------------------------------------------
// Helpers

/// What the nodes of one test are configured with besides the cluster section.
struct Setup {
    /// The whole `routes:` list.
    routes: String,
    /// Top-level YAML: limits, shield, login_queues.
    extra: String,
    /// More lines under `cluster:` (e.g. `timeout: 250ms`).
    cluster: Vec<String>,
}

/// One Rempart node of the test's cluster.
struct Node {
    id: &'static str,
    rempart: Rempart,
    ports: Ports,
    yaml: String,
    _runtime: tempfile::TempDir,
}

/// A private directory (mode 0700, as Rempart wants its keys kept) for `server.runtime_dir`.
fn runtime_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("rempart-runtime-")
        .tempdir()
        .expect("a runtime directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

impl Node {
    /// Start node `id` in front of `origin`, sharing `store`; wait until it routes.
    fn start(id: &'static str, store: &Store, origin: SocketAddr, setup: &Setup) -> Node {
        let runtime = runtime_dir();
        let mut y = ProxyYaml::new(vec![origin], vec![]);
        y.tls = false;
        y.server
            .push(format!("runtime_dir: {}", runtime.path().display()));
        y.server.push("max_connections_per_ip: 10000".into());
        y.routes = setup.routes.clone();
        let mut cluster = format!(
            "cluster:\n  store: {}\n  node_id: {id}\n  key_prefix: rempart-test\n  secret: {SECRET}\n  heartbeat: {HEARTBEAT_MS}ms\n",
            store.url()
        );
        for l in &setup.cluster {
            cluster.push_str(&format!("  {l}\n"));
        }
        y.extra = format!("{}{cluster}", setup.extra);
        let yaml = y.render();
        let rempart = start_rempart(&yaml);
        if let Err(e) = wait_routable(y.ports.http, Duration::from_secs(15)) {
            panic!(
                "node {id}: {e}\nstderr:\n{}\n--- configuration ---\n{yaml}",
                rempart.stderr()
            );
        }
        Node {
            id,
            rempart,
            ports: y.ports,
            yaml,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ports.http)
    }

    /// `/status`, or Null when the admin API does not answer.
    fn status(&self) -> Value {
        match self.rempart.try_admin("/status") {
            Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// `/status` → `cluster`.
    fn cluster(&self) -> Value {
        self.status()["cluster"].clone()
    }

    /// `/status` → `queues.NAME`.
    fn queue(&self, name: &str) -> Value {
        self.status()["queues"][name].clone()
    }

    /// The value of the first metric line starting with `line_start` (name and labels).
    fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, text) = self.rempart.try_admin("/metrics").ok()?;
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The cluster's metrics in one line, for the test's output.
    fn cluster_metrics(&self) -> String {
        let m = |name: &str| {
            self.metric(name)
                .map_or("-".to_string(), |v| format!("{v}"))
        };
        format!(
            "{}: store_up {} nodes {} fallbacks limit {} queue {} refused_locally {} round trips limit {} slots {} heartbeat {}",
            self.id,
            m("rempart_cluster_store_up "),
            m("rempart_cluster_nodes "),
            m("rempart_cluster_fallbacks_total{what=\"limit\"}"),
            m("rempart_cluster_fallbacks_total{what=\"queue\"}"),
            m("rempart_cluster_refused_locally_total "),
            m("rempart_cluster_store_round_trip_seconds_count{op=\"limit\"}"),
            m("rempart_cluster_store_round_trip_seconds_count{op=\"slots\"}"),
            m("rempart_cluster_store_round_trip_seconds_count{op=\"heartbeat\"}"),
        )
    }
}

/// Wait (20 s at most) until every node is in cluster mode and counts `nodes.len()` nodes.
fn wait_cluster(nodes: &[&Node]) {
    let n = nodes.len() as u64;
    let ready = poll_until(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|node| {
                let c = node.cluster();
                c["store_up"] == true && c["live_nodes"].as_u64() == Some(n)
            })
            .then_some(())
    });
    if ready.is_none() {
        let states: Vec<String> = nodes
            .iter()
            .map(|node| format!("{}: {}\n{}", node.id, node.cluster(), node.rempart.stderr()))
            .collect();
        panic!(
            "the nodes did not all join the cluster within 20 s:\n{}\n--- configuration of {} ---\n{}",
            states.join("\n"),
            nodes[0].id,
            nodes[0].yaml
        );
    }
}

/// Wait (up to `timeout`) until `pred` holds of every node's `/status` → `cluster`; how long it
/// took, None when it never did.
fn wait_cluster_state(
    nodes: &[&Node],
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    poll_until(timeout, || {
        nodes
            .iter()
            .all(|node| pred(&node.cluster()))
            .then(|| started.elapsed())
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(256)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build the HTTP client")
}

/// GET `url`: the status, 0 on a transport error (the body is read, so the connection is kept).
async fn get(c: &reqwest::Client, url: &str) -> u16 {
    match c.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// A login POST of school `uai`, tagged `test_id` for the origin's record.
fn login_post(c: &reqwest::Client, url: &str, uai: &str, test_id: &str) -> reqwest::RequestBuilder {
    c.post(url)
        .header("X-ENT-UAI", uai)
        .header("X-Test-Id", test_id)
        .header("Accept", "application/json")
        .header("Content-Type", FORM)
        .body("username=eleve&password=secret")
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

// ---------------------------------------------------------------------------------------------
// 1. Shared limits

/// What one drive of a limit across the two nodes gave.
struct Drive {
    /// Per node: the statuses, in order.
    statuses: [Vec<u16>; 2],
    /// From the first request sent to the last answer read.
    elapsed: Duration,
}

impl Drive {
    fn admitted(&self) -> [usize; 2] {
        [count(&self.statuses[0], 200), count(&self.statuses[1], 200)]
    }
    fn total_admitted(&self) -> usize {
        self.admitted().iter().sum()
    }
}

/// `total` GETs at `rate` per second, alternating between the two URLs (the same client
/// address, 127.0.0.1), one after the other.
async fn drive(c: reqwest::Client, urls: [String; 2], total: usize, rate: f64) -> Drive {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut statuses = [Vec::with_capacity(total), Vec::with_capacity(total)];
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let n = i % 2;
        statuses[n].push(get(&c, &urls[n]).await);
    }
    Drive {
        statuses,
        elapsed: started.elapsed(),
    }
}

const RATE: f64 = 20.0;
const BURST: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_limit_admits_one_rate_across_two_nodes_and_a_local_one_twice_that() {
    let store = Store::start();
    let origin = Origin::start("a1", &[]);
    let setup = Setup {
        routes: "  - name: shared\n    match: { path_prefix: /shared/ }\n    upstream: ent\n    limits: [shared_ip]\n  - name: alone\n    match: { path_prefix: /alone/ }\n    upstream: ent\n    limits: [alone_ip]\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into(),
        extra: format!(
            "limits:\n  shared_ip: {{ key: client_ip, rate: {RATE}/s, burst: {BURST}, scope: cluster, ban: false }}\n  alone_ip: {{ key: client_ip, rate: {RATE}/s, burst: {BURST}, scope: local, ban: false }}\n"
        ),
        // A shared machine may take more than the default 10 ms to answer now and then; a
        // node that decides alone meanwhile would blur the figure this test is about.
        cluster: vec!["timeout: 250ms".into()],
    };
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);

    // 4x the rate for 3 s, the cluster limit and the local one side by side. At 4x, a node's
    // next request comes before the refusal the store gave it for the previous one expires,
    // so some are refused from memory whatever the scheduling jitter (at 3x it came exactly
    // when the refusal expired).
    const TOTAL: usize = 240;
    let offered = 4.0 * RATE;
    let c = client();
    let shared = tokio::spawn(drive(
        c.clone(),
        [a.url("/shared/x"), b.url("/shared/x")],
        TOTAL,
        offered,
    ));
    let alone = tokio::spawn(drive(
        c.clone(),
        [a.url("/alone/x"), b.url("/alone/x")],
        TOTAL,
        offered,
    ));
    let shared = shared.await.unwrap();
    let alone = alone.await.unwrap();

    for (name, d) in [("cluster", &shared), ("local", &alone)] {
        for (i, statuses) in d.statuses.iter().enumerate() {
            let others: Vec<u16> = statuses
                .iter()
                .copied()
                .filter(|s| *s != 200 && *s != 429)
                .collect();
            assert!(
                others.is_empty(),
                "{name} limit, node {i}: only 200 and 429 expected, got {others:?}"
            );
        }
    }
    let expected_shared = BURST + RATE * shared.elapsed.as_secs_f64();
    let expected_alone = 2.0 * (BURST + RATE * alone.elapsed.as_secs_f64());
    let got_shared = shared.total_admitted();
    let got_alone = alone.total_admitted();
    eprintln!(
        "cluster limit: {got_shared} of {TOTAL} admitted ({:?} per node) in {:.3} s (offered {:.1}/s); one bucket allows {expected_shared:.1}: {:+.1}%",
        shared.admitted(),
        shared.elapsed.as_secs_f64(),
        TOTAL as f64 / shared.elapsed.as_secs_f64(),
        100.0 * (got_shared as f64 - expected_shared) / expected_shared
    );
    eprintln!(
        "local limit:   {got_alone} of {TOTAL} admitted ({:?} per node) in {:.3} s (offered {:.1}/s); two buckets allow {expected_alone:.1}; {:.2}x the cluster limit",
        alone.admitted(),
        alone.elapsed.as_secs_f64(),
        TOTAL as f64 / alone.elapsed.as_secs_f64(),
        got_alone as f64 / got_shared.max(1) as f64
    );
    for n in [&a, &b] {
        eprintln!("{}", n.cluster_metrics());
    }

    let margin = 0.05 * expected_shared + 2.0;
    assert!(
        (got_shared as f64 - expected_shared).abs() <= margin,
        "the cluster limit admitted {got_shared} across two nodes; one bucket of burst {BURST} and rate {RATE}/s allows {expected_shared:.1} in {:?} (margin {margin:.1})\n{}\n{}",
        shared.elapsed,
        a.cluster_metrics(),
        b.cluster_metrics()
    );
    assert!(
        shared.admitted().iter().all(|n| *n > 0),
        "both nodes admitted some: {:?}",
        shared.admitted()
    );
    assert!(
        got_alone as f64 > 1.6 * got_shared as f64,
        "the local limit admits about twice the cluster one: {got_alone} vs {got_shared}"
    );
    // Keys the store refused are refused without asking it again for a while.
    let locally: f64 = [&a, &b]
        .iter()
        .filter_map(|n| n.metric("rempart_cluster_refused_locally_total "))
        .sum();
    assert!(
        locally > 0.0,
        "a flooder is refused locally until its time: {}\n{}",
        a.cluster_metrics(),
        b.cluster_metrics()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Shared bans

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ban_earned_on_one_node_is_refused_by_the_other_and_lifted_from_either() {
    let store = Store::start();
    let origin = Origin::start("a1", &[]);
    let setup = Setup {
        // /open/ has no limit: the ban is checked there too, and B charges nothing to anyone.
        routes: "  - name: open\n    match: { path_prefix: /open/ }\n    upstream: ent\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n".into(),
        extra: "limits:\n  per_ip: { key: client_ip, rate: 5/s, burst: 5 }\nshield:\n  ban: { after: 10, within: 1m, for: 10m }\n".into(),
        cluster: vec![],
    };
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);
    let c = client();
    assert_eq!(get(&c, &b.url("/open/before")).await, 200);

    // The flood on A, until A bans.
    let mut statuses = Vec::new();
    let mut banned_at = None;
    for _ in 0..300 {
        let st = get(&c, &a.url("/flood")).await;
        statuses.push(st);
        if st == 403 {
            banned_at = Some(Instant::now());
            break;
        }
    }
    let banned_at = banned_at.unwrap_or_else(|| {
        panic!(
            "A never banned the flooder: {statuses:?}\n{}",
            a.rempart.stderr()
        )
    });
    eprintln!(
        "node A: {} x 200, {} x 429, then 403",
        count(&statuses, 200),
        count(&statuses, 429)
    );

    // B refuses the address without having refused it anything.
    let mut polls = 0;
    let refused = poll_until_async(Duration::from_secs(5), || {
        polls += 1;
        let c = c.clone();
        let url = b.url("/open/after");
        async move { (get(&c, &url).await == 403).then(Instant::now) }
    })
    .await;
    let Some(refused) = refused else {
        panic!(
            "node B still serves the address banned on A after 5 s\nA /bans: {}\nB /bans: {}\nB cluster: {}",
            a.rempart.admin_json("/bans"),
            b.rempart.admin_json("/bans"),
            b.cluster()
        );
    };
    eprintln!(
        "node B refused the address banned on A {:.1} ms after A's first 403 ({polls} polls)",
        (refused - banned_at).as_secs_f64() * 1000.0
    );
    let b_status = b.status();
    assert_eq!(
        b_status["limits"]["per_ip"]["refusals"], 0,
        "B never refused the flooder itself: {}",
        b_status["limits"]
    );
    let b_bans = b.rempart.admin_json("/bans");
    assert_eq!(b_bans["total"], 1, "B holds the ban: {b_bans}");
    assert!(
        b.rempart
            .wait_access_log(Duration::from_secs(3), |l| l["reason"] == "banned")
            .is_some(),
        "B's access log says banned"
    );

    // Lifted on B: A serves the address again.
    let (code, body) = b.rempart.admin_call("DELETE", "/bans/127.0.0.1");
    assert_eq!(code, 200, "B lifts the ban: {body}");
    let lifted_at = Instant::now();
    let lifted = poll_until(Duration::from_secs(5), || {
        (a.rempart.admin_json("/bans")["total"] == 0).then(|| lifted_at.elapsed())
    });
    let Some(lifted) = lifted else {
        panic!(
            "A still holds the ban lifted on B after 5 s: {}",
            a.rempart.admin_json("/bans")
        );
    };
    eprintln!(
        "A dropped the ban {:.1} ms after B's lift",
        lifted.as_secs_f64() * 1000.0
    );
    // The bucket has refilled long since; a few tries at most, spaced so as not to earn a
    // new ban if it has not.
    let mut after = Vec::new();
    for _ in 0..10 {
        let st = get(&c, &a.url("/after")).await;
        after.push(st);
        if st == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        after.last(),
        Some(&200),
        "A serves the address again after the lift on B: {after:?}"
    );
    assert!(!after.contains(&403), "no 403 after the lift: {after:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. One login queue across nodes

/// The login queue of every node: `concurrency` logins in flight for both together.
fn queue_setup(concurrency: usize, hold: &str) -> Setup {
    Setup {
        routes: LOGIN_ROUTES.into(),
        extra: format!(
            "login_queues:\n  logins:\n    concurrency: {concurrency}\n    tenant: header:X-ENT-UAI\n    hold: {hold}\n    max_waiting: 100000\n    per_client_waiting: 100000\n    ticket_ttl: 2m\n"
        ),
        cluster: vec![],
    }
}

/// One login's outcome.
#[derive(Debug, Clone)]
struct Login {
    status: u16,
    took: Duration,
    done: Instant,
}

/// `loops` logins of school `uai` on `url`, one after the other, logged.
async fn pupil(
    c: reqwest::Client,
    url: String,
    uai: &'static str,
    loops: usize,
    log: Arc<Mutex<Vec<Login>>>,
) {
    for i in 0..loops {
        let started = Instant::now();
        let status = match login_post(&c, &url, uai, &format!("{uai}-{i}"))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status
            }
            Err(_) => 0,
        };
        log.lock().unwrap().push(Login {
            status,
            took: started.elapsed(),
            done: Instant::now(),
        });
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[v.len() / 2]
}

const CONCURRENCY: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_put_more_than_the_queue_concurrency_of_logins_on_the_origin() {
    let store = Store::start();
    let origin = Origin::start("a1", &["--login-cost", "200ms"]);
    let setup = queue_setup(CONCURRENCY, "30s");
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);
    origin.reset();

    // 24 pupils of three schools on each node, two logins each, all at once.
    const PUPILS: usize = 24;
    const LOOPS: usize = 2;
    const SCHOOLS: [&str; 3] = ["0750001A", "0750002B", "0750003C"];
    let c = client();
    let log = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for node in [&a, &b] {
        for i in 0..PUPILS {
            tasks.push(tokio::spawn(pupil(
                c.clone(),
                node.url("/auth/login"),
                SCHOOLS[i % SCHOOLS.len()],
                LOOPS,
                log.clone(),
            )));
        }
    }
    // Watch the origin while they log in (bounded: the pupils end within their hold).
    let mut peaks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        peaks.push(origin.stats().login_in_flight);
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let log = log.lock().unwrap().clone();
    let statuses: Vec<u16> = log.iter().map(|l| l.status).collect();
    let stats = origin.stats();
    let sampled = peaks.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{} logins in {:.2} s: {} x 200, others {:?}; origin: {} logins served, at most {} in flight (sampled peak {sampled}); median login {:?}",
        log.len(),
        elapsed.as_secs_f64(),
        count(&statuses, 200),
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>(),
        stats.logins_total,
        stats.login_max_in_flight,
        median(log.iter().map(|l| l.took).collect()),
    );
    for n in [&a, &b] {
        eprintln!(
            "{}: queue {} / cluster {}",
            n.id,
            n.queue("logins"),
            n.cluster()["queues"]
        );
        eprintln!("{}", n.cluster_metrics());
    }
    assert_eq!(
        log.len(),
        2 * PUPILS * LOOPS,
        "every login was answered within 90 s"
    );
    assert_eq!(
        count(&statuses, 200),
        log.len(),
        "every login gets through within its 30 s hold: {statuses:?}"
    );
    assert!(
        stats.login_max_in_flight <= CONCURRENCY as u64,
        "the origin saw {} logins in flight at once from two nodes sharing a queue of concurrency {CONCURRENCY}",
        stats.login_max_in_flight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_school_on_one_node_is_not_stuck_behind_a_big_one_flooding_the_other() {
    let store = Store::start();
    let origin = Origin::start("a1", &["--login-cost", "300ms"]);
    let setup = queue_setup(CONCURRENCY, "30s");
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);
    origin.reset();

    // The big school: 40 pupils on A, two logins each (about 6 s of logins for the origin).
    const BIG_PUPILS: usize = 40;
    const BIG_LOOPS: usize = 2;
    const BIG_TOTAL: usize = BIG_PUPILS * BIG_LOOPS;
    let c = client();
    let big_log = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut big = Vec::new();
    for _ in 0..BIG_PUPILS {
        big.push(tokio::spawn(pupil(
            c.clone(),
            a.url("/auth/login"),
            "0750BIGA",
            BIG_LOOPS,
            big_log.clone(),
        )));
    }
    let filled = poll_until(Duration::from_secs(20), || {
        (a.queue("logins")["waiting"].as_u64()? >= 20).then_some(())
    });
    assert!(
        filled.is_some(),
        "the big school fills A's line: {}",
        a.queue("logins")
    );

    // The small school: 3 pupils on B, two logins each.
    const SMALL_PUPILS: usize = 3;
    const SMALL_LOOPS: usize = 2;
    let small_log = Arc::new(Mutex::new(Vec::new()));
    let small_started = Instant::now();
    let mut small = Vec::new();
    for _ in 0..SMALL_PUPILS {
        small.push(tokio::spawn(pupil(
            c.clone(),
            b.url("/auth/login"),
            "0750SMAL",
            SMALL_LOOPS,
            small_log.clone(),
        )));
    }
    for t in small {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("the small school's pupils end within 60 s")
            .unwrap();
    }
    let small_done = Instant::now();
    let big_done_then = big_log
        .lock()
        .unwrap()
        .iter()
        .filter(|l: &&Login| l.done <= small_done)
        .count();
    let a_queue = a.queue("logins");
    for t in big {
        let _ = tokio::time::timeout(Duration::from_secs(90), t).await;
    }
    let big_log = big_log.lock().unwrap().clone();
    let small_log = small_log.lock().unwrap().clone();
    let stats = origin.stats();
    eprintln!(
        "small school on B: {} logins in {:.2} s (median {:?}); the big school on A had {big_done_then} of {BIG_TOTAL} logins done then ({} waiting on A), all done in {:.2} s (median {:?}); origin peak {} in flight",
        small_log.len(),
        (small_done - small_started).as_secs_f64(),
        median(small_log.iter().map(|l| l.took).collect()),
        a_queue["waiting"],
        big_log.iter().map(|l| l.done).max().map_or(0.0, |d| (d - started).as_secs_f64()),
        median(big_log.iter().map(|l| l.took).collect()),
        stats.login_max_in_flight
    );
    for n in [&a, &b] {
        eprintln!("{}", n.cluster_metrics());
    }
    let small_statuses: Vec<u16> = small_log.iter().map(|l| l.status).collect();
    assert_eq!(
        small_statuses,
        vec![200; SMALL_PUPILS * SMALL_LOOPS],
        "the small school's logins get through"
    );
    assert!(
        big_done_then < BIG_TOTAL,
        "the small school was through before the big one was done ({big_done_then} of {BIG_TOTAL})"
    );
    let big_statuses: Vec<u16> = big_log.iter().map(|l| l.status).collect();
    assert_eq!(
        count(&big_statuses, 200),
        BIG_TOTAL,
        "the big school gets through too: {big_statuses:?}"
    );
}

/// The slot round trips a node made so far.
fn slot_round_trips(n: &Node) -> f64 {
    n.metric("rempart_cluster_store_round_trip_seconds_count{op=\"slots\"}")
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_line_asks_the_store_about_once_per_tick_or_admission() {
    let store = Store::start();
    let origin = Origin::start("a1", &["--login-cost", "300ms"]);
    let setup = queue_setup(CONCURRENCY, "30s");
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);

    // 20 logins at once on A: five rounds of the origin's 300 ms, about 1.5 s of waiting.
    const LOGINS: usize = 20;
    let before = slot_round_trips(&a);
    let c = client();
    let log = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..LOGINS)
        .map(|_| {
            tokio::spawn(pupil(
                c.clone(),
                a.url("/auth/login"),
                "0750001A",
                1,
                log.clone(),
            ))
        })
        .collect();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    let elapsed = started.elapsed();
    let round_trips = slot_round_trips(&a) - before;
    let statuses: Vec<u16> = log.lock().unwrap().iter().map(|l| l.status).collect();
    // One ask per admission, one per 50 ms tick while people wait (doubled), and some slack.
    let ticks = elapsed.as_secs_f64() / 0.050;
    let bound = 2.0 * LOGINS as f64 + 2.0 * ticks + 20.0;
    eprintln!(
        "{LOGINS} logins on A in {:.2} s: {round_trips} slot round trips to the store ({:.0} per login, {:.0}/s); at most {bound:.0} expected",
        elapsed.as_secs_f64(),
        round_trips / LOGINS as f64,
        round_trips / elapsed.as_secs_f64()
    );
    assert_eq!(statuses, vec![200; LOGINS], "every login gets through");
    assert!(
        round_trips <= bound,
        "a line of {LOGINS} asked the store for slots {round_trips} times in {elapsed:?} (one per admission and per 50 ms tick would be about {:.0})",
        LOGINS as f64 + ticks
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A node that dies frees its slots

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_node_holding_slots_frees_them_within_one_lease() {
    let store = Store::start();
    // Logins that last, so that the slots stay held.
    let origin = Origin::start("a1", &["--login-cost", "2s"]);
    let setup = queue_setup(CONCURRENCY, "60s");
    let mut a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);

    let c = client();
    let mut tasks = Vec::new();
    for (node, uai) in [(&a, "0750001A"), (&b, "0750002B")] {
        for i in 0..12 {
            tasks.push(spawn_send(login_post(
                &c,
                &node.url("/auth/login"),
                uai,
                &format!("{uai}-{i}"),
            )));
        }
    }
    // A holds slots, so B is allowed fewer than the whole concurrency.
    let shared = poll_until(Duration::from_secs(15), || {
        let held_a = a.cluster()["queues"]["logins"]["held"].as_u64()?;
        let allowed_b = b.cluster()["queues"]["logins"]["allowed"].as_u64()?;
        (held_a >= 1 && allowed_b < CONCURRENCY as u64).then_some((held_a, allowed_b))
    });
    let Some((held_a, allowed_b)) = shared else {
        panic!(
            "A never held slots while B waited: A {} / B {}",
            a.cluster(),
            b.cluster()
        );
    };
    eprintln!(
        "before: A holds {held_a}, B is allowed {allowed_b} (store: held {:?})",
        store
            .cmd(&["HGETALL", "rempart-test:queue:logins:held"])
            .strings()
    );

    a.rempart.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert!(
        a.rempart.wait_exit(Duration::from_secs(10)).is_some(),
        "A dies on SIGKILL"
    );
    let lease = Duration::from_millis(3 * HEARTBEAT_MS);
    let freed = poll_until(Duration::from_secs(15), || {
        (b.cluster()["queues"]["logins"]["allowed"].as_u64()? == CONCURRENCY as u64)
            .then(|| killed.elapsed())
    });
    let alone = poll_until(Duration::from_secs(10), || {
        (b.cluster()["live_nodes"].as_u64()? == 1).then(|| killed.elapsed())
    });
    eprintln!(
        "after kill -9 of A: B allowed {CONCURRENCY} after {:?}, counted alone after {:?} (lease {lease:?}); B: {}",
        freed,
        alone,
        b.cluster()
    );
    eprintln!("{}", b.cluster_metrics());
    for t in &tasks {
        t.abort();
    }
    assert!(
        freed.is_some(),
        "B is allowed the whole concurrency again once A's lease ended: {}",
        b.cluster()
    );
    assert_eq!(b.cluster()["nodes"], serde_json::json!(["node-b"]));
    let held = store
        .cmd(&["HGETALL", "rempart-test:queue:logins:held"])
        .strings();
    eprintln!("store after: held {held:?}");
    assert!(
        !held.iter().any(|k| k == "node-a"),
        "the store no longer counts slots for the dead node: {held:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The store away

/// Requests sent to both nodes in turn until told to stop (bounded: 4000 requests, 120 s).
fn keep_sending(
    c: reqwest::Client,
    urls: [String; 2],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(usize, u16, Instant)>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..4000 {
            if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                break;
            }
            let n = i % 2;
            out.push((n, get(&c, &urls[n]).await, Instant::now()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_paused_or_killed_causes_no_5xx_and_the_nodes_come_back_to_cluster_mode() {
    let mut store = Store::start();
    let origin = Origin::start("a1", &[]);
    let setup = Setup {
        routes: "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [shared_ip]\n".into(),
        extra: "limits:\n  shared_ip: { key: client_ip, rate: 20/s, burst: 20, scope: cluster, ban: false }\n".into(),
        // The default timeout, 10 ms.
        cluster: vec![],
    };
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    let nodes = [&a, &b];
    wait_cluster(&nodes);

    let stop = Arc::new(AtomicBool::new(false));
    let sender = keep_sending(client(), [a.url("/x"), b.url("/x")], stop.clone());
    let mut phases = Vec::new();
    let down = |v: &Value| v["store_up"] == false;
    let up = |v: &Value| v["store_up"] == true && v["live_nodes"].as_u64() == Some(2);

    // Paused.
    std::thread::sleep(Duration::from_millis(500));
    store.pause();
    let paused = Instant::now();
    let seen = wait_cluster_state(&nodes, Duration::from_secs(10), down);
    let during_pause: Vec<Value> = nodes.iter().map(|n| n.cluster()).collect();
    let store_up_metric = a.metric("rempart_cluster_store_up ");
    std::thread::sleep(Duration::from_secs(1));
    store.resume();
    let back = wait_cluster_state(&nodes, Duration::from_secs(5), up);
    eprintln!(
        "paused: both nodes said store_up false after {seen:?}; resumed at {:?}: cluster mode again after {back:?}",
        paused.elapsed()
    );
    eprintln!(
        "while paused: A {} / B {}",
        during_pause[0], during_pause[1]
    );
    phases.push(("paused", paused, Instant::now()));
    assert!(
        seen.is_some(),
        "the nodes see the store paused: A {} / B {}",
        a.cluster(),
        b.cluster()
    );
    assert!(
        during_pause.iter().all(|c| c["last_error"].is_string()),
        "last_error says why: {during_pause:?}"
    );
    assert_eq!(
        store_up_metric,
        Some(0.0),
        "rempart_cluster_store_up while paused"
    );
    assert!(
        back.is_some(),
        "back in cluster mode within 5 s of the store's return: A {} / B {}",
        a.cluster(),
        b.cluster()
    );

    // Killed, then started again on the same port (empty).
    std::thread::sleep(Duration::from_millis(500));
    store.kill();
    let killed = Instant::now();
    let seen = wait_cluster_state(&nodes, Duration::from_secs(10), down);
    std::thread::sleep(Duration::from_secs(1));
    store.restart().expect("the store starts again on its port");
    let back = wait_cluster_state(&nodes, Duration::from_secs(5), up);
    eprintln!(
        "killed: both nodes said store_up false after {seen:?}; restarted at {:?}: cluster mode again after {back:?}",
        killed.elapsed()
    );
    phases.push(("killed", killed, Instant::now()));
    assert!(
        seen.is_some(),
        "the nodes see the store killed: A {} / B {}",
        a.cluster(),
        b.cluster()
    );
    assert!(
        back.is_some(),
        "back in cluster mode within 5 s of the store's restart: A {} / B {}",
        a.cluster(),
        b.cluster()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();

    let statuses: Vec<u16> = sent.iter().map(|(_, s, _)| *s).collect();
    eprintln!(
        "{} requests through the outages: {} x 200, {} x 429, others {:?}",
        sent.len(),
        count(&statuses, 200),
        count(&statuses, 429),
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 429)
            .collect::<Vec<_>>()
    );
    for (what, from, to) in &phases {
        let window: Vec<&(usize, u16, Instant)> = sent
            .iter()
            .filter(|(_, _, at)| at >= from && at <= to)
            .collect();
        let per_node = |n: usize, status: u16| {
            window
                .iter()
                .filter(|(node, s, _)| *node == n && *s == status)
                .count()
        };
        eprintln!(
            "store {what} for {:.2} s: A {} x 200 {} x 429, B {} x 200 {} x 429",
            (*to - *from).as_secs_f64(),
            per_node(0, 200),
            per_node(0, 429),
            per_node(1, 200),
            per_node(1, 429)
        );
    }
    for n in &nodes {
        eprintln!("{}", n.cluster_metrics());
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "only 200 and 429 while the store was away and back (0: a transport error): {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 429)
            .collect::<Vec<_>>()
    );
    assert!(count(&statuses, 200) > 0);
    for n in &nodes {
        let st = n.status();
        assert_eq!(st["traffic"]["errors_5xx"], 0, "{}: no 5xx", n.id);
        let fallbacks = n
            .metric("rempart_cluster_fallbacks_total{what=\"limit\"}")
            .unwrap_or(0.0);
        assert!(
            fallbacks > 0.0,
            "{} decided alone while the store was away: {}",
            n.id,
            n.cluster_metrics()
        );
        assert_eq!(n.metric("rempart_cluster_store_up "), Some(1.0));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. A ticket of one node holds on the other

/// The test ids of the logins the origin received, in arrival order.
fn login_order(o: &Origin) -> Vec<String> {
    o.requests()
        .into_iter()
        .filter(|r| r.path == "/auth/login")
        .map(|r| r.test_id.unwrap_or_default())
        .collect()
}

fn pause(n: &Node) {
    let (code, body) = n.rempart.admin_post("/queues/logins/pause");
    assert_eq!(code, 200, "pause on {}: {body}", n.id);
}

fn resume(n: &Node) {
    let (code, body) = n.rempart.admin_post("/queues/logins/resume");
    assert_eq!(code, 200, "resume on {}: {body}", n.id);
}

fn wait_waiting(n: &Node, waiting: u64) {
    let got = poll_until(Duration::from_secs(10), || {
        (n.queue("logins")["waiting"].as_u64() == Some(waiting)).then_some(())
    });
    assert!(
        got.is_some(),
        "expected {waiting} waiting on {}: {}",
        n.id,
        n.queue("logins")
    );
}

/// A pupil's first login on `node` while its line is paused: the hold runs out and the waiting
/// room gives a ticket (the node stays paused).
async fn ticket_from_paused(c: &reqwest::Client, node: &Node) -> String {
    pause(node);
    let (status, headers) = spawn_send(login_post(
        c,
        &node.url("/auth/login"),
        "0750001A",
        "first-visit",
    ))
    .await
    .unwrap();
    assert_eq!(status, 503, "{}'s waiting room after the hold", node.id);
    set_cookie(&headers, "rempart_ticket").expect("a ticket from the paused node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_given_by_one_node_keeps_its_place_on_the_other() {
    let store = Store::start();
    let origin = Origin::start("a1", &["--login-cost", "150ms", "--record-requests"]);
    let setup = queue_setup(1, "5s");
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);
    let c = client();

    // A gives a ticket: its line does not move, the hold runs out.
    let ticket = ticket_from_paused(&c, &a).await;
    resume(&a);

    // B's line: three newcomers, then A's ticket, then a forged copy of it.
    let mut forged = ticket.clone().into_bytes();
    let at = forged.len() / 2;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    pause(&b);
    origin.reset();
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        tasks.push(spawn_send(login_post(
            &c,
            &b.url("/auth/login"),
            "0750001A",
            &format!("new-{i}"),
        )));
        wait_waiting(&b, i + 1);
    }
    let with_ticket = spawn_send(
        login_post(&c, &b.url("/auth/login"), "0750001A", "ticket-from-a")
            .header("Cookie", format!("rempart_ticket={ticket}")),
    );
    wait_waiting(&b, 4);
    let with_forged = spawn_send(
        login_post(&c, &b.url("/auth/login"), "0750001A", "forged")
            .header("Cookie", format!("rempart_ticket={forged}")),
    );
    wait_waiting(&b, 5);
    resume(&b);

    let (ticket_status, ticket_headers) = with_ticket.await.unwrap();
    let (forged_status, forged_headers) = with_forged.await.unwrap();
    let mut newcomers = Vec::new();
    for t in tasks {
        newcomers.push(t.await.unwrap().0);
    }
    let order = login_order(&origin);
    eprintln!(
        "B's admissions: {order:?}; ticket {ticket_status}, forged {forged_status}, newcomers {newcomers:?}"
    );
    assert_eq!(ticket_status, 200);
    assert_eq!(forged_status, 200);
    assert_eq!(newcomers, vec![200; 3]);
    // The ticket verified on B: B spends it (clears the cookie) when admitting its bearer.
    let spent = set_cookie_line(&ticket_headers, "rempart_ticket");
    assert!(
        spent.as_deref().is_some_and(|l| l.contains("Max-Age=0")),
        "B verified A's ticket and spent it: {spent:?}"
    );
    assert!(
        set_cookie_line(&forged_headers, "rempart_ticket").is_none(),
        "a forged ticket is not one: {forged_headers:?}"
    );
    assert_eq!(
        order,
        ["ticket-from-a", "new-0", "new-1", "new-2", "forged"],
        "A's ticket keeps its place (before the newcomers) in B's line; the forged one goes last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_spent_on_one_node_buys_no_early_place_on_the_other() {
    let store = Store::start();
    let origin = Origin::start("a1", &["--login-cost", "150ms", "--record-requests"]);
    let setup = queue_setup(1, "2s");
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);
    let c = client();

    // A gives a ticket (its line does not move, the hold runs out); B admits its bearer.
    let ticket = ticket_from_paused(&c, &a).await;
    let (status, _) = spawn_send(
        login_post(&c, &b.url("/auth/login"), "0750001A", "admitted-on-b")
            .header("Cookie", format!("rempart_ticket={ticket}")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "B admits the ticket's bearer");

    // The same ticket replayed on A, behind two newcomers: spent on B, it is a newcomer on A.
    origin.reset();
    let mut tasks = Vec::new();
    for i in 0..2u64 {
        tasks.push(spawn_send(login_post(
            &c,
            &a.url("/auth/login"),
            "0750001A",
            &format!("new-{i}"),
        )));
        wait_waiting(&a, i + 1);
    }
    let replay = spawn_send(
        login_post(&c, &a.url("/auth/login"), "0750001A", "replay")
            .header("Cookie", format!("rempart_ticket={ticket}")),
    );
    wait_waiting(&a, 3);
    resume(&a);
    let replay_status = replay.await.unwrap().0;
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let order = login_order(&origin);
    eprintln!("A's admissions after the ticket was spent on B: {order:?} (replay {replay_status})");
    assert_eq!(replay_status, 200);
    assert_eq!(
        order,
        ["new-0", "new-1", "replay"],
        "a ticket spent on B keeps no early place on A"
    );
}

/// The text of node `url`'s dashboard header line about the cluster, once `ready` holds in it
/// (30 s at most); the text as it is otherwise.
async fn cluster_line(
    page: &mut integration_tests::browser::Browser,
    ready: &str,
) -> (bool, String) {
    let line = "(document.getElementById('cluster') || {}).textContent || ''";
    let held = page
        .wait_true(
            &format!("({line}).includes({ready:?})"),
            Duration::from_secs(30),
        )
        .await;
    let text = page
        .eval(line)
        .await
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    (held, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_nodes_and_the_store() {
    let store = Store::start();
    let origin = Origin::start("a1", &[]);
    let setup = Setup {
        routes: "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into(),
        extra: String::new(),
        cluster: vec![],
    };
    let a = Node::start("node-a", &store, origin.addr(), &setup);
    let b = Node::start("node-b", &store, origin.addr(), &setup);
    wait_cluster(&[&a, &b]);

    let url = format!("http://{}/", a.ports.admin);
    let mut page = integration_tests::browser::Browser::open(&url, &["--window-size=1400,1200"])
        .await
        .expect("Chromium opens the dashboard");
    let (up, text) = cluster_line(&mut page, "store up").await;
    eprintln!("dashboard, store up: {text}");
    assert!(up, "the dashboard says the store is up: {text:?}");
    assert!(
        text.contains("node-a") && text.contains("node-b") && text.contains("2 nœud"),
        "the dashboard names both nodes: {text:?}"
    );

    store.pause();
    let (away, text) = cluster_line(&mut page, "store away").await;
    eprintln!("dashboard, store paused: {text}");
    store.resume();
    assert!(away, "the dashboard says the store is away: {text:?}");
    assert!(
        text.contains("decides alone"),
        "and what the node does meanwhile: {text:?}"
    );
    let (back, text) = cluster_line(&mut page, "store up").await;
    assert!(back, "the dashboard sees the store back: {text:?}");
}
