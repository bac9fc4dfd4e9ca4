//! WebSocket upgrades pass through (SPEC section 3), on ws:// and wss://.

use integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_the_plain_listener_echoes() {
    let s = Stack::start(1, 0, |_| {});
    let mut ws = ws_connect(s.ports.http, "/ws")
        .await
        .unwrap_or_else(|e| panic!("ws:// through rempart: {e}"));
    for i in 0..3 {
        let msg = format!("bonjour {i}");
        let m = ws_roundtrip(&mut ws, WsMessage::Text(msg.clone().into()))
            .await
            .unwrap();
        assert_eq!(m, WsMessage::Text(msg.into()));
    }
    let bin: Vec<u8> = (0..=255u8).collect();
    let m = ws_roundtrip(&mut ws, WsMessage::Binary(bin.clone().into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Binary(bin.into()));
    let big = "x".repeat(200_000);
    let m = ws_roundtrip(&mut ws, WsMessage::Text(big.clone().into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Text(big.into()), "a 200 kB message");
    assert_eq!(
        s.dc_a[0].stats().path("/ws"),
        1,
        "one upgrade request reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_the_tls_listener_echoes() {
    let s = Stack::start(1, 0, |_| {});
    let mut ws = wss_connect(s.ports.https, "app.ent.example.test", "/ws")
        .await
        .unwrap_or_else(|e| panic!("wss:// through rempart: {e}"));
    let m = ws_roundtrip(&mut ws, WsMessage::Text("salut".into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Text("salut".into()));
    let m = ws_roundtrip(&mut ws, WsMessage::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Binary(vec![1u8, 2, 3].into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_requests_while_a_websocket_is_open() {
    let s = Stack::start(1, 0, |_| {});
    let mut ws = ws_connect(s.ports.http, "/ws").await.unwrap();
    let c = http_client();
    assert_eq!(c.get(s.url("/during")).send().await.unwrap().status(), 200);
    let m = ws_roundtrip(&mut ws, WsMessage::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(m, WsMessage::Text("still here".into()));
}
