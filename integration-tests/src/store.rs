//! A real `redis-server` for the cluster tests: started on a free loopback port without
//! persistence (`--save '' --appendonly no`), paused (`SIGSTOP`) and resumed, killed and started
//! again on the same port, asked a command in RESP, and killed on drop (even when a test fails).
//!
//! The binary is `$REDIS_SERVER_BIN`, else `/usr/bin/redis-server`, else `redis-server` on the
//! `PATH` (Debian's package `redis-server`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::free_port;

/// How long [`Store::start`] waits for the first `PONG`.
pub const STORE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `redis-server` binary.
pub fn redis_server_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("REDIS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/bin/redis-server");
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("redis-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "redis-server not found (install Debian's redis-server: make deps, or set REDIS_SERVER_BIN)"
                .to_string()
        })
}

/// One RESP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    /// None: the null bulk string.
    Bulk(Option<String>),
    /// None: the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The strings of an array of bulk strings (nothing for anything else).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(Some(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(s)) | Reply::Status(s) => Some(s.clone()),
                    Reply::Int(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the store closed the connection",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not RESP: {line:?}"));
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest.parse().map(Reply::Int).map_err(|_| bad()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0u8; len as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&buf).into_owned(),
            )))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_reply(r)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(bad()),
    }
}

/// Send one command to `addr` on a fresh connection and read its answer, within `timeout`.
pub fn command(addr: SocketAddr, args: &[&str], timeout: Duration) -> io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    read_reply(&mut BufReader::new(s))
}

/// A running `redis-server`, killed on drop.
pub struct Store {
    child: Option<Child>,
    addr: SocketAddr,
    /// Its working directory (nothing is saved there; `--dir` must exist).
    dir: tempfile::TempDir,
}

impl Store {
    /// Start a store on a free port; panics with a clear message when it cannot.
    pub fn start() -> Store {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Store::start`], returning the error.
    pub fn try_start() -> Result<Store, String> {
        let dir = tempfile::Builder::new()
            .prefix("rempart-store-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut store = Store {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        let mut last = String::new();
        // A free port can be taken between our check and the store's bind: a few tries.
        for _ in 0..3 {
            store.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match store.spawn() {
                Ok(()) => return Ok(store),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = redis_server_bin()?;
        let log =
            std::fs::File::create(self.dir.path().join("redis.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--port")
            .arg(self.addr.port().to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no", "--dir"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // The store dies with the test process (see process.rs: start it from the test's thread).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + STORE_START_TIMEOUT;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server on {} exited at start ({st}): {}",
                    self.addr,
                    self.log()
                ));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on {} did not answer PING within {STORE_START_TIMEOUT:?}: {}",
                    self.addr,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// What the store wrote on its stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Whether the store answers `PING` within 500 ms.
    pub fn ping(&self) -> bool {
        matches!(
            command(self.addr, &["PING"], Duration::from_millis(500)),
            Ok(Reply::Status(s)) if s == "PONG"
        )
    }

    /// One command (2 s at most); panics when the store does not answer.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        command(self.addr, args, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("redis {args:?} on {}: {e}", self.addr))
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// `SIGSTOP`: the kernel still accepts connections, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// `SIGCONT` after [`Store::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kill the store now (`SIGKILL`, reaped): its port refuses connections, its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// Start a killed store again on the same port (empty, as nothing was saved).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.kill();
    }
}
