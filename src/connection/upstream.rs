//! Reading connections from Mithril itself: the sidecar's source.
//!
//! An allowed request becomes `GET {upstream}/{prefix}/clients/{id}/
//! connections/{connection_id}`, built from the route's typed ids. The
//! answer is never passed on: its `data` is read into [`Connection`] (the
//! six public fields; `secret` and anything else are not read) and the
//! gateway renders its own envelope. Mithril's statuses map so that a
//! caller cannot tell Mithril's internals apart:
//!
//! | Mithril | caller |
//! |---|---|
//! | 200 with a connection of that id and client | 200 |
//! | 404 | 404 |
//! | 401, 403 (the decision was ours, so these are Mithril's fault), any other status, a body that is not a connection, a refused connection | 502 |
//! | no answer within the response or connect timeout | 504 |

use std::sync::Arc;

use serde::Deserialize;
use uuid::Uuid;

use super::{Connection, ConnectionSource, Fetch, FetchError};
use crate::token::BoxFuture;
use crate::upstream::headers::{self, Identity};
use crate::upstream::{Reply, TrustedProxies, Upstream};

/// Connections as Mithril's internal API answers them.
pub struct UpstreamConnections {
    upstream: Arc<Upstream>,
    /// Whose `x-forwarded-*` headers are passed on.
    trusted: TrustedProxies,
}

impl UpstreamConnections {
    pub fn new(upstream: Arc<Upstream>, trusted: TrustedProxies) -> Self {
        Self { upstream, trusted }
    }

    async fn forward(&self, fetch: Fetch<'_>) -> Result<Option<Connection>, FetchError> {
        let headers = headers::forwarded(
            fetch.headers,
            fetch.peer.map(|peer| peer.ip()),
            &self.trusted,
            Identity {
                principal: fetch.principal,
                credentials: fetch.credentials,
                request_id: fetch.request_id,
            },
        );
        let client_id = fetch.client_id.to_string();
        let connection_id = fetch.connection_id.to_string();
        let path = ["clients", &client_id, "connections", &connection_id];
        let reply = self.upstream.get(&path, headers).await.map_err(|error| {
            if error.is_timeout() {
                FetchError::Timeout(error.to_string())
            } else {
                FetchError::BadGateway(error.to_string())
            }
        })?;
        match reply.status.as_u16() {
            200 => connection(&reply, fetch).map(Some),
            404 => Ok(None),
            status => Err(FetchError::BadGateway(format!(
                "upstream answered {status}"
            ))),
        }
    }
}

impl ConnectionSource for UpstreamConnections {
    fn fetch<'a>(
        &'a self,
        fetch: Fetch<'a>,
    ) -> BoxFuture<'a, Result<Option<Connection>, FetchError>> {
        Box::pin(self.forward(fetch))
    }
}

/// The part of Mithril's answer that is read: nothing but the public
/// fields, whatever else the body holds.
#[derive(Deserialize)]
struct Body {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    id: Uuid,
    client_id: Uuid,
    consumer_id: Uuid,
    redirect_uri: String,
    inserted_at: String,
    updated_at: String,
}

fn connection(reply: &Reply, fetch: Fetch<'_>) -> Result<Connection, FetchError> {
    let bad = |problem: String| FetchError::BadGateway(format!("upstream answered 200 {problem}"));
    let Body { data } = serde_json::from_slice(&reply.body).map_err(|error| {
        // serde's message may quote the body; its position may not.
        bad(format!(
            "with a body that is not a connection ({:?} at line {} column {})",
            error.classify(),
            error.line(),
            error.column()
        ))
    })?;
    // Only the connection that was decided about may be answered.
    if data.id != fetch.connection_id || data.client_id != fetch.client_id {
        return Err(bad("with another connection than asked for".into()));
    }
    Ok(Connection {
        id: data.id,
        client_id: data.client_id,
        consumer_id: data.consumer_id,
        redirect_uri: data.redirect_uri,
        inserted_at: timestamp(&data.inserted_at).ok_or_else(|| bad("with a bad time".into()))?,
        updated_at: timestamp(&data.updated_at).ok_or_else(|| bad("with a bad time".into()))?,
    })
}

/// An ISO 8601 date and time as the database source renders it,
/// `YYYY-MM-DDTHH:MM:SS`: Mithril's fractional seconds and a `Z` (its
/// times are UTC) are dropped; anything else is not a time.
fn timestamp(value: &str) -> Option<String> {
    let (seconds, rest) = value.split_at_checked(19)?;
    let shape = seconds.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T' || b == b' ',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    let rest = rest.strip_suffix('Z').unwrap_or(rest);
    let fraction = rest.is_empty()
        || rest
            .strip_prefix('.')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    (shape && fraction).then(|| seconds.replacen(' ', "T", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rendered_to_the_second() {
        for (given, rendered) in [
            ("2024-01-15T09:30:00", "2024-01-15T09:30:00"),
            ("2024-01-15T09:30:00.123456", "2024-01-15T09:30:00"),
            ("2024-01-15T09:30:00Z", "2024-01-15T09:30:00"),
            ("2024-01-15 09:30:00.5Z", "2024-01-15T09:30:00"),
        ] {
            assert_eq!(timestamp(given).as_deref(), Some(rendered), "{given}");
        }
        for bad in [
            "",
            "2024-01-15",
            "2024-01-15T09:30:00+02:00",
            "2024-01-15T09:30:00.",
            "2024-01-15T09:30:0x",
            "yesterday at noon!!",
            "2024-01-15T09:30:00<script>",
        ] {
            assert_eq!(timestamp(bad), None, "{bad}");
        }
    }
}
