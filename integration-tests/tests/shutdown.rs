//! Signals (SPEC section 1): SIGTERM stops accepting and lets requests in flight finish within
//! server.grace_period, then exits 0; SIGINT stops at once.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration_tests::*;

/// Wait until the origin has `n` requests in flight (bounded).
fn wait_in_flight(o: &Origin, n: u64) {
    poll_until(Duration::from_secs(5), || {
        (o.stats().in_flight >= n).then_some(())
    })
    .unwrap_or_else(|| panic!("the slow request never reached the origin: {:?}", o.stats()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut s = Stack::start(1, 0, |y| y.grace_period = "3s".into());
    let c = http_client();
    let url = s.url("/slow?ms=1500");
    let inflight = tokio::spawn(async move {
        let r = c.get(url).send().await?;
        let st = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((st, body))
    });
    wait_in_flight(&s.dc_a[0], 1);
    let t = Instant::now();
    s.rempart.signal(libc::SIGTERM);

    let (status, body) = inflight.await.unwrap().unwrap_or_else(|e| {
        panic!(
            "the request in flight at SIGTERM failed: {e:?}\nrempart stderr:\n{}",
            s.rempart.stderr()
        )
    });
    assert_eq!(
        status, 200,
        "the request in flight at SIGTERM must finish normally: {body}"
    );
    assert!(body.contains("\"/slow\""), "{body}");

    let st = s
        .rempart
        .wait_exit(Duration::from_secs(3 + 4))
        .unwrap_or_else(|| {
            panic!(
                "rempart still running {:?} after SIGTERM (grace_period 3s)\nstderr:\n{}",
                t.elapsed(),
                s.rempart.stderr()
            )
        });
    assert_eq!(
        st.code(),
        Some(0),
        "exit after SIGTERM: {}\nstderr:\n{}",
        describe_exit(&st),
        s.rempart.stderr()
    );
    assert!(
        TcpStream::connect_timeout(&s.ports.http, Duration::from_secs(1)).is_err(),
        "after exit, {} still accepts connections",
        s.ports.http
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_new_connections_while_draining() {
    let mut s = Stack::start(1, 0, |y| y.grace_period = "5s".into());
    let c = http_client();
    let url = s.url("/slow?ms=2500");
    let inflight = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status()) });
    wait_in_flight(&s.dc_a[0], 1);
    let t = Instant::now();
    s.rempart.signal(libc::SIGTERM);

    // The signal is handled asynchronously: wait (bounded) until the process says it is
    // draining, by /readyz not answering 200 any more (or the admin port closing).
    let admin = s.ports.admin;
    let draining = poll_until(Duration::from_secs(2), || {
        match http1::request(
            admin,
            "GET",
            "/readyz",
            &[],
            b"",
            Duration::from_millis(500),
        ) {
            Ok(a) if a.status == 200 => None,
            _ => Some(()),
        }
    });
    assert!(
        draining.is_some(),
        "2 s after SIGTERM, GET /readyz still answers 200 (it must say 503 while draining)"
    );

    // Within 2 s of SIGTERM the listener stops accepting: a new connection is refused (or
    // closed without an answer). The switch is asynchronous, so poll for it...
    let http = s.ports.http;
    let served = || {
        matches!(
            http1::request(http, "GET", "/new-after-sigterm", &[], b"", Duration::from_millis(500)),
            Ok(a) if a.status == 200
        )
    };
    let stopped = poll_until(Duration::from_secs(2), || (!served()).then(|| t.elapsed()));
    let Some(stopped_after) = stopped else {
        panic!("2 s after SIGTERM, new connections to {http} are still served (SIGTERM must stop accepting)");
    };
    // ...then it must stay so for the rest of the drain.
    for _ in 0..5 {
        assert!(
            !served(),
            "new connections to {http} were refused {stopped_after:?} after SIGTERM, then served again"
        );
    }
    let st = inflight.await.unwrap().expect("the request in flight");
    assert_eq!(st, 200, "the request in flight at SIGTERM");
    assert!(
        s.rempart.wait_exit(Duration::from_secs(5 + 4)).is_some(),
        "rempart did not exit after the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once() {
    let mut s = Stack::start(1, 0, |y| y.grace_period = "10s".into());
    let c = http_client();
    let url = s.url("/slow?ms=8000");
    let _inflight = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status()) });
    wait_in_flight(&s.dc_a[0], 1);
    let t = Instant::now();
    s.rempart.signal(libc::SIGINT);
    assert!(
        s.rempart.wait_exit(Duration::from_secs(3)).is_some(),
        "rempart still running 3 s after SIGINT with a request in flight (grace_period 10s must not apply to SIGINT)"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}
