//! Where connections come from once a request is allowed.
//!
//! A [`Connection`] is the public view of a connection: it has no field for
//! the secret, so no code path can render one.

pub mod database;

use serde::Serialize;
use uuid::Uuid;

use crate::token::BoxFuture;

/// A connection as callers may see it: exactly the six public fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub id: Uuid,
    /// The client that owns the connection.
    pub client_id: Uuid,
    /// The MIS acting for the owner (the owner itself for an MIS).
    pub consumer_id: Uuid,
    pub redirect_uri: String,
    /// ISO 8601 without a zone, as Mithril renders its timestamps.
    pub inserted_at: String,
    pub updated_at: String,
}

/// Why a connection could not be fetched. Not finding one is not an error
/// (`Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The database did not answer: 503.
    #[error("connection store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The row holds something that is not a connection: our data's fault,
    /// answered 500.
    #[error("connection record is malformed: {0}")]
    Malformed(String),
}

/// A place connections are read from: Mithril's database or Mithril itself.
pub trait ConnectionSource: Send + Sync {
    /// The connection `connection_id` of client `client_id`, if the client
    /// has one by that id.
    fn fetch(
        &self,
        client_id: Uuid,
        connection_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<Connection>, FetchError>>;
}
