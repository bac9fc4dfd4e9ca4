//! Zero-downtime binary upgrade. The listening sockets pass from the running process (the old
//! one) to a new one by pingora's protocol: the new process listens on the upgrade socket; the old
//! one, on SIGQUIT, sends it the sockets over it, keeps accepting for pingora's hand-over delay
//! (5 s), then drains and exits. Rempart makes that one command, and safe to get wrong:
//!
//! - [`takeover`], the new process (`rempart -u`): finds the old process by the pid file, checks
//!   that it is a running Rempart of this user, signals it once its own upgrade socket listens,
//!   and says what happened, or why not, with a non-zero exit when it did not take over;
//! - [`handover`], the old process: hands the sockets over only while a new process waits on the
//!   socket (a stray or late SIGQUIT is ignored, the process keeps serving), and starts the new
//!   binary itself on SIGUSR2, so that under systemd the new process runs inside the service.

pub mod handover;
pub mod takeover;

use std::io;
use std::path::Path;

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s flags: the socket listens.
const ACCEPTING: u32 = 0x0001_0000;

/// Whether some process listens on the Unix socket bound at `path`, read from the kernel's table
/// (`/proc/net/unix`) rather than by connecting: pingora's receiver accepts one connection only.
pub fn socket_listening(path: &Path) -> io::Result<bool> {
    let table = std::fs::read_to_string("/proc/net/unix")?;
    Ok(listening_in(&table, &path.to_string_lossy()))
}

/// `/proc/net/unix` lines: `Num RefCount Protocol Flags Type St Inode Path`.
fn listening_in(table: &str, path: &str) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(bound)) = (fields.get(3), fields.get(7..)) else {
            return false;
        };
        let accepting = u32::from_str_radix(flags, 16).is_ok_and(|f| f & ACCEPTING != 0);
        accepting && bound.join(" ") == path
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/rempart/rempart-9901.upgrade.sock
0000000000000000: 00000002 00000000 00000000 0001 01  4242 /run/rempart/rempart-9902.upgrade.sock
0000000000000000: 00000003 00000000 00000000 0001 03  5151
";

    #[test]
    fn a_listening_socket_is_told_from_a_bound_one() {
        assert!(listening_in(
            TABLE,
            "/run/rempart/rempart-9901.upgrade.sock"
        ));
        assert!(
            !listening_in(TABLE, "/run/rempart/rempart-9902.upgrade.sock"),
            "bound, not listening"
        );
        assert!(!listening_in(
            TABLE,
            "/run/rempart/rempart-9903.upgrade.sock"
        ));
        assert!(!listening_in("", "/x"));
    }

    #[test]
    fn this_process_sees_its_own_listening_socket() {
        let dir = std::env::temp_dir().join(format!(
            "rempart-upgrade-sock-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.sock");
        assert!(!socket_listening(&path).unwrap());
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(socket_listening(&path).unwrap());
        drop(listener);
        assert!(!socket_listening(&path).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
