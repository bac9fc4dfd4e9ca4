//! TLS listeners: certificate by SNI, HTTP/2 by ALPN, TLS 1.2 and 1.3 (SPEC sections 2 and 3).

use integration_tests::*;
use serde_json::Value;

const LOCALHOST: &str = "certs/dev/localhost.crt";
const ENT: &str = "certs/dev/ent-example.crt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_chosen_by_sni_first_is_the_default() {
    let s = Stack::start(1, 0, |_| {});
    let addr = s.ports.https;
    for (sni, want) in [
        (Some("localhost"), LOCALHOST),
        (Some("app.ent.example.test"), ENT),
        (Some("ent.example.test"), ENT),
        (Some("APP.Ent.Example.Test"), ENT),
        (Some("unknown.example.org"), LOCALHOST),
        (Some("deep.app.ent.example.test"), LOCALHOST),
        (None, LOCALHOST),
    ] {
        let p = tls_probe(addr, sni, TlsVersions::Both, &["http/1.1"])
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with SNI {sni:?} failed: {e}"));
        assert!(
            p.leaf_is(want),
            "SNI {sni:?} should get {want}, the server sent a certificate for {:?}",
            p.names
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_over_http1_and_http2() {
    let s = Stack::start(1, 0, |_| {});
    let resolve = [
        ("app.ent.example.test", s.ports.https),
        ("localhost", s.ports.https),
    ];

    let c = tls_client_h1(&resolve);
    let r = c
        .get(s.https_url("app.ent.example.test", "/tls1"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS (HTTP/1.1) to app.ent.example.test failed: {e:?}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{v}");
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1", "{v}");

    let c = tls_client(&resolve);
    let r = c
        .get(s.https_url("localhost", "/tls2"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS (ALPN h2) to localhost failed: {e:?}"));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "with http2: true, ALPN should choose HTTP/2"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/tls2");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{v}");
    assert!(
        v["headers"]["x-forwarded-host"]
            .as_str()
            .unwrap_or("")
            .starts_with("localhost"),
        "X-Forwarded-Host over HTTP/2 comes from :authority: {v}"
    );

    // Several concurrent streams on one HTTP/2 connection.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (c, url) = (c.clone(), s.https_url("localhost", &format!("/h2/{i}")));
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.map(|r| (r.status(), r.version()))
        }));
    }
    for t in tasks {
        let (st, ver) = t.await.unwrap().expect("HTTP/2 stream");
        assert_eq!((st.as_u16(), ver), (200, reqwest::Version::HTTP_2));
    }
    let log = s
        .rempart
        .wait_access_log(std::time::Duration::from_secs(3), |l| l["path"] == "/tls2")
        .expect("access log line for the HTTP/2 request");
    assert_eq!(log["status"], 200);

    let p = tls_probe(
        s.ports.https,
        Some("localhost"),
        TlsVersions::Both,
        &["h2", "http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(p.alpn.as_deref(), Some("h2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off() {
    let s = Stack::start(1, 0, |y| y.http2 = false);
    let p = tls_probe(
        s.ports.https,
        Some("localhost"),
        TlsVersions::Both,
        &["h2", "http/1.1"],
    )
    .await
    .unwrap();
    assert_ne!(
        p.alpn.as_deref(),
        Some("h2"),
        "http2: false, yet ALPN chose h2"
    );
    let c = tls_client(&[("localhost", s.ports.https)]);
    let r = c.get(s.https_url("localhost", "/h1")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_tls_1_3_both_work() {
    let s = Stack::start(1, 0, |_| {});
    for (versions, want) in [
        (TlsVersions::Tls12, rustls::ProtocolVersion::TLSv1_2),
        (TlsVersions::Tls13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let p = tls_probe(
            s.ports.https,
            Some("app.ent.example.test"),
            versions,
            &["http/1.1"],
        )
        .await
        .unwrap_or_else(|e| panic!("a {want:?} handshake failed: {e}"));
        assert_eq!(p.version, Some(want));
        assert!(p.leaf_is(ENT));
    }
    for v in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let c = tls_client_with(
            &[("app.ent.example.test", s.ports.https)],
            TlsClientOpts {
                alpn: Alpn::H2AndH1,
                version: Some(v),
            },
        );
        let r = c
            .get(s.https_url("app.ent.example.test", "/v"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS with {v:?} failed: {e:?}"));
        assert_eq!(r.status(), 200, "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_does_not_reach_the_origin() {
    let s = Stack::start(1, 0, |_| {});
    let a = raw_exchange(
        s.ports.https,
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert_ne!(
        a.status(),
        Some(200),
        "plain HTTP on the TLS listener: {}",
        a.describe()
    );
    assert_eq!(s.dc_a[0].stats().path("/plain"), 0);
    // And the listener still works.
    let c = tls_client(&[("localhost", s.ports.https)]);
    assert_eq!(
        c.get(s.https_url("localhost", "/after"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
