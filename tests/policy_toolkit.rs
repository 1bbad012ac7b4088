//! What a policy author runs: `test`, `authorize` and `check`, through the
//! binary, with their output and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_mithril-gate");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BINARY)
        .args(args)
        .current_dir(root())
        .env_remove("MITHRIL_GATE_CONFIG")
        .env_remove("MITHRIL_GATE_POLICIES")
        .env_remove("MITHRIL_GATE_SCHEMA")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), stdout + &stderr)
}

/// A copy of the shipped policies, to change.
fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("policies/connections.cedar")).unwrap();
    std::fs::write(dir.path().join("connections.cedar"), text).unwrap();
    dir
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

const SUITE: &str = r#"
principals:
  mis: {client_type: MIS, scope: connection:read}
  nhs: {client_type: NHS, scope: connection:read}
connections:
  own: {client: mis}
cases:
  - name: the MIS reads its own connection
    path: /api/clients/{mis}/connections/{own}
    token: mis
    expect: {status: 200, policies: [client-reads-own-connections], data: {id: "{own}"}}
  - name: NHS reads the MIS's connection
    path: /api/clients/{mis}/connections/{own}
    token: nhs
    expect: {status: 200}
"#;

#[test]
fn the_shipped_suites_pass_and_cover_every_policy() {
    let (code, out) = run(&["test", "--coverage"]);
    assert_eq!(code, 0, "{out}");
    let totals = out.lines().find(|l| l.ends_with(" failed")).unwrap();
    assert!(totals.ends_with(" passed, 0 failed"), "{out}");
    let passed: usize = totals.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 40, "{out}");
    assert!(
        out.contains("every policy determined at least one case"),
        "{out}"
    );
}

#[test]
fn a_failing_case_says_what_differed_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("nhs.yaml");
    std::fs::write(&suite, SUITE).unwrap();
    let (code, out) = run(&["test", path(&suite)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ok   ") && out.contains(":8 the MIS reads its own connection"),
        "{out}"
    );
    assert!(
        out.contains("FAIL ") && out.contains(":12 NHS reads"),
        "{out}"
    );
    assert!(out.contains("status: expected `200`, got `403`"), "{out}");
    assert!(out.trim_end().ends_with("1 passed, 1 failed"), "{out}");
}

#[test]
fn a_new_permit_makes_the_case_pass_and_filter_picks_cases() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("nhs.yaml");
    std::fs::write(&suite, SUITE).unwrap();
    let policies = policies_copy();
    let grant = "\n@id(\"nhs-reads-any-connection\")\npermit (\n  principal in \
                 Mithril::ClientType::\"NHS\",\n  action == Mithril::Action::\"connection:read\",\n  \
                 resource\n);\n";
    let file = policies.path().join("nhs.cedar");
    std::fs::write(&file, grant).unwrap();
    let (code, out) = run(&[
        "test",
        "--policies",
        path(policies.path()),
        "--filter",
        "NHS",
        path(&suite),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(200; nhs-reads-any-connection)"), "{out}");
    assert!(!out.contains("the MIS reads"), "{out}");
    assert!(out.trim_end().ends_with("1 passed, 0 failed"), "{out}");
}

#[test]
fn coverage_names_policies_that_decided_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("one.yaml");
    std::fs::write(&suite, SUITE).unwrap();
    let (_, out) = run(&["test", "--coverage", "--filter", "own", path(&suite)]);
    assert!(
        out.contains("coverage: no case was determined by connection-read-needs-scope, admin-reads-any-connection"),
        "{out}"
    );
}

#[test]
fn suites_and_policies_that_cannot_load_are_all_listed_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "principals:\n  mis:\n    client_type: MIS\n    scop: x\ncases: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "principals:\n  mis: {client_type: MIS}\ncases:\n  - name: x\n    path: /{nobody}\n    \
         token: ghost\n    expect: {status: 200}\n",
    )
    .unwrap();
    let policies = policies_copy();
    std::fs::write(
        policies.path().join("bad.cedar"),
        "permit (principal,, action, resource);\n",
    )
    .unwrap();
    let (code, out) = run(&[
        "test",
        "--policies",
        path(policies.path()),
        path(dir.path()),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bad.cedar:1:19:"), "{out}");
    assert!(out.contains("a.yaml:4:5: unknown field `scop`"), "{out}");
    assert!(
        out.contains("b.yaml:4:5: case `x`: no principal is named `ghost`"),
        "{out}"
    );
    assert!(
        out.contains("b.yaml:4:5: case `x`: path: unknown `{nobody}`"),
        "{out}"
    );
    assert!(out.contains("4 problem(s) found"), "{out}");
}

#[test]
fn a_filter_that_matches_nothing_is_a_failure() {
    let (code, out) = run(&["test", "--filter", "no case is named like this"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no case matches"), "{out}");
}

#[test]
fn authorize_explains_a_fixture_case() {
    let (code, out) = run(&[
        "authorize",
        "tests/policies/tokens-and-scopes.yaml",
        "--case",
        "a broker scope without connection:read bounds the token's",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in Mithril::ClientType::\"MSP\""), "{out}");
    assert!(
        out.contains("through an MIS with broker scope `legal_entity:read`"),
        "{out}"
    );
    assert!(out.contains("context     { scopes: [] }"), "{out}");
    assert!(out.contains("decision    deny"), "{out}");
    assert!(
        out.contains("by forbid connection-read-needs-scope at policies/connections.cedar:"),
        "{out}"
    );
    assert!(out.contains("@message(\"Invalid scopes\")"), "{out}");
    assert!(out.contains("answer      403"), "{out}");
}

#[test]
fn authorize_explains_a_request_from_flags() {
    let path = "/api/clients/1380df72-275a-11e7-93ae-92361f002671/connections/\
                e5372365-d47a-467f-81d0-f35117864352";
    let (code, out) = run(&[
        "authorize",
        "--client-type",
        "MITHRIL ADMIN",
        "--scope",
        "connection:read",
        "--path",
        path,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("decision    allow"), "{out}");
    assert!(
        out.contains("by permit admin-reads-any-connection"),
        "{out}"
    );
    assert!(
        out.contains("\"id\": \"e5372365-d47a-467f-81d0-f35117864352\""),
        "{out}"
    );

    let (_, out) = run(&[
        "authorize",
        "--client-type",
        "NHS",
        "--scope",
        "connection:read",
        "--path",
        path,
    ]);
    assert!(out.contains("determined  by no policy"), "{out}");
    assert!(out.contains("answer      403"), "{out}");

    let (_, out) = run(&[
        "authorize",
        "--client-type",
        "MIS",
        "--path",
        "/api/clients/x",
    ]);
    assert!(
        out.contains("policies    not asked: the path matched no route"),
        "{out}"
    );
    assert!(out.contains("answer      404"), "{out}");
}

#[test]
fn check_reports_layout_and_fix_rewrites_it() {
    let policies = policies_copy();
    let file = policies.path().join("connections.cedar");
    let shipped = std::fs::read_to_string(&file).unwrap();
    let squeezed = shipped.replace("forbid (\n  principal,", "forbid (principal,");
    assert_ne!(squeezed, shipped);
    std::fs::write(&file, &squeezed).unwrap();

    let (code, out) = run(&["check", "--policies", path(policies.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("connections.cedar:"), "{out}");
    assert!(out.contains("check --fix"), "{out}");

    let (code, out) = run(&["check", "--fix", "--policies", path(policies.path())]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("formatted "), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), shipped);
}

#[test]
fn check_validates_suites_when_named() {
    let (code, out) = run(&["check", "tests/policies"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" suites, "), "{out}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.yaml"), "cases: {}\n").unwrap();
    let (code, out) = run(&["check", path(dir.path())]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("x.yaml:1:"), "{out}");
}

#[test]
fn typos_in_expectations_are_load_problems_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("typos.yaml");
    let typos = SUITE
        .replace(
            "policies: [client-reads-own-connections]",
            "policies: [client-reads-own-connection]",
        )
        .replace(
            "expect: {status: 200}",
            "expect: {status: 403, error: forbiden}",
        );
    std::fs::write(&suite, typos).unwrap();
    for command in ["test", "check"] {
        let (code, out) = run(&[command, path(&suite)]);
        assert_eq!(code, 2, "{command}: {out}");
        assert!(
            out.contains("typos.yaml:8:5: case `the MIS reads its own connection`: no policy has `@id(\"client-reads-own-connection\")`"),
            "{command}: {out}"
        );
        assert!(out.contains("typos.yaml:12:5: case `NHS reads the MIS's connection`: `forbiden` is not an error type"), "{command}: {out}");
    }
}

#[test]
fn filters_ignore_case_and_empty_policy_lists_show_as_brackets() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("nhs.yaml");
    std::fs::write(
        &suite,
        SUITE.replace(
            "expect: {status: 200}",
            "expect: {status: 200, policies: [client-reads-own-connections]}",
        ),
    )
    .unwrap();
    let (code, out) = run(&["test", "--filter", "nhs READS", path(&suite)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policies: expected `[client-reads-own-connections]`, got `[]`"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("0 passed, 1 failed"), "{out}");
}

#[test]
fn test_repeats_the_warnings_that_explain_failures() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("nhs.yaml");
    std::fs::write(&suite, SUITE).unwrap();
    let policies = policies_copy();
    std::fs::write(
        policies.path().join("nhs.cedar"),
        "@id(\"nhs\")\npermit (\n  principal in Mithril::ClientType::\"Nhs\",\n  \
         action == Mithril::Action::\"connection:read\",\n  resource\n);\n",
    )
    .unwrap();
    let (code, out) = run(&["test", "--policies", path(policies.path()), path(&suite)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("warning: "), "{out}");
    assert!(out.contains("write `\"NHS\"`"), "{out}");
}

#[cfg(unix)]
#[test]
fn fix_keeps_symlinks_and_permissions_and_leaves_read_only_files_alone() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let linked = dir.path().join("policies");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&linked).unwrap();
    let shipped = std::fs::read_to_string(root().join("policies/connections.cedar")).unwrap();
    let squeezed = shipped.replace("forbid (\n  principal,", "forbid (principal,");
    std::fs::write(real.join("a.cedar"), &squeezed).unwrap();
    std::fs::set_permissions(real.join("a.cedar"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(real.join("a.cedar"), linked.join("a.cedar")).unwrap();

    let (code, out) = run(&["check", "--fix", "--policies", path(&linked)]);
    assert_eq!(code, 0, "{out}");
    let link = std::fs::symlink_metadata(linked.join("a.cedar")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    let target = std::fs::metadata(real.join("a.cedar")).unwrap();
    assert_eq!(target.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        std::fs::read_to_string(real.join("a.cedar")).unwrap(),
        shipped
    );

    let other = squeezed
        .replace("connection-read-needs-scope", "b1")
        .replace("admin-reads-any-connection", "b2")
        .replace("client-reads-own-connections", "b3");
    std::fs::write(linked.join("b.cedar"), &other).unwrap();
    std::fs::set_permissions(
        linked.join("b.cedar"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let (code, out) = run(&["check", "--fix", "--policies", path(&linked)]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("b.cedar: cannot rewrite: the file is read-only"),
        "{out}"
    );
    assert!(out.contains("not formatted: "), "{out}");
    assert_eq!(
        std::fs::read_to_string(linked.join("b.cedar")).unwrap(),
        other
    );
}

#[cfg(unix)]
#[test]
fn suite_folders_with_symlink_loops_run_each_suite_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one.yaml"), SUITE).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("again")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("and-again")).unwrap();
    let (code, out) = run(&["test", path(dir.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.trim_end().ends_with("1 passed, 1 failed"), "{out}");
}
