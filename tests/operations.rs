//! Running the gateway: outages, readiness, `db init`, read-only access,
//! graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Backend, PgDatabase, Setup, assert_envelope, get, shipped_policies, start, unreachable_postgres,
};
use mithril_gate::app::App;
use mithril_gate::clock::Clock;
use mithril_gate::config::ServeConfig;
use mithril_gate::connection::database::DatabaseConnections;
use mithril_gate::db::{Bind, Database, Sql, demo};
use mithril_gate::gate::{Dependency, Gate};
use mithril_gate::policy::PolicyStore;
use mithril_gate::secret::Secret;
use mithril_gate::token::{
    BoxFuture, Credentials, Principal, Scopes, TokenCache, TokenCacheSettings, TokenVerifier,
    Verdict, Verified,
};
use uuid::Uuid;

#[tokio::test]
async fn an_unreachable_database_is_503_never_401() {
    let mut config = ServeConfig::with_paths(shipped_policies());
    unreachable_postgres(&mut config);
    let server = start(config).await;
    let path = format!(
        "/api/clients/{}/connections/{}",
        Uuid::new_v4(),
        Uuid::new_v4()
    );
    let auth = vec![(
        "authorization".to_owned(),
        "Bearer 0123456789abcdef".to_owned(),
    )];
    for _ in 0..2 {
        // Twice: an outage is not remembered as a bad token.
        let reply = get(server.addr, &path, &auth).await;
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.error_type(), "internal_error");
        assert!(reply.header("www-authenticate").is_none());
        assert!(
            !reply.body.contains("127.0.0.1:1"),
            "names no host: {}",
            reply.body
        );
        assert!(!reply.body.contains("0123456789abcdef"));
    }
    // Requests the gateway refuses before asking the database still are.
    let reply = get(server.addr, &path, &[]).await;
    assert_eq!(reply.status, 401);
    let reply = get(server.addr, "/nope", &auth).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn readiness_follows_the_database_and_liveness_does_not() {
    let mut config = ServeConfig::with_paths(shipped_policies());
    unreachable_postgres(&mut config);
    let down = start(config).await;
    assert_eq!(get(down.admin_addr, "/readyz", &[]).await.status, 503);
    assert_eq!(get(down.admin_addr, "/healthz", &[]).await.status, 200);

    let up = Setup::start(Backend::Postgres).await;
    let ready = get(up.server.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(get(up.server.admin_addr, "/nope", &[]).await.status, 404);
    // The admin endpoints are not on the public port.
    assert_eq!(get(up.server.addr, "/readyz", &[]).await.status, 404);
}

#[tokio::test]
async fn a_database_lost_while_serving_is_503_even_for_cached_tokens() {
    let setup = Setup::start(Backend::Postgres).await;
    let mis = &setup.world.mis;
    assert_eq!(setup.get(&mis.own_path(), &mis.headers()).await.status, 200);

    // Drop the database under the running gateway.
    drop(setup_database_only(&setup));
    let cached = setup.get(&mis.own_path(), &mis.headers()).await;
    assert_eq!(cached.status, 503, "{}", cached.body);
    assert_envelope(&cached, &setup.world);
    let uncached = setup
        .get(
            &setup.world.pharmacy.own_path(),
            &setup.world.pharmacy.headers(),
        )
        .await;
    assert_eq!(uncached.status, 503, "{}", uncached.body);
}

/// Takes the PostgreSQL database out of a setup, so dropping it drops the
/// database while the server keeps running.
fn setup_database_only(setup: &Setup) -> PgDatabase {
    setup.take_postgres().expect("a PostgreSQL setup")
}

#[tokio::test]
async fn the_gateway_cannot_write_to_mithrils_database() {
    let database = PgDatabase::create().await;
    let db = Database::connect_read_only(&database.url, &Default::default()).unwrap();
    const INSERT: Sql = Sql {
        postgres: "INSERT INTO client_types (id, name, inserted_at, updated_at) \
                   VALUES ($1::uuid, 'X', now(), now())",
        sqlite: "",
    };
    let id = Uuid::new_v4().to_string();
    let error = db.execute(&INSERT, &[Bind::Text(&id)]).await.unwrap_err();
    assert!(error.to_string().contains("read-only"), "{error}");
}

#[tokio::test]
async fn db_init_fills_an_empty_database_once() {
    let database = PgDatabase::create_empty().await;
    Database::init_postgres(&database.url, common::now())
        .await
        .unwrap();

    let mut config = ServeConfig::with_paths(shipped_policies());
    config.database_url = Some(database.url.clone());
    let server = start(config).await;
    let path = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    let auth = vec![(
        "authorization".to_owned(),
        format!("Bearer {}", demo::MIS_TOKEN),
    )];
    let reply = get(server.addr, &path, &auth).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let again = Database::init_postgres(&database.url, common::now())
        .await
        .unwrap_err();
    assert!(again.to_string().contains("is not empty"), "{again}");
}

#[tokio::test]
async fn db_init_refuses_a_database_that_is_not_empty() {
    let database = PgDatabase::create_empty().await;
    let writer = database.writer().await;
    writer
        .execute_script("CREATE TABLE orders (id uuid)")
        .await
        .unwrap();
    writer.close().await;
    let error = Database::init_postgres(&database.url, common::now())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("it has orders"), "{error}");
}

#[tokio::test]
async fn db_init_refuses_system_databases_and_sqlite() {
    let system = Secret::new(common::postgres_admin_url());
    let error = Database::init_postgres(&system, common::now())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("is a system database"),
        "{error}"
    );
    let sqlite = Secret::new("sqlite:///tmp/mithril-demo.db");
    let error = Database::init_postgres(&sqlite, common::now())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("PostgreSQL databases only"),
        "{error}"
    );
}

#[tokio::test]
async fn readiness_needs_mithrils_tables() {
    let empty = PgDatabase::create_empty().await;
    let mut config = ServeConfig::with_paths(shipped_policies());
    config.database_url = Some(empty.url.clone());
    let server = start(config).await;
    let reply = get(server.admin_addr, "/readyz", &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
}

#[tokio::test]
async fn the_embedded_demo_answers_the_readme_requests() {
    let server = start(ServeConfig::with_paths(shipped_policies())).await;
    let bearer = |token: &str| vec![("authorization".to_owned(), format!("Bearer {token}"))];
    let own = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    let other = common::connection_path(demo::PHARMACY_CLIENT, demo::PHARMACY_CONNECTION);
    let brokered = common::connection_path(demo::MSP_CLIENT, demo::MSP_CONNECTION);
    assert_eq!(
        get(server.addr, &own, &bearer(demo::MIS_TOKEN))
            .await
            .status,
        200
    );
    assert_eq!(
        get(server.addr, &other, &bearer(demo::MIS_TOKEN))
            .await
            .status,
        403
    );
    let mut msp = bearer(demo::MSP_TOKEN);
    msp.push(("api-key".into(), demo::MIS_API_KEY.into()));
    assert_eq!(get(server.addr, &brokered, &msp).await.status, 200);
    let scopeless = get(server.addr, &own, &bearer(demo::MIS_WITHOUT_SCOPE_TOKEN)).await;
    assert_eq!(scopeless.error_message().as_deref(), Some("Invalid scopes"));
    for token in [
        demo::BLOCKED_TOKEN,
        demo::EXPIRED_TOKEN,
        demo::REFRESH_TOKEN,
    ] {
        assert_eq!(
            get(server.addr, &own, &bearer(token)).await.status,
            401,
            "{token}"
        );
    }
}

/// The README's example grant, taken from the README itself so the two
/// cannot drift apart.
fn readme_nhs_policy() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("```cedar\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("nhs-reads-any-connection"))
        .expect("the README shows how to grant NHS")
        .to_owned()
}

#[tokio::test]
async fn the_readme_grant_for_nhs_takes_effect() {
    let bearer = vec![(
        "authorization".to_owned(),
        format!("Bearer {}", demo::NHS_TOKEN),
    )];
    let other = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);

    let before = start(ServeConfig::with_paths(shipped_policies())).await;
    assert_eq!(get(before.addr, &other, &bearer).await.status, 403);

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let shipped =
        std::fs::read_to_string(shipped_policies().policies_dir.join("connections.cedar")).unwrap();
    std::fs::write(
        policies.join("connections.cedar"),
        shipped + "\n" + &readme_nhs_policy(),
    )
    .unwrap();
    let mut paths = shipped_policies();
    paths.policies_dir = policies;
    let after = start(ServeConfig::with_paths(paths)).await;
    let reply = get(after.addr, &other, &bearer).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// A token source that takes its time, to hold a request in flight.
struct Slow(Duration);

impl TokenVerifier for Slow {
    fn verify<'a>(&'a self, _: &'a Credentials) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(Ok(Verified {
                principal: Arc::new(Principal {
                    client_id: demo::MIS_CLIENT,
                    client_type: "MIS".into(),
                    scopes: Scopes::parse("connection:read"),
                    user_id: None,
                    broker: None,
                }),
                expires_at: i64::from(i32::MAX),
            }))
        })
    }

    fn dependency(&self) -> Dependency {
        Dependency::Database
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let config = ServeConfig::with_paths(shipped_policies());
    let demo_app = App::build(&config, Clock::system()).await.unwrap();
    let policies = Arc::new(PolicyStore::new(
        shipped_policies().load().unwrap().policies,
    ));
    let tokens = TokenCache::new(
        Arc::new(Slow(Duration::from_millis(400))),
        TokenCacheSettings::default(),
        Clock::system(),
    );
    let db = demo_app.db.clone().unwrap();
    let connections = Arc::new(DatabaseConnections::new(db.clone()));
    let app = App {
        gate: Arc::new(Gate::new(policies, tokens, connections)),
        db: Some(db),
        upstream: None,
        demo: true,
        policy_paths: shipped_policies(),
        policy_poll_interval: Duration::from_secs(1),
    };
    let server = common::serve(
        app,
        mithril_gate::server::Limits {
            grace: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await;
    let addr = server.addr;

    let path = common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION);
    let auth = vec![("authorization".to_owned(), "Bearer slow".to_owned())];
    let in_flight = tokio::spawn(async move { get(addr, &path, &auth).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shut_down(Duration::from_secs(3)).await;

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
