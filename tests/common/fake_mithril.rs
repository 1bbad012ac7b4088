//! A stand-in for Mithril's internal API, in process on port 0.
//!
//! It answers from a [`Rows`] set the way Mithril would (verify, client
//! details, a connection, with every secret in its bodies), records every
//! request it receives, and can be told to misbehave per route: answer
//! slowly, with a status, gzip or deflate, an encoding nobody reads, or a
//! body of the test's choosing. It also serves a JWKS at `/jwks`.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mithril_gate::db::seed::Rows;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The path exactly as sent, percent-escapes and all.
    pub path: String,
    pub headers: HeaderMap,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How one route answers.
#[derive(Debug, Clone, Default)]
pub enum Answer {
    /// As Mithril would, from the rows.
    #[default]
    Real,
    /// As Mithril would, after a pause.
    Slow(Duration),
    /// As Mithril would, gzip-compressed.
    Gzip,
    /// As Mithril would, zlib-deflated.
    Deflate,
    /// As Mithril would, labelled with an encoding the gateway cannot read.
    Encoded(&'static str),
    /// This status, with a JSON body holding every secret.
    Status(u16),
    /// 200 with this body.
    Body(String),
}

/// The routes the fake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Verify,
    Details,
    Connection,
    Jwks,
    Other,
}

#[derive(Default)]
struct Behaviour {
    verify: Answer,
    details: Answer,
    connection: Answer,
}

struct State {
    rows: Rows,
    /// Unix seconds the fake judges expiry by.
    now: i64,
    recorded: Mutex<Vec<Recorded>>,
    behaviour: Mutex<Behaviour>,
    jwks: Mutex<Option<String>>,
}

/// A running fake; stopped when dropped.
pub struct FakeMithril {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeMithril {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl FakeMithril {
    pub async fn start(rows: Rows, now: i64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            rows,
            now,
            recorded: Mutex::default(),
            behaviour: Mutex::default(),
            jwks: Mutex::default(),
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = state.clone();
        let serving = tokio::spawn(async move {
            // Dropped with the loop: stopping closes open connections too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = shared.clone();
                        let service = service_fn(move |request| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(state.answer(request).await) }
                        });
                        connections.spawn(async move {
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Stops listening and closes every connection, then returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, route: Route, answer: Answer) {
        let mut behaviour = self.state.behaviour.lock().unwrap();
        match route {
            Route::Verify => behaviour.verify = answer,
            Route::Details => behaviour.details = answer,
            Route::Connection => behaviour.connection = answer,
            Route::Jwks | Route::Other => panic!("only verify, details and connection vary"),
        }
    }

    pub fn serve_jwks(&self, jwks: Option<String>) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// The requests to one route so far.
    pub fn requests_to(&self, route: Route) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| route_of(&r.path) == route)
            .collect()
    }

    pub fn count(&self, route: Route) -> usize {
        self.requests_to(route).len()
    }

    pub fn forget(&self) {
        self.state.recorded.lock().unwrap().clear();
    }
}

fn route_of(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["admin", "tokens", _, "verify"] => Route::Verify,
        ["admin", "clients", _, "details"] => Route::Details,
        ["admin", "clients", _, "connections", _] => Route::Connection,
        ["jwks"] => Route::Jwks,
        _ => Route::Other,
    }
}

impl State {
    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        self.recorded.lock().unwrap().push(Recorded {
            method: request.method().clone(),
            path: path.clone(),
            headers: request.headers().clone(),
        });
        let route = route_of(&path);
        let answer = {
            let behaviour = self.behaviour.lock().unwrap();
            match route {
                Route::Verify => behaviour.verify.clone(),
                Route::Details => behaviour.details.clone(),
                Route::Connection => behaviour.connection.clone(),
                Route::Jwks | Route::Other => Answer::Real,
            }
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let real = || match route {
            Route::Verify => self.verify(segments[2], request.headers()),
            Route::Details => self.details(segments[2]),
            Route::Connection => self.connection(segments[2], segments[4]),
            Route::Jwks => match self.jwks.lock().unwrap().clone() {
                Some(jwks) => (StatusCode::OK, serde_json::from_str(&jwks).unwrap()),
                None => (StatusCode::NOT_FOUND, json!({})),
            },
            Route::Other => (StatusCode::NOT_FOUND, json!({"error": "no route"})),
        };
        match answer {
            Answer::Real => respond(real(), None),
            Answer::Slow(pause) => {
                tokio::time::sleep(pause).await;
                respond(real(), None)
            }
            Answer::Gzip => respond(real(), Some("gzip")),
            Answer::Deflate => respond(real(), Some("deflate")),
            Answer::Encoded(name) => respond(real(), Some(name)),
            Answer::Status(status) => respond(
                (
                    StatusCode::from_u16(status).unwrap(),
                    json!({"error": {"message": "failed", "secrets": self.secrets()}}),
                ),
                None,
            ),
            Answer::Body(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        }
    }

    fn secrets(&self) -> Vec<String> {
        self.rows
            .connections
            .iter()
            .map(|c| c.secret.clone())
            .collect()
    }

    /// Mithril's verify: an unknown value is 404; an expired token, a
    /// blocked client or user, or a broker client without a broker's
    /// connection secret as api-key is 401.
    fn verify(&self, value: &str, headers: &HeaderMap) -> (StatusCode, Value) {
        let denied = (
            StatusCode::UNAUTHORIZED,
            json!({"error": {"type": "access_denied"}}),
        );
        let value = percent_decode(value);
        let Some(token) = self
            .rows
            .tokens
            .iter()
            .find(|t| t.value == value && t.name == "access_token")
        else {
            return (
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "not_found"}}),
            );
        };
        let details: Value = serde_json::from_str(&token.details).unwrap();
        let client_id: Uuid = details["client_id"].as_str().unwrap().parse().unwrap();
        let client = self
            .rows
            .clients
            .iter()
            .find(|c| c.id == client_id)
            .unwrap();
        let user_blocked = self
            .rows
            .users
            .iter()
            .any(|u| Some(u.id) == token.user_id && u.is_blocked);
        if token.expires_at <= self.now || client.is_blocked || user_blocked {
            return denied;
        }
        let settings: Value = serde_json::from_str(&client.priv_settings).unwrap();
        let mut details = details;
        let mut urgent = json!({});
        if settings["access_type"] == "BROKER" {
            let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
            let broker = self
                .rows
                .connections
                .iter()
                .find_map(|c| (Some(c.secret.as_str()) == api_key).then_some(c.client_id));
            let Some(broker) = broker else { return denied };
            let broker_client = self.rows.clients.iter().find(|c| c.id == broker).unwrap();
            let broker_settings: Value =
                serde_json::from_str(&broker_client.priv_settings).unwrap();
            let Some(scope) = broker_settings["broker_scope"].as_str() else {
                return denied;
            };
            details["broker_scope"] = json!(scope);
            urgent = json!({"mis_client_id": broker});
        }
        (
            StatusCode::OK,
            json!({
                "meta": {"code": 200},
                "data": {
                    "id": token.id,
                    "name": token.name,
                    "value": token.value,
                    "expires_at": token.expires_at,
                    "user_id": token.user_id,
                    "details": details,
                },
                "urgent": urgent,
            }),
        )
    }

    fn details(&self, id: &str) -> (StatusCode, Value) {
        let client = self.rows.clients.iter().find(|c| c.id.to_string() == id);
        let Some(client) = client else {
            return (
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "not_found"}}),
            );
        };
        let client_type = self
            .rows
            .client_types
            .iter()
            .find(|t| t.id == client.client_type_id)
            .unwrap();
        (
            StatusCode::OK,
            json!({
                "data": {
                    "id": client.id,
                    "name": client.name,
                    "client_type_name": client_type.name,
                    "secrets": self.secrets(),
                }
            }),
        )
    }

    fn connection(&self, client_id: &str, connection_id: &str) -> (StatusCode, Value) {
        let found =
            self.rows.connections.iter().find(|c| {
                c.id.to_string() == connection_id && c.client_id.to_string() == client_id
            });
        match found {
            Some(c) => (
                StatusCode::OK,
                json!({
                    "meta": {"code": 200, "url": "http://mithril.internal/admin"},
                    "data": {
                        "id": c.id,
                        "client_id": c.client_id,
                        "consumer_id": c.consumer_id,
                        "redirect_uri": c.redirect_uri,
                        "secret": c.secret,
                        "inserted_at": "2024-01-15T09:30:00.000000",
                        "updated_at": "2024-01-15T09:30:00Z",
                    },
                }),
            ),
            None => (
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "not_found", "secrets": self.secrets()}}),
            ),
        }
    }
}

fn respond((status, body): (StatusCode, Value), encoding: Option<&str>) -> Response<Full<Bytes>> {
    let text = body.to_string().into_bytes();
    let bytes = match encoding {
        Some("gzip") => {
            let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
            gzip.write_all(&text).unwrap();
            gzip.finish().unwrap()
        }
        Some("deflate") => {
            let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
            zlib.write_all(&text).unwrap();
            zlib.finish().unwrap()
        }
        _ => text,
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", "application/json".parse().unwrap());
    // Headers a careless gateway would pass back to its caller.
    headers.insert("x-mithril-internal", "secret-host:4000".parse().unwrap());
    headers.insert("set-cookie", "mithril_session=internal".parse().unwrap());
    if let Some(encoding) = encoding {
        headers.insert("content-encoding", encoding.parse().unwrap());
    }
    response
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .unwrap()
        .into_owned()
}
