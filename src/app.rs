//! Putting the service together from its configuration: policies, database,
//! token cache, connection source.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{EXIT_POLICY, EXIT_USAGE, ServeConfig};
use crate::connection::database::DatabaseConnections;
use crate::db::{Database, DbError, demo};
use crate::gate::Gate;
use crate::policy::{LoadErrors, PolicyStore};
use crate::token::TokenCache;
use crate::token::database::DatabaseTokens;

/// A built service, not yet listening.
pub struct App {
    pub gate: Arc<Gate>,
    /// The database readiness is judged by.
    pub db: Database,
    /// Whether it answers from the embedded demo data.
    pub demo: bool,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Policies(#[from] LoadErrors),
    #[error(transparent)]
    Database(#[from] DbError),
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
            Self::Database(_) | Self::Bind { .. } => 1,
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

        let (db, demo) = match &config.database_url {
            Some(url) => (Database::connect_read_only(url, &config.database)?, false),
            None => (demo_database(&clock).await?, true),
        };
        if let Err(error) = db.ping().await {
            // Not fatal: the database may come up after the gateway, and
            // readiness says so meanwhile.
            tracing::warn!(%error, "database not usable yet; answering 503 until it is (see /readyz)");
        }
        let source = Arc::new(DatabaseTokens::new(db.clone(), clock.clone()));
        let tokens = TokenCache::new(source, config.token_cache.clone(), clock);
        let connections = Arc::new(DatabaseConnections::new(db.clone()));
        let gate = Arc::new(Gate::new(policies, tokens, connections));
        Ok(Self { gate, db, demo })
    }
}

async fn demo_database(clock: &Clock) -> Result<Database, DbError> {
    let db = Database::in_memory().await?;
    demo::rows(clock.now_secs()).insert(&db).await?;
    Ok(db)
}
