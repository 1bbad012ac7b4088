//! The request path without the network: deciding, a token-cache hit, and
//! a whole request answered from the embedded SQLite demo.
//!
//! Run with `cargo bench --bench request_path`; criterion prints each
//! bench's time and keeps its reports under `target/criterion/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Empty;
use mithril_gate::app::App;
use mithril_gate::clock::Clock;
use mithril_gate::config::ServeConfig;
use mithril_gate::db::demo;
use mithril_gate::gate::Dependency;
use mithril_gate::policy::PolicyPaths;
use mithril_gate::route::Route;
use mithril_gate::secret::Secret;
use mithril_gate::token::{
    BoxFuture, Credentials, Principal, Scopes, TokenCache, TokenCacheSettings, TokenVerifier,
    Verdict, Verified,
};
use uuid::Uuid;

fn shipped() -> PolicyPaths {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    PolicyPaths {
        schema_dir: root.join("schema"),
        policies_dir: root.join("policies"),
    }
}

fn principal(client_type: &str, scopes: &str) -> Principal {
    Principal {
        client_id: demo::MIS_CLIENT,
        client_type: client_type.into(),
        scopes: Scopes::parse(scopes),
        user_id: None,
        broker: None,
    }
}

fn decide(c: &mut Criterion) {
    let policies = shipped().load().unwrap().policies;
    let own = Route::ConnectionDetails {
        client_id: demo::MIS_CLIENT,
        connection_id: Uuid::new_v4(),
    };
    let other = Route::ConnectionDetails {
        client_id: Uuid::new_v4(),
        connection_id: Uuid::new_v4(),
    };
    let mis = principal("MIS", "connection:read connection:write");
    let scopeless = principal("MIS", "connection:write");
    let mut group = c.benchmark_group("decide");
    group.bench_function("allow own connection", |b| {
        b.iter(|| policies.decide(black_box(&mis), black_box(&own)).unwrap())
    });
    group.bench_function("deny another client", |b| {
        b.iter(|| policies.decide(black_box(&mis), black_box(&other)).unwrap())
    });
    group.bench_function("deny missing scope", |b| {
        b.iter(|| {
            policies
                .decide(black_box(&scopeless), black_box(&own))
                .unwrap()
        })
    });
    group.finish();
}

/// A source that always accepts; the bench measures the cache around it.
struct Accept;

impl TokenVerifier for Accept {
    fn verify<'a>(&'a self, _: &'a Credentials) -> BoxFuture<'a, Verdict> {
        Box::pin(async {
            Ok(Ok(Verified {
                principal: Arc::new(principal("MIS", "connection:read")),
                expires_at: i64::from(i32::MAX),
            }))
        })
    }

    fn dependency(&self) -> Dependency {
        Dependency::Database
    }
}

fn token_cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cache = TokenCache::new(
        Arc::new(Accept),
        TokenCacheSettings::default(),
        Clock::system(),
    );
    let credentials = Credentials {
        token: Secret::new(demo::MIS_TOKEN),
        api_key: None,
    };
    runtime.block_on(cache.verify(&credentials)).unwrap();
    c.bench_function("token cache hit", |b| {
        b.to_async(&runtime)
            .iter(|| async { cache.verify(black_box(&credentials)).await.unwrap() })
    });
}

fn whole_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime
        .block_on(App::build(
            &ServeConfig::with_paths(shipped()),
            Clock::system(),
        ))
        .unwrap();
    let gate = app.gate.clone();
    let path = format!(
        "/api/clients/{}/connections/{}",
        demo::MIS_CLIENT,
        demo::MIS_CONNECTION
    );
    let request = || {
        Request::get(path.as_str())
            .header("host", "gate.example")
            .header("authorization", format!("Bearer {}", demo::MIS_TOKEN))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // Warm the token cache: the bench measures the steady state.
    let first = runtime.block_on(gate.handle(request()));
    assert_eq!(first.status(), 200);
    c.bench_function("whole request, cached token, sqlite", |b| {
        b.to_async(&runtime)
            .iter(|| async { gate.handle(request()).await })
    });
    drop(app);
}

criterion_group!(benches, decide, token_cache, whole_request);
criterion_main!(benches);
