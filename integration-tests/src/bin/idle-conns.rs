//! `idle-conns`: open many connections, send one request on each, then keep them all open and
//! idle, so that `make bench` can measure a proxy's memory per idle connection.
//!
//! ```text
//! idle-conns --target 127.0.0.1:PORT --count 10000 [--tls [--sni localhost] [--h2]]
//!            [--sources 127.0.0.1,127.0.0.2] [--hold 30s] [--concurrency 200] [--timeout 10s]
//! ```
//!
//! - HTTP/1.1 (plain, or TLS with ALPN http/1.1): `GET / HTTP/1.1` with `Host` and
//!   `Connection: keep-alive`, the whole response read.
//! - `--h2` (over TLS with ALPN h2, or plain with prior knowledge): preface, browser-like
//!   SETTINGS (those of Chrome, so the server keeps what it keeps for a browser), a GET HEADERS,
//!   response frames until END_STREAM; the server's SETTINGS are ACKed (and PINGs answered,
//!   while holding too).
//!
//! Sockets are bound to the `--sources` addresses in turn (the port is chosen at connect time:
//! each source address has its own ephemeral ports), and RLIMIT_NOFILE is raised to the hard
//! limit (or, as root, to what COUNT needs). At most `--concurrency` connections are being
//! opened at a time, and every step (connect, TLS, request) has the `--timeout`.
//!
//! stdout, one line each: `ready N failed F connect C tls T request R timeout O non_2xx X
//! seconds S` once every connection is open or has failed, then `done held H closed_by_server K
//! seconds S` on exit. The hold ends after `--hold`, on SIGTERM or SIGINT, or when stdin closes
//! (only when stdin is a pipe or a terminal: under `cmd &` in a script stdin is /dev/null and
//! only --hold and signals end it). Progress and the first error of each kind go to stderr.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use integration_tests::h2raw::{self, kind, setting, BoxIo, H2Conn};
use integration_tests::has_complete_response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};

/// The SETTINGS Chrome sends, and its connection WINDOW_UPDATE.
const BROWSER_SETTINGS: [(u16, u32); 4] = [
    (setting::HEADER_TABLE_SIZE, 65_536),
    (setting::ENABLE_PUSH, 0),
    (setting::INITIAL_WINDOW_SIZE, 6_291_456),
    (setting::MAX_HEADER_LIST_SIZE, 262_144),
];
const BROWSER_WINDOW_UPDATE: u32 = 15_663_105;
/// At most this many frames (or reads) for one response.
const MAX_RESPONSE_READS: usize = 10_000;
/// Responses larger than this are refused (an idle connection is the point, not a download).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// One read while holding waits at most this long (the hold loop checks the stop signal).
const HOLD_READ: Duration = Duration::from_secs(3600);
/// At most this many reads while holding (servers may send the odd PING).
const MAX_HOLD_READS: usize = 100_000;

#[derive(Debug, Parser)]
#[command(
    name = "idle-conns",
    about = "Open many connections, one request each, then hold them idle"
)]
struct Args {
    /// The server, e.g. 127.0.0.1:8080.
    #[arg(long)]
    target: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,
    /// TLS (certificates are checked against certs/dev/ca.crt).
    #[arg(long)]
    tls: bool,
    /// TLS server name, and the default Host / :authority.
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// HTTP/2 (ALPN h2 over TLS; prior knowledge without --tls).
    #[arg(long)]
    h2: bool,
    /// Source addresses to bind to, used in turn (e.g. 127.0.0.1,127.0.0.2).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// How long to hold the connections once all are open (30s, 2m).
    #[arg(long, default_value = "30s", value_parser = h2raw::parse_duration)]
    hold: Duration,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Time allowed for each step: TCP connect, TLS handshake, request.
    #[arg(long, default_value = "10s", value_parser = h2raw::parse_duration)]
    timeout: Duration,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Host header / :authority (default: the SNI with --tls, else the target).
    #[arg(long)]
    host: Option<String>,
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Tls,
    Request,
    Timeout,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::Request => "request",
            Failure::Timeout => "timeout",
        }
    }
}

/// The connection, once its request got an answer.
enum Conn {
    H1(BoxIo),
    H2(Box<H2Conn>),
}

/// The result of opening one connection: the status of its response, or why it failed.
type Opened = Result<u16, (Failure, String)>;

fn main() {
    let args = Args::parse();
    raise_nofile(u64::from(args.count) + 256);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idle-conns: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(Arc::new(args)));
    // Exit at once: dropping 10,000 connections one by one is no use.
    std::process::exit(code);
}

/// RLIMIT_NOFILE: soft limit up to the hard limit; as root, both up to `want` if needed.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            eprintln!("idle-conns: getrlimit: {}", io::Error::last_os_error());
            return;
        }
        let want = want as libc::rlim_t;
        if lim.rlim_max < want {
            let more = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &more) == 0 {
                return;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            eprintln!("idle-conns: setrlimit: {}", io::Error::last_os_error());
        }
        if lim.rlim_cur < want {
            eprintln!(
                "idle-conns: RLIMIT_NOFILE is {} (hard limit): fewer than the {} descriptors needed",
                lim.rlim_cur, want
            );
        }
    }
}

async fn run(args: Arc<Args>) -> i32 {
    let tls_cfg = if args.tls {
        let alpn: &[&str] = if args.h2 { &["h2"] } else { &["http/1.1"] };
        match h2raw::tls_config(alpn, None) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("idle-conns: TLS configuration: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    spawn_stop_watchers(stop_tx.clone());

    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let closed = Arc::new(AtomicU64::new(0));
    let (res_tx, mut res_rx) = mpsc::channel::<Opened>(1024);
    for i in 0..args.count {
        let source =
            (!args.sources.is_empty()).then(|| args.sources[i as usize % args.sources.len()]);
        let (args, tls_cfg, permits, res_tx) = (
            args.clone(),
            tls_cfg.clone(),
            permits.clone(),
            res_tx.clone(),
        );
        let (stop, closed) = (stop_rx.clone(), closed.clone());
        tokio::spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let opened = open(&args, source, tls_cfg).await;
            drop(permit);
            match opened {
                Ok((conn, status)) => {
                    let _ = res_tx.send(Ok(status)).await;
                    drop(res_tx);
                    hold(conn, stop, &closed).await;
                }
                Err(e) => {
                    let _ = res_tx.send(Err(e)).await;
                }
            }
        });
    }
    drop(res_tx);

    let mut ok: u64 = 0;
    let mut non_2xx: u64 = 0;
    let mut failed = [0u64; 4];
    let mut first_errors: Vec<Failure> = Vec::new();
    let mut stop = stop_rx.clone();
    // Every connection answers within about 3 timeouts of getting a permit; this is a backstop.
    let per_result = args.timeout * 4 + Duration::from_secs(5);
    for done in 1..=u64::from(args.count) {
        let next = tokio::select! {
            r = tokio::time::timeout(per_result, res_rx.recv()) => r,
            _ = stop.changed() => {
                eprintln!("idle-conns: stopped while opening");
                break;
            }
        };
        match next {
            Ok(Some(Ok(status))) => {
                ok += 1;
                if !(200..300).contains(&status) {
                    non_2xx += 1;
                }
            }
            Ok(Some(Err((f, msg)))) => {
                failed[f as usize] += 1;
                if !first_errors.contains(&f) {
                    first_errors.push(f);
                    eprintln!("idle-conns: first {} failure: {msg}", f.name());
                }
            }
            Ok(None) => break,
            Err(_) => {
                eprintln!(
                    "idle-conns: no connection finished opening in {per_result:?}; giving up"
                );
                break;
            }
        }
        if done % 1000 == 0 {
            eprintln!(
                "idle-conns: {done}/{} done, {ok} open, {:.1} s",
                args.count,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let total_failed: u64 = failed.iter().sum();
    println!(
        "ready {ok} failed {total_failed} connect {} tls {} request {} timeout {} non_2xx {non_2xx} seconds {:.2}",
        failed[Failure::Connect as usize],
        failed[Failure::Tls as usize],
        failed[Failure::Request as usize],
        failed[Failure::Timeout as usize],
        start.elapsed().as_secs_f64()
    );

    let held_since = Instant::now();
    if !*stop.borrow() {
        let _ = tokio::time::timeout(args.hold, stop.wait_for(|s| *s)).await;
    }
    let gone = closed.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    println!(
        "done held {} closed_by_server {gone} seconds {:.2}",
        ok.saturating_sub(gone),
        held_since.elapsed().as_secs_f64()
    );
    0
}

/// SIGTERM, SIGINT, and stdin closing (when it is a pipe or a terminal) set the stop signal.
fn spawn_stop_watchers(stop: Arc<watch::Sender<bool>>) {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let stop = stop.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    s.recv().await;
                    let _ = stop.send(true);
                });
            }
            Err(e) => eprintln!("idle-conns: cannot watch a signal: {e}"),
        }
    }
    if stdin_is_pipe_or_tty() {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 512];
            // Whatever is typed or piped is ignored; bounded in reads.
            for _ in 0..1_000_000 {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            let _ = stop.send(true);
        });
    }
}

fn stdin_is_pipe_or_tty() -> bool {
    // SAFETY: fstat on descriptor 0 into a zeroed stat struct; isatty on descriptor 0.
    unsafe {
        if libc::isatty(0) == 1 {
            return true;
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) != 0 {
            return false;
        }
        let fmt = st.st_mode & libc::S_IFMT;
        fmt == libc::S_IFIFO || fmt == libc::S_IFSOCK
    }
}

/// Connect (from `source`), TLS if asked, one request; the connection and the status.
async fn open(
    args: &Args,
    source: Option<IpAddr>,
    tls_cfg: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Conn, u16), (Failure, String)> {
    let t = args.timeout;
    let tcp = h2raw::tcp_connect(args.target, source, t)
        .await
        .map_err(|e| classify(Failure::Connect, e))?;
    let host = match &args.host {
        Some(h) => h.clone(),
        None if args.tls => args.sni.clone(),
        None => args.target.to_string(),
    };
    let io: BoxIo = match tls_cfg {
        Some(cfg) => {
            let hs = h2raw::tls_handshake(tcp, &args.sni, cfg);
            let (tls, alpn) = tokio::time::timeout(t, hs)
                .await
                .map_err(|_| (Failure::Timeout, format!("TLS handshake over {t:?}")))?
                .map_err(|e| classify(Failure::Tls, e))?;
            if args.h2 && alpn.as_deref() != Some("h2") {
                return Err((Failure::Tls, format!("ALPN chose {alpn:?}, not h2")));
            }
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    let req = async {
        if args.h2 {
            let mut conn = H2Conn::from_io(io, args.tls);
            conn.set_write_timeout(t);
            let status = h2_request(&mut conn, &args.path, &host, t).await?;
            conn.shrink();
            Ok((Conn::H2(Box::new(conn)), status))
        } else {
            let mut io = io;
            let status = h1_request(&mut io, &args.path, &host).await?;
            Ok((Conn::H1(io), status))
        }
    };
    tokio::time::timeout(t, req)
        .await
        .map_err(|_| (Failure::Timeout, format!("no whole response within {t:?}")))?
}

fn classify(f: Failure, e: io::Error) -> (Failure, String) {
    if e.kind() == io::ErrorKind::TimedOut {
        (Failure::Timeout, e.to_string())
    } else {
        (f, e.to_string())
    }
}

fn req_err(e: impl std::fmt::Display) -> (Failure, String) {
    (Failure::Request, e.to_string())
}

/// `GET path HTTP/1.1`, keep-alive; reads the whole response (the caller bounds the time).
async fn h1_request(io: &mut BoxIo, path: &str, host: &str) -> Result<u16, (Failure, String)> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nUser-Agent: idle-conns\r\nAccept: */*\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.map_err(req_err)?;
    io.flush().await.map_err(req_err)?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..MAX_RESPONSE_READS {
        let n = io.read(&mut buf).await.map_err(req_err)?;
        if n == 0 {
            return Err(req_err(
                "the server closed the connection before a whole response",
            ));
        }
        data.extend_from_slice(&buf[..n]);
        if has_complete_response(&data) {
            let status = std::str::from_utf8(data.get(9..12).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| req_err("no status line"))?;
            return Ok(status);
        }
        if data.len() > MAX_RESPONSE_BYTES {
            return Err(req_err("response over 1 MiB"));
        }
    }
    Err(req_err("response in too many pieces"))
}

/// Preface, SETTINGS, WINDOW_UPDATE, GET on stream 1; frames until its END_STREAM, ACKing the
/// server's SETTINGS and answering PINGs.
async fn h2_request(
    conn: &mut H2Conn,
    path: &str,
    host: &str,
    timeout: Duration,
) -> Result<u16, (Failure, String)> {
    let mut first = h2raw::PREFACE.to_vec();
    first.extend_from_slice(&h2raw::settings_frame(&BROWSER_SETTINGS));
    first.extend_from_slice(&h2raw::window_update_frame(0, BROWSER_WINDOW_UPDATE));
    let scheme = if conn.is_tls() { "https" } else { "http" };
    let block = h2raw::request_block(
        "GET",
        scheme,
        path,
        host,
        &[("user-agent", "idle-conns"), ("accept", "*/*")],
    );
    first.extend_from_slice(&h2raw::headers_frame(1, &block, true, true));
    conn.send_batch(&first, 3).await.map_err(req_err)?;
    let deadline = Instant::now() + timeout;
    let mut status = None;
    let mut body = 0usize;
    for _ in 0..MAX_RESPONSE_READS {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = match conn.read_frame(left).await.map_err(req_err)? {
            Some(f) => f,
            None => {
                return Err((
                    Failure::Timeout,
                    format!("no whole response within {timeout:?}"),
                ))
            }
        };
        match f.kind {
            kind::SETTINGS if !f.is_ack() => conn.send_settings_ack().await.map_err(req_err)?,
            kind::PING if !f.is_ack() => {
                let p = f.ping_payload().unwrap_or_default();
                conn.send_ping_ack(p).await.map_err(req_err)?
            }
            kind::GOAWAY => {
                let g = f.goaway().map(|g| g.code_name()).unwrap_or_default();
                return Err(req_err(format!("GOAWAY {g} before the response")));
            }
            kind::RST_STREAM if f.stream_id == 1 => {
                let c = f.rst_code().map(h2raw::code_name).unwrap_or_default();
                return Err(req_err(format!("RST_STREAM {c} on the request")));
            }
            // The first HEADERS holds the status (trailers may follow).
            kind::HEADERS if f.stream_id == 1 && status.is_none() => {
                status = Some(f.status().unwrap_or(0));
            }
            kind::DATA if f.stream_id == 1 => {
                body += f.payload.len();
                if body > MAX_RESPONSE_BYTES {
                    return Err(req_err("response over 1 MiB"));
                }
            }
            _ => {}
        }
        if f.stream_id == 1 && f.is_end_stream() {
            return status.ok_or_else(|| req_err("END_STREAM without HEADERS"));
        }
    }
    Err(req_err("response in too many frames"))
}

/// Keep the connection open and idle until the stop signal; a close by the server is counted.
/// HTTP/2 PINGs and SETTINGS are answered.
async fn hold(conn: Conn, mut stop: watch::Receiver<bool>, closed: &AtomicU64) {
    // The counter is bumped once, when the server ends the connection.
    let gone = || {
        closed.fetch_add(1, Ordering::Relaxed);
    };
    match conn {
        Conn::H1(mut io) => {
            let mut buf = [0u8; 256];
            for _ in 0..MAX_HOLD_READS {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    r = tokio::time::timeout(HOLD_READ, io.read(&mut buf)) => match r {
                        Ok(Ok(0)) | Ok(Err(_)) => return gone(),
                        Ok(Ok(_)) | Err(_) => continue,
                    },
                }
            }
            // Too many reads: keep the connection, unread, until the stop signal.
            let _ = stop.wait_for(|s| *s).await;
        }
        Conn::H2(mut conn) => {
            for _ in 0..MAX_HOLD_READS {
                let read = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    r = conn.read_frame(HOLD_READ) => r,
                };
                let answered = match read {
                    Err(_) => return gone(),
                    Ok(None) => continue,
                    Ok(Some(f)) if f.kind == kind::SETTINGS && !f.is_ack() => {
                        conn.send_settings_ack().await
                    }
                    Ok(Some(f)) if f.kind == kind::PING && !f.is_ack() => {
                        conn.send_ping_ack(f.ping_payload().unwrap_or_default())
                            .await
                    }
                    Ok(Some(_)) => Ok(()),
                };
                if answered.is_err() {
                    return gone();
                }
            }
            let _ = stop.wait_for(|s| *s).await;
        }
    }
}
