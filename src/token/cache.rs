//! Remembering token checks, within the limits that keep revocation working.
//!
//! The rules:
//! - A valid result lives no longer than the token's `expires_at` and no
//!   longer than `max_ttl`, so a revoked token (Mithril sets `expires_at` to
//!   now) stops working within `max_ttl` everywhere.
//! - An invalid result lives `negative_ttl`, so a flood of made-up tokens
//!   costs one lookup each per `negative_ttl`, not one per request.
//! - A source that cannot answer is never remembered: the next request asks
//!   again.
//! - Concurrent misses for the same credentials run one lookup; the others
//!   wait for it and share its answer, errors included.
//! - The key is a SHA-256 of the token and the api-key, never the token
//!   itself or a prefix of it.
//!
//! Freshness is checked on every hit against the injected [`Clock`]; moka's
//! own expiry only frees the memory.
//!
//! For metrics the cache counts hits (answered without asking the source,
//! a remembered invalid token or a wait on a concurrent lookup included)
//! and misses (the source was asked, or could not answer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::{AuthError, Credentials, Invalid, Principal, TokenVerifier, Unavailable, Verified};
use crate::clock::Clock;
use crate::gate::Dependency;

/// How token checks are cached.
#[derive(Debug, Clone)]
pub struct TokenCacheSettings {
    /// The longest a valid token is trusted without asking the source again:
    /// the bound on how long a revoked token keeps working.
    pub max_ttl: Duration,
    /// How long an invalid token is remembered as invalid. Short, because a
    /// token may become valid (just issued, replicated late).
    pub negative_ttl: Duration,
    /// Entries kept at most; least useful ones are evicted first.
    pub capacity: u64,
}

impl Default for TokenCacheSettings {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            capacity: 100_000,
        }
    }
}

type Key = [u8; 32];

#[derive(Clone)]
struct Entry {
    outcome: Result<Verified, Invalid>,
    stored_at_ms: i64,
    /// How long the entry may be used after it was stored.
    lives_for: Duration,
}

/// A successful token check and how it was answered.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub principal: Arc<Principal>,
    /// Whether the answer came from the cache rather than the source.
    pub cached: bool,
    /// How old the answer is, in milliseconds (0 when just asked).
    pub age_ms: i64,
}

/// The token source behind a cache.
pub struct TokenCache {
    source: Arc<dyn TokenVerifier>,
    entries: Cache<Key, Entry>,
    clock: Clock,
    settings: TokenCacheSettings,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenVerifier>, settings: TokenCacheSettings, clock: Clock) -> Self {
        let entries = Cache::builder()
            .name("tokens")
            .max_capacity(settings.capacity)
            .expire_after(EntryLifetime)
            .build();
        Self {
            source,
            entries,
            clock,
            settings,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Checks credentials, from the cache when a fresh answer is there.
    pub async fn verify(&self, credentials: &Credentials) -> Result<Lookup, AuthError> {
        let key = cache_key(credentials);
        let found = self.fresh(key, credentials).await;
        let counter = match found {
            Ok((_, false)) => &self.hits,
            Ok((_, true)) | Err(_) => &self.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (entry, asked) = found?;
        let verified = entry.outcome?;
        Ok(Lookup {
            principal: verified.principal,
            cached: !asked,
            age_ms: if asked {
                0
            } else {
                (self.clock.now_millis() - entry.stored_at_ms).max(0)
            },
        })
    }

    /// The system the source asks.
    pub fn dependency(&self) -> Dependency {
        self.source.dependency()
    }

    /// Checks answered without asking the source, since start-up.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Checks that asked the source, since start-up.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Entries held now. moka counts lazily: after [`Self::settle`] the
    /// count is exact. For metrics, not decisions.
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets moka finish its pending bookkeeping (insertions, evictions),
    /// so that [`Self::len`] counts every entry.
    pub async fn settle(&self) {
        self.entries.run_pending_tasks().await;
    }

    /// A fresh entry for `key` and whether the source was asked for it.
    async fn fresh(&self, key: Key, credentials: &Credentials) -> Result<(Entry, bool), AuthError> {
        let (entry, asked) = self.lookup(key, credentials).await?;
        if asked || self.is_fresh(&entry, self.clock.now_millis()) {
            return Ok((entry, asked));
        }
        // A stale hit: the clock has passed the token's expiry or the
        // cache's bound before moka's own timer noticed.
        self.entries.invalidate(&key).await;
        self.lookup(key, credentials).await
    }

    async fn lookup(
        &self,
        key: Key,
        credentials: &Credentials,
    ) -> Result<(Entry, bool), AuthError> {
        let mut asked = false;
        let ask = async {
            asked = true;
            let outcome = self.source.verify(credentials).await?;
            Ok::<_, Unavailable>(self.entry(outcome))
        };
        let entry = self
            .entries
            .try_get_with(key, ask)
            .await
            .map_err(AuthError::Unavailable)?;
        Ok((entry, asked))
    }

    fn entry(&self, outcome: Result<Verified, Invalid>) -> Entry {
        let stored_at_ms = self.clock.now_millis();
        let lives_for = match &outcome {
            Ok(verified) => {
                let until_expiry = verified.expires_at.saturating_mul(1000) - stored_at_ms;
                let until_expiry = Duration::from_millis(u64::try_from(until_expiry).unwrap_or(0));
                until_expiry.min(self.settings.max_ttl)
            }
            Err(_) => self.settings.negative_ttl,
        };
        Entry {
            outcome,
            stored_at_ms,
            lives_for,
        }
    }

    fn is_fresh(&self, entry: &Entry, now_ms: i64) -> bool {
        let age = u64::try_from(now_ms - entry.stored_at_ms).unwrap_or(0);
        let within_life = Duration::from_millis(age) < entry.lives_for;
        let token_alive = match &entry.outcome {
            Ok(verified) => verified.expires_at.saturating_mul(1000) > now_ms,
            Err(_) => true,
        };
        within_life && token_alive
    }
}

struct EntryLifetime;

impl Expiry<Key, Entry> for EntryLifetime {
    fn expire_after_create(&self, _key: &Key, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.lives_for)
    }
}

/// SHA-256 over both credentials, each length-prefixed so that no two
/// different pairs can hash the same input.
fn cache_key(credentials: &Credentials) -> Key {
    let mut hasher = Sha256::new();
    hasher.update(b"mithril-gate token cache v1\0");
    let token = credentials.token.expose().as_bytes();
    hasher.update((token.len() as u64).to_be_bytes());
    hasher.update(token);
    match &credentials.api_key {
        Some(key) => {
            let key = key.expose().as_bytes();
            hasher.update([1]);
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key);
        }
        None => hasher.update([0]),
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::secret::Secret;
    use crate::token::{BoxFuture, Scopes, Verdict};

    const NOW_MS: i64 = 1_700_000_000_000;

    /// A source answering from a script and counting how often it is asked.
    struct Scripted {
        calls: AtomicUsize,
        answer: Mutex<Box<dyn FnMut() -> Verdict + Send>>,
        delay: Duration,
    }

    impl Scripted {
        fn new(delay: Duration, answer: impl FnMut() -> Verdict + Send + 'static) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                answer: Mutex::new(Box::new(answer)),
                delay,
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl TokenVerifier for Scripted {
        fn verify<'a>(&'a self, _: &'a Credentials) -> BoxFuture<'a, Verdict> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                (self.answer.lock().unwrap())()
            })
        }

        fn dependency(&self) -> Dependency {
            Dependency::Database
        }
    }

    fn valid_until(expires_at: i64) -> Verdict {
        Ok(Ok(Verified {
            principal: Arc::new(Principal {
                client_id: Uuid::nil(),
                client_type: "MIS".into(),
                scopes: Scopes::parse("connection:read"),
                user_id: None,
                broker: None,
            }),
            expires_at,
        }))
    }

    fn credentials(token: &str, api_key: Option<&str>) -> Credentials {
        Credentials {
            token: Secret::new(token),
            api_key: api_key.map(Secret::new),
        }
    }

    fn cache(source: Arc<Scripted>, clock: &Clock) -> TokenCache {
        TokenCache::new(source, TokenCacheSettings::default(), clock.clone())
    }

    #[tokio::test]
    async fn a_valid_token_is_asked_once_then_served_from_cache() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::ZERO, || valid_until(NOW_MS / 1000 + 3600));
        let tokens = cache(source.clone(), &clock);
        let first = tokens.verify(&credentials("t", None)).await.unwrap();
        assert!(!first.cached);
        clock.advance(1_500);
        let second = tokens.verify(&credentials("t", None)).await.unwrap();
        assert!(second.cached);
        assert_eq!(second.age_ms, 1_500);
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test]
    async fn an_entry_is_not_used_past_max_ttl() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::ZERO, || valid_until(NOW_MS / 1000 + 3600));
        let tokens = cache(source.clone(), &clock);
        tokens.verify(&credentials("t", None)).await.unwrap();
        clock.advance(59_999);
        tokens.verify(&credentials("t", None)).await.unwrap();
        assert_eq!(source.calls(), 1);
        clock.advance(1);
        let again = tokens.verify(&credentials("t", None)).await.unwrap();
        assert!(!again.cached);
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test]
    async fn a_cached_token_is_refused_at_its_expiry() {
        let clock = Clock::manual(NOW_MS);
        let expires_at = NOW_MS / 1000 + 10;
        let source = Scripted::new(Duration::ZERO, {
            let clock = clock.clone();
            move || {
                if clock.now_secs() < expires_at {
                    valid_until(expires_at)
                } else {
                    Ok(Err(Invalid::Expired))
                }
            }
        });
        let tokens = cache(source.clone(), &clock);
        tokens.verify(&credentials("t", None)).await.unwrap();
        clock.set(expires_at * 1000 - 1);
        tokens.verify(&credentials("t", None)).await.unwrap();
        assert_eq!(source.calls(), 1);
        clock.set(expires_at * 1000);
        let refused = tokens.verify(&credentials("t", None)).await.unwrap_err();
        assert!(
            matches!(refused, AuthError::Invalid(Invalid::Expired)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn invalid_tokens_are_remembered_for_negative_ttl() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::ZERO, || Ok(Err(Invalid::Unknown)));
        let tokens = cache(source.clone(), &clock);
        for _ in 0..3 {
            let err = tokens.verify(&credentials("nope", None)).await.unwrap_err();
            assert!(matches!(err, AuthError::Invalid(Invalid::Unknown)));
        }
        assert_eq!(source.calls(), 1);
        clock.advance(5_000);
        tokens.verify(&credentials("nope", None)).await.unwrap_err();
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test]
    async fn an_outage_is_never_cached() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::ZERO, || Err(Unavailable("down".into())));
        let tokens = cache(source.clone(), &clock);
        for _ in 0..3 {
            let err = tokens.verify(&credentials("t", None)).await.unwrap_err();
            assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
        }
        assert_eq!(source.calls(), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_run_one_lookup() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::from_millis(50), || {
            valid_until(NOW_MS / 1000 + 3600)
        });
        let tokens = Arc::new(cache(source.clone(), &clock));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.verify(&credentials("t", None)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test]
    async fn the_api_key_is_part_of_the_key() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::ZERO, || valid_until(NOW_MS / 1000 + 3600));
        let tokens = cache(source.clone(), &clock);
        tokens.verify(&credentials("t", None)).await.unwrap();
        tokens.verify(&credentials("t", Some("k1"))).await.unwrap();
        tokens.verify(&credentials("t", Some("k2"))).await.unwrap();
        assert_eq!(source.calls(), 3);
    }

    #[tokio::test]
    async fn hits_and_misses_are_counted_whatever_the_answer() {
        let clock = Clock::manual(NOW_MS);
        let source = Scripted::new(Duration::ZERO, || valid_until(NOW_MS / 1000 + 3600));
        let tokens = cache(source.clone(), &clock);
        tokens.verify(&credentials("t", None)).await.unwrap();
        tokens.verify(&credentials("t", None)).await.unwrap();
        *source.answer.lock().unwrap() = Box::new(|| Ok(Err(Invalid::Unknown)));
        tokens.verify(&credentials("u", None)).await.unwrap_err();
        tokens.verify(&credentials("u", None)).await.unwrap_err();
        *source.answer.lock().unwrap() = Box::new(|| Err(Unavailable("down".into())));
        tokens.verify(&credentials("v", None)).await.unwrap_err();
        assert_eq!((tokens.hits(), tokens.misses()), (2, 3));
        tokens.settle().await;
        assert_eq!(tokens.len(), 2, "outages are not held");
    }

    #[test]
    fn keys_do_not_collide_across_the_boundary() {
        assert_ne!(
            cache_key(&credentials("ab", Some("c"))),
            cache_key(&credentials("a", Some("bc")))
        );
        assert_ne!(
            cache_key(&credentials("a", None)),
            cache_key(&credentials("a", Some("")))
        );
    }
}
