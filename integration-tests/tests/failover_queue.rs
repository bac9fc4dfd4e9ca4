//! The login queue in front of an upstream with several servers and datacenters: the queue's
//! limit capped by the servers' `max_in_flight` (no server ever sees more than its cap, nothing is
//! refused as busy), the adaptive limit settling near the capacity of a backend whose throughput
//! collapses past it (and keeping the throughput of a static limit at that capacity), the limit
//! following the smaller datacenter after a failover (and coming back with the traffic), and
//! GETs slower than `per_try` on every server that succeed on their last try without ejecting
//! anybody.
//!
//! Checks are counts at the origins and the queue's `/status`; the load tests also compare
//! throughputs, with generous bounds (the debug binary, a shared machine). The figures are
//! printed: `cargo test -p integration-tests --test failover_queue -- --nocapture`.
//!
//! `/status` shows, per queue, the `limit` in force (the one learned for the datacenter taking
//! the traffic, capped by its `max_in_flight` total), the `datacenter` it is for, and
//! `limits_by_datacenter`, what was learned for each datacenter seen.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

/// The load tests measure throughputs and limits: one at a time, so that they do not share the
/// machine with each other.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `/auth/login` goes through the queue `logins`, the rest straight to `ent`.
const LOGIN_ROUTES: &str = "  - name: login\n    match: { path_prefix: /auth/login }\n    upstream: ent\n    login_queue: logins\n  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n";

/// A queue `logins` with these settings (YAML lines without indentation), every client from
/// 127.0.0.1 allowed to wait as often as it likes.
fn queue_yaml(settings: &[&str]) -> String {
    let mut y = String::from("login_queues:\n  logins:\n");
    for l in settings.iter().chain(&[
        "tenant: header:X-ENT-UAI",
        "max_waiting: 100000",
        "per_client_waiting: 100000",
    ]) {
        y.push_str("    ");
        y.push_str(l);
        y.push('\n');
    }
    y
}

/// The YAML settings every queue test shares (fast health checks come from the harness).
fn queue_stack(y: &mut ProxyYaml, settings: &[&str]) {
    y.server.push("max_connections_per_ip: 10000".into());
    y.routes = LOGIN_ROUTES.into();
    y.extra = queue_yaml(settings);
}

/// A client with room for every looping task's connection.
fn load_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(256)
        .http1_only()
        .build()
        .expect("client")
}

fn login(c: &reqwest::Client, url: &str, user: &str) -> reqwest::RequestBuilder {
    c.post(url)
        .header("X-ENT-UAI", "0750001A")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password=p"))
}

fn ent_status(r: &Rempart) -> Value {
    r.admin_json("/status")["upstreams"]["ent"].clone()
}

/// Wait until every server has passed a health check and `dc` is active.
fn all_up(r: &Rempart, dc: &str) {
    let done = poll_until(Duration::from_secs(10), || {
        let ent = ent_status(r);
        let all_up = ent["datacenters"].as_array()?.iter().all(|d| {
            d["servers"]
                .as_array()
                .is_some_and(|v| v.iter().all(|srv| srv["health"] == "up"))
        });
        (all_up && ent["active_datacenter"] == dc).then_some(())
    });
    assert!(done.is_some(), "servers not all up: {}", ent_status(r));
}

// ---------------------------------------------------------------------------------------------
// Sampling `/status` while the load runs.

#[derive(Debug, Clone)]
struct Sample {
    /// Since the sampler started.
    at: Duration,
    limit: u64,
    in_flight: u64,
    admitted: u64,
    /// `upstreams.ent.active_datacenter`.
    active: String,
    /// The queue's `datacenter`: whose limit applies.
    datacenter: String,
    /// The queue's `limits_by_datacenter`.
    by_dc: Vec<(String, u64)>,
}

impl Sample {
    fn learned(&self, dc: &str) -> Option<u64> {
        self.by_dc.iter().find(|(d, _)| d == dc).map(|(_, l)| *l)
    }
}

fn str_or_none(v: &Value) -> String {
    v.as_str().unwrap_or("none").to_string()
}

/// Samples `/status` on a thread of its own (the test's runtime stays free for the load) every
/// `every`, until stopped or `max` has passed.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(admin: SocketAddr, every: Duration, max: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut out = Vec::new();
            let bound = (max.as_millis() / every.as_millis().max(1)) as usize + 2;
            for _ in 0..bound {
                if flag.load(Ordering::Relaxed) || started.elapsed() >= max {
                    break;
                }
                let at = started.elapsed();
                if let Ok(a) =
                    http1::request(admin, "GET", "/status", &[], b"", Duration::from_secs(2))
                {
                    if let Ok(v) = serde_json::from_slice::<Value>(&a.body) {
                        let q = &v["queues"]["logins"];
                        if let Some(limit) = q["limit"].as_u64() {
                            out.push(Sample {
                                at,
                                limit,
                                in_flight: q["in_flight"].as_u64().unwrap_or(0),
                                admitted: q["admitted"].as_u64().unwrap_or(0),
                                active: str_or_none(&v["upstreams"]["ent"]["active_datacenter"]),
                                datacenter: str_or_none(&q["datacenter"]),
                                by_dc: q["limits_by_datacenter"]
                                    .as_object()
                                    .map(|m| {
                                        m.iter()
                                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                            });
                        }
                    }
                }
                // The next sample one period after this one (not after the answer).
                let next = at + every;
                if let Some(wait) = next.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            out
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the status sampler panicked")
    }
}

fn limits(samples: &[Sample]) -> Vec<u64> {
    samples.iter().map(|s| s.limit).collect()
}

// ---------------------------------------------------------------------------------------------
// Looping clients.

/// Logins done: when each was answered, and its status (0: no answer).
type Log = Arc<Mutex<Vec<(Instant, u16)>>>;

/// Most logins one looping client makes, whatever the speed of the machine.
const MAX_LOGINS_PER_CLIENT: usize = 2_000;

/// A user logging in again and again until `until`.
async fn login_loop(c: reqwest::Client, url: String, user: usize, until: Instant, log: Log) {
    for n in 0..MAX_LOGINS_PER_CLIENT {
        if Instant::now() >= until {
            return;
        }
        let status = match login(&c, &url, &format!("u{user}-{n}")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status
            }
            Err(_) => 0,
        };
        log.lock().unwrap().push((Instant::now(), status));
    }
}

/// Start `clients` looping clients until `until`.
fn start_load(
    s: &Stack,
    clients: usize,
    until: Instant,
    log: &Log,
) -> Vec<tokio::task::JoinHandle<()>> {
    // Longer than any hold of these tests: a login waits in line, it is not cut by the client.
    let c = load_client(Duration::from_secs(90));
    let url = s.url("/auth/login");
    (0..clients)
        .map(|i| tokio::spawn(login_loop(c.clone(), url.clone(), i, until, log.clone())))
        .collect()
}

/// Wait for the looping clients to end (they stop at their deadline; those in line then are
/// admitted within seconds), at most `timeout` in all.
async fn join_load(tasks: Vec<tokio::task::JoinHandle<()>>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, t).await.is_err() {
            panic!("a looping client was still running {timeout:?} after the load ended");
        }
    }
}

/// (status, count) of every answer that was not a 200.
fn not_ok(log: &[(Instant, u16)]) -> Vec<(u16, usize)> {
    let mut out: Vec<(u16, usize)> = Vec::new();
    for (_, st) in log.iter().filter(|(_, st)| *st != 200) {
        match out.iter_mut().find(|(s, _)| s == st) {
            Some((_, n)) => *n += 1,
            None => out.push((*st, 1)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. max_in_flight

/// Two origins in dc-a declared `{ address, max_in_flight: cap }`: the harness renders plain
/// addresses, so the datacenter line of the rendered YAML is replaced.
fn start_capped(dc_a: Vec<Origin>, cap: usize, tweak: impl FnOnce(&mut ProxyYaml)) -> Stack {
    let addrs: Vec<SocketAddr> = dc_a.iter().map(|o| o.addr()).collect();
    let mut y = ProxyYaml::new(addrs.clone(), vec![]);
    tweak(&mut y);
    let plain = format!(
        "servers: [{}]",
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let capped = format!(
        "servers: [{}]",
        addrs
            .iter()
            .map(|a| format!("{{ address: {a}, max_in_flight: {cap} }}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rendered = y.render();
    assert!(rendered.contains(&plain), "{rendered}");
    let yaml = rendered.replacen(&plain, &capped, 1);
    let rempart = start_rempart(&yaml);
    let s = Stack {
        rempart,
        dc_a,
        dc_b: vec![],
        yaml,
        ports: y.ports,
    };
    if let Err(e) = wait_routable(s.ports.http, Duration::from_secs(10)) {
        panic!(
            "{e}\nrempart stderr:\n{}\n--- configuration ---\n{}",
            s.rempart.stderr(),
            s.yaml
        );
    }
    for o in &s.dc_a {
        o.reset();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_with_max_in_flight_never_sees_more_while_the_queue_admits_toward_the_others() {
    const CAP: u64 = 4;
    const LOGINS: usize = 40;
    let args = [
        "--login-cost",
        "500ms",
        "--max-in-flight",
        "4",
        "--record-requests",
    ];
    let origins = vec![Origin::start("a1", &args), Origin::start("a2", &args)];
    let s = start_capped(origins, CAP as usize, |y| {
        queue_stack(y, &["concurrency: 12", "hold: 30s"]);
    });
    // Both servers up: the cap is their total (a server not yet checked is not counted).
    all_up(&s.rempart, "dc-a");

    let sampler = Sampler::start(
        s.rempart.admin_addr(),
        Duration::from_millis(100),
        Duration::from_secs(40),
    );
    let c = load_client(Duration::from_secs(45));
    let url = s.url("/auth/login");
    let started = Instant::now();
    let tasks: Vec<_> = (0..LOGINS)
        .map(|i| {
            let rb = login(&c, &url, &format!("u{i}"));
            tokio::spawn(async move {
                match rb.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        (status, body.chars().take(120).collect::<String>())
                    }
                    Err(e) => (0, e.to_string()),
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("a login task"));
    }
    let took = started.elapsed();
    // While the logins run: once the first was admitted. (Before any request, the status shows
    // the limit uncapped: the queue looks at its upstream when a request arrives.)
    let all_samples = sampler.finish();
    let idle = all_samples
        .iter()
        .take_while(|x| x.admitted == 0)
        .map(|x| x.limit)
        .collect::<Vec<_>>();
    let samples: Vec<Sample> = all_samples.into_iter().filter(|x| x.admitted > 0).collect();

    let stats: Vec<OriginStats> = s.dc_a.iter().map(|o| o.stats()).collect();
    let seen = limits(&samples);
    let max_limit = seen.iter().copied().max().unwrap_or(0);
    let max_queue_in_flight = samples.iter().map(|x| x.in_flight).max().unwrap_or(0);
    eprintln!(
        "max_in_flight: {LOGINS} logins in {took:?}; origins: a1 max in flight {} ({} logins, {} busy), \
         a2 max in flight {} ({} logins, {} busy); queue limit seen {:?}..={max_limit} over {} samples, \
         queue in flight at most {max_queue_in_flight}; limit before the first admission {idle:?}",
        stats[0].max_in_flight_excluding_health,
        stats[0].logins_total,
        stats[0].refused_busy,
        stats[1].max_in_flight_excluding_health,
        stats[1].logins_total,
        stats[1].refused_busy,
        seen.iter().min(),
        seen.len(),
    );

    let failed: Vec<_> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "every login waits in line and is answered 200: {} not: {failed:?}",
        failed.len()
    );
    for (o, st) in s.dc_a.iter().zip(&stats) {
        assert!(
            st.max_in_flight_excluding_health <= CAP,
            "{} had {} requests in flight, its max_in_flight is {CAP}: {st:?}",
            o.name(),
            st.max_in_flight_excluding_health
        );
        assert_eq!(
            st.refused_busy,
            0,
            "{} refused requests as busy: {st:?}",
            o.name()
        );
        assert!(
            st.logins_total > 0,
            "{} served no login: the queue admits toward both servers: {st:?}",
            o.name()
        );
        let received = o.requests_with_method("POST");
        assert!(
            received.iter().all(|r| r.completed && r.status == 200),
            "{} answered something else than 200 to a login: {:?}",
            o.name(),
            received
                .iter()
                .filter(|r| !(r.completed && r.status == 200))
                .take(5)
                .collect::<Vec<_>>()
        );
    }
    let logins: u64 = stats.iter().map(|st| st.logins_total).sum();
    assert_eq!(logins, LOGINS as u64, "each login reached an origin once");
    assert!(
        samples.len() >= 5,
        "the status was sampled while the logins ran: {samples:?}"
    );
    assert!(
        max_limit <= 2 * CAP,
        "the queue's limit is its concurrency (12) capped by the datacenter's max_in_flight total \
         ({}): seen {seen:?}",
        2 * CAP
    );
    assert!(
        max_queue_in_flight <= 2 * CAP,
        "the queue had {max_queue_in_flight} in flight, more than the servers take"
    );
    assert!(
        samples.iter().all(|x| x.datacenter == "dc-a"),
        "the limit is dc-a's: {samples:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. the adaptive limit against a backend that collapses past its capacity

/// What one run under load gave.
#[derive(Debug)]
struct RunFigures {
    /// `/status` samples after the warm-up.
    samples: Vec<Sample>,
    /// Logins answered 200 per second after the warm-up.
    throughput: f64,
    /// Answers that were not 200, by status.
    not_ok: Vec<(u16, usize)>,
    login_max_in_flight: u64,
}

const K: u64 = 6;
const WARM_UP: Duration = Duration::from_secs(8);
const RUN: Duration = Duration::from_secs(18);
const CLIENTS: usize = 60;

/// One origin `--login-saturate K --login-cost 100ms`, a queue with `settings`, `CLIENTS`
/// looping clients for `RUN`; figures after `WARM_UP`.
async fn saturated_run(settings: &[&str]) -> RunFigures {
    let origin = Origin::start(
        "a1",
        &["--login-saturate", &K.to_string(), "--login-cost", "100ms"],
    );
    let s = Stack::start_with(vec![origin], vec![], |y| queue_stack(y, settings), true);
    all_up(&s.rempart, "dc-a");
    let log: Log = Arc::default();
    let sampler = Sampler::start(
        s.rempart.admin_addr(),
        Duration::from_millis(500),
        RUN + Duration::from_secs(1),
    );
    let started = Instant::now();
    let tasks = start_load(&s, CLIENTS, started + RUN, &log);
    tokio::time::sleep(RUN).await;
    let samples = sampler.finish();
    join_load(tasks, Duration::from_secs(30)).await;
    let log = log.lock().unwrap().clone();
    let from = started + WARM_UP;
    let to = started + RUN;
    let done = log
        .iter()
        .filter(|(at, st)| *st == 200 && *at >= from && *at < to)
        .count();
    RunFigures {
        samples: samples.into_iter().filter(|x| x.at >= WARM_UP).collect(),
        throughput: done as f64 / (RUN - WARM_UP).as_secs_f64(),
        not_ok: not_ok(&log),
        login_max_in_flight: s.dc_a[0].stats().login_max_in_flight,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_adaptive_limit_settles_near_the_capacity_and_keeps_its_throughput() {
    let _one_at_a_time = LOAD.lock().await;
    // Side by side, each with its own origin: whatever else loads the machine loads both.
    let (adaptive, fixed) = tokio::join!(
        saturated_run(&[
            "concurrency: 4",
            "adaptive: { min: 1, max: 256 }",
            "hold: 60s",
        ]),
        saturated_run(&["concurrency: 6", "hold: 60s"]),
    );
    let seen = limits(&adaptive.samples);
    eprintln!(
        "adaptive (K = {K}, {CLIENTS} clients): limit after {WARM_UP:?}: {seen:?}; \
         {:.1} logins/s, origin login max in flight {}; static concurrency 6: {:.1} logins/s \
         (limit {:?}), origin login max in flight {}; ratio {:.0} %",
        adaptive.throughput,
        adaptive.login_max_in_flight,
        fixed.throughput,
        limits(&fixed.samples).iter().max(),
        fixed.login_max_in_flight,
        100.0 * adaptive.throughput / fixed.throughput.max(1e-9),
    );
    for run in [&adaptive, &fixed] {
        assert!(
            run.not_ok.is_empty(),
            "with a hold of 60 s every login is answered 200: {:?}",
            run.not_ok
        );
    }
    assert!(
        seen.len() >= 10,
        "the status was sampled every 500 ms: {seen:?}"
    );
    // The limiter measures the no-load latency with the limit pinned to at most 3 (at start,
    // about every 30 s, and at once when the upstream looks slower or faster for good): a
    // measurement takes about 8 round trips, a second here, so a few samples may be 3 or less.
    let (lo, hi) = (0.6 * K as f64, 1.6 * K as f64);
    let dips = seen.iter().filter(|&&l| l <= 3).count();
    let outside: Vec<u64> = seen
        .iter()
        .copied()
        .filter(|&l| l > 3 && !(lo..=hi).contains(&(l as f64)))
        .collect();
    assert!(
        outside.is_empty(),
        "after the warm-up the adaptive limit stays within [{lo}, {hi}] (K = {K}), \
         measurements apart; outside: {outside:?} of {seen:?}"
    );
    assert!(
        dips <= 4,
        "{dips} samples at 3 or less: more than the measurements of the no-load latency \
         explain: {seen:?}"
    );
    assert!(
        fixed.throughput > 0.0 && adaptive.throughput >= 0.8 * fixed.throughput,
        "the adaptive limit keeps at least 80 % of the throughput of a static limit at the \
         capacity: {:.1} logins/s against {:.1}",
        adaptive.throughput,
        fixed.throughput
    );
}

// ---------------------------------------------------------------------------------------------
// 3. failover: the limit follows the datacenter taking the traffic

/// `/status` samples every 250 ms for `d` while the load runs.
async fn sample_for(r: &Rempart, d: Duration) -> Vec<Sample> {
    let sampler = Sampler::start(r.admin_addr(), Duration::from_millis(250), d);
    tokio::time::sleep(d).await;
    sampler.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failover_the_limit_follows_the_smaller_datacenter() {
    const KA: u64 = 8;
    const KB: u64 = 4;
    const CLIENTS: usize = 40;
    let _one_at_a_time = LOAD.lock().await;
    let a1 = Origin::start(
        "a1",
        &["--login-saturate", &KA.to_string(), "--login-cost", "100ms"],
    );
    let b1 = Origin::start(
        "b1",
        &["--login-saturate", &KB.to_string(), "--login-cost", "100ms"],
    );
    let s = Stack::start_with(
        vec![a1],
        vec![b1],
        |y| {
            y.upstream.push("failback_after: 1s".into());
            queue_stack(
                y,
                &[
                    "concurrency: 4",
                    "adaptive: { min: 1, max: 256 }",
                    "hold: 60s",
                ],
            );
        },
        true,
    );
    all_up(&s.rempart, "dc-a");
    let r = &s.rempart;
    let (lo_a, hi_a) = (0.6 * KA as f64, 1.6 * KA as f64);
    let hi_b = 1.6 * KB as f64;
    let log: Log = Arc::default();
    // Bounded in all: 10 s on dc-a, 10 s on dc-b, at most 10 s back on dc-a.
    let total = Duration::from_secs(32);
    let tasks = start_load(&s, CLIENTS, Instant::now() + total, &log);

    // Phase 1: on dc-a, the limit settles near KA (figures after 5 s).
    let on_a: Vec<Sample> = sample_for(r, Duration::from_secs(10))
        .await
        .into_iter()
        .filter(|x| x.at >= Duration::from_secs(5))
        .collect();
    let a_limits = limits(&on_a);
    let in_range_a = a_limits
        .iter()
        .filter(|&&l| (lo_a..=hi_a).contains(&(l as f64)))
        .count();

    // Phase 2: dc-a drained, the traffic moves to dc-b and the limit comes down to KB's.
    let a_before_drain = s.dc_a[0].stats().logins_total;
    let b_before_drain = s.dc_b[0].stats().logins_total;
    let (code, body) = r.admin_post("/upstreams/ent/datacenters/dc-a/drain");
    assert_eq!(code, 200, "{body}");
    let on_b = sample_for(r, Duration::from_secs(10)).await;
    let a_after_drain = s.dc_a[0].stats().logins_total;
    let b_after_drain = s.dc_b[0].stats().logins_total;
    let came_down = on_b
        .iter()
        .find(|x| x.datacenter == "dc-b" && x.limit as f64 <= hi_b)
        .map(|x| x.at);
    // From when on the limit stays at most 1.6 KB: after its last sample above.
    let settled = on_b
        .iter()
        .rposition(|x| x.limit as f64 > hi_b)
        .map_or(Duration::ZERO, |i| {
            on_b.get(i + 1).map_or(Duration::MAX, |x| x.at)
        });
    let dc_a_kept = on_b.last().and_then(|x| x.learned("dc-a"));

    // Phase 3: dc-a back (after failback_after): the limit learned for it applies again, not
    // one grown back from dc-b's.
    let (code, body) = r.admin_post("/upstreams/ent/datacenters/dc-a/undrain");
    assert_eq!(code, 200, "{body}");
    let undrained_at = Instant::now();
    let back = poll_until(Duration::from_secs(10), || {
        let q = r.admin_json("/status")["queues"]["logins"].clone();
        let limit = q["limit"].as_u64()?;
        (q["datacenter"] == "dc-a" && limit as f64 >= lo_a).then(|| (undrained_at.elapsed(), limit))
    });
    let end_status = r.admin_json("/status")["queues"]["logins"].clone();
    join_load(tasks, total + Duration::from_secs(30)).await;
    let log = log.lock().unwrap().clone();
    let trace = |v: &[Sample]| {
        v.iter()
            .map(|x| {
                format!(
                    "{:.2}s {} {} {}",
                    x.at.as_secs_f64(),
                    x.datacenter,
                    x.limit,
                    x.in_flight
                )
            })
            .collect::<Vec<_>>()
    };
    eprintln!(
        "failover (dc-a K = {KA}, dc-b K = {KB}, {CLIENTS} clients):\n  on dc-a after 5 s: {a_limits:?} \
         ({in_range_a} of {} within [{lo_a}, {hi_a}])\n  drained: on dc-b (at, datacenter, limit, in \
         flight): {:?}\n  limit <= {hi_b} on dc-b after {came_down:?}, stays so from {settled:?}; \
         dc-a's limit kept meanwhile: {dc_a_kept:?}\n  logins: dc-a {a_before_drain} before the drain, \
         {a_after_drain} 10 s later; dc-b {b_before_drain} -> {b_after_drain}\n  undrained: dc-a's \
         limit (>= {lo_a}) in force after {back:?}; queue at the end: {end_status}",
        a_limits.len(),
        trace(&on_b),
    );

    assert!(
        not_ok(&log).is_empty(),
        "with a hold of 60 s every login is answered 200: {:?}",
        not_ok(&log)
    );
    assert!(a_limits.len() >= 10, "{on_a:?}");
    assert!(
        on_a.iter()
            .all(|x| x.datacenter == "dc-a" && x.active == "dc-a"),
        "{on_a:?}"
    );
    // Mostly: a measurement of the no-load latency pins the limit to 3 for a second.
    assert!(
        in_range_a * 4 >= a_limits.len() * 3,
        "on dc-a the limit settles within [{lo_a}, {hi_a}] (K = {KA}): {a_limits:?}"
    );
    // The queue looks at its upstream at each arrival and release: under load, at once.
    let late: Vec<&Sample> = on_b
        .iter()
        .filter(|x| x.at >= Duration::from_millis(500))
        .filter(|x| x.datacenter != "dc-b" || x.active != "dc-b")
        .collect();
    assert!(
        late.is_empty(),
        "dc-b takes the traffic, and the queue's limit is dc-b's, while dc-a is drained: {late:?}"
    );
    assert!(
        came_down.is_some(),
        "after dc-a was drained the queue's limit never came down to {hi_b} (K = {KB}): {:?}",
        trace(&on_b)
    );
    // A fresh limiter for dc-b starts from `concurrency` in slow start and may overshoot once
    // before its first congestion; it must have settled within ~6 s (the last 4 s at most
    // 1.6 KB).
    assert!(
        settled <= Duration::from_secs(6),
        "on dc-b the limit comes down to at most {hi_b} (K = {KB}) and stays there: settled \
         from {settled:?}: {:?}",
        trace(&on_b)
    );
    assert!(
        b_after_drain > b_before_drain,
        "dc-b served the logins after the drain: {b_before_drain} -> {b_after_drain}"
    );
    assert!(
        a_after_drain.saturating_sub(a_before_drain) <= 2 * hi_a as u64,
        "a drained datacenter only finishes what it had in flight (at most the limit, about \
         {KA}): {a_before_drain} logins just before the drain, {a_after_drain} 10 s later"
    );
    assert!(
        dc_a_kept.is_some_and(|l| l as f64 >= lo_a),
        "what was learned for dc-a is kept while dc-b takes the traffic: {dc_a_kept:?} ({:?})",
        on_b.last()
    );
    assert!(
        back.is_some(),
        "once dc-a takes the traffic back, the limit learned for it (about {KA}) applies again: \
         queue: {end_status}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. per_try on every server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_requests_slower_than_per_try_on_every_server_succeed_on_their_last_try_and_eject_nobody(
) {
    let args = ["--latency", "/report=1500ms"];
    let origins = vec![Origin::start("a1", &args), Origin::start("a2", &args)];
    let s = Stack::start_with(
        origins,
        vec![],
        |y| {
            y.upstream
                .push("timeouts: { connect: 1s, response: 10s, per_try: 500ms }".into());
            y.upstream
                .push("retries: { attempts: 2, budget: 100% }".into());
        },
        true,
    );
    all_up(&s.rempart, "dc-a");
    let c = load_client(Duration::from_secs(15));
    let mut answers = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let r = c
            .get(s.url(&format!("/report/{i}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /report/{i}: {e}"));
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        let origin = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["origin"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "not an echo: {}",
                    body.chars().take(120).collect::<String>()
                )
            });
        answers.push((status, origin, started.elapsed()));
    }
    let ent = ent_status(&s.rempart);
    let stats: Vec<OriginStats> = s.dc_a.iter().map(|o| o.stats()).collect();
    eprintln!(
        "per_try: answers {answers:?}; requests at a1 {}, a2 {}",
        stats[0].path("/report"),
        stats[1].path("/report")
    );
    assert!(
        answers.iter().all(|(st, _, _)| *st == 200),
        "the last try waits the whole response timeout (10 s) for the slow answer: {answers:?}"
    );
    let reached: u64 = stats.iter().map(|st| st.path("/report")).sum();
    assert_eq!(
        reached, 6,
        "each GET was tried on both servers (per_try on the first, the whole timeout on the last)"
    );
    let servers: Vec<Value> = ent["datacenters"]
        .as_array()
        .expect("datacenters")
        .iter()
        .flat_map(|dc| dc["servers"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(servers.len(), 2, "{ent}");
    for srv in &servers {
        assert_eq!(
            srv["ejected"], false,
            "a per_try expiry says a server is slow, not that it failed: {srv}"
        );
        assert_eq!(srv["ejection"]["count"], 0, "{srv}");
        assert_eq!(srv["health"], "up", "{srv}");
    }
    assert_eq!(ent["active_datacenter"], "dc-a", "{ent}");
}
