//! Sidecar mode end to end: a real gateway on port 0 in front of a fake
//! Mithril that records everything it receives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::fake_mithril::{Answer, FakeMithril, Recorded, Route};
use common::{Caller, Reply, SqliteFile, TestServer, World, assert_envelope, get, send};
use mithril_gate::clock::Clock;
use mithril_gate::config::{Cli, Command, ServeConfig};
use serde_json::Value;
use uuid::Uuid;

/// The configuration `mithril-gate serve` makes of `args`, with the shipped
/// policies.
fn config(args: &[&str]) -> ServeConfig {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let schema = root.join("schema").display().to_string();
    let policies = root.join("policies").display().to_string();
    let mut argv = vec!["mithril-gate", "serve", "--schema", &schema];
    argv.extend(["--policies", &policies]);
    argv.extend(args);
    match Cli::load_from(argv).unwrap().command {
        Command::Serve(args) => args.config().unwrap(),
        other => panic!("parsed {other:?}"),
    }
}

struct Sidecar {
    gate: TestServer,
    fake: FakeMithril,
    world: World,
}

impl Sidecar {
    async fn start(args: &[&str]) -> Self {
        Self::start_with_clock(args, Clock::system()).await
    }

    async fn start_with_clock(args: &[&str], clock: Clock) -> Self {
        let now = common::now();
        let world = World::new(now);
        let fake = FakeMithril::start(world.rows.clone(), now).await;
        let url = fake.url();
        let mut all = vec!["--upstream", url.as_str()];
        all.extend(args);
        let gate = common::start_with_clock(config(&all), clock).await;
        Self { gate, fake, world }
    }

    async fn get(&self, path: &str, headers: &[(String, String)]) -> Reply {
        let reply = get(self.gate.addr, path, headers).await;
        self.assert_clean(&reply);
        reply
    }

    /// What every answer must be: our envelope, no secret, no trace of
    /// where Mithril is, one framing.
    fn assert_clean(&self, reply: &Reply) {
        assert_envelope(reply, &self.world);
        let port = self.fake.addr.port().to_string();
        assert!(
            !reply.body.contains(&port),
            "names the port: {}",
            reply.body
        );
        assert!(!reply.body.contains("mithril.internal"), "{}", reply.body);
        assert!(reply.header("x-mithril-internal").is_none());
        assert!(reply.header("set-cookie").is_none());
        assert!(reply.header("transfer-encoding").is_none());
        let length: usize = reply.header("content-length").unwrap().parse().unwrap();
        assert_eq!(length, reply.body.len());
    }

    fn user(&self) -> Uuid {
        self.world.rows.users[0].id
    }
}

fn with(caller: &Caller, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers = caller.headers();
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    headers
}

fn only(requests: Vec<Recorded>) -> Recorded {
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().unwrap()
}

fn all_values(request: &Recorded, name: &str) -> Vec<String> {
    request
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_allowed_request_is_forwarded_with_the_verified_identity() {
    let sidecar = Sidecar::start(&[]).await;
    let mis = &sidecar.world.mis;
    let reply = sidecar
        .get(&mis.own_path(), &with(mis, &[("x-request-id", "req-42")]))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data = &reply.json()["data"];
    assert_eq!(data["id"], mis.connection_id.to_string());
    assert_eq!(data["client_id"], mis.client_id.to_string());
    assert_eq!(data["inserted_at"], "2024-01-15T09:30:00");
    assert_eq!(data["updated_at"], "2024-01-15T09:30:00");
    assert_eq!(data.as_object().unwrap().len(), 6, "{data}");

    let forwarded = only(sidecar.fake.requests_to(Route::Connection));
    assert_eq!(forwarded.method, "GET");
    assert_eq!(
        forwarded.path,
        format!(
            "/admin/clients/{}/connections/{}",
            mis.client_id, mis.connection_id
        )
    );
    assert_eq!(
        all_values(&forwarded, "authorization"),
        [format!("Bearer {}", mis.token)]
    );
    assert_eq!(all_values(&forwarded, "x-request-id"), ["req-42"]);
    assert_eq!(
        all_values(&forwarded, "x-consumer-id"),
        [sidecar.user().to_string()]
    );
    let metadata: Value =
        serde_json::from_str(forwarded.header("x-consumer-metadata").unwrap()).unwrap();
    assert_eq!(metadata["client_id"], mis.client_id.to_string());
    assert_eq!(metadata["client_type"], "MIS");
    assert_eq!(
        forwarded.header("x-consumer-scope"),
        Some("connection:read connection:write")
    );
    assert!(forwarded.header("x-mis-client-id").is_none());
    assert!(forwarded.header("api-key").is_none());
    assert_eq!(forwarded.header("x-forwarded-for"), Some("127.0.0.1"));

    // The verify call named the token as one path segment.
    let verify = only(sidecar.fake.requests_to(Route::Verify));
    assert_eq!(verify.path, format!("/admin/tokens/{}/verify", mis.token));
    assert_eq!(only(sidecar.fake.requests_to(Route::Details)).method, "GET");
}

#[tokio::test]
async fn a_broker_clients_api_key_and_mis_reach_mithril() {
    let sidecar = Sidecar::start(&[]).await;
    let world = &sidecar.world;
    let msp = &world.msp;
    let reply = sidecar.get(&msp.own_path(), &msp.headers()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let api_key = msp.api_key.as_deref().unwrap();
    let verify = only(sidecar.fake.requests_to(Route::Verify));
    assert_eq!(verify.header("api-key"), Some(api_key));
    let forwarded = only(sidecar.fake.requests_to(Route::Connection));
    assert_eq!(all_values(&forwarded, "api-key"), [api_key]);
    assert_eq!(
        forwarded.header("x-mis-client-id"),
        Some(world.mis.client_id.to_string().as_str())
    );
    // The token's scopes, bounded by the MIS's broker scope.
    assert_eq!(
        forwarded.header("x-consumer-scope"),
        Some("connection:read")
    );

    // Without its api-key Mithril refuses the token, and so does the gate.
    let mut bare = msp.clone();
    bare.api_key = None;
    let reply = sidecar.get(&msp.own_path(), &bare.headers()).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(sidecar.fake.count(Route::Connection), 1);
}

#[tokio::test]
async fn nothing_reaches_mithril_for_unrouted_or_unauthenticated_requests() {
    let sidecar = Sidecar::start(&[]).await;
    let mis = &sidecar.world.mis;
    let path = mis.own_path();
    for target in [
        format!("{path}/"),
        path.replacen("/api/", "/api//", 1),
        path.replacen("/connections/", "/connections/../connections/", 1),
        format!(
            "/admin/clients/{}/connections/{}",
            mis.client_id, mis.connection_id
        ),
        "/api/clients/not-a-uuid/connections/x".to_owned(),
    ] {
        let reply = get(sidecar.gate.addr, &target, &mis.headers()).await;
        assert_eq!(reply.status, 404, "{target}");
    }
    let reply = send(sidecar.gate.addr, "DELETE", &path, &mis.headers()).await;
    assert_eq!(reply.status, 405);
    let reply = sidecar.get(&path, &[]).await;
    assert_eq!(reply.status, 401);
    let reply = sidecar
        .get(&path, &[("authorization".into(), "Bearer a b".into())])
        .await;
    assert_eq!(reply.status, 401);
    assert!(
        sidecar.fake.requests().is_empty(),
        "{:#?}",
        sidecar.fake.requests()
    );
}

#[tokio::test]
async fn nothing_is_forwarded_for_refused_tokens_or_denied_requests() {
    let sidecar = Sidecar::start(&[]).await;
    let world = &sidecar.world;
    let bearer = |token: &str| vec![("authorization".to_owned(), format!("Bearer {token}"))];
    for (case, path, headers, status) in [
        (
            "unknown token",
            world.mis.own_path(),
            bearer("0123abcd"),
            401,
        ),
        (
            "expired token",
            world.expired.own_path(),
            world.expired.headers(),
            401,
        ),
        (
            "refresh token",
            world.refresh.own_path(),
            world.refresh.headers(),
            401,
        ),
        (
            "blocked client",
            world.blocked_client.own_path(),
            world.blocked_client.headers(),
            401,
        ),
        (
            "another client's",
            world.pharmacy.own_path(),
            world.mis.headers(),
            403,
        ),
        (
            "no connection:read",
            world.read_all.own_path(),
            world.read_all.headers(),
            403,
        ),
        (
            "broker scope lacks it",
            world.msp_narrow_broker.own_path(),
            world.msp_narrow_broker.headers(),
            403,
        ),
        (
            "unknown type",
            world.nhs_admin.own_path(),
            world.nhs_admin.headers(),
            403,
        ),
    ] {
        let reply = sidecar.get(&path, &headers).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
    }
    assert_eq!(sidecar.fake.count(Route::Connection), 0);
    // The tokens were asked about; nothing else was.
    assert!(sidecar.fake.count(Route::Verify) >= 4);
}

#[tokio::test]
async fn hop_by_hop_and_spoofed_headers_never_reach_mithril() {
    let spoofed = [
        ("connection", "x-private-hop"),
        ("x-private-hop", "hop-value"),
        ("keep-alive", "timeout=99"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic c3Bvb2Y="),
        ("x-consumer-id", "spoofed-user"),
        ("x-consumer-metadata", "{\"client_id\":\"spoofed\"}"),
        ("x-consumer-scope", "connection:delete"),
        ("x-mis-client-id", "spoofed-mis"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-host", "spoofed.example"),
        ("forwarded", "for=203.0.113.9"),
        ("cookie", "session=caller"),
        ("user-agent", "mis-client/2.1"),
    ];
    for trusted in [false, true] {
        let args: &[&str] = if trusted {
            &["--trusted-proxies", "10.0.0.0/8,127.0.0.1"]
        } else {
            &[]
        };
        let sidecar = Sidecar::start(args).await;
        let mis = &sidecar.world.mis;
        let reply = sidecar.get(&mis.own_path(), &with(mis, &spoofed)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let forwarded = only(sidecar.fake.requests_to(Route::Connection));
        let everything = format!("{:?}", forwarded.headers);
        for value in [
            "hop-value",
            "timeout=99",
            "trailers",
            "c3Bvb2Y",
            "spoofed-",
            "session",
        ] {
            assert!(
                !everything.contains(value),
                "{value} reached Mithril: {everything}"
            );
        }
        for name in [
            "connection",
            "x-private-hop",
            "te",
            "cookie",
            "x-mis-client-id",
        ] {
            assert!(forwarded.header(name).is_none(), "{name}");
        }
        assert_eq!(
            all_values(&forwarded, "x-consumer-id"),
            [sidecar.user().to_string()]
        );
        assert_eq!(
            forwarded.header("x-consumer-scope"),
            Some("connection:read connection:write")
        );
        assert_eq!(forwarded.header("user-agent"), Some("mis-client/2.1"));
        if trusted {
            assert_eq!(
                forwarded.header("x-forwarded-for"),
                Some("203.0.113.9, 127.0.0.1")
            );
            assert_eq!(
                forwarded.header("x-forwarded-host"),
                Some("spoofed.example")
            );
        } else {
            assert_eq!(forwarded.header("x-forwarded-for"), Some("127.0.0.1"));
            assert!(forwarded.header("x-forwarded-host").is_none());
            assert!(forwarded.header("forwarded").is_none());
        }
    }
}

#[tokio::test]
async fn mithrils_answers_are_re_rendered_never_passed_through() {
    let sidecar = Sidecar::start(&["--upstream-timeout", "300ms"]).await;
    let mis = &sidecar.world.mis;
    let path = mis.own_path();
    let another = Uuid::new_v4();
    let missing_fields = format!(r#"{{"data": {{"id": "{}"}}}}"#, mis.connection_id);
    let other_connection = serde_json::json!({"data": {
        "id": another, "client_id": mis.client_id, "consumer_id": mis.client_id,
        "redirect_uri": "https://x.test", "inserted_at": "2024-01-15T09:30:00",
        "updated_at": "2024-01-15T09:30:00"}})
    .to_string();
    let cases = [
        (Answer::Gzip, 200),
        (Answer::Deflate, 200),
        (Answer::Encoded("br"), 502),
        (Answer::Status(404), 404),
        (Answer::Status(401), 502),
        (Answer::Status(403), 502),
        (Answer::Status(500), 502),
        (Answer::Status(503), 502),
        (Answer::Status(302), 502),
        (Answer::Body("<html>oops</html>".into()), 502),
        (Answer::Body(missing_fields), 502),
        (Answer::Body(other_connection), 502),
        (Answer::Slow(std::time::Duration::from_secs(2)), 504),
    ];
    for (answer, status) in cases {
        sidecar.fake.set(Route::Connection, answer.clone());
        let reply = sidecar.get(&path, &mis.headers()).await;
        assert_eq!(reply.status, status, "{answer:?}: {}", reply.body);
        let expected_message = match status {
            502 => Some("upstream service failed"),
            504 => Some("upstream service timed out"),
            _ => None,
        };
        if let Some(message) = expected_message {
            assert_eq!(reply.error_message().as_deref(), Some(message));
            assert_eq!(reply.error_type(), "internal_error");
        }
        if status == 200 {
            assert_eq!(reply.json()["data"]["id"], mis.connection_id.to_string());
        }
    }
    // HEAD answers like GET, from a forwarded GET.
    sidecar.fake.set(Route::Connection, Answer::Real);
    sidecar.fake.forget();
    let head = send(sidecar.gate.addr, "HEAD", &path, &mis.headers()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        only(sidecar.fake.requests_to(Route::Connection)).method,
        "GET"
    );
}

#[tokio::test]
async fn a_refused_upstream_is_502_and_a_sidecar_may_check_tokens_in_the_database() {
    let world = World::new(common::now());
    let file = SqliteFile::create(&world.rows).await;
    // Nothing listens on port 1.
    let config = config(&[
        "--upstream",
        "http://127.0.0.1:1",
        "--token-source",
        "database",
        "--database-url",
        file.url.expose(),
    ]);
    let gate = common::start(config).await;
    let mis = &world.mis;
    let reply = get(gate.addr, &mis.own_path(), &mis.headers()).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_envelope(&reply, &world);
    assert!(!reply.body.contains("127.0.0.1:1"), "{}", reply.body);
    assert!(
        !reply.body.to_lowercase().contains("refused"),
        "{}",
        reply.body
    );
    // Denied before any forwarding: still 403.
    let reply = get(gate.addr, &world.pharmacy.own_path(), &mis.headers()).await;
    assert_eq!(reply.status, 403);
    // Readiness asks both.
    let ready = get(gate.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["reason"], "upstream does not answer");
}

#[tokio::test]
async fn one_verify_call_for_many_concurrent_requests_with_one_new_token() {
    let sidecar = Arc::new(Sidecar::start(&[]).await);
    sidecar.fake.set(
        Route::Verify,
        Answer::Slow(std::time::Duration::from_millis(300)),
    );
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let sidecar = sidecar.clone();
            tokio::spawn(async move {
                let mis = &sidecar.world.mis;
                sidecar.get(&mis.own_path(), &mis.headers()).await.status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(sidecar.fake.count(Route::Verify), 1);
    assert_eq!(sidecar.fake.count(Route::Details), 1);
    assert_eq!(sidecar.fake.count(Route::Connection), 24);
}

#[tokio::test]
async fn verify_outages_are_503_never_401_and_never_cached() {
    let sidecar = Sidecar::start(&["--upstream-timeout", "300ms"]).await;
    let mis = &sidecar.world.mis;
    let path = mis.own_path();
    let malformed = [
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"data": {"expires_at": 99999999999, "details": {}}}"#.to_owned(),
        r#"{"data": {"expires_at": "soon", "details": {"client_id": "x"}}}"#.to_owned(),
    ];
    let mut answers: Vec<Answer> = vec![
        Answer::Status(500),
        Answer::Status(502),
        Answer::Status(403),
        Answer::Status(429),
        Answer::Slow(std::time::Duration::from_secs(2)),
        Answer::Encoded("br"),
    ];
    answers.extend(malformed.into_iter().map(Answer::Body));
    let asked = answers.len() * 2;
    for answer in answers {
        sidecar.fake.set(Route::Verify, answer.clone());
        for _ in 0..2 {
            let reply = sidecar.get(&path, &mis.headers()).await;
            assert_eq!(reply.status, 503, "{answer:?}: {}", reply.body);
            assert!(reply.header("www-authenticate").is_none());
            assert!(!reply.body.contains(&mis.token));
        }
    }
    // Every one was asked twice: nothing was remembered.
    assert_eq!(sidecar.fake.count(Route::Verify), asked);
    // The client type's outage is an outage too.
    sidecar.fake.set(Route::Verify, Answer::Real);
    sidecar.fake.set(Route::Details, Answer::Status(500));
    assert_eq!(sidecar.get(&path, &mis.headers()).await.status, 503);
    sidecar.fake.set(Route::Details, Answer::Real);
    assert_eq!(sidecar.get(&path, &mis.headers()).await.status, 200);
    assert_eq!(sidecar.fake.count(Route::Connection), 1);
}

#[tokio::test]
async fn an_expired_cached_token_is_refused_at_its_expiry() {
    let now = common::now();
    let clock = Clock::manual(now * 1000);
    let sidecar = Sidecar::start_with_clock(&["--token-cache-ttl", "2h"], clock.clone()).await;
    let mis = &sidecar.world.mis;
    // The world's tokens expire an hour after `now`.
    let expires_at = now + 3600;
    assert_eq!(
        sidecar.get(&mis.own_path(), &mis.headers()).await.status,
        200
    );
    clock.set(expires_at * 1000 - 1);
    assert_eq!(
        sidecar.get(&mis.own_path(), &mis.headers()).await.status,
        200
    );
    assert_eq!(sidecar.fake.count(Route::Verify), 1);
    clock.set(expires_at * 1000);
    // Mithril's own clock still says valid; ours says expired, and wins.
    let reply = sidecar.get(&mis.own_path(), &mis.headers()).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(sidecar.fake.count(Route::Verify), 2);
    assert_eq!(sidecar.fake.count(Route::Connection), 2);
}

#[tokio::test]
async fn the_client_type_is_cached_for_its_own_ttl() {
    let now = common::now();
    let clock = Clock::manual(now * 1000);
    let sidecar = Sidecar::start_with_clock(
        &[
            "--token-cache-ttl",
            "1s",
            "--token-cache-negative-ttl",
            "1s",
            "--client-type-cache-ttl",
            "10s",
        ],
        clock.clone(),
    )
    .await;
    let mis = &sidecar.world.mis;
    for step in 0..3 {
        // Each step outlives the token cache, not the client type cache.
        clock.advance(if step == 0 { 0 } else { 2_000 });
        assert_eq!(
            sidecar.get(&mis.own_path(), &mis.headers()).await.status,
            200
        );
    }
    assert_eq!(sidecar.fake.count(Route::Verify), 3);
    assert_eq!(sidecar.fake.count(Route::Details), 1);
    clock.advance(10_000);
    assert_eq!(
        sidecar.get(&mis.own_path(), &mis.headers()).await.status,
        200
    );
    assert_eq!(sidecar.fake.count(Route::Details), 2);
}

#[tokio::test]
async fn readiness_follows_mithril_without_a_database() {
    let sidecar = Sidecar::start(&[]).await;
    let ready = get(sidecar.gate.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let Sidecar { gate, fake, .. } = sidecar;
    fake.stop().await;
    let ready = get(gate.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["reason"], "upstream does not answer");
}

#[tokio::test]
async fn tokens_mithril_cannot_read_are_401_not_an_outage() {
    let sidecar = Sidecar::start(&[]).await;
    let path = sidecar.world.mis.own_path();
    let bearer = |token: String| vec![("authorization".to_owned(), format!("Bearer {token}"))];
    for status in [400, 414, 422, 431] {
        sidecar.fake.set(Route::Verify, Answer::Status(status));
        sidecar.fake.forget();
        let token = bearer(format!("unreadable{status}"));
        let reply = sidecar.get(&path, &token).await;
        assert_eq!(reply.status, 401, "verify {status}: {}", reply.body);
        // Remembered briefly as invalid, like any refused token.
        assert_eq!(sidecar.get(&path, &token).await.status, 401);
        assert_eq!(sidecar.fake.count(Route::Verify), 1, "verify {status}");
    }
    // A made-up token too long for any request line never reaches Mithril.
    sidecar.fake.set(Route::Verify, Answer::Real);
    sidecar.fake.forget();
    let reply = sidecar.get(&path, &bearer("a".repeat(4000))).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(sidecar.fake.count(Route::Verify), 0);
}
