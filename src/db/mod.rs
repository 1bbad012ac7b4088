//! Mithril's database: PostgreSQL in production, SQLite for the embedded demo
//! and for policy fixtures.
//!
//! The gateway reads Mithril's tables and never writes them: a PostgreSQL
//! connection is opened with `default_transaction_read_only` on, so even a
//! bug here cannot change Mithril's data. Only `db init` (an empty database,
//! for trying the gateway) and the embedded demo write, through [`seed`].
//!
//! Every query is written once per backend ([`Sql`]) and returns plain text,
//! integers and booleans, so that one row type reads from both. UUIDs, JSON
//! and timestamps are turned into text by the query (PostgreSQL casts), and
//! parsed by the caller.

pub mod demo;
pub mod seed;

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Arguments, Encode, FromRow, Type};

use crate::secret::Secret;

/// The tables `db init` creates in PostgreSQL, as Mithril's migrations do.
pub const POSTGRES_SCHEMA: &str = include_str!("../../sql/postgres/mithril.sql");
/// The same tables for the embedded SQLite database.
pub const SQLITE_SCHEMA: &str = include_str!("../../sql/sqlite/mithril.sql");

/// One statement in each backend's dialect.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

/// A query parameter. Text parameters that PostgreSQL compares with a `uuid`
/// or `jsonb` column are cast in the PostgreSQL text of the query.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Text(&'a str),
    OptionalText(Option<&'a str>),
    Int(i64),
    Bool(bool),
}

/// How the gateway uses its database connections.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Connections in the pool. Token checks are cached, so most requests
    /// need one query (the connection itself); a small pool goes far.
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection, including
    /// connecting. An unreachable database answers 503 after this.
    pub acquire_timeout: Duration,
    /// The longest one query may take, from asking for a connection to the
    /// last row; past it the request answers 503.
    pub query_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            query_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database url is not valid: {0}")]
    InvalidUrl(String),
    #[error("database url must start with `postgres://`, `postgresql://` or `sqlite:`")]
    UnsupportedScheme,
    #[error("database query failed: {}", describe(.0))]
    Query(#[source] sqlx::Error),
    #[error("cannot connect to the database: {}", describe(.0))]
    Connect(#[source] sqlx::Error),
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database setup failed: {0}")]
    Setup(String),
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A pool of connections to Mithril's database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
    query_timeout: Duration,
}

/// Rows that read the same from both backends (tuples of text, integers
/// and booleans do).
pub trait AnyRow:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl Database {
    /// Opens Mithril's database read-only. Connections are made on first
    /// use, so the gateway starts (and reports not ready) while the database
    /// is down.
    pub fn connect_read_only(url: &Secret, settings: &DatabaseSettings) -> Result<Self, DbError> {
        let url = url.expose();
        let pool = if is_postgres(url) {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| DbError::InvalidUrl(e.to_string()))?
                .application_name("mithril-gate")
                .options([("default_transaction_read_only", "on")]);
            Pool::Postgres(pg_pool(settings).connect_lazy_with(options))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| DbError::InvalidUrl(e.to_string()))?
                .read_only(true);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_lazy_with(options),
            )
        } else {
            return Err(DbError::UnsupportedScheme);
        };
        Ok(Self {
            pool,
            query_timeout: settings.query_timeout,
        })
    }

    /// Connects for writing: only `db init`, the tests and the fixture
    /// runner do this, to databases the gateway made. A SQLite file is
    /// created when missing.
    pub async fn connect_for_setup(url: &Secret) -> Result<Self, DbError> {
        let url = url.expose();
        // One connection, so that statements between `BEGIN` and `COMMIT`
        // run in one transaction.
        let pool = if is_postgres(url) {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| DbError::InvalidUrl(e.to_string()))?
                .application_name("mithril-gate setup");
            // A pool retries until its acquire timeout and then says only
            // that it timed out; one plain connection first says why
            // (refused, unknown host, bad password).
            let probe = sqlx::ConnectOptions::connect(&options)
                .await
                .map_err(DbError::Connect)?;
            sqlx::Connection::close(probe)
                .await
                .map_err(DbError::Connect)?;
            let pool = pg_pool(&DatabaseSettings::default()).max_connections(1);
            Pool::Postgres(pool.connect_with(options).await.map_err(DbError::Connect)?)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| DbError::InvalidUrl(e.to_string()))?
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new().max_connections(1);
            Pool::Sqlite(pool.connect_with(options).await.map_err(DbError::Connect)?)
        } else {
            return Err(DbError::UnsupportedScheme);
        };
        Ok(Self {
            pool,
            query_timeout: Duration::from_secs(30),
        })
    }

    /// A private in-memory SQLite database with Mithril's tables and
    /// nothing in them. It lives as long as the returned value: the pool
    /// keeps its one connection open for good.
    pub async fn in_memory() -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| DbError::InvalidUrl(e.to_string()))?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(DbError::Query)?;
        let db = Self {
            pool: Pool::Sqlite(pool),
            query_timeout: Duration::from_secs(5),
        };
        db.execute_script(SQLITE_SCHEMA).await?;
        Ok(db)
    }

    /// `postgres` or `sqlite`, for logs.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Whether the database answers now, holds Mithril's tables and lets
    /// us read them. When no pooled connection could be had, a direct
    /// connection attempt tells why (the pool only says it timed out).
    pub async fn ping(&self) -> Result<(), DbError> {
        // LIMIT 0 reads no rows but still needs each table and the right to
        // select from it.
        const TABLES: &str =
            "SELECT 1 FROM users, client_types, clients, connections, tokens LIMIT 0";
        const PING: Sql = Sql {
            postgres: TABLES,
            sqlite: TABLES,
        };
        match self.fetch_optional::<(i32,)>(&PING, &[]).await {
            Err(DbError::Query(sqlx::Error::PoolTimedOut)) => Err(self.connect_directly().await),
            other => other.map(drop),
        }
    }

    async fn connect_directly(&self) -> DbError {
        use sqlx::Connection as _;
        let attempt = async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    let options = pool.connect_options();
                    sqlx::PgConnection::connect_with(&options).await.map(drop)
                }
                Pool::Sqlite(pool) => {
                    let options = pool.connect_options();
                    sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .map(drop)
                }
            }
        };
        match tokio::time::timeout(self.query_timeout, attempt).await {
            Ok(Ok(())) => DbError::Query(sqlx::Error::PoolTimedOut),
            Ok(Err(error)) => DbError::Connect(error),
            Err(_) => DbError::Timeout(self.query_timeout),
        }
    }

    /// Runs one query and reads at most one row.
    pub async fn fetch_optional<T: AnyRow>(
        &self,
        sql: &Sql,
        binds: &[Bind<'_>],
    ) -> Result<Option<T>, DbError> {
        let query = async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    sqlx::query_as_with(sql.postgres, arguments::<sqlx::Postgres>(binds)?)
                        .fetch_optional(pool)
                        .await
                }
                Pool::Sqlite(pool) => {
                    sqlx::query_as_with(sql.sqlite, arguments::<sqlx::Sqlite>(binds)?)
                        .fetch_optional(pool)
                        .await
                }
            }
        };
        self.within_timeout(query).await
    }

    /// Runs one statement that returns no rows.
    pub async fn execute(&self, sql: &Sql, binds: &[Bind<'_>]) -> Result<(), DbError> {
        let statement = async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    sqlx::query_with(sql.postgres, arguments::<sqlx::Postgres>(binds)?)
                        .execute(pool)
                        .await
                        .map(drop)
                }
                Pool::Sqlite(pool) => {
                    sqlx::query_with(sql.sqlite, arguments::<sqlx::Sqlite>(binds)?)
                        .execute(pool)
                        .await
                        .map(drop)
                }
            }
        };
        self.within_timeout(statement).await
    }

    /// Runs a script of several statements without parameters, such as the
    /// table definitions.
    pub async fn execute_script(&self, script: &'static str) -> Result<(), DbError> {
        let run = async {
            match &self.pool {
                Pool::Postgres(pool) => sqlx::raw_sql(script).execute(pool).await.map(drop),
                Pool::Sqlite(pool) => sqlx::raw_sql(script).execute(pool).await.map(drop),
            }
        };
        self.within_timeout(run).await
    }

    /// Creates Mithril's tables and the demo data in an empty PostgreSQL
    /// database, all or nothing. Refuses a database that already has any of
    /// Mithril's tables: it may be Mithril's own.
    pub async fn init_postgres(url: &Secret, now: i64) -> Result<(), DbError> {
        const CONTENTS: Sql = Sql {
            postgres: "SELECT current_database()::text, \
                       (SELECT string_agg(table_name::text, ', ' ORDER BY table_name) \
                       FROM information_schema.tables WHERE table_schema = current_schema())",
            sqlite: "SELECT NULL, NULL",
        };
        if !is_postgres(url.expose()) {
            return Err(DbError::Setup(
                "`db init` fills PostgreSQL databases only; `serve` makes its SQLite demo itself"
                    .into(),
            ));
        }
        let db = Self::connect_for_setup(url).await?;
        let refusal = match db
            .fetch_optional::<(String, Option<String>)>(&CONTENTS, &[])
            .await
        {
            Ok(Some((name, _))) if name == "postgres" || name.starts_with("template") => {
                Some(format!(
                    "`{name}` is a system database; create one for the demo \
                     (`createdb mithril_demo`) and name it in the url"
                ))
            }
            Ok(Some((_, Some(tables)))) => Some(format!(
                "the database is not empty (it has {tables}); \
                 `db init` only fills an empty database"
            )),
            Ok(_) => None,
            Err(error) => {
                db.close().await;
                return Err(error);
            }
        };
        if let Some(refusal) = refusal {
            db.close().await;
            return Err(DbError::Setup(refusal));
        }
        db.execute_script("BEGIN").await?;
        let filled = async {
            db.execute_script(POSTGRES_SCHEMA).await?;
            demo::rows(now).insert(&db).await
        };
        let result = match filled.await {
            Ok(()) => db.execute_script("COMMIT").await,
            Err(error) => {
                let _ = db.execute_script("ROLLBACK").await;
                Err(error)
            }
        };
        db.close().await;
        result
    }

    /// Closes every connection; later queries fail.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    async fn within_timeout<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.query_timeout, work).await {
            Ok(result) => result.map_err(DbError::Query),
            Err(_) => Err(DbError::Timeout(self.query_timeout)),
        }
    }
}

/// A database error in a line an operator can act on: PostgreSQL's own
/// message without sqlx's "at line N" (a line of PostgreSQL's source), and
/// a plain explanation of a pool timeout.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(error) => match error.code() {
            Some(code) => format!("{} (SQLSTATE {code})", error.message()),
            None => error.message().to_owned(),
        },
        sqlx::Error::PoolTimedOut => "no connection became free within the acquire timeout; \
             the database may be unreachable or the pool too small"
            .to_owned(),
        sqlx::Error::Configuration(error) => error.to_string(),
        other => other.to_string(),
    }
}

/// Whether `url` names a database the gateway can open: what start-up
/// checks before anything runs.
pub fn is_valid_url(url: &Secret) -> bool {
    let url = url.expose();
    if is_postgres(url) {
        PgConnectOptions::from_str(url).is_ok()
    } else if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).is_ok()
    } else {
        false
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn pg_pool(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // Mithril's database may be restarted or failed over; a connection
        // that died meanwhile is found before a request uses it.
        .test_before_acquire(true)
}

fn arguments<DB>(binds: &[Bind<'_>]) -> Result<DB::Arguments, sqlx::Error>
where
    DB: sqlx::Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + Type<DB>,
    bool: for<'a> Encode<'a, DB> + Type<DB>,
{
    let mut arguments = DB::Arguments::default();
    for bind in binds {
        let added: Result<(), BoxDynError> = match *bind {
            Bind::Text(value) => arguments.add(value),
            Bind::OptionalText(value) => arguments.add(value),
            Bind::Int(value) => arguments.add(value),
            Bind::Bool(value) => arguments.add(value),
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}
