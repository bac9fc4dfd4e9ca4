//! Unit tests of server choice, datacenter evaluation and health checking over paused time.

use super::health::Probe;
use super::*;
use async_trait::async_trait;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

fn config(dcs: &[(&str, &[&str])], when_all_down: config::WhenAllDown) -> config::Upstream {
    config::Upstream {
        name: "ent".into(),
        datacenters: dcs
            .iter()
            .map(|(name, servers)| config::Datacenter {
                name: (*name).into(),
                servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
                max_in_flight: vec![None; servers.len()],
            })
            .collect(),
        min_healthy: config::MinHealthy::Count(1),
        health_check: config::HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        },
        outlier: config::Outlier {
            consecutive_failures: 3,
            eject_for: Duration::from_secs(10),
        },
        failback_after: Duration::from_secs(30),
        when_all_down,
        timeouts: config::UpstreamTimeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            per_try: None,
            unacked: Some(Duration::from_secs(2)),
        },
        retries: config::Retries {
            attempts: 2,
            budget: 0.2,
        },
        on_down: config::OnDown {
            cut_after: Duration::from_secs(1),
        },
    }
}

fn upstream(dcs: &[(&str, &[&str])], when_all_down: config::WhenAllDown) -> Arc<Upstream> {
    let metrics = Metrics::new().unwrap();
    let registry = Registry::new();
    Arc::new(Upstream::new(
        &config(dcs, when_all_down),
        &metrics,
        &registry,
        &Default::default(),
    ))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn all_up(up: &Upstream) {
    for dc in &up.datacenters {
        for server in &dc.servers {
            server.state.health.observe_live_success();
        }
    }
    up.evaluate();
}

fn picked(up: &Upstream, tried: &[SocketAddr]) -> Option<SocketAddr> {
    match up.pick(tried, up.now_ms()) {
        Choice::Server(pick) => Some(pick.server.address),
        _ => None,
    }
}

const TWO_DCS: &[(&str, &[&str])] = &[
    ("dc-a", &["127.0.0.1:1", "127.0.0.1:2"]),
    ("dc-b", &["127.0.0.1:3"]),
];

#[tokio::test(start_paused = true)]
async fn unknown_servers_get_no_traffic() {
    let up = upstream(TWO_DCS, config::WhenAllDown::Maintenance);
    up.evaluate();
    assert!(up.all_down());
    assert!(matches!(up.pick(&[], up.now_ms()), Choice::AllDown));

    let try_all = upstream(TWO_DCS, config::WhenAllDown::TryAll);
    try_all.evaluate();
    assert_eq!(
        picked(&try_all, &[]).map(|a| a.port()).map(|p| p <= 2),
        Some(true)
    );
    let every = [addr("127.0.0.1:1"), addr("127.0.0.1:2")];
    assert_eq!(picked(&try_all, &every), Some(addr("127.0.0.1:3")));
}

#[tokio::test(start_paused = true)]
async fn at_start_a_backup_waits_for_the_first_checks_of_a_better_datacenter() {
    let up = upstream(TWO_DCS, config::WhenAllDown::Maintenance);
    let b = &up.datacenters[1].servers[0].state;
    b.health.observe_check(true, 2, 2);
    up.evaluate();
    assert_eq!(up.active_datacenter(), None, "dc-a not checked yet");
    let a1 = &up.datacenters[0].servers[0].state;
    a1.health.observe_check(true, 2, 2);
    up.evaluate();
    assert_eq!(up.active_datacenter(), Some(0));

    // A better datacenter whose first check failed does not hold the traffic back.
    let up = upstream(TWO_DCS, config::WhenAllDown::Maintenance);
    up.datacenters[1].servers[0]
        .state
        .health
        .observe_check(true, 2, 2);
    for server in &up.datacenters[0].servers {
        server.state.health.observe_check(false, 2, 2);
    }
    up.evaluate();
    assert_eq!(up.active_datacenter(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn same_datacenter_first_then_the_next() {
    let up = upstream(TWO_DCS, config::WhenAllDown::Maintenance);
    all_up(&up);
    assert_eq!(up.active_datacenter(), Some(0));
    let first = picked(&up, &[]).unwrap();
    let second = picked(&up, &[first]).unwrap();
    assert_ne!(first, second);
    assert!(second.port() <= 2, "retry stays in dc-a first");
    assert_eq!(picked(&up, &[first, second]), Some(addr("127.0.0.1:3")));
    assert!(matches!(
        up.pick(&[first, second, addr("127.0.0.1:3")], up.now_ms()),
        Choice::Exhausted
    ));
    // Round robin over dc-a.
    let a = picked(&up, &[]).unwrap();
    let b = picked(&up, &[]).unwrap();
    assert_ne!(a, b);
}

#[tokio::test(start_paused = true)]
async fn ejections_move_traffic_and_end_on_their_own() {
    let up = upstream(TWO_DCS, config::WhenAllDown::Maintenance);
    all_up(&up);
    for server in &up.datacenters[0].servers {
        for _ in 0..3 {
            up.observe(0, server, Outcome::Http5xx, Some(503), true);
        }
    }
    assert_eq!(up.active_datacenter(), Some(1));
    assert_eq!(picked(&up, &[]), Some(addr("127.0.0.1:3")));

    // A 500 is the application's answer, not an outage: no ejection.
    let b = &up.datacenters[1].servers[0];
    for _ in 0..5 {
        up.observe(1, b, Outcome::Http5xx, Some(500), true);
    }
    assert!(!b.state.ejection.is_ejected(up.now_ms()));
    // A client that went away is not the server's fault.
    for _ in 0..5 {
        up.observe(1, b, Outcome::Error, None, false);
    }
    assert!(!b.state.ejection.is_ejected(up.now_ms()));

    // The ejection ends after eject_for; dc-a was seen down, so it waits failback_after.
    tokio::time::advance(Duration::from_secs(10)).await;
    up.evaluate();
    assert_eq!(up.active_datacenter(), Some(1));
    assert_eq!(
        up.failback_remaining(0, up.now_ms()),
        Some(Duration::from_secs(30))
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    up.evaluate();
    assert_eq!(up.active_datacenter(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn failovers_failbacks_and_outages_are_marked_for_the_history() {
    let events = Arc::new(crate::history::Events::default());
    let up = Upstream::new(
        &config(TWO_DCS, config::WhenAllDown::Maintenance),
        &Metrics::new().unwrap(),
        &Registry::new(),
        &events,
    );
    all_up(&up);
    up.evaluate();
    for server in &up.datacenters[0].servers {
        for _ in 0..3 {
            up.observe(0, server, Outcome::Http5xx, Some(503), true);
        }
    }
    for _ in 0..3 {
        up.observe(
            1,
            &up.datacenters[1].servers[0],
            Outcome::Http5xx,
            Some(503),
            true,
        );
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    up.evaluate();
    // dc-a fails again, then comes back for good: a failover and, after failback_after, a
    // failback.
    for server in &up.datacenters[0].servers {
        for _ in 0..3 {
            up.observe(0, server, Outcome::Http5xx, Some(503), true);
        }
    }
    tokio::time::advance(Duration::from_secs(20)).await;
    up.evaluate();
    tokio::time::advance(Duration::from_secs(30)).await;
    up.evaluate();
    let marked: Vec<(&str, String)> = events
        .list()
        .iter()
        .map(|e| (e.kind.as_str(), e.detail.to_string()))
        .collect();
    assert_eq!(
        marked,
        [
            ("failover", "ent: dc-a → dc-b"),
            ("all_down", "ent: every datacenter is down"),
            ("recovered", "ent: dc-b → dc-a"),
            ("failover", "ent: dc-a → dc-b"),
            ("failback", "ent: dc-b → dc-a"),
        ]
        .map(|(k, d)| (k, d.to_string()))
        .to_vec(),
        "the first activation at start is not an event"
    );
}

#[tokio::test(start_paused = true)]
async fn drains_take_servers_and_datacenters_out() {
    let up = upstream(TWO_DCS, config::WhenAllDown::TryAll);
    all_up(&up);
    up.datacenters[0].servers[0]
        .state
        .drained
        .store(true, Ordering::Relaxed);
    for _ in 0..4 {
        assert_eq!(picked(&up, &[]), Some(addr("127.0.0.1:2")));
    }
    up.datacenters[0]
        .state
        .drained
        .store(true, Ordering::Relaxed);
    up.evaluate();
    assert_eq!(up.active_datacenter(), Some(1));
    assert_eq!(picked(&up, &[]), Some(addr("127.0.0.1:3")));
    // Everything drained: nothing to try, even with try_all.
    up.datacenters[1]
        .state
        .drained
        .store(true, Ordering::Relaxed);
    up.datacenters[1].servers[0]
        .state
        .drained
        .store(true, Ordering::Relaxed);
    up.evaluate();
    assert!(up.all_down());
    assert_eq!(picked(&up, &[]), Some(addr("127.0.0.1:2")));
    up.datacenters[0].servers[1]
        .state
        .drained
        .store(true, Ordering::Relaxed);
    assert!(matches!(up.pick(&[], up.now_ms()), Choice::Exhausted));
}

#[tokio::test(start_paused = true)]
async fn min_healthy_share() {
    let mut cfg = config(
        &[
            ("dc-a", &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]),
            ("dc-b", &["127.0.0.1:4"]),
        ],
        config::WhenAllDown::Maintenance,
    );
    cfg.min_healthy = config::MinHealthy::Share(0.5);
    let up = Upstream::new(
        &cfg,
        &Metrics::new().unwrap(),
        &Registry::new(),
        &Default::default(),
    );
    assert_eq!(up.datacenters[0].min_healthy, 2);
    all_up(&up);
    let a = &up.datacenters[0].servers;
    for _ in 0..3 {
        up.observe(0, &a[0], Outcome::ConnectError, None, true);
    }
    up.evaluate();
    assert_eq!(up.active_datacenter(), Some(0));
    for _ in 0..3 {
        up.observe(0, &a[1], Outcome::ConnectError, None, true);
    }
    assert_eq!(up.active_datacenter(), Some(1));
}

/// A probe whose answer the test sets, counting the checks it receives.
struct FakeProbe {
    healthy: AtomicBool,
    checks: Mutex<Vec<SocketAddr>>,
}

#[async_trait]
impl Probe for FakeProbe {
    async fn check(&self, address: SocketAddr, _check: &config::HealthCheck) -> bool {
        self.checks.lock().unwrap().push(address);
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Drive the checker as the background service does, `steps` ticks of 50 ms.
async fn tick(up: &Arc<Upstream>, probe: &Arc<dyn Probe>, steps: u32) {
    for _ in 0..steps {
        health::run_due_checks(up, probe);
        up.evaluate();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn checks_bring_servers_up_then_down_after_fall_intervals() {
    let up = upstream(
        &[("dc-a", &["127.0.0.1:1"])],
        config::WhenAllDown::Maintenance,
    );
    let fake = Arc::new(FakeProbe {
        healthy: AtomicBool::new(true),
        checks: Mutex::new(Vec::new()),
    });
    let probe: Arc<dyn Probe> = fake.clone();
    // Unknown until the first check, which comes within the first 100 ms (plus a tick).
    assert!(up.all_down());
    tick(&up, &probe, 4).await;
    assert_eq!(up.active_datacenter(), Some(0));
    assert_eq!(fake.checks.lock().unwrap().len(), 1);

    // Checks every interval ± 10 %: about 10 in 10 s.
    tick(&up, &probe, 200).await;
    let checks = fake.checks.lock().unwrap().len();
    assert!((9..=13).contains(&checks), "{checks} checks in 10 s");

    // Failing: down after `fall` (2) checks, i.e. within 2 intervals + jitter.
    fake.healthy.store(false, Ordering::Relaxed);
    tick(&up, &probe, 10).await;
    assert_eq!(up.datacenters[0].servers[0].state.health.get(), Health::Up);
    tick(&up, &probe, 36).await;
    assert_eq!(
        up.datacenters[0].servers[0].state.health.get(),
        Health::Down
    );
    assert!(up.all_down());

    // Back: up after `rise` (2) passes.
    fake.healthy.store(true, Ordering::Relaxed);
    tick(&up, &probe, 46).await;
    assert_eq!(up.datacenters[0].servers[0].state.health.get(), Health::Up);
    assert_eq!(up.active_datacenter(), Some(0));
}
