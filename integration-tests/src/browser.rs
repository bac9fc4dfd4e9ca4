//! Headless Chromium (Debian's `chromium`, installed by `.ci/install-deps.sh`) for the tests that
//! look at what a person sees: one-shot runs (`--dump-dom`, `--screenshot`), and a live page
//! driven over the DevTools protocol ([`Browser`]) to read its DOM while its scripts run.
//!
//! Every run has its own fresh profile, and every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The Chromium binary, when installed.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The Chromium binary, or a panic that says how to install it.
pub fn chromium_or_panic() -> PathBuf {
    chromium().expect(
        "Chromium is needed to test the pages people see: `make test` installs Debian's chromium (.ci/install-deps.sh)",
    )
}

/// Chromium headless as root in a container, quiet (no network of its own), with `profile` as
/// its user data directory.
pub fn chromium_command(bin: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// Run Chromium once on `url` with `args` (e.g. `--dump-dom`), a fresh profile, killed after
/// `timeout`.
pub fn run_chromium(args: &[&str], url: &str, timeout: Duration) -> Output {
    let bin = chromium_or_panic();
    let profile = tempfile::tempdir().expect("profile dir");
    let child = chromium_command(&bin, profile.path())
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_err() {
            // Still running after `timeout`: end it (and only it).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    });
    let output = child.wait_with_output().expect("chromium output");
    let _ = done_tx.send(());
    let _ = killer.join();
    output
}

/// `target/test-artifacts/` of the workspace, created.
pub fn artifacts_dir() -> PathBuf {
    let dir = crate::repo_path("target/test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A Chromium that opened one page, driven over the DevTools protocol. Killed on drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Start Chromium on `url` with `args` and attach to its page (within 20 s).
    pub async fn open(url: &str, args: &[&str]) -> Result<Browser, String> {
        let bin = chromium().ok_or("Chromium is not installed")?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = chromium_command(&bin, profile.path())
            .arg("--remote-debugging-port=0")
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromium: {e}"))?;
        match Self::attach(profile.path()).await {
            Ok(ws) => Ok(Browser {
                child,
                _profile: profile,
                ws,
                next_id: 0,
            }),
            Err(e) => {
                stop(&mut child);
                Err(e)
            }
        }
    }

    async fn attach(
        profile: &Path,
    ) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, String> {
        // Chromium writes the port it listens on into the profile.
        let file = profile.join("DevToolsActivePort");
        let port: u16 = crate::poll_until_async(Duration::from_secs(20), || async {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        })
        .await
        .ok_or("Chromium did not open its DevTools port within 20 s")?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let list = format!("http://127.0.0.1:{port}/json/list");
        let ws_url = crate::poll_until_async(Duration::from_secs(10), || async {
            let targets: Value = client.get(&list).send().await.ok()?.json().await.ok()?;
            targets
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        })
        .await
        .ok_or("no page target in Chromium within 10 s")?;
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let (ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), tcp)
            .await
            .map_err(|e| format!("DevTools websocket: {e}"))?;
        Ok(ws)
    }

    /// Evaluate `expression` in the page and return its value (None when the page is between
    /// two documents, or the expression threw). At most 5 s.
    pub async fn eval(&mut self, expression: &str) -> Option<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true },
        });
        let exchange = async {
            self.ws
                .send(Message::Text(call.to_string().into()))
                .await
                .ok()?;
            while let Some(msg) = self.ws.next().await {
                let Ok(Message::Text(text)) = msg else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if v["id"] == id {
                    let result = &v["result"];
                    if result.get("exceptionDetails").is_some() || v.get("error").is_some() {
                        return None;
                    }
                    return Some(result["result"]["value"].clone());
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .ok()
            .flatten()
    }

    /// Evaluate `expression` every 100 ms until it is `true`, for at most `timeout`.
    pub async fn wait_true(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.eval(expression).await == Some(Value::Bool(true)) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// End a Chromium this module started: SIGTERM (it ends its own helper processes), SIGKILL if
/// it is still there 5 s later.
fn stop(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
