//! `/metrics` on the admin listener, scraped after known requests, and the
//! `Server-Timing` header.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fake_mithril::{Answer, FakeMithril, Route};
use common::{
    Backend, Caller, Reply, Setup, World, connection_path, get, send, shipped_policies, start,
    unreachable_postgres,
};
use mithril_gate::config::{Cli, Command, ServeConfig};
use uuid::Uuid;

const ROUTE: &str = "/api/clients/{id}/connections/{connection_id}";

/// Every sample of a scrape, by series: `name{label="value",...}`.
fn scrape(reply: &Reply) -> HashMap<String, f64> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    reply
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn assert_samples(samples: &HashMap<String, f64>, expected: &[(String, f64)]) {
    for (series, value) in expected {
        assert_eq!(samples.get(series), Some(value), "{series} in {samples:#?}");
    }
}

fn requests(route: &str, status: u16) -> String {
    format!("mithril_gate_requests_total{{route=\"{route}\",status=\"{status}\"}}")
}

fn decisions(decision: &str, policy: &str) -> String {
    format!("mithril_gate_decisions_total{{decision=\"{decision}\",policy=\"{policy}\"}}")
}

fn steps(step: &str) -> String {
    format!("mithril_gate_step_duration_seconds_count{{step=\"{step}\"}}")
}

/// The status of `caller` asking for its own connection.
async fn own(setup: &Setup, caller: &Caller) -> u16 {
    let reply = setup.get(&caller.own_path(), &caller.headers()).await;
    reply.status.as_u16()
}

#[tokio::test]
async fn a_scrape_counts_the_requests_made() {
    let setup = Setup::start(Backend::Postgres).await;
    let world = &setup.world;
    let pharmacy_path = world.pharmacy.own_path();
    let missing = connection_path(world.mis.client_id, Uuid::new_v4());

    assert_eq!(own(&setup, &world.mis).await, 200); // cache miss
    assert_eq!(own(&setup, &world.mis).await, 200); // hit
    let denied = setup.get(&pharmacy_path, &world.mis.headers()).await;
    assert_eq!(denied.status, 403); // hit; no policy permits
    assert_eq!(own(&setup, &world.read_all).await, 403); // miss; the scope forbid
    assert_eq!(setup.get(&world.mis.own_path(), &[]).await.status, 401);
    assert_eq!(own(&setup, &world.expired).await, 401); // miss
    assert_eq!(own(&setup, &world.expired).await, 401); // hit: remembered invalid
    assert_eq!(setup.get("/nope", &world.mis.headers()).await.status, 404);
    let post = send(setup.server.addr, "POST", &world.mis.own_path(), &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(setup.get(&missing, &world.mis.headers()).await.status, 404); // hit

    let ready = get(setup.server.admin_addr, "/readyz", &[]).await.json();
    let generation = ready["policy_generation"].as_str().unwrap().to_owned();
    let samples = scrape(&get(setup.server.admin_addr, "/metrics", &[]).await);
    assert_samples(
        &samples,
        &[
            (requests(ROUTE, 200), 2.0),
            (requests(ROUTE, 403), 2.0),
            (requests(ROUTE, 401), 3.0),
            (requests(ROUTE, 404), 1.0),
            (requests(ROUTE, 405), 1.0),
            (requests("unmatched", 404), 1.0),
            (decisions("allow", "client-reads-own-connections"), 3.0),
            (decisions("deny", ""), 1.0),
            (decisions("deny", "connection-read-needs-scope"), 1.0),
            (steps("verify"), 8.0),
            (steps("decide"), 5.0),
            (steps("fetch"), 3.0),
            (steps("render"), 10.0),
            ("mithril_gate_token_cache_hits_total".into(), 4.0),
            ("mithril_gate_token_cache_misses_total".into(), 3.0),
            ("mithril_gate_token_cache_entries".into(), 3.0),
            ("mithril_gate_policy_reloads_total".into(), 0.0),
            ("mithril_gate_policy_reload_failures_total".into(), 0.0),
            (
                format!("mithril_gate_policy_generation_info{{generation=\"{generation}\"}}"),
                1.0,
            ),
        ],
    );
    let series = |prefix: &str| samples.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(series("mithril_gate_requests_total"), 6, "{samples:#?}");
    assert_eq!(series("mithril_gate_decisions_total"), 3, "{samples:#?}");
    assert_eq!(series("mithril_gate_dependency_errors_total"), 0);
    // The metrics are not on the public port.
    assert_eq!(get(setup.server.addr, "/metrics", &[]).await.status, 404);
}

#[tokio::test]
async fn a_database_outage_is_counted_by_dependency_and_kind() {
    let mut config = ServeConfig::with_paths(shipped_policies());
    unreachable_postgres(&mut config);
    let server = start(config).await;
    let path = connection_path(Uuid::new_v4(), Uuid::new_v4());
    let bearer = vec![("authorization".to_owned(), "Bearer 0123abcd".to_owned())];
    for _ in 0..2 {
        assert_eq!(get(server.addr, &path, &bearer).await.status, 503);
    }
    let samples = scrape(&get(server.admin_addr, "/metrics", &[]).await);
    assert_samples(
        &samples,
        &[
            (requests(ROUTE, 503), 2.0),
            (
                "mithril_gate_dependency_errors_total{dependency=\"database\",kind=\"unavailable\"}"
                    .into(),
                2.0,
            ),
            ("mithril_gate_token_cache_misses_total".into(), 2.0),
            ("mithril_gate_token_cache_entries".into(), 0.0),
            (steps("verify"), 2.0),
        ],
    );
    // Nothing after the token check ran.
    assert!(!samples.contains_key(&steps("decide")), "{samples:#?}");
}

/// A sidecar of the Mithril at `upstream`, with the shipped policies.
fn sidecar(upstream: &str) -> ServeConfig {
    let args = ["mithril-gate", "serve", "--upstream", upstream];
    let mut config = match Cli::load_from(args.iter().chain(&["--upstream-timeout", "300ms"])) {
        Ok(Cli {
            command: Command::Serve(args),
            ..
        }) => args.config().unwrap(),
        other => panic!("parsed {other:?}"),
    };
    config.paths = shipped_policies();
    config
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind() {
    let now = common::now();
    let world = World::new(now);
    let fake = FakeMithril::start(world.rows.clone(), now).await;
    let upstream = fake.url();
    let server = start(sidecar(&upstream)).await;
    let ask = |caller: &Caller| {
        let (path, headers) = (caller.own_path(), caller.headers());
        async move { get(server.addr, &path, &headers).await }
    };

    fake.set(Route::Connection, Answer::Status(500));
    assert_eq!(ask(&world.mis).await.status, 502);
    fake.set(Route::Connection, Answer::Slow(Duration::from_secs(2)));
    assert_eq!(ask(&world.mis).await.status, 504);
    fake.set(Route::Verify, Answer::Status(500));
    assert_eq!(ask(&world.pharmacy).await.status, 503);

    let samples = scrape(&get(server.admin_addr, "/metrics", &[]).await);
    let errors = |kind: &str| {
        let series = format!(
            "mithril_gate_dependency_errors_total{{dependency=\"upstream\",kind=\"{kind}\"}}"
        );
        (series, 1.0)
    };
    assert_samples(
        &samples,
        &[
            errors("bad_gateway"),
            errors("timeout"),
            errors("unavailable"),
        ],
    );
    let series = |prefix: &str| samples.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(
        series("mithril_gate_dependency_errors_total"),
        3,
        "{samples:#?}"
    );
}

/// `verify;dur=0.125, ...`: the step names, each duration in milliseconds
/// with three decimals.
fn timed_steps(reply: &Reply) -> Vec<String> {
    let header = reply
        .header("server-timing")
        .expect("a Server-Timing header");
    header
        .split(", ")
        .map(|metric| {
            let (name, duration) = metric.split_once(";dur=").unwrap();
            let (ms, fraction) = duration.split_once('.').unwrap();
            assert!(ms.parse::<u64>().is_ok() && fraction.len() == 3, "{header}");
            name.to_owned()
        })
        .collect()
}

#[tokio::test]
async fn server_timing_is_off_by_default_and_names_the_steps_that_ran() {
    let plain = Setup::start(Backend::Sqlite).await;
    let reply = plain
        .get(&plain.world.mis.own_path(), &plain.world.mis.headers())
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("server-timing").is_none());

    let timed = Setup::start_with(Backend::Sqlite, |config| {
        config.reporting.server_timing = true;
    })
    .await;
    let mis = &timed.world.mis;
    let allowed = timed.get(&mis.own_path(), &mis.headers()).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        timed_steps(&allowed),
        ["verify", "decide", "fetch", "render"]
    );
    let denied = timed
        .get(&timed.world.pharmacy.own_path(), &mis.headers())
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(timed_steps(&denied), ["verify", "decide", "render"]);
    let anonymous = timed.get(&mis.own_path(), &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(timed_steps(&anonymous), ["verify", "render"]);
    let unrouted = timed.get("/nope", &[]).await;
    assert_eq!(timed_steps(&unrouted), ["render"]);
}
