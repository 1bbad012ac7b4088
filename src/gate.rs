//! One request, step by step: route, authenticate, authorize, fetch,
//! render.
//!
//! Each step either hands the next one a typed value or ends the request
//! with a [`Reject`]. Nothing later looks back at the raw request: the
//! route's typed ids are what the policies decide about and what is
//! fetched.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use uuid::Uuid;

use crate::connection::{Connection, ConnectionSource, FetchError};
use crate::envelope::{self, Body, Meta, Reject};
use crate::policy::{DecideError, Policies};
use crate::request_id::RequestId;
use crate::route::{self, Route, RouteError};
use crate::token::{self, AuthError, TokenCache};

/// The service: everything a request needs, shared by all connections.
pub struct Gate {
    policies: Arc<Policies>,
    tokens: TokenCache,
    connections: Arc<dyn ConnectionSource>,
}

/// What the request log says about one request, filled in step by step.
#[derive(Default)]
struct Trail {
    route: Option<&'static str>,
    client_id: Option<Uuid>,
    client_type: Option<String>,
    cached: Option<bool>,
    policies: Vec<String>,
    auth_reason: Option<&'static str>,
    /// For a 5xx: what failed inside. Logged, never sent.
    cause: Option<String>,
}

impl Gate {
    pub fn new(
        policies: Arc<Policies>,
        tokens: TokenCache,
        connections: Arc<dyn ConnectionSource>,
    ) -> Self {
        Self {
            policies,
            tokens,
            connections,
        }
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Answers one request. The body is never read: no route takes one.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let started = Instant::now();
        let meta = meta(&request);
        let mut trail = Trail::default();

        let response = match self.answer(&request, &mut trail).await {
            Ok(connection) => envelope::success(&meta, &connection),
            Err(reject) => {
                trail.note(&reject);
                envelope::failure(&meta, &reject)
            }
        };

        trail.log(&meta, request.method(), response.status(), started);
        response
    }

    async fn answer<B>(
        &self,
        request: &Request<B>,
        trail: &mut Trail,
    ) -> Result<Connection, Reject> {
        let route = route::route(request.method(), request.uri().path()).inspect_err(|error| {
            if let RouteError::MethodNotAllowed(route) = error {
                trail.route = Some(route.name());
            }
        })?;
        trail.route = Some(route.name());

        let credentials = token::credentials(request.headers()).map_err(AuthError::from)?;
        let caller = self.tokens.verify(&credentials).await?;
        trail.client_id = Some(caller.principal.client_id);
        trail.client_type = Some(caller.principal.client_type.clone());
        trail.cached = Some(caller.cached);

        let decision = self.policies.decide(&caller.principal, &route)?;
        trail.policies = decision.policies;
        if !decision.errors.is_empty() {
            tracing::warn!(errors = ?decision.errors, "policies failed to evaluate; not allowing");
        }
        if !decision.allowed {
            return Err(Reject::Forbidden {
                message: decision.message,
            });
        }

        let Route::ConnectionDetails {
            client_id,
            connection_id,
        } = route;
        self.connections
            .fetch(client_id, connection_id)
            .await?
            .ok_or(Reject::NotFound)
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
    Meta {
        url: format!("http://{host}{}", request.uri().path()),
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

impl From<FetchError> for Reject {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::Unavailable(_) => Self::Unavailable {
                cause: error.to_string(),
            },
            FetchError::Malformed(_) => Self::Internal {
                cause: error.to_string(),
            },
        }
    }
}

impl Trail {
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

    /// One line per request. Never a header value: only what the gateway
    /// derived from them.
    fn log(&self, meta: &Meta, method: &Method, status: StatusCode, started: Instant) {
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    request.id = meta.request_id.as_str(),
                    http.method = %method,
                    route = self.route.unwrap_or("unmatched"),
                    status = status.as_u16(),
                    client.id = self.client_id.map(tracing::field::display),
                    client.r#type = self.client_type.as_deref(),
                    token.cached = self.cached,
                    policies = ?self.policies,
                    auth.reason = self.auth_reason,
                    cause = self.cause.as_deref(),
                    elapsed_us,
                    "request"
                )
            };
        }
        if status.is_server_error() {
            line!(error);
        } else {
            line!(info);
        }
    }
}
