//! Zero-downtime upgrade in one command. `rempart -u` finds the running instance by its pid file,
//! signals it itself and takes its listening sockets, under keep-alive GETs, GETs on new
//! connections and POSTs: no request fails and no POST reaches a backend twice. SIGUSR2 makes the
//! running process start the new binary itself, and the new process names itself to systemd (a
//! stand-in notification socket). Every way the upgrade can fail says why, exits non-zero and
//! leaves the old process serving.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::clients::{http_client, http_client_no_reuse};
use integration_tests::origin::RECORD_CAPACITY;
use integration_tests::poll_until;
use integration_tests::process::{describe_exit, free_addr, rempart_run, Origin, Rempart};
use integration_tests::stack::{wait_routable, ProxyYaml};

// ---------------------------------------------------------------------------------------------
// Load: what clients saw while the upgrade ran.

#[derive(Default)]
struct Kind {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Default)]
struct Load {
    keepalive_get: Kind,
    fresh_get: Kind,
    post: Kind,
    /// The `X-Test-Id` of every POST answered with a 2xx.
    posted: Mutex<Vec<String>>,
    /// The first failures, for the message.
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn ok(&self) -> [u64; 3] {
        [
            self.keepalive_get.ok.load(Ordering::Relaxed),
            self.fresh_get.ok.load(Ordering::Relaxed),
            self.post.ok.load(Ordering::Relaxed),
        ]
    }

    fn failed(&self) -> u64 {
        [&self.keepalive_get, &self.fresh_get, &self.post]
            .iter()
            .map(|k| k.failed.load(Ordering::Relaxed))
            .sum()
    }

    fn record_failure(&self, kind: &Kind, what: String) {
        kind.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(what);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Client {
    KeepAliveGet,
    FreshGet,
    KeepAlivePost,
    FreshPost,
}

/// Clients looping on `base` until `stop` (and at most `limit`): 4 keep-alive GETs, 3 GETs on a
/// new connection each, 2 keep-alive POSTs and 2 POSTs on new connections, each POST with its own
/// `X-Test-Id`. 20 ms between two requests of a client.
fn spawn_load(
    base: String,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> (Arc<Load>, std::thread::JoinHandle<()>) {
    let load = Arc::new(Load::default());
    let shared = load.clone();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let deadline = Instant::now() + limit;
            let clients = [
                Client::KeepAliveGet,
                Client::KeepAliveGet,
                Client::KeepAliveGet,
                Client::KeepAliveGet,
                Client::FreshGet,
                Client::FreshGet,
                Client::FreshGet,
                Client::KeepAlivePost,
                Client::KeepAlivePost,
                Client::FreshPost,
                Client::FreshPost,
            ];
            let mut tasks = Vec::new();
            for (index, client) in clients.into_iter().enumerate() {
                let (base, stop, load) = (base.clone(), stop.clone(), shared.clone());
                tasks.push(tokio::spawn(async move {
                    let http = match client {
                        Client::KeepAliveGet | Client::KeepAlivePost => http_client(),
                        Client::FreshGet | Client::FreshPost => http_client_no_reuse(),
                    };
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        n += 1;
                        let id = format!("c{index}-{n}");
                        let (kind, request) = match client {
                            Client::KeepAliveGet => {
                                (&load.keepalive_get, http.get(format!("{base}/page/{n}")))
                            }
                            Client::FreshGet => {
                                (&load.fresh_get, http.get(format!("{base}/fresh/{n}")))
                            }
                            Client::KeepAlivePost | Client::FreshPost => (
                                &load.post,
                                http.post(format!("{base}/form"))
                                    .header("X-Test-Id", &id)
                                    .header("Content-Type", "application/x-www-form-urlencoded")
                                    .body(format!("id={id}&note=upgrade")),
                            ),
                        };
                        match request.send().await {
                            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                                Ok(_) => {
                                    kind.ok.fetch_add(1, Ordering::Relaxed);
                                    if matches!(client, Client::KeepAlivePost | Client::FreshPost) {
                                        load.posted.lock().unwrap().push(id);
                                    }
                                }
                                Err(e) => load
                                    .record_failure(kind, format!("{client:?} {id}: body {e:?}")),
                            },
                            Ok(resp) => {
                                let status = resp.status();
                                let body = resp.text().await.unwrap_or_default();
                                load.record_failure(
                                    kind,
                                    format!("{client:?} {id}: status {status}: {}", body.trim()),
                                );
                            }
                            Err(e) => load.record_failure(kind, format!("{client:?} {id}: {e:?}")),
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
    });
    (load, handle)
}

/// Wait (bounded) until every kind of client has had `more` successes beyond `since`.
fn wait_progress(load: &Load, since: [u64; 3], more: u64, timeout: Duration) -> bool {
    poll_until(timeout, || {
        let now = load.ok();
        (0..3).all(|i| now[i] >= since[i] + more).then_some(())
    })
    .is_some()
}

/// No request failed, and each POST answered 2xx reached the origins exactly once (and none
/// reached them that the client did not see answered).
fn assert_no_failure_and_each_post_once(load: &Load, origins: &[Origin], context: &str) {
    let failed = load.failed();
    eprintln!(
        "answered across the upgrade (keep-alive GETs, new-connection GETs, POSTs): {:?}, failed: {failed}",
        load.ok()
    );
    assert_eq!(
        failed,
        0,
        "no request fails across the upgrade (ok per kind: {:?}); first failures: {:?}\n{context}",
        load.ok(),
        load.failures.lock().unwrap()
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut recorded = 0;
    for origin in origins {
        let all = origin.requests();
        assert!(
            all.len() < RECORD_CAPACITY,
            "origin {} recorded {} requests, its whole capacity: some may have been dropped",
            origin.name(),
            all.len()
        );
        recorded += all.len();
        for request in origin.requests_with_method("POST") {
            if let Some(id) = request.test_id {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs applied more than once: {twice:?}");
    let posted = load.posted.lock().unwrap();
    assert!(!posted.is_empty(), "POSTs were sent during the upgrade");
    let missing: Vec<_> = posted.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "POSTs answered 2xx that no origin received: {missing:?}"
    );
    assert_eq!(
        seen.len(),
        posted.len(),
        "every POST the origins received was answered to its client ({recorded} requests recorded)"
    );
}

// ---------------------------------------------------------------------------------------------
// Set-up.

/// A private runtime directory (0700) for one test's instance.
fn runtime_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("rempart-rt-")
        .tempdir()
        .expect("runtime directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("runtime directory 0700");
    dir
}

fn pid_file(dir: &Path, yaml: &ProxyYaml) -> PathBuf {
    dir.join(format!("rempart-{}.pid", yaml.ports.admin.port()))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Origins recording what they receive, and the YAML of a rempart in front of them that keeps
/// its pid file and upgrade socket in `dir`.
fn recording_origins_and_yaml(dir: &Path) -> (Vec<Origin>, ProxyYaml) {
    let origins = vec![
        Origin::start("a1", &["--record-requests"]),
        Origin::start("a2", &["--record-requests"]),
    ];
    let mut yaml = ProxyYaml::new(origins.iter().map(|o| o.addr()).collect(), vec![]);
    yaml.server.push(format!("runtime_dir: {}", dir.display()));
    (origins, yaml)
}

fn start_routable(yaml: &ProxyYaml, env: &[(&str, &str)], origins: &[Origin]) -> Rempart {
    let text = yaml.render();
    let rempart = Rempart::start_with_env(&text, env)
        .unwrap_or_else(|e| panic!("{e}\n--- configuration ---\n{text}"));
    if let Err(e) = wait_routable(yaml.ports.http, Duration::from_secs(10)) {
        panic!("{e}\nrempart stderr:\n{}", rempart.stderr());
    }
    for origin in origins {
        origin.reset();
    }
    rempart
}

/// The pid `/status` reports, once the admin API answers (bounded).
fn status_pid(rempart: &Rempart, timeout: Duration) -> Option<u64> {
    poll_until(timeout, || {
        let (code, body) = rempart.try_admin("/status").ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&body).ok()?["pid"].as_u64()
    })
}

/// Processes that are not the test's children (a new process started by SIGUSR2), killed at the
/// end whatever happens: the pids named, and the one in the instance's pid file, when they run
/// a rempart.
struct KillAtEnd {
    pid_file: PathBuf,
    pids: Mutex<Vec<u32>>,
}

impl KillAtEnd {
    fn new(pid_file: PathBuf) -> KillAtEnd {
        KillAtEnd {
            pid_file,
            pids: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid);
    }
}

impl Drop for KillAtEnd {
    fn drop(&mut self) {
        let mut pids = self.pids.lock().map(|p| p.clone()).unwrap_or_default();
        pids.extend(read_pid(&self.pid_file));
        for pid in pids {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let is_rempart = exe
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rempart"));
            if is_rempart {
                // SAFETY: kill(2) on a pid checked just above to run a rempart.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn one_command_upgrade_under_load_fails_no_request_and_applies_no_post_twice() {
    let dir = runtime_dir();
    let (origins, yaml) = recording_origins_and_yaml(dir.path());
    let mut old = start_routable(&yaml, &[], &origins);
    let pid_file = pid_file(dir.path(), &yaml);
    assert_eq!(
        read_pid(&pid_file),
        Some(old.pid()),
        "the running process names itself in {}",
        pid_file.display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (load, clients) = spawn_load(
        format!("http://{}", yaml.ports.http),
        stop.clone(),
        Duration::from_secs(120),
    );
    assert!(
        wait_progress(&load, [0; 3], 20, Duration::from_secs(20)),
        "every kind of client is served before the upgrade: {:?}; failures {:?}",
        load.ok(),
        load.failures.lock().unwrap()
    );

    // The one command. Nobody sends the old process a signal: the new one does.
    let mut new = old.spawn_upgrade().expect("start rempart -u");
    let old_exit = old.wait_exit(Duration::from_secs(45));
    let Some(old_exit) = old_exit else {
        stop.store(true, Ordering::Relaxed);
        let _ = clients.join();
        panic!(
            "the old process still runs 45 s after `rempart -u`: it was not taken over.\nnew stderr:\n{}\nold stderr:\n{}",
            new.stderr(),
            old.stderr()
        );
    };
    assert_eq!(
        old_exit.code(),
        Some(0),
        "the old process drained and exited ({})",
        describe_exit(&old_exit)
    );
    assert!(new.is_running(), "the new process runs: {}", new.stderr());
    let new_pid = status_pid(&new, Duration::from_secs(20));
    assert_eq!(
        new_pid,
        Some(u64::from(new.pid())),
        "the new process serves the admin API once the old one let its port go: {}",
        new.stderr()
    );
    let after = load.ok();
    let served = wait_progress(&load, after, 20, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    clients.join().expect("load thread");
    assert!(
        served,
        "every kind of client is served by the new process: {after:?} then {:?}",
        load.ok()
    );
    assert_no_failure_and_each_post_once(
        &load,
        &origins,
        &format!("new stderr:\n{}", new.stderr()),
    );

    assert!(
        new.stderr().contains("took over the listening sockets"),
        "the new process says it took over: {}",
        new.stderr()
    );
    assert!(
        old.stderr()
            .contains("handing the listening sockets over to the new process"),
        "the old process says it handed over: {}",
        old.stderr()
    );
    assert_eq!(
        read_pid(&pid_file),
        Some(new.pid()),
        "the pid file names the new process"
    );
    drop(new);
    drop(origins);
}

#[test]
fn sigusr2_starts_the_new_binary_which_names_itself_to_systemd() {
    let dir = runtime_dir();
    let (origins, yaml) = recording_origins_and_yaml(dir.path());
    let pid_file = pid_file(dir.path(), &yaml);
    let strays = KillAtEnd::new(pid_file.clone());

    // systemd's notification socket, played by the test.
    let notify_dir = tempfile::tempdir().expect("notify dir");
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notification socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let notify_env = notify_path.display().to_string();
    let mut old = start_routable(&yaml, &[("NOTIFY_SOCKET", &notify_env)], &origins);

    let ready = receive_until(&notify, Duration::from_secs(20), |m| m.contains("READY=1"));
    let ready = ready.expect("rempart tells the service manager it is ready");
    assert!(
        ready.contains(&format!("MAINPID={}", old.pid())),
        "READY=1 comes with the main pid: {ready:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (load, clients) = spawn_load(
        format!("http://{}", yaml.ports.http),
        stop.clone(),
        Duration::from_secs(120),
    );
    assert!(
        wait_progress(&load, [0; 3], 20, Duration::from_secs(20)),
        "load flows before the upgrade"
    );

    // As rempart-upgrade does under systemd.
    old.signal(libc::SIGUSR2);
    let old_pid_line = format!("MAINPID={}", old.pid());
    let named = receive_until(&notify, Duration::from_secs(30), |m| {
        m.contains("READY=1") && m.contains("MAINPID=") && !m.contains(&old_pid_line)
    });
    let Some(named) = named else {
        stop.store(true, Ordering::Relaxed);
        let _ = clients.join();
        panic!(
            "no new main process was announced after SIGUSR2.\nstderr (both processes):\n{}",
            old.stderr()
        );
    };
    let new_pid: u32 = named
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("MAINPID is a number: {named:?}"));
    strays.add(new_pid);

    let old_exit = old.wait_exit(Duration::from_secs(45));
    assert!(
        old_exit.is_some(),
        "the old process exits after handing over: {}",
        old.stderr()
    );
    assert_eq!(
        status_pid(&old, Duration::from_secs(20)),
        Some(u64::from(new_pid)),
        "the announced process serves the admin API"
    );
    let after = load.ok();
    let served = wait_progress(&load, after, 20, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    clients.join().expect("load thread");
    assert!(served, "the new process serves the traffic");
    assert_no_failure_and_each_post_once(&load, &origins, &old.stderr());

    let log = old.stderr();
    assert!(
        log.contains("SIGUSR2: started the new binary"),
        "the old process says what it started: {log}"
    );
    assert_eq!(
        read_pid(&pid_file),
        Some(new_pid),
        "the pid file names the new process"
    );
    drop(strays);
    drop(origins);
}

/// The next datagram on `socket` that satisfies `pred`, within `timeout`.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pred(&message) {
                return Some(message);
            }
        }
    }
    None
}

#[test]
fn upgrade_with_no_rempart_to_take_over_says_why_exits_non_zero_and_signals_nobody() {
    let dir = runtime_dir();
    let mut yaml = ProxyYaml::new(vec![free_addr()], vec![]);
    yaml.tls = false;
    yaml.server
        .push(format!("runtime_dir: {}", dir.path().display()));
    let text = yaml.render();
    let pid_file = pid_file(dir.path(), &yaml);
    let upgrade =
        || rempart_run(&["-u"], &text, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));

    // No pid file: nothing runs with this configuration.
    let run = upgrade();
    assert_eq!(run.code, Some(1), "exit code 1: {}", run.stderr);
    assert!(
        run.stderr.contains("upgrade failed")
            && run.stderr.contains("no pid file")
            && run.stderr.contains(&pid_file.display().to_string()),
        "it says there is no pid file, and where it looked: {}",
        run.stderr
    );

    // A pid file naming a process that is gone.
    let mut gone = Command::new("true").spawn().expect("run true");
    let _ = gone.wait();
    std::fs::write(&pid_file, format!("{}\n", gone.id())).expect("write the pid file");
    let run = upgrade();
    assert_eq!(run.code, Some(1), "exit code 1: {}", run.stderr);
    assert!(
        run.stderr.contains("upgrade failed")
            && run.stderr.contains(&format!("process {}", gone.id()))
            && run.stderr.contains("is not running"),
        "it says the process is not running: {}",
        run.stderr
    );

    // A pid file naming a running process that is no Rempart: it is left alone.
    let bystander = Origin::start("bystander", &[]);
    std::fs::write(&pid_file, format!("{}\n", bystander.pid())).expect("write the pid file");
    let run = upgrade();
    assert_eq!(run.code, Some(1), "exit code 1: {}", run.stderr);
    assert!(
        run.stderr.contains("upgrade failed")
            && run.stderr.contains("is not a Rempart")
            && run.stderr.contains("ent-origin"),
        "it says the process is not a Rempart, and what it runs: {}",
        run.stderr
    );
    let stats = bystander.stats();
    assert!(
        stats.requests_excluding_health() == 0,
        "the bystander was not signalled and still answers"
    );
    assert_eq!(
        read_pid(&pid_file),
        Some(bystander.pid()),
        "a failed upgrade leaves the pid file alone"
    );
}

#[test]
fn an_old_process_that_does_not_hand_over_is_left_serving() {
    let dir = runtime_dir();
    let origin = Origin::start("a1", &[]);
    let mut yaml = ProxyYaml::new(vec![origin.addr()], vec![]);
    yaml.server
        .push(format!("runtime_dir: {}", dir.path().display()));
    let mut old = start_routable(&yaml, &[], std::slice::from_ref(&origin));

    // Stopped, it cannot answer the new process's SIGQUIT in time.
    old.signal(libc::SIGSTOP);
    let mut new = old.spawn_upgrade().expect("start rempart -u");
    let exit = new.wait_exit(Duration::from_secs(40));
    old.signal(libc::SIGCONT);
    let exit = exit.unwrap_or_else(|| panic!("rempart -u gives up: {}", new.stderr()));
    assert_eq!(
        exit.code(),
        Some(1),
        "exit code 1 ({}): {}",
        describe_exit(&exit),
        new.stderr()
    );
    assert!(
        new.stderr().contains("upgrade failed")
            && new
                .stderr()
                .contains("did not hand its listening sockets over"),
        "it says the old process did not hand over: {}",
        new.stderr()
    );

    // Running again, the old process gets the SIGQUIT late, finds nobody waiting, and serves on.
    let ignored = poll_until(Duration::from_secs(20), || {
        old.stderr().contains("SIGQUIT ignored").then_some(())
    });
    assert!(
        ignored.is_some(),
        "the old process says it ignored the SIGQUIT: {}",
        old.stderr()
    );
    // Health checks in flight while it was stopped may have timed out on its resumption: the
    // upstream can take a check or two to be up again.
    let served = poll_until(Duration::from_secs(10), || {
        integration_tests::http1::get(yaml.ports.http, "/still-here")
            .ok()
            .filter(|answer| answer.status == 200)
    });
    assert!(
        served.is_some(),
        "the old process still serves: {}",
        old.stderr()
    );
    assert!(old.is_running(), "the old process still runs");
    assert_eq!(
        status_pid(&old, Duration::from_secs(5)),
        Some(u64::from(old.pid()))
    );
}
