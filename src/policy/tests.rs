//! Loading and deciding, on the shipped files and on broken copies.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::*;
use crate::token::{Broker, Scopes};

fn shipped() -> PolicyPaths {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    PolicyPaths {
        schema_dir: root.join("schema"),
        policies_dir: root.join("policies"),
    }
}

/// A copy of the shipped schema with `policies` as the only policy file.
fn with_policies(policies: &str) -> (tempfile::TempDir, PolicyPaths) {
    let dir = tempfile::tempdir().unwrap();
    let schema_dir = dir.path().join("schema");
    let policies_dir = dir.path().join("policies");
    std::fs::create_dir_all(&schema_dir).unwrap();
    std::fs::create_dir_all(&policies_dir).unwrap();
    std::fs::copy(
        shipped().schema_dir.join("mithril.cedarschema"),
        schema_dir.join("mithril.cedarschema"),
    )
    .unwrap();
    std::fs::write(policies_dir.join("rules.cedar"), policies).unwrap();
    (
        dir,
        PolicyPaths {
            schema_dir,
            policies_dir,
        },
    )
}

fn errors(paths: &PolicyPaths) -> Vec<LoadError> {
    paths.load().expect_err("the load fails").0
}

fn principal(client_id: Uuid, client_type: &str, scopes: &str) -> Principal {
    Principal {
        client_id,
        client_type: client_type.into(),
        scopes: Scopes::parse(scopes),
        user_id: None,
        broker: None,
    }
}

fn read(client_id: Uuid) -> Route {
    Route::ConnectionDetails {
        client_id,
        connection_id: Uuid::new_v4(),
    }
}

#[test]
fn the_shipped_policies_load_in_file_order() {
    let loaded = shipped().load().unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.policies.ids(),
        [
            "connection-read-needs-scope",
            "admin-reads-any-connection",
            "client-reads-own-connections"
        ]
    );
    assert_eq!(loaded.policies.generation().len(), 16);
}

#[test]
fn shipped_rules_decide_as_documented() {
    let policies = shipped().load().unwrap().policies;
    let own = Uuid::new_v4();
    let other = Uuid::new_v4();
    let read_scope = "connection:read";
    let cases = [
        (
            "Mithril ADMIN",
            own,
            other,
            read_scope,
            true,
            vec!["admin-reads-any-connection"],
        ),
        (
            "MITHRIL ADMIN",
            own,
            other,
            read_scope,
            true,
            vec!["admin-reads-any-connection"],
        ),
        (
            "Mithril Admin",
            own,
            other,
            read_scope,
            true,
            vec!["admin-reads-any-connection"],
        ),
        (
            "MIS",
            own,
            own,
            read_scope,
            true,
            vec!["client-reads-own-connections"],
        ),
        (
            "msp",
            own,
            own,
            read_scope,
            true,
            vec!["client-reads-own-connections"],
        ),
        (
            "PHARMACY",
            own,
            own,
            read_scope,
            true,
            vec!["client-reads-own-connections"],
        ),
        ("MIS", own, other, read_scope, false, vec![]),
        ("NHS ADMIN", own, own, read_scope, false, vec![]),
        ("CABINET", own, own, read_scope, false, vec![]),
        (
            "MIS",
            own,
            own,
            "connection:read_all",
            false,
            vec!["connection-read-needs-scope"],
        ),
        (
            "Mithril ADMIN",
            own,
            other,
            "",
            false,
            vec!["connection-read-needs-scope"],
        ),
        (
            "MIS",
            own,
            own,
            "CONNECTION:READ",
            false,
            vec!["connection-read-needs-scope"],
        ),
    ];
    for (client_type, caller, owner, scopes, allowed, determining) in cases {
        let decision = policies
            .decide(&principal(caller, client_type, scopes), &read(owner))
            .unwrap();
        let case = format!("{client_type} {scopes:?} own={}", caller == owner);
        assert_eq!(decision.allowed, allowed, "{case}");
        assert_eq!(decision.policies, determining, "{case}");
        assert!(decision.errors.is_empty(), "{case}");
        let expected_message =
            (!allowed && !determining.is_empty()).then(|| "Invalid scopes".to_owned());
        assert_eq!(decision.message, expected_message, "{case}");
    }
}

#[test]
fn the_broker_scope_bounds_the_token_scope() {
    let policies = shipped().load().unwrap().policies;
    let id = Uuid::new_v4();
    let mut msp = principal(id, "MSP", "connection:read");
    msp.broker = Some(Broker {
        client_id: None,
        scopes: Scopes::parse("connection:write"),
    });
    let decision = policies.decide(&msp, &read(id)).unwrap();
    assert!(!decision.allowed);
    assert_eq!(decision.message.as_deref(), Some("Invalid scopes"));
    msp.broker = Some(Broker {
        client_id: None,
        scopes: Scopes::parse("connection:read"),
    });
    assert!(policies.decide(&msp, &read(id)).unwrap().allowed);
}

#[test]
fn the_first_loaded_forbid_gives_the_message() {
    let (_dir, paths) = with_policies(
        r#"
@id("allow-all")
permit (principal, action, resource);

@id("first")
@message("first message")
forbid (principal, action, resource) when { context.scopes.isEmpty() };

@id("second")
@message("second message")
forbid (principal, action, resource);
"#,
    );
    let policies = paths.load().unwrap().policies;
    let decision = policies
        .decide(&principal(Uuid::nil(), "MIS", ""), &read(Uuid::nil()))
        .unwrap();
    assert!(!decision.allowed);
    assert_eq!(decision.policies, ["first", "second"]);
    assert_eq!(decision.message.as_deref(), Some("first message"));
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let (_dir, paths) = with_policies(
        "@id(\"a\")\npermit (principal, action, resource);\n\npermit (principal,, action, resource);\n",
    );
    let found = errors(&paths);
    let error = found.first().unwrap();
    assert!(error.file.ends_with("policies/rules.cedar"), "{error}");
    assert_eq!(error.position.map(|(line, _)| line), Some(4), "{error}");
    assert!(error.to_string().contains("rules.cedar:4:"), "{error}");
}

#[test]
fn every_policy_needs_a_unique_id() {
    let (_dir, paths) = with_policies(
        "permit (principal, action, resource);\n\
         @id(\"twice\")\npermit (principal, action, resource);\n\
         @id(\"twice\")\nforbid (principal, action, resource);\n",
    );
    let found = errors(&paths);
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{messages:#?}");
    assert!(
        messages[0].contains("rules.cedar:1:1: policy has no `@id`"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("rules.cedar:4:1: `@id(\"twice\")` is already used at"),
        "{messages:#?}"
    );
}

#[test]
fn strict_validation_errors_are_placed_and_all_listed() {
    let (_dir, paths) = with_policies(
        "@id(\"a\")\npermit (principal, action, resource)\nwhen { resource.nope == 1 };\n\
         @id(\"b\")\npermit (principal, action, resource)\nwhen { principal.size > 1 };\n",
    );
    let found = errors(&paths);
    let lines: Vec<_> = found
        .iter()
        .filter_map(|e| e.position.map(|(line, _)| line))
        .collect();
    assert!(lines.contains(&3) && lines.contains(&6), "{found:#?}");
}

#[test]
fn a_schema_without_the_gateways_entities_is_refused() {
    let (dir, paths) = with_policies("@id(\"a\")\npermit (principal, action, resource);\n");
    std::fs::write(
        dir.path().join("schema/mithril.cedarschema"),
        "namespace Mithril { entity Client; action \"other\" appliesTo { principal: Client, resource: Client }; }",
    )
    .unwrap();
    let found = errors(&paths);
    assert!(
        found
            .iter()
            .any(|e| e.message.contains("does not describe the requests")),
        "{found:#?}"
    );
}

#[test]
fn missing_folders_and_files_are_reported() {
    let paths = PolicyPaths {
        schema_dir: PathBuf::from("/nonexistent/schema"),
        policies_dir: PathBuf::from("/nonexistent/policies"),
    };
    let found = errors(&paths);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found
            .iter()
            .all(|e| e.message.starts_with("cannot read folder"))
    );

    let (dir, paths) = with_policies("");
    std::fs::remove_file(dir.path().join("policies/rules.cedar")).unwrap();
    assert!(errors(&paths)[0].message.contains("no `.cedar` files"));
}

#[test]
fn hidden_files_are_not_policies() {
    let (dir, paths) = with_policies("@id(\"a\")\npermit (principal, action, resource);\n");
    std::fs::write(dir.path().join("policies/.swap.cedar"), "not cedar at all").unwrap();
    assert_eq!(paths.load().unwrap().policies.ids(), ["a"]);
}

#[test]
fn an_evaluation_error_never_allows() {
    // `context.scopes` has no `nope` attribute; strict validation would
    // refuse it, so the policy set is built by hand here.
    let loaded = shipped().load().unwrap().policies;
    let mut set = PolicySet::new();
    let broken = cedar_policy::Policy::parse(
        Some(PolicyId::new("broken")),
        "forbid (principal, action, resource) when { principal.nope };",
    )
    .unwrap();
    let allow = cedar_policy::Policy::parse(
        Some(PolicyId::new("allow")),
        "permit (principal, action, resource);",
    )
    .unwrap();
    set.add(broken).unwrap();
    set.add(allow).unwrap();
    let policies = Policies { set, ..loaded };
    let decision = policies
        .decide(
            &principal(Uuid::nil(), "MIS", "connection:read"),
            &read(Uuid::nil()),
        )
        .unwrap();
    assert!(!decision.allowed);
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
}

#[test]
fn the_generation_follows_the_content() {
    let (dir, paths) = with_policies("@id(\"a\")\npermit (principal, action, resource);\n");
    let first = paths.load().unwrap().policies.generation().to_owned();
    assert_eq!(paths.load().unwrap().policies.generation(), first);
    std::fs::write(
        dir.path().join("policies/rules.cedar"),
        "@id(\"b\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    assert_ne!(paths.load().unwrap().policies.generation(), first);
}

#[test]
fn rules_that_can_never_apply_are_warned_about() {
    let (_dir, paths) = with_policies(
        "@id(\"lower\")\npermit (\n  principal in Mithril::ClientType::\"nhs\",\n  \
         action == Mithril::Action::\"connection:read\",\n  resource\n);\n",
    );
    let loaded = paths.load().unwrap();
    let warning = loaded
        .warnings
        .iter()
        .find(|w| w.message.contains("\"nhs\""));
    let warning = warning.expect("a warning on the lower-case type");
    assert_eq!(warning.position, Some((3, 25)));
    assert!(warning.message.contains("write `\"NHS\"`"), "{warning}");

    let (_dir, paths) = with_policies("@id(\"no\")\nforbid (principal, action, resource);\n");
    let loaded = paths.load().unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("every request is denied")),
        "{:?}",
        loaded.warnings
    );
    assert!(shipped().load().unwrap().warnings.is_empty());
}

#[test]
fn the_fingerprint_is_the_generation_a_load_gives() {
    let paths = shipped();
    assert_eq!(
        paths.fingerprint(),
        paths.load().unwrap().policies.generation()
    );
    let (_dir, copy) = with_policies("@id(\"no\")\nforbid (principal, action, resource);\n");
    assert_ne!(copy.fingerprint(), paths.fingerprint());
}
