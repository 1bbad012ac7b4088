//! One request, step by step: route, authenticate, authorize, fetch,
//! render.
//!
//! Each step either hands the next one a typed value or ends the request
//! with a [`Reject`]. Nothing later looks back at the raw request: the
//! route's typed ids are what the policies decide about and what is
//! fetched.
//!
//! Every request leaves a [`Record`], read in one place after the answer:
//! it is counted in [`Metrics`], logged as the request's decision record,
//! and, when configured, its step timings are answered in `Server-Timing`.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, Request, Response};
use uuid::Uuid;

use crate::connection::{Connection, ConnectionSource, Fetch, FetchError};
use crate::envelope::{self, Body, Meta, Reject};
use crate::metrics::{Metrics, Scrape};
use crate::policy::{DecideError, PolicyStore};
use crate::request_id::RequestId;
use crate::route::{self, Route, RouteError};
use crate::token::{self, AuthError, Credentials, Lookup, Principal, TokenCache};

/// The service: everything a request needs, shared by all connections.
pub struct Gate {
    policies: Arc<PolicyStore>,
    tokens: TokenCache,
    connections: Arc<dyn ConnectionSource>,
    metrics: Metrics,
    reporting: Reporting,
}

/// What the gate tells about each request besides answering it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reporting {
    /// Log allowed requests at info, for an audit trail; at debug
    /// otherwise, because they are the bulk of the traffic.
    pub log_allows: bool,
    /// Answer each request's step timings in a `Server-Timing` header. Off
    /// by default: it tells callers how long the gateway's checks take.
    pub server_timing: bool,
}

/// A system the gateway depends on, as logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Mithril's database.
    Database,
    /// Mithril itself, as a sidecar's upstream.
    Upstream,
    /// The JWKS URL of the JWT token source.
    Jwks,
}

/// How a dependency failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// It could not answer: down, unreachable, out of pooled connections
    /// (503).
    Unavailable,
    /// It did not answer in time (504).
    Timeout,
    /// Mithril answered with something that cannot be passed on, or
    /// refused the connection (502).
    BadGateway,
    /// It holds a record that is not what it should be (500).
    Malformed,
}

/// The dependency's failure that ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub dependency: Dependency,
    pub kind: FailureKind,
}

/// The TCP peer of the connection a request came on. The server puts it in
/// the request's extensions; a request without it (a test calling
/// [`Gate::handle`] directly) has no known peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Time spent in each step of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Reading credentials and verifying them (cache or source).
    pub verify: Duration,
    /// Building the Cedar request and deciding.
    pub decide: Duration,
    /// Reading the connection from the database or Mithril.
    pub fetch: Duration,
    /// Writing the envelope.
    pub render: Duration,
}

/// What the gateway saw and decided for one request, filled in step by
/// step: the request log, decision records, metrics and the policy
/// fixture runner all read it. It holds only what the gateway derived from
/// the request, never a header value or a credential.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The request id answered in `x-request-id` and `meta.request_id`.
    pub request_id: String,
    /// The route's template, when the path matched one.
    pub route: Option<&'static str>,
    /// The action put to the policies (the scope the route needs).
    pub action: Option<&'static str>,
    /// The client from the path: whose connection was asked for.
    pub owner_id: Option<Uuid>,
    /// The connection asked for.
    pub connection_id: Option<Uuid>,
    /// The verified caller (client id, client type as Mithril spells it,
    /// scopes), once the token checked out.
    pub principal: Option<Arc<Principal>>,
    /// Whether the token check came from the cache.
    pub cached: Option<bool>,
    /// How old the cached token check was, in milliseconds.
    pub cache_age_ms: Option<i64>,
    /// Whether the policies allowed, once they were asked.
    pub allowed: Option<bool>,
    /// The `@id`s of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (the request was then not allowed).
    pub policy_errors: Vec<String>,
    /// The policy generation that decided.
    pub generation: Option<String>,
    pub timings: Timings,
    /// Why the caller was not authenticated, for a 401 (or a 503 from the
    /// token source).
    pub auth_reason: Option<&'static str>,
    /// For a 5xx: what failed inside. Logged, never sent.
    pub cause: Option<String>,
    /// The dependency's failure that ended the request, if one did.
    pub failure: Option<Failure>,
    /// The status answered.
    pub status: u16,
}

impl Gate {
    pub fn new(
        policies: Arc<PolicyStore>,
        tokens: TokenCache,
        connections: Arc<dyn ConnectionSource>,
    ) -> Self {
        Self {
            policies,
            tokens,
            connections,
            metrics: Metrics::new(),
            reporting: Reporting::default(),
        }
    }

    /// The gate, telling about requests as `reporting` says.
    pub fn with_reporting(self, reporting: Reporting) -> Self {
        Self { reporting, ..self }
    }

    /// The policies, for reloading and for readiness.
    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// Answers one request, counts and logs it. The body is never read:
    /// no route takes one.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let started = Instant::now();
        let (mut response, record) = self.answer(&request).await;
        self.metrics.observe(&record);
        if self.reporting.server_timing
            && let Some(timing) = record.server_timing()
        {
            response.headers_mut().insert("server-timing", timing);
        }
        record.log(request.method(), started, self.reporting.log_allows);
        response
    }

    /// Every metric, in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, fmt::Error> {
        self.tokens.settle().await;
        let policies = self.policies.current();
        self.metrics.render(&Scrape {
            cache_hits: self.tokens.hits(),
            cache_misses: self.tokens.misses(),
            cache_entries: self.tokens.len(),
            policy_reloads: self.policies.reloads(),
            policy_reload_failures: self.policies.failures(),
            generation: policies.generation(),
        })
    }

    /// Answers one request without logging or counting it, with the
    /// record of how it was answered.
    pub async fn answer<B>(&self, request: &Request<B>) -> (Response<Body>, Record) {
        let meta = meta(request);
        let mut record = Record {
            request_id: meta.request_id.as_str().to_owned(),
            ..Record::default()
        };

        let outcome = self.steps(request, &meta, &mut record).await;
        let rendering = Instant::now();
        let response = match outcome {
            Ok(connection) => envelope::success(&meta, &connection),
            Err(reject) => {
                record.note(&reject);
                envelope::failure(&meta, &reject)
            }
        };
        record.timings.render = rendering.elapsed();
        record.status = response.status().as_u16();
        (response, record)
    }

    async fn steps<B>(
        &self,
        request: &Request<B>,
        meta: &Meta,
        trail: &mut Record,
    ) -> Result<Connection, Reject> {
        let route = route::route(request.method(), request.uri().path()).inspect_err(|error| {
            if let RouteError::MethodNotAllowed(route) = error {
                trail.route = Some(route.name());
            }
        })?;
        trail.route = Some(route.name());
        trail.action = Some(route.action());
        let Route::ConnectionDetails {
            client_id,
            connection_id,
        } = route;
        trail.owner_id = Some(client_id);
        trail.connection_id = Some(connection_id);

        let verifying = Instant::now();
        let verified = self.authenticate(request).await;
        trail.timings.verify = verifying.elapsed();
        if let Err(Reject::Unauthenticated(AuthError::Unavailable(_))) = verified {
            trail.failure = Some(Failure {
                dependency: self.tokens.dependency(),
                kind: FailureKind::Unavailable,
            });
        }
        let (credentials, caller) = verified?;
        trail.principal = Some(caller.principal.clone());
        trail.cached = Some(caller.cached);
        trail.cache_age_ms = caller.cached.then_some(caller.age_ms);

        // The request decides with the generation serving now, even if a
        // reload swaps in another before it ends.
        let deciding = Instant::now();
        let policies = self.policies.current();
        trail.generation = Some(policies.generation().to_owned());
        let decision = policies.decide(&caller.principal, &route);
        trail.timings.decide = deciding.elapsed();
        let decision = decision?;
        trail.allowed = Some(decision.allowed);
        trail.policies = decision.policies;
        if !decision.errors.is_empty() {
            tracing::warn!(errors = ?decision.errors, "policies failed to evaluate; not allowing");
        }
        trail.policy_errors = decision.errors;
        if !decision.allowed {
            return Err(Reject::Forbidden {
                message: decision.message,
            });
        }

        let fetch = Fetch {
            client_id,
            connection_id,
            principal: &caller.principal,
            credentials: &credentials,
            request_id: &meta.request_id,
            headers: request.headers(),
            peer: request.extensions().get::<PeerAddr>().map(|peer| peer.0),
        };
        let fetching = Instant::now();
        let connection = self.connections.fetch(fetch).await;
        trail.timings.fetch = fetching.elapsed();
        trail.failure = connection.as_ref().err().map(FetchError::failure);
        connection?.ok_or(Reject::NotFound)
    }

    async fn authenticate<B>(&self, request: &Request<B>) -> Result<(Credentials, Lookup), Reject> {
        let credentials = token::credentials(request.headers()).map_err(AuthError::from)?;
        let caller = self.tokens.verify(&credentials).await?;
        Ok((credentials, caller))
    }
}

/// `meta.url` and the request id. The scheme is `http`: TLS, where there
/// is any, ends before the gateway.
fn meta<B>(request: &Request<B>) -> Meta {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())
        .filter(|host| is_plain_host(host))
        .unwrap_or("localhost");
    // `*` (OPTIONS *) and authority-form targets have no path to show.
    let path = Some(request.uri().path())
        .filter(|path| path.starts_with('/'))
        .unwrap_or("/");
    Meta {
        url: format!("http://{host}{path}"),
        request_id: RequestId::from_headers(request.headers()),
    }
}

/// A host name or address with an optional port, and nothing else.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl From<RouteError> for Reject {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::NotFound => Self::NotFound,
            RouteError::MethodNotAllowed(_) => Self::MethodNotAllowed,
        }
    }
}

impl From<AuthError> for Reject {
    fn from(error: AuthError) -> Self {
        Self::Unauthenticated(error)
    }
}

impl From<DecideError> for Reject {
    fn from(error: DecideError) -> Self {
        Self::Internal {
            cause: error.to_string(),
        }
    }
}

impl FetchError {
    /// Which dependency failed and how: each variant is one source's.
    fn failure(&self) -> Failure {
        let (dependency, kind) = match self {
            Self::Unavailable(_) => (Dependency::Database, FailureKind::Unavailable),
            Self::Malformed(_) => (Dependency::Database, FailureKind::Malformed),
            Self::BadGateway(_) => (Dependency::Upstream, FailureKind::BadGateway),
            Self::Timeout(_) => (Dependency::Upstream, FailureKind::Timeout),
        };
        Failure { dependency, kind }
    }
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Upstream => "upstream",
            Self::Jwks => "jwks",
        }
    }
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::BadGateway => "bad_gateway",
            Self::Malformed => "malformed",
        }
    }
}

impl From<FetchError> for Reject {
    fn from(error: FetchError) -> Self {
        let cause = error.to_string();
        match error {
            FetchError::Unavailable(_) => Self::Unavailable { cause },
            FetchError::BadGateway(_) => Self::BadGateway { cause },
            FetchError::Timeout(_) => Self::GatewayTimeout { cause },
            FetchError::Malformed(_) => Self::Internal { cause },
        }
    }
}

impl Record {
    fn note(&mut self, reject: &Reject) {
        if let Reject::Unauthenticated(error) = reject {
            self.auth_reason = Some(match error {
                AuthError::Header(_) => "header",
                AuthError::Invalid(invalid) => invalid.reason(),
                AuthError::Unavailable(_) => "source_unavailable",
            });
        }
        self.cause = reject.cause();
    }

    /// The steps the request went through and the time each took; a step
    /// that did not run is left out.
    pub fn steps(&self) -> impl Iterator<Item = (&'static str, Duration)> {
        let Timings {
            verify,
            decide,
            fetch,
            render,
        } = self.timings;
        // Verifying follows a matched route, deciding follows a
        // verified caller (and marks the generation), fetching follows an
        // allow.
        [
            ("verify", self.action.is_some(), verify),
            ("decide", self.generation.is_some(), decide),
            ("fetch", self.allowed == Some(true), fetch),
            ("render", true, render),
        ]
        .into_iter()
        .filter_map(|(step, ran, took)| ran.then_some((step, took)))
    }

    /// `verify;dur=0.125, decide;dur=0.042, ...`: the steps that ran, in
    /// milliseconds, as the `Server-Timing` header writes durations.
    fn server_timing(&self) -> Option<HeaderValue> {
        let mut value = String::new();
        for (step, took) in self.steps() {
            let us = micros(took);
            let separator = if value.is_empty() { "" } else { ", " };
            let _ = write!(
                value,
                "{separator}{step};dur={}.{:03}",
                us / 1000,
                us % 1000
            );
        }
        HeaderValue::try_from(value).ok()
    }

    /// The request's decision record: one event per request, with stable
    /// dotted field names. Denies and refusals are logged at info, allows
    /// at debug unless `log_allows`, failures at error. Never a header
    /// value: only what the gateway derived from them.
    fn log(&self, method: &Method, started: Instant, log_allows: bool) {
        let step = |name: &str| {
            self.steps()
                .find(|(step, _)| *step == name)
                .map(|(_, took)| micros(took))
        };
        macro_rules! record {
            ($level:ident) => {
                tracing::$level!(
                    request.id = self.request_id.as_str(),
                    http.method = loggable(method),
                    route = self.route.unwrap_or("unmatched"),
                    status = self.status,
                    decision = self
                        .allowed
                        .map(|allowed| if allowed { "allow" } else { "deny" }),
                    action = self.action,
                    resource.client_id = self.owner_id.map(tracing::field::display),
                    resource.connection_id = self.connection_id.map(tracing::field::display),
                    client.id = self
                        .principal
                        .as_ref()
                        .map(|p| tracing::field::display(p.client_id)),
                    client.r#type = self.principal.as_ref().map(|p| p.client_type.as_str()),
                    token.cached = self.cached,
                    token.cache_age_ms = self.cache_age_ms,
                    policy.ids = self.allowed.is_some().then(|| self.policies.join(",")),
                    policy.generation = self.generation.as_deref(),
                    auth.reason = self.auth_reason,
                    error.dependency = self.failure.map(|f| f.dependency.as_str()),
                    error.kind = self.failure.map(|f| f.kind.as_str()),
                    cause = self.cause.as_deref(),
                    time.total_us = micros(started.elapsed()),
                    time.verify_us = step("verify"),
                    time.decide_us = step("decide"),
                    time.fetch_us = step("fetch"),
                    time.render_us = step("render"),
                    "request"
                )
            };
        }
        if self.status >= 500 {
            record!(error);
        } else if self.allowed == Some(true) && !log_allows {
            record!(debug);
        } else {
            record!(info);
        }
    }
}

/// A method as logged: any token is a valid method, and a 50 KB one must
/// not make a 50 KB log line.
fn loggable(method: &Method) -> &str {
    const LONGEST: usize = 16;
    match method.as_str() {
        short if short.len() <= LONGEST => short,
        _ => "(long method)",
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
