//! `/status` and the ban list as an operator reads them: a few lines about the process, then
//! one table per upstream (datacenters, and their servers under them), the login queues with
//! their deepest tenants, the limits and the bans. Fields missing from the JSON show as `-`,
//! so an older or newer Rempart still prints.

use serde_json::Value;

use super::table::{clip, sanitize, Cell, Paint, Style, Table};

/// Longest tenant name shown (a name comes from a client).
const TENANT_WIDTH: usize = 32;
/// Tenants listed per queue.
const TENANTS_SHOWN: usize = 5;

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A number or `-`.
fn num(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

fn flag(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// `12s`, `5m 03s`, `2h 03m`, `3d 04h`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Seconds as `/status` gives them (tenths): `12.3 s`.
fn seconds(v: Option<&Value>) -> Option<String> {
    let s = v?.as_f64()?;
    Some(if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    })
}

/// The whole `/status` summary.
pub fn status(v: &Value, style: &Style) -> String {
    let mut out = String::new();
    process(v, style, &mut out);
    if let Some(upstreams) = v.get("upstreams").and_then(Value::as_object) {
        for (name, u) in upstreams {
            out.push('\n');
            upstream(name, u, style, &mut out);
        }
    }
    if let Some(queues) = v.get("queues").and_then(Value::as_object) {
        if !queues.is_empty() {
            out.push('\n');
            self::queues(queues, style, &mut out);
        }
    }
    if let Some(limits) = v.get("limits").and_then(Value::as_object) {
        if !limits.is_empty() {
            out.push('\n');
            self::limits(limits, style, &mut out);
        }
    }
    if let Some(bans) = v.get("bans") {
        out.push('\n');
        let count = bans.get("count").and_then(Value::as_u64);
        let evicted = bans.get("evicted").and_then(Value::as_u64).unwrap_or(0);
        let count_text = count.map_or("-".to_string(), |c| c.to_string());
        let paint = if count.unwrap_or(0) > 0 {
            Paint::Yellow
        } else {
            Paint::Plain
        };
        out.push_str(&format!(
            "{} {} in force",
            style.paint("Bans:", Paint::Bold),
            style.paint(&count_text, paint)
        ));
        if evicted > 0 {
            out.push_str(&format!(
                ", {} dropped to make room (shield.ban.max_entries)",
                style.paint(&evicted.to_string(), Paint::Red)
            ));
        }
        if count.unwrap_or(0) > 0 {
            out.push_str(" (rempart ctl bans lists them)");
        }
        out.push('\n');
    }
    out
}

fn process(v: &Value, style: &Style, out: &mut String) {
    let version = text(v, "version").map_or("-".into(), sanitize);
    let uptime = v
        .get("uptime_seconds")
        .and_then(Value::as_u64)
        .map_or("-".into(), duration);
    out.push_str(&format!(
        "{} {version}, pid {}, up {uptime}\n",
        style.paint("rempart", Paint::Bold),
        num(v, "pid")
    ));
    let state = if flag(v, "draining") == Some(true) {
        style.paint("draining", Paint::Yellow)
    } else if flag(v, "ready") == Some(true) {
        style.paint("ready", Paint::Green)
    } else {
        style.paint("not ready", Paint::Red)
    };
    out.push_str(&format!("state:       {state}\n"));
    out.push_str(&format!(
        "generation:  {}, loaded {} from {}\n",
        num(v, "generation"),
        text(v, "loaded_at").map_or("-".into(), sanitize),
        text(v, "config_file").map_or("-".into(), sanitize),
    ));
    let reload = match text(v, "last_reload_error") {
        Some(e) => style.paint(&sanitize(e), Paint::Red),
        None => "none".into(),
    };
    out.push_str(&format!("last reload error: {reload}\n"));
    let traffic = v.get("traffic").cloned().unwrap_or(Value::Null);
    out.push_str(&format!(
        "connections: {} open, {} requests in flight, {} answered ({} 5xx)\n",
        num(v, "connections_active"),
        num(v, "requests_in_flight"),
        num(&traffic, "requests"),
        num(&traffic, "errors_5xx"),
    ));
    if flag(v, "admin_token_set") == Some(false) {
        out.push_str(&format!(
            "{}\n",
            style.paint(
                "admin API: no token (calls that change something need X-Rempart-Admin: 1)",
                Paint::Yellow
            )
        ));
    }
}

fn dc_state_paint(state: &str) -> Paint {
    match state {
        "up" => Paint::Green,
        "down" => Paint::Red,
        _ => Paint::Yellow,
    }
}

fn upstream(name: &str, u: &Value, style: &Style, out: &mut String) {
    let active = match text(u, "active_datacenter") {
        Some(dc) => style.paint(&sanitize(dc), Paint::Bold),
        None => style.paint(
            &format!(
                "none: every datacenter is down ({})",
                text(u, "when_all_down").map_or("-".into(), sanitize)
            ),
            Paint::Red,
        ),
    };
    out.push_str(&format!(
        "{} {}: active datacenter {active}",
        style.paint("Upstream", Paint::Bold),
        sanitize(name)
    ));
    if let Some(budget) = u.get("retry_budget") {
        out.push_str(&format!(
            ", {} retries for {} requests in the last 10 s",
            num(budget, "retries_10s"),
            num(budget, "requests_10s")
        ));
    }
    out.push('\n');
    let mut t = Table::new(&[
        "DATACENTER / SERVER",
        "STATE",
        "HEALTH",
        "EJECTED",
        "EJECTIONS",
        "IN FLIGHT",
        "REQUESTS",
        "FAILURES",
    ])
    .right(&[4, 5, 6, 7]);
    for dc in u
        .get("datacenters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let state = text(dc, "state").unwrap_or("-");
        let is_active = flag(dc, "active") == Some(true);
        let state_text = if is_active {
            format!("{state}, active")
        } else {
            state.to_string()
        };
        let name = text(dc, "name").unwrap_or("-");
        let name_paint = if is_active { Paint::Bold } else { Paint::Plain };
        t.row(vec![
            Cell::painted(name, name_paint),
            Cell::painted(state_text, dc_state_paint(state)),
        ]);
        for s in dc
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            t.row(server_row(s));
        }
    }
    out.push_str(&t.render(style, "  "));
}

fn server_row(s: &Value) -> Vec<Cell> {
    let ejection = s.get("ejection").cloned().unwrap_or(Value::Null);
    let ejected = flag(s, "ejected") == Some(true);
    let (state, paint) = if flag(s, "drained") == Some(true) {
        ("drained", Paint::Yellow)
    } else if ejected {
        ("ejected", Paint::Red)
    } else {
        match flag(s, "usable") {
            Some(true) => ("usable", Paint::Green),
            Some(false) => ("unusable", Paint::Red),
            None => ("-", Paint::Plain),
        }
    };
    let health = text(s, "health").unwrap_or("-");
    let health_paint = match health {
        "up" => Paint::Green,
        "down" => Paint::Red,
        _ => Paint::Yellow,
    };
    let ejected_text = if ejected {
        Cell::painted(
            seconds(ejection.get("remaining_seconds"))
                .map_or("yes".into(), |left| format!("{left} left")),
            Paint::Red,
        )
    } else {
        Cell::new("no")
    };
    vec![
        Cell::new(format!("  {}", text(s, "address").unwrap_or("-"))),
        Cell::painted(state, paint),
        Cell::painted(health, health_paint),
        ejected_text,
        Cell::new(num(&ejection, "count")),
        Cell::new(num(s, "in_flight")),
        Cell::new(num(s, "requests")),
        Cell::new(num(s, "failures")),
    ]
}

fn queues(queues: &serde_json::Map<String, Value>, style: &Style, out: &mut String) {
    out.push_str(&format!("{}\n", style.paint("Login queues", Paint::Bold)));
    let mut t = Table::new(&[
        "QUEUE",
        "LIMIT",
        "IN FLIGHT",
        "WAITING",
        "WITH PASS",
        "TENANTS",
        "PAUSED",
        "WAIT",
        "ADMITTED",
        "TIMED OUT",
        "FULL",
    ])
    .right(&[1, 2, 3, 4, 5, 8, 9, 10]);
    let mut deepest = Vec::new();
    for (name, q) in queues {
        let limit = match q.get("adaptive") {
            Some(a) if a.is_object() => {
                format!("{} ({}-{})", num(q, "limit"), num(a, "min"), num(a, "max"))
            }
            _ => num(q, "limit"),
        };
        let paused = match flag(q, "paused") {
            Some(true) => Cell::painted("PAUSED", Paint::Red),
            Some(false) => Cell::new("no"),
            None => Cell::new("-"),
        };
        let waiting = q.get("waiting").and_then(Value::as_u64).unwrap_or(0);
        let wait = match q.get("estimated_wait_seconds").and_then(Value::as_u64) {
            Some(s) if waiting > 0 => duration(s),
            Some(_) => "-".into(),
            None => "-".into(),
        };
        t.row(vec![
            Cell::new(name),
            Cell::new(limit),
            Cell::new(num(q, "in_flight")),
            Cell::painted(
                num(q, "waiting"),
                if waiting > 0 {
                    Paint::Yellow
                } else {
                    Paint::Plain
                },
            ),
            Cell::new(num(q, "waiting_with_pass")),
            Cell::new(num(q, "tenants_waiting")),
            paused,
            Cell::new(wait),
            Cell::new(num(q, "admitted")),
            Cell::new(num(q, "timed_out")),
            Cell::new(num(q, "queue_full")),
        ]);
        let tenants: Vec<String> = q
            .get("tenants")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .take(TENANTS_SHOWN)
            .map(|t| {
                format!(
                    "{} {}",
                    clip(text(t, "tenant").unwrap_or("?"), TENANT_WIDTH),
                    num(t, "waiting")
                )
            })
            .collect();
        if !tenants.is_empty() {
            deepest.push(format!(
                "  deepest tenants of {}: {}\n",
                sanitize(name),
                tenants.join(", ")
            ));
        }
    }
    out.push_str(&t.render(style, "  "));
    for line in deepest {
        out.push_str(&line);
    }
}

fn limits(limits: &serde_json::Map<String, Value>, style: &Style, out: &mut String) {
    out.push_str(&format!("{}\n", style.paint("Limits", Paint::Bold)));
    let mut t = Table::new(&["LIMIT", "KEY", "RATE", "MODE", "KEYS", "REFUSALS", "SHARED"])
        .right(&[4, 5, 6]);
    for (name, l) in limits {
        let refusals = l.get("refusals").and_then(Value::as_u64).unwrap_or(0);
        t.row(vec![
            Cell::new(name),
            Cell::new(text(l, "key").unwrap_or("-")),
            Cell::new(text(l, "rate").unwrap_or("-")),
            Cell::new(text(l, "mode").unwrap_or("-")),
            Cell::new(num(l, "tracked_keys")),
            Cell::painted(
                num(l, "refusals"),
                if refusals > 0 {
                    Paint::Yellow
                } else {
                    Paint::Plain
                },
            ),
            Cell::new(num(l, "overflow_refusals")),
        ]);
    }
    out.push_str(&t.render(style, "  "));
}

/// The bans in force, most recent first.
pub fn bans(total: u64, list: &[Value], style: &Style) -> String {
    if list.is_empty() {
        return "no bans in force\n".into();
    }
    let mut t = Table::new(&["IP", "SINCE", "UNTIL", "LEFT"]).right(&[3]);
    for b in list {
        let left = b
            .get("seconds_left")
            .and_then(Value::as_u64)
            .map_or("-".into(), duration);
        t.row(vec![
            Cell::new(text(b, "ip").unwrap_or("-")),
            Cell::new(text(b, "since").unwrap_or("-")),
            Cell::new(text(b, "until").unwrap_or("-")),
            Cell::new(left),
        ]);
    }
    let mut out = t.render(style, "");
    out.push_str(&format!("{} ban(s) listed, {total} in force\n", list.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: Style = Style { colour: false };

    fn sample() -> Value {
        json!({
            "version": "0.1.0", "pid": 4242, "uptime_seconds": 7385, "generation": 3,
            "config_file": "/etc/rempart/rempart.yaml", "loaded_at": "2025-09-01T06:00:00Z",
            "last_reload_error": null, "ready": true, "draining": false, "admin_token_set": true,
            "connections_active": 12, "requests_in_flight": 3,
            "traffic": { "requests": 1000, "errors_5xx": 2 },
            "upstreams": { "ent": {
                "active_datacenter": "dc-b", "when_all_down": "maintenance",
                "retry_budget": { "requests_10s": 40, "retries_10s": 1 },
                "datacenters": [
                    { "name": "dc-a", "active": false, "state": "draining", "min_healthy": 1,
                      "servers": [
                        { "address": "10.1.0.11:8080", "health": "up", "usable": false, "drained": false,
                          "ejected": true, "ejection": { "remaining_seconds": 12.3, "count": 2 },
                          "in_flight": 0, "requests": 120, "failures": 7 } ] },
                    { "name": "dc-b", "active": true, "state": "up", "min_healthy": 1,
                      "servers": [
                        { "address": "10.2.0.11:8080", "health": "up", "usable": true, "drained": false,
                          "ejected": false, "ejection": { "remaining_seconds": null, "count": 0 },
                          "in_flight": 2, "requests": 40, "failures": 0 } ] } ] } },
            "queues": { "logins": {
                "limit": 4, "adaptive": null, "in_flight": 4, "waiting": 120, "waiting_with_pass": 3,
                "tenants_waiting": 2, "paused": true, "admitted": 1020, "timed_out": 5, "queue_full": 0,
                "estimated_wait_seconds": 12,
                "tenants": [ { "tenant": "0750001A", "waiting": 80 }, { "tenant": "evil\u{1b}[2J", "waiting": 40 } ] } },
            "limits": { "per_ip": { "key": "client_ip", "rate": "100/60s", "mode": "enforce",
                "tracked_keys": 10, "refusals": 4, "overflow_refusals": 0 } },
            "bans": { "count": 2, "evicted": 0, "recent": [] }
        })
    }

    #[test]
    fn the_status_summary() {
        let out = status(&sample(), &PLAIN);
        let expected = "\
rempart 0.1.0, pid 4242, up 2h 03m
state:       ready
generation:  3, loaded 2025-09-01T06:00:00Z from /etc/rempart/rempart.yaml
last reload error: none
connections: 12 open, 3 requests in flight, 1000 answered (2 5xx)

Upstream ent: active datacenter dc-b, 1 retries for 40 requests in the last 10 s
  DATACENTER / SERVER  STATE       HEALTH  EJECTED      EJECTIONS  IN FLIGHT  REQUESTS  FAILURES
  dc-a                 draining
    10.1.0.11:8080     ejected     up      12.3 s left          2          0       120         7
  dc-b                 up, active
    10.2.0.11:8080     usable      up      no                   0          2        40         0

Login queues
  QUEUE   LIMIT  IN FLIGHT  WAITING  WITH PASS  TENANTS  PAUSED  WAIT  ADMITTED  TIMED OUT  FULL
  logins      4          4      120          3        2  PAUSED  12s       1020          5     0
  deepest tenants of logins: 0750001A 80, evil\\u{1b}[2J 40

Limits
  LIMIT   KEY        RATE     MODE     KEYS  REFUSALS  SHARED
  per_ip  client_ip  100/60s  enforce    10         4       0

Bans: 2 in force (rempart ctl bans lists them)
";
        assert_eq!(out, expected, "\n{out}");
    }

    #[test]
    fn draining_no_datacenter_and_a_reload_error_stand_out() {
        let mut v = sample();
        v["draining"] = json!(true);
        v["last_reload_error"] =
            json!("rempart.yaml:3: routes[0].upstream: unknown upstream \"x\"");
        v["admin_token_set"] = json!(false);
        v["upstreams"]["ent"]["active_datacenter"] = Value::Null;
        v["bans"] = json!({ "count": 0, "evicted": 5 });
        let out = status(&v, &PLAIN);
        assert!(out.contains("state:       draining\n"), "{out}");
        assert!(
            out.contains("last reload error: rempart.yaml:3: routes[0]"),
            "{out}"
        );
        assert!(out.contains("admin API: no token"), "{out}");
        assert!(
            out.contains("active datacenter none: every datacenter is down (maintenance)"),
            "{out}"
        );
        assert!(
            out.contains("Bans: 0 in force, 5 dropped to make room"),
            "{out}"
        );
        let coloured = status(&v, &Style { colour: true });
        assert!(coloured.contains("\x1b[33mdraining\x1b[0m"), "{coloured}");
        assert!(
            !coloured.contains("\x1b[2J"),
            "a tenant's name reached the terminal"
        );
    }

    #[test]
    fn missing_fields_print_as_dashes() {
        let out = status(
            &json!({ "upstreams": { "u": { "datacenters": [ { "servers": [ {} ] } ] } } }),
            &PLAIN,
        );
        assert!(
            out.starts_with("rempart -, pid -, up -\nstate:       not ready\n"),
            "{out}"
        );
        assert!(out.contains("  -\n    -  "), "{out}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m 01s");
        assert_eq!(duration(3600), "1h 00m");
        assert_eq!(duration(90_061), "1d 01h");
    }

    #[test]
    fn the_ban_list() {
        assert_eq!(bans(0, &[], &PLAIN), "no bans in force\n");
        let list = vec![
            json!({ "ip": "203.0.113.7", "since": "2025-09-01T06:00:00Z",
            "until": "2025-09-01T06:01:00Z", "seconds_left": 42 }),
        ];
        assert_eq!(
            bans(1, &list, &PLAIN),
            "IP           SINCE                 UNTIL                 LEFT\n\
             203.0.113.7  2025-09-01T06:00:00Z  2025-09-01T06:01:00Z   42s\n\
             1 ban(s) listed, 1 in force\n"
        );
    }
}
