//! The service manager's notification socket (`$NOTIFY_SOCKET`, the sd_notify protocol): tell
//! systemd that Rempart is ready, and, after an upgrade, which process is now the service's main
//! one. Without the variable (not started by systemd with `Type=notify`) nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Send `state` (lines such as `READY=1`, `MAINPID=123`) to the service manager: `Ok(false)`
/// when there is none to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    if path.is_empty() {
        return Ok(false);
    }
    let address = socket_address(&path)?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}

/// A path, or `@name` for a socket in the abstract namespace.
fn socket_address(path: &str) -> io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}

/// Ready to serve, as this process (the main one, also after taking over from an old process).
pub fn ready() {
    let state = format!("MAINPID={}\nREADY=1\nSTATUS=serving", std::process::id());
    if let Err(e) = notify(&state) {
        tracing::warn!(error = %e, "cannot tell the service manager that rempart is ready");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names() {
        assert_eq!(
            socket_address("/run/systemd/notify")
                .unwrap()
                .as_pathname()
                .map(|p| p.to_path_buf()),
            Some(std::path::PathBuf::from("/run/systemd/notify"))
        );
        let abstract_address = socket_address("@rempart-test").unwrap();
        assert!(abstract_address.as_pathname().is_none());
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            abstract_address.as_abstract_name(),
            Some(&b"rempart-test"[..])
        );
    }
}
