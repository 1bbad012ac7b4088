//! Listening: the public API and the admin endpoints on separate sockets,
//! HTTP/1.1 and HTTP/2, connection limits, and a graceful stop.
//!
//! Each connection is driven by `drive`, which holds it to [`Limits`]:
//! a client that connects and sends nothing, or too little to tell the
//! protocol, is dropped after the header timeout; a connection with no
//! request in flight for the idle timeout is closed (HTTP/2 included, and a
//! client that stops reading its answers); at most `max_connections` are
//! open at once, so silent sockets cannot exhaust the process's file
//! descriptors. The admin listener has its own small allowance, so probes
//! answer while the public side is full.
//!
//! On shutdown the listeners close at once, every connection is told to
//! finish (HTTP/1.1 closes when idle, HTTP/2 sends GOAWAY), requests in
//! flight complete, and whatever is still open when the grace period ends is
//! dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::app::{App, StartError};
use crate::db::Database;
use crate::envelope::Body;
use crate::gate::{Gate, PeerAddr};
use crate::metrics;
use crate::policy;
use crate::upstream::Upstream;

/// The largest request head accepted over HTTP/1.1; larger gets 431.
/// A bearer token and an api-key fit many times over.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long `/readyz` waits for the database or Mithril.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections the admin listener takes at once: probes and scrapes are
/// few, and must not be crowded out by the public side.
const ADMIN_CONNECTIONS: usize = 64;

/// After shutdown is signalled, how long a connection with nothing in
/// flight may stay to flush and close before it is dropped.
const DRAIN_LINGER: Duration = Duration::from_millis(500);

/// How often a connection checks whether it has been idle too long.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long requests in flight may finish after shutdown begins.
    pub grace: Duration,
    /// Public connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How long a client may take from connecting (or finishing a request)
    /// to sending a request's headers.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(20),
            max_connections: 4096,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The two bound sockets.
pub struct Listeners {
    public: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    pub async fn bind(public: SocketAddr, admin: SocketAddr) -> Result<Self, StartError> {
        let bind = |addr, setting| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr,
                    setting,
                    source,
                })
        };
        Ok(Self {
            public: bind(public, "listen").await?,
            admin: bind(admin, "admin-listen").await?,
        })
    }

    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Serves until `shutdown` resolves, then drains for at most
/// `limits.grace`.
pub async fn run(
    listeners: Listeners,
    app: App,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    let builder = builder(&limits);
    let admin = Arc::new(Admin {
        gate: app.gate.clone(),
        db: app.db.clone(),
        upstream: app.upstream.clone(),
    });
    let public_slots = Arc::new(Semaphore::new(limits.max_connections));
    let admin_slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let (stop, stopping) = watch::channel(false);
    let open = Arc::new(OpenConnections::default());
    let reloader = policy::Reloader::new(app.policy_paths.clone(), app.gate.policies().clone());
    tokio::spawn(
        policy::watch(reloader, app.policy_poll_interval, stopping.clone())
            .instrument(tracing::info_span!("policy_watch")),
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, slot) = accept(&listeners.public, &public_slots) => {
                let peer = stream.peer_addr().ok().map(PeerAddr);
                let gate = app.gate.clone();
                let serve = move |mut request: Request<hyper::body::Incoming>| {
                    let gate = gate.clone();
                    if let Some(peer) = peer {
                        request.extensions_mut().insert(peer);
                    }
                    async move { gate.handle(request).await }
                };
                let connection = Connection { stream, slot, stopping: stopping.clone(), open: open.clone() };
                tokio::spawn(drive(connection, builder.clone(), limits, serve));
            }
            (stream, slot) = accept(&listeners.admin, &admin_slots) => {
                let admin = admin.clone();
                let serve = move |request: Request<hyper::body::Incoming>| {
                    let admin = admin.clone();
                    async move { admin.handle(request).await }
                };
                let connection = Connection { stream, slot, stopping: stopping.clone(), open: open.clone() };
                tokio::spawn(drive(connection, builder.clone(), limits, serve));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listeners);
    let _ = stop.send(true);
    tracing::info!(grace = ?limits.grace, "shutting down: finishing requests in flight");
    tokio::select! {
        () = open.all_closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.grace) => {
            tracing::warn!("grace period over; dropping connections still open");
        }
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// The next connection once a slot is free. Running out of file
/// descriptors fails every accept until one closes, so a failed accept
/// pauses briefly instead of spinning.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    // INVARIANT: the semaphores are never closed, so acquiring only waits.
    let Ok(slot) = slots.clone().acquire_owned().await else {
        return std::future::pending().await;
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Answers are one small write; Nagle's delay only adds latency.
                let _ = stream.set_nodelay(true);
                return (stream, slot);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connections open now, so shutdown can wait for them.
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    closed: tokio::sync::Notify,
}

impl OpenConnections {
    async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// An accepted connection and what it answers to.
struct Connection {
    stream: TcpStream,
    /// Held while the connection is open: frees a place under the limit.
    slot: OwnedSemaphorePermit,
    stopping: watch::Receiver<bool>,
    open: Arc<OpenConnections>,
}

/// When a connection last did something, and what it is doing now.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` of the last request's start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long nothing has been in flight, or zero while something is.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection within `limits` until it ends, idles out, or
/// shutdown drains it.
async fn drive<F, Fut>(
    connection: Connection,
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    serve: F,
) where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let Connection {
        stream,
        slot,
        mut stopping,
        open,
    } = connection;
    open.count.fetch_add(1, Ordering::SeqCst);
    let _closing = Closing { open, _slot: slot };
    if !protocol_announced(&stream, limits.header_read_timeout).await {
        return;
    }

    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        let serve = Arc::new(serve);
        service_fn(move |request: Request<hyper::body::Incoming>| {
            let in_flight = InFlight::begin(&activity);
            let head = request.method() == Method::HEAD;
            let answer = serve(request);
            async move {
                let mut response = answer.await;
                if head {
                    without_body(&mut response);
                }
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let mut drain_started: Option<Instant> = None;
    let mut check = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            _ = served.as_mut() => return,
            changed = stopping.changed(), if drain_started.is_none() => {
                if changed.is_ok() {
                    served.as_mut().graceful_shutdown();
                    drain_started = Some(Instant::now());
                }
            }
            _ = check.tick() => {
                let idle = activity.idle_for();
                let expired = match drain_started {
                    Some(at) => idle > Duration::ZERO && at.elapsed() >= DRAIN_LINGER,
                    None => idle >= limits.idle_timeout,
                };
                if expired {
                    return;
                }
            }
        }
    }
}

/// Marks the connection closed (and frees its slot) however `drive` ends.
struct Closing {
    open: Arc<OpenConnections>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Closing {
    fn drop(&mut self) {
        if self.open.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.open.closed.notify_waiters();
        }
    }
}

/// Waits for the client's first bytes: enough to tell HTTP/1.1 from the
/// HTTP/2 preface. Protocol detection would otherwise wait for them with no
/// timeout at all.
async fn protocol_announced(stream: &TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = Instant::now() + within;
    let mut seen = [0_u8; PREFACE.len()];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await;
        let Ok(Ok(count)) = read else { return false };
        if count == 0 {
            return false;
        }
        if count == PREFACE.len() || !PREFACE.starts_with(&seen[..count]) {
            return true;
        }
        // Part of the HTTP/2 preface: peeking again returns at once, so
        // wait a little for the rest.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20)))
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// A HEAD answer: the GET answer's headers, `Content-Length` included, and
/// no body. HTTP/1.1 would drop the body itself; HTTP/2 would send it.
fn without_body(response: &mut Response<Body>) {
    if let Some(length) = response.body().size_hint().exact() {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    *response.body_mut() = Full::default();
}

/// The admin endpoints: liveness and readiness for probes, metrics for
/// Prometheus.
struct Admin {
    gate: Arc<Gate>,
    db: Option<Database>,
    upstream: Option<Arc<Upstream>>,
}

impl Admin {
    async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"status": "method not allowed"}),
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static(crate::route::ALLOW),
            );
            return response;
        }
        match request.uri().path() {
            "/healthz" => plain(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => self.ready().await,
            "/metrics" => self.metrics().await,
            _ => plain(StatusCode::NOT_FOUND, json!({"status": "not found"})),
        }
    }

    /// Ready once the policies are loaded (they are, or the service would
    /// not have started) and what it reads answers: the database, and
    /// Mithril for a sidecar.
    async fn ready(&self) -> Response<Body> {
        let policies = self.gate.policies().current();
        let generation = policies.generation();
        if let Some(db) = &self.db {
            match tokio::time::timeout(READY_TIMEOUT, db.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "not ready: database does not answer");
                    return not_ready(generation, "database does not answer");
                }
                Err(_) => {
                    tracing::warn!(timeout = ?READY_TIMEOUT, "not ready: database does not answer");
                    return not_ready(generation, "database does not answer");
                }
            }
        }
        if let Some(upstream) = &self.upstream {
            let probe = tokio::time::timeout(READY_TIMEOUT, upstream.probe()).await;
            match probe {
                Ok(Ok(status)) if !status.is_server_error() => {}
                Ok(Ok(status)) => {
                    tracing::warn!(%status, "not ready: upstream answers with an error");
                    return not_ready(generation, "upstream does not answer");
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "not ready: upstream does not answer");
                    return not_ready(generation, "upstream does not answer");
                }
                Err(_) => {
                    tracing::warn!(timeout = ?READY_TIMEOUT, "not ready: upstream does not answer");
                    return not_ready(generation, "upstream does not answer");
                }
            }
        }
        plain(
            StatusCode::OK,
            json!({
                "status": "ready",
                "policy_generation": generation,
                "policy_reloads": reloads(self.gate.policies()),
            }),
        )
    }

    /// Every metric, for a Prometheus scrape. Encoding into a string fails
    /// only on a bug of ours.
    async fn metrics(&self) -> Response<Body> {
        let Ok(text) = self.gate.metrics().await else {
            tracing::error!("cannot encode the metrics");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"status": "cannot encode the metrics"}),
            );
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        response
    }
}

fn not_ready(generation: &str, reason: &str) -> Response<Body> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "status": "not ready",
            "reason": reason,
            "policy_generation": generation,
        }),
    )
}

/// How reloading the policies has gone, for `/readyz`.
fn reloads(store: &policy::PolicyStore) -> serde_json::Value {
    let mut reloads = json!({
        "applied": store.reloads(),
        "refused": store.failures(),
    });
    if let Some(failure) = store.last_failure() {
        // Bounded: a folder of thousands of broken files must not make
        // every probe answer megabytes.
        let shown = policy::REPORTED_PROBLEMS;
        let mut problems: Vec<String> = failure
            .0
            .iter()
            .take(shown)
            .map(ToString::to_string)
            .collect();
        if failure.0.len() > shown {
            problems.push(format!("... and {} more", failure.0.len() - shown));
        }
        reloads["last_refused"] = json!(problems);
    }
    reloads
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
