//! The `mithril-gate` binary as an operator meets it: exit codes, the demo
//! banner, and logs that never hold a credential.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mithril_gate::db::demo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_mithril-gate");

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .env_remove("MITHRIL_GATE_LOG")
        .kill_on_drop(true);
    command
}

async fn output(args: &[&str]) -> (i32, String, String) {
    let out = command(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn check_passes_the_shipped_policies() {
    let (code, stdout, _) = output(&["check"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("ok: 3 policies"), "{stdout}");
}

#[tokio::test]
async fn check_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("a.cedar"),
        "permit (principal,, action, resource);\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("b.cedar"),
        "@id(\"b\")\npermit (principal, action, resource)\nwhen { resource.nope };\n",
    )
    .unwrap();
    let (code, stdout, _) = output(&["check", "--policies", policies.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("a.cedar:1:19:"), "{stdout}");
    assert!(stdout.contains("b.cedar:3:"), "{stdout}");
    assert!(stdout.contains("2 problem(s) found"), "{stdout}");
}

#[tokio::test]
async fn serve_refuses_bad_configuration_with_64() {
    for args in [
        &["serve", "--token-cache-ttl", "0s"][..],
        &["serve", "--listen", "not-an-address"],
        &["serve", "--database-url", "mysql://db/mithril"],
        &["serve", "--db-query-timeout", "soon"],
        &["--log", "[[[", "serve"],
    ] {
        let (code, _, stderr) = output(args).await;
        assert_eq!(code, 64, "{args:?}: {stderr}");
    }
    let (code, _, stderr) = output(&[
        "serve",
        "--policies",
        "/nonexistent",
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("/nonexistent: cannot read folder"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_database_url_is_never_printed() {
    let url = "postgres://gate:hunter2-secret@127.0.0.1:1/mithril";
    let (_, stdout, stderr) =
        output(&["serve", "--database-url", url, "--token-cache-ttl", "0s"]).await;
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stdout}{stderr}"
    );
    let help = command(&["serve", "--help"])
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("hunter2"));
}

/// A running `mithril-gate serve` and everything it has logged so far.
struct Served {
    child: Child,
    addr: String,
    stdout: String,
    stderr: Arc<Mutex<String>>,
}

/// The public address in the `listening` line, in either log format.
fn listening_addr(line: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return (json["message"] == "listening").then(|| json["public"].as_str().unwrap().into());
    }
    let rest = line.split(" public=").nth(1)?;
    Some(rest.split_whitespace().next().unwrap().to_owned())
}

async fn serve_demo(args: &[&str]) -> Served {
    let listen = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let mut child = command(&[&["serve"][..], &listen, args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stderr.lock().unwrap().push_str(&line);
            stderr.lock().unwrap().push('\n');
            if let Some(addr) = listening_addr(&line) {
                return addr;
            }
        }
        panic!("no listening line: {}", stderr.lock().unwrap());
    })
    .await
    .expect("the server starts");
    let collected = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            collected.lock().unwrap().push_str(&line);
            collected.lock().unwrap().push('\n');
        }
    });
    let mut stdout = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(500), out.next_line()).await
    {
        stdout.push_str(&line);
        stdout.push('\n');
        if line.contains("api-key:") && line.contains("curl") {
            break;
        }
    }
    Served {
        child,
        addr,
        stdout,
        stderr,
    }
}

impl Served {
    /// Stops the server with SIGTERM, as Kubernetes does; its whole log.
    async fn stop(&mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("SIGTERM stops the server")
            .unwrap();
        assert!(status.success(), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.stderr.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn serve_prints_working_curl_lines_and_logs_no_credentials() {
    let mut served = serve_demo(&["--log-allows"]).await;
    assert!(served.stdout.contains(demo::MIS_TOKEN), "{}", served.stdout);
    let curls: Vec<&str> = served
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("curl"))
        .collect();
    assert_eq!(curls.len(), 3, "{}", served.stdout);

    // Run the printed requests as a caller would, plus failing ones.
    let addr = served.addr.parse().unwrap();
    let mut statuses = Vec::new();
    for curl in &curls {
        let url = curl.split_whitespace().last().unwrap();
        let target = url.split_once(&served.addr).unwrap().1;
        let headers: Vec<(String, String)> = curl
            .split("-H '")
            .skip(1)
            .map(|h| {
                let (name, value) = h.split_once(": ").unwrap();
                (
                    name.to_owned(),
                    value.split('\'').next().unwrap().to_owned(),
                )
            })
            .collect();
        statuses.push(common::get(addr, target, &headers).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 403, 200]);
    let own = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    for token in [
        demo::EXPIRED_TOKEN,
        "made-up-token-value",
        demo::REFRESH_TOKEN,
    ] {
        let headers = vec![
            ("authorization".to_owned(), format!("Bearer {token}")),
            ("api-key".to_owned(), "made-up-api-key".to_owned()),
        ];
        assert_eq!(common::get(addr, &own, &headers).await.status, 401);
    }

    let log = served.stop().await;
    assert!(
        log.contains("status=200") && log.contains("status=401"),
        "{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    for credential in [
        demo::MIS_TOKEN,
        demo::MSP_TOKEN,
        demo::EXPIRED_TOKEN,
        demo::REFRESH_TOKEN,
        demo::MIS_API_KEY,
        "made-up-token-value",
        "made-up-api-key",
    ] {
        assert!(
            !log.contains(credential),
            "the log holds `{credential}`:\n{log}"
        );
    }
}

/// The credentials the demo hands out, none of which may be logged.
const DEMO_CREDENTIALS: [&str; 5] = [
    demo::MIS_TOKEN,
    demo::MSP_TOKEN,
    demo::PHARMACY_TOKEN,
    demo::EXPIRED_TOKEN,
    demo::MIS_API_KEY,
];

/// Requests of each kind to a served demo: allowed (twice, the second
/// from the cache), allowed through a broker's api-key, denied, and
/// refused for an expired token. Their request ids, in that order.
async fn make_decisions(served: &Served) -> Vec<String> {
    let addr = served.addr.parse().unwrap();
    let bearer = |token: &str| ("authorization".to_owned(), format!("Bearer {token}"));
    let mis = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    let msp = common::connection_path(demo::MSP_CLIENT, demo::MSP_CONNECTION);
    let pharmacy = common::connection_path(demo::PHARMACY_CLIENT, demo::PHARMACY_CONNECTION);
    let broker = vec![
        bearer(demo::MSP_TOKEN),
        ("api-key".to_owned(), demo::MIS_API_KEY.to_owned()),
    ];
    let mut ids = Vec::new();
    for (path, headers, status) in [
        (&mis, vec![bearer(demo::MIS_TOKEN)], 200),
        (&mis, vec![bearer(demo::MIS_TOKEN)], 200),
        (&msp, broker, 200),
        (&pharmacy, vec![bearer(demo::MIS_TOKEN)], 403),
        (&mis, vec![bearer(demo::EXPIRED_TOKEN)], 401),
    ] {
        let reply = common::get(addr, path, &headers).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        ids.push(reply.header("x-request-id").unwrap().to_owned());
    }
    ids
}

/// Every log line as JSON (each must be one object), and the decision
/// records among them by request id.
fn json_records(log: &str) -> HashMap<String, serde_json::Value> {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    lines
        .into_iter()
        .filter(|line| line["message"] == "request")
        .map(|line| (line["request.id"].as_str().unwrap().to_owned(), line))
        .collect()
}

#[tokio::test]
async fn json_decision_records_hold_the_decision_and_no_credential() {
    let mut served = serve_demo(&["--log-format", "json", "--log-allows"]).await;
    let ids = make_decisions(&served).await;
    let log = served.stop().await;
    let records = json_records(&log);
    let record = |i: usize| records.get(&ids[i]).unwrap_or_else(|| panic!("{log}"));
    for credential in DEMO_CREDENTIALS {
        assert!(!log.contains(credential), "the log holds `{credential}`");
    }
    assert!(!log.to_lowercase().contains("bearer"), "{log}");

    let first = record(0);
    let generation = first["policy.generation"].as_str().unwrap();
    assert_eq!(generation.len(), 16, "{first}");
    for (field, value) in [
        ("level", "INFO"),
        ("route", "/api/clients/{id}/connections/{connection_id}"),
        ("http.method", "GET"),
        ("action", "connection:read"),
        ("decision", "allow"),
        ("policy.ids", "client-reads-own-connections"),
        ("client.type", "MIS"),
    ] {
        assert_eq!(first[field], value, "{field} in {first}");
    }
    let mis = demo::MIS_CLIENT.to_string();
    assert_eq!(first["client.id"], mis.as_str());
    assert_eq!(first["resource.client_id"], mis.as_str());
    assert_eq!(
        first["resource.connection_id"],
        demo::MIS_CONNECTION.to_string().as_str()
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["token.cached"], false);
    assert!(first.get("token.cache_age_ms").is_none(), "{first}");
    for step in ["verify", "decide", "fetch", "render", "total"] {
        assert!(first[format!("time.{step}_us")].is_u64(), "{step}: {first}");
    }
    assert_eq!(record(1)["token.cached"], true);
    assert!(record(1)["token.cache_age_ms"].is_u64(), "{}", record(1));

    assert_eq!(record(2)["client.type"], "MSP");
    assert_eq!(record(2)["decision"], "allow");

    let denied = record(3);
    assert_eq!(
        (&denied["level"], &denied["status"]),
        (&"INFO".into(), &403.into())
    );
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["policy.generation"], generation);
    assert!(denied.get("time.fetch_us").is_none(), "{denied}");

    let refused = record(4);
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["auth.reason"], "expired");
    assert!(refused.get("decision").is_none(), "{refused}");
    assert!(refused.get("client.id").is_none(), "{refused}");
}

#[tokio::test]
async fn allows_are_logged_only_at_debug_unless_asked_for() {
    let mut served = serve_demo(&["--log-format", "json"]).await;
    let ids = make_decisions(&served).await;
    let records = json_records(&served.stop().await);
    let logged: Vec<bool> = ids.iter().map(|id| records.contains_key(id)).collect();
    assert_eq!(logged, [false, false, false, true, true]);

    let mut served = serve_demo(&["--log-format", "json", "--log", "mithril_gate=debug"]).await;
    let ids = make_decisions(&served).await;
    let records = json_records(&served.stop().await);
    assert_eq!(records[&ids[0]]["level"], "DEBUG");
    assert_eq!(records[&ids[3]]["level"], "INFO");
}

#[tokio::test]
async fn config_prints_the_effective_settings_with_the_password_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gate.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7001\"\n\
         idle_timeout = \"2m\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let out = command(&["config", "--config", file.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:7100"])
        .env("MITHRIL_GATE_ADMIN_LISTEN", "127.0.0.1:7200")
        .env("MITHRIL_GATE_LOG_ALLOWS", "true")
        .env("DATABASE_URL", "postgres://gate:hunter2@db:5432/mithril")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for line in [
        "listen = \"127.0.0.1:7100\"",
        "admin_listen = \"127.0.0.1:7200\"",
        "idle_timeout = \"2m\"",
        "log_format = \"json\"",
        "log_allows = true",
        "token_cache_ttl = \"1m\"",
        "database_url = \"postgres://gate:[redacted]@db:5432/mithril\"",
        "# upstream is not set",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line} in:\n{stdout}");
    }
    assert!(!stdout.contains("hunter2"), "{stdout}");

    std::fs::write(&file, "db_acquire_timeout = \"0s\"\n").unwrap();
    let (code, stdout, stderr) = output(&["config", "--config", file.to_str().unwrap()]).await;
    assert_eq!((code, stdout.as_str()), (64, ""), "{stderr}");
    assert!(
        stderr.contains("line 1, column 22: `db_acquire_timeout`: must be more than 0"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_demo_serves_beyond_loopback_only_when_asked() {
    let (code, _, stderr) = output(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--demo"), "{stderr}");
    // With a database, or asked for, it starts (and is stopped at once).
    let mut asked = command(&[
        "serve",
        "--demo",
        "--listen",
        "0.0.0.0:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(asked.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(started);
    asked.kill().await.unwrap();
}

#[tokio::test]
async fn a_database_url_that_cannot_work_stops_serve_and_config_unprinted() {
    for command in ["serve", "config"] {
        let out =
            command_with_database_url(command, "host=h user=gate password=kvpw7 dbname=d").await;
        assert_eq!(out.0, 64, "{command}: {}", out.1);
        assert!(!out.1.contains("kvpw7"), "{command}: {}", out.1);
        assert!(
            out.1.contains("is not a database URL"),
            "{command}: {}",
            out.1
        );
    }
}

async fn command_with_database_url(subcommand: &str, url: &str) -> (i32, String) {
    let out = command(&[subcommand])
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}
