//! `rempart ctl`: the operator's commands over the admin API (status, drains, bans, queue
//! pause and resume, reload), with readable tables or the raw JSON, and exit codes a script
//! can test.
//!
//! - [`target`]: which admin API to call and with which token (flags, environment, file);
//! - [`http`]: a small blocking HTTP/1.1 client (one call per connection, bounded waits);
//! - [`locate`]: the upstream and datacenter of a drain's target, from `/status`;
//! - [`table`]: aligned tables and ANSI colours (only on a terminal, never with `NO_COLOR`);
//! - [`render`]: `/status` and the ban list as tables.

mod http;
mod locate;
mod render;
mod table;
mod target;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use target::Endpoint;

use locate::locate;
use table::Style;

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// The admin API answered with an error (4xx, 5xx), or a reload was refused.
pub const EXIT_FAILED: u8 = 1;
/// The command line is wrong (clap's own code for usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// Nothing answers at the admin address, or what answers does not speak HTTP.
pub const EXIT_UNREACHABLE: u8 = 3;
/// No such datacenter, server, queue or ban.
pub const EXIT_NOT_FOUND: u8 = 4;

/// How long to wait for the connection, and for each read or write.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The page size asked of `GET /bans` (the admin API's largest).
const BANS_PAGE: usize = 1000;

const AFTER_HELP: &str = "\
The admin address and token come from --admin and --token, else from the environment
(REMPART_ADMIN, REMPART_ADMIN_TOKEN), else from admin.address and admin.token of the
configuration file (-c; by default /etc/rempart/rempart.yaml when it exists, else
conf/rempart.yaml), else 127.0.0.1:9901 without a token. Calls that change something carry
X-Rempart-Admin: 1. With --json, stdout holds the admin API's JSON answer (an error's too);
messages go to stderr. Colours only on a terminal, and never with NO_COLOR set.

Exit codes:
  0  done
  1  the admin API refused or failed the call (its error is printed), or a reload was refused
  2  usage error (bad arguments, an ambiguous datacenter or server)
  3  the admin API cannot be reached (nothing listens, timeout, not HTTP)
  4  not found: no such datacenter, server, upstream, queue or ban

Examples:
  rempart ctl status
  rempart ctl drain dc-a                 # traffic moves to the next datacenter
  rempart ctl drain 10.1.0.11:8080       # one server
  rempart ctl --json status | jq .upstreams";

/// `rempart ctl`: commands for an operator during an incident, over the admin API.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct CtlArgs {
    /// Configuration file to read admin.address and admin.token from [default:
    /// /etc/rempart/rempart.yaml if it exists, else conf/rempart.yaml]
    #[arg(short = 'c', long = "conf", value_name = "FILE", global = true)]
    pub conf: Option<PathBuf>,
    /// Admin API address, HOST:PORT [env: REMPART_ADMIN]
    #[arg(long, value_name = "ADDR", global = true)]
    pub admin: Option<String>,
    /// Admin bearer token (other local users can see it in ps: prefer the environment)
    /// [env: REMPART_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// Print the admin API's JSON answer instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands of `rempart ctl`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CtlCommand {
    /// Version, uptime, generation, readiness; datacenters and servers; queues; limits; bans
    Status,
    /// Drain a datacenter or a server: new requests go elsewhere, those in flight finish
    Drain(DrainArgs),
    /// End a drain (a datacenter takes traffic back after failback_after)
    Undrain(DrainArgs),
    /// List every ban in force, most recent first
    Bans,
    /// Lift the ban of an address (IPv6: any address of the banned prefix, or the prefix)
    Unban {
        /// An IP address, or an IPv6 prefix as listed (2001:db8:1:2::/64)
        #[arg(value_name = "IP")]
        ip: String,
    },
    /// Stop a login queue's admissions: everybody waits, nobody is refused
    Pause {
        /// The queue's name in login_queues
        #[arg(value_name = "QUEUE")]
        queue: String,
    },
    /// Restart a login queue's admissions
    Resume {
        /// The queue's name in login_queues
        #[arg(value_name = "QUEUE")]
        queue: String,
    },
    /// Reload the configuration file: prints the new generation, or every error
    Reload,
}

/// What `drain` and `undrain` act on.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct DrainArgs {
    /// A datacenter name, or a server address IP:PORT
    #[arg(value_name = "DC|SERVER")]
    pub target: String,
    /// The upstream [default: the one that has DC|SERVER; needed when several have it]
    #[arg(long, value_name = "NAME")]
    pub upstream: Option<String>,
}

/// Why a command stopped: the exit code and what to tell the operator (on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_USAGE, message)
    }
}

/// Runs one `rempart ctl` command; the exit code.
pub fn run(args: CtlArgs) -> u8 {
    let lookup = |name: &str| std::env::var(name).ok();
    let endpoint = match target::resolve(
        args.admin.as_deref(),
        args.token.as_deref(),
        args.conf.as_deref(),
        &lookup,
        &|path| path.exists(),
    ) {
        Ok(resolved) => {
            for note in &resolved.notes {
                eprintln!("rempart ctl: {note}");
            }
            resolved.endpoint
        }
        Err(failure) => return report(failure),
    };
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let ctl = Ctl {
        endpoint,
        json: args.json,
        style: Style { colour },
    };
    let mut out = String::new();
    let result = ctl.command(&args.command, &mut out);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    match result {
        Ok(()) => EXIT_OK,
        Err(failure) => report(failure),
    }
}

fn report(failure: Failure) -> u8 {
    if !failure.message.is_empty() {
        eprintln!("rempart ctl: {}", failure.message);
    }
    failure.code
}

/// One admin API and how to print.
struct Ctl {
    endpoint: Endpoint,
    json: bool,
    style: Style,
}

/// A JSON answer of the admin API.
struct Answer {
    status: u16,
    body: String,
    json: Option<Value>,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error` of the JSON body, else the body itself (clipped).
    fn error(&self) -> String {
        let text = self
            .json
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let body = self.body.trim();
                if body.is_empty() {
                    "(no details)".to_string()
                } else {
                    body.chars().take(300).collect()
                }
            });
        table::sanitize(&text)
    }
}

impl Ctl {
    fn command(&self, command: &CtlCommand, out: &mut String) -> Result<(), Failure> {
        match command {
            CtlCommand::Status => self.status(out),
            CtlCommand::Drain(d) => self.drain(d, true, out),
            CtlCommand::Undrain(d) => self.drain(d, false, out),
            CtlCommand::Bans => self.bans(out),
            CtlCommand::Unban { ip } => self.unban(ip, out),
            CtlCommand::Pause { queue } => self.pause(queue, true, out),
            CtlCommand::Resume { queue } => self.pause(queue, false, out),
            CtlCommand::Reload => self.reload(out),
        }
    }

    fn call(&self, method: &str, path: &str) -> Result<Answer, Failure> {
        let response = http::request(
            &self.endpoint.authority,
            method,
            path,
            self.endpoint.token.as_deref(),
            TIMEOUT,
        )
        .map_err(|e| {
            Failure::new(
                EXIT_UNREACHABLE,
                format!(
                    "cannot reach the admin API at {}: {e} (is rempart running, with admin.address {}?)",
                    self.endpoint.authority, self.endpoint.authority
                ),
            )
        })?;
        let body = String::from_utf8_lossy(&response.body).into_owned();
        let json = serde_json::from_str(&body).ok();
        Ok(Answer {
            status: response.status,
            body,
            json,
        })
    }

    /// The answer's failure: a 401 explained, a 404 as "not found" where a name was given
    /// (`named`). With `--json`, the error's JSON goes to stdout as well.
    fn refused(&self, answer: &Answer, what: &str, named: bool, out: &mut String) -> Failure {
        if self.json && answer.json.is_some() {
            self.print_json(answer, out);
        }
        let what = table::sanitize(what);
        let error = answer.error();
        match answer.status {
            401 => Failure::new(
                EXIT_FAILED,
                format!(
                    "{what}: the admin API wants its token (401 {error}): {}",
                    if self.endpoint.token.is_some() {
                        "the token given is not the one of admin.token"
                    } else {
                        "give it with --token, REMPART_ADMIN_TOKEN or admin.token in the file (-c)"
                    }
                ),
            ),
            404 if named => Failure::new(EXIT_NOT_FOUND, format!("{what}: {error}")),
            status => Failure::new(EXIT_FAILED, format!("{what}: {error} ({status})")),
        }
    }

    /// With `--json`, the answer as it came (ending with a newline).
    fn print_json(&self, answer: &Answer, out: &mut String) {
        out.push_str(answer.body.trim_end());
        out.push('\n');
    }

    fn get_status(&self, out: &mut String) -> Result<(Answer, Value), Failure> {
        let answer = self.call("GET", "/status")?;
        if !answer.ok() {
            return Err(self.refused(&answer, "GET /status", false, out));
        }
        match answer.json.clone() {
            Some(v) if v.is_object() => Ok((answer, v)),
            _ => Err(Failure::new(
                EXIT_UNREACHABLE,
                format!(
                    "{} answered GET /status with something that is not rempart's status JSON",
                    self.endpoint.authority
                ),
            )),
        }
    }

    fn status(&self, out: &mut String) -> Result<(), Failure> {
        let (answer, status) = self.get_status(out)?;
        if self.json {
            self.print_json(&answer, out);
        } else {
            out.push_str(&render::status(&status, &self.style));
        }
        Ok(())
    }

    fn drain(&self, args: &DrainArgs, drain: bool, out: &mut String) -> Result<(), Failure> {
        let verb = if drain { "drain" } else { "undrain" };
        let (_, status) = self.get_status(out)?;
        let found = locate(&status, &args.target, args.upstream.as_deref())?;
        let path = match &found.server {
            Some(server) => format!(
                "/upstreams/{}/servers/{}/{verb}",
                encode(&found.upstream),
                encode(server)
            ),
            None => format!(
                "/upstreams/{}/datacenters/{}/{verb}",
                encode(&found.upstream),
                encode(&found.datacenter)
            ),
        };
        let answer = self.call("POST", &path)?;
        if !answer.ok() {
            return Err(self.refused(&answer, &format!("{verb} {}", args.target), true, out));
        }
        if self.json {
            self.print_json(&answer, out);
            return Ok(());
        }
        let v = answer.json.unwrap_or(Value::Null);
        let changed = v.get("changed").and_then(Value::as_bool).unwrap_or(true);
        let what = match &found.server {
            Some(server) => format!(
                "server {server} of datacenter {}",
                table::sanitize(&found.datacenter)
            ),
            None => format!("datacenter {}", table::sanitize(&found.datacenter)),
        };
        let done = match (drain, changed) {
            (true, true) => "drained",
            (true, false) => "was already drained",
            (false, true) => "undrained",
            (false, false) => "was not drained",
        };
        let active = match v.get("active_datacenter").and_then(Value::as_str) {
            Some(dc) => self.style.paint(&table::sanitize(dc), table::Paint::Bold),
            None => self
                .style
                .paint("none (every datacenter is down)", table::Paint::Red),
        };
        out.push_str(&format!(
            "{what} {done} (upstream {}); active datacenter: {active}",
            table::sanitize(&found.upstream),
        ));
        if let Some(n) = v.get("in_flight").and_then(Value::as_u64).filter(|_| drain) {
            out.push_str(&match n {
                0 => "; nothing in flight to it".to_string(),
                n => format!("; {n} request(s) in flight to it finish there"),
            });
        }
        out.push('\n');
        if !drain && found.server.is_none() && changed {
            out.push_str("traffic returns to it once it has stayed up for failback_after\n");
        }
        Ok(())
    }

    fn bans(&self, out: &mut String) -> Result<(), Failure> {
        let mut offset = 0usize;
        let mut total;
        let mut bans: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            let path = format!("/bans?offset={offset}&limit={BANS_PAGE}");
            let answer = self.call("GET", &path)?;
            if !answer.ok() {
                return Err(self.refused(&answer, "GET /bans", false, out));
            }
            let Some(page) = answer.json.as_ref().filter(|v| v.is_object()) else {
                return Err(Failure::new(
                    EXIT_UNREACHABLE,
                    format!(
                        "{} answered GET /bans with something that is not JSON",
                        self.endpoint.authority
                    ),
                ));
            };
            total = page.get("total").and_then(Value::as_u64).unwrap_or(0);
            let entries = page
                .get("bans")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let got = entries.len();
            for entry in entries {
                // Bans come and go between two pages: an address seen on the page before is
                // not listed twice.
                let ip = entry
                    .get("ip")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if seen.insert(ip) {
                    bans.push(entry);
                }
            }
            offset += got;
            if got == 0 || offset as u64 >= total {
                break;
            }
        }
        if self.json {
            let all = serde_json::json!({
                "total": total,
                "offset": 0,
                "limit": bans.len(),
                "bans": bans,
            });
            out.push_str(&all.to_string());
            out.push('\n');
        } else {
            out.push_str(&render::bans(total, &bans, &self.style));
        }
        Ok(())
    }

    fn unban(&self, ip: &str, out: &mut String) -> Result<(), Failure> {
        check_ban_target(ip)?;
        let answer = self.call("DELETE", &format!("/bans/{}", encode(ip)))?;
        if !answer.ok() {
            return Err(self.refused(&answer, &format!("unban {ip}"), true, out));
        }
        if self.json {
            self.print_json(&answer, out);
        } else {
            out.push_str(&format!("ban of {} lifted\n", table::sanitize(ip)));
        }
        Ok(())
    }

    fn pause(&self, queue: &str, pause: bool, out: &mut String) -> Result<(), Failure> {
        let verb = if pause { "pause" } else { "resume" };
        let answer = self.call("POST", &format!("/queues/{}/{verb}", encode(queue)))?;
        if !answer.ok() {
            return Err(self.refused(&answer, &format!("{verb} {queue}"), true, out));
        }
        if self.json {
            self.print_json(&answer, out);
        } else if pause {
            out.push_str(&format!(
                "login queue {} {}: nobody is admitted, everybody waits (rempart ctl resume {} to restart)\n",
                table::sanitize(queue),
                self.style.paint("paused", table::Paint::Yellow),
                table::sanitize(queue),
            ));
        } else {
            out.push_str(&format!(
                "login queue {} {}: admissions restart\n",
                table::sanitize(queue),
                self.style.paint("resumed", table::Paint::Green),
            ));
        }
        Ok(())
    }

    fn reload(&self, out: &mut String) -> Result<(), Failure> {
        let answer = self.call("POST", "/reload")?;
        if !answer.ok() {
            let errors: Vec<String> = answer
                .json
                .as_ref()
                .and_then(|v| v.get("errors"))
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(table::sanitize)
                        .collect()
                })
                .unwrap_or_default();
            if errors.is_empty() {
                return Err(self.refused(&answer, "reload", false, out));
            }
            if self.json {
                self.print_json(&answer, out);
            }
            let mut message = format!("reload refused: {}", answer.error());
            for e in &errors {
                message.push_str("\n  ");
                message.push_str(e);
            }
            return Err(Failure::new(EXIT_FAILED, message));
        }
        if self.json {
            self.print_json(&answer, out);
            return Ok(());
        }
        let v = answer.json.unwrap_or(Value::Null);
        let generation = v
            .get("generation")
            .map(Value::to_string)
            .unwrap_or_else(|| "?".into());
        out.push_str(&format!(
            "reloaded: generation {}\n",
            self.style.paint(&generation, table::Paint::Bold)
        ));
        let restart: Vec<String> = v
            .get("needs_restart")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(table::sanitize)
                    .collect()
            })
            .unwrap_or_default();
        if !restart.is_empty() {
            out.push_str(&format!(
                "{} {} (the running values are kept until then)\n",
                self.style
                    .paint("needs a restart to apply:", table::Paint::Yellow),
                restart.join(", ")
            ));
        }
        Ok(())
    }
}

/// `unban` takes an address or an IPv6 prefix, as the admin API does.
fn check_ban_target(ip: &str) -> Result<(), Failure> {
    let (address, prefix) = match ip.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (ip, None),
    };
    let parsed: Result<IpAddr, _> = address.parse();
    let prefix_ok = prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= 128));
    if parsed.is_err() || !prefix_ok {
        return Err(Failure::usage(format!(
            "{:?} is not an IP address (nor an IPv6 prefix such as 2001:db8:1:2::/64)",
            table::sanitize(ip)
        )));
    }
    Ok(())
}

/// Percent-encodes a path segment (everything but unreserved characters, and `:` which the
/// admin API's server addresses contain).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
