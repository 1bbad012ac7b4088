//! docs/openapi.yaml against the running service: every answer of each
//! status must be documented for its operation, carry the documented
//! required headers, and validate against the documented schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Backend, Reply, Setup, connection_path, get, send, shipped_policies, start,
    unreachable_postgres,
};
use mithril_gate::config::ServeConfig;
use serde_json::{Value, json};
use uuid::Uuid;

const DOCUMENT: &str = include_str!("../docs/openapi.yaml");
const PATH: &str = "/api/clients/{id}/connections/{connection_id}";

fn document() -> Value {
    let document: Value = serde_saphyr::from_str(DOCUMENT).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
    document
}

/// A value, or what its `$ref` (`#/...` in the document) points at.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap();
            let target = document.pointer(pointer);
            resolve(document, target.unwrap_or_else(|| panic!("no {reference}")))
        }
        None => value,
    }
}

/// The problems of `instance` against `schema`, whose `$ref`s point into
/// the document: the document itself is the root schema, narrowed to
/// `schema` (its OpenAPI keys are no JSON Schema keywords).
fn problems(document: &Value, schema: &Value, instance: &Value) -> Vec<String> {
    let mut root = document.clone();
    root["allOf"] = json!([schema]);
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap();
    validator
        .iter_errors(instance)
        .map(|error| format!("{error} at `{}`", error.instance_path()))
        .collect()
}

/// What the document says `method` on the path answers with `status`.
fn documented<'a>(document: &'a Value, method: &str, status: u16) -> &'a Value {
    let operation = &document["paths"][PATH][method];
    assert!(operation.is_object(), "{method} is not documented");
    let response = &operation["responses"][status.to_string()];
    assert!(response.is_object(), "{method} {status} is not documented");
    resolve(document, response)
}

/// Checks one live answer against the document.
fn check(document: &Value, method: &str, reply: &Reply) {
    let response = documented(document, method, reply.status.as_u16());
    let headers = response["headers"].as_object().unwrap();
    for (name, header) in headers {
        let header = resolve(document, header);
        let Some(value) = reply.header(name) else {
            assert_ne!(
                header["required"], true,
                "{method} {}: no {name}",
                reply.status
            );
            continue;
        };
        let value = Value::String(value.into());
        let problems = problems(document, &header["schema"], &value);
        assert!(problems.is_empty(), "{name}: {value}: {problems:?}");
    }
    if method == "head" {
        assert!(reply.body.is_empty(), "{}", reply.body);
        return;
    }
    let content_type = reply.header("content-type").unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let problems = problems(document, schema, &reply.json());
    assert!(
        problems.is_empty(),
        "{method} {}: {problems:?}",
        reply.status
    );
}

#[tokio::test]
async fn live_answers_validate_against_the_document() {
    let document = document();
    let setup = Setup::start_with(Backend::Postgres, |config| {
        config.reporting.server_timing = true;
    })
    .await;
    let world = &setup.world;
    let own = world.mis.own_path();
    let missing = connection_path(world.mis.client_id, Uuid::new_v4());
    let mut wrong_key = world.msp.clone();
    wrong_key.api_key = Some("not-a-connection-secret".into());
    let mut answers = vec![
        ("get", setup.get(&own, &world.mis.headers()).await),
        ("get", setup.get(&own, &wrong_key.headers()).await),
        ("get", setup.get(&own, &[]).await),
        ("get", setup.get(&own, &world.expired.headers()).await),
        ("get", setup.get(&own, &world.read_all.headers()).await),
        (
            "get",
            setup
                .get(&world.pharmacy.own_path(), &world.mis.headers())
                .await,
        ),
        ("get", setup.get(&missing, &world.mis.headers()).await),
        (
            "head",
            send(setup.server.addr, "HEAD", &own, &world.mis.headers()).await,
        ),
        ("head", send(setup.server.addr, "HEAD", &own, &[]).await),
    ];
    for method in ["post", "put", "patch", "delete"] {
        let reply = send(setup.server.addr, &method.to_uppercase(), &own, &[]).await;
        answers.push((method, reply));
    }
    answers.push(("get", outage_answer().await));

    let statuses: Vec<u16> = answers.iter().map(|(_, r)| r.status.as_u16()).collect();
    assert_eq!(
        statuses,
        [
            200, 401, 401, 401, 403, 403, 404, 200, 401, 405, 405, 405, 405, 503
        ]
    );
    for (method, reply) in &answers {
        check(&document, method, reply);
    }
}

/// A 503: a gateway whose database does not answer.
async fn outage_answer() -> Reply {
    let mut config = ServeConfig::with_paths(shipped_policies());
    unreachable_postgres(&mut config);
    let server = start(config).await;
    let path = connection_path(Uuid::new_v4(), Uuid::new_v4());
    let bearer = [("authorization".to_owned(), "Bearer 0123abcd".to_owned())];
    get(server.addr, &path, &bearer).await
}

#[test]
fn the_document_refuses_what_the_service_must_never_answer() {
    let document = document();
    let schema = |method: &str, status: u16| {
        documented(&document, method, status)["content"]["application/json"]["schema"].clone()
    };
    let connection = json!({
        "meta": {"url": "http://h/api", "type": "object", "code": 200, "request_id": "r-1"},
        "data": {
            "id": Uuid::nil(), "client_id": Uuid::nil(), "consumer_id": Uuid::nil(),
            "redirect_uri": "https://x", "inserted_at": "2024-01-15T09:30:00",
            "updated_at": "2024-01-15T09:30:00"
        }
    });
    assert_eq!(
        problems(&document, &schema("get", 200), &connection),
        Vec::<String>::new()
    );
    let mut with_secret = connection.clone();
    with_secret["data"]["secret"] = json!("aR2OnpJE52IMGYQNh-oG8w");
    assert!(!problems(&document, &schema("get", 200), &with_secret).is_empty());
    let mut zoned = connection.clone();
    zoned["data"]["inserted_at"] = json!("2024-01-15T09:30:00Z");
    assert!(!problems(&document, &schema("get", 200), &zoned).is_empty());

    let forbidden = json!({
        "meta": {"url": "http://h/api", "type": "object", "code": 403, "request_id": "r-1"},
        "error": {"type": "forbidden"}
    });
    assert!(problems(&document, &schema("get", 403), &forbidden).is_empty());
    assert!(!problems(&document, &schema("get", 401), &forbidden).is_empty());
    let mut cause = forbidden.clone();
    cause["error"]["cause"] = json!("connection refused by db:5432");
    assert!(!problems(&document, &schema("get", 403), &cause).is_empty());
}
