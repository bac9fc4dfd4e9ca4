//! The runtime directory (`server.runtime_dir`): where the pid file, the upgrade socket and the
//! login queues' key live, private to Rempart's user. A process that finds it owned by someone
//! else, or open to others, refuses to start: whoever can create the upgrade socket there could
//! be handed the listening sockets, and whoever can read the key could forge places in line.
//! The pid file names the process that serves an instance: an upgrade reads it to find the old
//! process, and the process that took over writes it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file holding the queues' key in the runtime directory.
pub const QUEUE_KEY_FILE: &str = "queue.key";

/// Why the runtime directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error("cannot create the runtime directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} belongs to uid {owner}, not to Rempart's user (uid {uid}): refusing to keep the upgrade socket and the queue key there")]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path} is open to other users (mode {mode:o}): make it 0700 (chmod 700 {path})")]
    Mode { path: PathBuf, mode: u32 },
    #[error("{path} exists and is not a socket of Rempart's user: remove it")]
    Socket { path: PathBuf },
    #[error("cannot use the queue key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The files of one instance in the runtime directory, named after its admin port so that
/// instances on one machine do not share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFiles {
    /// `rempart-PORT.pid`: the process serving the instance.
    pub pid_file: PathBuf,
    /// `rempart-PORT.upgrade.sock`: where a new process waits for the listening sockets.
    pub upgrade_sock: PathBuf,
}

impl InstanceFiles {
    pub fn new(dir: &Path, admin_port: u16) -> InstanceFiles {
        InstanceFiles {
            pid_file: dir.join(format!("rempart-{admin_port}.pid")),
            upgrade_sock: dir.join(format!("rempart-{admin_port}.upgrade.sock")),
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `/run/rempart` as root, else `$XDG_RUNTIME_DIR/rempart`, else `/tmp/rempart-UID`.
pub fn default_dir() -> PathBuf {
    let uid = euid();
    if uid == 0 {
        return PathBuf::from("/run/rempart");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("rempart"),
        _ => PathBuf::from(format!("/tmp/rempart-{uid}")),
    }
}

/// Create the directory (0700) if it does not exist, and check that it is Rempart's alone.
pub fn prepare(dir: &Path) -> Result<(), RuntimeDirError> {
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder
            .create(dir)
            .map_err(|source| RuntimeDirError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let meta = fs::metadata(dir).map_err(|source| RuntimeDirError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    private(dir, &meta)
}

fn private(path: &Path, meta: &fs::Metadata) -> Result<(), RuntimeDirError> {
    let uid = euid();
    if meta.uid() != uid {
        return Err(RuntimeDirError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(RuntimeDirError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// An upgrade socket left at `path` must be a socket of Rempart's user.
pub fn check_socket(path: &Path) -> Result<(), RuntimeDirError> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.file_type().is_socket() && meta.uid() == euid() => Ok(()),
        Ok(_) => Err(RuntimeDirError::Socket {
            path: path.to_path_buf(),
        }),
    }
}

/// The queues' key: read from the directory, or made once (32 random bytes, hex, 0600). Two
/// processes starting together agree on one: the file is written aside and linked in place,
/// which fails if another process linked its own first.
pub fn queue_key(dir: &Path) -> Result<Vec<u8>, RuntimeDirError> {
    let path = dir.join(QUEUE_KEY_FILE);
    let fail = |source| RuntimeDirError::Key {
        path: path.clone(),
        source,
    };
    for _ in 0..3 {
        match fs::read_to_string(&path) {
            Ok(text) => {
                let meta = fs::metadata(&path).map_err(fail)?;
                private(&path, &meta)?;
                return decode_key(text.trim()).ok_or_else(|| {
                    fail(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not 64 hexadecimal digits",
                    ))
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        let key: [u8; 32] = rand::random();
        let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let aside = dir.join(format!(".{QUEUE_KEY_FILE}.{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut f| io::Write::write_all(&mut f, format!("{text}\n").as_bytes()));
        if let Err(e) = written {
            let _ = fs::remove_file(&aside);
            return Err(fail(e));
        }
        let linked = fs::hard_link(&aside, &path);
        let _ = fs::remove_file(&aside);
        match linked {
            Ok(()) => return Ok(key.to_vec()),
            // Another process made it first: read theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(io::Error::other("the key file keeps changing")))
}

/// Write this process's id to `path`: written aside and renamed in place, so a reader sees the
/// old pid or the new one, never a partial file.
pub fn write_pid_file(path: &Path) -> Result<(), RuntimeDirError> {
    let fail = |source| RuntimeDirError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    let pid = std::process::id();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rempart.pid".into());
    let aside = path.with_file_name(format!(".{name}.{pid}"));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&aside)
        .and_then(|mut f| io::Write::write_all(&mut f, format!("{pid}\n").as_bytes()))
        .and_then(|()| fs::rename(&aside, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&aside);
        return Err(fail(e));
    }
    Ok(())
}

/// Remove the pid file when it still names this process (after an upgrade it names the new one,
/// which must keep it).
pub fn remove_pid_file_if_ours(path: &Path) {
    if read_pid(path).ok().flatten() == Some(std::process::id()) {
        let _ = fs::remove_file(path);
    }
}

/// The pid in `path`: None when there is no such file; an error when it cannot be read or does
/// not hold a process id.
pub fn read_pid(path: &Path) -> io::Result<Option<u32>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(Some(pid)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{:?} is not a process id", text.trim()),
        )),
    }
}

fn decode_key(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_directory_is_made_and_its_key_kept() {
        let base = tempdir();
        let dir = base.join("run");
        prepare(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let key = queue_key(&dir).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(
            queue_key(&dir).unwrap(),
            key,
            "the same key on the next start"
        );
        let file_mode = fs::metadata(dir.join(QUEUE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let base = tempdir();
        let dir = base.join("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(prepare(&dir), Err(RuntimeDirError::Mode { .. })));
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn something_else_than_a_socket_is_refused() {
        let base = tempdir();
        let path = base.join("upgrade.sock");
        fs::write(&path, b"planted").unwrap();
        assert!(matches!(
            check_socket(&path),
            Err(RuntimeDirError::Socket { .. })
        ));
        assert!(check_socket(&base.join("absent.sock")).is_ok());
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn the_pid_file_names_this_process_and_is_removed_only_by_it() {
        let base = tempdir();
        let files = InstanceFiles::new(&base, 9901);
        assert_eq!(files.pid_file, base.join("rempart-9901.pid"));
        assert_eq!(files.upgrade_sock, base.join("rempart-9901.upgrade.sock"));
        assert_eq!(read_pid(&files.pid_file).unwrap(), None);
        write_pid_file(&files.pid_file).unwrap();
        assert_eq!(read_pid(&files.pid_file).unwrap(), Some(std::process::id()));
        // Another process took over: its pid file stays.
        fs::write(&files.pid_file, b"1\n").unwrap();
        remove_pid_file_if_ours(&files.pid_file);
        assert_eq!(read_pid(&files.pid_file).unwrap(), Some(1));
        write_pid_file(&files.pid_file).unwrap();
        remove_pid_file_if_ours(&files.pid_file);
        assert!(!files.pid_file.exists());
        fs::write(&files.pid_file, b"rempart\n").unwrap();
        assert!(read_pid(&files.pid_file).is_err());
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn a_damaged_key_is_an_error() {
        let base = tempdir();
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).unwrap();
        let path = base.join(QUEUE_KEY_FILE);
        fs::write(&path, b"not hex\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(queue_key(&base), Err(RuntimeDirError::Key { .. })));
        let _ = fs::remove_dir_all(&base);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rempart-rtdir-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }
}
