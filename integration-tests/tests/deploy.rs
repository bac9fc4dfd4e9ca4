//! The monitoring files in `deploy/`: the Prometheus rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`), the Grafana dashboard's queries are PromQL that promtool
//! accepts, and every `rempart_` metric the dashboard and the rules use is one a running Rempart
//! exports (and every metric Rempart exports is on the dashboard).
//!
//! promtool comes from Debian's `prometheus` package, which `make test` installs
//! (`.ci/install-deps.sh`); without it these tests fail, they do not skip.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/rempart.json";
const RULES: &str = "deploy/prometheus/rempart-rules.yml";
const RULES_TESTS: &str = "deploy/prometheus/rempart-rules.test.yml";

/// Metrics the deploy files use before Rempart exports them, and where each will come from.
/// Once Rempart exports one, the test says to take it off this list.
const PENDING: &[(&str, &str)] = &[(
    "rempart_cluster_store_up",
    "the Redis cluster feature (alert RempartClusterStoreDown, clustered deployments only)",
)];

/// `promtool`, or a failure that says how to get it.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not installed: run `make deps` (or `make test`), which installs \
             Debian's `prometheus` package (.ci/install-deps.sh lists promtool:prometheus), \
             or `apt-get install --no-install-recommends prometheus`"
        )
    })
}

/// Run promtool with these arguments from the repository root; panic with its output on failure.
fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        describe_exit(&out.status)
    );
    text
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every PromQL expression of the dashboard: panel targets and annotation queries (`expr`),
/// and the templating queries (`label_values(...)`, Grafana's, not PromQL) apart.
fn dashboard_queries(d: &Value) -> (Vec<String>, Vec<String>) {
    fn walk(v: &Value, in_templating: bool, exprs: &mut Vec<String>, vars: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => exprs.push(s.clone()),
                        ("definition", Value::String(s)) if in_templating => vars.push(s.clone()),
                        _ => walk(v, in_templating || k == "templating", exprs, vars),
                    }
                }
            }
            Value::Array(items) => {
                for v in items {
                    walk(v, in_templating, exprs, vars);
                }
            }
            _ => {}
        }
    }
    let (mut exprs, mut vars) = (Vec::new(), Vec::new());
    walk(d, false, &mut exprs, &mut vars);
    (exprs, vars)
}

/// Every `expr` of the rules file (recording rules and alerts).
fn rules_queries() -> Vec<String> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

/// The `rempart_` metric names a PromQL expression uses: whole identifiers outside string
/// literals, without recording-rule names (those hold a `:`).
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = promql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if ident.starts_with("rempart_") && !ident.contains(':') {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Metric families in a Prometheus text exposition, from its `# TYPE name type` lines.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// The family a series name belongs to: itself, or a histogram's `_bucket`, `_sum`, `_count`.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        matches!(
            families.get(base).map(String::as_str),
            Some("histogram" | "summary")
        )
        .then_some(base)
    })
}

/// One series of the exposition: its value, if a line has this name and these labels (among
/// others).
fn series_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (head, value) = line.rsplit_once(' ')?;
        let (series, label_text) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (head, ""),
        };
        if series != name {
            return None;
        }
        let has = |k: &str, v: &str| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\""));
        labels
            .iter()
            .all(|(k, v)| has(k, v))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// Grafana's variables replaced by values PromQL accepts.
fn without_grafana_variables(expr: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for var in ["$instance", "$upstream"] {
        s = s.replace(var, ".*");
    }
    assert!(
        !s.contains('$'),
        "a dashboard query uses a variable this test does not know: {expr}"
    );
    s
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let out = run_promtool(&["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&["test", "rules", RULES_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert has a severity and a summary and a description, French and English.
    let rules: serde_yaml::Value = serde_yaml::from_str(&read(RULES)).unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts.push(alert.to_string());
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning" | "info")),
                "{alert}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                let text = rule["annotations"][key].as_str().unwrap_or_default();
                assert!(
                    text.contains(" / "),
                    "{alert}: its {key} should be French / English: {text:?}"
                );
            }
            // Each alert is explained in the operations guide.
            assert!(
                read("docs/operations.md").contains(&format!("`{alert}`")),
                "{alert} is not in docs/operations.md"
            );
        }
    }
    for expected in [
        "RempartDown",
        "RempartDatacenterDown",
        "RempartFailover",
        "RempartQueueWaitHigh",
        "RempartBanWave",
        "RempartReloadFailed",
        "RempartHigh5xxShare",
        "RempartClusterStoreDown",
    ] {
        assert!(
            alerts.iter().any(|a| a == expected),
            "no alert {expected} in {RULES}"
        );
    }
}

#[test]
fn the_dashboard_is_importable_and_its_queries_are_promql() {
    let d = dashboard();
    // What Grafana's import needs: a datasource input, and panels that use it.
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "__inputs lacks the DS_PROMETHEUS Prometheus input: {inputs:?}"
    );
    assert_eq!(d["uid"], "rempart");
    assert_eq!(d["title"], "Rempart");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for var in ["instance", "upstream"] {
        assert!(
            vars.contains(&var),
            "no templating variable {var}: {vars:?}"
        );
    }
    let panels = d["panels"].as_array().expect("panels");
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for row in [
        "Trafic",
        "Bouclier",
        "File d'attente",
        "Bascule",
        "Processus",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(row)),
            "no row {row}: {rows:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "panel {id}: gridPos");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default();
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}");
        assert!(
            p["description"]
                .as_str()
                .is_some_and(|t| t.contains("\n\n")),
            "panel {title}: a description in French, then English"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}");
            assert!(t["refId"].as_str().is_some(), "panel {title}: refId");
        }
    }

    // promtool parses each query, Grafana's variables replaced, as a recording rule.
    let (exprs, _) = dashboard_queries(&d);
    assert!(exprs.len() > 20, "{} queries", exprs.len());
    let rules: Vec<serde_yaml::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query_{i}").into());
            rule.insert("expr".into(), without_grafana_variables(e).into());
            serde_yaml::Value::Mapping(rule)
        })
        .collect();
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), serde_yaml::Value::Sequence(rules));
    let mut file = serde_yaml::Mapping::new();
    file.insert(
        "groups".into(),
        serde_yaml::Value::Sequence(vec![serde_yaml::Value::Mapping(group)]),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    run_promtool(&["check", "rules", path.to_str().unwrap()]);
}

#[test]
fn the_metric_name_extractor() {
    let names = metric_names(
        "sum by (route) (rate(rempart_requests_total{status=~\"5..\", x=\"rempart_not_a_metric\"}[1m]))\n\
         / instance:rempart_requests:rate5m + histogram_quantile(0.5, rempart_queue_wait_seconds_bucket)",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "rempart_queue_wait_seconds_bucket",
            "rempart_requests_total"
        ]
    );
}

/// A raw HTTP/1.1 exchange: write `bytes`, read until the server closes (at most 5 s).
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn every_metric_the_dashboard_and_the_rules_use_is_exported() {
    let origin_a = Origin::start("a1", &[]);
    let origin_b = Origin::start("b1", &[]);
    let mut s = Stack::start_with(
        vec![origin_a],
        vec![origin_b],
        |y| {
            y.routes = "  - name: login\n    match: { path_prefix: /auth/ }\n    upstream: ent\n    login_queue: logins\n  \
                        - name: limited\n    match: { path_prefix: /limited }\n    upstream: ent\n    limits: [tight]\n  \
                        - name: default\n    match: { path_prefix: / }\n    upstream: ent\n"
                .into();
            y.extra = "limits:\n  tight: { key: client_ip, rate: 1/min, burst: 1 }\n\
                       login_queues:\n  logins:\n    concurrency: 2\n    tenant: header:X-ENT-UAI\n    \
                       secret: test-secret-for-the-deploy-test\n"
                .into();
        },
        true,
    );
    let http = s.ports.http;
    let timeout = Duration::from_secs(5);
    let get = |path: &str| http1::request(http, "GET", path, &[], b"", timeout).unwrap();

    // Traffic, a login through the queue, a refusal by a limit, a head too large.
    assert_eq!(get("/hello").status, 200);
    let login = http1::request(
        http,
        "POST",
        "/auth/login",
        &[("X-ENT-UAI", "0750001A")],
        b"",
        timeout,
    )
    .unwrap();
    assert_eq!(login.status, 200, "{}", login.text());
    assert_eq!(get("/limited").status, 200);
    assert_eq!(get("/limited").status, 429, "the limit refuses the second");
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let answer = raw(http, big.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // A reload that works, and one that is refused.
    let (status, body) = s.rempart.admin_post("/reload");
    assert_eq!(status, 200, "{body}");
    let good = s.yaml.clone();
    s.rempart.write_config("listeners: [oops\n");
    let (status, body) = s.rempart.admin_post("/reload");
    assert_eq!(status, 400, "a broken file is refused: {body}");
    s.rempart.write_config(&good);

    // dc-a's only server dies: a GET is retried on dc-b, and traffic fails over.
    s.dc_a[0].kill();
    assert_eq!(get("/after-the-fire").status, 200);
    let failed_over = poll_until(Duration::from_secs(10), || {
        let text = s.rempart.admin("/metrics").1;
        let over = series_value(
            &text,
            "rempart_failovers_total",
            &[("upstream", "ent"), ("from", "dc-a"), ("to", "dc-b")],
        ) == Some(1.0);
        let dc_b = series_value(
            &text,
            "rempart_datacenter_active",
            &[("upstream", "ent"), ("datacenter", "dc-b")],
        ) == Some(1.0);
        (over && dc_b).then_some(text)
    });
    let exposition = failed_over.unwrap_or_else(|| {
        panic!(
            "no failover to dc-b within 10 s:\n{}",
            s.rempart.admin("/metrics").1
        )
    });

    // What the actions above were for: the series the alerts are about.
    for (name, labels, want) in [
        (
            "rempart_upstream_server_up",
            &[("datacenter", "dc-a")][..],
            0.0,
        ),
        ("rempart_datacenter_active", &[("datacenter", "dc-a")], 0.0),
        ("rempart_rate_limited_total", &[("limit", "tight")], 1.0),
        (
            "rempart_responses_generated_total",
            &[("reason", "rate_limited")],
            1.0,
        ),
        ("rempart_config_reloads_total", &[("result", "ok")], 1.0),
        ("rempart_config_reloads_total", &[("result", "error")], 1.0),
        (
            "rempart_connections_closed_total",
            &[("reason", "headers_too_large")],
            1.0,
        ),
        (
            "rempart_queue_outcomes_total",
            &[("queue", "logins"), ("outcome", "admitted")],
            1.0,
        ),
        (
            "rempart_queue_wait_seconds_count",
            &[("queue", "logins")],
            1.0,
        ),
    ] {
        assert_eq!(
            series_value(&exposition, name, labels),
            Some(want),
            "{name}{labels:?} in /metrics:\n{exposition}"
        );
    }

    let exported = families(&exposition);
    let d = dashboard();
    let (dashboard_exprs, variable_queries) = dashboard_queries(&d);
    let rule_exprs = rules_queries();
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (file, exprs) in [
        (
            DASHBOARD,
            dashboard_exprs
                .iter()
                .chain(&variable_queries)
                .collect::<Vec<_>>(),
        ),
        (RULES, rule_exprs.iter().collect()),
    ] {
        for e in exprs {
            for name in metric_names(e) {
                used.entry(name).or_default().insert(file);
            }
        }
    }
    assert!(
        used.len() > 15,
        "only {} metrics found: {used:?}",
        used.len()
    );

    let mut missing = Vec::new();
    let mut on_dashboard = BTreeSet::new();
    for (name, files) in &used {
        if let Some((_, from)) = PENDING.iter().find(|(p, _)| p == name) {
            assert!(
                family_of(name, &exported).is_none(),
                "{name} is exported now: take it off PENDING in this test ({from})"
            );
            continue;
        }
        match family_of(name, &exported) {
            Some(family) => {
                if files.contains(DASHBOARD) {
                    on_dashboard.insert(family.to_string());
                }
            }
            None => missing.push(format!("{name} (used in {files:?})")),
        }
    }
    assert!(
        missing.is_empty(),
        "used by the deploy files but not in /metrics: {missing:#?}\n/metrics families: {:?}",
        exported.keys().collect::<Vec<_>>()
    );
    for (pending, from) in PENDING {
        assert!(
            used.contains_key(*pending),
            "{pending} ({from}) is on PENDING but no deploy file uses it: take it off"
        );
    }

    // And the other way: whatever Rempart exports has a place on the dashboard.
    let forgotten: Vec<&String> = exported
        .keys()
        .filter(|f| f.starts_with("rempart_") && !on_dashboard.contains(*f))
        .collect();
    assert!(
        forgotten.is_empty(),
        "exported by Rempart but on no panel of {DASHBOARD}: {forgotten:?}"
    );
}
