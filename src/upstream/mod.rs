//! Talking to Mithril (and a JWKS endpoint) over HTTP.
//!
//! [`HttpClient`] is one pooled hyper-util client with a connect timeout
//! and a response timeout; it reads a bounded body and undoes `gzip` or
//! `deflate`. [`Upstream`] is Mithril's base URL and route prefix: every
//! path it asks for is built from typed segments, each percent-encoded,
//! never copied from a caller's request. What is sent along is chosen in
//! [`headers`].
//!
//! Errors say what failed and never name the URL: a URL can hold a token
//! (`/tokens/{value}/verify`), and a caller must not learn where the
//! upstream lives.

mod decode;
pub mod headers;

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub use headers::TrustedProxies;

/// The largest body read from an upstream, before and after decoding. A
/// connection or a token answer is well under a kilobyte and a key set a
/// few; anything near this is not an answer we want.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long an idle pooled connection is kept. Below the 5 s after which
/// Mithril's HTTP server (Cowboy) closes an idle keep-alive connection, so
/// that the pool drops a connection before the server does and a request
/// rarely races a closing socket.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Idle connections kept per host. Requests are short; a few dozen cover a
/// busy sidecar without holding sockets in Mithril for nothing.
const POOL_MAX_IDLE: usize = 32;

/// Everything but RFC 3986's unreserved characters, and `.` too, so that a
/// value can never become a `.` or `..` segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// How long to wait for an upstream.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Opening a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The whole exchange: connecting, sending, the answer's head and body.
    pub response_timeout: Duration,
}

/// An answer, its body read whole and decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why an exchange with an upstream failed. Messages never hold a URL.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the exchange failed: {0}")]
    Exchange(String),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("content-encoding `{0}` is not supported")]
    Encoding(String),
    #[error("the body is not valid {0}")]
    Corrupt(&'static str),
}

impl UpstreamError {
    /// Whether the upstream was too slow (504) rather than broken (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// A pooled HTTP/1.1 client, `http` and `https`.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    response_timeout: Duration,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        // The TLS layer wraps it; it decides which schemes are allowed.
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        Ok(Self {
            client,
            response_timeout: settings.response_timeout,
        })
    }

    /// `GET uri` with `headers`, the body read (at most [`MAX_BODY_BYTES`])
    /// and decoded, all within the response timeout.
    pub async fn get(&self, uri: Uri, mut headers: HeaderMap) -> Result<Reply, UpstreamError> {
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        // Compression buys nothing between containers of one pod; gzip and
        // deflate are still undone when an upstream sends them anyway.
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        tokio::time::timeout(self.response_timeout, self.exchange(request))
            .await
            .map_err(|_| UpstreamError::Timeout(self.response_timeout))?
    }

    async fn exchange(&self, request: Request<Empty<Bytes>>) -> Result<Reply, UpstreamError> {
        let response = self.client.request(request).await.map_err(classify)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    UpstreamError::TooLarge
                } else {
                    UpstreamError::Exchange(chain(error.as_ref()))
                }
            })?
            .to_bytes();
        let encoding = parts.headers.get(CONTENT_ENCODING);
        Ok(Reply {
            status: parts.status,
            body: decode::decode(encoding, body)?,
        })
    }
}

/// A connect timeout is a timeout (504); any other failure to connect,
/// such as a refused connection, is a broken upstream (502).
fn classify(error: hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return UpstreamError::Timeout(Duration::ZERO);
        }
        source = cause.source();
    }
    if error.is_connect() {
        UpstreamError::Connect(chain(&error))
    } else {
        UpstreamError::Exchange(chain(&error))
    }
}

/// An error and its causes, for the log. hyper's and the OS's messages
/// hold no URL.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where Mithril is and how to reach it.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Scheme, host and port; checked by the configuration to have no
    /// path, query or user info.
    pub url: Uri,
    /// The segments Mithril's internal routes start with (`admin`).
    pub prefix: Vec<String>,
    pub http: HttpSettings,
}

/// Mithril's internal API.
pub struct Upstream {
    http: HttpClient,
    scheme: Scheme,
    authority: Authority,
    prefix: Vec<String>,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, UpstreamError> {
        let (Some(scheme), Some(authority)) = (settings.url.scheme(), settings.url.authority())
        else {
            return Err(UpstreamError::Exchange(
                "the upstream URL has no host".into(),
            ));
        };
        let http = HttpClient::new(settings.http)
            .map_err(|e| UpstreamError::Exchange(format!("cannot set up TLS: {e}")))?;
        Ok(Self {
            http,
            scheme: scheme.clone(),
            authority: authority.clone(),
            prefix: settings.prefix.clone(),
        })
    }

    /// `GET {upstream}/{prefix}/{segments...}`, each segment encoded.
    pub async fn get(&self, segments: &[&str], headers: HeaderMap) -> Result<Reply, UpstreamError> {
        let uri = self.uri(&self.path(segments))?;
        self.http.get(uri, headers).await
    }

    fn path(&self, segments: &[&str]) -> String {
        self.prefix
            .iter()
            .map(String::as_str)
            .chain(segments.iter().copied())
            .fold(String::new(), |mut path, segment| {
                path.push('/');
                path.extend(utf8_percent_encode(segment, SEGMENT));
                path
            })
    }

    /// Whether Mithril answers HTTP at all: any status below 500 to
    /// `GET {upstream}/` counts. For readiness; it touches no data.
    pub async fn probe(&self) -> Result<StatusCode, UpstreamError> {
        let reply = self.http.get(self.uri("/")?, HeaderMap::new()).await?;
        Ok(reply.status)
    }

    fn uri(&self, path: &str) -> Result<Uri, UpstreamError> {
        let path = PathAndQuery::try_from(path)
            .map_err(|e| UpstreamError::Exchange(format!("cannot build the path: {e}")))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Exchange(format!("cannot build the URI: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(prefix: &[&str]) -> Upstream {
        Upstream::new(&UpstreamSettings {
            url: Uri::from_static("http://127.0.0.1:4000"),
            prefix: prefix.iter().map(|s| (*s).to_owned()).collect(),
            http: HttpSettings {
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(1),
            },
        })
        .unwrap()
    }

    fn path(prefix: &[&str], segments: &[&str]) -> String {
        let upstream = upstream(prefix);
        upstream.uri(&upstream.path(segments)).unwrap().to_string()
    }

    #[tokio::test]
    async fn segments_are_encoded_one_by_one() {
        assert_eq!(
            path(&["admin"], &["tokens", "a/b+c==", "verify"]),
            "http://127.0.0.1:4000/admin/tokens/a%2Fb%2Bc%3D%3D/verify"
        );
        assert_eq!(
            path(&["admin"], &["tokens", "..", "verify"]),
            "http://127.0.0.1:4000/admin/tokens/%2E%2E/verify"
        );
        assert_eq!(
            path(&[], &["clients", "x?y#z"]),
            "http://127.0.0.1:4000/clients/x%3Fy%23z"
        );
    }
}
