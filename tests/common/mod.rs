//! Test harness, one file per component the integration tests run for real:
//!
//! - `gateway`: the `switchboard` binary as a process on 127.0.0.1:0, its configuration,
//!   logs and signals;
//! - `inprocess`: the gateway as a task of the test's runtime, for tests on paused time;
//! - `endpoints`: the two addresses both kinds of gateway deref to;
//! - `client`: WebSocket clients (tokio-tungstenite) and waiting for what they receive;
//! - `management`: the management API, every request authenticated in one place;
//! - `backend`: HTTP backends (axum) that record every request, and the example chat
//!   backend;
//! - `redis`: a real `redis-server` for cluster mode;
//! - `redis_cluster`: a real Redis Cluster (three masters, three replicas);
//! - `haproxy`: a real `haproxy` in front of several gateways;
//! - `resume`: clients of resumable sessions, and the scenario of a session moving
//!   between live nodes;
//! - [`raw`]: WebSocket frames written by hand.
//!
//! Everything is re-exported here under one flat namespace, so tests `use common::*;`.
#![allow(dead_code)]

mod backend;
mod client;
mod endpoints;
mod gateway;
mod haproxy;
mod inprocess;
mod management;
pub mod raw;
mod redis;
mod redis_cluster;
mod resume;

// Each test binary uses only some of these: no `unused_imports` warning for the rest.
#[allow(unused_imports)]
pub use backend::{Backend, ChatBackend, Received, Responder};
#[allow(unused_imports)]
pub use client::{
    Client, eventually, expect_close, expect_silence, next_message, next_text, test_ca_connector,
};
#[allow(unused_imports)]
pub use endpoints::Endpoints;
#[allow(unused_imports)]
pub use gateway::{
    Gateway, TOKEN, WHOAMI, base_config, check_config, check_config_file, compose_config,
};
#[allow(unused_imports)]
pub use haproxy::{Haproxy, free_port};
#[allow(unused_imports)]
pub use inprocess::InProcess;
#[allow(unused_imports)]
pub use management::{list_pages, sample};
#[allow(unused_imports)]
pub use redis::{RedisServer, cluster_config, node_of, nodes};
#[allow(unused_imports)]
pub use redis_cluster::{
    NODE_TIMEOUT_MS, RedisCluster, cluster_nodes, redis_cluster_config, slot_of,
};
#[allow(unused_imports)]
pub use resume::*;
