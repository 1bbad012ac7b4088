//! mithril-gate: Cedar policies in front of Mithril's client-connection API.
//!
//! Mithril is the OAuth server of Ukraine's national eHealth system (ЕСОЗ).
//! This crate serves `GET /api/clients/{id}/connections/{connection_id}`: it
//! checks the bearer token, lets Cedar policies decide, and answers from
//! Mithril's database (standalone) or from Mithril itself (sidecar) in
//! eHealth's envelope, never with a connection's secret.
//!
//! # Layout
//!
//! One request passes through the modules in this order:
//!
//! - [`server`]: the listeners (public and admin), HTTP/1.1 and HTTP/2,
//!   graceful shutdown.
//! - [`gate`]: the request's steps, in order: route, authenticate,
//!   authorize, fetch, render.
//! - [`route`]: strict parsing of the path into typed ids.
//! - [`token`]: credentials from headers, token sources, the token cache.
//! - [`policy`]: loading and validating the schema and policies; decisions.
//! - [`connection`]: where connections are read from: the database, or
//!   Mithril through [`upstream`] (pooled HTTP, the headers that pass).
//! - [`envelope`]: eHealth's response bodies; the one place outcomes become
//!   statuses.
//!
//! Around them: [`config`] (the command line), [`app`] (building the service
//! from its configuration), [`author`] and [`fixtures`] (what policy authors
//! run: `check`, `test`, `authorize`), [`metrics`] (what `/metrics` counts,
//! from each request's record), [`db`] (Mithril's tables, the demo data),
//! [`request_id`], [`secret`] (values that must never be printed) and
//! [`clock`].

pub mod app;
pub mod author;
pub mod clock;
pub mod config;
pub mod connection;
pub mod db;
pub mod envelope;
pub mod fixtures;
pub mod gate;
pub mod metrics;
pub mod policy;
pub mod request_id;
pub mod route;
pub mod secret;
pub mod server;
pub mod token;
pub mod upstream;
