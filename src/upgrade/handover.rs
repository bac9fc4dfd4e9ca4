//! The old process's side of an upgrade. SIGQUIT hands the listening sockets over only while a
//! new process waits on the upgrade socket: pingora, once it has begun, stops this process after
//! its hand-over delay whether or not anybody took the sockets, so a stray SIGQUIT, or one that
//! comes after the new process gave up, is ignored and the process keeps serving. SIGUSR2 starts
//! the new binary from this process (`rempart -u`, the same configuration file): under systemd
//! the new process then runs inside the service, with its user, sandbox, capabilities and
//! cgroup, and tells systemd that it is the service's main process once it serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::runtime::Runtime;

/// pingora's shutdown signals (SIGQUIT: upgrade, SIGTERM: graceful stop, SIGINT: fast stop), with
/// SIGQUIT acted on only once this process listens (before, it has no sockets to give, and pingora
/// would stop it at once) and while a new process waits on `upgrade_sock`.
pub struct ShutdownSignals {
    upgrade_sock: PathBuf,
    runtime: Arc<Runtime>,
}

impl ShutdownSignals {
    pub fn new(upgrade_sock: PathBuf, runtime: Arc<Runtime>) -> ShutdownSignals {
        ShutdownSignals {
            upgrade_sock,
            runtime,
        }
    }

    /// Whether a new process waits for the sockets. When the kernel's table cannot be read, do
    /// as pingora does: try to hand over.
    fn successor_waits(&self) -> bool {
        match super::socket_listening(&self.upgrade_sock) {
            Ok(waits) => waits,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/net/unix: handing over without knowing whether a new process waits");
                true
            }
        }
    }
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot handle {name}");
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownSignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        loop {
            tokio::select! {
                _ = next(&mut quit) => {
                    if !self.runtime.listening.load(Ordering::Acquire) {
                        tracing::warn!("SIGQUIT ignored: still starting, no listening socket to hand over yet");
                        continue;
                    }
                    if self.successor_waits() {
                        tracing::info!(socket = %self.upgrade_sock.display(), "SIGQUIT: handing the listening sockets over to the new process");
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    tracing::warn!(
                        socket = %self.upgrade_sock.display(),
                        "SIGQUIT ignored: no new process waits on the upgrade socket, still serving (start one with rempart -u; stop with SIGTERM)"
                    );
                }
                _ = next(&mut terminate) => return ShutdownSignal::GracefulTerminate,
                _ = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

/// How to start the process that takes over: this binary as it was found at start (a package
/// upgrade replaces the file, and the new file is what runs), on the same configuration file.
#[derive(Debug, Clone)]
pub struct Successor {
    exe: PathBuf,
    config: PathBuf,
    daemon: bool,
    under_way: Arc<AtomicBool>,
}

impl Successor {
    /// From this process's own executable; None when it cannot be found.
    pub fn of_this_process(config: &Path, daemon: bool) -> Option<Successor> {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find this binary: SIGUSR2 will not start an upgrade");
                return None;
            }
        };
        // Read after the file was replaced, the link says "/usr/bin/rempart (deleted)".
        let text = exe.to_string_lossy();
        let exe = match text.strip_suffix(" (deleted)") {
            Some(path) => PathBuf::from(path),
            None => exe,
        };
        Some(Successor {
            exe,
            config: config.to_path_buf(),
            daemon,
            under_way: Arc::new(AtomicBool::new(false)),
        })
    }

    /// SIGUSR2: start `EXE -u -c FILE` (and `-d` when this process is a daemon), with this
    /// process's environment, working directory and standard output and error. A new process
    /// that fails says why on that standard error and exits; this one keeps serving.
    pub fn start(&self, draining: bool) {
        if draining {
            tracing::warn!("SIGUSR2 ignored: this process is already handing over or stopping");
            return;
        }
        if self.under_way.swap(true, Ordering::AcqRel) {
            tracing::warn!("SIGUSR2 ignored: an upgrade is already under way");
            return;
        }
        let mut command = Command::new(&self.exe);
        if self.daemon {
            command.arg("-d");
        }
        command
            .arg("-u")
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.under_way.store(false, Ordering::Release);
                tracing::error!(exe = %self.exe.display(), error = %e, "upgrade failed: cannot start the new binary; still serving");
                return;
            }
        };
        let pid = child.id();
        tracing::info!(
            exe = %self.exe.display(),
            new_pid = pid,
            "SIGUSR2: started the new binary with -u, it takes the listening sockets over"
        );
        let under_way = self.under_way.clone();
        let daemon = self.daemon;
        let waiter = std::thread::Builder::new()
            .name("upgrade-child".into())
            .spawn(move || match child.wait() {
                // A daemon's first process exits once the daemon is forked.
                Ok(status) if status.success() && daemon => {}
                Ok(status) => {
                    under_way.store(false, Ordering::Release);
                    tracing::error!(
                        new_pid = pid,
                        %status,
                        "upgrade failed: the new process exited (its reason is logged above); still serving"
                    );
                }
                Err(e) => {
                    under_way.store(false, Ordering::Release);
                    tracing::error!(new_pid = pid, error = %e, "cannot wait for the new process");
                }
            });
        if let Err(e) = waiter {
            tracing::warn!(error = %e, "cannot watch the new process");
        }
    }
}
