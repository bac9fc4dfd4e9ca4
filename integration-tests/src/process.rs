//! Start the processes a test needs (`ent-origin`, `rempart`) on free ports, wait until they
//! answer, and kill them on drop.

use std::collections::HashSet;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http1;
use crate::origin::OriginStats;
pub use crate::origin::ReceivedRequest;

/// How long `Origin::start` waits for `/healthz`.
pub const ORIGIN_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Rempart::start` waits for the admin `/readyz`.
pub const REMPART_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The repository root (parent of this crate), where `certs/dev/...` relative paths work.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent directory")
        .to_path_buf()
}

/// A path under the repository root, e.g. `repo_path("certs/dev/ca.crt")`.
pub fn repo_path(rel: &str) -> PathBuf {
    workspace_root().join(rel)
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago, never the same twice in this process.
pub fn free_port() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if handed.insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Directories next to the running test executable (`target/<profile>/deps/x` -> `deps`, then
/// `target/<profile>`), where cargo puts the binaries of the workspace.
fn exe_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let mut d = exe.parent();
        for _ in 0..2 {
            if let Some(dir) = d {
                v.push(dir.to_path_buf());
                d = dir.parent();
            }
        }
    }
    v
}

/// The `ent-origin` binary: `$ENT_ORIGIN_BIN`, else next to the test executable (cargo builds it
/// before the tests of this crate), else `<root>/target/debug/ent-origin`.
pub fn ent_origin_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ENT_ORIGIN_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = exe_dirs()
        .into_iter()
        .map(|d| d.join("ent-origin"))
        .collect();
    candidates.push(workspace_root().join("target/debug/ent-origin"));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "ent-origin binary not found (looked at {candidates:?}); build it: cargo build -p integration-tests"
        )
    })
}

/// The `rempart` binary: `$REMPART_BIN`, else next to the test executable, else
/// `<root>/target/debug/rempart`.
pub fn rempart_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("REMPART_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "REMPART_BIN={} does not exist: build rempart first: cargo build",
                p.display()
            ))
        };
    }
    let mut candidates: Vec<PathBuf> = exe_dirs().into_iter().map(|d| d.join("rempart")).collect();
    candidates.push(workspace_root().join("target/debug/rempart"));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "the rempart binary was not found (looked at {candidates:?}): build rempart first: cargo build \
             (or set REMPART_BIN)"
        )
    })
}

/// Kill the child if the test process dies (Linux), so no process outlives a crashed test run.
/// PR_SET_PDEATHSIG follows the *thread* that spawned the child: start processes from the test's
/// own thread (or a thread that lives as long as them), not from a short-lived helper thread.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// Wait up to `timeout` for the child to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// "exit code 1", "killed by signal 9".
pub fn describe_exit(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{st:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// ent-origin

/// A running `ent-origin` process, killed on drop.
pub struct Origin {
    child: Child,
    addr: SocketAddr,
    name: String,
}

impl Origin {
    /// Start an origin on a free port with extra command-line arguments (e.g.
    /// `&["--latency", "/auth/login=200ms"]`), wait until `/healthz` answers (10 s at most), and
    /// reset its counters. Panics with a clear message when it cannot start.
    pub fn start(name: &str, extra_args: &[&str]) -> Origin {
        Self::try_start(name, extra_args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Origin::start`], returning the error.
    pub fn try_start(name: &str, extra_args: &[&str]) -> Result<Origin, String> {
        let bin = ent_origin_bin()?;
        let mut last_err = String::new();
        // A free port can be taken between our check and the origin's bind: retry a few times.
        for _ in 0..3 {
            match Self::start_on(&bin, None, free_addr(), name, extra_args) {
                Ok(o) => return Ok(o),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Start an origin on a chosen address (e.g. to bring a killed one back on the same port).
    pub fn start_at(addr: SocketAddr, name: &str, extra_args: &[&str]) -> Result<Origin, String> {
        Self::start_on(&ent_origin_bin()?, None, addr, name, extra_args)
    }

    /// Start an origin inside a network namespace (`ip netns exec NETNS ent-origin ...`), on an
    /// address of that namespace the test process can reach (see `netns`).
    pub fn start_in_netns(
        netns: &str,
        addr: SocketAddr,
        name: &str,
        extra_args: &[&str],
    ) -> Result<Origin, String> {
        Self::start_on(&ent_origin_bin()?, Some(netns), addr, name, extra_args)
    }

    fn start_on(
        bin: &Path,
        netns: Option<&str>,
        addr: SocketAddr,
        name: &str,
        extra_args: &[&str],
    ) -> Result<Origin, String> {
        // `ip netns exec` enters the namespace and execs the program (same process).
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new(crate::netns::ip_bin());
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--name")
            .arg(name)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut o = Origin {
            child,
            addr,
            name: name.to_string(),
        };
        let deadline = Instant::now() + ORIGIN_START_TIMEOUT;
        loop {
            if let Ok(Some(st)) = o.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = o.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!(
                    "ent-origin {name} on {addr} exited at start ({}): {}",
                    describe_exit(&st),
                    err.trim()
                ));
            }
            if let Ok(a) = http1::request(addr, "GET", "/healthz", &[], b"", Duration::from_secs(1))
            {
                if a.status == 200 {
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("ent-origin {name} on {addr} did not answer /healthz within {ORIGIN_START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        o.reset();
        Ok(o)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET /__origin/stats`.
    pub fn stats(&self) -> OriginStats {
        let a = http1::get(self.addr, "/__origin/stats")
            .unwrap_or_else(|e| panic!("ent-origin {} stats: {e}", self.name));
        serde_json::from_slice(&a.body).unwrap_or_else(|e| {
            panic!(
                "ent-origin {} stats are not JSON ({e}): {}",
                self.name,
                a.text()
            )
        })
    }

    /// `GET /__origin/requests`: the requests received (the last 20,000, `/healthz` excluded),
    /// oldest first. Needs `--record-requests` (panics otherwise).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.received("/__origin/requests")
    }

    /// Like [`Origin::requests`], only those of this method (any case), e.g. "POST".
    pub fn requests_with_method(&self, method: &str) -> Vec<ReceivedRequest> {
        self.received(&format!("/__origin/requests?method={method}"))
    }

    fn received(&self, path: &str) -> Vec<ReceivedRequest> {
        let a = http1::request(self.addr, "GET", path, &[], b"", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("ent-origin {} requests: {e}", self.name));
        assert_eq!(
            a.status,
            200,
            "ent-origin {} requests: {}",
            self.name,
            a.text()
        );
        serde_json::from_slice(&a.body).unwrap_or_else(|e| {
            panic!(
                "ent-origin {} requests are not JSON ({e}): {}",
                self.name,
                a.text()
            )
        })
    }

    fn control(&self, what: &str) {
        let a = http1::post(self.addr, &format!("/__origin/{what}"))
            .unwrap_or_else(|e| panic!("ent-origin {} {what}: {e}", self.name));
        assert_eq!(
            a.status,
            200,
            "ent-origin {} {what}: {}",
            self.name,
            a.text()
        );
    }

    /// Zero the counters.
    pub fn reset(&self) {
        self.control("reset")
    }

    /// Make `/healthz` answer 503.
    pub fn fail_health(&self) {
        self.control("health/fail")
    }

    /// Make `/healthz` answer 200 again.
    pub fn heal(&self) {
        self.control("health/ok")
    }

    /// Answer every request but `/healthz` with this status (the health checks still pass).
    pub fn force_status(&self, status: u16) {
        self.control(&format!("answer/{status}"))
    }

    /// Undo [`Origin::force_status`].
    pub fn answer_normally(&self) {
        self.control("answer/normal")
    }

    /// Kill the process now (the port then refuses connections).
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// Stop the process (SIGSTOP): connections are accepted by the kernel but never answered.
    pub fn freeze(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGSTOP);
        }
    }

    /// Resume after [`Origin::freeze`].
    pub fn thaw(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// rempart

/// What the harness reads from a configuration: the addresses to talk to.
#[derive(Debug, Clone)]
struct Addresses {
    admin: SocketAddr,
    listeners: Vec<SocketAddr>,
    token: Option<String>,
}

/// `${NAME}` / `${NAME:-default}` in `s`, from `env` (the variables given to rempart).
fn expand_env(s: &str, env: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = &rest[i + 2..i + j];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let value = env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| default.map(str::to_string))
            .unwrap_or_default();
        out.push_str(&value);
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

fn addresses_with_env(yaml: &str, env: &[(&str, &str)]) -> Result<Addresses, String> {
    let v: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("the test's YAML does not parse: {e}"))?;
    let admin = match v
        .get("admin")
        .and_then(|a| a.get("address"))
        .and_then(|a| a.as_str())
    {
        Some(a) => a.parse().map_err(|e| format!("admin.address {a:?}: {e}"))?,
        None => "127.0.0.1:9901".parse().unwrap(),
    };
    let listeners = v
        .get("listeners")
        .and_then(|l| l.as_sequence())
        .map(|seq| {
            seq.iter()
                .filter_map(|l| l.get("address").and_then(|a| a.as_str()))
                .filter_map(|a| a.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let token = v
        .get("admin")
        .and_then(|a| a.get("token"))
        .and_then(|t| t.as_str())
        .map(|t| expand_env(t, env))
        .filter(|t| !t.is_empty());
    Ok(Addresses {
        admin,
        listeners,
        token,
    })
}

/// A running `rempart -c FILE`, killed (SIGKILL) and reaped on drop.
pub struct Rempart {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    addrs: Addresses,
    exit: Option<ExitStatus>,
    env: Vec<(String, String)>,
}

fn spawn_rempart(
    bin: &Path,
    args: &[&std::ffi::OsStr],
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<Child, String> {
    let out = fs::File::create(dir.join("stdout")).map_err(|e| e.to_string())?;
    let err = fs::File::create(dir.join("stderr")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // The tests say everything in their YAML: no token or secret from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("REMPART_") && k != "REMPART_BIN" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    die_with_parent(&mut cmd);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

impl Rempart {
    /// Write `yaml` to a temporary file, run `rempart -c FILE` from the repository root, and wait
    /// until `GET http://<admin.address>/readyz` answers 200 (20 s at most). When the process
    /// exits first, or is not ready in time, the error holds its stderr.
    pub fn start(yaml: &str) -> Result<Rempart, String> {
        Self::start_with_env(yaml, &[])
    }

    /// [`Rempart::start`] with extra environment variables (for `${NAME}` in the YAML).
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Result<Rempart, String> {
        let bin = rempart_bin()?;
        let addrs = addresses_with_env(yaml, env)?;
        let (dir, config) = config_in_tempdir(yaml)?;
        let child = spawn_rempart(&bin, &["-c".as_ref(), config.as_os_str()], dir.path(), env)?;
        let mut r = Rempart {
            child: Some(child),
            dir,
            config,
            addrs,
            exit: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let deadline = Instant::now() + REMPART_START_TIMEOUT;
        loop {
            if let Some(st) = r.try_exit() {
                return Err(format!(
                    "rempart exited during start-up ({}).\nstderr:\n{}\nstdout:\n{}",
                    describe_exit(&st),
                    r.stderr(),
                    r.stdout()
                ));
            }
            if let Ok(a) = r.admin_request("GET", "/readyz", Duration::from_secs(1)) {
                if a.status == 200 {
                    return Ok(r);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "rempart did not answer 200 on http://{}/readyz within {REMPART_START_TIMEOUT:?}.\nstderr:\n{}",
                    r.addrs.admin,
                    r.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Start `rempart -u -c FILE` on this instance's configuration file: the new process finds
    /// this one by the pid file, signals it and takes its listening sockets over (zero-downtime
    /// upgrade). It does not wait for readiness: the admin port stays with this process until
    /// it has drained.
    pub fn spawn_upgrade(&self) -> Result<Rempart, String> {
        let bin = rempart_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("rempart-upgrade-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let child = spawn_rempart(
            &bin,
            &["-u".as_ref(), "-c".as_ref(), self.config.as_os_str()],
            dir.path(),
            &env,
        )?;
        Ok(Rempart {
            child: Some(child),
            dir,
            config: self.config.clone(),
            addrs: self.addrs.clone(),
            exit: None,
            env: self.env.clone(),
        })
    }

    /// The admin address from the YAML.
    pub fn admin_addr(&self) -> SocketAddr {
        self.addrs.admin
    }

    /// The address of `listeners[i]` from the YAML.
    pub fn listener(&self, i: usize) -> SocketAddr {
        self.addrs.listeners[i]
    }

    /// The configuration file path (absolute).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Replace the configuration file's content (then SIGHUP or `POST /reload`).
    pub fn write_config(&mut self, yaml: &str) {
        fs::write(&self.config, yaml).expect("write the configuration file");
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Ok(a) = addresses_with_env(yaml, &env) {
            self.addrs.token = a.token;
        }
    }

    /// The admin token the harness sends (taken from the YAML, `${NAME}` expanded from the
    /// environment given at start); change it to test authentication.
    pub fn set_admin_token(&mut self, token: Option<&str>) {
        self.addrs.token = token.map(str::to_string);
    }

    /// The temporary directory holding the configuration, stdout and stderr.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn admin_request(
        &self,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> std::io::Result<http1::Answer> {
        self.admin_request_with(method, path, &[], timeout)
    }

    /// An admin request as an operator's tool sends it: the token when there is one, and the
    /// `X-Rempart-Admin: 1` header that marks a deliberate call on mutating methods.
    fn admin_request_with(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        timeout: Duration,
    ) -> std::io::Result<http1::Answer> {
        let auth;
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = &self.addrs.token {
            auth = format!("Bearer {t}");
            headers.push(("Authorization", &auth));
        }
        if method != "GET" && method != "HEAD" {
            headers.push(("X-Rempart-Admin", "1"));
        }
        headers.extend_from_slice(extra);
        http1::request(self.addrs.admin, method, path, &headers, b"", timeout)
    }

    /// An admin call with chosen headers only (no token, no `X-Rempart-Admin`), as a browser
    /// or another client would make it: (status, body).
    pub fn admin_raw(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        match http1::request(
            self.addrs.admin,
            method,
            path,
            headers,
            b"",
            Duration::from_secs(5),
        ) {
            Ok(a) => (a.status, a.text()),
            Err(e) => panic!("admin {method} {path} failed: {e}"),
        }
    }

    /// `GET` on the admin API, without panicking when nothing answers yet (for polls).
    pub fn try_admin(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.admin_request("GET", path, Duration::from_secs(5))
            .map(|a| (a.status, a.text()))
    }

    /// `GET` on the admin API (with the YAML's token when it has one): (status, body).
    pub fn admin(&self, path: &str) -> (u16, String) {
        self.admin_call("GET", path)
    }

    /// The value of the first `/metrics` line that starts with `line_start` (a series with
    /// its labels and the space after them, e.g. `"rempart_connections_active "`).
    pub fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, text) = self.admin("/metrics");
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// `POST` on the admin API: (status, body).
    pub fn admin_post(&self, path: &str) -> (u16, String) {
        self.admin_call("POST", path)
    }

    /// Any method on the admin API: (status, body).
    pub fn admin_call(&self, method: &str, path: &str) -> (u16, String) {
        match self.admin_request(method, path, Duration::from_secs(5)) {
            Ok(a) => (a.status, a.text()),
            Err(e) => panic!(
                "admin {method} http://{}{path} failed: {e}\nrempart stderr:\n{}",
                self.addrs.admin,
                self.stderr()
            ),
        }
    }

    /// `GET` on the admin API, expecting 200 and JSON.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.admin(path);
        assert_eq!(status, 200, "admin GET {path} answered {status}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("admin GET {path} is not JSON ({e}): {body}"))
    }

    /// Send a signal (e.g. `libc::SIGTERM`, `libc::SIGHUP`).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.exit = Some(st);
                }
            }
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.exit = wait_child(c, timeout);
            }
        }
        self.exit
    }

    /// Everything written on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Everything written on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The stdout lines that are JSON objects (the access log when `access_log: stdout`).
    pub fn access_log_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// Wait (bounded) for an access log line matching `pred`.
    pub fn wait_access_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        crate::poll_until(timeout, || {
            self.access_log_lines().into_iter().find(|l| pred(l))
        })
    }
}

impl Drop for Rempart {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

/// Start rempart and panic with what went wrong (the usual way to start it in a test).
pub fn start_rempart(yaml: &str) -> Rempart {
    Rempart::start(yaml).unwrap_or_else(|e| panic!("{e}\n--- configuration ---\n{yaml}"))
}

/// What a finished `rempart` run left.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code (None when killed by a signal).
    pub code: Option<i32>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The configuration file path given on the command line.
    pub config: PathBuf,
}

/// A fresh temporary directory holding `yaml` as `rempart.yaml` (and, later, the process's
/// stdout and stderr).
fn config_in_tempdir(yaml: &str) -> Result<(tempfile::TempDir, PathBuf), String> {
    let dir = tempfile::Builder::new()
        .prefix("rempart-test-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let config = dir.path().join("rempart.yaml");
    fs::write(&config, yaml).map_err(|e| e.to_string())?;
    Ok((dir, config))
}

fn run_to_end(
    args_before_c: &[&str],
    yaml: &str,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Result<Finished, String> {
    let bin = rempart_bin()?;
    let (dir, config) = config_in_tempdir(yaml)?;
    let mut args: Vec<&std::ffi::OsStr> = args_before_c.iter().map(|a| a.as_ref()).collect();
    args.push("-c".as_ref());
    args.push(config.as_os_str());
    let mut child = spawn_rempart(&bin, &args, dir.path(), env)?;
    let st = wait_child(&mut child, timeout);
    let stdout = fs::read_to_string(dir.path().join("stdout")).unwrap_or_default();
    let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    match st {
        Some(status) => Ok(Finished {
            code: status.code(),
            status,
            stdout,
            stderr,
            config,
        }),
        None => {
            kill_and_reap(&mut child);
            Err(format!(
                "rempart {args_before_c:?} -c FILE was still running after {timeout:?} (killed).\nstderr:\n{stderr}\nstdout:\n{stdout}"
            ))
        }
    }
}

/// Run `rempart ARGS -c FILE` on `yaml` and expect it to exit within `timeout` (e.g. `&["-u"]`
/// with no instance to take over from). `Err` when it was still running at the deadline (it is
/// killed then), with its output.
pub fn rempart_run(
    args_before_c: &[&str],
    yaml: &str,
    timeout: Duration,
) -> Result<Finished, String> {
    run_to_end(args_before_c, yaml, timeout, &[])
}

/// `rempart -t -c FILE` on `yaml` (10 s at most): (exit code, stdout, stderr), the code being
/// -1 when killed by a signal. Panics when the binary is missing or the check hangs.
pub fn rempart_check(yaml: &str) -> (i32, String, String) {
    let f = rempart_check_full(yaml);
    (f.code.unwrap_or(-1), f.stdout, f.stderr)
}

/// [`rempart_check`] with the configuration path it used.
pub fn rempart_check_full(yaml: &str) -> Finished {
    rempart_check_with_env(yaml, &[])
}

/// [`rempart_check_full`] with environment variables for rempart (e.g. the schedules' clock).
pub fn rempart_check_with_env(yaml: &str, env: &[(&str, &str)]) -> Finished {
    run_to_end(&["-t"], yaml, Duration::from_secs(10), env).unwrap_or_else(|e| panic!("{e}"))
}

/// Run `rempart -c FILE` and expect it to exit within `timeout` (a start-up failure). `Err`
/// when it was still running at the deadline (it is killed then), with its output.
pub fn rempart_run_expect_exit(yaml: &str, timeout: Duration) -> Result<Finished, String> {
    rempart_run_expect_exit_with_env(yaml, timeout, &[])
}

/// [`rempart_run_expect_exit`] with environment variables for rempart.
pub fn rempart_run_expect_exit_with_env(
    yaml: &str,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Result<Finished, String> {
    run_to_end(&[], yaml, timeout, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_of_the_admin_token() {
        assert_eq!(expand_env("${T}", &[("T", "abc")]), "abc");
        assert_eq!(expand_env("${T:-def}", &[]), "def");
        assert_eq!(expand_env("${T:-}", &[]), "");
        assert_eq!(expand_env("x${T}y", &[("T", "1")]), "x1y");
        let a = addresses_with_env(
            "admin: { address: 127.0.0.1:1, token: \"${TOK}\" }\nlisteners: [{address: 127.0.0.1:2}]",
            &[("TOK", "s3")],
        )
        .unwrap();
        assert_eq!(a.token.as_deref(), Some("s3"));
        assert_eq!(
            a.listeners,
            vec!["127.0.0.1:2".parse::<SocketAddr>().unwrap()]
        );
    }
}
