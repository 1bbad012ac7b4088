//! `--token-source jwt`: signed tokens checked against a JWKS file and
//! URL, in front of a fake Mithril that records what reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::fake_mithril::{FakeMithril, Route};
use common::{Reply, TestServer, World, assert_envelope, get};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mithril_gate::clock::Clock;
use mithril_gate::config::{Cli, Command, ServeConfig};
use serde_json::{Value, json};

const RSA_A: &str = include_str!("keys/rsa-a.pem");
const RSA_A_PUBLIC: &str = include_str!("keys/rsa-a.pub.pem");
const RSA_B: &str = include_str!("keys/rsa-b.pem");
const EC: &str = include_str!("keys/ec-p256.pem");
const ED: &str = include_str!("keys/ed25519.pem");

fn encoding(name: &str) -> (EncodingKey, Algorithm) {
    match name {
        "rsa-a" => (
            EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap(),
            Algorithm::RS256,
        ),
        "rsa-b" => (
            EncodingKey::from_rsa_pem(RSA_B.as_bytes()).unwrap(),
            Algorithm::RS256,
        ),
        "ec" => (
            EncodingKey::from_ec_pem(EC.as_bytes()).unwrap(),
            Algorithm::ES256,
        ),
        "ed" => (
            EncodingKey::from_ed_pem(ED.as_bytes()).unwrap(),
            Algorithm::EdDSA,
        ),
        other => panic!("no key {other}"),
    }
}

/// A JWKS with the public halves of `names`, each under its name as `kid`.
fn jwks(names: &[&str]) -> String {
    let keys = names
        .iter()
        .map(|name| {
            let (key, alg) = encoding(name);
            let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
            jwk.common.key_id = Some((*name).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// A token signed by key `name` with its own algorithm.
fn sign(name: &str, claims: &Value) -> String {
    let (key, alg) = encoding(name);
    sign_as(name, alg, &key, claims)
}

fn sign_as(kid: &str, alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

struct Jwt {
    gate: TestServer,
    fake: FakeMithril,
    world: World,
    clock: Clock,
    now: i64,
    _dir: tempfile::TempDir,
}

impl Jwt {
    /// A sidecar checking JWTs with `file_keys` in its JWKS file, and
    /// `args`; the fake serves `url_keys` at `/jwks`.
    async fn start(file_keys: &[&str], url_keys: Option<&[&str]>, args: &[&str]) -> Self {
        let now = common::now();
        let world = World::new(now);
        let fake = FakeMithril::start(world.rows.clone(), now).await;
        fake.serve_jwks(url_keys.map(jwks));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks(file_keys)).unwrap();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let (schema, policies) = (root.join("schema"), root.join("policies"));
        let (upstream, jwks_url) = (fake.url(), format!("{}/jwks", fake.url()));
        let mut argv: Vec<&str> = vec!["mithril-gate", "serve", "--token-source", "jwt"];
        argv.extend(["--upstream", &upstream, "--jwt-jwks-file"]);
        let file = file.display().to_string();
        let schema = schema.display().to_string();
        let policies = policies.display().to_string();
        argv.extend([file.as_str(), "--schema", &schema, "--policies", &policies]);
        if url_keys.is_some() {
            argv.extend(["--jwt-jwks-url", &jwks_url]);
        }
        argv.extend(args);
        let config: ServeConfig = match Cli::load_from(argv).unwrap().command {
            Command::Serve(args) => args.config().unwrap(),
            other => panic!("parsed {other:?}"),
        };
        let clock = Clock::manual(now * 1000);
        let gate = common::start_with_clock(config, clock.clone()).await;
        Self {
            gate,
            fake,
            world,
            clock,
            now,
            _dir: dir,
        }
    }

    /// Claims of the world's MIS reading its own connection.
    fn claims(&self) -> Value {
        json!({
            "client_id": self.world.mis.client_id,
            "client_type": "MIS",
            "scope": "connection:read connection:write",
            "user_id": self.world.rows.users[0].id,
            "exp": self.now + 600,
        })
    }

    fn with(&self, changes: Value) -> Value {
        let mut claims = self.claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    async fn get(&self, token: &str) -> Reply {
        let headers = [("authorization".to_owned(), format!("Bearer {token}"))];
        let reply = get(self.gate.addr, &self.world.mis.own_path(), &headers).await;
        assert_envelope(&reply, &self.world);
        reply
    }

    async fn status(&self, token: &str) -> u16 {
        self.get(token).await.status.as_u16()
    }
}

#[tokio::test]
async fn tokens_signed_by_a_trusted_key_are_accepted() {
    let jwt = Jwt::start(&["rsa-a", "ec", "ed"], None, &[]).await;
    for key in ["rsa-a", "ec", "ed"] {
        let reply = jwt.get(&sign(key, &jwt.claims())).await;
        assert_eq!(reply.status, 200, "{key}: {}", reply.body);
    }
    let forwarded = jwt.fake.requests_to(Route::Connection);
    assert_eq!(forwarded.len(), 3);
    assert_eq!(
        forwarded[0].header("x-consumer-id"),
        Some(jwt.world.rows.users[0].id.to_string().as_str())
    );
    assert_eq!(
        forwarded[0].header("x-consumer-scope"),
        Some("connection:read connection:write")
    );
    // A JWT is checked locally: Mithril is asked for the connection only.
    assert_eq!(jwt.fake.count(Route::Verify), 0);
    assert_eq!(jwt.fake.count(Route::Details), 0);
}

#[tokio::test]
async fn the_algorithm_comes_from_the_key_never_the_token() {
    let jwt = Jwt::start(&["rsa-a", "ec"], None, &[]).await;
    let claims = jwt.claims();
    let encode = |header: Value| base64url(header.to_string().as_bytes());
    let body = base64url(claims.to_string().as_bytes());
    let none = format!("{}.{body}.", encode(json!({"alg": "none", "kid": "rsa-a"})));
    let none_signed = format!(
        "{}.{body}.c2ln",
        encode(json!({"alg": "none", "kid": "rsa-a"}))
    );
    let public_as_secret = EncodingKey::from_secret(RSA_A_PUBLIC.as_bytes()).unwrap();
    let hs256 = sign_as("rsa-a", Algorithm::HS256, &public_as_secret, &claims);
    let (rsa_a, _) = encoding("rsa-a");
    let rs384 = sign_as("rsa-a", Algorithm::RS384, &rsa_a, &claims);
    let ps256 = sign_as("rsa-a", Algorithm::PS256, &rsa_a, &claims);
    let (ec, _) = encoding("ec");
    let ec_as_rsa = sign_as("rsa-a", Algorithm::ES256, &ec, &claims);
    let (rsa_b, _) = encoding("rsa-b");
    let wrong_key = sign_as("rsa-a", Algorithm::RS256, &rsa_b, &claims);
    let mut tampered = sign("rsa-a", &claims);
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    for (case, token) in [
        ("alg none", none),
        ("alg none with a signature", none_signed),
        ("HS256 keyed with the RSA public key", hs256),
        ("RS384 for an RS256 key", rs384),
        ("PS256 for an RS256 key", ps256),
        ("ES256 under an RSA kid", ec_as_rsa),
        ("another key under the kid", wrong_key),
        ("a changed signature", tampered),
    ] {
        let reply = jwt.get(&token).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
        assert_eq!(reply.error_type(), "access_denied");
    }
    assert!(jwt.fake.requests().is_empty());
}

#[tokio::test]
async fn time_claims_are_checked_against_the_clock() {
    let jwt = Jwt::start(&["rsa-a"], None, &[]).await;
    let now = jwt.now;
    assert_eq!(
        jwt.status(&sign("rsa-a", &jwt.with(json!({"exp": null}))))
            .await,
        401
    );
    assert_eq!(
        jwt.status(&sign("rsa-a", &jwt.with(json!({"exp": "later"}))))
            .await,
        401
    );
    assert_eq!(
        jwt.status(&sign("rsa-a", &jwt.with(json!({"exp": now}))))
            .await,
        401
    );
    assert_eq!(
        jwt.status(&sign("rsa-a", &jwt.with(json!({"exp": now + 1}))))
            .await,
        200
    );
    let early = sign("rsa-a", &jwt.with(json!({"nbf": now + 10})));
    assert_eq!(jwt.status(&early).await, 401);
    assert_eq!(
        jwt.status(&sign("rsa-a", &jwt.with(json!({"nbf": now}))))
            .await,
        200
    );
    assert_eq!(jwt.fake.count(Route::Connection), 2);

    let lenient = Jwt::start(&["rsa-a"], None, &["--jwt-leeway", "30s"]).await;
    let now = lenient.now;
    let early = sign("rsa-a", &lenient.with(json!({"nbf": now + 10})));
    assert_eq!(lenient.status(&early).await, 200);
    let late = sign("rsa-a", &lenient.with(json!({"exp": now - 10})));
    assert_eq!(lenient.status(&late).await, 200);
}

#[tokio::test]
async fn a_cached_token_is_refused_at_its_exp() {
    let jwt = Jwt::start(&["rsa-a"], None, &["--token-cache-ttl", "1h"]).await;
    let exp = jwt.now + 100;
    let token = sign("rsa-a", &jwt.with(json!({"exp": exp})));
    assert_eq!(jwt.status(&token).await, 200);
    jwt.clock.set(exp * 1000 - 1);
    assert_eq!(jwt.status(&token).await, 200);
    jwt.clock.set(exp * 1000);
    assert_eq!(jwt.status(&token).await, 401);
    assert_eq!(jwt.fake.count(Route::Connection), 2);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let args = [
        "--jwt-issuer",
        "https://idp.test",
        "--jwt-audience",
        "mithril-gate",
    ];
    let jwt = Jwt::start(&["rsa-a"], None, &args).await;
    let good = json!({"iss": "https://idp.test", "aud": "mithril-gate"});
    assert_eq!(jwt.status(&sign("rsa-a", &jwt.with(good))).await, 200);
    for claims in [
        json!({"aud": "mithril-gate"}),
        json!({"iss": "https://idp.test"}),
        json!({"iss": "https://other.test", "aud": "mithril-gate"}),
        json!({"iss": "https://idp.test", "aud": "someone-else"}),
    ] {
        let token = sign("rsa-a", &jwt.with(claims.clone()));
        assert_eq!(jwt.status(&token).await, 401, "{claims}");
    }
    // Without a configured audience, a token meant for someone is refused.
    let open = Jwt::start(&["rsa-a"], None, &[]).await;
    let addressed = sign("rsa-a", &open.with(json!({"aud": "someone-else"})));
    assert_eq!(open.status(&addressed).await, 401);
}

#[tokio::test]
async fn claims_give_the_same_principal_as_mithrils_tokens() {
    let jwt = Jwt::start(&["rsa-a"], None, &[]).await;
    let scp = jwt.with(json!({"scope": null, "scp": ["connection:read"]}));
    assert_eq!(jwt.status(&sign("rsa-a", &scp)).await, 200);
    let without_read = jwt.with(json!({"scope": "connection:read_all"}));
    let reply = jwt.get(&sign("rsa-a", &without_read)).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_message().as_deref(), Some("Invalid scopes"));
    let pharmacy =
        jwt.with(json!({"client_id": jwt.world.pharmacy.client_id, "client_type": "PHARMACY"}));
    assert_eq!(jwt.status(&sign("rsa-a", &pharmacy)).await, 403);
    let admin = jwt
        .with(json!({"client_id": jwt.world.pharmacy.client_id, "client_type": "Mithril ADMIN"}));
    assert_eq!(jwt.status(&sign("rsa-a", &admin)).await, 200);
    for broken in [
        json!({"client_id": "not-a-uuid"}),
        json!({"client_id": null}),
        json!({"client_type": null}),
        json!({"client_type": ""}),
        json!({"scp": ["connection:read"]}),
        // One entry that Mithril would read as two scopes.
        json!({"scope": null, "scp": ["connection:read", "admin:all connection:write"]}),
        json!({"scope": null, "scp": ["connection:read\tadmin:all"]}),
        json!({"user_id": "someone"}),
    ] {
        let token = sign("rsa-a", &jwt.with(broken.clone()));
        assert_eq!(jwt.status(&token).await, 401, "{broken}");
    }
    assert_eq!(jwt.fake.count(Route::Connection), 2);
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_url_at_most_once_per_interval() {
    let jwt = Jwt::start(
        &["rsa-a"],
        Some(&["ec"]),
        &["--jwt-jwks-refresh-interval", "60s"],
    )
    .await;
    // Fetched once at start; its keys work beside the file's.
    assert_eq!(jwt.fake.count(Route::Jwks), 1);
    assert_eq!(jwt.status(&sign("ec", &jwt.claims())).await, 200);
    assert_eq!(jwt.status(&sign("rsa-a", &jwt.claims())).await, 200);

    // A new key appears at the URL: not looked for again within 60 s.
    jwt.fake.serve_jwks(Some(jwks(&["ec", "rsa-b"])));
    let rotated = sign("rsa-b", &jwt.claims());
    assert_eq!(jwt.status(&rotated).await, 401);
    assert_eq!(jwt.fake.count(Route::Jwks), 1);
    jwt.clock.advance(60_000);
    assert_eq!(jwt.status(&rotated).await, 200);
    assert_eq!(jwt.fake.count(Route::Jwks), 2);
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        let (key, _) = encoding("rsa-b");
        let token = sign_as(kid, Algorithm::RS256, &key, &jwt.claims());
        assert_eq!(jwt.status(&token).await, 401, "{kid}");
    }
    assert_eq!(jwt.fake.count(Route::Jwks), 2);

    // The URL failing is an outage for unknown keys, not a bad token, and
    // is not asked again within the interval either.
    jwt.fake.serve_jwks(None);
    jwt.clock.advance(60_000);
    let (key, _) = encoding("rsa-b");
    let unknown = sign_as("rotated-later", Algorithm::RS256, &key, &jwt.claims());
    for _ in 0..2 {
        let reply = jwt.get(&unknown).await;
        assert_eq!(reply.status, 503, "{}", reply.body);
    }
    assert_eq!(jwt.fake.count(Route::Jwks), 3);
    // Known keys keep working through the outage.
    let known = sign("ec", &jwt.with(json!({"exp": jwt.now + 601})));
    assert_eq!(jwt.status(&known).await, 200);
}
