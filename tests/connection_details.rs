//! `GET /api/clients/{id}/connections/{connection_id}` end to end: a real
//! server on port 0, answering from real PostgreSQL and from SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, Caller, Setup, assert_envelope, connection_path, send};
use uuid::Uuid;

/// Runs each named scenario once against PostgreSQL and once against
/// SQLite.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario(super::Setup::start(super::Backend::Postgres).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario(super::Setup::start(super::Backend::Sqlite).await).await;
                }
            }
        )*
    };
}

on_both_backends!(
    allowed_callers_get_the_six_public_fields,
    a_callers_request_id_is_kept,
    bad_credentials_are_401,
    missing_scope_is_403_invalid_scopes,
    another_clients_connection_is_403,
    unknown_connections_are_404,
    unrouted_paths_are_404_before_authentication,
    other_methods_are_405,
    head_answers_like_get_without_a_body,
);

type Headers = Vec<(String, String)>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

async fn allowed_callers_get_the_six_public_fields(setup: Setup) {
    let world = &setup.world;
    let cases: [(&str, &Caller, &Caller); 7] = [
        ("admin reads an MIS's connection", &world.admin, &world.mis),
        (
            "admin spelled upper-case reads a pharmacy's",
            &world.admin_upper,
            &world.pharmacy,
        ),
        ("MIS reads its own", &world.mis, &world.mis),
        ("MSP through the MIS reads its own", &world.msp, &world.msp),
        (
            "MSP spelled `broker` with the MIS's api-key",
            &world.msp_lowercase_broker,
            &world.msp_lowercase_broker,
        ),
        ("pharmacy reads its own", &world.pharmacy, &world.pharmacy),
        (
            "admin reads a blocked client's",
            &world.admin,
            &world.blocked_client,
        ),
    ];
    for (case, caller, owner) in cases {
        let path = owner.own_path();
        let reply = setup.get(&path, &caller.headers()).await;
        assert_eq!(reply.status, 200, "{case}: {}", reply.body);
        assert_envelope(&reply, world);
        let json = reply.json();
        assert_eq!(
            json["meta"]["url"],
            format!("http://{}{path}", setup.server.addr),
            "{case}"
        );
        let data = json["data"].as_object().unwrap();
        let mut fields: Vec<_> = data.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "client_id",
                "consumer_id",
                "id",
                "inserted_at",
                "redirect_uri",
                "updated_at"
            ],
            "{case}"
        );
        assert_eq!(data["id"], owner.connection_id.to_string(), "{case}");
        assert_eq!(data["client_id"], owner.client_id.to_string(), "{case}");
        assert_eq!(data["consumer_id"], owner.client_id.to_string(), "{case}");
        assert_eq!(
            data["redirect_uri"],
            format!("https://{}.test.invalid/cb", owner.client_id)
        );
        assert_eq!(data["inserted_at"], "2024-01-15T09:30:00", "{case}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }
}

async fn a_callers_request_id_is_kept(setup: Setup) {
    let mis = &setup.world.mis;
    let mut with_id = mis.headers();
    with_id.push(("x-request-id".into(), "caller-id-0123456789".into()));
    let reply = setup.get(&mis.own_path(), &with_id).await;
    assert_eq!(reply.header("x-request-id"), Some("caller-id-0123456789"));
    assert_eq!(reply.json()["meta"]["request_id"], "caller-id-0123456789");

    let mut unsafe_id = mis.headers();
    unsafe_id.push(("x-request-id".into(), "<script>".into()));
    let reply = setup.get(&mis.own_path(), &unsafe_id).await;
    let replaced = reply.header("x-request-id").unwrap();
    assert!(Uuid::try_parse(replaced).is_ok(), "{replaced}");
    assert_eq!(reply.json()["meta"]["request_id"], replaced);

    // Errors carry the id too.
    let reply = setup.get(&mis.own_path(), &[]).await;
    assert_eq!(
        reply.json()["meta"]["request_id"],
        reply.header("x-request-id").unwrap()
    );
}

async fn bad_credentials_are_401(setup: Setup) {
    let world = &setup.world;
    let path = world.mis.own_path();
    let bearer = |token: &str| ("authorization".to_owned(), format!("Bearer {token}"));
    let msp_path = world.msp.own_path();
    let blocked_client_path = world.blocked_client.own_path();
    let blocked_user_path = world.blocked_user.own_path();
    let via_blocked_path = world.msp_via_blocked_mis.own_path();
    let lowercase_path = world.msp_lowercase_broker.own_path();
    let odd_path = world.odd_access.own_path();
    let nameless_path = world.nameless_type.own_path();
    let cases: Vec<(&str, &str, Headers, &str)> = vec![
        ("no authorization header", &path, vec![], "Bearer"),
        (
            "two authorization headers",
            &path,
            vec![bearer(&world.mis.token), bearer(&world.mis.token)],
            r#"Bearer error="invalid_request""#,
        ),
        (
            "basic scheme",
            &path,
            headers(&[("authorization", "Basic bWlzOnNlY3JldA==")]),
            r#"Bearer error="invalid_request""#,
        ),
        (
            "two tokens",
            &path,
            vec![(
                "authorization".into(),
                format!("Bearer {} x", world.mis.token),
            )],
            r#"Bearer error="invalid_request""#,
        ),
        (
            "unknown token",
            &path,
            vec![bearer("0123456789abcdef0123456789abcdef")],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "expired token",
            &path,
            vec![bearer(&world.expired.token)],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "refresh token",
            &path,
            vec![bearer(&world.refresh.token)],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "blocked client",
            &blocked_client_path,
            vec![bearer(&world.blocked_client.token)],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "blocked user",
            &blocked_user_path,
            vec![bearer(&world.blocked_user.token)],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "broker client without api-key",
            &msp_path,
            vec![bearer(&world.msp.token)],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "broker client with a wrong api-key",
            &msp_path,
            vec![
                bearer(&world.msp.token),
                ("api-key".into(), "not-a-secret-of-anyone".into()),
            ],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "broker client with the secret of a client without broker scope",
            &msp_path,
            vec![
                bearer(&world.msp.token),
                ("api-key".into(), world.pharmacy.connection_secret.clone()),
            ],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "broker client with the secret of a blocked MIS",
            &via_blocked_path,
            world.msp_via_blocked_mis.headers(),
            r#"Bearer error="invalid_token""#,
        ),
        (
            "broker spelled `broker` without api-key",
            &lowercase_path,
            vec![bearer(&world.msp_lowercase_broker.token)],
            r#"Bearer error="invalid_token""#,
        ),
        (
            "access type neither DIRECT nor BROKER",
            &odd_path,
            world.odd_access.headers(),
            r#"Bearer error="invalid_token""#,
        ),
        (
            "client type without a name",
            &nameless_path,
            world.nameless_type.headers(),
            r#"Bearer error="invalid_token""#,
        ),
    ];
    for (case, target, headers, challenge) in cases {
        let reply = setup.get(target, &headers).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
        assert_envelope(&reply, world);
        assert_eq!(reply.error_type(), "access_denied", "{case}");
        assert_eq!(reply.header("www-authenticate"), Some(challenge), "{case}");
        let message = reply.error_message().unwrap_or_default();
        assert!(!message.is_empty(), "{case}: a 401 says why");
        for (_, value) in &headers {
            let credential = value
                .trim_start_matches("Bearer ")
                .trim_start_matches("Basic ");
            assert!(
                !reply.body.contains(credential),
                "{case}: echoed a credential"
            );
        }
    }
}

async fn missing_scope_is_403_invalid_scopes(setup: Setup) {
    let world = &setup.world;
    for (case, caller) in [
        (
            "scope that merely contains connection:read",
            &world.read_all,
        ),
        (
            "broker scope without connection:read",
            &world.msp_narrow_broker,
        ),
    ] {
        let reply = setup.get(&caller.own_path(), &caller.headers()).await;
        assert_eq!(reply.status, 403, "{case}: {}", reply.body);
        assert_envelope(&reply, world);
        assert_eq!(reply.error_type(), "forbidden", "{case}");
        assert_eq!(
            reply.error_message().as_deref(),
            Some("Invalid scopes"),
            "{case}"
        );
    }
}

async fn another_clients_connection_is_403(setup: Setup) {
    let world = &setup.world;
    let cases = [
        (
            "MIS reads a pharmacy's connection",
            &world.mis,
            world.pharmacy.own_path(),
        ),
        (
            "pharmacy reads an MIS's connection",
            &world.pharmacy,
            world.mis.own_path(),
        ),
        (
            "MSP reads the MIS it acts through",
            &world.msp,
            world.mis.own_path(),
        ),
        (
            "MIS asks about a connection another client does not have",
            &world.mis,
            connection_path(world.pharmacy.client_id, Uuid::new_v4()),
        ),
        (
            "MIS asks about a client that does not exist",
            &world.mis,
            connection_path(Uuid::new_v4(), world.mis.connection_id),
        ),
        (
            "a type no policy grants reads its own",
            &world.nhs_admin,
            world.nhs_admin.own_path(),
        ),
    ];
    for (case, caller, path) in cases {
        let reply = setup.get(&path, &caller.headers()).await;
        assert_eq!(reply.status, 403, "{case}: {}", reply.body);
        assert_envelope(&reply, world);
        assert_eq!(reply.error_type(), "forbidden", "{case}");
        assert_ne!(
            reply.error_message().as_deref(),
            Some("Invalid scopes"),
            "{case}"
        );
    }
}

async fn unknown_connections_are_404(setup: Setup) {
    let world = &setup.world;
    let cases = [
        (
            "admin asks for a connection under the wrong client",
            &world.admin,
            connection_path(world.pharmacy.client_id, world.mis.connection_id),
        ),
        (
            "admin asks for a connection that does not exist",
            &world.admin,
            connection_path(world.mis.client_id, Uuid::new_v4()),
        ),
        (
            "MIS asks for its own client's connection that does not exist",
            &world.mis,
            connection_path(world.mis.client_id, Uuid::new_v4()),
        ),
    ];
    for (case, caller, path) in cases {
        let reply = setup.get(&path, &caller.headers()).await;
        assert_eq!(reply.status, 404, "{case}: {}", reply.body);
        assert_envelope(&reply, world);
        assert_eq!(reply.error_type(), "not_found", "{case}");
    }
}

async fn unrouted_paths_are_404_before_authentication(setup: Setup) {
    let world = &setup.world;
    let client = world.mis.client_id;
    let connection = world.mis.connection_id;
    let targets = [
        "/".to_owned(),
        "/api/clients".to_owned(),
        format!("/api/clients/{client}/connections"),
        format!("/api/clients/{client}/connections/not-a-uuid"),
        format!("/api/clients/{client}/connections/{connection}/"),
        format!("/api/clients/{client}//connections/{connection}"),
        format!("//api/clients/{client}/connections/{connection}"),
        format!("/api/clients/{client}/connections/../connections/{connection}"),
        format!("/api/clients/{client}/./connections/{connection}"),
        format!("/api/clients/{client}%2Fconnections/{connection}"),
        format!("/api/clients/{client}/connections%2F{connection}"),
        format!("/api/clients/{}/connections/{connection}", client.simple()),
        format!("/admin/clients/{client}/connections/{connection}"),
    ];
    for target in targets {
        // With and without valid credentials: routing comes first.
        for headers in [world.mis.headers(), Vec::new()] {
            let reply = setup.get(&target, &headers).await;
            assert_eq!(reply.status, 404, "{target}: {}", reply.body);
            assert_envelope(&reply, world);
            assert_eq!(reply.error_type(), "not_found", "{target}");
            assert!(reply.header("www-authenticate").is_none(), "{target}");
        }
    }
}

async fn other_methods_are_405(setup: Setup) {
    let world = &setup.world;
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let reply = send(
            setup.server.addr,
            method,
            &world.mis.own_path(),
            &world.mis.headers(),
        )
        .await;
        assert_eq!(reply.status, 405, "{method}: {}", reply.body);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}");
        assert_envelope(&reply, world);
    }
    // An unknown path is 404 whatever the method.
    let reply = send(setup.server.addr, "DELETE", "/api/clients", &[]).await;
    assert_eq!(reply.status, 404);
}

async fn head_answers_like_get_without_a_body(setup: Setup) {
    let world = &setup.world;
    let path = world.admin.own_path();
    let get = setup.get(&path, &world.admin.headers()).await;
    let head = send(setup.server.addr, "HEAD", &path, &world.admin.headers()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{}", head.body);
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert!(head.header("x-request-id").is_some());

    let denied = send(setup.server.addr, "HEAD", &path, &[]).await;
    assert_eq!(denied.status, 401);
    assert!(denied.body.is_empty());
}
