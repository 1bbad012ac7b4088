//! Verifying tokens against Mithril's own tables, as Mithril's verify does.
//!
//! A token is valid when a `tokens` row has its value and
//! `name = 'access_token'` (a refresh token or an authorization code is not
//! a credential), `expires_at` is in the future, its user (when it has one)
//! is not blocked, and the client in `details.client_id` exists and is not
//! blocked, and its `priv_settings.access_type` is `DIRECT` or `BROKER`
//! (Mithril refuses clients with neither). A `BROKER` client must also
//! send, as `api-key`, the secret of a connection whose client has a
//! `broker_scope`; that scope then bounds the token's.

use serde::Deserialize;
use uuid::Uuid;

use super::{
    BoxFuture, Broker, Credentials, Invalid, Principal, Scopes, TokenVerifier, Unavailable,
};
use super::{Verdict, Verified};
use crate::clock::Clock;
use crate::db::{Bind, Database, DbError, Sql};
use crate::gate::Dependency;

/// Checks tokens in Mithril's database.
pub struct DatabaseTokens {
    db: Database,
    clock: Clock,
}

impl DatabaseTokens {
    pub fn new(db: Database, clock: Clock) -> Self {
        Self { db, clock }
    }

    async fn check(&self, credentials: &Credentials) -> Result<Result<Verified, Invalid>, DbError> {
        let Some((name, expires_at, details, user_id, user_blocked)) =
            self.token(credentials).await?
        else {
            return Ok(Err(Invalid::Unknown));
        };
        if name != "access_token" {
            return Ok(Err(Invalid::NotAccessToken));
        }
        if expires_at <= self.clock.now_secs() {
            return Ok(Err(Invalid::Expired));
        }
        if user_blocked {
            return Ok(Err(Invalid::UserBlocked));
        }
        let Some(details) = details
            .as_deref()
            .and_then(|d| serde_json::from_str::<Details>(d).ok())
        else {
            return Ok(Err(Invalid::Malformed));
        };
        let Ok(client_id) = Uuid::try_parse(&details.client_id) else {
            return Ok(Err(Invalid::Malformed));
        };
        let Some((client_type, is_blocked, priv_settings)) = self.client(client_id).await? else {
            return Ok(Err(Invalid::ClientMissing));
        };
        if is_blocked {
            return Ok(Err(Invalid::ClientBlocked));
        }
        // A client type without a name can match no policy but the default
        // deny; it is a damaged row, not a caller.
        let Some(client_type) = client_type.filter(|name| !name.is_empty()) else {
            return Ok(Err(Invalid::Malformed));
        };
        let Some(access) = PrivSettings::parse(priv_settings.as_deref()).and_then(|s| s.access())
        else {
            return Ok(Err(Invalid::Malformed));
        };
        let broker = if access == Access::Broker {
            match self.broker(credentials).await? {
                Ok(broker) => Some(broker),
                Err(invalid) => return Ok(Err(invalid)),
            }
        } else {
            None
        };
        let principal = Principal {
            client_id,
            client_type,
            scopes: Scopes::parse(details.scope.as_deref().unwrap_or_default()),
            user_id: user_id.as_deref().and_then(|id| Uuid::try_parse(id).ok()),
            broker,
        };
        Ok(Ok(Verified {
            principal: principal.into(),
            expires_at,
        }))
    }

    /// The access token's `expires_at`, `details`, user and whether that
    /// user is blocked.
    async fn token(&self, credentials: &Credentials) -> Result<Option<TokenRow>, DbError> {
        const TOKEN: Sql = Sql {
            // Any token by that value, the access token first: a refresh
            // token or a code is still refused, but the log can say so.
            postgres: "SELECT t.name, t.expires_at::int8, t.details::text, t.user_id::text, \
                       coalesce(u.is_blocked, false) \
                       FROM tokens t LEFT JOIN users u ON u.id = t.user_id \
                       WHERE t.value = $1 ORDER BY t.name = 'access_token' DESC LIMIT 1",
            sqlite: "SELECT t.name, t.expires_at, t.details, t.user_id, \
                     coalesce(u.is_blocked, 0) = 1 \
                     FROM tokens t LEFT JOIN users u ON u.id = t.user_id \
                     WHERE t.value = $1 ORDER BY t.name = 'access_token' DESC LIMIT 1",
        };
        let value = credentials.token.expose();
        self.db.fetch_optional(&TOKEN, &[Bind::Text(value)]).await
    }

    /// The client's type name, whether it is blocked, and its
    /// `priv_settings`.
    async fn client(&self, id: Uuid) -> Result<Option<ClientRow>, DbError> {
        const CLIENT: Sql = Sql {
            postgres: "SELECT ct.name, c.is_blocked, c.priv_settings::text \
                       FROM clients c JOIN client_types ct ON ct.id = c.client_type_id \
                       WHERE c.id = $1::uuid",
            sqlite: "SELECT ct.name, c.is_blocked = 1, c.priv_settings \
                     FROM clients c JOIN client_types ct ON ct.id = c.client_type_id \
                     WHERE c.id = $1",
        };
        let id = id.to_string();
        self.db.fetch_optional(&CLIENT, &[Bind::Text(&id)]).await
    }

    /// The MIS owning the connection whose secret is the api-key, when that
    /// MIS has a broker scope.
    async fn broker(&self, credentials: &Credentials) -> Result<Result<Broker, Invalid>, DbError> {
        // A blocked MIS brokers for nobody.
        const BROKER: Sql = Sql {
            postgres: "SELECT c.id::text, c.priv_settings::text FROM connections cn \
                       JOIN clients c ON c.id = cn.client_id \
                       WHERE cn.secret = $1 AND NOT c.is_blocked",
            sqlite: "SELECT c.id, c.priv_settings FROM connections cn \
                     JOIN clients c ON c.id = cn.client_id \
                     WHERE cn.secret = $1 AND c.is_blocked = 0",
        };
        let Some(api_key) = &credentials.api_key else {
            return Ok(Err(Invalid::ApiKeyMissing));
        };
        let row: Option<(String, Option<String>)> = self
            .db
            .fetch_optional(&BROKER, &[Bind::Text(api_key.expose())])
            .await?;
        let broker = row.and_then(|(client_id, settings)| {
            let scope = PrivSettings::parse(settings.as_deref())?.broker_scope?;
            Some(Broker {
                client_id: Uuid::try_parse(&client_id).ok(),
                scopes: Scopes::parse(&scope),
            })
        });
        Ok(broker.ok_or(Invalid::ApiKeyInvalid))
    }
}

impl TokenVerifier for DatabaseTokens {
    fn verify<'a>(&'a self, credentials: &'a Credentials) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            self.check(credentials)
                .await
                .map_err(|e| Unavailable(Box::new(e)))
        })
    }

    fn dependency(&self) -> Dependency {
        Dependency::Database
    }
}

/// The client type's name, whether the client is blocked, its
/// `priv_settings`.
type ClientRow = (Option<String>, bool, Option<String>);

/// `name`, `expires_at`, `details`, `user_id`, and whether the user is
/// blocked.
type TokenRow = (String, i64, Option<String>, Option<String>, bool);

/// The part of `tokens.details` the gateway reads.
#[derive(Deserialize)]
struct Details {
    client_id: String,
    #[serde(default)]
    scope: Option<String>,
}

/// The part of `clients.priv_settings` the gateway reads.
#[derive(Deserialize, Default)]
struct PrivSettings {
    #[serde(default)]
    access_type: Option<String>,
    #[serde(default)]
    broker_scope: Option<String>,
}

impl PrivSettings {
    /// `NULL` reads as no settings (no `access_type`, so refused); settings
    /// that are not a JSON object of this shape read as `None`, so that a
    /// damaged row fails the check instead of waiving the api-key.
    fn parse(json: Option<&str>) -> Option<Self> {
        match json {
            None => Some(Self::default()),
            Some(json) => serde_json::from_str::<Option<Self>>(json)
                .ok()
                .map(Option::unwrap_or_default),
        }
    }

    /// How the client reaches Mithril. Mithril itself refuses a client
    /// whose settings hold no `access_type`, and so does the gateway:
    /// only exactly `DIRECT` waives the api-key. `BROKER` is read in any
    /// case and spacing, so that a sloppy spelling still demands the
    /// api-key; anything else (no settings, `null`, `"DIRECT "`) is a
    /// damaged row (`None`), refused rather than guessed.
    fn access(&self) -> Option<Access> {
        match self.access_type.as_deref() {
            Some("DIRECT") => Some(Access::Direct),
            Some(kind) if kind.trim().eq_ignore_ascii_case("BROKER") => Some(Access::Broker),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Direct,
    Broker,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_direct_waives_the_api_key() {
        let access = |json: Option<&str>| PrivSettings::parse(json).and_then(|s| s.access());
        assert_eq!(
            access(Some(r#"{"access_type": "DIRECT"}"#)),
            Some(Access::Direct)
        );
        for broker in [
            r#"{"access_type": "BROKER"}"#,
            r#"{"access_type": " broker "}"#,
        ] {
            assert_eq!(access(Some(broker)), Some(Access::Broker), "{broker}");
        }
        // Mithril refuses clients without an access type; so does the gateway.
        for damaged in [
            None,
            Some("null"),
            Some("{}"),
            Some(r#"{"access_type": null}"#),
            Some(r#"{"access_type": "DIRECT "}"#),
            Some(r#"{"access_type": "direct"}"#),
            Some(r#"{"access_type": 1}"#),
            Some("[]"),
        ] {
            assert_eq!(access(damaged), None, "{damaged:?}");
        }
    }
}
