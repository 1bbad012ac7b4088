//! Verifying tokens through Mithril's internal API, as eHealth's gateway
//! does.
//!
//! Two calls, each answered from a cache when it can be:
//! 1. `GET {upstream}/{prefix}/tokens/{value}/verify`, the token as one
//!    percent-encoded segment and the caller's `api-key` passed on (Mithril
//!    checks a broker client's api-key itself). 200 gives the token's
//!    `expires_at`, `user_id` and `details` (`client_id`, `scope`, and for a
//!    client acting through an MIS `broker_scope`), and `urgent.
//!    mis_client_id`. 404 (unknown) and 401 (expired, blocked) are a bad
//!    token. The [`TokenCache`](super::TokenCache) in front keeps the answer
//!    until `expires_at` or its maximum.
//! 2. `GET {upstream}/{prefix}/clients/{client_id}/details` for
//!    `data.client_type_name`, kept here for its own TTL: a client's type
//!    changes far less often than tokens come and go.
//!
//! Anything else, a 5xx, a timeout, a body without those fields, is an
//! outage: 503, never a bad token, never cached. A 200 whose `expires_at`
//! has passed by our clock is an expired token.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use moka::future::Cache;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{
    BoxFuture, Broker, Credentials, Invalid, Principal, Scopes, TokenVerifier, Unavailable,
    Verdict, Verified,
};
use crate::clock::Clock;
use crate::gate::Dependency;
use crate::upstream::{Reply, Upstream, UpstreamError};

/// The longest token sent to Mithril's verify. Mithril's tokens are a few
/// dozen characters; one of this size, percent-encoded into the path (at
/// most three bytes a byte), still fits in the 8 KiB request lines HTTP
/// servers commonly accept, so a huge made-up token is refused here
/// rather than turned into an error answer from Mithril.
const MAX_TOKEN_LEN: usize = 2048;

/// How client types are cached.
#[derive(Debug, Clone, Copy)]
pub struct ClientTypeCacheSettings {
    /// How long a client's type is used before it is asked again: how
    /// long a changed type takes to reach the policies.
    pub ttl: Duration,
    /// Clients remembered at most.
    pub capacity: u64,
}

/// Checks tokens with Mithril's verify API.
pub struct MithrilTokens {
    upstream: Arc<Upstream>,
    client_types: Cache<Uuid, ClientType>,
    settings: ClientTypeCacheSettings,
    clock: Clock,
}

#[derive(Clone)]
struct ClientType {
    name: Arc<str>,
    stored_at_ms: i64,
}

/// Why a client's type could not be read.
#[derive(Debug, thiserror::Error)]
enum ClientTypeError {
    #[error("client does not exist")]
    Missing,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl MithrilTokens {
    pub fn new(upstream: Arc<Upstream>, settings: ClientTypeCacheSettings, clock: Clock) -> Self {
        let client_types = Cache::builder()
            .name("client_types")
            .max_capacity(settings.capacity)
            .time_to_live(settings.ttl)
            .build();
        Self {
            upstream,
            client_types,
            settings,
            clock,
        }
    }

    async fn check(&self, credentials: &Credentials) -> Verdict {
        let mut headers = HeaderMap::new();
        if let Some(key) = &credentials.api_key {
            let mut value = HeaderValue::from_str(key.expose())
                .map_err(|_| outage("the api-key cannot be sent as a header"))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("api-key"), value);
        }
        let token = credentials.token.expose();
        if token.len() > MAX_TOKEN_LEN {
            return Ok(Err(Invalid::Unknown));
        }
        let reply = self
            .upstream
            .get(&["tokens", token, "verify"], headers)
            .await
            .map_err(|e| unreachable("verify", e))?;
        let token: VerifyBody = match reply.status.as_u16() {
            200 => json(&reply, "verify")?,
            404 => return Ok(Err(Invalid::Unknown)),
            401 => return Ok(Err(Invalid::Refused)),
            // Mithril could not read what it was sent as a token: the
            // token's fault, not an outage. Any other answer (403, 429,
            // 5xx) may be Mithril's or the gateway's own trouble.
            400 | 414 | 422 | 431 => return Ok(Err(Invalid::Refused)),
            status => return Err(outage(&format!("verify answered {status}"))),
        };
        let VerifyBody { data, urgent } = token;
        if data
            .name
            .as_deref()
            .is_some_and(|name| name != "access_token")
        {
            return Ok(Err(Invalid::NotAccessToken));
        }
        if data.expires_at <= self.clock.now_secs() {
            return Ok(Err(Invalid::Expired));
        }
        let client_type = match self.client_type(data.details.client_id).await {
            Ok(name) => name,
            Err(ClientTypeError::Missing) => return Ok(Err(Invalid::ClientMissing)),
            Err(ClientTypeError::Unavailable(outage)) => return Err(outage),
        };
        let broker = data.details.broker_scope.map(|scope| Broker {
            client_id: urgent.and_then(|urgent| urgent.mis_client_id),
            scopes: Scopes::parse(&scope),
        });
        let principal = Principal {
            client_id: data.details.client_id,
            client_type: client_type.to_string(),
            scopes: Scopes::parse(data.details.scope.as_deref().unwrap_or_default()),
            user_id: data.user_id,
            broker,
        };
        Ok(Ok(Verified {
            principal: principal.into(),
            expires_at: data.expires_at,
        }))
    }

    /// The client's type name, from the cache while it is fresh by the
    /// injected clock; concurrent misses for one client ask once.
    async fn client_type(&self, client_id: Uuid) -> Result<Arc<str>, ClientTypeError> {
        let now = self.clock.now_millis();
        if let Some(cached) = self.client_types.get(&client_id).await {
            if self.is_fresh(&cached, now) {
                return Ok(cached.name);
            }
            self.client_types.invalidate(&client_id).await;
        }
        let ask = async {
            let id = client_id.to_string();
            let reply = self
                .upstream
                .get(&["clients", &id, "details"], HeaderMap::new())
                .await
                .map_err(|e| unreachable("client details", e))?;
            let details: DetailsBody = match reply.status.as_u16() {
                200 => json(&reply, "client details")?,
                404 => return Err(ClientTypeError::Missing),
                status => return Err(outage(&format!("client details answered {status}")).into()),
            };
            if details.data.client_type_name.is_empty() {
                return Err(outage("client details answered an empty client type").into());
            }
            Ok(ClientType {
                name: details.data.client_type_name.into(),
                stored_at_ms: self.clock.now_millis(),
            })
        };
        self.client_types
            .try_get_with(client_id, ask)
            .await
            .map(|entry| entry.name)
            .map_err(|error| match Arc::try_unwrap(error) {
                Ok(error) => error,
                Err(shared) => match &*shared {
                    ClientTypeError::Missing => ClientTypeError::Missing,
                    ClientTypeError::Unavailable(cause) => outage(&cause.to_string()).into(),
                },
            })
    }

    fn is_fresh(&self, entry: &ClientType, now_ms: i64) -> bool {
        let age = u64::try_from(now_ms - entry.stored_at_ms).unwrap_or(0);
        Duration::from_millis(age) < self.settings.ttl
    }
}

impl TokenVerifier for MithrilTokens {
    fn verify<'a>(&'a self, credentials: &'a Credentials) -> BoxFuture<'a, Verdict> {
        Box::pin(self.check(credentials))
    }

    fn dependency(&self) -> Dependency {
        Dependency::Upstream
    }
}

/// What verify's answer must hold; other fields (the token's `value`
/// among them) are not read.
#[derive(Deserialize)]
struct VerifyBody {
    data: TokenData,
    #[serde(default)]
    urgent: Option<Urgent>,
}

#[derive(Deserialize)]
struct TokenData {
    #[serde(default)]
    name: Option<String>,
    expires_at: i64,
    #[serde(default)]
    user_id: Option<Uuid>,
    details: TokenDetails,
}

#[derive(Deserialize)]
struct TokenDetails {
    client_id: Uuid,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    broker_scope: Option<String>,
}

#[derive(Deserialize)]
struct Urgent {
    #[serde(default)]
    mis_client_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct DetailsBody {
    data: ClientDetails,
}

#[derive(Deserialize)]
struct ClientDetails {
    client_type_name: String,
}

fn json<T: DeserializeOwned>(reply: &Reply, call: &str) -> Result<T, Unavailable> {
    serde_json::from_slice(&reply.body).map_err(|error| {
        // Not serde's message: it may quote the body, and the body holds
        // the token.
        outage(&format!(
            "{call} answered a body without the expected fields ({:?} at line {} column {})",
            error.classify(),
            error.line(),
            error.column()
        ))
    })
}

fn unreachable(call: &str, error: UpstreamError) -> Unavailable {
    outage(&format!("{call}: {error}"))
}

fn outage(cause: &str) -> Unavailable {
    Unavailable(cause.to_owned().into())
}
