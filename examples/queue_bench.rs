//! Benchmark of the login queue alone (part of `make bench`): how many admissions per second
//! one queue sustains with 100,000 waiters across 1,000 tenants, and the memory per waiter.
//!
//! `cargo run --release --example queue_bench [-- WAITERS TENANTS]`
//!
//! 1. Fill the line behind one held slot and measure the resident memory it took.
//! 2. Give every waiter a task that awaits its slot and releases it at once; release the held
//!    slot and time until the whole line went through (each admission wakes the next task).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rempart::config::{LoginQueue as QueueConfig, TenantSource};
use rempart::queue::{Arrival, Entry, QueueCore};
use rempart::telemetry::Metrics;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let waiters = args.first().copied().unwrap_or(100_000);
    let tenants = args.get(1).copied().unwrap_or(1_000).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(waiters, tenants));
}

async fn run(waiters: usize, tenants: usize) {
    let config = QueueConfig {
        name: "bench".into(),
        concurrency: 1,
        adaptive: None,
        tenant: TenantSource::Header("x-ent-uai".into()),
        tenant_weights: BTreeMap::new(),
        hold: Duration::from_secs(3600),
        max_waiting: waiters + 1,
        per_client_waiting: waiters + 1,
        pass: rempart::config::PassRule {
            on_status: vec![(200, 399)],
            on_cookie: None,
            ttl: Duration::from_secs(600),
            max_uses_per_minute: 30,
            max_share: 0.5,
        },
        ticket_ttl: Duration::from_secs(120),
        secrets: Vec::new(),
        tenants: None,
        max_tenants_per_client: 2,
    };
    let metrics = Metrics::new().expect("metrics");
    let core = QueueCore::new(&config, &metrics);
    let names: Vec<Arc<str>> = (0..tenants)
        .map(|t| Arc::from(format!("{:07}X", t).as_str()))
        .collect();
    let blocker = match core.arrive(Arrival {
        tenant: names[0].clone(),
        client: None,
        pass: None,
        ticket_seq: None,
    }) {
        Entry::Admitted(slot) => slot,
        _ => panic!("the first arrival is admitted"),
    };

    let before = rss_bytes();
    let started = Instant::now();
    let mut line = Vec::with_capacity(waiters);
    for i in 0..waiters {
        let entry = core.arrive(Arrival {
            tenant: names[i % tenants].clone(),
            client: Some(std::net::IpAddr::from([
                10,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ])),
            pass: None,
            ticket_seq: None,
        });
        match entry {
            Entry::Waiting(w) => line.push(w),
            _ => panic!("expected to wait"),
        }
    }
    let arrive_secs = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let per_waiter = after.saturating_sub(before) as f64 / waiters as f64;

    let mut tasks = Vec::with_capacity(waiters);
    for w in line {
        tasks.push(tokio::spawn(async move {
            if let Ok(slot) = w.wait(Duration::from_secs(3600)).await {
                slot.complete(None, None);
            }
        }));
    }
    tokio::task::yield_now().await;
    let started = Instant::now();
    drop(blocker);
    for t in tasks {
        let _ = t.await;
    }
    let admit_secs = started.elapsed().as_secs_f64();
    let status = core.status(1);
    assert_eq!(status.waiting, 0);
    println!(
        "| login queue, {waiters} waiters across {tenants} tenants | {:.0} admissions/s (each wakes a task) | {:.0} arrivals/s | {:.0} bytes per waiter (line and handle, RSS) |",
        waiters as f64 / admit_secs,
        waiters as f64 / arrive_secs,
        per_waiter
    );
}
