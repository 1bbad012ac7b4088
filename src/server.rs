//! Listening: the public API and the admin endpoints on separate sockets,
//! HTTP/1.1 and HTTP/2, and a graceful stop.
//!
//! On shutdown the listeners close at once, connections finish the
//! requests they are serving (idle keep-alive connections are closed), and
//! whatever is still running when the grace period ends is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::app::{App, StartError};
use crate::db::Database;
use crate::envelope::Body;
use crate::gate::Gate;

/// How long a client may take to send a request's headers. Protects the
/// connection slots from clients that open and dribble (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head accepted over HTTP/1.1; larger gets 431.
/// A bearer token and an api-key fit many times over.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The two bound sockets.
pub struct Listeners {
    public: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    pub async fn bind(public: SocketAddr, admin: SocketAddr) -> Result<Self, StartError> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Self {
            public: bind(public).await?,
            admin: bind(admin).await?,
        })
    }

    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Serves until `shutdown` resolves, then drains for at most `grace`.
pub async fn run(
    listeners: Listeners,
    app: App,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let admin = Arc::new(Admin {
        gate: app.gate.clone(),
        db: app.db.clone(),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listeners.public.accept() => {
                let Some(stream) = accepted_stream(accepted).await else { continue };
                let gate = app.gate.clone();
                let service = service_fn(move |request| {
                    let gate = gate.clone();
                    async move { Ok::<_, Infallible>(gate.handle(request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(graceful.watch(connection.into_owned()));
            }
            accepted = listeners.admin.accept() => {
                let Some(stream) = accepted_stream(accepted).await else { continue };
                let admin = admin.clone();
                let service = service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(graceful.watch(connection.into_owned()));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listeners);
    tracing::info!(grace = ?grace, "shutting down: finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; dropping connections still open");
        }
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// The accepted stream, or `None` after a failed accept. Running out of
/// file descriptors fails every accept until one closes, so a failure
/// pauses the loop briefly instead of spinning.
async fn accepted_stream(accepted: std::io::Result<(TcpStream, SocketAddr)>) -> Option<TcpStream> {
    match accepted {
        Ok((stream, _)) => {
            // Answers are one small write; Nagle's delay only adds latency.
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Err(error) => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// The admin endpoints: liveness and readiness for probes.
struct Admin {
    gate: Arc<Gate>,
    db: Database,
}

impl Admin {
    async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"status": "method not allowed"}),
            );
        }
        match request.uri().path() {
            "/healthz" => plain(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => self.ready().await,
            _ => plain(StatusCode::NOT_FOUND, json!({"status": "not found"})),
        }
    }

    /// Ready once the policies are loaded (they are, or the service would
    /// not have started) and the database answers.
    async fn ready(&self) -> Response<Body> {
        let policies = self.gate.policies().current();
        let generation = policies.generation();
        match tokio::time::timeout(READY_TIMEOUT, self.db.ping()).await {
            Ok(Ok(())) => plain(
                StatusCode::OK,
                json!({"status": "ready", "policy_generation": generation}),
            ),
            Ok(Err(error)) => {
                tracing::warn!(%error, "not ready: database does not answer");
                not_ready(generation)
            }
            Err(_) => {
                tracing::warn!(timeout = ?READY_TIMEOUT, "not ready: database does not answer");
                not_ready(generation)
            }
        }
    }
}

fn not_ready(generation: &str) -> Response<Body> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "status": "not ready",
            "reason": "database does not answer",
            "policy_generation": generation,
        }),
    )
}

fn plain(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
