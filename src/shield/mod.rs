//! The abuse shield: connection caps and CIDR lists, the header deadline, rate limits
//! (governor), bans, and the memory bounds that keep all of it small under attack.
//!
//! - [`Shield`]: what one configuration generation says (limits in force, lists, caps), built
//!   by [`Shield::compile`] and read by requests through the snapshot.
//! - [`ShieldState`]: what outlives generations (buckets by limit identity, bans, open
//!   connections), owned by the `Runtime`; a reload keeps unchanged limits' buckets and the bans.
//! - `keys`: the key of a request for a limit; `limits`: buckets with a key cap and an overflow
//!   bucket; `bans`: the penalty box; `connections`: caps and the accept filter; `guard`:
//!   deadlines and budgets of one client connection (request heads, keep-alive, upgrades,
//!   HTTP/2 floods); `body`: reading form fields and policing request bodies.

pub mod bans;
pub mod body;
pub mod connections;
pub mod guard;
pub mod keys;
pub mod limits;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::proxy::Session;
use prometheus::IntCounter;

use crate::answer::{Answer, Reason};
use crate::cluster::limits::{Charge as ClusterCharge, Granted};
use crate::cluster::Cluster;
use crate::config::{Ban, Config, LimitKey, LimitMode, LimitScope, Rate};
use crate::telemetry::Metrics;
use bans::BanList;
use body::FormBody;
use connections::{caps_for, ConnectionTable, Refusal};
use keys::{ip_group, ip_key, text_key, KeyHasher, GLOBAL_KEY};
use limits::{LimitIdentity, LimitState, Verdict};

/// Key kinds for string keys, so that a header and a cookie with the same value differ.
const KIND_HEADER: u8 = 1;
const KIND_COOKIE: u8 = 2;
/// A field value, whatever source it came from (`alice` from the body and from the query are
/// one bucket).
const KIND_FIELD: u8 = 4;
/// The one key of every request whose field cannot be read.
const KIND_UNREADABLE: u8 = 5;

/// The keys of what the sources of a field limit found: every distinct value, and the
/// shared unreadable key once when a source could not be read. The flag says the key is
/// shared (its refusals ban nobody: many clients share it).
fn field_keys(fields: Vec<keys::Field>, hasher: &KeyHasher, out: &mut Vec<(u64, bool)>) {
    let start = out.len();
    for field in fields {
        let key = match field {
            keys::Field::Value(v) => (text_key(KIND_FIELD, &v, hasher), false),
            keys::Field::Unreadable => (text_key(KIND_UNREADABLE, b"", hasher), true),
            keys::Field::Absent => continue,
        };
        if !out[start..].contains(&key) {
            out.push(key);
        }
    }
}

/// The answer to a banned client: 403 `banned`, and when to come back.
pub fn banned_answer(left: Duration) -> Answer {
    let mut answer = Answer::new(Reason::Banned);
    answer.retry_after = Some(left.as_secs().max(1));
    answer
}

/// One key of a request under one limit, as `Shield::admit` decides it.
struct Keyed<'a> {
    limit: &'a CompiledLimit,
    key: u64,
    /// The bucket is shared by many clients (its refusals ban nobody).
    shared: bool,
    /// Still to be charged.
    charge: bool,
    /// Cells a request costs here: a cluster limit decided alone costs the live nodes.
    cost: u32,
    /// Decided by the cluster's store.
    in_store: bool,
}

/// State of the shield that outlives configuration generations.
pub struct ShieldState {
    /// Buckets by limit identity. Locked only when a generation is compiled or swept.
    limits: Mutex<HashMap<LimitIdentity, Arc<LimitState>>>,
    pub bans: BanList,
    pub connections: Arc<ConnectionTable>,
    /// The guards of open connections, to end them from a request or a reload.
    pub guards: guard::Registry,
    /// Keys strings and long IPv6 prefixes; random per process (or derived from the cluster's
    /// secret), stable across reloads.
    pub hasher: KeyHasher,
    /// The store shared with the other nodes, when the file has a `cluster` section.
    pub cluster: Option<Arc<Cluster>>,
    /// When a limit last refused a request, in milliseconds since `epoch` (0: never).
    last_refusal_ms: AtomicU64,
    epoch: Instant,
}

/// How long after a refusal the edge keeps reading heads to answer refusals early.
const REFUSING_FOR: Duration = Duration::from_secs(1);

impl ShieldState {
    fn note_refusal(&self) {
        let ms = (self.epoch.elapsed().as_millis() as u64).max(1);
        // Written at most once a millisecond, however many threads refuse.
        if self.last_refusal_ms.load(Ordering::Relaxed) != ms {
            self.last_refusal_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Whether a limit refused a request within `REFUSING_FOR`: the edge then reads request
    /// heads to answer refusals early (`proxy::early`).
    pub fn refusing(&self) -> bool {
        let last = self.last_refusal_ms.load(Ordering::Relaxed);
        last != 0
            && (self.epoch.elapsed().as_millis() as u64).saturating_sub(last)
                < REFUSING_FOR.as_millis() as u64
    }
}

impl Default for ShieldState {
    fn default() -> Self {
        Self::with_hasher(KeyHasher::random())
    }
}

impl ShieldState {
    /// A state whose keys are computed with `hasher` (the cluster's, when clustered).
    pub fn with_hasher(hasher: KeyHasher) -> Self {
        ShieldState {
            limits: Mutex::new(HashMap::new()),
            bans: BanList::default(),
            connections: Arc::new(ConnectionTable::default()),
            guards: guard::Registry::default(),
            hasher,
            cluster: None,
            last_refusal_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl ShieldState {
    /// The limits that exist now (those of the generation compiled last).
    fn all_limits(&self) -> Vec<Arc<LimitState>> {
        match self.limits.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        }
    }
}

/// One limit as this generation uses it.
pub struct CompiledLimit {
    pub name: Arc<str>,
    pub key: LimitKey,
    pub mode: LimitMode,
    pub scope: LimitScope,
    pub rate: Rate,
    pub burst: u32,
    /// Tokens a cluster limit takes from the store at once per key.
    pub lease: u32,
    /// Refusals count toward a ban.
    pub ban: bool,
    pub case_sensitive: bool,
    pub state: Arc<LimitState>,
    refused: IntCounter,
    policy: Option<HeaderValue>,
}

impl CompiledLimit {
    /// The time one token stands for.
    fn interval(&self) -> Duration {
        Duration::from_micros(crate::cluster::limits::interval_micros(self.rate))
    }
}

/// What `Shield::admit` knows before asking the limits.
enum BeforeLimits {
    /// Decided: passes (None) or refused.
    Decided(Option<Answer>),
    /// The limits decide; the client's key.
    Ask(u64),
}

/// The shield as one configuration generation defines it.
pub struct Shield {
    /// By index of `Config::limits`.
    pub limits: Vec<CompiledLimit>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted: Vec<IpNet>,
    ban: Option<Ban>,
    pub state: Arc<ShieldState>,
    ipv6_prefix: u8,
    pub header_timeout: Duration,
    /// The connection guard's limits.
    pub guard: guard::GuardSettings,
    pub tls_handshake_timeout: Duration,
    body_min_rate: u64,
    max_body_bytes: u64,
    max_connections: usize,
    max_connections_per_ip: usize,
    metrics: ShieldMetrics,
}

#[derive(Clone)]
struct ShieldMetrics {
    refused_denied: IntCounter,
    refused_too_many: IntCounter,
    refused_too_many_from_address: IntCounter,
}

impl Shield {
    pub fn compile(config: &Config, metrics: &Metrics, state: &Arc<ShieldState>) -> Self {
        let mut registry = match state.limits.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut kept = HashMap::new();
        let limits = config
            .limits
            .iter()
            .map(|limit| {
                let id = LimitIdentity::of(limit);
                let bucket = registry
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(LimitState::new(limit)));
                kept.insert(id, bucket.clone());
                let window = limits::window_seconds(limit.rate, limit.burst);
                CompiledLimit {
                    name: limit.name.as_str().into(),
                    key: limit.key.clone(),
                    mode: limit.mode,
                    scope: limit.scope,
                    rate: limit.rate,
                    burst: limit.burst,
                    lease: limit.lease,
                    ban: limit.ban,
                    case_sensitive: limit.case_sensitive,
                    state: bucket,
                    refused: metrics.rate_limited_total.with_label_values(&[&limit.name]),
                    policy: HeaderValue::from_str(&format!(
                        "\"{}\";q={};w={window}",
                        limit.name, limit.burst
                    ))
                    .ok(),
                }
            })
            .collect();
        // Limits gone from the file lose their buckets now.
        *registry = kept;
        drop(registry);
        let server = &config.server;
        let refused = |reason: &str| {
            metrics
                .connections_refused_total
                .with_label_values(&[reason])
        };
        Shield {
            limits,
            allow: config.shield.allow.clone(),
            deny: config.shield.deny.clone(),
            trusted: server.trusted_proxies.clone(),
            ban: config.shield.ban.clone(),
            state: state.clone(),
            ipv6_prefix: server.ipv6_prefix,
            header_timeout: server.header_timeout,
            guard: guard::GuardSettings {
                header_timeout: server.header_timeout,
                keepalive_timeout: server.keepalive_timeout,
                upgrade_idle_timeout: server.upgrade_idle_timeout,
                max_header_bytes: server.max_header_bytes,
            },
            tls_handshake_timeout: server.tls_handshake_timeout,
            body_min_rate: server.body_min_rate,
            max_body_bytes: server.max_body_bytes,
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            metrics: ShieldMetrics {
                refused_denied: refused("denied"),
                refused_too_many: refused("max_connections"),
                refused_too_many_from_address: refused("max_connections_per_ip"),
            },
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        !self.allow.is_empty() && self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The ban in force for a client address (none for an address of `shield.allow`): the
    /// time it has left.
    pub fn ban_in_force(&self, client_ip: IpAddr) -> Option<Duration> {
        if self.allowed(client_ip) {
            return None;
        }
        self.state.bans.banned(self.client_key(client_ip))
    }

    /// The client_ip key of an address under this generation.
    pub fn client_key(&self, ip: IpAddr) -> u64 {
        ip_key(ip, self.ipv6_prefix, &self.state.hasher)
    }

    /// Whether `shield.deny` refuses this address (and `shield.allow` does not exempt it).
    pub fn denied(&self, ip: IpAddr) -> bool {
        !self.deny.is_empty() && self.deny.iter().any(|net| net.contains(&ip)) && !self.allowed(ip)
    }

    /// Accept time, before TLS: deny CIDRs, then the caps against the connections open now.
    pub fn refuse_connection(&self, ip: IpAddr) -> Option<Refusal> {
        if self.denied(ip) {
            return Some(Refusal::Denied);
        }
        self.state
            .connections
            .over_caps(self.client_key(ip), self.caps(ip))
    }

    /// The caps for connections from `ip`.
    pub fn caps(&self, ip: IpAddr) -> connections::Caps {
        caps_for(
            ip,
            self.max_connections,
            self.max_connections_per_ip,
            &self.allow,
            &self.trusted,
        )
    }

    pub fn count_connection_refusal(&self, refusal: Refusal) {
        match refusal {
            Refusal::Denied => self.metrics.refused_denied.inc(),
            Refusal::TooMany => self.metrics.refused_too_many.inc(),
            Refusal::TooManyFromAddress => self.metrics.refused_too_many_from_address.inc(),
        }
    }

    /// What `admit` decides before the limits: an allowed address passes, a banned one is
    /// refused, a route without limits passes; else the limits are asked with the client's key.
    fn before_limits(&self, route_limits: &[usize], client_ip: IpAddr) -> BeforeLimits {
        if self.allowed(client_ip) {
            return BeforeLimits::Decided(None);
        }
        let client_key = self.client_key(client_ip);
        if let Some(left) = self.state.bans.banned(client_key) {
            return BeforeLimits::Decided(Some(banned_answer(left)));
        }
        if route_limits.is_empty() {
            return BeforeLimits::Decided(None);
        }
        BeforeLimits::Ask(client_key)
    }

    /// Ban check, then the route's limits, in the route's order. `Some(answer)`: refused.
    /// A request refused by one limit is charged to none: every limit is asked first, and only
    /// a request all of them let through is charged.
    pub async fn admit(
        &self,
        route_limits: &[usize],
        session: &mut Session,
        client_ip: IpAddr,
        state: &mut RequestState,
    ) -> Option<Answer> {
        let client_key = match self.before_limits(route_limits, client_ip) {
            BeforeLimits::Ask(client_key) => client_key,
            BeforeLimits::Decided(decided) => return decided,
        };

        // Form fields need the body (at most 64 KiB), read now and still forwarded whole.
        let mut form = FormBody::NotRead;
        if route_limits
            .iter()
            .filter_map(|&i| self.limits.get(i))
            .any(|l| limits::reads_body(&l.key))
        {
            form = match body::read_form_body(session, self.header_timeout).await {
                Ok(form) => form,
                Err(reason) => return Some(Answer::new(reason)),
            };
        }

        // Cluster limits go to the store while it answers; while it does not, each is decided
        // here at this node's share (a request costs as many cells as there are live nodes).
        let cluster = self.state.cluster.as_deref();
        let store_up = cluster.is_some_and(|c| c.is_up());
        let share = cluster.map_or(1, |c| u32::try_from(c.live_nodes()).unwrap_or(u32::MAX));
        let mut keyed: Vec<Keyed> = Vec::with_capacity(route_limits.len());
        let mut found = Vec::with_capacity(2);
        for limit in route_limits.iter().filter_map(|&i| self.limits.get(i)) {
            found.clear();
            self.keys_of(limit, session, client_key, &form, &mut found);
            let clustered = limit.scope == LimitScope::Cluster && cluster.is_some();
            let cost = if clustered && !store_up {
                share.clamp(1, limit.burst.max(1))
            } else {
                1
            };
            keyed.extend(found.iter().map(|&(key, shared)| Keyed {
                limit,
                key,
                shared,
                charge: true,
                cost,
                in_store: clustered && store_up,
            }));
        }

        // Ask every limit first. A dry_run limit that would refuse is counted, and not
        // charged, as it would not be if enforced. A cluster key the store refused lately is
        // refused here until its time, without a round trip.
        for k in keyed.iter_mut() {
            let verdict = if k.in_store {
                if k.limit.lease > 1 && k.limit.state.leased.take(k.key) {
                    // A token taken from the store ahead: spent here.
                    k.charge = false;
                    k.in_store = false;
                    continue;
                }
                match k.limit.state.refused.until(k.key) {
                    Some(wait) => {
                        if let Some(c) = cluster {
                            c.metrics.refused_locally.inc();
                        }
                        Verdict::Refuse {
                            wait,
                            overflow: false,
                        }
                    }
                    None => continue,
                }
            } else {
                k.limit.state.test_n(k.key, k.cost)
            };
            if let Verdict::Refuse { wait, overflow } = verdict {
                k.charge = false;
                let shared = k.shared || overflow;
                let refused = self.refused(k.limit, client_ip, client_key, wait, shared, state);
                if refused.is_some() {
                    return refused;
                }
            }
        }
        let fell_back = cluster.is_some()
            && !store_up
            && keyed.iter().any(|k| k.limit.scope == LimitScope::Cluster);
        if let Some(cluster) = cluster {
            if keyed.iter().any(|k| k.in_store && k.charge) {
                let charges: Vec<ClusterCharge> = keyed
                    .iter()
                    .filter(|k| k.in_store && k.charge)
                    .map(|k| ClusterCharge {
                        limit: &k.limit.name,
                        key: k.key,
                        rate: k.limit.rate,
                        burst: k.limit.burst,
                        lease: k.limit.lease,
                    })
                    .collect();
                let answer = cluster.charge(&charges).await;
                drop(charges);
                match answer {
                    Some(granted) => {
                        let asked = keyed.iter_mut().filter(|k| k.in_store && k.charge);
                        for (k, granted) in asked.zip(granted) {
                            // Charged by the store, or refused by it (and then nothing was).
                            k.charge = false;
                            let wait = match granted {
                                Granted::Tokens(n) => {
                                    if n > 1 {
                                        // The rest of the lease, valid for the time it stands for.
                                        let valid = k.limit.interval() * n;
                                        k.limit.state.leased.put(k.key, n - 1, valid);
                                    }
                                    continue;
                                }
                                Granted::Refused(wait) => wait,
                            };
                            k.limit.state.refused.refuse(k.key, wait);
                            let refused =
                                self.refused(k.limit, client_ip, client_key, wait, k.shared, state);
                            if refused.is_some() {
                                return refused;
                            }
                        }
                    }
                    None => {
                        // The store is away: these keys are decided here, at this node's share.
                        cluster
                            .metrics
                            .fallbacks
                            .with_label_values(&["limit"])
                            .inc();
                        let cost = share.max(1);
                        for k in keyed.iter_mut().filter(|k| k.in_store && k.charge) {
                            k.in_store = false;
                            k.cost = cost.clamp(1, k.limit.burst.max(1));
                            if let Verdict::Refuse { wait, overflow } =
                                k.limit.state.test_n(k.key, k.cost)
                            {
                                k.charge = false;
                                let shared = k.shared || overflow;
                                let refused = self
                                    .refused(k.limit, client_ip, client_key, wait, shared, state);
                                if refused.is_some() {
                                    return refused;
                                }
                            }
                        }
                    }
                }
            } else if fell_back {
                cluster
                    .metrics
                    .fallbacks
                    .with_label_values(&["limit"])
                    .inc();
            }
        }
        // Then charge the keys decided here. Another request may have taken the last token in
        // between: that limit refuses now.
        for k in keyed.iter().filter(|k| k.charge && !k.in_store) {
            if let Verdict::Refuse { wait, overflow } = k.limit.state.charge_n(k.key, k.cost) {
                let shared = k.shared || overflow;
                let refused = self.refused(k.limit, client_ip, client_key, wait, shared, state);
                if refused.is_some() {
                    return refused;
                }
            }
        }
        None
    }

    /// Whether `admit` decides this route's limits from the client address alone: every limit
    /// is keyed by `client_ip` or `global` and decided here (local, or no cluster), at most 64.
    pub fn decides_from_address(&self, route_limits: &[usize]) -> bool {
        let in_cluster = self.state.cluster.is_some();
        route_limits.len() <= 64
            && route_limits.iter().all(|&i| {
                self.limits.get(i).is_some_and(|limit| {
                    matches!(limit.key, LimitKey::ClientIp | LimitKey::Global)
                        && (limit.scope == LimitScope::Local || !in_cluster)
                })
            })
    }

    /// `admit` for a route whose limits [`Shield::decides_from_address`]: the same answer, the
    /// same charges, counts and bans, without the request (its address is all they read).
    pub fn admit_from_address(
        &self,
        route_limits: &[usize],
        client_ip: IpAddr,
        state: &mut RequestState,
    ) -> Option<Answer> {
        let client_key = match self.before_limits(route_limits, client_ip) {
            BeforeLimits::Ask(client_key) => client_key,
            BeforeLimits::Decided(decided) => return decided,
        };
        let key_of = |limit: &CompiledLimit| match limit.key {
            LimitKey::Global => GLOBAL_KEY,
            _ => client_key,
        };
        // Ask every limit first (a dry_run one that would refuse is counted, not charged),
        // then charge those that did not refuse, as `admit` does.
        let mut refused_mask: u64 = 0;
        for (n, limit) in route_limits
            .iter()
            .filter_map(|&i| self.limits.get(i))
            .enumerate()
        {
            if let Verdict::Refuse { wait, overflow } = limit.state.test_n(key_of(limit), 1) {
                refused_mask |= 1u64.checked_shl(n as u32).unwrap_or(0);
                let refused = self.refused(limit, client_ip, client_key, wait, overflow, state);
                if refused.is_some() {
                    return refused;
                }
            }
        }
        for (n, limit) in route_limits
            .iter()
            .filter_map(|&i| self.limits.get(i))
            .enumerate()
        {
            if refused_mask & 1u64.checked_shl(n as u32).unwrap_or(0) != 0 {
                continue;
            }
            if let Verdict::Refuse { wait, overflow } = limit.state.charge_n(key_of(limit), 1) {
                let refused = self.refused(limit, client_ip, client_key, wait, overflow, state);
                if refused.is_some() {
                    return refused;
                }
            }
        }
        None
    }

    /// What `admit` answers a request its route's limits refuse, decided from the client
    /// address alone, asking without charging: `Some(answer)` only when every limit of the
    /// route is keyed by `client_ip` or `global`, decided here (not in a cluster's store) and
    /// enforced (not dry_run), and one of them refuses now; the refusal is counted (and may
    /// ban) as `admit` counts it. None: `admit` decides, and charges.
    pub fn refuse_from_address(
        &self,
        route_limits: &[usize],
        client_ip: IpAddr,
        state: &mut RequestState,
    ) -> Option<Answer> {
        if route_limits.is_empty() || self.allowed(client_ip) {
            return None;
        }
        let in_cluster = self.state.cluster.is_some();
        for &i in route_limits {
            let limit = self.limits.get(i)?;
            let from_address = matches!(limit.key, LimitKey::ClientIp | LimitKey::Global);
            let here = limit.scope == LimitScope::Local || !in_cluster;
            if !from_address || !here || limit.mode == LimitMode::DryRun {
                return None;
            }
        }
        let client_key = self.client_key(client_ip);
        for limit in route_limits.iter().filter_map(|&i| self.limits.get(i)) {
            let key = match limit.key {
                LimitKey::Global => GLOBAL_KEY,
                _ => client_key,
            };
            if let Verdict::Refuse { wait, overflow } = limit.state.test_n(key, 1) {
                return self.refused(limit, client_ip, client_key, wait, overflow, state);
            }
        }
        None
    }

    /// Count a refusal; `Some(answer)` unless the limit is in dry_run. `shared`: the bucket
    /// is shared by many clients (the overflow bucket, the unreadable key).
    fn refused(
        &self,
        limit: &CompiledLimit,
        client_ip: IpAddr,
        client_key: u64,
        wait: Duration,
        shared: bool,
        state: &mut RequestState,
    ) -> Option<Answer> {
        limit.state.refusals.fetch_add(1, Ordering::Relaxed);
        self.state.note_refusal();
        if shared {
            limit
                .state
                .overflow_refusals
                .fetch_add(1, Ordering::Relaxed);
        }
        limit.refused.inc();
        if limit.mode == LimitMode::DryRun {
            tracing::info!(limit = %limit.name, client_ip = %client_ip, "dry_run: a request would be refused");
            state.dry_run.get_or_insert_with(|| limit.name.clone());
            return None;
        }
        // Only limits that say so ban (by default those keyed by client_ip), and a bucket
        // shared by many clients bans nobody.
        if let (Some(rule), true, false) = (&self.ban, limit.ban, shared) {
            let prefix = self.ipv6_prefix;
            if self
                .state
                .bans
                .violation(client_key, || ip_group(client_ip, prefix), rule)
            {
                tracing::warn!(client_ip = %client_ip, limit = %limit.name, "client banned");
                if let Some(cluster) = &self.state.cluster {
                    cluster.ban_made(client_key, ip_group(client_ip, prefix), rule.duration);
                }
            }
        }
        state.limit = Some(limit.name.clone());
        let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut answer = Answer::new(Reason::RateLimited).detail(limit.name.to_string());
        answer.retry_after = Some(retry_after);
        if let Some(policy) = &limit.policy {
            answer
                .headers
                .push((HeaderName::from_static("ratelimit-policy"), policy.clone()));
        }
        if let Ok(value) = HeaderValue::from_str(&format!("\"{}\";r=0;t={retry_after}", limit.name))
        {
            answer
                .headers
                .push((HeaderName::from_static("ratelimit"), value));
        }
        Some(answer)
    }

    /// The keys of this request for a limit, added to `out` with whether each is a bucket
    /// shared by many clients; none: the limit does not apply (no such header, cookie,
    /// parameter or field). Field limits fail closed: every value found is charged (the body's
    /// and the query's, when both name one; the backend may read either), and a field that
    /// cannot be read (a body too large, chunked or of another type, JSON that is not an
    /// object, a field given twice with different values) is charged to the limit's one shared
    /// unreadable key as well.
    fn keys_of(
        &self,
        limit: &CompiledLimit,
        session: &Session,
        client_key: u64,
        form: &FormBody,
        out: &mut Vec<(u64, bool)>,
    ) {
        let hasher = &self.state.hasher;
        let req = session.req_header();
        match &limit.key {
            LimitKey::ClientIp => out.push((client_key, false)),
            LimitKey::Global => out.push((GLOBAL_KEY, false)),
            LimitKey::Header(name) => {
                if let Some(v) = keys::header_value(&req.headers, name) {
                    out.push((text_key(KIND_HEADER, v, hasher), false));
                }
            }
            LimitKey::Cookie(name) => {
                if let Some(v) = keys::cookie_value(&req.headers, name) {
                    out.push((text_key(KIND_COOKIE, v, hasher), false));
                }
            }
            LimitKey::Query(_) | LimitKey::Form(_) => {
                let mut fields = Vec::with_capacity(2);
                self.fields(limit, &limit.key, session, form, &mut fields);
                field_keys(fields, hasher, out);
            }
            LimitKey::Any(sources) => {
                let mut fields = Vec::with_capacity(sources.len() + 1);
                for source in sources {
                    self.fields(limit, source, session, form, &mut fields);
                }
                field_keys(fields, hasher, out);
            }
        }
    }

    /// What one source says of a request. `form:` reads the body and the query string, as a
    /// servlet's `getParameter` does.
    fn fields(
        &self,
        limit: &CompiledLimit,
        source: &LimitKey,
        session: &Session,
        form: &FormBody,
        out: &mut Vec<keys::Field>,
    ) {
        let req = session.req_header();
        let m = keys::FieldMatch {
            case_insensitive: !limit.case_sensitive,
        };
        let query = |name: &str| {
            req.uri.query().map_or(keys::Field::Absent, |q| {
                keys::query_field(q.as_bytes(), name, m)
            })
        };
        match source {
            LimitKey::Header(name) => {
                out.push(keys::Field::of_text(keys::header_value(&req.headers, name)))
            }
            LimitKey::Cookie(name) => {
                out.push(keys::Field::of_text(keys::cookie_value(&req.headers, name)))
            }
            LimitKey::Query(name) => out.push(query(name)),
            LimitKey::Form(name) => {
                out.push(query(name));
                out.push(match form {
                    FormBody::NotRead | FormBody::Empty => keys::Field::Absent,
                    FormBody::Unreadable => keys::Field::Unreadable,
                    FormBody::Read { kind, bytes } => keys::form_field(*kind, bytes, name, m),
                });
            }
            LimitKey::ClientIp | LimitKey::Global | LimitKey::Any(_) => {}
        }
    }

    /// Police the request body as it streams: `max_body_bytes` (413) and `body_min_rate`
    /// (408), measured from the arrival of the request head.
    pub fn check_body(
        &self,
        bytes_read: u64,
        since_head: Duration,
        end_of_body: bool,
    ) -> pingora::Result<()> {
        body::check_body(
            bytes_read,
            since_head,
            end_of_body,
            self.max_body_bytes,
            self.body_min_rate,
        )
    }

    /// Lift a ban by address (the key is computed with this generation's IPv6 grouping).
    pub fn lift_ban(&self, ip: IpAddr) -> bool {
        let key = self.client_key(ip);
        if let Some(cluster) = &self.state.cluster {
            // Lifted on every node, even when this one had not heard of the ban.
            cluster.ban_lifted(key);
        }
        self.state.bans.lift(key)
    }

    /// Housekeeping: forget idle keys, end bans; updates the gauges. Returns bans in force.
    pub fn sweep(&self, metrics: &Metrics) -> usize {
        for limit in self.state.all_limits() {
            limit.sweep();
        }
        for limit in &self.limits {
            metrics
                .limit_keys
                .with_label_values(&[&limit.name])
                .set(limit.state.tracked_keys() as i64);
        }
        let within = self
            .ban
            .as_ref()
            .map_or(Duration::from_secs(60), |b| b.within);
        let active = self.state.bans.sweep(within);
        metrics.bans_active.set(active as i64);
        active
    }
}

/// What the shield remembers about one request.
#[derive(Default)]
pub struct RequestState {
    /// The limit that refused the request (for the access log).
    pub limit: Option<Arc<str>>,
    /// The first dry_run limit that would have refused it.
    pub dry_run: Option<Arc<str>>,
}

/// The guard reports to the process's metrics.
impl guard::GuardReport for Metrics {
    fn closed(&self, reason: guard::CloseReason) {
        self.connections_closed_total
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    fn answered(&self, reason: guard::CloseReason) {
        let reason = match reason {
            guard::CloseReason::HeadersTooLarge => Reason::HeadersTooLarge,
            _ => Reason::HeaderTimeout,
        };
        self.count_generated(reason);
    }

    fn heads_in_progress(&self) -> &std::sync::atomic::AtomicI64 {
        &self.heads_in_progress
    }
}

/// How often idle keys are swept and ended bans dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
