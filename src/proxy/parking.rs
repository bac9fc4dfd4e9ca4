//! Idle HTTP/1 keep-alive connections without a task: a plain connection quiet for
//! [`PARK_AFTER`] leaves its task, guard, buffers and digests for its worker thread's table of
//! parked sockets, which one task per thread watches (a readiness set of its own) and times
//! (their keep-alive deadlines). Its next bytes make it a connection task again; its keep-alive
//! deadline, its place in the connection caps and its count among open connections stay with
//! it while parked.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Registry, Token};
use pingora::apps::HttpPersistentSettings;
use pingora::server::ShutdownWatch;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::time::delay_queue::{DelayQueue, Key};

use super::edge::{Edge, Held};
use crate::shield::guard::{CloseReason, GuardReport};
use crate::telemetry::Metrics;

/// How long a keep-alive connection waits for its next request in its own task before it is
/// parked. Clients that send their requests closer than this (a page and its resources, a
/// load test) never pay for parking (a few system calls each way); a connection idle for
/// longer holds a few hundred bytes instead of a few KiB.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// Keep-alive deadlines further away than this are not parked (the timer wheel's range is
/// about two years); a connection waits in its task then, as before.
const MAX_PARKED_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Readiness events taken at once.
const EVENTS: usize = 256;

/// Rounds of events taken before the watch yields to the connections it woke.
const ROUNDS: usize = 16;

/// What a connection keeps while parked, and gets back when it is served again.
pub struct Kept {
    pub peer: SocketAddr,
    pub keepalive_until: Instant,
    /// Boxed: most connections served by the edge itself have none.
    pub persisted: Option<Box<HttpPersistentSettings>>,
    pub held: Held,
}

struct Parked {
    socket: std::net::TcpStream,
    kept: Kept,
    /// Its entry in the keep-alive timer.
    timer: Key,
}

/// A worker thread's parked connections.
struct Lot {
    registry: Registry,
    parked: Slab<Parked>,
    /// Keep-alive deadlines, by the index in `parked`.
    timers: DelayQueue<usize>,
    metrics: Arc<Metrics>,
    /// The process is shutting down: nothing is parked any more.
    closed: bool,
}

enum LotState {
    /// Not needed on this thread yet.
    Unused,
    Open(Box<Lot>),
    /// The readiness set could not be made: connections wait in their tasks.
    Unavailable,
}

thread_local! {
    static LOT: RefCell<LotState> = const { RefCell::new(LotState::Unused) };
}

/// A connection that could not be parked, given back.
pub type Unparked = Box<(std::net::TcpStream, Kept)>;

/// Park an idle keep-alive connection (its stream out of its guard, from a plain TCP
/// listener) on this worker thread; it is served again by `edge` when bytes arrive. The socket
/// back when it cannot be parked (no readiness set, the process shutting down, a deadline too
/// far): its task goes on waiting with it.
pub fn park(
    edge: &Arc<Edge>,
    shutdown: &ShutdownWatch,
    socket: std::net::TcpStream,
    kept: Kept,
) -> Result<(), Unparked> {
    let now = Instant::now();
    if *shutdown.borrow() || kept.keepalive_until > now + MAX_PARKED_WAIT {
        return Err(Box::new((socket, kept)));
    }
    LOT.with(|lot| {
        let mut state = lot.borrow_mut();
        if matches!(*state, LotState::Unused) {
            *state = open_lot(edge, shutdown);
        }
        let LotState::Open(lot) = &mut *state else {
            return Err(Box::new((socket, kept)));
        };
        if lot.closed {
            return Err(Box::new((socket, kept)));
        }
        let entry = lot.parked.vacant_entry();
        let index = entry.key();
        let fd = socket.as_raw_fd();
        if let Err(e) = lot
            .registry
            .register(&mut SourceFd(&fd), Token(index), Interest::READABLE)
        {
            tracing::debug!(error = %e, "cannot park an idle connection");
            return Err(Box::new((socket, kept)));
        }
        let timer = lot.timers.insert_at(index, kept.keepalive_until);
        entry.insert(Parked {
            socket,
            kept,
            timer,
        });
        lot.metrics.connections_parked.inc();
        Ok(())
    })
}

/// The readiness set of this thread, and the task that watches it.
fn open_lot(edge: &Arc<Edge>, shutdown: &ShutdownWatch) -> LotState {
    let made = mio::Poll::new().and_then(|poll| {
        let registry = poll.registry().try_clone()?;
        // SAFETY: the epoll descriptor is the poll's own, open for as long as the poll
        // (which the AsyncFd owns) and the same at every `as_raw_fd`.
        let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok((poll, registry))
    });
    match made {
        Ok((poll, registry)) => {
            tokio::spawn(watch(poll, edge.clone(), shutdown.clone()));
            LotState::Open(Box::new(Lot {
                registry,
                parked: Slab::new(),
                timers: DelayQueue::new(),
                metrics: edge.metrics().clone(),
                closed: false,
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no readiness set for idle connections: they keep their tasks");
            LotState::Unavailable
        }
    }
}

/// Take a parked connection out of the lot (it has bytes to read, or its keep-alive ended).
fn take(lot: &mut Lot, index: usize) -> Option<Parked> {
    let parked = lot.parked.try_remove(index)?;
    let fd = parked.socket.as_raw_fd();
    let _ = lot.registry.deregister(&mut SourceFd(&fd));
    lot.metrics.connections_parked.dec();
    Some(parked)
}

fn with_lot<R>(f: impl FnOnce(&mut Lot) -> R) -> Option<R> {
    LOT.with(|lot| match &mut *lot.borrow_mut() {
        LotState::Open(lot) => Some(f(lot)),
        _ => None,
    })
}

/// The watch of this thread's parked connections: those with bytes to read are served again
/// in a task of their own, those whose keep-alive ends are closed (without a word, as a
/// keep-alive wait in a task ends), all of them at shutdown.
async fn watch(mut poll: AsyncFd<mio::Poll>, edge: Arc<Edge>, mut shutdown: ShutdownWatch) {
    let mut events = Events::with_capacity(EVENTS);
    let mut woken: Vec<Parked> = Vec::with_capacity(EVENTS);
    let mut failed = false;
    while !failed {
        let expired = std::future::poll_fn(|cx| {
            with_lot(|lot| match lot.timers.poll_expired(cx) {
                Poll::Ready(Some(expired)) => {
                    let index = expired.into_inner();
                    // Its timer is gone already: only the table entry is left.
                    Poll::Ready(take(lot, index))
                }
                // Empty: an insert wakes this task.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            })
            .unwrap_or(Poll::Pending)
        });
        tokio::select! {
            ready = poll.readable_mut() => {
                let Ok(mut ready) = ready else {
                    tracing::error!("the readiness set of idle connections failed");
                    break;
                };
                for _ in 0..ROUNDS {
                    events.clear();
                    match ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the readiness of idle connections");
                            failed = true;
                            break;
                        }
                    }
                    if events.is_empty() {
                        ready.clear_ready();
                        break;
                    }
                    resume_ready(&events, &mut woken, &edge, &shutdown);
                }
                drop(ready);
                // Let the connections just woken run before more events are taken.
                tokio::task::yield_now().await;
            }
            Some(parked) = expired => {
                edge.metrics().closed(CloseReason::KeepaliveTimeout);
                drop(parked);
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Shutting down (or the set failed): none parked again. Those whose next request is in
    // their socket already are served (their answer closes them), the others closed.
    if !failed {
        let rounds = with_lot(|lot| lot.parked.len() / EVENTS + 1).unwrap_or(1);
        for _ in 0..rounds {
            events.clear();
            let polled = poll.get_mut().poll(&mut events, Some(Duration::ZERO));
            if polled.is_err() || events.is_empty() {
                break;
            }
            resume_ready(&events, &mut woken, &edge, &shutdown);
        }
    }
    let parked = with_lot(|lot| {
        lot.closed = true;
        lot.timers.clear();
        let all: Vec<Parked> = lot.parked.drain().collect();
        lot.metrics.connections_parked.sub(all.len() as i64);
        all
    });
    drop(parked);
}

/// The parked connections `events` says have bytes to read, served again.
fn resume_ready(
    events: &Events,
    woken: &mut Vec<Parked>,
    edge: &Arc<Edge>,
    shutdown: &ShutdownWatch,
) {
    with_lot(|lot| {
        for event in events.iter() {
            if let Some(parked) = take(lot, event.token().0) {
                lot.timers.try_remove(&parked.timer);
                woken.push(parked);
            }
        }
    });
    for parked in woken.drain(..) {
        resume(edge, shutdown, parked);
    }
}

/// A parked connection with bytes to read: served again in a task of its own on this thread.
fn resume(edge: &Arc<Edge>, shutdown: &ShutdownWatch, parked: Parked) {
    let Parked { socket, kept, .. } = parked;
    let socket = match tokio::net::TcpStream::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!(error = %e, "cannot serve a parked connection again");
            return;
        }
    };
    let edge = edge.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move { edge.resume(socket, kept, shutdown).await });
}
