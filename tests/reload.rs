//! Changing the policies while the gateway serves: a valid change takes
//! effect, a broken one is refused while the old rules keep answering, and
//! requests during a reload never fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{get, shipped_policies, start};
use mithril_gate::config::ServeConfig;
use mithril_gate::db::demo;
use mithril_gate::policy::PolicyPaths;

const NHS_GRANT: &str = r#"
@id("nhs-reads-any-connection")
permit (
  principal in Mithril::ClientType::"NHS",
  action == Mithril::Action::"connection:read",
  resource
);
"#;

/// A writable copy of the shipped schema and policies.
struct Rules {
    _dir: tempfile::TempDir,
    paths: PolicyPaths,
}

impl Rules {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shipped = shipped_policies();
        let paths = PolicyPaths {
            schema_dir: dir.path().join("schema"),
            policies_dir: dir.path().join("policies"),
        };
        for (from, to) in [
            (&shipped.schema_dir, &paths.schema_dir),
            (&shipped.policies_dir, &paths.policies_dir),
        ] {
            std::fs::create_dir(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        Self { _dir: dir, paths }
    }

    fn policy(&self, name: &str) -> PathBuf {
        self.paths.policies_dir.join(name)
    }
}

/// Replaces a file whole, as editors and ConfigMap updates do.
fn replace(file: &Path, text: &str) {
    let temporary = file.with_extension("tmp-write");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".to_owned(), format!("Bearer {token}"))]
}

fn nhs_path() -> String {
    common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION)
}

/// Polls until `check` holds, at most `within`; returns how long it took.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {within:?}");
}

async fn readyz(admin: std::net::SocketAddr) -> serde_json::Value {
    get(admin, "/readyz", &[]).await.json()
}

#[tokio::test]
async fn a_valid_change_is_applied_while_serving() {
    let rules = Rules::new();
    let server = start(ServeConfig::with_paths(rules.paths.clone())).await;
    let nhs = bearer(demo::NHS_TOKEN);
    assert_eq!(get(server.addr, &nhs_path(), &nhs).await.status, 403);
    let before = readyz(server.admin_addr).await["policy_generation"].clone();

    replace(&rules.policy("nhs.cedar"), NHS_GRANT);
    let took = eventually(Duration::from_secs(10), || async {
        get(server.addr, &nhs_path(), &nhs).await.status == 200
    })
    .await;
    eprintln!("the change took effect after {took:?}");

    let ready = readyz(server.admin_addr).await;
    assert_ne!(ready["policy_generation"], before);
    assert_eq!(ready["policy_reloads"]["applied"], 1, "{ready}");
    assert_eq!(ready["policy_reloads"]["refused"], 0, "{ready}");
}

#[tokio::test]
async fn a_broken_change_is_refused_and_the_old_rules_answer() {
    let rules = Rules::new();
    let server = start(ServeConfig::with_paths(rules.paths.clone())).await;
    let mis = bearer(demo::MIS_TOKEN);
    let own = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    let generation = readyz(server.admin_addr).await["policy_generation"].clone();

    // Valid Cedar that the schema refuses, beside a file that does not parse.
    replace(
        &rules.policy("nhs.cedar"),
        &NHS_GRANT.replace("ClientType::\"NHS\"", "Nobody::\"NHS\""),
    );
    replace(
        &rules.policy("broken.cedar"),
        "permit (principal,, action, resource);\n",
    );
    eventually(Duration::from_secs(10), || async {
        readyz(server.admin_addr).await["policy_reloads"]["refused"] == 1
    })
    .await;

    let ready = readyz(server.admin_addr).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["policy_generation"], generation, "{ready}");
    let problems = ready["policy_reloads"]["last_refused"].to_string();
    assert!(problems.contains("broken.cedar:1:19"), "{problems}");
    assert!(problems.contains("nhs.cedar"), "{problems}");
    assert_eq!(get(server.addr, &own, &mis).await.status, 200);
    let nhs = bearer(demo::NHS_TOKEN);
    assert_eq!(get(server.addr, &nhs_path(), &nhs).await.status, 403);

    // Refused content is not reloaded at every poll.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        readyz(server.admin_addr).await["policy_reloads"]["refused"],
        1
    );

    // Mending the files applies them and clears the refusal.
    std::fs::remove_file(rules.policy("broken.cedar")).unwrap();
    replace(&rules.policy("nhs.cedar"), NHS_GRANT);
    eventually(Duration::from_secs(10), || async {
        get(server.addr, &nhs_path(), &nhs).await.status == 200
    })
    .await;
    let ready = readyz(server.admin_addr).await;
    assert!(
        ready["policy_reloads"].get("last_refused").is_none(),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_reloads_never_fail() {
    let rules = Rules::new();
    let server = start(ServeConfig::with_paths(rules.paths.clone())).await;
    let addr = server.addr;
    let own = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    let stop = Instant::now() + Duration::from_secs(3);

    let callers: Vec<_> = (0..4)
        .map(|_| {
            let own = own.clone();
            tokio::spawn(async move {
                let mis = bearer(demo::MIS_TOKEN);
                let mut answered = 0;
                while Instant::now() < stop {
                    let reply = get(addr, &own, &mis).await;
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    answered += 1;
                }
                answered
            })
        })
        .collect();

    // Swap the NHS grant in and out, and a comment through the main file,
    // as fast as the watcher takes them.
    let main = std::fs::read_to_string(rules.policy("connections.cedar")).unwrap();
    let mut round = 0;
    while Instant::now() < stop {
        round += 1;
        if round % 2 == 0 {
            replace(&rules.policy("nhs.cedar"), NHS_GRANT);
        } else {
            let _ = std::fs::remove_file(rules.policy("nhs.cedar"));
        }
        replace(
            &rules.policy("connections.cedar"),
            &format!("// round {round}\n{main}"),
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let mut answered = 0;
    for caller in callers {
        answered += caller.await.unwrap();
    }
    let reloads = readyz(server.admin_addr).await["policy_reloads"]["applied"]
        .as_u64()
        .unwrap();
    assert!(answered > 20, "{answered} requests");
    assert!(reloads >= 3, "{reloads} reloads");
}

/// Kubernetes mounts a ConfigMap as symlinks into a hidden `..data`
/// folder and updates it by swapping that one symlink.
#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_applied() {
    use std::os::unix::fs::symlink;

    let rules = Rules::new();
    let mounted = rules.paths.policies_dir.with_file_name("mounted");
    let first = mounted.join("..2026_12_04_first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::copy(
        rules.policy("connections.cedar"),
        first.join("connections.cedar"),
    )
    .unwrap();
    symlink("..2026_12_04_first", mounted.join("..data")).unwrap();
    symlink(
        "..data/connections.cedar",
        mounted.join("connections.cedar"),
    )
    .unwrap();
    let paths = PolicyPaths {
        schema_dir: rules.paths.schema_dir.clone(),
        policies_dir: mounted.clone(),
    };
    let server = start(ServeConfig::with_paths(paths)).await;
    let nhs = bearer(demo::NHS_TOKEN);
    assert_eq!(get(server.addr, &nhs_path(), &nhs).await.status, 403);

    let second = mounted.join("..2026_12_04_second");
    std::fs::create_dir(&second).unwrap();
    std::fs::copy(
        first.join("connections.cedar"),
        second.join("connections.cedar"),
    )
    .unwrap();
    std::fs::write(second.join("nhs.cedar"), NHS_GRANT).unwrap();
    symlink("..2026_12_04_second", mounted.join("..data_tmp")).unwrap();
    std::fs::rename(mounted.join("..data_tmp"), mounted.join("..data")).unwrap();
    // A key new to the ConfigMap gets its link after the swap.
    symlink("..data/nhs.cedar", mounted.join("nhs.cedar")).unwrap();

    eventually(Duration::from_secs(10), || async {
        get(server.addr, &nhs_path(), &nhs).await.status == 200
    })
    .await;
}

/// SIGHUP reloads at once, even content refused before.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_policies() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let rules = Rules::new();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mithril-gate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--policy-poll-interval", "1h"])
        .arg("--schema")
        .arg(&rules.paths.schema_dir)
        .arg("--policies")
        .arg(&rules.paths.policies_dir)
        .env_remove("DATABASE_URL")
        .env_remove("MITHRIL_GATE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let admin: std::net::SocketAddr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split(" admin=").nth(1) {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("the server did not start");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    replace(
        &rules.policy("broken.cedar"),
        "permit (principal,, action, resource);\n",
    );
    eventually(Duration::from_secs(10), || async {
        readyz(admin).await["policy_reloads"]["refused"] == 1
    })
    .await;

    let pid = child.id().unwrap().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(Duration::from_secs(10), || async {
        readyz(admin).await["policy_reloads"]["refused"] == 2
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the server"
    );
}

#[tokio::test]
async fn restoring_the_serving_files_clears_the_refusal() {
    let rules = Rules::new();
    let server = start(ServeConfig::with_paths(rules.paths.clone())).await;
    let main = rules.policy("connections.cedar");
    let serving = std::fs::read_to_string(&main).unwrap();
    replace(&main, &format!("{serving}\noops"));
    eventually(Duration::from_secs(10), || async {
        readyz(server.admin_addr).await["policy_reloads"]["refused"] == 1
    })
    .await;
    replace(&main, &serving);
    eventually(Duration::from_secs(10), || async {
        readyz(server.admin_addr).await["policy_reloads"]
            .get("last_refused")
            .is_none()
    })
    .await;
    let ready = readyz(server.admin_addr).await;
    assert_eq!(ready["policy_reloads"]["applied"], 0, "{ready}");
}

/// Files that vanish behind a symlink, cannot be read, or are emptied must
/// not take their rules out of force unnoticed.
#[cfg(unix)]
#[tokio::test]
async fn unreadable_or_emptied_files_are_refused_not_skipped() {
    let rules = Rules::new();
    let server = start(ServeConfig::with_paths(rules.paths.clone())).await;
    let refused = |n: u64| {
        let admin = server.admin_addr;
        move || async move { readyz(admin).await["policy_reloads"]["refused"] == n }
    };
    let last_refused =
        || async { readyz(server.admin_addr).await["policy_reloads"]["last_refused"].to_string() };

    // A dangling symlink is a file that cannot be read.
    std::os::unix::fs::symlink("/nonexistent/scope.cedar", rules.policy("00-scope.cedar")).unwrap();
    eventually(Duration::from_secs(10), refused(1)).await;
    assert!(
        last_refused()
            .await
            .contains("00-scope.cedar: cannot read file")
    );
    std::fs::remove_file(rules.policy("00-scope.cedar")).unwrap();

    // So is one that is not UTF-8.
    std::fs::write(
        rules.policy("zz.cedar"),
        b"@id(\"z\") forbid (principal, action, resource); // \xff\n",
    )
    .unwrap();
    eventually(Duration::from_secs(10), refused(2)).await;
    assert!(last_refused().await.contains("zz.cedar: cannot read file"));
    std::fs::remove_file(rules.policy("zz.cedar")).unwrap();

    // An emptied file leaves nothing that permits: refused while serving.
    replace(&rules.policy("connections.cedar"), "");
    eventually(Duration::from_secs(10), refused(3)).await;
    assert!(last_refused().await.contains("permit nothing"));

    let mis = bearer(demo::MIS_TOKEN);
    let own = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    assert_eq!(get(server.addr, &own, &mis).await.status, 200);
    let ready = readyz(server.admin_addr).await;
    assert_eq!(ready["policy_reloads"]["applied"], 0, "{ready}");
}
