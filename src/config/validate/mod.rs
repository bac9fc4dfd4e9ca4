//! From the raw layer to the validated model: every value parsed, every rule checked, every
//! reference resolved, every referenced file read. Errors are collected, never thrown one by one:
//! a bad value is reported with its key path and replaced by its default so that checking goes on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::certs::{self, CertPart};
use super::env::Expanded;
use super::lines::{join_index, join_key, LineIndex};
use super::model::*;
use super::raw::*;
use super::values::*;
use super::ConfigError;

mod limits;
mod login_queues;
mod routes;
mod schedules;
mod upstreams;

/// Collects errors, locating each by its key path.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    index: &'a LineIndex,
    expanded: &'a Expanded,
    pub(crate) errors: Vec<ConfigError>,
    /// Valid but known to lose requests (`rempart -t` prints them; start and reload log them).
    pub(crate) warnings: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(file: &'a Path, index: &'a LineIndex, expanded: &'a Expanded) -> Self {
        Ctx {
            file,
            index,
            expanded,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        let line = self
            .index
            .line(path)
            .map(|l| self.expanded.original_line(l));
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let line = self
            .index
            .line(path)
            .map(|l| self.expanded.original_line(l));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The parsed value, None when absent or bad (a bad one is reported).
    fn opt<T>(
        &mut self,
        path: &str,
        value: &Value,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = value.as_ref()?;
        match parse(value.as_str()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    /// The parsed value, or `default` when absent or bad (a bad one is reported).
    fn or<T>(
        &mut self,
        path: &str,
        value: &Value,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.opt(path, value, parse).unwrap_or(default)
    }

    /// The parsed value; absent is reported as missing.
    fn required<T>(
        &mut self,
        path: &str,
        value: &Value,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if value.is_none() {
            self.error(path, "required field is missing");
            return None;
        }
        self.opt(path, value, parse)
    }
}

fn at_least<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    min: T,
) -> impl Fn(&str) -> Result<T, String> {
    move |s| {
        let n: T = parse_number(s)?;
        if n < min {
            return Err(format!("must be at least {min}, not {n}"));
        }
        Ok(n)
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be more than 0"));
    }
    Ok(d)
}

fn positive_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n == 0 {
        return Err(format!("invalid size {s:?}: must be more than 0"));
    }
    Ok(n)
}

fn text(s: &str) -> Result<String, String> {
    Ok(s.to_string())
}

fn name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid name {s:?}: use letters, digits, '_', '-' and '.'"
        ))
    }
}

fn file_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("empty file path".to_string());
    }
    Ok(PathBuf::from(s))
}

/// Whether two listening addresses would collide (same port, same IP or one of them a wildcard).
fn addrs_conflict(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

pub(crate) fn build(
    raw: RawConfig,
    ctx: &mut Ctx,
    source: &Path,
    masked: serde_json::Value,
) -> Config {
    let server = server(ctx, raw.server.unwrap_or_default());
    let listeners = listeners(ctx, raw.listeners);
    let admin = admin(ctx, raw.admin.unwrap_or_default(), &listeners);
    let upstreams = upstreams::upstreams(ctx, raw.upstreams.unwrap_or_default());
    let limits = limits::limits(ctx, raw.limits.unwrap_or_default());
    let shield = shield(ctx, raw.shield.unwrap_or_default());
    let login_queues = login_queues::login_queues(ctx, raw.login_queues.unwrap_or_default());
    let pages = pages(ctx, raw.pages.unwrap_or_default());
    let routes = routes::routes(ctx, raw.routes, &upstreams, &limits, &login_queues);
    let schedules = schedules::schedules(ctx, raw.schedules, &login_queues, &limits);
    upstreams::warn_risky(ctx, &upstreams);
    routes::warn_risky(ctx, &routes);
    Config {
        source: source.to_path_buf(),
        server,
        listeners,
        admin,
        upstreams,
        routes,
        limits,
        shield,
        login_queues,
        pages,
        schedules,
        masked,
        warnings: Vec::new(),
    }
}

fn server(ctx: &mut Ctx, r: RawServer) -> Server {
    let p = |k: &str| join_key("server", k);
    let mut trusted_proxies = Vec::new();
    for (i, v) in r.trusted_proxies.unwrap_or_default().iter().enumerate() {
        let path = join_index(&p("trusted_proxies"), i);
        if let Some(net) = ctx.opt(&path, &Some(v.clone()), parse_cidr) {
            trusted_proxies.push(net);
        }
    }
    Server {
        threads: ctx.or(&p("threads"), &r.threads, 2, at_least(1usize)),
        grace_period: ctx.or(
            &p("grace_period"),
            &r.grace_period,
            Duration::from_secs(10),
            parse_duration,
        ),
        trusted_proxies,
        ipv6_prefix: ctx.or(&p("ipv6_prefix"), &r.ipv6_prefix, 64, |s| {
            let n: u8 = parse_number(s).map_err(|_| format!("invalid prefix length {s:?}"))?;
            if !(1..=128).contains(&n) {
                return Err(format!("must be between 1 and 128, not {n}"));
            }
            Ok(n)
        }),
        header_timeout: ctx.or(
            &p("header_timeout"),
            &r.header_timeout,
            Duration::from_secs(10),
            positive_duration,
        ),
        keepalive_timeout: ctx.or(
            &p("keepalive_timeout"),
            &r.keepalive_timeout,
            Duration::from_secs(60),
            positive_duration,
        ),
        tls_handshake_timeout: ctx.or(
            &p("tls_handshake_timeout"),
            &r.tls_handshake_timeout,
            Duration::from_secs(10),
            positive_duration,
        ),
        upgrade_idle_timeout: ctx.or(
            &p("upgrade_idle_timeout"),
            &r.upgrade_idle_timeout,
            Duration::from_secs(600),
            positive_duration,
        ),
        body_min_rate: ctx.or(&p("body_min_rate"), &r.body_min_rate, 1024, |s| {
            let n = parse_byte_rate(s)?;
            if n == 0 {
                return Err(format!("invalid byte rate {s:?}: must be more than 0"));
            }
            Ok(n)
        }),
        max_header_bytes: ctx.or(
            &p("max_header_bytes"),
            &r.max_header_bytes,
            32 * 1024,
            |s| {
                let n = positive_size(s)?;
                usize::try_from(n).map_err(|_| format!("invalid size {s:?}: too large"))
            },
        ),
        max_body_bytes: ctx.or(
            &p("max_body_bytes"),
            &r.max_body_bytes,
            16 * 1024 * 1024,
            positive_size,
        ),
        max_connections: ctx.or(
            &p("max_connections"),
            &r.max_connections,
            20_000,
            at_least(1usize),
        ),
        max_connections_per_ip: ctx.or(
            &p("max_connections_per_ip"),
            &r.max_connections_per_ip,
            256,
            at_least(1usize),
        ),
        access_log: ctx.or(
            &p("access_log"),
            &r.access_log,
            AccessLogTarget::Stdout,
            access_log,
        ),
        watch_config: ctx.or(&p("watch_config"), &r.watch_config, false, parse_bool),
        path_normalization: ctx.or(
            &p("path_normalization"),
            &r.path_normalization,
            crate::path::PathMode::Strict,
            |s| {
                s.parse()
                    .map_err(|e: crate::path::UnknownPathMode| e.to_string())
            },
        ),
        runtime_dir: ctx
            .opt(&p("runtime_dir"), &r.runtime_dir, file_path)
            .unwrap_or_else(crate::runtime_dir::default_dir),
        forwarded: ctx.or(
            &p("forwarded"),
            &r.forwarded,
            crate::forwarded::ForwardedPolicy::Strip,
            |s| s.parse(),
        ),
    }
}

fn access_log(s: &str) -> Result<AccessLogTarget, String> {
    match s {
        "stdout" => return Ok(AccessLogTarget::Stdout),
        "off" => return Ok(AccessLogTarget::Off),
        _ => {}
    }
    let path = file_path(s).map_err(|_| "expected stdout, off or a file path".to_string())?;
    if path.is_dir() {
        return Err(format!("{s:?} is a directory"));
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(format!(
                "the directory {:?} does not exist",
                parent.display().to_string()
            ));
        }
    }
    Ok(AccessLogTarget::File(path))
}

fn listeners(ctx: &mut Ctx, raw: Option<Vec<RawListener>>) -> Vec<Listener> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        ctx.error("listeners", "at least one listener is required");
    }
    let mut out: Vec<(usize, Listener)> = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let base = join_index("listeners", i);
        let path = join_key(&base, "address");
        let address = ctx.required(&path, &l.address, parse_socket_addr);
        if let Some(address) = address {
            if let Some((j, _)) = out
                .iter()
                .find(|(_, other)| addrs_conflict(&address, &other.address))
            {
                ctx.error(
                    &path,
                    format!("{address} overlaps the address of listeners[{j}]"),
                );
            }
        }
        let tls = l.tls.map(|t| listener_tls(ctx, &join_key(&base, "tls"), t));
        if let Some(address) = address {
            out.push((i, Listener { address, tls }));
        }
    }
    out.into_iter().map(|(_, l)| l).collect()
}

fn listener_tls(ctx: &mut Ctx, base: &str, t: RawListenerTls) -> ListenerTls {
    let list_path = join_key(base, "certificates");
    let raw = t.certificates.unwrap_or_default();
    if raw.is_empty() {
        ctx.error(&list_path, "at least one certificate is required");
    }
    let mut certificates = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let item = join_index(&list_path, i);
        let cert_key = join_key(&item, "cert");
        let key_key = join_key(&item, "key");
        let cert = ctx.required(&cert_key, &c.cert, file_path);
        let key = ctx.required(&key_key, &c.key, file_path);
        let (Some(cert), Some(key)) = (cert, key) else {
            continue;
        };
        match certs::load_certificate(&cert, &key) {
            Ok(loaded) => certificates.push(loaded),
            Err(e) => {
                let path = match e.part {
                    CertPart::Cert => &cert_key,
                    CertPart::Key => &key_key,
                    CertPart::Pair => &item,
                };
                ctx.error(path, e.message);
            }
        }
    }
    ListenerTls {
        certificates,
        http2: ctx.or(&join_key(base, "http2"), &t.http2, true, parse_bool),
    }
}

fn admin(ctx: &mut Ctx, r: RawAdmin, listeners: &[Listener]) -> Admin {
    let default = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
    let address = ctx.or("admin.address", &r.address, default, parse_socket_addr);
    if let Some(i) = listeners
        .iter()
        .position(|l| addrs_conflict(&address, &l.address))
    {
        ctx.error(
            "admin.address",
            format!("{address} overlaps the address of listeners[{i}]"),
        );
    }
    let token = r
        .token
        .filter(|t| !t.as_str().is_empty())
        .map(|t| Secret(t.0));
    if token.is_none() && !address.ip().is_loopback() {
        ctx.error(
            "admin.address",
            format!(
                "{address} is not a loopback address: set admin.token (anyone who reaches the admin API can drain datacenters and lift bans)"
            ),
        );
    }
    let mut allowed_hosts = Vec::new();
    for (i, h) in r.allowed_hosts.unwrap_or_default().into_iter().enumerate() {
        let host = h.as_str().trim().to_ascii_lowercase();
        if host.is_empty() || host.contains(['/', ' ', ':']) {
            ctx.error(
                &join_index("admin.allowed_hosts", i),
                format!("invalid host name {:?}: a name without port", h.as_str()),
            );
        } else {
            allowed_hosts.push(host);
        }
    }
    Admin {
        address,
        token,
        allowed_hosts,
    }
}

/// Reports an entry whose name is bad or already taken; false for a name already taken (a bad
/// name is kept, so that references to it do not add errors of their own).
fn entry_name(ctx: &mut Ctx, path: &str, key: &str, seen: &mut Vec<String>) -> bool {
    if let Err(message) = name(key) {
        ctx.error(path, message);
    }
    if seen.iter().any(|s| s == key) {
        ctx.error(path, format!("the name {key:?} is defined twice"));
        return false;
    }
    seen.push(key.to_string());
    true
}

fn cidr_list(ctx: &mut Ctx, path: &str, raw: Option<Vec<Scalar>>) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, v) in raw.unwrap_or_default().into_iter().enumerate() {
        if let Some(net) = ctx.opt(&join_index(path, i), &Some(v), parse_cidr) {
            out.push(net);
        }
    }
    out
}

fn shield(ctx: &mut Ctx, r: RawShield) -> Shield {
    let deny = cidr_list(ctx, "shield.deny", r.deny);
    let allow = cidr_list(ctx, "shield.allow", r.allow);
    let ban = r.ban.map(|b| Ban {
        after: ctx.or("shield.ban.after", &b.after, 100, at_least(1u32)),
        within: ctx.or(
            "shield.ban.within",
            &b.within,
            Duration::from_secs(60),
            positive_duration,
        ),
        duration: ctx.or(
            "shield.ban.for",
            &b.duration,
            Duration::from_secs(600),
            positive_duration,
        ),
        max_entries: ctx.or(
            "shield.ban.max_entries",
            &b.max_entries,
            100_000,
            at_least(1usize),
        ),
    });
    Shield { deny, allow, ban }
}

fn page(ctx: &mut Ctx, path: &str, value: &Value) -> Option<Page> {
    let file = ctx.opt(path, value, file_path)?;
    match std::fs::read_to_string(&file) {
        Ok(html) => Some(Page {
            path: file,
            html: Arc::from(html),
        }),
        Err(e) => {
            ctx.error(path, certs::read_error(&file, &e));
            None
        }
    }
}

fn pages(ctx: &mut Ctx, r: RawPages) -> Pages {
    Pages {
        waiting_room: page(ctx, "pages.waiting_room", &r.waiting_room),
        maintenance: page(ctx, "pages.maintenance", &r.maintenance),
    }
}
