//! What the integration tests share: a real server on port 0, a PostgreSQL
//! database made for one test and dropped after it, test data unlike the
//! demo's, and a client that can send requests no browser would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fake_mithril;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mithril_gate::app::App;
use mithril_gate::clock::Clock;
use mithril_gate::config::ServeConfig;
use mithril_gate::db::seed::{Client, ClientType, Connection, Rows, Token, User};
use mithril_gate::db::{Database, POSTGRES_SCHEMA};
use mithril_gate::policy::PolicyPaths;
use mithril_gate::secret::Secret;
use mithril_gate::server::{self, Listeners};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The PostgreSQL server the tests create their databases on. The tests
/// fail, never skip, when it cannot be reached.
pub fn postgres_admin_url() -> String {
    std::env::var("MITHRIL_GATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The shipped schema and policies.
pub fn shipped_policies() -> PolicyPaths {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    PolicyPaths {
        schema_dir: root.join("schema"),
        policies_dir: root.join("policies"),
    }
}

/// A running gateway; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Begins shutdown and waits for the server to finish, at most
    /// `within`; returns how long it took.
    pub async fn shut_down(mut self, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let serving = self.serving.take().expect("the server runs");
        tokio::time::timeout(within, serving)
            .await
            .expect("the server stops in time")
            .unwrap();
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the gateway on loopback port 0 with `config`, draining for at
/// most a second when stopped.
pub async fn start(config: ServeConfig) -> TestServer {
    start_with_clock(config, Clock::system()).await
}

/// Like [`start`], with the gateway's clock in the test's hands.
pub async fn start_with_clock(config: ServeConfig, clock: Clock) -> TestServer {
    let app = App::build(&config, clock)
        .await
        .expect("the gateway builds");
    let limits = mithril_gate::server::Limits {
        grace: Duration::from_secs(1),
        ..config.limits
    };
    serve(app, limits).await
}

/// Serves a built `app` on loopback port 0.
pub async fn serve(app: App, limits: mithril_gate::server::Limits) -> TestServer {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(loopback, loopback).await.unwrap();
    let addr = listeners.public_addr().unwrap();
    let admin_addr = listeners.admin_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server::run(
        listeners,
        app,
        async {
            let _ = stopped.await;
        },
        limits,
    ));
    TestServer {
        addr,
        admin_addr,
        stop: Some(stop),
        serving: Some(serving),
    }
}

/// Points `config` at a PostgreSQL server that does not answer, and waits
/// little for it: every request that reaches the database is a 503.
pub fn unreachable_postgres(config: &mut ServeConfig) {
    // Nothing listens on port 1.
    config.database_url = Some(Secret::new("postgres://postgres@127.0.0.1:1/mithril"));
    config.database.acquire_timeout = Duration::from_millis(300);
}

/// A PostgreSQL database with Mithril's tables, made for one test and
/// dropped (with its connections) when this is dropped.
pub struct PgDatabase {
    pub url: Secret,
    name: String,
}

impl PgDatabase {
    /// A database with Mithril's tables, empty.
    pub async fn create() -> Self {
        let database = Self::create_empty().await;
        let db = Database::connect_for_setup(&database.url).await.unwrap();
        db.execute_script(POSTGRES_SCHEMA)
            .await
            .expect("Mithril's tables are created");
        db.close().await;
        database
    }

    /// A database with no tables at all.
    pub async fn create_empty() -> Self {
        let name = format!("mithril_gate_test_{}", Uuid::new_v4().simple());
        let admin = admin_connection().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("the test database is created");
        admin.close().await;
        Self {
            url: Secret::new(database_url(&name)),
            name,
        }
    }

    /// A connection that may write, for seeding.
    pub async fn writer(&self) -> Database {
        Database::connect_for_setup(&self.url).await.unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime this test may still have; a thread
        // with its own runtime does the async work.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = admin_connection().await;
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&admin)
                    .await;
                admin.close().await;
            });
        })
        .join();
    }
}

async fn admin_connection() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_admin_url())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is needed for these tests and did not answer ({error}); start it \
                 (see README) or set MITHRIL_GATE_TEST_POSTGRES"
            )
        })
}

fn database_url(name: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// A SQLite file with Mithril's tables and `rows`, removed when dropped.
pub struct SqliteFile {
    pub url: Secret,
    _dir: tempfile::TempDir,
}

impl SqliteFile {
    pub async fn create(rows: &Rows) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = Secret::new(format!(
            "sqlite://{}",
            dir.path().join("mithril.db").display()
        ));
        let db = Database::connect_for_setup(&url).await.unwrap();
        db.execute_script(mithril_gate::db::SQLITE_SCHEMA)
            .await
            .unwrap();
        rows.insert(&db).await.unwrap();
        db.close().await;
        Self { url, _dir: dir }
    }
}

/// A gateway serving `World` data from one backend, and what keeps that
/// backend alive.
pub struct Setup {
    pub server: TestServer,
    pub world: World,
    postgres: std::sync::Mutex<Option<PgDatabase>>,
    _sqlite: Option<SqliteFile>,
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Setup {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with the configuration changed by `adjust` first.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let world = World::new(now());
        let mut config = ServeConfig::with_paths(shipped_policies());
        let (postgres, sqlite) = match backend {
            Backend::Postgres => {
                let database = PgDatabase::create().await;
                let writer = database.writer().await;
                world.rows.insert(&writer).await.unwrap();
                writer.close().await;
                config.database_url = Some(database.url.clone());
                (Some(database), None)
            }
            Backend::Sqlite => {
                let file = SqliteFile::create(&world.rows).await;
                config.database_url = Some(file.url.clone());
                (None, Some(file))
            }
        };
        adjust(&mut config);
        let server = start(config).await;
        Self {
            server,
            world,
            postgres: std::sync::Mutex::new(postgres),
            _sqlite: sqlite,
        }
    }

    /// The PostgreSQL database, out of the setup's keeping: dropping it
    /// drops the database under the running server.
    pub fn take_postgres(&self) -> Option<PgDatabase> {
        self.postgres.lock().unwrap().take()
    }

    pub async fn get(&self, target: &str, headers: &[(String, String)]) -> Reply {
        get(self.server.addr, target, headers).await
    }
}

/// A caller in the test data.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: Uuid,
    pub token: String,
    pub api_key: Option<String>,
    /// A connection owned by this caller's client.
    pub connection_id: Uuid,
    /// That connection's secret.
    pub connection_secret: String,
}

impl Caller {
    /// The path of this caller's own connection.
    pub fn own_path(&self) -> String {
        connection_path(self.client_id, self.connection_id)
    }

    /// Authorization (and api-key) headers.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![("authorization".into(), format!("Bearer {}", self.token))];
        if let Some(key) = &self.api_key {
            headers.push(("api-key".into(), key.clone()));
        }
        headers
    }
}

pub fn connection_path(client_id: Uuid, connection_id: Uuid) -> String {
    format!("/api/clients/{client_id}/connections/{connection_id}")
}

/// Test data unlike the demo's: fresh ids and tokens every run.
pub struct World {
    pub rows: Rows,
    /// Client type spelled `Mithril ADMIN`.
    pub admin: Caller,
    /// Client type spelled `MITHRIL ADMIN`.
    pub admin_upper: Caller,
    pub mis: Caller,
    /// An MSP acting through the MIS: its api-key is the secret of the MIS's
    /// connection.
    pub msp: Caller,
    pub pharmacy: Caller,
    /// A client of a type no policy grants (`NHS ADMIN`).
    pub nhs_admin: Caller,
    /// An MIS token whose scope only contains `connection:read` inside a
    /// longer scope (`connection:read_all`).
    pub read_all: Caller,
    /// An MSP through the MIS whose broker scope lacks `connection:read`.
    pub msp_narrow_broker: Caller,
    pub blocked_client: Caller,
    pub blocked_user: Caller,
    pub expired: Caller,
    pub refresh: Caller,
    /// An MSP whose api-key is the secret of a blocked MIS that has a
    /// broker scope.
    pub msp_via_blocked_mis: Caller,
    /// An MSP whose `access_type` is spelled `broker`, with the MIS's
    /// secret as api-key.
    pub msp_lowercase_broker: Caller,
    /// A client whose `access_type` is neither DIRECT nor BROKER.
    pub odd_access: Caller,
    /// A client whose type has an empty name.
    pub nameless_type: Caller,
    /// Every connection secret, so tests can check none is ever answered.
    pub secrets: Vec<String>,
}

pub fn secret_like() -> String {
    // 22 URL-safe characters, like Mithril's secrets.
    Uuid::new_v4().simple().to_string()[..22].to_owned()
}

impl World {
    pub fn new(now: i64) -> Self {
        let mut rows = Rows::default();
        let user = Uuid::new_v4();
        let blocked_user = Uuid::new_v4();
        rows.users.push(User {
            id: user,
            email: format!("{user}@test.invalid"),
            is_blocked: false,
        });
        rows.users.push(User {
            id: blocked_user,
            email: format!("{blocked_user}@test.invalid"),
            is_blocked: true,
        });
        let mut type_of = |name: &str| {
            let id = Uuid::new_v4();
            rows.client_types.push(ClientType {
                id,
                name: name.into(),
                scope: "connection:read".into(),
            });
            id
        };
        let admin_type = type_of("Mithril ADMIN");
        let admin_upper_type = type_of("MITHRIL ADMIN");
        let mis_type = type_of("MIS");
        let msp_type = type_of("MSP");
        let pharmacy_type = type_of("PHARMACY");
        let nhs_type = type_of("NHS ADMIN");
        let nameless = type_of("");

        let caller = |rows: &mut Rows,
                      client_type: Uuid,
                      settings: &str,
                      scope: &str,
                      token_name: &str,
                      expires_at: i64,
                      blocked: bool,
                      owner: Uuid| {
            let client_id = Uuid::new_v4();
            rows.clients.push(Client {
                id: client_id,
                name: format!("client {client_id}"),
                client_type_id: client_type,
                user_id: Some(owner),
                is_blocked: blocked,
                priv_settings: settings.into(),
            });
            let connection_id = Uuid::new_v4();
            let secret = secret_like();
            rows.connections.push(Connection {
                id: connection_id,
                client_id,
                consumer_id: client_id,
                redirect_uri: format!("https://{client_id}.test.invalid/cb"),
                secret: secret.clone(),
            });
            let token = Uuid::new_v4().simple().to_string();
            rows.tokens.push(Token {
                id: Uuid::new_v4(),
                name: token_name.into(),
                value: token.clone(),
                expires_at,
                details: serde_json::json!({"client_id": client_id, "scope": scope}).to_string(),
                user_id: Some(owner),
            });
            Caller {
                client_id,
                token,
                api_key: None,
                connection_id,
                connection_secret: secret,
            }
        };
        let direct = r#"{"access_type": "DIRECT"}"#;
        let broker = r#"{"access_type": "BROKER"}"#;
        let valid = now + 3600;
        let read = "connection:read connection:write";
        let access = "access_token";
        let admin = caller(
            &mut rows, admin_type, direct, read, access, valid, false, user,
        );
        let admin_upper = caller(
            &mut rows,
            admin_upper_type,
            direct,
            read,
            access,
            valid,
            false,
            user,
        );
        let mis = caller(
            &mut rows,
            mis_type,
            r#"{"access_type": "DIRECT", "broker_scope": "connection:read person:read"}"#,
            read,
            access,
            valid,
            false,
            user,
        );
        let narrow_mis = caller(
            &mut rows,
            mis_type,
            r#"{"access_type": "DIRECT", "broker_scope": "person:read"}"#,
            read,
            access,
            valid,
            false,
            user,
        );
        let mut msp = caller(
            &mut rows, msp_type, broker, read, access, valid, false, user,
        );
        msp.api_key = Some(mis.connection_secret.clone());
        let mut msp_narrow_broker = caller(
            &mut rows, msp_type, broker, read, access, valid, false, user,
        );
        msp_narrow_broker.api_key = Some(narrow_mis.connection_secret.clone());
        let pharmacy = caller(
            &mut rows,
            pharmacy_type,
            direct,
            read,
            access,
            valid,
            false,
            user,
        );
        let nhs_admin = caller(
            &mut rows, nhs_type, direct, read, access, valid, false, user,
        );
        let read_all = caller(
            &mut rows,
            mis_type,
            direct,
            "connection:read_all",
            access,
            valid,
            false,
            user,
        );
        let blocked_client = caller(&mut rows, msp_type, direct, read, access, valid, true, user);
        let blocked_user = caller(
            &mut rows,
            msp_type,
            direct,
            read,
            access,
            valid,
            false,
            blocked_user,
        );
        let expired = caller(
            &mut rows,
            mis_type,
            direct,
            read,
            access,
            now - 1,
            false,
            user,
        );
        let refresh = caller(
            &mut rows,
            mis_type,
            direct,
            read,
            "refresh_token",
            valid,
            false,
            user,
        );
        let blocked_mis = caller(
            &mut rows,
            mis_type,
            r#"{"access_type": "DIRECT", "broker_scope": "connection:read"}"#,
            read,
            access,
            valid,
            true,
            user,
        );
        let mut msp_via_blocked_mis = caller(
            &mut rows, msp_type, broker, read, access, valid, false, user,
        );
        msp_via_blocked_mis.api_key = Some(blocked_mis.connection_secret.clone());
        let lowercase = r#"{"access_type": "broker"}"#;
        let mut msp_lowercase_broker = caller(
            &mut rows, msp_type, lowercase, read, access, valid, false, user,
        );
        msp_lowercase_broker.api_key = Some(mis.connection_secret.clone());
        let odd = r#"{"access_type": "PROXY"}"#;
        let odd_access = caller(&mut rows, mis_type, odd, read, access, valid, false, user);
        let nameless_type = caller(
            &mut rows, nameless, direct, read, access, valid, false, user,
        );
        let secrets = rows.connections.iter().map(|c| c.secret.clone()).collect();
        Self {
            rows,
            admin,
            admin_upper,
            mis,
            msp,
            pharmacy,
            nhs_admin,
            read_all,
            msp_narrow_broker,
            blocked_client,
            blocked_user,
            expired,
            refresh,
            msp_via_blocked_mis,
            msp_lowercase_broker,
            odd_access,
            nameless_type,
            secrets,
        }
    }
}

pub fn now() -> i64 {
    Clock::system().now_secs()
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn error_type(&self) -> String {
        self.json()["error"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn error_message(&self) -> Option<String> {
        self.json()["error"]["message"].as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request over a new HTTP/1.1 connection. The target is sent as
/// written: `//`, dot segments and percent-escapes reach the server intact.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(target)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// `GET target` with headers.
pub async fn get(addr: SocketAddr, target: &str, headers: &[(String, String)]) -> Reply {
    send(addr, "GET", target, headers).await
}

/// Asserts that an answer is a well-formed eHealth envelope with the
/// request id in both places and no connection secret anywhere.
pub fn assert_envelope(reply: &Reply, world: &World) {
    let json = reply.json();
    let request_id = reply.header("x-request-id").expect("x-request-id header");
    assert_eq!(json["meta"]["request_id"], request_id, "{json}");
    assert_eq!(json["meta"]["code"], reply.status.as_u16(), "{json}");
    assert_eq!(json["meta"]["type"], "object");
    for secret in &world.secrets {
        assert!(
            !reply.body.contains(secret.as_str()),
            "a secret in {}",
            reply.body
        );
    }
}
