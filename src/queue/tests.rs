//! The queue on paused tokio time: order, fairness, hold, cancellation, bounds, pause, and the
//! adaptive limit against a simulated upstream.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::admission::{Arrival, Entry, QueueCore, Slot};
use crate::config::{Adaptive, LoginQueue as QueueConfig, TenantSource};
use crate::telemetry::Metrics;

fn config(concurrency: usize) -> QueueConfig {
    QueueConfig {
        name: "logins".into(),
        concurrency,
        adaptive: None,
        tenant: TenantSource::Header("x-ent-uai".into()),
        tenant_weights: BTreeMap::new(),
        hold: Duration::from_secs(15),
        max_waiting: 100_000,
        per_client_waiting: 1_000_000,
        pass: crate::config::PassRule {
            on_status: vec![(200, 399)],
            on_cookie: None,
            ttl: Duration::from_secs(600),
            max_uses_per_minute: 30,
            max_share: 0.5,
        },
        ticket_ttl: Duration::from_secs(120),
        secrets: Vec::new(),
        tenants: None,
        max_tenants_per_client: 1_000_000,
    }
}

fn core(config: &QueueConfig) -> Arc<QueueCore> {
    let metrics = Metrics::new().expect("metrics");
    QueueCore::new(config, &metrics)
}

fn arrival(tenant: &str) -> Arrival {
    Arrival {
        tenant: Arc::from(tenant),
        client: None,
        pass: None,
        ticket_seq: None,
    }
}

fn admitted(entry: Entry) -> Slot {
    match entry {
        Entry::Admitted(slot) => slot,
        _ => panic!("expected an immediate admission"),
    }
}

/// Queue `arrivals` behind one held slot, then let the slot go and record the order in which
/// they are admitted (each admitted request holds its slot 10 ms).
async fn admission_order(core: &Arc<QueueCore>, arrivals: Vec<(String, Arrival)>) -> Vec<String> {
    let blocker = admitted(core.arrive(arrival("blocker")));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (label, a) in arrivals {
        let Entry::Waiting(waiting) = core.arrive(a) else {
            panic!("expected to wait");
        };
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let slot = waiting
                .wait(Duration::from_secs(3600))
                .await
                .expect("admitted");
            order.lock().unwrap().push(label);
            tokio::time::sleep(Duration::from_millis(10)).await;
            slot.complete(Some(Duration::from_millis(10)), None);
        }));
    }
    drop(blocker);
    for t in tasks {
        t.await.expect("task");
    }
    let order = order.lock().unwrap().clone();
    order
}

#[tokio::test(start_paused = true)]
async fn fifo_inside_a_tenant_and_round_robin_across() {
    let core = core(&config(1));
    let mut arrivals = Vec::new();
    for i in 0..6 {
        arrivals.push((format!("big{i}"), arrival("big")));
    }
    for i in 0..3 {
        arrivals.push((format!("small{i}"), arrival("small")));
    }
    let order = admission_order(&core, arrivals).await;
    assert_eq!(
        order,
        ["big0", "small0", "big1", "small1", "big2", "small2", "big3", "big4", "big5"]
    );
}

#[tokio::test(start_paused = true)]
async fn weights_give_shares() {
    let mut cfg = config(1);
    cfg.tenant_weights.insert("lycee".into(), 3);
    let core = core(&cfg);
    let mut arrivals = Vec::new();
    for i in 0..40 {
        arrivals.push((format!("lycee{i}"), arrival("lycee")));
        arrivals.push((format!("ecole{i}"), arrival("ecole")));
    }
    let order = admission_order(&core, arrivals).await;
    let first_40 = &order[..40];
    let lycee = first_40.iter().filter(|l| l.starts_with("lycee")).count();
    assert_eq!(lycee, 30, "weight 3 against 1: {first_40:?}");
}

#[tokio::test(start_paused = true)]
async fn a_small_tenant_arriving_late_is_not_starved() {
    let core = core(&config(1));
    let mut arrivals = Vec::new();
    for i in 0..500 {
        arrivals.push((format!("big{i}"), arrival("big")));
    }
    arrivals.push(("small".into(), arrival("small")));
    let order = admission_order(&core, arrivals).await;
    let at = order.iter().position(|l| l == "small").unwrap();
    assert!(at <= 2, "the small tenant went in at place {at}");
}

#[tokio::test(start_paused = true)]
async fn passes_and_tickets_go_first() {
    let core = core(&config(1));
    let blocker = admitted(core.arrive(arrival("blocker")));
    // An arrival now, then one coming back with a ticket from before it, then a pass.
    let Entry::Waiting(late) = core.arrive(arrival("a")) else {
        panic!()
    };
    let Entry::Waiting(ticket) = core.arrive(Arrival {
        ticket_seq: Some(1),
        ..arrival("a")
    }) else {
        panic!()
    };
    let Entry::Waiting(pass) = core.arrive(Arrival {
        pass: Some(1),
        ..arrival("b")
    }) else {
        panic!()
    };
    drop(blocker);
    let hold = Duration::from_secs(1);
    let first = pass.wait(hold).await.expect("the pass goes first");
    let second = tokio::spawn(ticket.wait(hold));
    let third = tokio::spawn(late.wait(hold));
    tokio::task::yield_now().await;
    drop(first);
    let second = second.await.unwrap().expect("the ticket goes second");
    assert_eq!(core.status(5).waiting, 1);
    drop(second);
    third.await.unwrap().expect("then the later arrival");
}

#[tokio::test(start_paused = true)]
async fn a_poll_gives_its_turn_away_and_keeps_its_ticket() {
    let core = core(&config(1));
    let blocker = admitted(core.arrive(arrival("blocker")));
    // The page polls with a ticket from before `late`; its turn comes first.
    let Entry::Waiting(late) = core.arrive(arrival("a")) else {
        panic!()
    };
    let Entry::Waiting(poll) = core.poll(Arrival {
        ticket_seq: Some(1),
        ..arrival("a")
    }) else {
        panic!()
    };
    drop(blocker);
    let hold = Duration::from_secs(1);
    let turn = poll.wait(hold).await.expect("the poll's turn");
    assert_eq!(core.status(5).admitted, 1, "the blocker only");
    // Released at once: the slot goes to the next in line.
    drop(turn);
    let late = late
        .wait(hold)
        .await
        .expect("late goes in on the poll's slot");
    // The page's next request, with the ticket, still goes before a later arrival.
    let Entry::Waiting(later) = core.arrive(arrival("a")) else {
        panic!()
    };
    let Entry::Waiting(back) = core.arrive(Arrival {
        ticket_seq: Some(1),
        ..arrival("a")
    }) else {
        panic!()
    };
    let later = tokio::spawn(later.wait(hold));
    let back = tokio::spawn(back.wait(hold));
    tokio::task::yield_now().await;
    drop(late);
    let back = back
        .await
        .unwrap()
        .expect("the ticket was not spent by the poll");
    assert_eq!(core.status(5).waiting, 1, "the later arrival still waits");
    drop(back);
    later.await.unwrap().expect("then the later arrival");
    assert_eq!(core.status(5).admitted, 4);

    // A poll when a slot is free: no slot kept, nothing counted, the ticket still good once.
    let free = admitted(core.poll(Arrival {
        ticket_seq: Some(2),
        ..arrival("a")
    }));
    drop(free);
    assert_eq!(core.status(5).admitted, 4);
    let first = admitted(core.arrive(Arrival {
        ticket_seq: Some(2),
        ..arrival("a")
    }));
    assert_eq!(core.status(5).admitted, 5);
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn passes_take_at_most_their_share_while_others_wait() {
    let mut cfg = config(4);
    cfg.pass.max_share = 0.5;
    let core = core(&cfg);
    let blockers: Vec<Slot> = (0..4)
        .map(|_| admitted(core.arrive(arrival("x"))))
        .collect();
    let mut waiting = Vec::new();
    for i in 0..6 {
        let Entry::Waiting(w) = core.arrive(Arrival {
            pass: Some(100 + i),
            ..arrival("p")
        }) else {
            panic!()
        };
        waiting.push(("pass", w));
    }
    for _ in 0..6 {
        let Entry::Waiting(w) = core.arrive(arrival("school")) else {
            panic!()
        };
        waiting.push(("school", w));
    }
    drop(blockers);
    // Four slots free: two for passes (half of 4), two for the school, though passes come
    // first in line.
    let mut admitted_now = Vec::new();
    let mut still = Vec::new();
    for (who, w) in waiting {
        match tokio::time::timeout(Duration::from_millis(1), w.wait(Duration::from_secs(60))).await
        {
            Ok(Ok(slot)) => admitted_now.push((who, slot)),
            _ => still.push(who),
        }
    }
    let passes = admitted_now.iter().filter(|(w, _)| *w == "pass").count();
    assert_eq!((passes, admitted_now.len()), (2, 4), "{still:?}");
    assert!(admitted_now
        .iter()
        .filter(|(w, _)| *w == "pass")
        .all(|(_, s)| s.with_pass()));
}

#[tokio::test(start_paused = true)]
async fn passes_alone_may_use_every_slot() {
    let core = core(&config(3));
    let slots: Vec<Slot> = (0..3)
        .map(|i| {
            admitted(core.arrive(Arrival {
                pass: Some(i),
                ..arrival("p")
            }))
        })
        .collect();
    assert!(
        slots.iter().all(Slot::with_pass),
        "nobody else waits: no cap"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pass_used_too_often_queues_as_anyone() {
    let mut cfg = config(1);
    cfg.pass.max_uses_per_minute = 3;
    let core = core(&cfg);
    let _blocker = admitted(core.arrive(arrival("x")));
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(core.arrive(Arrival {
            pass: Some(42),
            ..arrival("a")
        }));
    }
    let st = core.status(5);
    assert_eq!((st.passes_waiting, st.waiting), (3, 5));
}

#[tokio::test(start_paused = true)]
async fn a_ticket_holds_one_place_and_is_spent_once_admitted() {
    let core = core(&config(1));
    let order = admission_order(
        &core,
        vec![
            ("fresh".into(), arrival("a")),
            (
                "ticket".into(),
                Arrival {
                    ticket_seq: Some(1),
                    ..arrival("a")
                },
            ),
            (
                "same ticket".into(),
                Arrival {
                    ticket_seq: Some(1),
                    ..arrival("a")
                },
            ),
        ],
    )
    .await;
    assert_eq!(order, vec!["ticket", "fresh", "same ticket"]);
    // Admitted once, the ticket is spent: brought back, it is an arrival like any other.
    let order = admission_order(
        &core,
        vec![
            ("fresh".into(), arrival("a")),
            (
                "replayed".into(),
                Arrival {
                    ticket_seq: Some(1),
                    ..arrival("a")
                },
            ),
        ],
    )
    .await;
    assert_eq!(order, vec!["fresh", "replayed"]);
}

#[tokio::test(start_paused = true)]
async fn one_client_opens_at_most_its_share_of_tenants() {
    let mut cfg = config(1);
    cfg.max_tenants_per_client = 2;
    let core = core(&cfg);
    let _blocker = admitted(core.arrive(arrival("x")));
    let ip: IpAddr = "10.0.0.9".parse().unwrap();
    let mut held = Vec::new();
    for i in 0..6 {
        held.push(core.arrive(Arrival {
            client: Some(ip),
            ..arrival(&format!("invented{i}"))
        }));
    }
    let st = core.status(10);
    let mut tenants: Vec<(String, usize)> = st
        .top_tenants
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .collect();
    tenants.sort();
    assert_eq!(
        tenants,
        vec![
            ("invented0".to_string(), 1),
            ("invented1".to_string(), 1),
            ("unknown".to_string(), 4)
        ]
    );
    // Once its places are gone, the client may name others.
    drop(held);
    assert_eq!(core.status(5).waiting, 0);
    let _again = core.arrive(Arrival {
        client: Some(ip),
        ..arrival("invented5")
    });
    assert_eq!(core.status(5).top_tenants[0].0.as_ref(), "invented5");
}

#[tokio::test(start_paused = true)]
async fn hold_runs_out_with_a_place_and_leaves_the_line() {
    let core = core(&config(1));
    let _blocker = admitted(core.arrive(arrival("x")));
    let Entry::Waiting(first) = core.arrive(arrival("a")) else {
        panic!()
    };
    let Entry::Waiting(second) = core.arrive(arrival("a")) else {
        panic!()
    };
    let first = tokio::spawn(first.wait(Duration::from_secs(5)));
    let expired = second
        .wait(Duration::from_secs(2))
        .await
        .err()
        .expect("hold");
    assert_eq!(expired.position, 2);
    assert!(expired.eta_seconds >= 1);
    assert_eq!(core.status(5).waiting, 1);
    assert_eq!(core.status(5).timed_out, 1);
    assert!(first.await.unwrap().is_err());
    assert_eq!(core.status(5).waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn bounds_answer_full_at_once_and_a_leaver_frees_its_place() {
    let mut cfg = config(1);
    cfg.max_waiting = 3;
    cfg.per_client_waiting = 2;
    let core = core(&cfg);
    let _blocker = admitted(core.arrive(arrival("x")));
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let from_ip = || Arrival {
        client: Some(ip),
        ..arrival("a")
    };
    let w1 = core.arrive(from_ip());
    let _w2 = core.arrive(from_ip());
    assert!(
        matches!(core.arrive(from_ip()), Entry::Full),
        "per_client_waiting"
    );
    let _w3 = core.arrive(arrival("b"));
    assert!(
        matches!(core.arrive(arrival("c")), Entry::Full),
        "max_waiting"
    );
    assert_eq!(core.status(5).queue_full, 2);
    // The first client gives up: its place is free at once.
    drop(w1);
    assert_eq!(core.status(5).waiting, 2);
    assert_eq!(core.status(5).abandoned, 1);
    assert!(matches!(core.arrive(from_ip()), Entry::Waiting(_)));
}

#[tokio::test(start_paused = true)]
async fn pause_holds_everybody_and_resume_admits() {
    let core = core(&config(4));
    core.set_paused(true);
    let Entry::Waiting(w) = core.arrive(arrival("a")) else {
        panic!("paused: nobody is admitted")
    };
    let waiter = tokio::spawn(w.wait(Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(core.status(5).in_flight, 0);
    core.set_paused(false);
    waiter.await.unwrap().expect("admitted on resume");
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_line_and_applies_the_new_limit() {
    let core = core(&config(1));
    let _blocker = admitted(core.arrive(arrival("x")));
    let Entry::Waiting(w) = core.arrive(arrival("a")) else {
        panic!()
    };
    let waiter = tokio::spawn(w.wait(Duration::from_secs(60)));
    tokio::task::yield_now().await;
    core.configure(&config(2));
    let _slot = waiter
        .await
        .unwrap()
        .expect("admitted under the raised limit");
    assert_eq!(core.status(5).in_flight, 2);
}

/// Many clients loop on a simulated upstream whose latency the test sets.
async fn run_load(
    core: &Arc<QueueCore>,
    latency_ms: &Arc<AtomicU64>,
    clients: usize,
    dur: Duration,
) {
    let deadline = tokio::time::Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let core = core.clone();
        let latency_ms = latency_ms.clone();
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let slot = match core.arrive(arrival("t")) {
                    Entry::Admitted(slot) => slot,
                    Entry::Waiting(w) => match w.wait(Duration::from_secs(30)).await {
                        Ok(slot) => slot,
                        Err(_) => continue,
                    },
                    Entry::Full => panic!("unbounded test queue is full"),
                };
                let latency = Duration::from_millis(latency_ms.load(Ordering::Relaxed));
                tokio::time::sleep(latency).await;
                slot.complete(Some(latency), None);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
}

#[tokio::test(start_paused = true)]
async fn adaptive_limit_falls_when_latency_doubles_and_recovers() {
    let mut cfg = config(16);
    cfg.adaptive = Some(Adaptive { min: 4, max: 128 });
    let core = core(&cfg);
    let latency = Arc::new(AtomicU64::new(100));

    run_load(&core, &latency, 300, Duration::from_secs(10)).await;
    let steady = core.limit();
    assert_eq!(steady, 128, "grows to max while latency is steady");

    latency.store(200, Ordering::Relaxed);
    run_load(&core, &latency, 300, Duration::from_secs(3)).await;
    let loaded = core.limit();
    assert!(
        loaded * 2 <= steady,
        "the limit falls when latency doubles: {steady} -> {loaded}"
    );

    latency.store(100, Ordering::Relaxed);
    run_load(&core, &latency, 300, Duration::from_secs(10)).await;
    let recovered = core.limit();
    assert!(
        recovered >= steady * 3 / 4,
        "the limit recovers when latency comes back: {loaded} -> {recovered}"
    );
}

#[test]
fn tenant_sources() {
    use super::tenant_from;
    use pingora::http::RequestHeader;
    let mut req =
        RequestHeader::build("GET", b"/uai/0123456A/login?etab=0999999Z&x=1", None).unwrap();
    req.insert_header("x-ent-uai", "0751234B").unwrap();
    req.insert_header("cookie", "a=1; etab=0888888Y").unwrap();
    let host = "lycee.ent.example.test";
    assert_eq!(tenant_from(&TenantSource::Host, &req, host), host);
    assert_eq!(
        tenant_from(&TenantSource::Header("x-ent-uai".into()), &req, host),
        "0751234B"
    );
    assert_eq!(
        tenant_from(&TenantSource::Cookie("etab".into()), &req, host),
        "0888888Y"
    );
    assert_eq!(
        tenant_from(&TenantSource::Query("etab".into()), &req, host),
        "0999999Z"
    );
    assert_eq!(
        tenant_from(&TenantSource::PathSegment(2), &req, host),
        "0123456A"
    );
    assert_eq!(
        tenant_from(&TenantSource::PathSegment(9), &req, host),
        "default"
    );
    assert_eq!(
        tenant_from(&TenantSource::Header("missing".into()), &req, host),
        "default"
    );
    req.insert_header("x-ent-uai", "x".repeat(65)).unwrap();
    assert_eq!(
        tenant_from(&TenantSource::Header("x-ent-uai".into()), &req, host),
        "default",
        "too long"
    );
}
