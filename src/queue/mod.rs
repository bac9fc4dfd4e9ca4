//! The fair login queue: admission (static or adaptive concurrency), the tenant-fair
//! scheduler, tickets and passes, and the waiting room.
//!
//! - [`limiter`]: how many requests may be in flight (fixed, or the gradient algorithm);
//! - [`scheduler`]: who goes next (passes, then deficit round robin across tenants, FIFO inside);
//! - [`admission`]: one queue's long-lived state and the arrive / wait / release protocol;
//! - [`ticket`]: the signed `rempart_ticket` and `rempart_pass` cookies;
//! - [`waiting_room`]: the 503 answers, and the 200 that tells the waiting room's poll
//!   (`X-Rempart-Poll`) that its turn came.
//!
//! A [`LoginQueue`] belongs to one configuration generation; its [`QueueCore`] (line, in-flight
//! count, adaptive limit, pause, generated key) lives in the [`QueueRegistry`] owned by the
//! runtime, keyed by queue name, so that a reload keeps queued clients in place.

pub mod admission;
pub mod limiter;
pub mod scheduler;
pub mod ticket;
pub mod waiting_room;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

pub use admission::{
    Arrival, Capacity, Entry, Expired, QueueCore, QueueSample, QueueStatus, Slot, Waiting,
    UNKNOWN_TENANT,
};

use crate::answer::Answer;
use crate::config::{Config, LoginQueue as QueueConfig, TenantSource};
use crate::telemetry::Metrics;
use ticket::{address_prefix, cookie, set_cookie, unix_now, Signer, PASS_COOKIE, TICKET_COOKIE};

/// The header of the built-in waiting room's poll (`GET`, `Accept: application/json`): see
/// [`QueueCore::poll`].
pub const POLL_HEADER: &str = "x-rempart-poll";

/// The tenant of requests that do not name one.
pub const DEFAULT_TENANT: &str = "default";
/// Longer tenant names fall in the default tenant.
const MAX_TENANT_LEN: usize = 64;

/// The long-lived state of every queue, by name; owned by the runtime.
pub struct QueueRegistry {
    cores: Mutex<HashMap<String, Arc<QueueCore>>>,
    /// The key that signs tickets and passes of queues configured without `secrets`: kept in
    /// `server.runtime_dir`, so that a restart or an upgrade keeps every place in line.
    key: Vec<u8>,
    /// The store whose slots the queues share with other nodes, in a cluster.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Default for QueueRegistry {
    fn default() -> Self {
        Self::with_key(rand::random::<[u8; 32]>().to_vec())
    }
}

impl QueueRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose queues without `secrets` sign with `key`.
    pub fn with_key(key: Vec<u8>) -> Self {
        QueueRegistry {
            cores: Mutex::new(HashMap::new()),
            key,
            cluster: None,
        }
    }

    /// A registry whose queues share their slots with other nodes through `cluster`.
    pub fn in_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Every queue's state.
    pub fn cores(&self) -> Vec<Arc<QueueCore>> {
        let cores = self.cores.lock().unwrap_or_else(|p| p.into_inner());
        cores.values().cloned().collect()
    }

    /// The core of this queue, created on first sight, reconfigured otherwise.
    fn core(&self, config: &QueueConfig, metrics: &Metrics) -> Arc<QueueCore> {
        let mut cores = self.cores.lock().unwrap_or_else(|p| p.into_inner());
        match cores.get(&config.name) {
            Some(core) => {
                core.configure(config);
                core.clone()
            }
            None => {
                let core = QueueCore::new(config, metrics);
                if let Some(cluster) = &self.cluster {
                    core.join_cluster(cluster.clone());
                }
                cores.insert(config.name.clone(), core.clone());
                core
            }
        }
    }

    /// Forget queues that are no longer configured (requests still holding them finish).
    fn retain(&self, names: &[&str]) {
        let mut cores = self.cores.lock().unwrap_or_else(|p| p.into_inner());
        cores.retain(|name, _| names.contains(&name.as_str()));
    }
}

/// One login queue as a configuration generation defines it.
pub struct LoginQueue {
    pub name: String,
    pub config: QueueConfig,
    pub core: Arc<QueueCore>,
    signer: Signer,
    page: Option<Arc<str>>,
    /// `shield.allow`: exempt from `per_client_waiting`.
    allow: Vec<IpNet>,
    ipv6_prefix: u8,
}

impl LoginQueue {
    pub fn compile_all(
        config: &Config,
        metrics: &Metrics,
        registry: &QueueRegistry,
    ) -> Vec<LoginQueue> {
        let names: Vec<&str> = config
            .login_queues
            .iter()
            .map(|q| q.name.as_str())
            .collect();
        registry.retain(&names);
        config
            .login_queues
            .iter()
            .map(|q| {
                let core = registry.core(q, metrics);
                let keys: Vec<Vec<u8>> = if q.secrets.is_empty() {
                    vec![registry.key.clone()]
                } else {
                    q.secrets.iter().map(|s| s.0.as_bytes().to_vec()).collect()
                };
                LoginQueue {
                    name: q.name.clone(),
                    config: q.clone(),
                    signer: Signer::with_keys(keys, &q.name),
                    core,
                    page: config.pages.waiting_room.as_ref().map(|p| p.html.clone()),
                    allow: config.shield.allow.clone(),
                    ipv6_prefix: config.server.ipv6_prefix,
                }
            })
            .collect()
    }

    /// The tenant a request belongs to: with a tenant list, a name it does not know (or no
    /// name) is the one `unknown` tenant.
    pub fn tenant_of(&self, req: &(impl QueueRequest + ?Sized), host: &str) -> Arc<str> {
        let name = tenant_from(&self.config.tenant, req, host);
        match &self.config.tenants {
            Some(known) if !known.weights.contains_key(name) => Arc::from(UNKNOWN_TENANT),
            _ => Arc::from(name),
        }
    }

    /// The key counted against `per_client_waiting`: None for allowed clients.
    fn client_key(&self, client_ip: Option<IpAddr>) -> Option<IpAddr> {
        let ip = client_ip?;
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        Some(match ip {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        })
    }

    /// Wait for admission. On `Admitted` the slot is in `state`; on `Answer` write it; on
    /// `Gone` the client closed its connection while in line (it has left the line).
    pub async fn enter(
        self: &Arc<Self>,
        session: &mut Session,
        host: &str,
        client_ip: Option<IpAddr>,
        tls: bool,
        state: &mut RequestState,
    ) -> Admission {
        let entrant = self.entrant(session.req_header(), host, client_ip, tls, state);
        // To see a client leave, its connection is read while it waits. A small request body
        // still unread is read then into pingora's replay buffer, which is sent upstream on
        // admission; a larger or chunked one is left alone, and that request leaves the line
        // when its hold runs out at the latest.
        let watch = move || {
            // Moved in, so that the future may keep it.
            let session = session;
            if session.is_body_empty() || session.is_body_done() {
                Some(client_gone(session))
            } else if replayable_body(session.req_header()) {
                session.enable_retry_buffering();
                Some(client_gone(session))
            } else {
                None
            }
        };
        self.admit(entrant, state, watch).await
    }

    /// What the queue reads of a request before it joins the line (its tenant, the pass and
    /// the ticket it brought, whether it is the waiting room's poll), noted in `state`.
    pub fn entrant(
        self: &Arc<Self>,
        req: &(impl QueueRequest + ?Sized),
        host: &str,
        client_ip: Option<IpAddr>,
        tls: bool,
        state: &mut RequestState,
    ) -> Entrant {
        let tenant = self.tenant_of(req, host);
        let prefix = address_prefix(client_ip);
        let now = unix_now();
        let pass = cookie(req.cookie_lines(), PASS_COOKIE)
            .and_then(|v| self.signer.check_pass_id(v, &prefix, &tenant, now));
        let ticket = cookie(req.cookie_lines(), TICKET_COOKIE)
            .and_then(|v| self.signer.check_ticket(v, &prefix, &tenant, now));
        state.queue = Some(self.clone());
        state.tenant = Some(tenant.clone());
        state.prefix = prefix;
        state.tls = tls;
        state.had_pass = pass.is_some();
        state.had_ticket = ticket.is_some();
        Entrant {
            client: self.client_key(client_ip),
            tenant,
            pass,
            ticket_seq: ticket.map(|t| t.seq),
            // The built-in waiting room's script asking for its place: answered by Rempart
            // alone, never sent upstream (a GET only: a request with a body is a real one).
            poll: req.is_get() && req.header(POLL_HEADER).is_some(),
        }
    }

    /// Join the line and wait for admission (see [`LoginQueue::enter`]). While waiting, the
    /// future `watch` gives (None: nothing to watch) resolves when the client leaves.
    pub async fn admit<W>(
        self: &Arc<Self>,
        entrant: Entrant,
        state: &mut RequestState,
        watch: impl FnOnce() -> Option<W>,
    ) -> Admission
    where
        W: std::future::Future<Output = ()>,
    {
        let started = tokio::time::Instant::now();
        let Entrant {
            tenant,
            client,
            pass,
            ticket_seq,
            poll,
        } = entrant;
        let mut ticket_seq = ticket_seq;
        // In a cluster, a ticket's early place is taken on one node at a time, and once: a
        // ticket in line or admitted on another node makes its bearer a newcomer here.
        let cluster = self.core.cluster().filter(|_| !poll).cloned();
        let mut claimed = None;
        if let (Some(cluster), Some(seq)) = (&cluster, ticket_seq) {
            match cluster
                .claim_ticket(&self.name, seq, self.config.ticket_ttl)
                .await
            {
                Some(true) => claimed = Some(seq),
                Some(false) => ticket_seq = None,
                None => {}
            }
        }
        let give_back = |cluster: &Option<Arc<crate::cluster::Cluster>>| {
            if let (Some(cluster), Some(seq)) = (cluster, claimed) {
                cluster.unclaim_ticket(&self.name, seq);
            }
        };
        let arrival = Arrival {
            tenant: tenant.clone(),
            client,
            pass,
            ticket_seq,
        };
        let entry = if poll {
            self.core.poll(arrival)
        } else {
            self.core.arrive(arrival)
        };
        let waiting = match entry {
            Entry::Admitted(slot) if poll => {
                drop(slot);
                state.waited = Some(Duration::ZERO);
                return Admission::Answer(self.turn(ticket_seq, &tenant, state));
            }
            Entry::Admitted(slot) => {
                state.slot = Some(slot);
                state.waited = Some(Duration::ZERO);
                return Admission::Admitted;
            }
            Entry::Full => {
                give_back(&cluster);
                state.waited = Some(Duration::ZERO);
                return Admission::Answer(waiting_room::queue_full(&self.name));
            }
            Entry::Waiting(waiting) => waiting,
        };
        let hold = self.config.hold;
        let outcome = {
            let wait = waiting.wait(hold);
            tokio::pin!(wait);
            match watch() {
                Some(gone) => {
                    tokio::select! {
                        outcome = &mut wait => Some(outcome),
                        () = gone => None,
                    }
                }
                None => Some(wait.await),
            }
        };
        state.waited = Some(started.elapsed());
        match outcome {
            None => {
                give_back(&cluster);
                Admission::Gone
            }
            Some(Ok(slot)) if poll => {
                drop(slot);
                Admission::Answer(self.turn(ticket_seq, &tenant, state))
            }
            Some(Ok(slot)) => {
                state.slot = Some(slot);
                Admission::Admitted
            }
            Some(Err(expired)) => {
                give_back(&cluster);
                Admission::Answer(self.waiting_room(&expired, &tenant, state))
            }
        }
    }

    fn waiting_room(&self, expired: &Expired, tenant: &str, state: &RequestState) -> Answer {
        let ttl = self.config.ticket_ttl.as_secs().max(1);
        let value = self
            .signer
            .ticket(expired.seq, tenant, &state.prefix, unix_now() + ttl);
        let place = waiting_room::Place {
            position: expired.position,
            eta_seconds: expired.eta_seconds,
            tenant,
            retry_after: waiting_room::retry_after(expired.eta_seconds, ttl),
            ticket_cookie: set_cookie(TICKET_COOKIE, &value, ttl, state.tls),
        };
        waiting_room::waiting_room(&place, self.page.as_ref())
    }

    /// The answer to a poll that the line let through: the ticket it came with, renewed and
    /// not spent, takes the page's next request to its place.
    fn turn(&self, ticket_seq: Option<u64>, tenant: &str, state: &RequestState) -> Answer {
        let ttl = self.config.ticket_ttl.as_secs().max(1);
        let cookie = ticket_seq.map(|seq| {
            let value = self
                .signer
                .ticket(seq, tenant, &state.prefix, unix_now() + ttl);
            set_cookie(TICKET_COOKIE, &value, ttl, state.tls)
        });
        waiting_room::turn(tenant, cookie)
    }
}

/// Request bodies up to this size are read while in line (pingora's replay buffer holds 64 KiB).
const REPLAYABLE_BODY: u64 = 64 * 1024;

/// Whether the request's body has a declared length small enough to be read while in line.
fn replayable_body(req: &RequestHeader) -> bool {
    !req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|len| len <= REPLAYABLE_BODY)
}

/// Resolves when the client closes its connection (or its HTTP/2 stream). A body still unread
/// is read (into the replay buffer) first.
async fn client_gone(session: &mut Session) {
    loop {
        if session.read_body_or_idle(false).await.is_err() {
            return;
        }
    }
}

/// The tenant named by `source` in a request (`default` when it names none).
pub fn tenant_from<'a>(
    source: &TenantSource,
    req: &'a (impl QueueRequest + ?Sized),
    host: &'a str,
) -> &'a str {
    let raw: Option<&str> = match source {
        TenantSource::Host => Some(host),
        TenantSource::Header(name) => req
            .header(name.as_str())
            .and_then(|v| std::str::from_utf8(v).ok()),
        TenantSource::Cookie(name) => cookie(req.cookie_lines(), name),
        TenantSource::Query(name) => req.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
        }),
        TenantSource::PathSegment(n) => req.path().split('/').skip(1).nth(n.saturating_sub(1)),
    };
    sanitize_tenant(raw.map(str::trim))
}

/// What the queue reads of a request: pingora's request header, or a head the edge parsed
/// in place (`proxy::direct`).
pub trait QueueRequest {
    /// The method is `GET`.
    fn is_get(&self) -> bool;
    /// The first value of the header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The values of every `Cookie` line.
    fn cookie_lines(&self) -> impl Iterator<Item = &[u8]>;
    /// The path, without the query.
    fn path(&self) -> &str;
    fn query(&self) -> Option<&str>;
}

impl QueueRequest for RequestHeader {
    fn is_get(&self) -> bool {
        self.method == http::Method::GET
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }

    fn cookie_lines(&self) -> impl Iterator<Item = &[u8]> {
        self.headers
            .get_all(COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
    }

    fn path(&self) -> &str {
        self.uri.path()
    }

    fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

/// A request about to join a queue's line, as [`LoginQueue::entrant`] read it.
pub struct Entrant {
    tenant: Arc<str>,
    client: Option<IpAddr>,
    pass: Option<u64>,
    ticket_seq: Option<u64>,
    poll: bool,
}

fn sanitize_tenant(raw: Option<&str>) -> &str {
    match raw {
        Some(t)
            if !t.is_empty()
                && t.len() <= MAX_TENANT_LEN
                && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            t
        }
        _ => DEFAULT_TENANT,
    }
}

/// Whether an answer of `status`, whose `Set-Cookie` values are `set_cookies`, is the success
/// that earns a pass: a status of `on_status`, and, when named, the `on_cookie` cookie set to a
/// value.
pub fn earns_pass<'a>(
    rule: &crate::config::PassRule,
    status: u16,
    mut set_cookies: impl Iterator<Item = &'a [u8]>,
) -> bool {
    if !rule
        .on_status
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        return false;
    }
    let Some(name) = &rule.on_cookie else {
        return true;
    };
    set_cookies.any(|v| {
        v.split(|b| *b == b';')
            .next()
            .and_then(|pair| {
                let eq = pair.iter().position(|b| *b == b'=')?;
                let (k, v) = pair.split_at(eq);
                Some(k.trim_ascii() == name.as_bytes() && v.len() > 1)
            })
            .unwrap_or(false)
    })
}

/// The outcome of [`LoginQueue::enter`].
pub enum Admission {
    Admitted,
    Answer(Answer),
    Gone,
}

/// What the queue remembers about one request: its admission slot (released when the request
/// context drops, so also when the client disconnects), its tenant, and its cookies.
#[derive(Default)]
pub struct RequestState {
    slot: Option<Slot>,
    queue: Option<Arc<LoginQueue>>,
    tenant: Option<Arc<str>>,
    prefix: String,
    tls: bool,
    had_pass: bool,
    had_ticket: bool,
    waited: Option<Duration>,
}

impl RequestState {
    /// Whether the request holds an admission slot.
    pub fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }

    /// Milliseconds spent in line (None off queue routes).
    pub fn queue_ms(&self) -> Option<f64> {
        self.waited.map(|d| d.as_secs_f64() * 1000.0)
    }

    /// On the upstream's answer to an admitted request: a pass when the answer is the success
    /// the operator named (`pass.on_status`, and the `pass.on_cookie` cookie set), and the
    /// ticket it came with is spent.
    pub fn response(&self, response: &mut ResponseHeader) {
        let status = response.status.as_u16();
        let set_cookies = response
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .map(HeaderValue::as_bytes);
        for cookie in self.answer_cookies(status, set_cookies) {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                let _ = response.append_header(SET_COOKIE, v);
            }
        }
    }

    /// The `Set-Cookie` values [`RequestState::response`] adds to an answer of `status` whose
    /// own are `set_cookies` (none off queue routes).
    pub fn answer_cookies<'a>(
        &self,
        status: u16,
        set_cookies: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<String> {
        let mut cookies = Vec::new();
        let (Some(_), Some(queue), Some(tenant)) = (&self.slot, &self.queue, &self.tenant) else {
            return cookies;
        };
        let rule = &queue.config.pass;
        if !self.had_pass && earns_pass(rule, status, set_cookies) {
            let ttl = rule.ttl.as_secs().max(1);
            let value =
                queue
                    .signer
                    .pass_with_id(tenant, &self.prefix, unix_now() + ttl, rand::random());
            cookies.push(set_cookie(PASS_COOKIE, &value, ttl, self.tls));
        }
        if self.had_ticket {
            cookies.push(set_cookie(TICKET_COOKIE, "", 0, self.tls));
        }
        cookies
    }

    /// The request is over: release the slot, with the upstream latency as a sample for the
    /// adaptive limit of the datacenter that answered when the answer was not a 5xx.
    pub fn finish(&mut self, upstream_ms: Option<f64>, status: u16, datacenter: Option<&str>) {
        if let Some(slot) = self.slot.take() {
            let sample = upstream_ms
                .filter(|ms| ms.is_finite() && *ms >= 0.0 && (100..500).contains(&status))
                .map(|ms| Duration::from_secs_f64(ms / 1000.0));
            slot.complete(sample, datacenter.map(Arc::from));
        }
    }
}

#[cfg(test)]
mod tests;
