//! What the gateway counts: `GET /metrics` on the admin listener, in
//! Prometheus' text format (0.0.4).
//!
//! Per-request series are counted from each request's [`Record`], in one
//! place ([`Metrics::observe`]). What other parts own (the token cache, the
//! policy store) is read from them at each scrape ([`Scrape`]), so it cannot
//! drift from what they hold.
//!
//! Every series starts with `mithril_gate_`:
//!
//! | series | labels |
//! |---|---|
//! | `requests_total` | `route` (the template, or `unmatched`), `status` |
//! | `decisions_total` | `decision` (`allow`, `deny`), `policy`: one count per determining policy's `@id`, `""` for a deny no policy determined |
//! | `step_duration_seconds` (histogram) | `step`: `verify`, `decide`, `fetch`, `render`; only steps that ran |
//! | `dependency_errors_total` | `dependency` (`database`, `upstream`, `jwks`), `kind` (`unavailable`, `timeout`, `bad_gateway`, `malformed`) |
//! | `token_cache_hits_total`, `token_cache_misses_total`, `token_cache_entries` | |
//! | `policy_reloads_total`, `policy_reload_failures_total` | |
//! | `policy_generation_info` (always 1) | `generation` |

use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::gate::Record;

/// The `Content-Type` of an answer to a scrape.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const PREFIX: &str = "mithril_gate";

/// Upper bounds of the step histograms, in seconds: from a cached token
/// check (tens of microseconds) to a dependency's timeout (seconds).
const STEP_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    dependency: &'static str,
    kind: &'static str,
}

type StepHistograms = Family<StepLabels, Histogram, fn() -> Histogram>;

/// The per-request series.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    steps: StepHistograms,
    errors: Family<ErrorLabels, Counter>,
}

/// What is read from the token cache and the policy store at a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_entries: u64,
    pub policy_reloads: u64,
    pub policy_reload_failures: u64,
    /// The generation serving now.
    pub generation: &'a str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::default();
        let decisions = Family::default();
        let steps: StepHistograms = Family::new_with_constructor(|| Histogram::new(STEP_BUCKETS));
        let errors = Family::default();
        registry.register("requests", "Requests answered", requests.clone());
        registry.register(
            "decisions",
            "Policy decisions, by determining policy",
            decisions.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Time spent in each step of a request",
            Unit::Seconds,
            steps.clone(),
        );
        registry.register(
            "dependency_errors",
            "Requests ended by a dependency's failure",
            errors.clone(),
        );
        Self {
            registry,
            requests,
            decisions,
            steps,
            errors,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, record: &Record) {
        let route = record.route.unwrap_or("unmatched");
        let status = record.status;
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        if let Some(allowed) = record.allowed {
            let decision = if allowed { "allow" } else { "deny" };
            let count = |policy: &str| {
                let policy = policy.to_owned();
                self.decisions
                    .get_or_create(&DecisionLabels { decision, policy })
                    .inc();
            };
            if record.policies.is_empty() {
                count("");
            }
            record.policies.iter().for_each(|policy| count(policy));
        }
        for (step, took) in record.steps() {
            self.steps
                .get_or_create(&StepLabels { step })
                .observe(took.as_secs_f64());
        }
        if let Some(failure) = record.failure {
            let labels = ErrorLabels {
                dependency: failure.dependency.as_str(),
                kind: failure.kind.as_str(),
            };
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// Every series, in Prometheus' text format.
    pub fn render(&self, scrape: &Scrape<'_>) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        prometheus_text::encode(&mut text, &scrape.registry())?;
        Ok(text)
    }
}

impl Scrape<'_> {
    /// The values read at this scrape, as series of their own.
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        let counter = |value: u64| ConstCounter::new(value);
        registry.register(
            "token_cache_hits",
            "Token checks answered from the cache",
            counter(self.cache_hits),
        );
        registry.register(
            "token_cache_misses",
            "Token checks that asked the token source",
            counter(self.cache_misses),
        );
        registry.register(
            "token_cache_entries",
            "Token checks held in the cache",
            ConstGauge::new(i64::try_from(self.cache_entries).unwrap_or(i64::MAX)),
        );
        registry.register(
            "policy_reloads",
            "Policy generations swapped in since start-up",
            counter(self.policy_reloads),
        );
        registry.register(
            "policy_reload_failures",
            "Policy reloads refused since start-up",
            counter(self.policy_reload_failures),
        );
        registry.register(
            "policy_generation",
            "The policy generation serving now",
            Info::new([("generation", self.generation.to_owned())]),
        );
        registry
    }
}
