//! What a connection's owners share with its guard: the phase of an HTTP/1 connection, a close
//! asked for from outside, why connections are closed, and where the guard's counts go.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;

use atomic_waker::AtomicWaker;

use super::h2::Abuse;

/// Why Rempart closed a client connection (`rempart_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// An HTTP/1 head not complete within `header_timeout` (408 when some of it arrived).
    HeaderTimeout = 1,
    /// An HTTP/1 head over `max_header_bytes` (431).
    HeadersTooLarge,
    /// No new request within `keepalive_timeout`.
    KeepaliveTimeout,
    /// An upgraded connection quiet for `upgrade_idle_timeout`.
    UpgradeIdle,
    /// HTTP/2: preface, SETTINGS and HEADERS, or a header block, not within `header_timeout`.
    H2HeaderTimeout,
    H2ControlFlood,
    H2HeaderBlockTooLarge,
    H2BadPreface,
    /// The client's address is denied (a reload added it to `shield.deny`).
    Denied,
}

impl CloseReason {
    pub const ALL: [CloseReason; 9] = [
        CloseReason::HeaderTimeout,
        CloseReason::HeadersTooLarge,
        CloseReason::KeepaliveTimeout,
        CloseReason::UpgradeIdle,
        CloseReason::H2HeaderTimeout,
        CloseReason::H2ControlFlood,
        CloseReason::H2HeaderBlockTooLarge,
        CloseReason::H2BadPreface,
        CloseReason::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::HeadersTooLarge => "headers_too_large",
            CloseReason::KeepaliveTimeout => "keepalive_timeout",
            CloseReason::UpgradeIdle => "upgrade_idle_timeout",
            CloseReason::H2HeaderTimeout => "h2_header_timeout",
            CloseReason::H2ControlFlood => Abuse::ControlFlood.as_str(),
            CloseReason::H2HeaderBlockTooLarge => Abuse::HeaderBlockTooLarge.as_str(),
            CloseReason::H2BadPreface => Abuse::BadPreface.as_str(),
            CloseReason::Denied => "denied",
        }
    }

    pub(super) fn from_u8(code: u8) -> Option<CloseReason> {
        CloseReason::ALL.into_iter().find(|r| *r as u8 == code)
    }

    pub(super) fn of(abuse: Abuse) -> CloseReason {
        match abuse {
            Abuse::ControlFlood => CloseReason::H2ControlFlood,
            Abuse::HeaderBlockTooLarge => CloseReason::H2HeaderBlockTooLarge,
            Abuse::BadPreface => CloseReason::H2BadPreface,
        }
    }
}

/// Where the guard's counts go: closes by reason, and heads being read now (the drain waits
/// for them).
pub trait GuardReport: Send + Sync {
    fn closed(&self, reason: CloseReason);
    /// An HTTP/1 answer the guard wrote itself (408, 431).
    fn answered(&self, reason: CloseReason);
    fn heads_in_progress(&self) -> &AtomicI64;
}

// Phases of an HTTP/1 connection, shared with its owners.
pub(super) const HEAD: u8 = 0;
pub(super) const BODY: u8 = 1;
pub(super) const UPGRADED: u8 = 2;

/// The guard's handle for the connection's owners.
pub struct Control {
    pub(super) phase: AtomicU8,
    /// A close requested from outside (0: none), as a `CloseReason`.
    pub(super) kill: AtomicU8,
    pub(super) waker: AtomicWaker,
}

impl Control {
    pub(super) fn new() -> Self {
        Control {
            phase: AtomicU8::new(HEAD),
            kill: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// The connection was upgraded (101): the body rules no longer apply, the upgrade idle
    /// timeout does.
    pub fn upgraded(&self) {
        self.phase.store(UPGRADED, Ordering::Release);
        self.waker.wake();
    }

    /// Close the connection (HTTP/2: after a GOAWAY) as soon as the guard can.
    pub fn close(&self, reason: CloseReason) {
        let _ = self
            .kill
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }
}

tokio::task_local! {
    /// The guard control of the HTTP/1 connection whose request this task serves.
    static CONNECTION: Arc<Control>;
}

/// Run `f` with `control` as the current connection's control.
pub async fn with_connection<F: Future>(control: Arc<Control>, f: F) -> F::Output {
    CONNECTION.scope(control, f).await
}

/// The control of the HTTP/1 connection of the current request, if any.
pub fn current() -> Option<Arc<Control>> {
    CONNECTION.try_with(|c| c.clone()).ok()
}
