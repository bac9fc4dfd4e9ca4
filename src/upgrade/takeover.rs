//! The new process's side of an upgrade (`rempart -u`): find the old process by the pid file,
//! check that it is a running Rempart of this user, signal it (SIGQUIT) as soon as this process
//! listens on the upgrade socket, and say clearly what happened, or why not.
//!
//! pingora's bootstrap receives the sockets: it listens on the upgrade socket and waits about
//! 6 s for them, then ends the process (exit code 1). Everything that can be checked is checked
//! before the old process is signalled, so that a refusal leaves it untouched; a timeout after
//! the signal is reported when the process exits.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::runtime_dir::InstanceFiles;

/// How long this process may take to listen on the upgrade socket once pingora's bootstrap runs.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// Why this process did not take over.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("no pid file at {path}: no Rempart runs with this admin port and runtime directory (start one without -u)")]
    NoPidFile { path: PathBuf },
    #[error("cannot read the pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("process {pid}, named by {path}, is not running: no Rempart to take over from (start one without -u)")]
    NotRunning { pid: u32, path: PathBuf },
    #[error("process {pid}, named by {path}, belongs to another user: run the upgrade as the user Rempart runs as")]
    OtherUser { pid: u32, path: PathBuf },
    #[error("process {pid}, named by {path}, is not a Rempart (it runs {program}): it was not signalled")]
    NotRempart {
        pid: u32,
        path: PathBuf,
        program: String,
    },
    #[error("the pid file {path} names this very process")]
    Itself { path: PathBuf },
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("this process did not come to listen on the upgrade socket {path} within {LISTEN_WAIT:?}: the old process (pid {pid}) was not signalled and keeps serving")]
    NotListening { path: PathBuf, pid: u32 },
}

/// The running process to take over from, checked.
#[derive(Debug, Clone)]
pub struct OldProcess {
    pub pid: u32,
    pid_file: PathBuf,
}

impl OldProcess {
    /// Read the pid file of this instance and check the process it names.
    pub fn find(files: &InstanceFiles) -> Result<OldProcess, TakeoverError> {
        let path = &files.pid_file;
        let pid = match crate::runtime_dir::read_pid(path) {
            Ok(Some(pid)) => pid,
            Ok(None) => return Err(TakeoverError::NoPidFile { path: path.clone() }),
            Err(source) => {
                return Err(TakeoverError::PidFile {
                    path: path.clone(),
                    source,
                })
            }
        };
        let old = OldProcess {
            pid,
            pid_file: path.clone(),
        };
        old.check()?;
        Ok(old)
    }

    /// The process is alive, ours to signal, and a Rempart.
    fn check(&self) -> Result<(), TakeoverError> {
        let (pid, path) = (self.pid, self.pid_file.clone());
        if pid == std::process::id() {
            return Err(TakeoverError::Itself { path });
        }
        if let Err(e) = send_signal(pid, 0) {
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => TakeoverError::NotRunning { pid, path },
                Some(libc::EPERM) => TakeoverError::OtherUser { pid, path },
                _ => TakeoverError::Signal { pid, source: e },
            });
        }
        let program = program_of(pid);
        if !is_rempart(&program) {
            return Err(TakeoverError::NotRempart { pid, path, program });
        }
        Ok(())
    }

    /// Signal the old process as soon as this one listens on `upgrade_sock`, from a thread:
    /// pingora's bootstrap, which makes the socket and receives the listening sockets, blocks the
    /// calling thread. Call [`Signaller::taken_over`] once the bootstrap has returned.
    pub fn signal_when_listening(self, upgrade_sock: PathBuf) -> Signaller {
        // A stale socket (validated as ours by runtime_dir::check_socket) would look like the
        // one pingora is about to make: pingora removes it anyway.
        let _ = std::fs::remove_file(&upgrade_sock);
        let done = Arc::new(AtomicBool::new(false));
        let thread_done = done.clone();
        let old = self.clone();
        let thread = std::thread::Builder::new()
            .name("upgrade-signal".into())
            .spawn(move || old.signal_once_listening(&upgrade_sock, &thread_done));
        if let Err(e) = &thread {
            // Without the thread nobody signals: pingora's bootstrap gives up after its wait.
            tracing::error!(error = %e, "upgrade: cannot start the thread that signals the old process");
        }
        Signaller {
            old: self,
            done,
            thread: thread.ok(),
        }
    }

    fn signal_once_listening(&self, upgrade_sock: &Path, done: &AtomicBool) {
        let deadline = Instant::now() + LISTEN_WAIT;
        loop {
            if done.load(Ordering::Acquire) {
                // The sockets came already (someone else sent SIGQUIT).
                return;
            }
            let listening = match super::socket_listening(upgrade_sock) {
                Ok(listening) => listening,
                // No kernel table to read: the socket's file is made just before it listens.
                Err(_) => upgrade_sock.exists(),
            };
            if listening {
                break;
            }
            if Instant::now() >= deadline {
                fail(TakeoverError::NotListening {
                    path: upgrade_sock.to_path_buf(),
                    pid: self.pid,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The old process may have gone since the first look.
        if let Err(e) = self.check() {
            fail(e);
        }
        set_pending(Some(format!(
            "the old process (pid {}) was sent SIGQUIT but did not hand its listening sockets over \
             within pingora's wait (about 6 s): is it stopped or overloaded? A Rempart of this \
             version hands over only while a new process waits, so it ignores that SIGQUIT and \
             keeps serving",
            self.pid
        )));
        if let Err(source) = send_signal(self.pid, libc::SIGQUIT) {
            set_pending(None);
            fail(TakeoverError::Signal {
                pid: self.pid,
                source,
            });
        }
        tracing::info!(
            old_pid = self.pid,
            "upgrade: sent SIGQUIT to the old process, waiting for its listening sockets"
        );
    }
}

/// The thread that signals the old process.
pub struct Signaller {
    old: OldProcess,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Signaller {
    /// pingora's bootstrap has returned with the listening sockets.
    pub fn taken_over(self) {
        self.done.store(true, Ordering::Release);
        set_pending(None);
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
        tracing::info!(
            old_pid = self.old.pid,
            "upgrade: took over the listening sockets; the old process keeps accepting for pingora's \
             hand-over delay (5 s), answering with Connection: close, then finishes its requests \
             in flight (server.grace_period at most) and exits"
        );
    }
}

/// Print the reason and stop: nothing was taken over.
fn fail(e: TakeoverError) -> ! {
    eprintln!("rempart: upgrade failed: {e}");
    std::process::exit(1);
}

/// What to say if the process ends (pingora's bootstrap giving up) while the sockets are awaited.
static PENDING: Mutex<Option<String>> = Mutex::new(None);
static REPORT_AT_EXIT: Once = Once::new();

fn set_pending(message: Option<String>) {
    REPORT_AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function with no preconditions; it only reads a static.
        unsafe {
            libc::atexit(report_at_exit);
        }
    });
    if let Ok(mut slot) = PENDING.lock() {
        *slot = message;
    }
}

extern "C" fn report_at_exit() {
    if let Ok(mut slot) = PENDING.try_lock() {
        if let Some(message) = slot.take() {
            eprintln!("rempart: upgrade failed: {message}");
        }
    }
}

fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) has no memory preconditions; a bad pid or signal is an error return.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The program a process runs: its executable, else its command name.
fn program_of(pid: u32) -> String {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe.to_string_lossy().into_owned(),
        Err(_) => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim().to_string())
            .unwrap_or_else(|_| "an unknown program".into()),
    }
}

/// A Rempart binary: its file name starts with `rempart` (a binary replaced on disk, as a
/// package upgrade does, reads `/usr/bin/rempart (deleted)`).
fn is_rempart(program: &str) -> bool {
    let program = program.strip_suffix(" (deleted)").unwrap_or(program);
    Path::new(program)
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("rempart"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rempart_is_recognised_by_its_binary() {
        assert!(is_rempart("/usr/bin/rempart"));
        assert!(is_rempart("/usr/bin/rempart (deleted)"));
        assert!(is_rempart("/opt/rempart-0.2/bin/rempart"));
        assert!(is_rempart("rempart"));
        assert!(!is_rempart("/usr/sbin/nginx"));
        assert!(!is_rempart("/usr/bin/sleep"));
        assert!(!is_rempart(""));
    }

    fn files() -> (PathBuf, InstanceFiles) {
        let dir = std::env::temp_dir().join(format!(
            "rempart-takeover-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = InstanceFiles::new(&dir, 9901);
        (dir, files)
    }

    #[test]
    fn every_refusal_says_why() {
        let (dir, files) = files();
        assert!(matches!(
            OldProcess::find(&files),
            Err(TakeoverError::NoPidFile { .. })
        ));
        std::fs::write(&files.pid_file, "garbage\n").unwrap();
        assert!(matches!(
            OldProcess::find(&files),
            Err(TakeoverError::PidFile { .. })
        ));
        std::fs::write(&files.pid_file, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(
            OldProcess::find(&files),
            Err(TakeoverError::Itself { .. })
        ));
        // A process that is not a Rempart: a child `sleep`.
        let mut sleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&files.pid_file, format!("{}\n", sleep.id())).unwrap();
        let refused = OldProcess::find(&files);
        let _ = sleep.kill();
        let _ = sleep.wait();
        match refused {
            Err(TakeoverError::NotRempart { program, .. }) => assert!(program.contains("sleep")),
            other => panic!("expected NotRempart, got {other:?}"),
        }
        // The same pid, now reaped: not running.
        assert!(matches!(
            OldProcess::find(&files),
            Err(TakeoverError::NotRunning { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
