//! The command line, the configuration file, and the typed configuration
//! they become.
//!
//! Every setting is a flag, an environment variable (both shown in
//! `--help`) and a key of the TOML file given with `--config`: flag
//! `--token-cache-ttl`, variable `MITHRIL_GATE_TOKEN_CACHE_TTL`, key
//! `token_cache_ttl`. The first of them that is set wins, in that order,
//! then the built-in default. Defaults are chosen for a gateway in front of
//! one Mithril; each says why. A bad value or an unknown key stops start-up
//! with exit code 64, naming the setting (and the file position).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use http::Uri;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::db::DatabaseSettings;
use crate::gate::Reporting;
use crate::policy::PolicyPaths;
use crate::secret::Secret;
use crate::server::Limits;
use crate::token::TokenCacheSettings;
use crate::token::jwt::JwtSettings;
use crate::token::mithril::ClientTypeCacheSettings;
use crate::upstream::{HttpSettings, TrustedProxies, UpstreamSettings};

mod effective;
mod redact;

pub use effective::effective;

/// Exit code for a bad command line or configuration (BSD's `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
/// Exit code when the schema or policies cannot be loaded.
pub const EXIT_POLICY: i32 = 2;

/// Cedar policies in front of Mithril's client-connection API.
#[derive(Debug, Parser)]
#[command(name = "mithril-gate", version, about, long_about = None)]
pub struct Cli {
    /// A TOML file of settings; flags and environment variables override
    /// it. Its relative paths are relative to the file.
    #[arg(long, global = true, env = "MITHRIL_GATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to log, as a tracing filter: `info`, `debug`,
    /// `mithril_gate=debug,sqlx=warn`, ...
    #[arg(long, global = true, env = "MITHRIL_GATE_LOG", default_value = "info")]
    pub log: String,

    /// How log lines are written: `human` for a terminal, `json` (one
    /// object a line) for a log collector.
    #[arg(
        long,
        global = true,
        env = "MITHRIL_GATE_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,

    /// Where the config file set the values it gave.
    #[arg(skip)]
    pub origins: Origins,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve GET /api/clients/{id}/connections/{connection_id}.
    Serve(Box<ServeArgs>),
    /// Validate the schema, the policies and their formatting (and fixture
    /// suites, when named); list every problem.
    Check(CheckArgs),
    /// Run policy fixture suites: requests, and what callers must get back.
    Test(TestArgs),
    /// Explain one decision: the Cedar request built, the policies that
    /// decided, and the answer a caller would get.
    Authorize(Box<AuthorizeArgs>),
    /// Print the configuration `serve` would run with, secrets redacted.
    Config(Box<ServeArgs>),
    /// Set up a database for trying the gateway.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create Mithril's tables and the demo data in an empty PostgreSQL
    /// database.
    Init {
        /// The database, `postgres://user@host:port/name`.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Secret,
    },
}

/// Where the schema and policies are.
#[derive(Debug, Clone, Args, Serialize)]
pub struct PolicyArgs {
    /// Folder of `*.cedarschema` files.
    #[arg(
        long,
        env = "MITHRIL_GATE_SCHEMA",
        default_value = "schema",
        value_name = "DIR"
    )]
    pub schema: PathBuf,
    /// Folder of `*.cedar` policy files.
    #[arg(
        long,
        env = "MITHRIL_GATE_POLICIES",
        default_value = "policies",
        value_name = "DIR"
    )]
    pub policies: PathBuf,
}

impl PolicyArgs {
    pub fn paths(&self) -> PolicyPaths {
        PolicyPaths {
            schema_dir: self.schema.clone(),
            policies_dir: self.policies.clone(),
        }
    }
}

/// What `check` looks at.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Fixture suites (files or folders) to check as well.
    #[arg(value_name = "SUITE")]
    pub suites: Vec<PathBuf>,
    /// Rewrite policy files that Cedar's formatter would lay out
    /// differently, instead of reporting them.
    #[arg(long)]
    pub fix: bool,
}

/// What `test` runs.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Suite files, or folders searched for `*.yaml` suites.
    #[arg(value_name = "PATH", default_value = "tests/policies")]
    pub paths: Vec<PathBuf>,
    /// Run only the cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Also list the policies that determined no case.
    #[arg(long)]
    pub coverage: bool,
}

/// The request `authorize` explains: a fixture case, or a caller and a
/// request described by flags.
#[derive(Debug, Clone, Args)]
pub struct AuthorizeArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// A fixture suite holding the case to explain.
    #[arg(
        value_name = "SUITE",
        requires = "case",
        conflicts_with_all = [
            "path", "method", "client_type", "client_id", "scope", "broker_scope", "no_connection",
        ]
    )]
    pub suite: Option<PathBuf>,
    /// The name of the case in SUITE.
    #[arg(long, value_name = "NAME", requires = "suite")]
    pub case: Option<String>,
    /// The request path, `/api/clients/{id}/connections/{connection_id}`.
    #[arg(long, required_unless_present = "suite")]
    pub path: Option<String>,
    /// The request method, case-sensitive as in HTTP.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The caller's client type as Mithril spells it: `MIS`, `Mithril ADMIN`.
    #[arg(long, required_unless_present = "suite", value_name = "NAME")]
    pub client_type: Option<String>,
    /// The caller's client id; a new one (a client other than the path's)
    /// by default.
    #[arg(long, value_name = "UUID")]
    pub client_id: Option<uuid::Uuid>,
    /// The token's scopes, space-separated.
    #[arg(long, default_value = "")]
    pub scope: String,
    /// The caller acts through an MIS with this broker scope (an `api-key`
    /// is sent).
    #[arg(long, value_name = "SCOPE")]
    pub broker_scope: Option<String>,
    /// Explain the request as if the connection did not exist.
    #[arg(long)]
    pub no_connection: bool,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ServeArgs {
    /// Address of the public API. Loopback by default: exposing it is a
    /// decision for the operator.
    #[arg(
        long,
        env = "MITHRIL_GATE_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "IP:PORT"
    )]
    pub listen: SocketAddr,

    /// Address of `/healthz`, `/readyz` and `/metrics`, kept off the public
    /// port.
    #[arg(
        long,
        env = "MITHRIL_GATE_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901",
        value_name = "IP:PORT"
    )]
    pub admin_listen: SocketAddr,

    /// Mithril's PostgreSQL database, read-only. Without it the gateway
    /// answers from an embedded demo database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    #[serde(serialize_with = "effective::database_url")]
    pub database_url: Option<Secret>,

    #[command(flatten)]
    #[serde(flatten)]
    pub policy: PolicyArgs,

    /// How often the schema and policy files are compared with the serving
    /// generation. File events usually reload sooner; this bounds the wait
    /// where none arrive (Kubernetes ConfigMap swaps, network file systems).
    #[arg(long, env = "MITHRIL_GATE_POLICY_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub policy_poll_interval: Duration,

    /// Longest a verified token is trusted without asking again: how long a
    /// revoked token may keep working.
    #[arg(long, env = "MITHRIL_GATE_TOKEN_CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub token_cache_ttl: Duration,

    /// How long an unknown or invalid token is remembered as such.
    #[arg(long, env = "MITHRIL_GATE_TOKEN_CACHE_NEGATIVE_TTL", default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub token_cache_negative_ttl: Duration,

    /// Token checks kept in memory at most (about 1 KiB each).
    #[arg(
        long,
        env = "MITHRIL_GATE_TOKEN_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub token_cache_capacity: u64,

    /// Database connections at most. Most requests need one short query.
    #[arg(long, env = "MITHRIL_GATE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before 503.
    #[arg(long, env = "MITHRIL_GATE_DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub db_acquire_timeout: Duration,

    /// How long one database query may take before 503.
    #[arg(long, env = "MITHRIL_GATE_DB_QUERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub db_query_timeout: Duration,

    /// How long requests in flight may finish after SIGTERM or SIGINT.
    /// Below Kubernetes' default 30 s termination grace.
    #[arg(long, env = "MITHRIL_GATE_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub shutdown_grace: Duration,

    /// Public connections open at once; further clients wait in the listen
    /// backlog. Keep it below the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "MITHRIL_GATE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// A connection with no request in flight for this long is closed,
    /// HTTP/2 ones included: idle clients do not hold slots for ever.
    #[arg(long, env = "MITHRIL_GATE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub idle_timeout: Duration,

    /// How long a client may take to send a request's headers, from
    /// connecting or from its previous answer (against slow-header attacks).
    #[arg(long, env = "MITHRIL_GATE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub header_read_timeout: Duration,

    /// Mithril's base URL, `http://127.0.0.1:4000`: makes the gateway a
    /// sidecar that forwards allowed requests to Mithril.
    #[arg(
        long,
        env = "MITHRIL_GATE_UPSTREAM",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(serialize_with = "effective::url")]
    pub upstream: Option<String>,

    /// The path Mithril's internal routes start with.
    #[arg(long, env = "MITHRIL_GATE_UPSTREAM_PREFIX", default_value = "/admin")]
    pub upstream_prefix: String,

    /// How long opening a connection to Mithril (or the JWKS URL) may
    /// take. Mithril is in the same pod: a second is long.
    #[arg(long, env = "MITHRIL_GATE_UPSTREAM_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub upstream_connect_timeout: Duration,

    /// How long a whole exchange with Mithril (or the JWKS URL) may take
    /// before 504 (503 for a token check). As long as a database query may.
    #[arg(long, env = "MITHRIL_GATE_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub upstream_timeout: Duration,

    /// Where tokens are checked: Mithril's `database`, Mithril's verify
    /// API (`mithril`) or a JWKS (`jwt`). Default: `mithril` with
    /// --upstream, `database` without.
    #[arg(long, env = "MITHRIL_GATE_TOKEN_SOURCE", value_enum)]
    pub token_source: Option<TokenSourceKind>,

    /// How long a client's type from Mithril's API is used before asking
    /// again: how long a changed client type takes to reach the policies.
    #[arg(long, env = "MITHRIL_GATE_CLIENT_TYPE_CACHE_TTL", default_value = "5m", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub client_type_cache_ttl: Duration,

    /// Addresses or networks (comma-separated) whose `x-forwarded-*`
    /// headers are passed to Mithril: the load balancer in front. Nobody's
    /// by default.
    #[arg(long, env = "MITHRIL_GATE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = network, value_name = "CIDR")]
    #[serde(serialize_with = "effective::networks")]
    pub trusted_proxies: Vec<IpNet>,

    /// A JWKS file (`{"keys": [...]}`) for --token-source jwt.
    #[arg(long, env = "MITHRIL_GATE_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// A JWKS URL for --token-source jwt, fetched at start and when a
    /// token names an unknown `kid`.
    #[arg(
        long,
        env = "MITHRIL_GATE_JWT_JWKS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(serialize_with = "effective::url")]
    pub jwt_jwks_url: Option<String>,

    /// The least time between two fetches of --jwt-jwks-url, so that
    /// tokens with made-up `kid`s cannot make the gateway hammer it.
    #[arg(long, env = "MITHRIL_GATE_JWT_JWKS_REFRESH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub jwt_jwks_refresh_interval: Duration,

    /// The `iss` every JWT must carry.
    #[arg(long, env = "MITHRIL_GATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` every JWT must carry. Without it, a JWT naming any
    /// audience is refused.
    #[arg(long, env = "MITHRIL_GATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on a JWT's `exp` and `nbf`. None by default: an
    /// expired token is expired.
    #[arg(long, env = "MITHRIL_GATE_JWT_LEEWAY", default_value = "0s", value_parser = parse_duration)]
    #[serde(serialize_with = "effective::duration")]
    pub jwt_leeway: Duration,

    /// Serve the embedded demo database on an address other than loopback.
    /// Without it, a missing database URL on a reachable address stops
    /// start-up: a deployment whose DATABASE_URL went missing must not look
    /// healthy while answering with the demo's public tokens and data.
    #[arg(long, env = "MITHRIL_GATE_DEMO")]
    pub demo: bool,

    /// Log the record of every allowed request at info, for an audit
    /// trail. Off by default: allows are most of the traffic, and are
    /// logged at debug.
    #[arg(long, env = "MITHRIL_GATE_LOG_ALLOWS")]
    pub log_allows: bool,

    /// Answer the time of each step in a `Server-Timing` header. Off by
    /// default: it tells every caller how long the checks take.
    #[arg(long, env = "MITHRIL_GATE_SERVER_TIMING")]
    pub server_timing: bool,

    /// Where the config file set the values it gave.
    #[arg(skip)]
    #[serde(skip)]
    pub origins: Origins,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Where tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSourceKind {
    Database,
    Mithril,
    Jwt,
}

/// A token source, with its settings.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Database,
    Mithril(ClientTypeCacheSettings),
    Jwt(JwtSettings),
}

/// Everything `serve` needs, checked.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub database_url: Option<Secret>,
    pub paths: PolicyPaths,
    /// How often the policy files are compared with what serves.
    pub policy_poll_interval: Duration,
    pub token_cache: TokenCacheSettings,
    pub database: DatabaseSettings,
    pub limits: Limits,
    /// Mithril, for a sidecar.
    pub upstream: Option<UpstreamSettings>,
    pub token_source: TokenSource,
    pub trusted_proxies: TrustedProxies,
    pub reporting: Reporting,
}

/// A setting with a value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag's name without `--`.
    pub setting: &'static str,
    pub problem: String,
    /// Where the config file set it, when the value came from there.
    pub origin: Option<String>,
}

impl ConfigError {
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
            origin: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.setting.replace('-', "_");
        match &self.origin {
            Some(origin) => write!(f, "{origin}: `{key}`: {}", self.problem),
            None => write!(
                f,
                "`--{}` (`{key}` in the config file): {}",
                self.setting, self.problem
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a config file set each key whose value was used, as errors name
/// it ("config file `gate.toml`: line 3, column 19"), for problems found
/// after the file was read.
#[derive(Debug, Clone, Default)]
pub struct Origins(BTreeMap<String, String>);

impl Origins {
    /// `error`, placed in the file when the file gave its value.
    pub fn place(&self, error: ConfigError) -> ConfigError {
        let key = error.setting.replace('-', "_");
        ConfigError {
            origin: self.0.get(&key).cloned(),
            ..error
        }
    }
}

/// Why the command line and configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A usage error or `--help`/`--version`: clap prints it.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("config file `{path}`: {problem}")]
    File { path: PathBuf, problem: String },
}

impl Cli {
    /// Reads the command line and the `--config` file, the file filling
    /// in what neither a flag nor an environment variable set.
    pub fn load() -> Result<Self, CliError> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        if let Some(path) = cli.config.clone() {
            let file = FileConfig::read(&path)?;
            file.apply(&mut cli, &matches);
        }
        Ok(cli)
    }
}

/// The settings a `--config` file may hold: the long flag names with `_`
/// for `-`. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    log: Option<String>,
    log_format: Option<LogFormat>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    database_url: Option<Secret>,
    schema: Option<PathBuf>,
    policies: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    policy_poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    token_cache_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    token_cache_negative_ttl: Option<Duration>,
    token_cache_capacity: Option<u64>,
    db_max_connections: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    db_acquire_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    db_query_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    shutdown_grace: Option<Duration>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    header_read_timeout: Option<Duration>,
    upstream: Option<String>,
    upstream_prefix: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    upstream_connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    upstream_timeout: Option<Duration>,
    token_source: Option<TokenSourceKind>,
    #[serde(default, deserialize_with = "duration")]
    client_type_cache_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "networks")]
    trusted_proxies: Option<Vec<IpNet>>,
    jwt_jwks_file: Option<PathBuf>,
    jwt_jwks_url: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    jwt_jwks_refresh_interval: Option<Duration>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    jwt_leeway: Option<Duration>,
    demo: Option<bool>,
    log_allows: Option<bool>,
    server_timing: Option<bool>,
    /// Where each key's value starts in the file.
    #[serde(skip)]
    positions: BTreeMap<String, String>,
    /// The keys whose values were used: no flag or variable outranked them.
    #[serde(skip)]
    applied: Vec<&'static str>,
}

/// An address or a network: `10.0.0.1`, `10.0.0.0/8`, `::1`.
fn network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or a network"))
}

/// Networks as the flag takes them, as a list of strings.
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| network(text))
        .collect::<Result<_, _>>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A duration as settings are written: `60s`, `500ms`, `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration; write it like `60s`, `500ms` or `2m`"))
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Where and what the problem in a config file is, without quoting the
/// file: its lines may hold the database password.
fn describe(error: &toml::de::Error, text: &str) -> String {
    // Without its input the error says the message and the key, and no
    // quoted line.
    let mut bare = error.clone();
    bare.set_input(None);
    let message = redact::urls(bare.to_string().trim_end()).replace('\n', " ");
    match error.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Whether the user set `id` on the command line or in the environment,
/// which both outrank the file.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Sets each listed field from the file unless a flag or variable set it.
macro_rules! layer {
    ($matches:expr, $target:expr, $file:expr, $($field:ident),+ $(,)?) => {
        $(
            if let Some(value) = $file.$field.take() {
                if !given($matches, stringify!($field)) {
                    $target.$field = value.into();
                    $file.applied.push(stringify!($field));
                }
            }
        )+
    };
}

impl FileConfig {
    fn read(path: &Path) -> Result<Self, CliError> {
        let problem = |problem: String| CliError::File {
            path: path.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        let mut file: Self = toml::from_str(&text).map_err(|e| problem(describe(&e, &text)))?;
        file.positions = positions(path, &text);
        let base = path.parent().unwrap_or(Path::new(""));
        let paths = [
            &mut file.schema,
            &mut file.policies,
            &mut file.jwt_jwks_file,
        ];
        for dir in paths.into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(file)
    }

    fn apply(mut self, cli: &mut Cli, matches: &ArgMatches) {
        layer!(matches, cli, self, log, log_format);
        match (&mut cli.command, matches.subcommand()) {
            (Command::Serve(args) | Command::Config(args), Some((_, sub))) => {
                layer!(
                    sub,
                    args,
                    self,
                    listen,
                    admin_listen,
                    database_url,
                    policy_poll_interval,
                    token_cache_ttl,
                    token_cache_negative_ttl,
                    token_cache_capacity,
                    db_max_connections,
                    db_acquire_timeout,
                    db_query_timeout,
                    shutdown_grace,
                    max_connections,
                    idle_timeout,
                    header_read_timeout,
                    upstream,
                    upstream_prefix,
                    upstream_connect_timeout,
                    upstream_timeout,
                    token_source,
                    client_type_cache_ttl,
                    trusted_proxies,
                    jwt_jwks_file,
                    jwt_jwks_url,
                    jwt_jwks_refresh_interval,
                    jwt_issuer,
                    jwt_audience,
                    jwt_leeway,
                    demo,
                    log_allows,
                    server_timing,
                );
                layer!(sub, args.policy, self, schema, policies);
                args.origins = self.origins();
            }
            (Command::Check(CheckArgs { policy, .. }), Some((_, sub)))
            | (Command::Test(TestArgs { policy, .. }), Some((_, sub))) => {
                layer!(sub, policy, self, schema, policies);
            }
            (Command::Authorize(args), Some((_, sub))) => {
                layer!(sub, args.policy, self, schema, policies);
            }
            _ => {}
        }
        cli.origins = self.origins();
    }

    /// Where the file set the values that were used.
    fn origins(&self) -> Origins {
        let applied = |key: &&String| self.applied.contains(&key.as_str());
        let places = self.positions.iter().filter(|(key, _)| applied(key));
        Origins(places.map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// Where the value of each top-level key of a file that parsed starts, as
/// errors name it.
fn positions(path: &Path, text: &str) -> BTreeMap<String, String> {
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return BTreeMap::new();
    };
    let place = |offset| {
        let (line, column) = line_and_column(text, offset);
        format!(
            "config file `{}`: line {line}, column {column}",
            path.display()
        )
    };
    table
        .get_ref()
        .iter()
        .map(|(key, value)| (key.get_ref().to_string(), place(value.span().start)))
        .collect()
}

/// The 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
    (line, column)
}

impl ServeArgs {
    /// The checked configuration. A bad value that came from the config
    /// file is reported with its place in the file.
    pub fn config(&self) -> Result<ServeConfig, ConfigError> {
        self.checked().map_err(|error| self.origins.place(error))
    }

    /// Upper bounds. No sensible value comes near them; past them the
    /// runtime's clocks and semaphores overflow, and the process would
    /// fail on its first connection instead of at start-up.
    fn within_bounds(&self) -> Result<(), ConfigError> {
        const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);
        for (setting, value) in [
            ("token-cache-ttl", self.token_cache_ttl),
            ("token-cache-negative-ttl", self.token_cache_negative_ttl),
            ("db-acquire-timeout", self.db_acquire_timeout),
            ("db-query-timeout", self.db_query_timeout),
            ("shutdown-grace", self.shutdown_grace),
            ("idle-timeout", self.idle_timeout),
            ("header-read-timeout", self.header_read_timeout),
            ("upstream-connect-timeout", self.upstream_connect_timeout),
            ("upstream-timeout", self.upstream_timeout),
            ("client-type-cache-ttl", self.client_type_cache_ttl),
            ("policy-poll-interval", self.policy_poll_interval),
            ("jwt-jwks-refresh-interval", self.jwt_jwks_refresh_interval),
            ("jwt-leeway", self.jwt_leeway),
        ] {
            if value > LONGEST {
                return Err(ConfigError::new(setting, "must be at most 7 days"));
            }
        }
        if self.max_connections > 1_000_000 {
            return Err(ConfigError::new(
                "max-connections",
                "must be at most 1000000",
            ));
        }
        if self.db_max_connections > 1_000 {
            return Err(ConfigError::new(
                "db-max-connections",
                "must be at most 1000",
            ));
        }
        if self.token_cache_capacity > 100_000_000 {
            return Err(ConfigError::new(
                "token-cache-capacity",
                "must be at most 100000000",
            ));
        }
        Ok(())
    }

    fn checked(&self) -> Result<ServeConfig, ConfigError> {
        let problem = |setting, problem: &str| ConfigError::new(setting, problem);
        if self.token_cache_ttl.is_zero() {
            return Err(problem("token-cache-ttl", "must be more than 0"));
        }
        if self.max_connections == 0 {
            return Err(problem("max-connections", "must be at least 1"));
        }
        for (setting, value) in [
            ("idle-timeout", self.idle_timeout),
            ("header-read-timeout", self.header_read_timeout),
        ] {
            if value.is_zero() {
                return Err(problem(setting, "must be more than 0"));
            }
        }
        if self.db_max_connections == 0 {
            return Err(problem("db-max-connections", "must be at least 1"));
        }
        for (setting, value) in [
            ("db-acquire-timeout", self.db_acquire_timeout),
            ("db-query-timeout", self.db_query_timeout),
            ("upstream-connect-timeout", self.upstream_connect_timeout),
            ("upstream-timeout", self.upstream_timeout),
            ("client-type-cache-ttl", self.client_type_cache_ttl),
            ("policy-poll-interval", self.policy_poll_interval),
        ] {
            if value.is_zero() {
                return Err(problem(setting, "must be more than 0"));
            }
        }
        self.within_bounds()?;
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(problem("admin-listen", "must differ from --listen"));
        }
        if self.database_url.as_ref().is_some_and(Secret::is_empty) {
            return Err(problem(
                "database-url",
                "is empty; leave it unset for the demo database",
            ));
        }
        if let Some(url) = &self.database_url
            && !crate::db::is_valid_url(url)
        {
            // Never the value, nor the parser's words about it: either may
            // hold the password.
            return Err(problem(
                "database-url",
                "is not a database URL; write `postgres://user:password@host:5432/database` \
                 or `sqlite:path`, with reserved characters in the password percent-encoded",
            ));
        }
        let upstream = self.upstream_settings()?;
        let token_source = self.token_source(upstream.is_some())?;
        let serves_demo = self.database_url.is_none()
            && (upstream.is_none() || matches!(token_source, TokenSource::Database));
        if serves_demo && !self.listen.ip().is_loopback() && !self.demo {
            return Err(problem(
                "database-url",
                "is not set, and the embedded demo database (public tokens, made-up data) \
                 serves only on loopback; set DATABASE_URL to Mithril's database, or \
                 --demo to serve the demo on this address",
            ));
        }
        Ok(ServeConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            database_url: self.database_url.clone(),
            paths: self.policy.paths(),
            policy_poll_interval: self.policy_poll_interval,
            token_cache: TokenCacheSettings {
                max_ttl: self.token_cache_ttl,
                negative_ttl: self.token_cache_negative_ttl,
                capacity: self.token_cache_capacity,
            },
            database: DatabaseSettings {
                max_connections: self.db_max_connections,
                acquire_timeout: self.db_acquire_timeout,
                query_timeout: self.db_query_timeout,
            },
            limits: Limits {
                grace: self.shutdown_grace,
                max_connections: self.max_connections,
                idle_timeout: self.idle_timeout,
                header_read_timeout: self.header_read_timeout,
            },
            upstream,
            token_source,
            trusted_proxies: TrustedProxies::new(self.trusted_proxies.clone()),
            reporting: Reporting {
                log_allows: self.log_allows,
                server_timing: self.server_timing,
            },
        })
    }

    fn http(&self) -> HttpSettings {
        HttpSettings {
            connect_timeout: self.upstream_connect_timeout,
            response_timeout: self.upstream_timeout,
        }
    }

    fn upstream_settings(&self) -> Result<Option<UpstreamSettings>, ConfigError> {
        let Some(url) = &self.upstream else {
            return Ok(None);
        };
        let url = base_url(url).map_err(|problem| ConfigError::new("upstream", problem))?;
        let prefix = prefix(&self.upstream_prefix)
            .map_err(|problem| ConfigError::new("upstream-prefix", problem))?;
        Ok(Some(UpstreamSettings {
            url,
            prefix,
            http: self.http(),
        }))
    }

    fn token_source(&self, sidecar: bool) -> Result<TokenSource, ConfigError> {
        let problem = |setting, problem: &str| ConfigError::new(setting, problem);
        let kind = self.token_source.unwrap_or(if sidecar {
            TokenSourceKind::Mithril
        } else {
            TokenSourceKind::Database
        });
        if kind != TokenSourceKind::Jwt
            && (self.jwt_jwks_file.is_some() || self.jwt_jwks_url.is_some())
        {
            return Err(problem(
                "token-source",
                "must be `jwt` when a JWKS is configured",
            ));
        }
        match kind {
            TokenSourceKind::Database if sidecar && self.database_url.is_none() => Err(problem(
                "database-url",
                "is required with --token-source database and --upstream; \
                 the demo database does not know Mithril's tokens",
            )),
            TokenSourceKind::Database => Ok(TokenSource::Database),
            TokenSourceKind::Mithril if !sidecar => Err(problem(
                "token-source",
                "`mithril` needs --upstream, Mithril's URL",
            )),
            TokenSourceKind::Mithril => Ok(TokenSource::Mithril(ClientTypeCacheSettings {
                ttl: self.client_type_cache_ttl,
                capacity: self.token_cache_capacity,
            })),
            TokenSourceKind::Jwt => self.jwt().map(TokenSource::Jwt),
        }
    }

    fn jwt(&self) -> Result<JwtSettings, ConfigError> {
        if self.jwt_jwks_file.is_none() && self.jwt_jwks_url.is_none() {
            return Err(ConfigError::new(
                "jwt-jwks-file",
                "or --jwt-jwks-url is required with --token-source jwt",
            ));
        }
        let jwks_url = self
            .jwt_jwks_url
            .as_deref()
            .map(base_url_or_path)
            .transpose()
            .map_err(|problem| ConfigError::new("jwt-jwks-url", problem))?;
        let empty = |value: &Option<String>| value.as_deref().is_some_and(|v| v.trim().is_empty());
        if empty(&self.jwt_issuer) || empty(&self.jwt_audience) {
            let setting = if empty(&self.jwt_issuer) {
                "jwt-issuer"
            } else {
                "jwt-audience"
            };
            return Err(ConfigError::new(
                setting,
                "is empty; leave it unset to not check it",
            ));
        }
        Ok(JwtSettings {
            jwks_file: self.jwt_jwks_file.clone(),
            jwks_url,
            refresh_interval: self.jwt_jwks_refresh_interval,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.jwt_leeway,
            http: self.http(),
        })
    }
}

/// An `http` or `https` URL with a host and nothing else: no user info,
/// path, query or fragment.
fn base_url(text: &str) -> Result<Uri, String> {
    let url = base_url_or_path(text)?;
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err("must not have a path or query; use --upstream-prefix".into());
    }
    Ok(url)
}

/// An `http` or `https` URL with a host, no user info and no fragment.
fn base_url_or_path(text: &str) -> Result<Uri, String> {
    let shown = redact::value(text);
    let url: Uri = text
        .parse()
        .map_err(|_| format!("`{shown}` is not a URL"))?;
    let scheme = url.scheme_str().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{shown}` must start with http:// or https://"));
    }
    let Some(authority) = url.authority() else {
        return Err(format!("`{shown}` has no host"));
    };
    if authority.as_str().contains('@') {
        // Credentials in a URL end up in logs and process listings.
        return Err("must not hold user info".into());
    }
    Ok(url)
}

/// `/admin` → `["admin"]`; empty → no prefix. Segments are RFC 3986
/// unreserved characters, so the prefix needs no encoding and cannot climb.
fn prefix(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let Some(path) = trimmed.strip_prefix('/') else {
        return Err(format!("`{text}` must start with `/`"));
    };
    path.split('/')
        .map(|segment| {
            let plain = !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if plain {
                Ok(segment.to_owned())
            } else {
                Err(format!(
                    "`{text}`: segments must be letters, digits, `-`, `.`, `_` or `~`"
                ))
            }
        })
        .collect()
}

impl ServeConfig {
    /// The defaults, with the policies at `paths`: for tests and embedding.
    pub fn with_paths(paths: PolicyPaths) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            database_url: None,
            paths,
            policy_poll_interval: Duration::from_secs(1),
            token_cache: TokenCacheSettings::default(),
            database: DatabaseSettings::default(),
            limits: Limits::default(),
            upstream: None,
            token_source: TokenSource::Database,
            trusted_proxies: TrustedProxies::default(),
            reporting: Reporting::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let cli = Cli::load_from(["mithril-gate", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(args) => args.config(),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn defaults_are_usable() {
        let config = serve(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.token_cache.max_ttl, Duration::from_secs(60));
        assert_eq!(config.paths.policies_dir, PathBuf::from("policies"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert_eq!(
            serve(&["--token-cache-ttl", "0s"]).unwrap_err().setting,
            "token-cache-ttl"
        );
        assert_eq!(
            serve(&["--db-max-connections", "0"]).unwrap_err().setting,
            "db-max-connections"
        );
        // Values past what the runtime can count stop start-up, not the
        // first connection.
        for (flag, value) in [
            ("max-connections", "2305843009213693952"),
            ("db-max-connections", "4294967295"),
            ("db-acquire-timeout", "18446744073709551615s"),
            ("header-read-timeout", "8d"),
        ] {
            let error = serve(&[&format!("--{flag}"), value]).unwrap_err();
            assert_eq!(error.setting, flag);
        }
    }

    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let (dir, path) = config_file(
            "listen = \"127.0.0.1:7000\"\ntoken_cache_ttl = \"30s\"\npolicies = \"rules\"\n",
        );
        let config = serve(&["--config", &path, "--listen", "127.0.0.1:7001"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.token_cache.max_ttl, Duration::from_secs(30));
        assert_eq!(config.token_cache.negative_ttl, Duration::from_secs(5));
        assert_eq!(config.paths.policies_dir, dir.path().join("rules"));
        assert_eq!(config.paths.schema_dir, PathBuf::from("schema"));
    }

    #[test]
    fn a_file_with_an_unknown_key_or_bad_value_is_refused_with_its_position() {
        for (text, expected) in [
            (
                "listen = \"127.0.0.1:7000\"\ntoken_ttl = \"30s\"\n",
                "token_ttl",
            ),
            ("token_cache_ttl = \"soon\"\n", "`soon` is not a duration"),
            ("db_max_connections = \"ten\"\n", "db_max_connections"),
        ] {
            let (_dir, path) = config_file(text);
            let args = ["mithril-gate", "serve", "--config", &path];
            let error = Cli::load_from(args).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(error.contains("line "), "{error}");
        }
        let error = Cli::load_from(["mithril-gate", "serve", "--config", "/nonexistent.toml"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent.toml"), "{error}");
    }

    #[test]
    fn a_value_from_the_file_that_cannot_work_is_placed_in_the_file() {
        let (_dir, path) = config_file("listen = \"127.0.0.1:7000\"\ntoken_cache_ttl = \"0s\"\n");
        let error = serve(&["--config", &path]).unwrap_err();
        assert_eq!(error.setting, "token-cache-ttl");
        assert_eq!(
            error.to_string(),
            format!(
                "config file `{path}`: line 2, column 19: `token_cache_ttl`: must be more than 0"
            )
        );
        let flag = serve(&["--config", &path, "--token-cache-ttl", "0s"]).unwrap_err();
        assert_eq!(flag.origin, None);
        assert!(
            flag.to_string().starts_with("`--token-cache-ttl`"),
            "{flag}"
        );
    }

    #[test]
    fn a_broken_file_never_shows_the_database_password() {
        for text in [
            "database_url = \"postgres://gate:hunter2@db:5432/mithril\n",
            "database_url = postgres://gate:hunter2@db/mithril\n",
            "database_url = [\"postgres://gate:hunter2@db/mithril\"]\n",
            "database_url = \"postgres://gate:hunter2@db/m\"\ndatabase_url = \"x\"\n",
            "listen = \"postgres://gate:hunter2@db/m\"\n",
            "database_url = \"postgres://gate:hunter2@db/m\" listen = 1\n",
        ] {
            let (_dir, path) = config_file(text);
            let error = Cli::load_from(["mithril-gate", "serve", "--config", &path])
                .unwrap_err()
                .to_string();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("line "), "{error}");
        }
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact::urls("a postgres://u:p@h:5/d and http://h/x@y and x://u@h"),
            "a postgres://u:[redacted]@h:5/d and http://h/x@y and x://u@h"
        );
    }

    #[test]
    fn an_upstream_makes_a_sidecar_checking_tokens_with_mithril() {
        let config = serve(&["--upstream", "http://127.0.0.1:4000"]).unwrap();
        let upstream = config.upstream.unwrap();
        assert_eq!(upstream.url.to_string(), "http://127.0.0.1:4000/");
        assert_eq!(upstream.prefix, ["admin"]);
        assert_eq!(upstream.http.connect_timeout, Duration::from_secs(1));
        assert_eq!(upstream.http.response_timeout, Duration::from_secs(5));
        assert!(matches!(config.token_source, TokenSource::Mithril(_)));
        assert!(matches!(
            serve(&[]).unwrap().token_source,
            TokenSource::Database
        ));
        let unprefixed = serve(&["--upstream", "http://m:4000", "--upstream-prefix", ""]);
        assert!(unprefixed.unwrap().upstream.unwrap().prefix.is_empty());
    }

    #[test]
    fn sidecar_settings_that_cannot_work_name_the_setting() {
        for (args, setting) in [
            (&["--upstream", "mithril:4000"][..], "upstream"),
            (&["--upstream", "ftp://mithril"], "upstream"),
            (&["--upstream", "http://user:pw@mithril"], "upstream"),
            (&["--upstream", "http://mithril/admin"], "upstream"),
            (&["--upstream", "http://mithril?x=1"], "upstream"),
            (
                &["--upstream", "http://m", "--upstream-prefix", "admin"],
                "upstream-prefix",
            ),
            (
                &["--upstream", "http://m", "--upstream-prefix", "/a/../b"],
                "upstream-prefix",
            ),
            (
                &["--upstream", "http://m", "--upstream-prefix", "/a%2Fb"],
                "upstream-prefix",
            ),
            (
                &["--upstream", "http://m", "--upstream-timeout", "0s"],
                "upstream-timeout",
            ),
            (&["--token-source", "mithril"], "token-source"),
            (
                &["--upstream", "http://m", "--token-source", "database"],
                "database-url",
            ),
            (&["--token-source", "jwt"], "jwt-jwks-file"),
            (&["--jwt-jwks-file", "keys.json"], "token-source"),
            (
                &["--token-source", "jwt", "--jwt-jwks-url", "keys.json"],
                "jwt-jwks-url",
            ),
            (
                &[
                    "--token-source",
                    "jwt",
                    "--jwt-jwks-file",
                    "k",
                    "--jwt-issuer",
                    "",
                ],
                "jwt-issuer",
            ),
        ] {
            let error = serve(args).unwrap_err();
            assert_eq!(error.setting, setting, "{args:?}: {error}");
        }
        let cli = Cli::load_from(["mithril-gate", "serve", "--trusted-proxies", "10.0.0.0/33"]);
        assert!(cli.unwrap_err().to_string().contains("10.0.0.0/33"));
    }

    #[test]
    fn sidecar_settings_come_from_the_file_too() {
        let (dir, path) = config_file(
            "upstream = \"http://127.0.0.1:4000\"\n\
             trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n\
             token_source = \"jwt\"\n\
             jwt_jwks_file = \"keys/jwks.json\"\n\
             jwt_leeway = \"5s\"\n",
        );
        let config = serve(&["--config", &path]).unwrap();
        assert!(config.upstream.is_some());
        assert!(
            config
                .trusted_proxies
                .contains("192.0.2.1".parse().unwrap())
        );
        assert!(config.trusted_proxies.contains("10.9.8.7".parse().unwrap()));
        assert!(
            !config
                .trusted_proxies
                .contains("192.0.2.2".parse().unwrap())
        );
        let TokenSource::Jwt(jwt) = config.token_source else {
            panic!("not jwt: {:?}", config.token_source);
        };
        assert_eq!(jwt.jwks_file, Some(dir.path().join("keys/jwks.json")));
        assert_eq!(jwt.leeway, Duration::from_secs(5));
        assert_eq!(jwt.refresh_interval, Duration::from_secs(60));
    }

    #[test]
    fn the_database_url_never_shows_in_debug() {
        let config = serve(&["--database-url", "postgres://u:hunter2@db/mithril"]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
