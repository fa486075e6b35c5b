//! Switchboard: a self-hosted WebSocket API gateway compatible with Amazon API Gateway's
//! WebSocket APIs.
//!
//! Clients connect over WebSocket ([`edge`]); each message is routed by a selection
//! expression ([`routing`]) to a backend ([`integrations`]); backends push to any
//! connection through the management API ([`management`]), which reaches sessions through
//! the local registry ([`connections`]). [`app::run`] serves it all until shutdown.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod bucket;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod edge;
pub mod import;
pub mod integrations;
pub mod lifecycle;
pub mod management;
pub mod routing;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod tls;
