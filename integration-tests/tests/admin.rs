//! The admin API (SPEC section 7) and metrics (section 8).

use std::time::Duration;

use integration_tests::*;

#[test]
fn healthz_readyz_and_unknown_paths() {
    let s = Stack::start(1, 0, |_| {});
    let (st, body) = s.rempart.admin("/healthz");
    assert_eq!((st, body.trim()), (200, "ok"), "GET /healthz");
    let (st, body) = s.rempart.admin("/readyz");
    assert_eq!(st, 200, "GET /readyz: {body}");
    let (st, body) = s.rempart.admin("/no-such-thing");
    assert_eq!(st, 404, "an unknown admin path: {body}");
}

#[test]
fn status_shows_version_uptime_generation_file_and_upstreams() {
    let s = Stack::start(2, 1, |_| {});
    let v = s.rempart.admin_json("/status");
    assert!(
        v["version"].as_str().is_some_and(|x| !x.is_empty()),
        "status.version: {v}"
    );
    assert!(
        v["uptime_seconds"].is_number(),
        "status.uptime_seconds: {v}"
    );
    assert!(
        v["generation"].as_u64().is_some_and(|g| g >= 1),
        "status.generation: {v}"
    );
    let file = v["config_file"]
        .as_str()
        .unwrap_or_else(|| panic!("status.config_file: {v}"));
    assert!(
        file == s.rempart.config_path().to_str().unwrap() || file.ends_with("rempart.yaml"),
        "status.config_file is {file:?}, the file is {}",
        s.rempart.config_path().display()
    );
    let ent = &v["upstreams"]["ent"];
    let dcs = ent["datacenters"]
        .as_array()
        .unwrap_or_else(|| panic!("status.upstreams.ent.datacenters: {v}"));
    assert_eq!(dcs.len(), 2, "{ent}");
    assert_eq!(dcs[0]["name"], "dc-a");
    assert_eq!(dcs[1]["name"], "dc-b");
    let servers: Vec<&str> = dcs[0]["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("status.upstreams.ent.datacenters[0].servers: {ent}"))
        .iter()
        .map(|srv| srv["address"].as_str().unwrap_or(""))
        .collect();
    let expected: Vec<String> = s.dc_a.iter().map(|o| o.addr().to_string()).collect();
    assert_eq!(servers, expected, "dc-a servers in /status");
    assert_eq!(
        dcs[1]["servers"][0]["address"],
        s.dc_b[0].addr().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_prometheus_text() {
    let s = Stack::start(1, 0, |_| {});
    let c = http_client();
    assert_eq!(c.get(s.url("/m")).send().await.unwrap().status(), 200);
    let r = c
        .get(format!("http://{}/metrics", s.ports.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ctype.starts_with("text/plain"),
        "/metrics Content-Type: {ctype:?}"
    );
    let text = r.text().await.unwrap();
    for name in [
        "rempart_requests_total",
        "rempart_config_generation",
        "rempart_connections_active",
        "rempart_request_duration_seconds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    let generation = text
        .lines()
        .find(|l| l.starts_with("rempart_config_generation"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        generation.is_some_and(|g| g >= 1.0),
        "rempart_config_generation should be >= 1:\n{text}"
    );
    let ok_samples = text
        .lines()
        .filter(|l| {
            l.starts_with("rempart_requests_total{")
                && l.contains("route=\"default\"")
                && l.contains("200")
        })
        .count();
    assert!(
        ok_samples >= 1,
        "no rempart_requests_total sample for route default, status 200:\n{text}"
    );
}

#[test]
fn config_hides_the_admin_token_and_the_token_is_required() {
    let s = Stack::start(1, 0, |y| y.admin.push("token: s3cret-admin-token".into()));
    // The harness sends the token from the YAML.
    let (st, body) = s.rempart.admin("/config");
    assert_eq!(st, 200, "GET /config with the token: {body}");
    assert!(
        !body.contains("s3cret-admin-token"),
        "GET /config shows the admin token: {body}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {body}"));
    assert_eq!(v["admin"]["token"], "***", "admin.token in /config: {body}");

    // Without the token: /healthz only.
    let admin = s.ports.admin;
    let a = http1::get(admin, "/healthz").unwrap();
    assert_eq!(a.status, 200, "/healthz needs no token");
    for path in ["/status", "/config", "/metrics", "/readyz"] {
        let a = http1::get(admin, path).unwrap();
        assert!(
            matches!(a.status, 401 | 403),
            "GET {path} without the token answered {}: {}",
            a.status,
            a.text()
        );
        let a = http1::request(
            admin,
            "GET",
            path,
            &[("Authorization", "Bearer wrong")],
            b"",
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(
            matches!(a.status, 401 | 403),
            "GET {path} with a wrong token answered {}",
            a.status
        );
    }
}

#[test]
fn config_without_token_shows_the_running_configuration() {
    let s = Stack::start(1, 1, |_| {});
    let v = s.rempart.admin_json("/config");
    let text = v.to_string();
    assert!(
        text.contains(&s.dc_a[0].addr().to_string()),
        "/config should show the upstream servers: {text}"
    );
    assert!(text.contains("dc-b"), "/config: {text}");
}
