use super::locate::Located;
use super::*;
use clap::Parser;
use serde_json::json;

/// `rempart ctl ...` as the binary parses it.
#[derive(Parser, Debug)]
#[command(name = "rempart")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(clap::Subcommand, Debug)]
enum Top {
    Ctl(CtlArgs),
}

fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
    let mut all = vec!["rempart", "ctl"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).map(|c| match c.command {
        Top::Ctl(a) => a,
    })
}

#[test]
fn options_go_before_or_after_the_command() {
    let a = parse(&["--admin", "127.0.0.1:1", "--json", "status"]).unwrap();
    assert_eq!(a.admin.as_deref(), Some("127.0.0.1:1"));
    assert!(a.json);
    assert_eq!(a.command, CtlCommand::Status);
    let a = parse(&[
        "drain",
        "dc-a",
        "--upstream",
        "ent",
        "-c",
        "x.yaml",
        "--token",
        "t",
    ])
    .unwrap();
    assert_eq!(
        a.command,
        CtlCommand::Drain(DrainArgs {
            target: "dc-a".into(),
            upstream: Some("ent".into())
        })
    );
    assert_eq!(a.conf, Some(PathBuf::from("x.yaml")));
    assert_eq!(a.token.as_deref(), Some("t"));
    assert_eq!(
        parse(&["unban", "2001:db8::/64"]).unwrap().command,
        CtlCommand::Unban {
            ip: "2001:db8::/64".into()
        }
    );
    assert_eq!(
        parse(&["resume", "logins"]).unwrap().command,
        CtlCommand::Resume {
            queue: "logins".into()
        }
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["nosuch"],
        &["drain"],
        &["pause"],
        &["status", "extra"],
        &["--admin"],
    ] {
        let e = parse(args).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{args:?}: {e}");
    }
}

#[test]
fn the_help_names_the_exit_codes() {
    let e = parse(&["--help"]).unwrap_err();
    let help = e.to_string();
    for line in [
        "0  done",
        "1  the admin API refused",
        "2  usage error",
        "3  the admin API cannot be reached",
        "4  not found",
        "REMPART_ADMIN_TOKEN",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

fn two_upstreams() -> Value {
    json!({ "upstreams": {
        "ent": { "datacenters": [
            { "name": "dc-a", "servers": [ { "address": "10.1.0.11:8080" } ] },
            { "name": "dc-b", "servers": [ { "address": "10.2.0.11:8080" }, { "address": "[2001:db8::1]:8080" } ] } ] },
        "api": { "datacenters": [
            { "name": "dc-a", "servers": [ { "address": "10.1.0.21:8080" } ] },
            { "name": "dc-c", "servers": [ { "address": "10.3.0.11:8080" } ] } ] } } })
}

#[test]
fn a_drain_target_is_found_in_the_one_upstream_that_has_it() {
    let v = two_upstreams();
    assert_eq!(
        locate(&v, "dc-b", None).unwrap(),
        Located {
            upstream: "ent".into(),
            datacenter: "dc-b".into(),
            server: None
        }
    );
    assert_eq!(
        locate(&v, "10.3.0.11:8080", None).unwrap(),
        Located {
            upstream: "api".into(),
            datacenter: "dc-c".into(),
            server: Some("10.3.0.11:8080".into())
        }
    );
    // Spelled differently, the same server.
    assert_eq!(
        locate(&v, "[2001:db8:0::1]:8080", None).unwrap().server,
        Some("[2001:db8::1]:8080".into())
    );
    // In two upstreams: name one.
    let e = locate(&v, "dc-a", None).unwrap_err();
    assert_eq!(e.code, EXIT_USAGE);
    assert!(e.message.contains("--upstream"), "{}", e.message);
    assert!(e.message.contains("api, ent"), "{}", e.message);
    assert_eq!(locate(&v, "dc-a", Some("api")).unwrap().upstream, "api");
    // Unknown: exit 4, with what exists.
    let e = locate(&v, "nosuch", None).unwrap_err();
    assert_eq!(e.code, EXIT_NOT_FOUND);
    assert!(e.message.contains("dc-a, dc-c"), "{}", e.message);
    let e = locate(&v, "dc-c", Some("ent")).unwrap_err();
    assert_eq!(e.code, EXIT_NOT_FOUND);
    assert!(
        e.message
            .contains("in upstream ent (datacenters: dc-a, dc-b)"),
        "{}",
        e.message
    );
    let e = locate(&v, "10.9.9.9:1", None).unwrap_err();
    assert_eq!(e.code, EXIT_NOT_FOUND);
    assert!(e.message.starts_with("no server"), "{}", e.message);
    let e = locate(&v, "dc-a", Some("nope")).unwrap_err();
    assert_eq!(e.code, EXIT_NOT_FOUND);
    assert!(
        e.message
            .contains("no upstream \"nope\" (upstreams: api, ent)"),
        "{}",
        e.message
    );
}

#[test]
fn ban_targets_and_path_segments() {
    assert!(check_ban_target("203.0.113.7").is_ok());
    assert!(check_ban_target("2001:db8:1:2::/64").is_ok());
    assert_eq!(check_ban_target("nope").unwrap_err().code, EXIT_USAGE);
    assert_eq!(check_ban_target("1.2.3.4/x").unwrap_err().code, EXIT_USAGE);
    assert_eq!(
        check_ban_target("1.2.3.4/200").unwrap_err().code,
        EXIT_USAGE
    );
    assert_eq!(encode("2001:db8:1:2::/64"), "2001:db8:1:2::%2F64");
    assert_eq!(encode("[::1]:8080"), "%5B::1%5D:8080");
    assert_eq!(encode("dc a/../x"), "dc%20a%2F..%2Fx");
    assert_eq!(encode("école"), "%C3%A9cole");
}

#[test]
fn an_error_answer_is_explained() {
    let ctl = Ctl {
        endpoint: Endpoint {
            authority: "127.0.0.1:9901".into(),
            token: None,
        },
        json: false,
        style: Style { colour: false },
    };
    let answer = |status: u16, body: &str| Answer {
        status,
        body: body.into(),
        json: serde_json::from_str(body).ok(),
    };
    let f = ctl.refused(
        &answer(401, r#"{"error":"missing or wrong bearer token"}"#),
        "GET /status",
        false,
        &mut String::new(),
    );
    assert_eq!(f.code, EXIT_FAILED);
    assert!(
        f.message.contains("--token, REMPART_ADMIN_TOKEN"),
        "{}",
        f.message
    );
    let f = ctl.refused(
        &answer(404, r#"{"error":"queue \"x\" not found"}"#),
        "pause x",
        true,
        &mut String::new(),
    );
    assert_eq!(
        (f.code, f.message.as_str()),
        (EXIT_NOT_FOUND, "pause x: queue \"x\" not found")
    );
    let f = ctl.refused(
        &answer(404, "nope"),
        "GET /status",
        false,
        &mut String::new(),
    );
    assert_eq!(f.code, EXIT_FAILED);
    let mut out = String::new();
    let f = ctl.refused(&answer(500, "\x1b[31mboom"), "reload", false, &mut out);
    assert_eq!(f.message, "reload: \\u{1b}[31mboom (500)");
    assert_eq!(out, "", "nothing on stdout without --json");
    // With --json, the error's JSON on stdout too.
    let json = Ctl { json: true, ..ctl };
    let mut out = String::new();
    let f = json.refused(
        &answer(404, r#"{"error":"queue \"x\" not found"}"#),
        "pause \x1b",
        true,
        &mut out,
    );
    assert_eq!(out, "{\"error\":\"queue \\\"x\\\" not found\"}\n");
    assert_eq!(f.message, "pause \\u{1b}: queue \"x\" not found");
}
