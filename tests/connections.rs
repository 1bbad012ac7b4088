//! Connections under pressure: silent and idle clients, the connection
//! limit, HTTP/2, and shutdown with clients that do not leave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{get, shipped_policies, start};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mithril_gate::config::ServeConfig;
use mithril_gate::db::demo;
use mithril_gate::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn demo_config(limits: Limits) -> ServeConfig {
    ServeConfig {
        limits,
        ..ServeConfig::with_paths(shipped_policies())
    }
}

fn own_path() -> String {
    common::connection_path(demo::MIS_CLIENT, demo::MIS_CONNECTION)
}

fn mis_auth() -> Vec<(String, String)> {
    vec![(
        "authorization".to_owned(),
        format!("Bearer {}", demo::MIS_TOKEN),
    )]
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(stream: &mut TcpStream, at_most: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0_u8; 1024];
    loop {
        match tokio::time::timeout(at_most, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {at_most:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped() {
    let server = start(demo_config(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    }))
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let waited = closed_after(&mut silent, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(250), "{waited:?}");

    // Half of the HTTP/2 preface is no better.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    closed_after(&mut partial, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(demo_config(Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        own_path(),
        demo::MIS_TOKEN
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0_u8; 4096];
    let read = stream.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    closed_after(&mut stream, Duration::from_secs(5)).await;
}

async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    method: &str,
) -> (http::response::Parts, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://localhost{}", own_path()))
        .header("authorization", format!("Bearer {}", demo::MIS_TOKEN))
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn http2_head_has_no_body_and_idle_http2_is_closed() {
    let server = start(demo_config(Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    }))
    .await;
    let mut sender = h2_client(server.addr).await;
    let (get, get_body) = h2_send(&mut sender, "GET").await;
    assert_eq!(get.status, 200);
    let (head, head_body) = h2_send(&mut sender, "HEAD").await;
    assert_eq!(head.status, 200);
    assert!(head_body.is_empty(), "{head_body:?}");
    assert_eq!(
        head.headers.get("content-length").unwrap(),
        &get_body.len().to_string()
    );

    let started = Instant::now();
    while !sender.is_closed() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "idle HTTP/2 stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_connection_limit_holds_and_probes_still_answer() {
    let server = start(demo_config(Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    }))
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server take both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let waiting = tokio::spawn({
        let addr = server.addr;
        async move { get(addr, &own_path(), &mis_auth()).await }
    });
    let health = get(server.admin_addr, "/healthz", &[]).await;
    assert_eq!(
        health.status, 200,
        "the admin side answers while the public side is full"
    );
    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the third connection waited for a slot: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_http2_clients() {
    let config = demo_config(Limits {
        grace: Duration::from_secs(10),
        ..Limits::default()
    });
    let app = mithril_gate::app::App::build(&config, mithril_gate::clock::Clock::system())
        .await
        .unwrap();
    let server = common::serve(app, config.limits).await;
    let addr = server.addr;
    let mut sender = h2_client(addr).await;
    assert_eq!(h2_send(&mut sender, "GET").await.0.status, 200);

    let took = server.shut_down(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "shutdown waited {took:?}");
    drop(sender);
}
