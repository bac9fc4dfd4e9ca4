//! Clients for the tests: reqwest (plain, TLS trusting the dev CA, HTTP/2), a raw TLS probe that
//! reports the certificate and protocol the server chose, a raw TCP exchange for malformed
//! requests, and WebSocket connections (ws:// and wss://).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::repo_path;

/// Default per-request timeout of the clients made here.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain HTTP client: no proxy from the environment, 10 s timeout, HTTP/1.1.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .http1_only()
        .build()
        .expect("build the HTTP client")
}

/// A plain HTTP client that opens a new connection for every request.
pub fn http_client_no_reuse() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()
        .expect("build the HTTP client")
}

/// The dev CA (`certs/dev/ca.crt`) as a reqwest certificate.
pub fn dev_ca() -> reqwest::Certificate {
    let pem = std::fs::read(repo_path("certs/dev/ca.crt"))
        .expect("read certs/dev/ca.crt (run certs/make-dev-certs.sh)");
    reqwest::Certificate::from_pem(&pem).expect("parse certs/dev/ca.crt")
}

/// Which protocols the TLS client offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// h2 and http/1.1 (a browser).
    H2AndH1,
    /// http/1.1 only.
    H1,
}

/// Options of [`tls_client_with`].
#[derive(Debug, Clone, Copy)]
pub struct TlsClientOpts {
    pub alpn: Alpn,
    /// Force TLS 1.2 only or TLS 1.3 only; None: both.
    pub version: Option<reqwest::tls::Version>,
}

impl Default for TlsClientOpts {
    fn default() -> Self {
        TlsClientOpts {
            alpn: Alpn::H2AndH1,
            version: None,
        }
    }
}

/// A TLS client trusting only the dev CA, where each `(name, addr)` resolves `name` to `addr`
/// (so `https://app.ent.example.test:PORT/` reaches 127.0.0.1 with that SNI). Offers h2 and
/// http/1.1 by ALPN.
pub fn tls_client(resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    tls_client_with(resolve, TlsClientOpts::default())
}

/// A TLS client that offers only HTTP/1.1.
pub fn tls_client_h1(resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    tls_client_with(
        resolve,
        TlsClientOpts {
            alpn: Alpn::H1,
            version: None,
        },
    )
}

/// A TLS client that offers only h2 by ALPN (fails when the server does not speak HTTP/2).
pub fn h2_client(resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    tls_builder(resolve, None)
        .http2_prior_knowledge()
        .build()
        .expect("build the HTTP/2 client")
}

fn tls_builder(
    resolve: &[(&str, SocketAddr)],
    version: Option<reqwest::tls::Version>,
) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(dev_ca())
        .timeout(CLIENT_TIMEOUT)
        .connect_timeout(Duration::from_secs(3));
    if let Some(v) = version {
        b = b.min_tls_version(v).max_tls_version(v);
    }
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b
}

/// A TLS client with options.
pub fn tls_client_with(resolve: &[(&str, SocketAddr)], opts: TlsClientOpts) -> reqwest::Client {
    let mut b = tls_builder(resolve, opts.version);
    if opts.alpn == Alpn::H1 {
        b = b.http1_only();
    }
    b.build().expect("build the TLS client")
}

// ---------------------------------------------------------------------------------------------
// Raw TLS

/// Accepts any certificate: the probe reports what the server sent, and checks it separately.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS versions to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    Both,
    Tls12,
    Tls13,
}

/// A rustls client configuration. `verify`: check the chain against the dev CA (else accept
/// anything, to look at whatever the server sends).
pub fn rustls_client_config(
    verify: bool,
    versions: TlsVersions,
    alpn: &[&str],
) -> rustls::ClientConfig {
    let vers: &[&'static rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersions::Tls12 => &[&rustls::version::TLS12],
        TlsVersions::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(vers)
        .expect("TLS versions");
    let mut cfg = if verify {
        let mut roots = rustls::RootCertStore::empty();
        for c in dev_ca_ders() {
            roots.add(c).expect("add the dev CA");
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    cfg
}

fn dev_ca_ders() -> Vec<CertificateDer<'static>> {
    pem_certs(&repo_path("certs/dev/ca.crt"))
}

/// The DER certificates of a PEM file.
pub fn pem_certs(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The DNS names (and IP addresses, as text) in a certificate's subjectAltName.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).expect("parse the certificate");
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                }
                GeneralName::IPAddress(b) if b.len() == 16 => {
                    let a: [u8; 16] = (*b).try_into().unwrap();
                    names.push(std::net::Ipv6Addr::from(a).to_string())
                }
                _ => {}
            }
        }
    }
    names
}

/// What a TLS handshake showed.
#[derive(Debug, Clone)]
pub struct TlsProbe {
    /// The leaf certificate (DER).
    pub leaf: Vec<u8>,
    /// Its subjectAltName names.
    pub names: Vec<String>,
    pub version: Option<ProtocolVersion>,
    /// The protocol chosen by ALPN, e.g. "h2".
    pub alpn: Option<String>,
}

impl TlsProbe {
    /// Whether the leaf is the first certificate of this PEM file (relative to the repo root).
    pub fn leaf_is(&self, pem_file: &str) -> bool {
        pem_certs(&repo_path(pem_file))
            .first()
            .map(|c| c.as_ref() == &self.leaf[..])
            .unwrap_or(false)
    }
}

/// Connect to `addr` with TLS, sending `sni` (None: no SNI), offering `versions` and `alpn`,
/// accepting whatever certificate comes; report it. Bounded by 5 s.
pub async fn tls_probe(
    addr: SocketAddr,
    sni: Option<&str>,
    versions: TlsVersions,
    alpn: &[&str],
) -> io::Result<TlsProbe> {
    let mut cfg = rustls_client_config(false, versions, alpn);
    let name = match sni {
        Some(n) => {
            ServerName::try_from(n.to_string()).map_err(|e| io::Error::other(e.to_string()))?
        }
        None => {
            cfg.enable_sni = false;
            ServerName::try_from("no-sni.invalid".to_string()).unwrap()
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector.connect(name, tcp).await?;
        let (_, conn) = tls.get_ref();
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| io::Error::other("no certificate"))?;
        Ok::<_, io::Error>(TlsProbe {
            names: cert_names(&leaf),
            leaf,
            version: conn.protocol_version(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake took more than 5 s"))?
}

/// A TLS stream to `addr` with SNI `sni`, verified against the dev CA, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&str],
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let cfg = rustls_client_config(true, TlsVersions::Both, alpn);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name =
        ServerName::try_from(sni.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS connect took more than 5 s"))?
}

// ---------------------------------------------------------------------------------------------
// Raw TCP

/// What came back on a raw connection.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub data: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
    /// The connection was reset (RST) rather than closed cleanly.
    pub reset: bool,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The status codes of every HTTP/1.x status line in the answer, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let t = self.text();
        let mut v = Vec::new();
        let mut rest = t.as_str();
        while let Some(i) = rest.find("HTTP/1.") {
            let line = &rest[i..];
            if i == 0 || rest[..i].ends_with('\n') {
                if let Some(code) = line.get(9..12).and_then(|c| c.parse().ok()) {
                    v.push(code);
                }
            }
            rest = &rest[i + 7..];
        }
        v
    }

    /// The first status, if any.
    pub fn status(&self) -> Option<u16> {
        self.statuses().first().copied()
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        let head: String = self.text().chars().take(300).collect();
        format!(
            "{} bytes, closed={}, reset={}: {:?}",
            self.data.len(),
            self.closed,
            self.reset,
            head
        )
    }
}

/// Connect, write `bytes`, and read until the server closes or `timeout` passes.
pub async fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<RawAnswer> {
    raw_exchange_until(addr, bytes, timeout, |_| false).await
}

/// Like [`raw_exchange`], also stopping as soon as `done(data)` says the answer is complete.
pub async fn raw_exchange_until(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> io::Result<RawAnswer> {
    let deadline = Instant::now() + timeout;
    let mut s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    // The server may answer and close before we finished writing: that is not an error here.
    let write_err = s.write_all(bytes).await.err();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut closed = false;
    let mut reset = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                data.extend_from_slice(&buf[..n]);
                if done(&data) {
                    break;
                }
            }
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                closed = true;
                reset = true;
                break;
            }
            Ok(Err(e)) => return Err(e),
        }
    }
    if let Some(e) = write_err {
        if data.is_empty() && !closed {
            return Err(e);
        }
        closed = true;
    }
    Ok(RawAnswer {
        data,
        closed,
        reset,
    })
}

/// Whether `data` holds at least one complete HTTP/1.x response (head, and a body framed by
/// Content-Length or chunked encoding).
pub fn has_complete_response(data: &[u8]) -> bool {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let body = &data[end + 4..];
    if head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        return crate::http1::dechunk(body).is_some();
    }
    match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        Some(n) => n
            .trim()
            .parse::<usize>()
            .map(|n| body.len() >= n)
            .unwrap_or(false),
        None => head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304"),
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket

pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A WebSocket over plain TCP.
pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;
/// A WebSocket over TLS.
pub type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// `ws://addr/path` (5 s to connect and upgrade).
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Result<Ws, String> {
    let url = format!("ws://{addr}{path}");
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tokio_tungstenite::client_async(url.as_str(), tcp)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| format!("WebSocket upgrade on {url} failed: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("WebSocket upgrade on {url} took more than 5 s"))?
}

/// `wss://sni:port/path` reaching `addr`, TLS verified against the dev CA, ALPN http/1.1.
pub async fn wss_connect(addr: SocketAddr, sni: &str, path: &str) -> Result<Wss, String> {
    let url = format!("wss://{sni}:{}{path}", addr.port());
    let fut = async {
        let tls = tls_connect(addr, sni, &["http/1.1"])
            .await
            .map_err(|e| format!("TLS to {addr} ({sni}): {e}"))?;
        tokio_tungstenite::client_async(url.as_str(), tls)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| format!("WebSocket upgrade on {url} failed: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("WebSocket upgrade on {url} took more than 5 s"))?
}

/// Send `msg` and wait (5 s) for the next data message.
pub async fn ws_roundtrip<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    msg: WsMessage,
) -> Result<WsMessage, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    ws.send(msg)
        .await
        .map_err(|e| format!("WebSocket send: {e}"))?;
    let fut = async {
        loop {
            match ws.next().await {
                None => return Err("WebSocket closed before the echo".to_string()),
                Some(Err(e)) => return Err(format!("WebSocket receive: {e}")),
                Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => return Ok(m),
                Some(Ok(WsMessage::Close(f))) => {
                    return Err(format!("WebSocket closed by the server: {f:?}"))
                }
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "no WebSocket echo within 5 s".to_string())?
}

/// The whole `Set-Cookie` line of cookie `name` among these answer headers.
pub fn set_cookie_line(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The value of cookie `name` set among these answer headers.
pub fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    set_cookie_line(headers, name).and_then(|line| {
        let (pair, _) = line.split_once(';').unwrap_or((&line, ""));
        pair.split_once('=').map(|(_, v)| v.to_string())
    })
}

/// Send a request in the background: the task gives the status (0 on a transport error) and
/// the answer's headers. It never panics (requests still in line when a test ends are dropped
/// with it).
pub fn spawn_send(
    rb: reqwest::RequestBuilder,
) -> tokio::task::JoinHandle<(u16, reqwest::header::HeaderMap)> {
    tokio::spawn(async move {
        match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let _ = r.bytes().await;
                (status, headers)
            }
            Err(_) => (0, reqwest::header::HeaderMap::new()),
        }
    })
}

/// Whether the server closes `c` (EOF or reset) within `patience`, and what it sent first.
pub async fn closed_within(c: &mut TcpStream, patience: Duration) -> (bool, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return (false, data),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, data),
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
}
