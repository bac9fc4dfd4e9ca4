//! Whole-file tests: the SPEC example, defaults, error collection, lines, references, files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A directory removed at drop, unique per test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rempart-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a self-signed certificate for `names` and its key; returns (cert path, key path).
fn self_signed(dir: &TempDir, stem: &str, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    (
        dir.write(&format!("{stem}.crt"), &ck.cert.pem()),
        dir.write(&format!("{stem}.key"), &ck.key_pair.serialize_pem()),
    )
}

fn env(name: &str) -> Option<String> {
    match name {
        "REMPART_ADMIN_TOKEN" => Some("t0ken".into()),
        "UPSTREAM_A" => Some("127.0.0.1:18081".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    from_str_with_env(text, Path::new("conf/rempart.yaml"), env)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

/// `(line, path, message)` triples, for compact assertions.
fn triples(errors: &[ConfigError]) -> Vec<(Option<usize>, &str, &str)> {
    errors
        .iter()
        .map(|e| (e.line, e.path.as_str(), e.message.as_str()))
        .collect()
}

const MINIMAL: &str = "\
listeners:
  - address: 127.0.0.1:8080
upstreams:
  app:
    datacenters:
      - name: dc-a
        servers: [127.0.0.1:9000]
routes:
  - name: all
    upstream: app
";

fn spec_example(cert: &str, key: &str, waiting: &str, maintenance: &str) -> String {
    format!(
        r#"server:
  threads: 2                       # proxy worker threads
  grace_period: 10s                # SIGTERM drain time
  trusted_proxies: []              # peers whose X-Forwarded-For is believed
  ipv6_prefix: 64                  # client_ip keys group IPv6 clients by this prefix
  header_timeout: 10s              # the whole request head must arrive within this
  body_min_rate: 1KiB/s            # a request body slower than this (after 5s) is cut: 408
  max_header_bytes: 32KiB          # 431 beyond
  max_body_bytes: 16MiB            # 413 beyond
  max_connections: 20000           # accepted connections in total
  max_connections_per_ip: 256      # per client_ip key
  access_log: stdout               # stdout | off | a file path

listeners:
  - address: 0.0.0.0:8080
  - address: 0.0.0.0:8443
    tls:
      certificates:                # chosen by SNI; the first one is the default
        - {{ cert: {cert}, key: {key} }}
      http2: true

admin:
  address: 127.0.0.1:9901
  token: ${{REMPART_ADMIN_TOKEN:-}}  # when not empty, all but /healthz need "Authorization: Bearer TOKEN"

upstreams:
  ent:
    datacenters:                   # priority order: traffic goes to the first one that is up
      - name: dc-a
        servers: [127.0.0.1:18081, 127.0.0.1:18083]
      - name: dc-b
        servers: [127.0.0.1:18082]
    min_healthy: 1                 # a datacenter is up while this many (or this share, "50%") of its servers are
    health_check: {{ path: /healthz, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }}
    outlier: {{ consecutive_failures: 3, eject_for: 10s }}   # live-traffic errors eject a server; doubles on repeat, at most 5m
    failback_after: 30s            # a better datacenter must stay up this long before traffic returns to it
    when_all_down: maintenance     # maintenance: 503 + pages.maintenance | try_all: send to every server anyway
    timeouts: {{ connect: 1s, response: 30s, idle: 60s }}
    retries: {{ attempts: 2, budget: 20% }}

routes:                            # first match wins; match on host (optional), path_prefix, methods (optional)
  - name: login
    match: {{ path_prefix: /auth/login }}
    upstream: ent
    limits: [login_per_ip, login_per_account]
    login_queue: logins
  - name: default
    match: {{ path_prefix: / }}
    upstream: ent
    limits: [per_ip]

limits:                            # key: client_ip | header:NAME | cookie:NAME | query:NAME | form:FIELD | global
  per_ip:            {{ key: client_ip, rate: 50/s, burst: 200 }}
  login_per_ip:      {{ key: client_ip, rate: 20/min, burst: 10 }}
  login_per_account: {{ key: "form:username", rate: 5/min, burst: 5, mode: enforce }}   # or dry_run
  # max_keys (default 1000000) bounds each limit's memory; see section 5

shield:
  deny: []                         # CIDRs refused at connection time
  allow: []                        # CIDRs exempt from limits, bans and the queue's per-client cap
  ban: {{ after: 100, within: 1m, for: 10m }}   # rate-limit violations that put a client_ip in the penalty box

login_queues:
  logins:
    concurrency: 64                # requests of this queue in flight to the upstream at once
    adaptive: {{ min: 8, max: 512 }} # optional: move concurrency with the measured upstream latency
    tenant: header:X-ENT-UAI       # host | header:NAME | cookie:NAME | query:NAME | path_segment:N
    tenant_weights: {{}}             # optional, default 1 each
    hold: 15s                      # wait in line holding the request this long, then answer with the waiting room
    max_waiting: 100000            # beyond this: 503 + Retry-After at once
    per_client_waiting: 20         # a client_ip holds at most this many places in line
    pass_ttl: 10m                  # after admission, the user's requests go before new arrivals for this long
    ticket_ttl: 2m                 # a client that does not come back within this loses its place
    secret: ${{REMPART_QUEUE_SECRET:-}}  # HMAC key of tickets and passes; random at start when empty

pages:                             # HTML served by Rempart itself; French first, English below
  waiting_room: {waiting}
  maintenance: {maintenance}
"#
    )
}

fn spec_files(dir: &TempDir) -> String {
    let (cert, key) = self_signed(dir, "localhost", &["localhost", "*.Ent.Example.Test"]);
    let waiting = dir.write("waiting-room.html", "<p>File d'attente</p>");
    let maintenance = dir.write("maintenance.html", "<p>Maintenance</p>");
    spec_example(&cert, &key, &waiting, &maintenance)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_spec_example_loads() {
    let dir = TempDir::new();
    let c = parse(&spec_files(&dir)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, Path::new("conf/rempart.yaml"));
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period, Duration::from_secs(10));
    assert_eq!(c.server.body_min_rate, 1024);
    assert_eq!(c.server.max_header_bytes, 32 * 1024);
    assert_eq!(c.server.max_body_bytes, 16 << 20);
    assert_eq!(c.server.access_log, AccessLogTarget::Stdout);
    assert!(!c.server.watch_config);

    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].address, addr("0.0.0.0:8080"));
    assert!(c.listeners[0].tls.is_none());
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert!(tls.http2);
    assert_eq!(
        tls.certificates[0].names,
        ["localhost", "*.ent.example.test"]
    );

    assert_eq!(c.admin.address, addr("127.0.0.1:9901"));
    assert_eq!(c.admin.token, Some(Secret("t0ken".into())));

    let ent = &c.upstreams[0];
    assert_eq!(ent.name, "ent");
    assert_eq!(ent.datacenters.len(), 2);
    assert_eq!(ent.datacenters[0].name, "dc-a");
    assert_eq!(
        ent.datacenters[0].servers,
        [addr("127.0.0.1:18081"), addr("127.0.0.1:18083")]
    );
    assert_eq!(ent.min_healthy, MinHealthy::Count(1));
    assert_eq!(ent.health_check.timeout, Duration::from_millis(500));
    assert_eq!(ent.outlier.consecutive_failures, 3);
    assert_eq!(ent.when_all_down, WhenAllDown::Maintenance);
    assert_eq!(ent.timeouts.idle, Duration::from_secs(60));
    assert_eq!(ent.timeouts.per_try, None);
    assert_eq!(ent.retries.attempts, 2);
    assert_eq!(ent.retries.budget, 0.2);

    let names: Vec<&str> = c.limits.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["per_ip", "login_per_ip", "login_per_account"]);
    assert_eq!(c.limits[2].key, LimitKey::Form("username".into()));
    assert_eq!(
        c.limits[1].rate,
        Rate {
            count: 20,
            per: Duration::from_secs(60)
        }
    );
    assert_eq!(c.limits[0].max_keys, 1_000_000);

    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].path_prefix, "/auth/login");
    assert_eq!(c.routes[0].limits, [1, 2]);
    assert_eq!(c.routes[0].login_queue, Some(0));
    assert_eq!(c.routes[1].limits, [0]);
    assert_eq!(c.routes[1].methods, None);

    let ban = c.shield.ban.as_ref().unwrap();
    assert_eq!(
        (ban.after, ban.within, ban.duration),
        (100, Duration::from_secs(60), Duration::from_secs(600))
    );

    let q = &c.login_queues[0];
    assert_eq!(q.tenant, TenantSource::Header("x-ent-uai".into()));
    assert_eq!((q.adaptive.unwrap().min, q.adaptive.unwrap().max), (8, 512));
    assert!(q.secrets.is_empty());
    assert_eq!(q.ticket_ttl, Duration::from_secs(120));

    assert_eq!(
        &*c.pages.waiting_room.as_ref().unwrap().html,
        "<p>File d'attente</p>"
    );

    assert_eq!(c.masked["admin"]["token"], "***");
    assert_eq!(
        c.masked["login_queues"]["logins"]["secret"],
        serde_json::Value::Null
    );
    assert_eq!(c.masked["upstreams"]["ent"]["retries"]["budget"], "20%");
}

#[test]
fn defaults_apply() {
    let c = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.ipv6_prefix, 64);
    assert_eq!(c.server.max_connections, 20_000);
    assert_eq!(c.server.max_connections_per_ip, 256);
    assert_eq!(c.admin.address, addr("127.0.0.1:9901"));
    assert_eq!(c.admin.token, None);
    assert_eq!(c.routes[0].path_prefix, "/");
    assert_eq!(c.routes[0].host, None);
    let u = &c.upstreams[0];
    assert_eq!(u.health_check.path, "/healthz");
    assert_eq!(u.health_check.interval, Duration::from_secs(1));
    assert_eq!((u.health_check.rise, u.health_check.fall), (2, 2));
    assert_eq!(u.outlier.eject_for, Duration::from_secs(10));
    assert_eq!(u.failback_after, Duration::from_secs(30));
    assert_eq!(u.timeouts.connect, Duration::from_secs(1));
    assert_eq!(u.timeouts.response, Duration::from_secs(30));
    assert!(c.limits.is_empty() && c.login_queues.is_empty());
    assert!(c.shield.ban.is_none());
    assert!(c.pages.maintenance.is_none());
}

#[test]
fn optional_and_forward_compatible_fields() {
    let dir = TempDir::new();
    let log = dir.0.join("access.log").display().to_string();
    let text = format!(
        "\
server: {{ watch_config: true, access_log: {log} }}
listeners:
  - address: \"[::1]:8080\"
upstreams:
  app:
    datacenters:
      - name: dc-a
        servers: [\"${{UPSTREAM_A}}\", \"[::1]:9001\", 10.0.0.1:80, 10.0.0.2:80]
    min_healthy: 50%
    when_all_down: try_all
    timeouts: {{ per_try: 2s }}
routes:
  - name: api
    match: {{ host: \"*.ENT.example\", path_prefix: /api, methods: [get, Post] }}
    upstream: app
    limits: [by_header]
limits:
  by_header: {{ key: \"header:X-Api-Key\", rate: 1000/h, mode: dry_run }}
login_queues:
  q:
    tenant: path_segment:2
    tenant_weights: {{ 0123456A: 3, 12345: 2 }}
    secret: k3y-long-enough-16
"
    );
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.server.watch_config);
    assert_eq!(c.server.access_log, AccessLogTarget::File(log.into()));
    assert_eq!(c.listeners[0].address, addr("[::1]:8080"));
    let u = &c.upstreams[0];
    assert_eq!(u.datacenters[0].servers[0], addr("127.0.0.1:18081"));
    assert_eq!(u.min_healthy, MinHealthy::Share(0.5));
    assert_eq!(u.when_all_down, WhenAllDown::TryAll);
    assert_eq!(u.timeouts.per_try, Some(Duration::from_secs(2)));
    let r = &c.routes[0];
    assert_eq!(r.host.as_deref(), Some("*.ent.example"));
    assert_eq!(r.methods, Some(vec![http::Method::GET, http::Method::POST]));
    assert_eq!(c.limits[0].key, LimitKey::Header("x-api-key".into()));
    assert_eq!(c.limits[0].burst, 1000);
    assert_eq!(c.limits[0].mode, LimitMode::DryRun);
    let q = &c.login_queues[0];
    assert_eq!(q.tenant, TenantSource::PathSegment(2));
    assert_eq!(q.tenant_weights.get("0123456A"), Some(&3));
    assert_eq!(q.tenant_weights.get("12345"), Some(&2));
    assert_eq!(q.concurrency, 64);
    assert_eq!(q.secrets, vec![Secret("k3y-long-enough-16".into())]);
    assert_eq!(c.masked["login_queues"]["q"]["secret"], "***");
    assert!(!format!("{:?}", c.login_queues).contains("k3y"));
}

#[test]
fn error_display_format() {
    let e = ConfigError {
        file: "conf/rempart.yaml".into(),
        line: Some(42),
        path: "upstreams.ent.datacenters[0].servers[1]".into(),
        message: "invalid address \"10.0.0.1:80x\"".into(),
    };
    assert_eq!(
        e.to_string(),
        "conf/rempart.yaml:42: upstreams.ent.datacenters[0].servers[1]: invalid address \"10.0.0.1:80x\""
    );
    let bare = ConfigError {
        line: None,
        path: String::new(),
        ..e.clone()
    };
    assert_eq!(
        bare.to_string(),
        "conf/rempart.yaml: invalid address \"10.0.0.1:80x\""
    );
    let all = ConfigErrors(vec![e, bare]);
    assert_eq!(all.to_string().lines().count(), 2);
}

#[test]
fn the_spec_error_example() {
    let text = MINIMAL.replace("[127.0.0.1:9000]", "[127.0.0.1:9000, 10.0.0.1:80x]");
    let e = ConfigErrors(errors(&text)).to_string();
    assert_eq!(
        e,
        "conf/rempart.yaml:7: upstreams.app.datacenters[0].servers[1]: invalid address \"10.0.0.1:80x\""
    );
}

#[test]
fn unknown_field_names_its_path_and_line() {
    let text = MINIMAL.replace(
        "  - address: 127.0.0.1:8080\n",
        "  - address: 127.0.0.1:8080\n    tsl: {}\n",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(3));
    assert_eq!(e[0].path, "listeners[0].tsl");
    assert!(
        e[0].message.starts_with("unknown field `tsl`"),
        "{}",
        e[0].message
    );

    let e = errors(&format!("{MINIMAL}colour: blue\n"));
    assert_eq!(triples(&e)[0].0, Some(11));
    assert_eq!(e[0].path, "colour");

    let text = MINIMAL.replace("servers: [127.0.0.1:9000]", "servers: {a: 1}");
    let e = errors(&text);
    assert_eq!(e[0].path, "upstreams.app.datacenters[0].servers");
    assert_eq!(e[0].line, Some(7));
    assert!(
        e[0].message.contains("expected a sequence"),
        "{}",
        e[0].message
    );
}

#[test]
fn all_value_errors_are_collected_with_lines_in_order() {
    let text = "\
server:
  threads: 0
  grace_period: 10
listeners:
  - address: 0.0.0.0:8080
  - address: localhost:8443
routes:
  - name: r
    match: { path_prefix: api, methods: [GET, \"B@D\"] }
    upstream: app
    limits: [nope]
upstreams:
  app:
    datacenters:
      - name: dc-a
        servers: [127.0.0.1:9000, 127.0.0.1:9000]
      - name: dc-b
    health_check: { rise: 0 }
    timeouts: { connect: 0s }
limits:
  l: { key: ip, rate: 30/m, burst: 0 }
login_queues:
  q: { adaptive: { min: 10, max: 5 }, tenant: path_segment:0 }
";
    let e = errors(text);
    let got = triples(&e);
    let expected: Vec<(Option<usize>, &str)> = vec![
        (Some(2), "server.threads"),
        (Some(3), "server.grace_period"),
        (Some(6), "listeners[1].address"),
        (Some(9), "routes[0].match.path_prefix"),
        (Some(9), "routes[0].match.methods[1]"),
        (Some(11), "routes[0].limits[0]"),
        (Some(16), "upstreams.app.datacenters[0].servers[1]"),
        (Some(17), "upstreams.app.datacenters[1].servers"),
        (Some(18), "upstreams.app.health_check.rise"),
        (Some(19), "upstreams.app.timeouts.connect"),
        (Some(21), "limits.l.key"),
        (Some(21), "limits.l.rate"),
        (Some(21), "limits.l.burst"),
        (Some(23), "login_queues.q.adaptive"),
        (Some(23), "login_queues.q.tenant"),
    ];
    let got_short: Vec<(Option<usize>, &str)> = got.iter().map(|(l, p, _)| (*l, *p)).collect();
    assert_eq!(got_short, expected, "{}", ConfigErrors(e.clone()));
    assert!(got[1].2.contains("missing unit"));
    assert!(got[2].2.contains("IP literal"));
    assert!(got[6].2.contains("listed twice"));
    assert!(got[7].2.contains("at least one server"));
    assert!(got[11].2.contains("write min"));
}

#[test]
fn dangling_references_and_duplicate_names() {
    let text = "\
listeners:
  - address: 0.0.0.0:8080
  - address: 0.0.0.0:8080
admin: { address: 127.0.0.1:8080 }
upstreams:
  app:
    datacenters: [{ name: a, servers: [127.0.0.1:1] }, { name: a, servers: [127.0.0.1:2] }]
routes:
  - name: r
    upstream: ghost
    limits: [missing]
    login_queue: nobody
  - name: r
    upstream: app
";
    let e = errors(text);
    let got: Vec<(Option<usize>, &str)> = triples(&e).iter().map(|(l, p, _)| (*l, *p)).collect();
    assert_eq!(
        got,
        vec![
            (Some(3), "listeners[1].address"),
            (Some(4), "admin.address"),
            (Some(7), "upstreams.app.datacenters[1].name"),
            (Some(10), "routes[0].upstream"),
            (Some(11), "routes[0].limits[0]"),
            (Some(12), "routes[0].login_queue"),
            (Some(13), "routes[1].name"),
        ],
        "{}",
        ConfigErrors(e.clone())
    );
    assert_eq!(e[3].message, "unknown upstream \"ghost\" (defined: app)");
    assert_eq!(e[4].message, "unknown limit \"missing\" (none is defined)");
}

#[test]
fn required_sections_and_fields() {
    let e = errors("");
    assert_eq!(
        triples(&e),
        vec![
            (None, "listeners", "at least one listener is required"),
            (None, "routes", "at least one route is required"),
        ]
    );
    let e = errors("listeners: []\nroutes:\n  - match: { path_prefix: / }\n");
    assert_eq!(
        triples(&e),
        vec![
            (Some(1), "listeners", "at least one listener is required"),
            (Some(3), "routes[0].name", "required field is missing"),
            (Some(3), "routes[0].upstream", "required field is missing"),
        ]
    );
}

#[test]
fn environment_errors_name_the_variable_and_line() {
    let text = MINIMAL.replace("127.0.0.1:9000", "${UNSET_UPSTREAM}");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(7));
    assert!(e[0].message.contains("UNSET_UPSTREAM"));
    assert_eq!(
        e[0].to_string(),
        format!("conf/rempart.yaml:7: {}", e[0].message)
    );
}

#[test]
fn yaml_syntax_errors_carry_a_line() {
    let e = errors("listeners:\n  - address: [\nroutes: x\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].line.is_some());
    assert_eq!(e[0].path, "");
    let e = errors("a: b: c\n");
    assert_eq!(e[0].line, Some(1));
    assert!(
        !e[0].message.contains("at line 1 column"),
        "{}",
        e[0].message
    );
    let e = errors("- 1\n- 2\n");
    assert_eq!(e[0].path, "");
    assert!(e[0].message.contains("expected a mapping"));
}

#[test]
fn certificate_problems() {
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir, "a", &["a.example"]);
    let (_, other_key) = self_signed(&dir, "b", &["b.example"]);
    let missing = dir.0.join("missing.crt").display().to_string();
    let text = format!(
        "\
listeners:
  - address: 127.0.0.1:8443
    tls:
      certificates:
        - {{ cert: {cert}, key: {other_key} }}
        - {{ cert: {missing}, key: {key} }}
        - {{ cert: {key}, key: {cert} }}
        - {{ cert: {cert} }}
  - address: 127.0.0.1:8444
    tls: {{ certificates: [] }}
upstreams:
  app:
    datacenters: [{{ name: a, servers: [127.0.0.1:1] }}]
routes: [{{ name: r, upstream: app }}]
"
    );
    let e = errors(&text);
    let got = triples(&e);
    assert_eq!(got.len(), 5, "{}", ConfigErrors(e.clone()));
    assert_eq!(
        got[0],
        (
            Some(5),
            "listeners[0].tls.certificates[0]",
            "certificate and key do not match"
        )
    );
    assert_eq!(got[1].1, "listeners[0].tls.certificates[1].cert");
    assert_eq!(
        got[1].2,
        format!("cannot read {missing:?}: No such file or directory")
    );
    assert_eq!(got[2].1, "listeners[0].tls.certificates[2].cert");
    assert!(got[2].2.contains("no PEM certificate"), "{}", got[2].2);
    assert_eq!(got[3].1, "listeners[0].tls.certificates[3].key");
    assert_eq!(got[4].1, "listeners[1].tls.certificates");
}

#[test]
fn certificate_names_fall_back_to_the_common_name() {
    let dir = TempDir::new();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Legacy.Example");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let c = dir.write("cn.crt", &cert.pem());
    let k = dir.write("cn.key", &key.serialize_pem());
    let loaded = certs::load_certificate(Path::new(&c), Path::new(&k)).unwrap();
    assert_eq!(loaded.names, ["legacy.example"]);
    assert_eq!(loaded.key.cert.len(), 1);
}

#[test]
fn pages_and_access_log_files() {
    let dir = TempDir::new();
    let nowhere = dir.0.join("no/such/dir/access.log").display().to_string();
    let page = dir.0.join("nope.html").display().to_string();
    let text =
        format!("server: {{ access_log: {nowhere} }}\npages: {{ maintenance: {page} }}\n{MINIMAL}");
    let e = errors(&text);
    let got = triples(&e);
    assert_eq!(got[0].1, "server.access_log");
    assert!(got[0].2.contains("does not exist"));
    assert_eq!(got[1].1, "pages.maintenance");
    assert!(got[1].2.starts_with("cannot read"));
}

#[test]
fn load_reads_the_file_or_names_it() {
    let dir = TempDir::new();
    let path = dir.0.join("rempart.yaml");
    let e = load(&path).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read {:?}: No such file or directory",
            path.display(),
            path.display().to_string()
        )
    );
    std::fs::write(&path, MINIMAL).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.source, path);
}

#[test]
fn cross_section_rules() {
    let text = "\
listeners: [{ address: 0.0.0.0:9901 }]
upstreams:
  app:
    datacenters: [{ name: a, servers: [127.0.0.1:1] }]
    min_healthy: 2
routes: [{ name: r, upstream: app, login_queue: q }]
login_queues:
  q: { concurrency: 600, adaptive: { min: 8, max: 512 } }
";
    let e = errors(text);
    let got: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "admin.address",
            "upstreams.app.min_healthy",
            "login_queues.q.concurrency",
        ],
        "{}",
        ConfigErrors(e.clone())
    );
    assert_eq!(e[0].line, None);
}

#[test]
fn never_panics_on_truncated_or_mangled_input() {
    let dir = TempDir::new();
    let text = spec_files(&dir);
    let mut cut = 0;
    while cut < text.len() {
        if text.is_char_boundary(cut) {
            let _ = parse(&text[..cut]);
        }
        cut += 13;
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(parse(&deep).is_err());
    for junk in [
        "\u{0}",
        "{",
        "[[[",
        "listeners: !!binary aGVsbG8=",
        "routes: *nope",
        "a: &x [*x]",
        "listeners: [{ address: 1 }]\nroutes: [{ name: 1, upstream: 1.5 }]",
        "upstreams: { 1: { datacenters: [ { name: [], servers: 3 } ] } }",
        "? [a]\n: b",
        "listeners: [~]",
        "server: { threads: 99999999999999999999999 }",
        "${",
        "---\na: 1\n---\nb: 2\n",
    ] {
        assert!(parse(junk).is_err(), "{junk}");
    }
}

#[test]
fn a_cluster_section_is_checked_into_its_settings() {
    let text = format!(
        "{MINIMAL}cluster:\n  store: redis://:pw@127.0.0.1:6390\n  node_id: edge-1\n  secret: 0123456789abcdef0123456789abcdef\n  heartbeat: 500ms\nlimits:\n  shared: {{ key: client_ip, rate: 5/s, scope: cluster }}\n"
    );
    let config = parse(&text).expect("valid");
    let cluster = config.cluster.expect("a cluster");
    assert_eq!(cluster.node_id, "edge-1");
    assert_eq!(cluster.key_prefix, "rempart");
    assert_eq!(cluster.timeout, std::time::Duration::from_millis(10));
    assert_eq!(cluster.heartbeat, std::time::Duration::from_millis(500));
    assert_eq!(config.limits[0].scope, LimitScope::Cluster);
    // Neither the password nor the secret shows in GET /config.
    let shown = config.masked.to_string();
    assert!(!shown.contains(":pw@"), "{shown}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(shown.contains("redis://***@127.0.0.1:6390"), "{shown}");
}

#[test]
fn a_bad_cluster_section_is_refused_with_every_reason() {
    let text = format!(
        "{MINIMAL}cluster:\n  store: http://127.0.0.1:6390\n  secret: short\n  timeout: 5s\n  node_id: 'a b'\n"
    );
    let found = errors(&text);
    let paths: Vec<&str> = found.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "cluster.store",
        "cluster.secret",
        "cluster.timeout",
        "cluster.node_id",
    ] {
        assert!(paths.contains(&path), "{path} not reported: {found:?}");
    }
    // A cluster limit without a cluster section says what is missing.
    let text =
        format!("{MINIMAL}limits:\n  shared: {{ key: client_ip, rate: 5/s, scope: cluster }}\n");
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "limits.shared.scope");
    assert!(found[0].message.contains("needs a cluster section"));
    let text =
        format!("{MINIMAL}limits:\n  shared: {{ key: client_ip, rate: 5/s, scope: world }}\n");
    assert_eq!(errors(&text)[0].path, "limits.shared.scope");
    // A lease needs the store, and must fit in the burst.
    let text = format!("{MINIMAL}limits:\n  shared: {{ key: global, rate: 50/s, lease: 5 }}\n");
    assert_eq!(errors(&text)[0].path, "limits.shared.lease");
    let text = format!("{MINIMAL}cluster:\n  store: redis://127.0.0.1:6390\n  secret: 0123456789abcdef0123456789abcdef\nlimits:\n  shared: {{ key: global, rate: 50/s, burst: 4, lease: 5, scope: cluster }}\n");
    assert!(errors(&text)[0].message.contains("more than the burst"));
}
