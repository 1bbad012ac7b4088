//! Who is calling: bearer tokens become a [`Principal`].
//!
//! A token source ([`TokenVerifier`]) answers one of three ways, and they
//! must never be confused: the credentials are valid (a [`Verified`]
//! principal), they are not ([`Invalid`], answered 401), or the source could
//! not tell ([`Unavailable`], answered 503 and never cached). Sources sit
//! behind [`TokenCache`].

mod cache;
pub mod database;
mod header;
pub mod jwt;
pub mod mithril;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use uuid::Uuid;

pub use cache::{Lookup, TokenCache, TokenCacheSettings};
pub use header::{HeaderError, credentials};

use crate::gate::Dependency;
use crate::secret::Secret;

/// What a caller presented: the bearer token and, for a client acting
/// through an MIS, the `api-key` header (a connection secret).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub token: Secret,
    pub api_key: Option<Secret>,
}

/// A verified caller, the same whichever source verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The client the token was issued to (`details.client_id`).
    pub client_id: Uuid,
    /// The name of the client's type, as Mithril spells it.
    pub client_type: String,
    /// The scopes the token grants.
    pub scopes: Scopes,
    /// The user the token was issued to (`tokens.user_id`), when known.
    pub user_id: Option<Uuid>,
    /// For a client acting through an MIS (`access_type` `BROKER`): the MIS
    /// whose connection secret came as `api-key`.
    pub broker: Option<Broker>,
}

/// The MIS a client acts through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The MIS's client id (Mithril's `mis_client_id`), when the source
    /// tells it.
    pub client_id: Option<Uuid>,
    /// The MIS's `broker_scope`: it bounds the token's scopes.
    pub scopes: Scopes,
}

impl Principal {
    /// The client type as the policies name it: upper-cased, because
    /// Mithril's data spells one type several ways (`Mithril ADMIN`,
    /// `MITHRIL ADMIN`). ASCII letters only: Unicode case mapping would
    /// turn look-alikes such as `Mıthrıl ADMIN` (dotless ı) into the
    /// admin type.
    pub fn client_type_key(&self) -> String {
        self.client_type.to_ascii_uppercase()
    }

    /// The scopes this request may use: the token's, and, through a broker,
    /// only those also in the broker's scope.
    pub fn effective_scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().filter(|scope| {
            self.broker
                .as_ref()
                .is_none_or(|broker| broker.scopes.contains(scope))
        })
    }
}

/// A set of scopes, read from Mithril's space-separated scope strings.
/// Scopes match exactly: `connection:read_all` is not `connection:read`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    pub fn parse(scope: &str) -> Self {
        Self(
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl FromIterator<String> for Scopes {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        Self(iter.into_iter().filter(|s| !s.is_empty()).collect())
    }
}

/// Credentials a source accepted.
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Arc<Principal>,
    /// When the token stops being valid, in Unix seconds.
    pub expires_at: i64,
}

/// Why credentials are not valid. Each is answered 401 with the same
/// message; the reason is for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("token is not known")]
    Unknown,
    #[error("token is not an access token (a refresh token or a code)")]
    NotAccessToken,
    #[error("token has expired")]
    Expired,
    #[error("token's client does not exist")]
    ClientMissing,
    #[error("token's client is blocked")]
    ClientBlocked,
    #[error("token's user is blocked")]
    UserBlocked,
    #[error("token's client acts through a broker and sent no api-key")]
    ApiKeyMissing,
    #[error("api-key is not the secret of a broker's connection")]
    ApiKeyInvalid,
    #[error("token record is malformed")]
    Malformed,
    #[error("token was refused by Mithril")]
    Refused,
    #[error("token's signature does not verify with a trusted key")]
    Signature,
    #[error("token's claims are missing or not accepted")]
    Claims,
}

impl Invalid {
    /// A short name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown_token",
            Self::NotAccessToken => "not_access_token",
            Self::Expired => "expired",
            Self::ClientMissing => "client_missing",
            Self::ClientBlocked => "client_blocked",
            Self::UserBlocked => "user_blocked",
            Self::ApiKeyMissing => "api_key_missing",
            Self::ApiKeyInvalid => "api_key_invalid",
            Self::Malformed => "malformed_record",
            Self::Refused => "refused_by_mithril",
            Self::Signature => "bad_signature",
            Self::Claims => "bad_claims",
        }
    }

    /// Whether the fault lies with the api-key rather than the token.
    pub fn is_api_key(&self) -> bool {
        matches!(self, Self::ApiKeyMissing | Self::ApiKeyInvalid)
    }
}

/// The token source could not answer: an outage, never a bad token.
#[derive(Debug, thiserror::Error)]
#[error("token source is unavailable: {0}")]
pub struct Unavailable(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What a [`TokenVerifier`] answers.
pub type Verdict = Result<Result<Verified, Invalid>, Unavailable>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A place that can tell whether credentials are valid: Mithril's database,
/// Mithril's API or a JWT key set.
pub trait TokenVerifier: Send + Sync {
    fn verify<'a>(&'a self, credentials: &'a Credentials) -> BoxFuture<'a, Verdict>;

    /// The system this source asks, which an [`Unavailable`] is blamed on
    /// in logs and metrics.
    fn dependency(&self) -> Dependency;
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Unavailable(Arc<Unavailable>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &str, broker: Option<&str>) -> Principal {
        Principal {
            client_id: Uuid::nil(),
            client_type: "Mithril ADMIN".into(),
            scopes: Scopes::parse(scopes),
            user_id: None,
            broker: broker.map(|scopes| Broker {
                client_id: None,
                scopes: Scopes::parse(scopes),
            }),
        }
    }

    #[test]
    fn scopes_split_on_spaces_and_match_exactly() {
        let scopes = Scopes::parse("  connection:read_all  connection:write ");
        assert!(!scopes.contains("connection:read"));
        assert!(scopes.contains("connection:read_all"));
        assert!(scopes.contains("connection:write"));
        assert!(!scopes.contains(""));
    }

    #[test]
    fn a_broker_scope_bounds_the_token_scopes() {
        let direct = principal("connection:read connection:write", None);
        assert_eq!(
            direct.effective_scopes().collect::<Vec<_>>(),
            ["connection:read", "connection:write"]
        );
        let brokered = principal("connection:read connection:write", Some("connection:write"));
        assert_eq!(
            brokered.effective_scopes().collect::<Vec<_>>(),
            ["connection:write"]
        );
    }

    #[test]
    fn client_type_key_ignores_ascii_case_only() {
        assert_eq!(principal("", None).client_type_key(), "MITHRIL ADMIN");
        let lookalike = Principal {
            client_type: "Mıthrıl ADMİN".into(),
            ..principal("", None)
        };
        assert_ne!(lookalike.client_type_key(), "MITHRIL ADMIN");
        let sharp = Principal {
            client_type: "ſtraße".into(),
            ..principal("", None)
        };
        assert_eq!(sharp.client_type_key(), "ſTRAßE");
    }
}
