//! The shield across reloads (SPEC section 2): a limit whose definition did not change keeps its
//! buckets, a changed limit starts fresh, and bans survive.

use std::net::IpAddr;
use std::time::Duration;

use integration_tests::*;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .http1_only()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

const ROUTES: &str =
    "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n    limits: [per_ip]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_bans_survive_a_reload_of_unchanged_limits() {
    let limits = |rate: &str| {
        format!(
            "limits:\n  per_ip: {{ key: client_ip, rate: {rate}, burst: 2 }}\nshield:\n  ban: {{ after: 3, within: 1m, for: 10m }}\n"
        )
    };
    let mut s = Stack::start(1, 0, |y| {
        y.routes = ROUTES.into();
        y.extra = limits("1/h");
    });
    let a = client_from("127.0.7.1");
    let b = client_from("127.0.7.2");
    let url = s.url("/r");
    let get = |c: &reqwest::Client| c.get(&url).send();
    // a: its two requests, then refused. b: refused three times, banned.
    for _ in 0..2 {
        assert_eq!(get(&a).await.unwrap().status(), 200);
    }
    assert_eq!(get(&a).await.unwrap().status(), 429);
    for _ in 0..2 {
        assert_eq!(get(&b).await.unwrap().status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&b).await.unwrap().status(), 429);
    }
    assert_eq!(get(&b).await.unwrap().status(), 403);

    // Reload with the same limit (and another change elsewhere in the file).
    let yaml = s.yaml.replace("grace_period: 5s", "grace_period: 6s");
    assert_ne!(yaml, s.yaml);
    s.rempart.write_config(&yaml);
    let (code, body) = s.rempart.admin_post("/reload");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        get(&a).await.unwrap().status(),
        429,
        "an unchanged limit keeps its buckets across a reload"
    );
    assert_eq!(
        get(&b).await.unwrap().status(),
        403,
        "bans survive a reload"
    );

    // Change the limit's rate: fresh buckets.
    s.rempart
        .write_config(&yaml.replace("rate: 1/h", "rate: 2/h"));
    let (code, body) = s.rempart.admin_post("/reload");
    assert_eq!(code, 200, "{body}");
    let status = poll_until_async(Duration::from_secs(3), || async {
        let st = get(&a).await.ok()?.status();
        (st == 200).then_some(st)
    })
    .await;
    assert!(
        status.is_some(),
        "a changed limit starts with fresh buckets"
    );
    assert_eq!(
        get(&b).await.unwrap().status(),
        403,
        "bans survive any reload"
    );
}
