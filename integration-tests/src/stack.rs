//! A ready-made test set-up: `ent-origin` servers in two datacenters, and rempart in front of
//! them with a plain listener, a TLS listener (both dev certificates) and the admin API, all on
//! free ports. Tests tweak the generated YAML through [`ProxyYaml`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::http1;
use crate::process::{free_addr, Origin, Rempart};

/// The ports of one rempart.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// `listeners[0]`: plain HTTP.
    pub http: SocketAddr,
    /// `listeners[1]`: TLS.
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            http: free_addr(),
            https: free_addr(),
            admin: free_addr(),
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

/// The YAML a test runs rempart with. Fields hold YAML fragments so a test can say anything the
/// file format allows.
#[derive(Debug, Clone)]
pub struct ProxyYaml {
    pub ports: Ports,
    /// Servers of the first datacenter, `dc-a`.
    pub dc_a: Vec<SocketAddr>,
    /// Servers of the second datacenter, `dc-b` (omitted when empty).
    pub dc_b: Vec<SocketAddr>,
    /// Whether to have the TLS listener (`listeners[1]`).
    pub tls: bool,
    /// `listeners[1].tls.http2`.
    pub http2: bool,
    /// Lines under `server:` (besides `access_log: stdout`), e.g. `"trusted_proxies: [127.0.0.1/32]"`.
    pub server: Vec<String>,
    /// `server.grace_period`.
    pub grace_period: String,
    /// Lines under `admin:` besides the address, e.g. `"token: s3cret"`.
    pub admin: Vec<String>,
    /// Lines under `upstreams.ent:` besides `datacenters`. Default: fast health checks
    /// (interval 100ms, rise 1), so the upstream is up a moment after start.
    pub upstream: Vec<String>,
    /// The whole `routes:` list (YAML, indented by two spaces); default: one route `default`
    /// on `/` to `ent`.
    pub routes: String,
    /// Extra top-level YAML appended at the end (limits, shield, login_queues, pages...).
    pub extra: String,
    /// More upstreams after `ent` (YAML entries indented by two spaces under `upstreams:`).
    pub extra_upstreams: String,
}

impl ProxyYaml {
    pub fn new(dc_a: Vec<SocketAddr>, dc_b: Vec<SocketAddr>) -> ProxyYaml {
        ProxyYaml {
            ports: Ports::new(),
            dc_a,
            dc_b,
            tls: true,
            http2: true,
            server: Vec::new(),
            grace_period: "5s".into(),
            admin: Vec::new(),
            upstream: vec![
                "health_check: { path: /healthz, interval: 100ms, timeout: 500ms, rise: 1, fall: 2 }".into(),
            ],
            routes: "  - name: default\n    match: { path_prefix: / }\n    upstream: ent\n".into(),
            extra: String::new(),
            extra_upstreams: String::new(),
        }
    }

    fn list(addrs: &[SocketAddr]) -> String {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn render(&self) -> String {
        let mut y = String::new();
        y.push_str("server:\n  access_log: stdout\n");
        let _ = writeln!(y, "  grace_period: {}", self.grace_period);
        for l in &self.server {
            let _ = writeln!(y, "  {l}");
        }
        y.push_str("listeners:\n");
        let _ = writeln!(y, "  - address: {}", self.ports.http);
        if self.tls {
            let _ = writeln!(y, "  - address: {}", self.ports.https);
            y.push_str("    tls:\n      certificates:\n");
            y.push_str(
                "        - { cert: certs/dev/localhost.crt, key: certs/dev/localhost.key }\n",
            );
            y.push_str(
                "        - { cert: certs/dev/ent-example.crt, key: certs/dev/ent-example.key }\n",
            );
            let _ = writeln!(y, "      http2: {}", self.http2);
        }
        let _ = writeln!(y, "admin:\n  address: {}", self.ports.admin);
        for l in &self.admin {
            let _ = writeln!(y, "  {l}");
        }
        y.push_str("upstreams:\n  ent:\n    datacenters:\n");
        let _ = writeln!(
            y,
            "      - name: dc-a\n        servers: [{}]",
            Self::list(&self.dc_a)
        );
        if !self.dc_b.is_empty() {
            let _ = writeln!(
                y,
                "      - name: dc-b\n        servers: [{}]",
                Self::list(&self.dc_b)
            );
        }
        for l in &self.upstream {
            let _ = writeln!(y, "    {l}");
        }
        y.push_str(&self.extra_upstreams);
        if !self.extra_upstreams.is_empty() && !self.extra_upstreams.ends_with('\n') {
            y.push('\n');
        }
        y.push_str("routes:\n");
        y.push_str(&self.routes);
        if !self.routes.ends_with('\n') {
            y.push('\n');
        }
        y.push_str(&self.extra);
        y
    }
}

/// Poll `GET http://addr/__harness/ready` until it answers 200 (the route's upstream is up), for
/// at most `timeout`. Err holds the last answer.
/// Start rempart with `yaml` and wait (10 s at most) until `http` routes a request; panics
/// with rempart's stderr and the configuration when it does not.
pub fn start_routable(yaml: &str, http: SocketAddr) -> crate::Rempart {
    let rempart = crate::start_rempart(yaml);
    if let Err(e) = wait_routable(http, Duration::from_secs(10)) {
        panic!(
            "{e}\nrempart stderr:\n{}\n--- configuration ---\n{yaml}",
            rempart.stderr()
        );
    }
    rempart
}

pub fn wait_routable(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut last = String::from("no answer");
    let ok = crate::poll_until(timeout, || {
        match http1::request(
            addr,
            "GET",
            "/__harness/ready",
            &[],
            b"",
            Duration::from_secs(2),
        ) {
            Ok(a) if a.status == 200 => Some(()),
            Ok(a) => {
                last = format!("{} {}", a.status, a.text().trim());
                None
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    });
    ok.ok_or_else(|| format!("GET http://{addr}/__harness/ready did not answer 200 within {timeout:?}; last answer: {last}"))
}

/// Origins in two datacenters and rempart in front of them.
pub struct Stack {
    // Drop order: rempart first, then the origins.
    pub rempart: Rempart,
    pub dc_a: Vec<Origin>,
    pub dc_b: Vec<Origin>,
    pub yaml: String,
    pub ports: Ports,
}

impl Stack {
    /// Start `n_a` origins in dc-a (`a1`, `a2`...) and `n_b` in dc-b (`b1`...), then rempart with
    /// the YAML as `tweak` leaves it; wait until a request through the plain listener reaches an
    /// origin, then zero the origins' counters.
    pub fn start(n_a: usize, n_b: usize, tweak: impl FnOnce(&mut ProxyYaml)) -> Stack {
        let dc_a: Vec<Origin> = (1..=n_a)
            .map(|i| Origin::start(&format!("a{i}"), &[]))
            .collect();
        let dc_b: Vec<Origin> = (1..=n_b)
            .map(|i| Origin::start(&format!("b{i}"), &[]))
            .collect();
        Self::start_with(dc_a, dc_b, tweak, true)
    }

    /// Like [`Stack::start`] with origins the test started itself; `wait`: wait until routable.
    pub fn start_with(
        dc_a: Vec<Origin>,
        dc_b: Vec<Origin>,
        tweak: impl FnOnce(&mut ProxyYaml),
        wait: bool,
    ) -> Stack {
        Self::start_with_env(dc_a, dc_b, tweak, wait, &[])
    }

    /// Like [`Stack::start_with`], rempart getting these environment variables (e.g. the
    /// schedules' clock, `REMPART_SCHEDULE_CLOCK`).
    pub fn start_with_env(
        dc_a: Vec<Origin>,
        dc_b: Vec<Origin>,
        tweak: impl FnOnce(&mut ProxyYaml),
        wait: bool,
        env: &[(&str, &str)],
    ) -> Stack {
        let mut y = ProxyYaml::new(
            dc_a.iter().map(|o| o.addr()).collect(),
            dc_b.iter().map(|o| o.addr()).collect(),
        );
        tweak(&mut y);
        let yaml = y.render();
        let rempart = Rempart::start_with_env(&yaml, env)
            .unwrap_or_else(|e| panic!("{e}\n--- configuration ---\n{yaml}"));
        let s = Stack {
            rempart,
            dc_a,
            dc_b,
            yaml,
            ports: y.ports,
        };
        if wait {
            if let Err(e) = wait_routable(s.ports.http, Duration::from_secs(10)) {
                panic!(
                    "{e}\n(the upstream never came up: are health checks passing?)\nrempart stderr:\n{}\n--- configuration ---\n{}",
                    s.rempart.stderr(),
                    s.yaml
                );
            }
            for o in s.dc_a.iter().chain(&s.dc_b) {
                o.reset();
            }
        }
        s
    }

    /// `http://127.0.0.1:PORT{path}` on the plain listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ports.http)
    }

    /// `https://{host}:PORT{path}` on the TLS listener (use a client that resolves `host`).
    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.ports.https.port())
    }

    /// Requests the origins served, health checks excluded: (dc-a each, dc-b each).
    pub fn served(&self) -> (Vec<u64>, Vec<u64>) {
        (
            self.dc_a
                .iter()
                .map(|o| o.stats().requests_excluding_health())
                .collect(),
            self.dc_b
                .iter()
                .map(|o| o.stats().requests_excluding_health())
                .collect(),
        )
    }
}
