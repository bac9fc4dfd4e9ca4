//! The request path (SPEC section 3): routing, round robin in the active datacenter, Rempart's
//! own answers (404 no_route, 502 upstream_error, 504 upstream_timeout), forwarded and hop-by-hop
//! headers, and the access log (SPEC section 8).

use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::Value;

/// GET through the proxy and return the origin's echo (panics unless 200 JSON).
async fn echo(c: &reqwest::Client, url: &str) -> Value {
    let r = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "GET {url} answered {status}: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {url}: not the origin's echo ({e}): {body}"))
}

/// Check one of Rempart's own answers: status, JSON body with Accept: application/json, text
/// naming the reason otherwise.
async fn assert_own_answer(
    c: &reqwest::Client,
    req: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    status: u16,
    reason: &str,
) {
    let r = req(c)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let got = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    assert_eq!(
        got, status,
        "expected {status} {reason}, the client got {got}: {body}"
    );
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("with Accept: application/json the {status} body should be JSON ({e}); got {ctype:?}: {body}"));
    assert_eq!(v["status"], status, "JSON body: {body}");
    assert_eq!(v["reason"], reason, "JSON body: {body}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "JSON body needs a message: {body}"
    );
    assert!(
        ctype.starts_with("application/json"),
        "Content-Type of the JSON answer: {ctype:?}"
    );

    let r = req(c)
        .header("Accept", "text/html,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), status);
    let body = r.text().await.unwrap();
    assert!(
        body.len() < 4096,
        "Rempart's own answer should be short, got {} bytes",
        body.len()
    );
    assert!(
        body.contains(reason) || body.to_lowercase().contains(&reason.replace('_', " ")),
        "the text answer should name the reason {reason}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_across_the_servers_of_the_first_datacenter() {
    let s = Stack::start(2, 1, |_| {});
    let c = http_client_no_reuse();
    let mut names = Vec::new();
    for i in 0..20 {
        let v = echo(&c, &s.url(&format!("/rr/{i}"))).await;
        names.push(v["origin"].as_str().unwrap().to_string());
    }
    let a1 = names.iter().filter(|n| *n == "a1").count();
    let a2 = names.iter().filter(|n| *n == "a2").count();
    let b1 = names.iter().filter(|n| *n == "b1").count();
    assert_eq!(
        b1, 0,
        "dc-b is the backup datacenter and must get nothing while dc-a is up: {names:?}"
    );
    assert!(
        a1 >= 6 && a2 >= 6,
        "20 requests should be spread over a1 and a2 (round robin): {names:?}"
    );
    let (a, b) = s.served();
    assert_eq!(
        a.iter().sum::<u64>(),
        20,
        "each request reaches an origin exactly once: {a:?}"
    );
    assert_eq!(b, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_host_path_and_method_first_match_wins() {
    let s = Stack::start(1, 0, |y| {
        y.routes = concat!(
            "  - name: app\n",
            "    match: { host: app.ent.example.test, path_prefix: / }\n",
            "    upstream: ent\n",
            "  - name: api-read\n",
            "    match: { path_prefix: /api, methods: [GET, HEAD] }\n",
            "    upstream: ent\n",
            "  - name: ready\n",
            "    match: { path_prefix: /__harness }\n",
            "    upstream: ent\n",
        )
        .into();
    });
    let c = http_client();
    let send = |method: reqwest::Method, host: &'static str, path: &'static str| {
        let url = s.url(path);
        let c = c.clone();
        async move {
            c.request(method, url)
                .header("Host", host)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        send(reqwest::Method::POST, "app.ent.example.test", "/x").await,
        200,
        "host route"
    );
    assert_eq!(
        send(reqwest::Method::GET, "APP.ent.example.test:8080", "/x").await,
        200,
        "host match ignores case and port"
    );
    assert_eq!(
        send(reqwest::Method::GET, "other.example", "/api/users").await,
        200,
        "path route"
    );
    assert_eq!(
        send(reqwest::Method::POST, "other.example", "/api/users").await,
        404,
        "POST is not in the api-read methods"
    );
    assert_eq!(
        send(reqwest::Method::GET, "other.example", "/elsewhere").await,
        404,
        "no route matches"
    );

    let log = s
        .rempart
        .wait_access_log(Duration::from_secs(3), |l| {
            l["path"] == "/api/users" && l["method"] == "GET"
        })
        .expect("an access log line for GET /api/users");
    assert_eq!(log["route"], "api-read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_in_json_or_text_and_logged() {
    let s = Stack::start(1, 0, |y| {
        y.routes =
            "  - name: only\n    match: { path_prefix: /__harness }\n    upstream: ent\n".into();
    });
    let c = http_client_no_reuse();
    let url = s.url("/nothing/here");
    assert_own_answer(&c, |c| c.get(&url), 404, "no_route").await;
    assert_eq!(
        s.served().0,
        vec![0],
        "a request without a route must not reach the origin"
    );
    let log = s
        .rempart
        .wait_access_log(Duration::from_secs(3), |l| l["path"] == "/nothing/here")
        .unwrap_or_else(|| {
            panic!(
                "no access log line for the 404; stdout:\n{}",
                s.rempart.stdout()
            )
        });
    assert_eq!(log["status"], 404);
    assert_eq!(log["reason"], "no_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_connection_is_502_upstream_error() {
    // Nothing listens on the server's port; try_all sends traffic even though health checks fail.
    let dead = free_addr();
    let mut y = ProxyYaml::new(vec![dead], vec![]);
    y.upstream.push("when_all_down: try_all".into());
    y.upstream
        .push("timeouts: { connect: 500ms, response: 5s }".into());
    let yaml = y.render();
    let r = start_rempart(&yaml);
    let c = http_client_no_reuse();
    let url = format!("http://{}/x", y.ports.http);
    let t = Instant::now();
    assert_own_answer(&c, |c| c.get(&url), 502, "upstream_error").await;
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the 502 took {:?}",
        t.elapsed()
    );
    let log = r
        .wait_access_log(Duration::from_secs(3), |l| l["status"] == 502)
        .unwrap_or_else(|| panic!("no access log line for the 502; stdout:\n{}", r.stdout()));
    assert_eq!(log["reason"], "upstream_error");
    assert_eq!(log["upstream"], "ent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_upstream_timeout() {
    let s = Stack::start(1, 0, |y| {
        y.upstream
            .push("timeouts: { connect: 1s, response: 500ms }".into());
        y.upstream.push("retries: { attempts: 0 }".into());
    });
    let c = http_client();
    let url = s.url("/slow?ms=4000");
    let t = Instant::now();
    let r = c
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let took = t.elapsed();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(
        status, 504,
        "an upstream slower than timeouts.response should give 504, got {status}: {body}"
    );
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("504 body not JSON ({e}): {body}"));
    assert_eq!(v["reason"], "upstream_timeout", "{body}");
    assert!(
        took < Duration::from_millis(3000),
        "the 504 came after {took:?}, timeouts.response is 500ms"
    );
    let log = s
        .rempart
        .wait_access_log(Duration::from_secs(3), |l| l["status"] == 504)
        .unwrap_or_else(|| {
            panic!(
                "no access log line for the 504; stdout:\n{}",
                s.rempart.stdout()
            )
        });
    assert_eq!(log["reason"], "upstream_timeout");
}

fn headers_of(echo: &Value) -> &serde_json::Map<String, Value> {
    echo["headers"].as_object().expect("echo headers")
}

/// Send raw request bytes through the plain listener and return the origin's echo.
async fn raw_echo(s: &Stack, req: &str) -> Value {
    let a = raw_exchange_until(
        s.ports.http,
        req.as_bytes(),
        Duration::from_secs(5),
        has_complete_response,
    )
    .await
    .unwrap();
    assert_eq!(
        a.status(),
        Some(200),
        "request {req:?} got: {}",
        a.describe()
    );
    let text = a.text();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let body = if text[..text.find("\r\n\r\n").unwrap()]
        .to_ascii_lowercase()
        .contains("chunked")
    {
        String::from_utf8(http1::dechunk(body.as_bytes()).unwrap()).unwrap()
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not the origin's echo ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added() {
    let s = Stack::start(1, 0, |_| {});
    let v = raw_echo(
        &s,
        "GET /fwd?q=1 HTTP/1.1\r\nHost: app.ent.example.test:8080\r\nX-Forwarded-For: 203.0.113.7\r\n\
         X-Request-Id: client-chosen\r\nX-Keep-Me: yes\r\nConnection: close\r\n\r\n",
    )
    .await;
    let h = headers_of(&v);
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
        "X-Forwarded-For is appended: {h:?}"
    );
    assert_eq!(h["x-forwarded-proto"], "http", "{h:?}");
    assert_eq!(
        h["x-forwarded-host"], "app.ent.example.test:8080",
        "X-Forwarded-Host is the Host the client sent: {h:?}"
    );
    assert_eq!(h["x-keep-me"], "yes", "end-to-end headers pass: {h:?}");
    assert_eq!(v["path"], "/fwd");
    assert_eq!(v["query"], "q=1");
    let id = h.get("x-request-id").and_then(|v| v.as_str()).unwrap_or("");
    assert!(!id.is_empty(), "the origin got no X-Request-Id: {h:?}");
    assert_ne!(
        id, "client-chosen",
        "an X-Request-Id from an untrusted client must be replaced by a generated one"
    );

    // Without X-Forwarded-For: just the client address; ids differ between requests.
    let v2 = raw_echo(
        &s,
        "GET /fwd HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let h2 = headers_of(&v2);
    assert_eq!(h2["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h2["x-forwarded-host"], "h.example");
    assert_ne!(
        h2["x-request-id"], h["x-request-id"],
        "each request gets its own id"
    );
    assert_eq!(s.dc_a[0].stats().duplicate_request_ids, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_request_without_host_reaches_the_backend_with_one() {
    let s = Stack::start(1, 0, |_| {});
    let v = raw_echo(&s, "GET /old-client HTTP/1.0\r\n\r\n").await;
    let h = headers_of(&v);
    // Forwarded as HTTP/1.1, which requires a Host: the server's address stands in.
    assert_eq!(
        h.get("host").and_then(|v| v.as_str()),
        Some(s.dc_a[0].addr().to_string().as_str()),
        "{h:?}"
    );
    assert_eq!(v["path"], "/old-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_headers_from_an_untrusted_client_are_not_believed() {
    let s = Stack::start(1, 0, |_| {});
    let v = raw_echo(
        &s,
        "GET /spoof HTTP/1.1\r\nHost: real.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    let h = headers_of(&v);
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "X-Forwarded-Proto must say what the client really used: {h:?}"
    );
    assert_eq!(
        h["x-forwarded-host"], "real.example",
        "X-Forwarded-Host must be the Host the client sent: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_keeps_request_id_and_client_ip_comes_from_x_forwarded_for() {
    let s = Stack::start(1, 0, |y| {
        y.server.push("trusted_proxies: [127.0.0.1/32]".into())
    });
    let v = raw_echo(
        &s,
        "GET /trusted HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-For: 198.51.100.9\r\nX-Request-Id: from-the-lb-42\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    let h = headers_of(&v);
    assert_eq!(
        h["x-request-id"], "from-the-lb-42",
        "an X-Request-Id from a trusted proxy is kept: {h:?}"
    );
    assert_eq!(h["x-forwarded-for"], "198.51.100.9, 127.0.0.1", "{h:?}");
    let log = s
        .rempart
        .wait_access_log(Duration::from_secs(3), |l| l["path"] == "/trusted")
        .unwrap_or_else(|| panic!("no access log line; stdout:\n{}", s.rempart.stdout()));
    assert_eq!(
        log["client_ip"], "198.51.100.9",
        "client_ip behind a trusted proxy: {log}"
    );
    assert_eq!(log["request_id"], "from-the-lb-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed() {
    let s = Stack::start(1, 0, |_| {});
    let v = raw_echo(
        &s,
        "GET /hop HTTP/1.1\r\nHost: h.example\r\nConnection: close, X-Custom-Hop\r\nX-Custom-Hop: secret\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Foo\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\nX-Keep-Me: yes\r\n\r\n",
    )
    .await;
    let h = headers_of(&v);
    for name in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !h.contains_key(name),
            "hop-by-hop header `{name}` reached the origin: {h:?}"
        );
    }
    if let Some(conn) = h.get("connection").and_then(|v| v.as_str()) {
        assert!(
            !conn.to_ascii_lowercase().contains("x-custom-hop"),
            "the client's Connection header reached the origin: {conn}"
        );
    }
    assert_eq!(h["x-keep-me"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_header_is_removed_on_a_plain_request() {
    let s = Stack::start(1, 0, |_| {});
    let v = raw_echo(
        &s,
        "GET /upg HTTP/1.1\r\nHost: h.example\r\nUpgrade: foo/1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let h = headers_of(&v);
    assert!(
        !h.contains_key("upgrade"),
        "Upgrade (not a WebSocket) reached the origin: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request_with_all_fields() {
    let s = Stack::start(1, 0, |_| {});
    let c = http_client();
    let r = c
        .get(s.url("/logged/path?token=s3cr3t"))
        .header("Host", "portail.ent.example.test")
        .header("Cookie", "session=c00kie")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    let line = s
        .rempart
        .wait_access_log(Duration::from_secs(3), |l| l["path"] == "/logged/path")
        .unwrap_or_else(|| {
            panic!(
                "no access log line with path /logged/path (no query); stdout:\n{}",
                s.rempart.stdout()
            )
        });
    for field in [
        "ts",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "route",
        "upstream",
        "datacenter",
        "server",
        "duration_ms",
        "upstream_ms",
        "queue_ms",
        "retries",
        "request_id",
    ] {
        assert!(
            line.get(field).is_some(),
            "access log line lacks `{field}`: {line}"
        );
    }
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert!(
        line["host"]
            .as_str()
            .unwrap_or("")
            .starts_with("portail.ent.example.test"),
        "{line}"
    );
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["route"], "default", "{line}");
    assert_eq!(line["upstream"], "ent", "{line}");
    assert_eq!(line["datacenter"], "dc-a", "{line}");
    assert_eq!(line["server"], s.dc_a[0].addr().to_string(), "{line}");
    assert_eq!(line["retries"], 0, "{line}");
    assert!(
        line["duration_ms"].is_number() && line["upstream_ms"].is_number(),
        "{line}"
    );
    assert!(
        line.get("reason").is_none_or(|r| r.is_null() || r == ""),
        "a proxied request has no reason: {line}"
    );
    assert_eq!(
        line["request_id"], echo["headers"]["x-request-id"],
        "the log's request_id is the one sent upstream"
    );
    let text = line.to_string();
    assert!(
        !text.contains("s3cr3t"),
        "query strings must not be logged: {text}"
    );
    assert!(
        !text.contains("c00kie"),
        "cookies must not be logged: {text}"
    );

    // One line per request.
    for i in 0..5 {
        assert_eq!(
            c.get(s.url(&format!("/count/{i}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let n = poll_until(Duration::from_secs(3), || {
        let n = s
            .rempart
            .access_log_lines()
            .iter()
            .filter(|l| l["path"].as_str().unwrap_or("").starts_with("/count/"))
            .count();
        (n >= 5).then_some(n)
    });
    assert_eq!(
        n,
        Some(5),
        "5 requests should give 5 access log lines; stdout:\n{}",
        s.rempart.stdout()
    );
}

/// Send `req` on a fresh connection, read one complete answer; then, unless that answer said
/// `Connection: close`, send `GET /__harness/ka` on the same connection and expect an answer.
async fn assert_keep_alive_honest(addr: std::net::SocketAddr, what: &str, req: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            data.extend_from_slice(&buf[..n]);
            if has_complete_response(&data) {
                return Ok(true);
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&data).into_owned();
    assert!(
        matches!(first, Ok(Ok(true))),
        "{what}: no complete answer: {first:?} {text:?}"
    );
    let head = text[..text.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
    if head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"))
    {
        return; // announced: the client will not reuse the connection
    }
    // The answer let the client keep the connection: it must then be usable.
    let second = "GET /__harness/ka HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let wrote = sock.write_all(second.as_bytes()).await;
    let mut more = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut more)).await;
    let more = String::from_utf8_lossy(&more).into_owned();
    assert!(
        wrote.is_ok() && more.starts_with("HTTP/1.1 "),
        "{what}: the answer did not say `Connection: close` ({:?}), yet the connection was closed: a \
         client reusing it (as browsers and HTTP libraries do) fails its next request. write: {wrote:?}, \
         read: {read:?}, got {more:?}",
        head.lines().find(|l| l.starts_with("connection:")).unwrap_or("no Connection header"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_answers_say_connection_close_when_they_close_404() {
    let s = Stack::start(1, 0, |y| {
        y.routes =
            "  - name: only\n    match: { path_prefix: /__harness }\n    upstream: ent\n".into();
    });
    let req = "GET /nothing HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
    assert_keep_alive_honest(s.ports.http, "404 no_route", req).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_answers_say_connection_close_when_they_close_502() {
    let dead = free_addr();
    let mut y = ProxyYaml::new(vec![dead], vec![]);
    y.upstream.push("when_all_down: try_all".into());
    y.upstream
        .push("timeouts: { connect: 500ms, response: 5s }".into());
    let _r = start_rempart(&y.render());
    let req = "GET /x HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
    assert_keep_alive_honest(y.ports.http, "502 upstream_error", req).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_answers_say_connection_close_when_they_close_504() {
    let s = Stack::start(1, 0, |y| {
        y.upstream
            .push("timeouts: { connect: 1s, response: 500ms }".into());
        y.upstream.push("retries: { attempts: 0 }".into());
    });
    let req = "GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
    assert_keep_alive_honest(s.ports.http, "504 upstream_timeout", req).await;
}
