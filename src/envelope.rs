//! eHealth's response envelope, and the one place outcomes become statuses.
//!
//! Success: `{"meta": {url, type, code, request_id}, "data": {...}}`.
//! Error: `{"meta": {...}, "error": {"type", "message"}}`. Every answer,
//! error or not, carries `x-request-id` equal to `meta.request_id`.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::route;
use crate::token::{AuthError, HeaderError};

pub type Body = Full<Bytes>;

/// What every answer to one request shares.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The request's scheme, host and path.
    pub url: String,
    pub request_id: RequestId,
}

/// Why a request was not answered with data. Each variant is one row of
/// the status table in [`Reject::status`].
#[derive(Debug)]
pub enum Reject {
    /// No route, or no such connection for that client.
    NotFound,
    /// A method other than GET or HEAD on a route.
    MethodNotAllowed,
    /// The caller could not be authenticated.
    Unauthenticated(AuthError),
    /// The policies denied; the message comes from the determining policy.
    Forbidden { message: Option<String> },
    /// A dependency (database, token source) could not answer. The cause
    /// is for the log, never for the caller.
    Unavailable { cause: String },
    /// Mithril answered with something we will not pass on, or could not
    /// be reached.
    BadGateway { cause: String },
    /// Mithril did not answer in time.
    GatewayTimeout { cause: String },
    /// Our own fault; the cause is logged, never sent.
    Internal { cause: String },
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated(AuthError::Unavailable(_)) | Self::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// eHealth's error type for the status.
    fn error_type(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::UNAUTHORIZED => "access_denied",
            StatusCode::FORBIDDEN => "forbidden",
            _ => "internal_error",
        }
    }

    /// A short message for the caller. It never holds a credential, and
    /// for 5xx never says what failed inside.
    fn message(&self) -> Option<String> {
        match self {
            Self::NotFound => Some("resource not found".into()),
            Self::MethodNotAllowed => Some("method not allowed; use GET or HEAD".into()),
            Self::Unauthenticated(AuthError::Header(header)) => Some(header.to_string()),
            Self::Unauthenticated(AuthError::Invalid(invalid)) if invalid.is_api_key() => {
                Some("api-key is missing or invalid".into())
            }
            Self::Unauthenticated(AuthError::Invalid(_)) => {
                Some("invalid or expired access token".into())
            }
            Self::Forbidden { message } => message.clone(),
            Self::Unauthenticated(AuthError::Unavailable(_)) | Self::Unavailable { .. } => {
                Some("service temporarily unavailable".into())
            }
            Self::BadGateway { .. } => Some("upstream service failed".into()),
            Self::GatewayTimeout { .. } => Some("upstream service timed out".into()),
            Self::Internal { .. } => Some("internal error".into()),
        }
    }

    /// RFC 6750's challenge: no error code when no credentials came,
    /// `invalid_request` for a malformed header, `invalid_token` otherwise.
    /// What failed inside, for the log of a 5xx.
    pub fn cause(&self) -> Option<String> {
        match self {
            Self::Unauthenticated(AuthError::Unavailable(cause)) => Some(cause.to_string()),
            Self::Unavailable { cause }
            | Self::BadGateway { cause }
            | Self::GatewayTimeout { cause }
            | Self::Internal { cause } => Some(cause.clone()),
            _ => None,
        }
    }

    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::Unauthenticated(AuthError::Header(HeaderError::Missing)) => Some("Bearer"),
            Self::Unauthenticated(AuthError::Header(_)) => {
                Some(r#"Bearer error="invalid_request""#)
            }
            Self::Unauthenticated(AuthError::Invalid(_)) => Some(r#"Bearer error="invalid_token""#),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct MetaBody<'a> {
    url: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    code: u16,
    request_id: &'a str,
}

#[derive(Serialize)]
struct Success<'a, T> {
    meta: MetaBody<'a>,
    data: &'a T,
}

#[derive(Serialize)]
struct Failure<'a> {
    meta: MetaBody<'a>,
    error: ErrorBody,
}

#[derive(Serialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Meta {
    fn body(&self, status: StatusCode) -> MetaBody<'_> {
        MetaBody {
            url: &self.url,
            kind: "object",
            code: status.as_u16(),
            request_id: self.request_id.as_str(),
        }
    }
}

/// 200 with `data`.
pub fn success<T: Serialize>(meta: &Meta, data: &T) -> Response<Body> {
    let status = StatusCode::OK;
    let body = Success {
        meta: meta.body(status),
        data,
    };
    json(meta, status, &body)
}

/// The error answer for `reject`.
pub fn failure(meta: &Meta, reject: &Reject) -> Response<Body> {
    let status = reject.status();
    let body = Failure {
        meta: meta.body(status),
        error: ErrorBody {
            kind: reject.error_type(),
            message: reject.message(),
        },
    };
    let mut response = json(meta, status, &body);
    let headers = response.headers_mut();
    if let Some(challenge) = reject.challenge() {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    if matches!(reject, Reject::MethodNotAllowed) {
        headers.insert(ALLOW, HeaderValue::from_static(route::ALLOW));
    }
    response
}

fn json<T: Serialize>(meta: &Meta, status: StatusCode, body: &T) -> Response<Body> {
    // Serialising these types cannot fail: string keys, no maps of
    // non-string keys, no floats.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(X_REQUEST_ID, meta.request_id.header_value());
    response
}
