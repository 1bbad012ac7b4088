//! Where connections come from once a request is allowed.
//!
//! A [`Connection`] is the public view of a connection: it has no field for
//! the secret, so no code path can render one.

pub mod database;
pub mod upstream;

use std::net::SocketAddr;

use http::HeaderMap;
use serde::Serialize;
use uuid::Uuid;

use crate::request_id::RequestId;
use crate::token::{BoxFuture, Credentials, Principal};

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

/// An allowed request for one connection, with what a source may need to
/// pass on: who asked (verified), with which credentials, and the request's
/// headers and id.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    /// The client from the path: the owner of the connection asked for.
    pub client_id: Uuid,
    pub connection_id: Uuid,
    pub principal: &'a Principal,
    /// The credentials that were verified, exactly as verified.
    pub credentials: &'a Credentials,
    pub request_id: &'a RequestId,
    /// The caller's headers, unfiltered: a source that forwards chooses.
    pub headers: &'a HeaderMap,
    /// The address the request came from, when the server knows it: a
    /// source that forwards passes it on, and believes forwarding headers
    /// only from trusted proxies.
    pub peer: Option<SocketAddr>,
}

/// Why a connection could not be fetched. Not finding one is not an error
/// (`Ok(None)`). Causes are for the log; callers see only the status.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The database did not answer: 503.
    #[error("connection store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Mithril answered with something we cannot pass on, or could not be
    /// reached: 502.
    #[error("upstream failed: {0}")]
    BadGateway(String),
    /// Mithril did not answer in time: 504.
    #[error("upstream timed out: {0}")]
    Timeout(String),
    /// The row holds something that is not a connection: our data's fault,
    /// answered 500.
    #[error("connection record is malformed: {0}")]
    Malformed(String),
}

/// A place connections are read from: Mithril's database or Mithril itself.
pub trait ConnectionSource: Send + Sync {
    /// The connection `fetch.connection_id` of client `fetch.client_id`, if
    /// the client has one by that id.
    fn fetch<'a>(
        &'a self,
        fetch: Fetch<'a>,
    ) -> BoxFuture<'a, Result<Option<Connection>, FetchError>>;
}
