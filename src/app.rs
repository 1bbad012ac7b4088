//! Putting the service together from its configuration: policies, database,
//! token cache, connection source.
//!
//! Standalone, tokens and connections come from the database. As a sidecar
//! (`--upstream`), connections come from Mithril, and tokens from Mithril's
//! API by default; a sidecar needs a database only when it checks tokens
//! there.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{EXIT_POLICY, EXIT_USAGE, ServeConfig, TokenSource};
use crate::connection::ConnectionSource;
use crate::connection::database::DatabaseConnections;
use crate::connection::upstream::UpstreamConnections;
use crate::db::{Database, DbError, demo};
use crate::gate::Gate;
use crate::policy::{LoadErrors, PolicyPaths, PolicyStore};
use crate::token::database::DatabaseTokens;
use crate::token::jwt::{JwtTokens, KeySetError};
use crate::token::mithril::MithrilTokens;
use crate::token::{TokenCache, TokenVerifier};
use crate::upstream::{Upstream, UpstreamError};

/// A built service, not yet listening.
pub struct App {
    pub gate: Arc<Gate>,
    /// The database, when the service reads one; readiness asks it.
    pub db: Option<Database>,
    /// Mithril, for a sidecar; readiness asks it.
    pub upstream: Option<Arc<Upstream>>,
    /// Whether it answers from the embedded demo data.
    pub demo: bool,
    /// Where the policies are reloaded from while serving.
    pub policy_paths: PolicyPaths,
    /// How often their files are compared with what serves.
    pub policy_poll_interval: std::time::Duration,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Policies(#[from] LoadErrors),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("JWKS: {0}")]
    Jwks(#[from] KeySetError),
    #[error("{0}")]
    Incomplete(&'static str),
    #[error("cannot listen on {addr} (`--{setting}`): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        /// The setting that named the address.
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Policies(_) => EXIT_POLICY,
            Self::Database(DbError::InvalidUrl(_) | DbError::UnsupportedScheme) => EXIT_USAGE,
            Self::Jwks(KeySetError::Fetch(_))
            | Self::Database(_)
            | Self::Bind { .. }
            | Self::Upstream(_) => 1,
            Self::Jwks(_) | Self::Incomplete(_) => EXIT_USAGE,
        }
    }
}

impl App {
    pub async fn build(config: &ServeConfig, clock: Clock) -> Result<Self, StartError> {
        let loaded = config.paths.load()?;
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "policy warning");
        }
        tracing::info!(
            generation = loaded.policies.generation(),
            policies = ?loaded.policies.ids(),
            "policies loaded"
        );
        let policies = Arc::new(PolicyStore::new(loaded.policies));

        let upstream = match &config.upstream {
            Some(settings) => Some(Arc::new(Upstream::new(settings)?)),
            None => None,
        };
        let needs_db = upstream.is_none() || matches!(config.token_source, TokenSource::Database);
        let (db, demo) = match &config.database_url {
            _ if !needs_db => (None, false),
            Some(url) => (
                Some(Database::connect_read_only(url, &config.database)?),
                false,
            ),
            None => (Some(demo_database(&clock).await?), true),
        };
        if let Some(db) = &db
            && let Err(error) = db.ping().await
        {
            // Not fatal: the database may come up after the gateway, and
            // readiness says so meanwhile.
            tracing::warn!(%error, "database not usable yet; answering 503 until it is (see /readyz)");
        }

        let source: Arc<dyn TokenVerifier> =
            match (&config.token_source, &upstream, &db) {
                (TokenSource::Database, _, Some(db)) => {
                    Arc::new(DatabaseTokens::new(db.clone(), clock.clone()))
                }
                (TokenSource::Mithril(settings), Some(upstream), _) => Arc::new(
                    MithrilTokens::new(upstream.clone(), *settings, clock.clone()),
                ),
                (TokenSource::Jwt(settings), _, _) => {
                    Arc::new(JwtTokens::new(settings, clock.clone()).await?)
                }
                _ => {
                    return Err(StartError::Incomplete(
                        "the token source has nothing to ask",
                    ));
                }
            };
        let tokens = TokenCache::new(source, config.token_cache.clone(), clock);
        let connections: Arc<dyn ConnectionSource> = match (&upstream, &db) {
            (Some(upstream), _) => Arc::new(UpstreamConnections::new(
                upstream.clone(),
                config.trusted_proxies.clone(),
            )),
            (None, Some(db)) => Arc::new(DatabaseConnections::new(db.clone())),
            (None, None) => return Err(StartError::Incomplete("connections have no source")),
        };
        let gate =
            Arc::new(Gate::new(policies, tokens, connections).with_reporting(config.reporting));
        Ok(Self {
            gate,
            db,
            upstream,
            demo,
            policy_paths: config.paths.clone(),
            policy_poll_interval: config.policy_poll_interval,
        })
    }
}

async fn demo_database(clock: &Clock) -> Result<Database, DbError> {
    let db = Database::in_memory().await?;
    demo::rows(clock.now_secs()).insert(&db).await?;
    Ok(db)
}
