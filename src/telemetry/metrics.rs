//! Prometheus metrics, through the `metrics` facade and its Prometheus exporter.
//!
//! Names follow AWS where AWS has them, so dashboards carry over: `ConnectCount`,
//! `MessageCount`, `IntegrationError`, `ClientError`, `ExecutionError` (counters) and
//! `IntegrationLatency` (histogram, milliseconds, as CloudWatch reports it), labelled by
//! `stage` and `route`. What AWS lacks is prefixed `switchboard_`. The recorder is global
//! and installed once by the binary; without it every call here is a no-op.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once per process; later calls do nothing).
pub fn install(api_id: &str) {
    if HANDLE.get().is_some() {
        return;
    }
    let ms_buckets = [
        1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        29000.0,
    ];
    let seconds_buckets = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let builder = PrometheusBuilder::new()
        .add_global_label("api_id", api_id)
        .set_buckets_for_metric(Matcher::Full(INTEGRATION_LATENCY.into()), &ms_buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds_buckets)
        });
    match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => {
            let _ = HANDLE.set(handle);
        }
        Err(error) => tracing::warn!(%error, "metrics recorder not installed"),
    }
}

/// The exposition text for `/metrics` (`None` when no recorder is installed).
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Messages sent to the `$connect` stage (handshakes that passed the upgrade checks).
pub const CONNECT_COUNT: &str = "ConnectCount";
/// Messages to or from clients, callbacks included (`direction` = in | out).
pub const MESSAGE_COUNT: &str = "MessageCount";
/// Integration answers with a 4xx/5xx status.
pub const INTEGRATION_ERROR: &str = "IntegrationError";
/// 4xx answers given before an integration was called.
pub const CLIENT_ERROR: &str = "ClientError";
/// Failures calling an integration (unreachable, timeout, malformed answer).
pub const EXECUTION_ERROR: &str = "ExecutionError";
/// Milliseconds an integration took to answer.
pub const INTEGRATION_LATENCY: &str = "IntegrationLatency";

/// A handshake reached the `$connect` stage.
pub fn connect_attempt(stage: &str) {
    counter!(CONNECT_COUNT, "stage" => stage.to_owned(), "route" => "$connect").increment(1);
}

/// A handshake ended with `status` (101 accepted, else the rejection).
pub fn handshake(status: u16) {
    counter!("switchboard_handshakes_total", "status" => status.to_string()).increment(1);
}

/// A 4xx answer before any integration ran.
pub fn client_error(stage: &str, route: &str, reason: &'static str) {
    counter!(CLIENT_ERROR, "stage" => stage.to_owned(), "route" => route.to_owned(), "reason" => reason).increment(1);
}

/// A message from a client was routed to `route`.
pub fn message_in(stage: &str, route: &str) {
    counter!(MESSAGE_COUNT, "stage" => stage.to_owned(), "route" => route.to_owned(), "direction" => "in").increment(1);
}

/// `n` frames were written to a client.
pub fn messages_out(n: u64) {
    static OUT: OnceLock<Counter> = OnceLock::new();
    OUT.get_or_init(|| counter!(MESSAGE_COUNT, "direction" => "out"))
        .increment(n);
}

/// One route's metric handles for one stage, registered once (a lookup by name and labels
/// per message would cost more than the message).
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// The stage they are labelled with.
    pub stage: Arc<str>,
    message_in: Counter,
    latency: Histogram,
    integration_error: Counter,
}

impl RouteMetrics {
    /// Registers the handles of `route` on `stage` (call after [`install`]).
    pub fn new(stage: &str, route: &str) -> Self {
        let labels = [("stage", stage.to_owned()), ("route", route.to_owned())];
        Self {
            stage: stage.into(),
            message_in: counter!(
                MESSAGE_COUNT,
                &[
                    ("stage", stage.to_owned()),
                    ("route", route.to_owned()),
                    ("direction", "in".to_owned()),
                ]
            ),
            latency: histogram!(INTEGRATION_LATENCY, &labels),
            integration_error: counter!(INTEGRATION_ERROR, &labels),
        }
    }

    /// A message was routed here.
    pub fn message_in(&self) {
        self.message_in.increment(1);
    }

    /// The integration answered with `status` after `latency_ms`.
    pub fn integration_answer(&self, status: u16, latency_ms: f64) {
        self.latency.record(latency_ms);
        if status >= 400 {
            self.integration_error.increment(1);
        }
    }
}

/// An integration answered with `status` after `latency_ms`.
pub fn integration_answer(stage: &str, route: &str, status: u16, latency_ms: f64) {
    histogram!(INTEGRATION_LATENCY, "stage" => stage.to_owned(), "route" => route.to_owned())
        .record(latency_ms);
    if status >= 400 {
        counter!(INTEGRATION_ERROR, "stage" => stage.to_owned(), "route" => route.to_owned())
            .increment(1);
    }
}

/// Calling an integration failed.
pub fn execution_error(stage: &str, route: &str, reason: &'static str) {
    counter!(EXECUTION_ERROR, "stage" => stage.to_owned(), "route" => route.to_owned(), "reason" => reason).increment(1);
}

/// A connection was registered on this node.
pub fn connection_opened() {
    gauge!("switchboard_connections").increment(1.0);
    counter!("switchboard_connections_opened_total").increment(1);
}

/// A connection closed with `code`.
pub fn connection_closed(code: u16) {
    // The counter first: a scrape that sees the gauge down also sees the close counted.
    counter!("switchboard_disconnects_total", "code" => code.to_string()).increment(1);
    gauge!("switchboard_connections").decrement(1.0);
}

/// A resumable session moved to another node (a resume reached it there): it leaves this
/// node's count of connections without a close.
pub fn connection_moved() {
    counter!("switchboard_sessions_moved_total").increment(1);
    gauge!("switchboard_connections").decrement(1.0);
}

/// A resumable session's socket dropped and the session was kept (suspended: +1), or a
/// suspended session resumed or ended (-1).
pub fn suspended(delta: f64) {
    gauge!("switchboard_sessions_suspended").increment(delta);
}

/// A resume attempt and how it went: `resumed`, or the reason the client starts fresh.
pub fn resume_attempt(result: &'static str) {
    counter!("switchboard_resumes_total", "result" => result).increment(1);
}

/// Bytes waiting in outbound queues now (set when metrics are scraped).
pub fn queue_bytes(total: f64) {
    gauge!("switchboard_outbound_queue_bytes").set(total);
}

/// A message was dropped or refused, by reason (`queue_full`, `broadcast_queue_full`,
/// `slow_consumer`, `gone`, `throttled`, …).
pub fn dropped(reason: &'static str, n: u64) {
    counter!("switchboard_messages_dropped_total", "reason" => reason).increment(n);
}

/// Whether the cluster backplane is usable (1) or not (0).
pub fn backplane_connected(connected: bool) {
    gauge!("switchboard_backplane_connected").set(if connected { 1.0 } else { 0.0 });
}

/// A cross-node request took `seconds` (`outcome` = ok | gone | full | unavailable | malformed).
pub fn backplane_request(seconds: f64, outcome: &'static str) {
    histogram!("switchboard_backplane_request_seconds", "outcome" => outcome).record(seconds);
}

/// Which way a backplane message went: published by this node, or received by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from Redis.
    In,
    /// Published to Redis.
    Out,
}

/// What a backplane message carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneKind {
    /// An operation on another node's connection.
    Request,
    /// The owner's answer to a request.
    Reply,
    /// A broadcast to one group's members.
    Group,
    /// A broadcast to every connection.
    Broadcast,
}

/// One backplane message of `kind`, `bytes` long (as published, or as received), went
/// `direction`. Handles are registered once: this runs per message.
pub fn backplane_message(direction: Direction, kind: BackplaneKind, bytes: usize) {
    type Handles = [[(Counter, Counter); 4]; 2];
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        let pair = |direction: &'static str, kind: &'static str| {
            (
                counter!("switchboard_backplane_messages_total", "direction" => direction, "kind" => kind),
                counter!("switchboard_backplane_bytes_total", "direction" => direction, "kind" => kind),
            )
        };
        let kinds = |direction| {
            ["request", "reply", "group", "broadcast"].map(|kind| pair(direction, kind))
        };
        [kinds("in"), kinds("out")]
    });
    let (messages, total) = &handles[direction as usize][kind as usize];
    messages.increment(1);
    total.increment(bytes as u64);
}

/// How many group channels this node is subscribed to now.
pub fn backplane_group_subscriptions(n: usize) {
    gauge!("switchboard_backplane_group_subscriptions").set(n as f64);
}

/// What this node remembers of other nodes, to reap them even if Redis forgets them:
/// how many nodes and how many of their connection records (and those records' bytes).
pub fn backplane_remembered(nodes: usize, connections: usize, bytes: usize) {
    gauge!("switchboard_backplane_remembered_nodes").set(nodes as f64);
    gauge!("switchboard_backplane_remembered_connections").set(connections as f64);
    gauge!("switchboard_backplane_remembered_bytes").set(bytes as f64);
}

/// A configuration reload was attempted (`result` = ok | error).
pub fn reload(result: &'static str) {
    counter!("switchboard_config_reloads_total", "result" => result).increment(1);
}

/// Whether the node is draining (1) or serving (0).
pub fn draining(on: bool) {
    gauge!("switchboard_draining").set(if on { 1.0 } else { 0.0 });
}
