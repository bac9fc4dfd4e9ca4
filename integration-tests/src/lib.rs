//! Rempart's test support.
//!
//! - [`origin`]: the `ent-origin` stand-in backend (the binary is a thin `main` around it).
//! - [`process`]: start `ent-origin` and the real `rempart` binary on free ports, wait until
//!   they answer, read their output, and kill them on drop (even when a test fails).
//! - [`clients`]: HTTP clients (plain, TLS trusting the dev CA, HTTP/2), a raw TLS probe that
//!   reports the certificate chosen by SNI, a raw TCP exchange for malformed requests, WebSockets.
//! - [`stack`]: origins in two datacenters with rempart in front, from a generated YAML.
//! - [`netns`]: network namespaces joined to this one by veth pairs, where a test can run
//!   origins and then drop their packets (a datacenter that burns), cleaned up on drop.
//! - [`browser`]: headless Chromium, once (`--dump-dom`, `--screenshot`) or driven over the
//!   DevTools protocol, for the pages people see.
//! - [`http1`]: a tiny blocking HTTP/1.1 client used by the harness itself (no runtime needed).
//!
//! Every wait is bounded and polls with a deadline; nothing sleeps a fixed time to wait for a state.

pub mod browser;
pub mod clients;
pub mod h2raw;
pub mod http1;
pub mod netns;
pub mod origin;
pub mod process;
pub mod stack;

pub use clients::*;
pub use origin::{OriginArgs, OriginStats, LOGIN_QUOTA_BODY};
pub use process::*;
pub use stack::*;

use std::time::{Duration, Instant};

/// Poll `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async version of [`poll_until`].
pub async fn poll_until_async<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
