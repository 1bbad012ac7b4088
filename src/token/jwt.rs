//! Verifying signed JWTs locally, against a JSON Web Key Set.
//!
//! The rules:
//! - Keys come from a JWKS file and, optionally, a JWKS URL. The URL is
//!   fetched at start and again when a token names a `kid` no key has, at
//!   most once per refresh interval, so made-up `kid`s cannot turn into a
//!   flood of fetches.
//! - A key's algorithm comes from the key (`alg`, or for EC and Ed25519
//!   keys their curve; an RSA key without `alg` is RS256), never from the
//!   token. A token whose header names another algorithm is refused, which
//!   also refuses `none` and an HS256 token "signed" with an RSA public
//!   key. Symmetric (`oct`) keys are not accepted at all.
//! - `exp` is required, `nbf` is checked when present, both against the
//!   injected clock with the configured leeway (0 by default). `iss` and
//!   `aud` are required and checked when configured; a token that names an
//!   audience is refused when none is configured.
//! - Claims `client_id` (a UUID), `client_type`, and `scope` (space
//!   separated) or `scp` (a list), optionally `user_id`, give the same
//!   principal as Mithril's tokens. An `api-key` is not looked at: a JWT
//!   carries no broker.
//!
//! Fetching the key set failing is an outage (503) for tokens whose key is
//! unknown, never a bad token.
//!
//! Known shortcoming: keys are only fetched for unknown `kid`s, so a key
//! removed from the URL's set stays trusted until a refresh happens for
//! another reason or the service restarts.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{
    BoxFuture, Credentials, Invalid, Principal, Scopes, TokenVerifier, Unavailable, Verdict,
    Verified,
};
use crate::clock::Clock;
use crate::gate::Dependency;
use crate::upstream::{HttpClient, HttpSettings};

/// How JWTs are checked.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// A JWKS file, read at start.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start and for unknown `kid`s.
    pub jwks_url: Option<Uri>,
    /// The least time between two fetches of the URL.
    pub refresh_interval: Duration,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Timeouts for fetching the URL.
    pub http: HttpSettings,
}

/// Why a key set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a JSON Web Key Set: {0}")]
    Json(String),
    #[error("key {kid}: {problem}")]
    Key { kid: String, problem: String },
    #[error("the key set has no signature verification key")]
    Empty,
    #[error("fetching the key set failed: {0}")]
    Fetch(String),
}

/// A key the gateway verifies with, and the one algorithm it allows.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// Checks JWTs against a key set.
pub struct JwtTokens {
    /// From the file; fixed for the process's life.
    file: Vec<Arc<Key>>,
    /// From the URL; replaced whole by each successful fetch.
    remote: ArcSwap<Vec<Arc<Key>>>,
    fetcher: Option<Fetcher>,
    validation: Validation,
    leeway_secs: i64,
    clock: Clock,
}

/// Where and how often the URL is fetched.
struct Fetcher {
    url: Uri,
    http: HttpClient,
    interval: Duration,
    /// The last fetch: when it started (clock milliseconds) and whether it
    /// failed. Held across a fetch, so concurrent misses fetch once.
    last: Mutex<Option<(i64, bool)>>,
}

impl JwtTokens {
    /// Reads the file and fetches the URL once. A file that cannot be used
    /// stops start-up; a URL that cannot be fetched is logged and fetched
    /// again when a token needs it.
    pub async fn new(settings: &JwtSettings, clock: Clock) -> Result<Self, KeySetError> {
        let file = match &settings.jwks_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| KeySetError::Read {
                    path: path.clone(),
                    source,
                })?;
                let keys = keys(&text, Strictness::Strict)?;
                if keys.is_empty() {
                    return Err(KeySetError::Empty);
                }
                keys
            }
            None => Vec::new(),
        };
        let fetcher = match &settings.jwks_url {
            Some(url) => Some(Fetcher {
                url: url.clone(),
                http: HttpClient::new(settings.http)
                    .map_err(|e| KeySetError::Fetch(format!("cannot set up TLS: {e}")))?,
                interval: settings.refresh_interval,
                last: Mutex::new(None),
            }),
            None => None,
        };
        let tokens = Self {
            file,
            remote: ArcSwap::from_pointee(Vec::new()),
            fetcher,
            validation: validation(settings),
            leeway_secs: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
            clock,
        };
        if let Err(error) = tokens.refresh().await {
            tracing::warn!(%error, "JWKS URL not fetched at start; trying again when needed");
        }
        Ok(tokens)
    }

    async fn check(&self, credentials: &Credentials) -> Verdict {
        let token = credentials.token.expose();
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(Err(Invalid::Unknown));
        };
        let Some(key) = self.key(header.kid.as_deref()).await? else {
            return Ok(Err(Invalid::Signature));
        };
        // The key decides the algorithm; the header only has to agree.
        if header.alg != key.algorithm {
            return Ok(Err(Invalid::Signature));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let claims = match jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation) {
            Ok(data) => data.claims,
            Err(error) => return Ok(Err(refusal(error.kind()))),
        };
        Ok(self.principal(claims))
    }

    fn principal(&self, claims: Claims) -> Result<Verified, Invalid> {
        let now = self.clock.now_secs();
        if claims.exp.saturating_add(self.leeway_secs) <= now {
            return Err(Invalid::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs))
        {
            return Err(Invalid::Claims);
        }
        let client_id = Uuid::try_parse(&claims.client_id).map_err(|_| Invalid::Claims)?;
        if claims.client_type.trim().is_empty() {
            return Err(Invalid::Claims);
        }
        let scopes = match (claims.scope, claims.scp) {
            (Some(scope), None) => Scopes::parse(&scope),
            // One scope per entry: an entry with a space would read as
            // several scopes to Mithril, which splits on spaces, though the
            // policies saw one.
            (None, Some(list)) if list.iter().any(|s| s.contains(char::is_whitespace)) => {
                return Err(Invalid::Claims);
            }
            (None, Some(list)) => list.into_iter().collect(),
            (None, None) => Scopes::default(),
            // Two answers to one question: refuse rather than pick one.
            (Some(_), Some(_)) => return Err(Invalid::Claims),
        };
        let user_id = claims
            .user_id
            .map(|id| Uuid::try_parse(&id))
            .transpose()
            .map_err(|_| Invalid::Claims)?;
        Ok(Verified {
            principal: Arc::new(Principal {
                client_id,
                client_type: claims.client_type,
                scopes,
                user_id,
                broker: None,
            }),
            expires_at: claims.exp,
        })
    }

    /// The key for `kid`, fetching the URL's set when no key has it and
    /// the interval allows. A token without `kid` is checked against the
    /// only key, when there is exactly one.
    async fn key(&self, kid: Option<&str>) -> Result<Option<Arc<Key>>, Unavailable> {
        if let Some(key) = self.find(kid) {
            return Ok(Some(key));
        }
        let Some(fetcher) = &self.fetcher else {
            return Ok(None);
        };
        let mut last = fetcher.last.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.find(kid) {
            return Ok(Some(key));
        }
        let now = self.clock.now_millis();
        if let Some((at, failed)) = *last {
            let since = u64::try_from(now - at).unwrap_or(0);
            if Duration::from_millis(since) < fetcher.interval {
                return if failed {
                    Err(Unavailable(
                        "JWKS URL failed recently; not asked again yet".into(),
                    ))
                } else {
                    Ok(None)
                };
            }
        }
        let fetched = self.fetch(fetcher).await;
        *last = Some((now, fetched.is_err()));
        drop(last);
        fetched.map_err(|error| Unavailable(Box::new(error)))?;
        Ok(self.find(kid))
    }

    /// Fetches the URL's key set now, whatever the interval.
    async fn refresh(&self) -> Result<(), KeySetError> {
        let Some(fetcher) = &self.fetcher else {
            return Ok(());
        };
        let mut last = fetcher.last.lock().await;
        let fetched = self.fetch(fetcher).await;
        *last = Some((self.clock.now_millis(), fetched.is_err()));
        fetched
    }

    async fn fetch(&self, fetcher: &Fetcher) -> Result<(), KeySetError> {
        let reply = fetcher
            .http
            .get(fetcher.url.clone(), HeaderMap::new())
            .await
            .map_err(|e| KeySetError::Fetch(e.to_string()))?;
        if !reply.status.is_success() {
            return Err(KeySetError::Fetch(format!("answered {}", reply.status)));
        }
        let text = std::str::from_utf8(&reply.body)
            .map_err(|_| KeySetError::Json("the body is not UTF-8".into()))?;
        let keys = keys(text, Strictness::SkipUnusable)?;
        tracing::info!(keys = keys.len(), "JWKS URL fetched");
        self.remote.store(Arc::new(keys));
        Ok(())
    }

    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        let remote = self.remote.load();
        let mut all = self.file.iter().chain(remote.iter());
        match kid {
            Some(kid) => all.find(|key| key.kid.as_deref() == Some(kid)).cloned(),
            None => {
                let only = all.next()?;
                all.next().is_none().then(|| only.clone())
            }
        }
    }
}

impl TokenVerifier for JwtTokens {
    fn verify<'a>(&'a self, credentials: &'a Credentials) -> BoxFuture<'a, Verdict> {
        Box::pin(self.check(credentials))
    }

    fn dependency(&self) -> Dependency {
        Dependency::Jwks
    }
}

/// What jsonwebtoken checks: signature, required claims, `iss`, `aud`.
/// Time is checked by [`JwtTokens::principal`] against the injected
/// clock.
fn validation(settings: &JwtSettings) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    let mut required: HashSet<String> = HashSet::from(["exp".to_owned()]);
    if let Some(issuer) = &settings.issuer {
        validation.set_issuer(&[issuer]);
        required.insert("iss".into());
    }
    if let Some(audience) = &settings.audience {
        validation.set_audience(&[audience]);
        required.insert("aud".into());
    }
    validation.required_spec_claims = required;
    validation
}

fn refusal(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::UnsupportedAlgorithm => Invalid::Signature,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => Invalid::Unknown,
        _ => Invalid::Claims,
    }
}

/// The claims read. `exp` and `nbf` are NumericDates: integers, or
/// numbers with a fraction, which is dropped.
#[derive(Deserialize)]
struct Claims {
    #[serde(deserialize_with = "numeric_date")]
    exp: i64,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    nbf: Option<i64>,
    client_id: String,
    client_type: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default)]
    user_id: Option<String>,
}

fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.floor() as i64)
        })
        .ok_or_else(|| serde::de::Error::custom("not a NumericDate"))
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    numeric_date(deserializer).map(Some)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// A key that cannot be used is an error: the operator's own file.
    Strict,
    /// A key that cannot be used is logged and left out: an identity
    /// provider's set may hold keys for other purposes.
    SkipUnusable,
}

fn keys(text: &str, strictness: Strictness) -> Result<Vec<Arc<Key>>, KeySetError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| KeySetError::Json(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        match key(jwk) {
            Ok(Some(key)) => keys.push(Arc::new(key)),
            Ok(None) => {}
            Err(error) if strictness == Strictness::SkipUnusable => {
                tracing::warn!(%error, "JWKS key left out");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(keys)
}

/// The key and its algorithm; `None` for a key not meant for verifying
/// signatures.
fn key(jwk: &Jwk) -> Result<Option<Key>, KeySetError> {
    let kid = jwk.common.key_id.clone();
    let problem = |problem: &str| KeySetError::Key {
        kid: kid.clone().unwrap_or_else(|| "without kid".into()),
        problem: problem.into(),
    };
    let for_signatures = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|usage| *usage == PublicKeyUse::Signature);
    let for_verifying = jwk
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    if !for_signatures || !for_verifying {
        return Ok(None);
    }
    let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (_, AlgorithmParameters::OctetKey(_)) => {
            return Err(problem("symmetric keys are not accepted"));
        }
        (Some(alg), _) => Algorithm::try_from(alg).map_err(|_| problem("unsupported `alg`"))?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(ec)) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err(problem("unsupported curve")),
        },
        (None, AlgorithmParameters::OctetKeyPair(okp)) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        (None, _) => return Err(problem("unsupported key type")),
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| problem(&e.to_string()))?;
    let family = algorithm.family();
    let curve_fits = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(okp), _) => okp.curve == EllipticCurve::Ed25519,
        _ => true,
    };
    if family == AlgorithmFamily::Hmac || decoding.family() != family || !curve_fits {
        return Err(problem("`alg` does not fit the key"));
    }
    Ok(Some(Key {
        kid,
        algorithm,
        decoding,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(json: &str) -> Result<Option<Key>, KeySetError> {
        let set: JwkSet = serde_json::from_str(json).unwrap();
        key(&set.keys[0])
    }

    const EC: &str = r#""kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM""#;
    const RSA: &str = r#""kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB""#;

    #[test]
    fn the_algorithm_comes_from_the_key() {
        let ec = first(&format!(r#"{{"keys":[{{{EC},"kid":"e"}}]}}"#))
            .unwrap()
            .unwrap();
        assert_eq!(ec.algorithm, Algorithm::ES256);
        let rsa = first(&format!(r#"{{"keys":[{{{RSA}}}]}}"#))
            .unwrap()
            .unwrap();
        assert_eq!(rsa.algorithm, Algorithm::RS256);
        let pss = first(&format!(r#"{{"keys":[{{{RSA},"alg":"PS256"}}]}}"#))
            .unwrap()
            .unwrap();
        assert_eq!(pss.algorithm, Algorithm::PS256);
    }

    #[test]
    fn keys_that_do_not_fit_their_alg_or_are_symmetric_are_refused() {
        for json in [
            format!(r#"{{"keys":[{{{RSA},"alg":"ES256"}}]}}"#),
            format!(r#"{{"keys":[{{{RSA},"alg":"HS256"}}]}}"#),
            format!(r#"{{"keys":[{{{EC},"alg":"ES384"}}]}}"#),
            format!(r#"{{"keys":[{{{EC},"alg":"RS256"}}]}}"#),
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned(),
        ] {
            assert!(first(&json).is_err(), "{json}");
        }
    }

    #[test]
    fn encryption_keys_are_left_out() {
        let json = format!(r#"{{"keys":[{{{RSA},"use":"enc"}}]}}"#);
        assert!(first(&json).unwrap().is_none());
        assert!(keys(&json, Strictness::Strict).unwrap().is_empty());
    }
}
