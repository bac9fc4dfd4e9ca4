//! Which admin API `rempart ctl` calls, and with which token: `--admin` / `--token`, else
//! `REMPART_ADMIN` / `REMPART_ADMIN_TOKEN`, else `admin.address` / `admin.token` of the
//! configuration file, else `127.0.0.1:9901` without a token. Each of the two is settled on
//! its own; the file is read only when one of them is still unknown.

use std::path::{Path, PathBuf};

use super::{Failure, EXIT_USAGE};
use crate::config;

/// The configuration file read when `-c` is not given, if it exists...
pub const DEFAULT_CONF: &str = "/etc/rempart/rempart.yaml";
/// ...else this one (relative to the working directory: the repository's demo file).
pub const FALLBACK_CONF: &str = "conf/rempart.yaml";
/// `admin.address` when nothing says otherwise (the file's default).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// The port of an `--admin` given without one.
const DEFAULT_PORT: u16 = 9901;

/// Where to send the calls.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST:PORT`, connected to and sent as `Host`.
    pub authority: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The endpoint, and what the operator should know about how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub endpoint: Endpoint,
    pub notes: Vec<String>,
}

/// `admin.address` and `admin.token` of a file, as far as they could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FileAdmin {
    address: Option<String>,
    token: Option<String>,
}

/// Settles the address and the token. `lookup` reads the environment, `exists` says whether a
/// file exists (both injected for the tests).
pub fn resolve(
    admin: Option<&str>,
    token: Option<&str>,
    conf: Option<&Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Resolved, Failure> {
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let mut address = admin
        .map(str::to_string)
        .or_else(|| non_empty(lookup("REMPART_ADMIN")));
    let mut token = token
        .map(str::to_string)
        .or_else(|| non_empty(lookup("REMPART_ADMIN_TOKEN")));
    let mut notes = Vec::new();
    if address.is_none() || token.is_none() {
        let (path, explicit) = match conf {
            Some(path) => (path.to_path_buf(), true),
            None => (default_conf(exists), false),
        };
        if explicit || exists(&path) {
            match read_admin(&path, lookup) {
                Ok(file) => {
                    if address.is_none() {
                        address = file.address;
                    }
                    if token.is_none() {
                        token = file.token;
                    }
                }
                Err(e) if explicit => return Err(Failure::new(EXIT_USAGE, e)),
                Err(e) => notes.push(format!(
                    "{e}; calling {} without a token unless told otherwise",
                    address.as_deref().unwrap_or(DEFAULT_ADMIN)
                )),
            }
        }
    }
    let authority = authority(address.as_deref().unwrap_or(DEFAULT_ADMIN))?;
    let token = token.filter(|t| !t.is_empty());
    if let Some(t) = &token {
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::new(
                EXIT_USAGE,
                "the admin token must be printable ASCII without spaces",
            ));
        }
    }
    Ok(Resolved {
        endpoint: Endpoint { authority, token },
        notes,
    })
}

/// `/etc/rempart/rempart.yaml` when it exists, else `conf/rempart.yaml`.
pub fn default_conf(exists: &dyn Fn(&Path) -> bool) -> PathBuf {
    let system = PathBuf::from(DEFAULT_CONF);
    if exists(&system) {
        system
    } else {
        PathBuf::from(FALLBACK_CONF)
    }
}

/// An admin address as an operator writes it (`127.0.0.1:9901`, `[::1]:9901`, `localhost`,
/// `http://edge-1:9901/`), as `HOST:PORT`; an unspecified address (`0.0.0.0`, `::`, as a
/// listening address may be written) means this machine.
pub fn authority(address: &str) -> Result<String, Failure> {
    let bad = |why: &str| {
        Failure::new(
            EXIT_USAGE,
            format!(
                "invalid admin address {:?}: {why} (write HOST:PORT, e.g. 127.0.0.1:9901)",
                super::table::sanitize(address)
            ),
        )
    };
    let mut rest = address.trim();
    if rest.starts_with("https://") {
        return Err(bad("the admin API speaks plain HTTP"));
    }
    if let Some(r) = rest.strip_prefix("http://") {
        rest = r;
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest.contains(['/', '?', '#', '@', ' ']) || !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("not a host and a port"));
    }
    // A bare IPv6 address, without brackets or port.
    if let Ok(std::net::IpAddr::V6(v6)) = rest.parse::<std::net::IpAddr>() {
        return Ok(format!(
            "[{}]:{DEFAULT_PORT}",
            loopback_if_unspecified_v6(v6)
        ));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (v6, after) = inner.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let v6: std::net::Ipv6Addr = v6.parse().map_err(|_| bad("not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (format!("[{}]", loopback_if_unspecified_v6(v6)), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let host = if host == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number between 1 and 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

fn loopback_if_unspecified_v6(v6: std::net::Ipv6Addr) -> std::net::Ipv6Addr {
    if v6.is_unspecified() {
        std::net::Ipv6Addr::LOCALHOST
    } else {
        v6
    }
}

/// `admin.address` and `admin.token` of a configuration file: through the whole loader, or,
/// when the file does not load for another reason (a certificate missing on this machine, a
/// page, an unset variable elsewhere), from those two keys of the YAML alone.
fn read_admin(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<FileAdmin, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    if let Ok(config) = config::from_str_with_env(&text, path, lookup) {
        return Ok(FileAdmin {
            address: Some(config.admin.address.to_string()),
            token: config.admin.token.map(|t| t.0),
        });
    }
    admin_from_yaml(&text, lookup).map_err(|e| format!("{}: {e}", path.display()))
}

/// The two keys from the YAML text, `${NAME}` and `${NAME:-default}` expanded as the loader
/// does. A line whose variables cannot be expanded is kept as written, so a variable unset
/// elsewhere in the file does not matter; one in the admin keys themselves is an error.
fn admin_from_yaml(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<FileAdmin, String> {
    let expanded = match config::env::expand(text, lookup) {
        Ok(e) => e.text,
        Err(_) => text
            .split_inclusive('\n')
            .map(|line| match config::env::expand(line, lookup) {
                Ok(e) => e.text,
                Err(_) => line.to_string(),
            })
            .collect(),
    };
    let document: serde_yaml::Value =
        serde_yaml::from_str(&expanded).map_err(|e| format!("not a YAML file: {e}"))?;
    let admin = document.get("admin");
    let field = |key: &str| -> Result<Option<String>, String> {
        let value = match admin.and_then(|a| a.get(key)) {
            None | Some(serde_yaml::Value::Null) => return Ok(None),
            Some(serde_yaml::Value::String(s)) => s.clone(),
            Some(serde_yaml::Value::Number(n)) => n.to_string(),
            Some(serde_yaml::Value::Bool(b)) => b.to_string(),
            Some(_) => return Err(format!("admin.{key} is not a single value")),
        };
        if value.contains("${") {
            return Err(format!(
                "admin.{key} refers to an environment variable that is not set"
            ));
        }
        Ok(Some(value).filter(|v| !v.is_empty()))
    };
    Ok(FileAdmin {
        address: field("address")?,
        token: field("token")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn nothing_exists(_: &Path) -> bool {
        false
    }

    fn endpoint(authority: &str, token: Option<&str>) -> Endpoint {
        Endpoint {
            authority: authority.into(),
            token: token.map(str::to_string),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rempart-ctl-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn flags_come_first_then_the_environment_then_the_default() {
        let env = |name: &str| match name {
            "REMPART_ADMIN" => Some("10.0.0.1:9901".to_string()),
            "REMPART_ADMIN_TOKEN" => Some("from-env".to_string()),
            _ => None,
        };
        let r = resolve(
            Some("127.0.0.1:1234"),
            Some("from-flag"),
            None,
            &env,
            &nothing_exists,
        )
        .unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:1234", Some("from-flag")));
        let r = resolve(None, None, None, &env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("10.0.0.1:9901", Some("from-env")));
        let r = resolve(None, None, None, &no_env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:9901", None));
        assert!(r.notes.is_empty());
        // An empty variable counts as unset.
        let empty = |_: &str| Some(String::new());
        let r = resolve(None, None, None, &empty, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:9901", None));
    }

    #[test]
    fn the_file_fills_what_flags_and_environment_leave() {
        let dir = tempdir();
        // Loads fully: no listener, nothing to read.
        let file = write(
            &dir,
            "full.yaml",
            "listeners:\n  - address: 127.0.0.1:18080\nadmin:\n  address: 127.0.0.1:19901\n  token: ${TOK:-file-token}\nupstreams:\n  ent:\n    datacenters:\n      - name: dc-a\n        servers: [127.0.0.1:1]\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: ent\n",
        );
        let loaded =
            config::from_str_with_env(&std::fs::read_to_string(&file).unwrap(), &file, no_env);
        assert!(loaded.is_ok(), "{loaded:?}");
        let r = resolve(None, None, Some(&file), &no_env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:19901", Some("file-token")));
        let env = |name: &str| (name == "TOK").then(|| "expanded".to_string());
        let r = resolve(None, None, Some(&file), &env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:19901", Some("expanded")));
        // The flag wins for the address, the file still gives the token.
        let r = resolve(Some("[::1]:2"), None, Some(&file), &no_env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("[::1]:2", Some("file-token")));
        // Both known: the file is not even read.
        let missing = dir.join("missing.yaml");
        let r = resolve(
            Some("127.0.0.1:3"),
            Some("t"),
            Some(&missing),
            &no_env,
            &nothing_exists,
        )
        .unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:3", Some("t")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_does_not_load_still_gives_its_admin_keys() {
        let dir = tempdir();
        // A certificate that is not on this machine, and a variable unset elsewhere.
        let file = write(
            &dir,
            "partial.yaml",
            "listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - { cert: /nonexistent/ent.crt, key: /nonexistent/ent.key }\nadmin:\n  address: \"${ADMIN_ADDR:-127.0.0.1:29901}\"\n  token: ${ADMIN_TOKEN}\nlogin_queues:\n  logins:\n    secret: ${UNSET_SECRET}\n",
        );
        let env = |name: &str| (name == "ADMIN_TOKEN").then(|| "s3cret".to_string());
        let r = resolve(None, None, Some(&file), &env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:29901", Some("s3cret")));
        // The token's own variable unset: said plainly.
        let e = resolve(None, None, Some(&file), &no_env, &nothing_exists).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        assert!(
            e.message
                .contains("admin.token refers to an environment variable"),
            "{}",
            e.message
        );
        // An empty token is no token.
        let file = write(
            &dir,
            "empty.yaml",
            "admin:\n  token: ${T:-}\n  address: 127.0.0.1:5\n",
        );
        let r = resolve(None, None, Some(&file), &no_env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint, endpoint("127.0.0.1:5", None));
        // Not YAML at all.
        let file = write(&dir, "bad.yaml", "admin: [unclosed\n");
        let e = resolve(None, None, Some(&file), &no_env, &nothing_exists).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        assert!(e.message.contains("not a YAML file"), "{}", e.message);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_default_file_is_optional_an_explicit_one_is_not() {
        let dir = tempdir();
        let missing = dir.join("missing.yaml");
        let e = resolve(None, None, Some(&missing), &no_env, &nothing_exists).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        assert!(
            e.message.contains("cannot read the configuration file"),
            "{}",
            e.message
        );
        // The default files do not exist: the default address, no note.
        assert_eq!(default_conf(&nothing_exists), PathBuf::from(FALLBACK_CONF));
        assert_eq!(
            default_conf(&|p: &Path| p == Path::new(DEFAULT_CONF)),
            PathBuf::from(DEFAULT_CONF)
        );
        // A default file that exists but cannot be read: a note, and the default address.
        let r = resolve(None, None, None, &no_env, &|p: &Path| {
            p == Path::new(DEFAULT_CONF)
        });
        if std::fs::read_to_string(DEFAULT_CONF).is_err() {
            let r = r.unwrap();
            assert_eq!(r.endpoint, endpoint("127.0.0.1:9901", None));
            assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn admin_addresses_as_operators_write_them() {
        let ok = |s: &str| authority(s).unwrap();
        assert_eq!(ok("127.0.0.1:9901"), "127.0.0.1:9901");
        assert_eq!(ok("127.0.0.1"), "127.0.0.1:9901");
        assert_eq!(ok("localhost:8000"), "localhost:8000");
        assert_eq!(
            ok("http://edge-1.ops.example:9901/"),
            "edge-1.ops.example:9901"
        );
        assert_eq!(ok("[::1]:9901"), "[::1]:9901");
        assert_eq!(ok("[::1]"), "[::1]:9901");
        assert_eq!(ok("::1"), "[::1]:9901");
        assert_eq!(ok("0.0.0.0:9901"), "127.0.0.1:9901");
        assert_eq!(ok("[::]:9901"), "[::1]:9901");
        for bad in [
            "",
            "https://127.0.0.1:9901",
            "127.0.0.1:x",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "[::1",
            "[nope]:1",
            ":9901",
            "host/path:1",
            "a b:1",
            "evil\r\nX: 1",
        ] {
            let e = authority(bad).unwrap_err();
            assert_eq!(e.code, EXIT_USAGE, "{bad:?}");
        }
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        let e = resolve(None, Some("a\r\nX-Evil: 1"), None, &no_env, &nothing_exists).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        let e = resolve(None, Some("with space"), None, &no_env, &nothing_exists).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        let r = resolve(None, Some(""), None, &no_env, &nothing_exists).unwrap();
        assert_eq!(r.endpoint.token, None);
        assert!(!format!("{:?}", r.endpoint).contains("a\r"));
        let r = resolve(None, Some("secret"), None, &no_env, &nothing_exists).unwrap();
        assert!(!format!("{:?}", r.endpoint).contains("secret"));
    }
}
