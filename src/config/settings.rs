//! The typed settings tree: every key the gateway reads, its default, and what it means.
//!
//! `config/default.toml` mirrors this file key for key (a unit test keeps them equal), so
//! an operator can read either. Nothing here does I/O; loading lives in `config::load`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

/// The whole configuration of one gateway node.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The WebSocket API: its id, stages and route selection.
    pub api: ApiSettings,
    /// The client-facing WebSocket listener and per-connection limits.
    pub client: ClientSettings,
    /// The management (callback) API listener and how callers authenticate.
    pub management: ManagementSettings,
    /// Logging.
    pub log: LogSettings,
    /// Process-level settings.
    pub server: ServerSettings,
    /// Clustering: the Redis backplane (empty `redis_url`: one node, in memory).
    pub cluster: ClusterSettings,
    /// The access log: one line per CONNECT, MESSAGE and DISCONNECT.
    pub access_log: AccessLogSettings,
    /// Throttles and node-wide caps (all off by default; see docs/limits.md).
    pub limits: super::LimitsSettings,
    /// Who may connect: origin allowlist, authorizer, API keys (see docs/auth.md).
    pub auth: super::AuthSettings,
    /// Route key → route. Keys are custom route keys or `$connect`, `$disconnect`, `$default`.
    pub routes: BTreeMap<String, RouteSettings>,
    /// Integration name → how to call it. Routes refer to integrations by name.
    pub integrations: BTreeMap<String, IntegrationSettings>,
    /// The one outbound HTTP client (integrations, the authorizer, JWKS fetches): how many
    /// idle keep-alive connections it keeps, and for how long.
    pub http_client: HttpClientSettings,
    /// How `lambda` integrations launch their workers (see docs/lambda.md).
    pub lambda: super::LambdaSettings,
    /// Resumable sessions (see docs/resume.md); off by default.
    pub resume: super::ResumeSettings,
}

/// `[api]`: identity of the API and how messages pick a route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Reported as `requestContext.apiId`.
    pub id: String,
    /// Stage names accepted as the first path segment; `/` means the first one.
    pub stages: Vec<String>,
    /// The AWS route selection expression, e.g. `$request.body.action`.
    pub route_selection_expression: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            id: "switchboard".into(),
            stages: vec!["prod".into()],
            route_selection_expression: "$request.body.action".into(),
        }
    }
}

/// What the gateway does with a binary frame from a client.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BinaryFrames {
    /// Close the connection with 1003 (AWS behaviour).
    Reject,
    /// Route it to `$default` with the payload base64-encoded and `isBase64Encoded: true`.
    Base64,
}

/// `[client]`: the WebSocket listener, handshake limits and per-connection limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// Address the WebSocket listener binds.
    pub listen: SocketAddr,
    /// Deadline for reading the request line and headers of a handshake (slowloris guard).
    pub header_timeout_ms: u64,
    /// Deadline for the whole handshake, `$connect` integration included, until the 101.
    pub handshake_timeout_ms: u64,
    /// Largest request line + headers accepted, in bytes (at least 8192). Over it: 431.
    pub max_header_bytes: usize,
    /// Most headers accepted on a handshake. Over it: 431.
    pub max_headers: usize,
    /// Bytes of tungstenite's read buffer, allocated per connection.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before a write is pushed to the socket (0: write each frame at once).
    pub write_buffer_bytes: usize,
    /// Largest frame a client may send, in bytes. Over it: close 1009.
    pub max_frame_bytes: usize,
    /// Largest (reassembled) message a client may send, and the largest POST body. Over it:
    /// close 1009, or 413 on the management API.
    pub max_message_bytes: usize,
    /// Most frames one message from a client may have (its first frame and its
    /// continuations; control frames between them do not count). Over it: close 1009.
    pub max_fragments_per_message: u32,
    /// What a binary frame from a client does.
    pub binary_frames: BinaryFrames,
    /// Seconds without a data frame in either direction before the gateway closes with 1001.
    pub idle_timeout_secs: u64,
    /// Seconds a connection may live before the gateway closes it with 1001.
    pub max_lifetime_secs: u64,
    /// Send a ping this often and close a peer that has not answered the previous one (0: off).
    pub ping_interval_secs: u64,
    /// Whether ping and pong frames from the client reset the idle timer (AWS: no).
    pub pings_count_as_activity: bool,
    /// Messages that may wait in one connection's outbound queue. Full: POST answers 429.
    pub outbound_queue_messages: usize,
    /// Bytes that may wait in one connection's outbound queue. Full: POST answers 429.
    pub outbound_queue_bytes: usize,
    /// Milliseconds a write to a client may stay blocked (the client is not reading) before
    /// the gateway closes it with 1013.
    pub slow_consumer_grace_ms: u64,
    /// Integration calls one connection may have in flight; at the cap the gateway stops
    /// reading that connection until a call finishes (TCP pushes back on the client).
    pub max_inflight_per_connection: usize,
    /// Deepest JSON nesting evaluated by route selection (1–127); deeper gets a `Bad request body` frame.
    pub max_json_depth: usize,
    /// TLS on the WebSocket listener (`wss://`); off when both files are empty.
    pub tls: super::TlsSettings,
    /// The public host reported as `requestContext.domainName` (handlers build the
    /// callback URL `https://{domainName}/{stage}` from it); empty: the handshake's `Host`.
    pub public_host: String,
    /// Load balancers and proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Port` are believed (IP addresses or CIDR blocks). Behind one,
    /// `identity.sourceIp` is the rightmost forwarded address that is not itself trusted.
    pub trusted_proxies: Vec<super::IpRange>,
    /// Also serve `POST|GET|DELETE /{stage}/@connections/{id}` on this listener, as AWS
    /// does, with the management API's authentication (never with `management.auth =
    /// "none"`). Read at startup.
    pub callbacks: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            header_timeout_ms: 10_000,
            handshake_timeout_ms: 35_000,
            max_header_bytes: 10_240,
            max_headers: 64,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 0,
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            max_fragments_per_message: 4096,
            binary_frames: BinaryFrames::Reject,
            idle_timeout_secs: 600,
            max_lifetime_secs: 7200,
            ping_interval_secs: 0,
            pings_count_as_activity: false,
            outbound_queue_messages: 256,
            outbound_queue_bytes: 1024 * 1024,
            slow_consumer_grace_ms: 10_000,
            max_inflight_per_connection: 16,
            max_json_depth: 64,
            tls: super::TlsSettings::default(),
            public_host: String::new(),
            trusted_proxies: Vec::new(),
            callbacks: false,
        }
    }
}

/// `[http_client]`: the keep-alive pool of the outbound HTTP client every integration, the
/// HTTP authorizer and JWKS fetches share.
///
/// After a burst (say, many `$disconnect` calls at once) the client holds one connection
/// per call that ran concurrently; these two settings bound what stays open afterwards.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpClientSettings {
    /// Idle connections kept per backend host (scheme, host and port); a connection
    /// returned to a full pool is closed. 0 keeps none (every call opens a connection).
    pub max_idle_per_host: usize,
    /// Milliseconds an idle connection is kept (100–3600000). It is closed between this
    /// and twice this after its last call (the pool checks once per period).
    pub idle_timeout_ms: u64,
}

impl Default for HttpClientSettings {
    fn default() -> Self {
        Self {
            max_idle_per_host: 32,
            idle_timeout_ms: 30_000,
        }
    }
}

/// How management callers authenticate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ManagementAuth {
    /// `Authorization: Bearer <token>` with one of `bearer_tokens`.
    Bearer,
    /// AWS Signature Version 4 with one of `sigv4.access_keys`.
    Sigv4,
    /// Either a bearer token or a SigV4 signature.
    Both,
    /// No authentication at all. Only for a listener nobody else can reach.
    None,
}

/// `[management]`: the callback API for backends.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ManagementSettings {
    /// Address the management listener binds.
    pub listen: SocketAddr,
    /// Authentication mode; `none` must be chosen explicitly.
    pub auth: ManagementAuth,
    /// Accepted bearer tokens (several, so a token can be rotated).
    pub bearer_tokens: Vec<Secret>,
    /// SigV4 credentials and region (`auth = "sigv4"` or `"both"`).
    pub sigv4: super::SigV4Settings,
    /// TLS on the management listener; off when both files are empty.
    pub tls: super::TlsSettings,
}

impl Default for ManagementSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".parse().expect("static address"),
            auth: ManagementAuth::Bearer,
            bearer_tokens: Vec::new(),
            sigv4: super::SigV4Settings::default(),
            tls: super::TlsSettings::default(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter directive such as `info` or `switchboard=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[server]`: process lifecycle.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Seconds SIGTERM/SIGINT waits for sessions to close and `$disconnect` calls to finish.
    pub shutdown_grace_secs: u64,
    /// Seconds over which a draining node closes its connections (1012); 0 closes them all
    /// at once (1001 on a signal).
    pub drain_period_secs: u64,
    /// Reload the configuration file when it changes (SIGHUP always reloads).
    pub watch_config: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 10,
            drain_period_secs: 0,
            watch_config: false,
        }
    }
}

/// `[access_log]`: one line per event, formatted from `$context.*` variables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogSettings {
    /// Write the access log.
    pub enabled: bool,
    /// `stdout` or a file path (appended to).
    pub destination: String,
    /// The line template (AWS `$context.*` variables; JSON by default).
    pub format: String,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            destination: "stdout".into(),
            format: super::access_log::DEFAULT_FORMAT.into(),
        }
    }
}

/// `[cluster]`: sharing connection state between nodes through Redis.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://[:password@]host:port[/db]` or `rediss://` for TLS: one Redis server. Empty
    /// (and no `redis_cluster_nodes`) runs one node in memory.
    pub redis_url: Secret,
    /// Seed nodes of a Redis Cluster (`redis://[:password@]host:port` or `rediss://`), in
    /// place of `redis_url`: the gateway discovers the rest, uses sharded pub/sub, and
    /// follows failovers and slot migrations. Password and TLS come from the first URL.
    pub redis_cluster_nodes: Vec<Secret>,
    /// A PEM file of the certificate authorities to trust for `rediss://` (empty: the
    /// public WebPKI roots), for a Redis behind a private CA.
    pub redis_ca_file: String,
    /// Prefix of every Redis key and channel, so several gateways can share one Redis.
    pub key_prefix: String,
    /// Milliseconds a node's lease lives without a refresh; a node silent that long is dead.
    pub lease_ttl_ms: u64,
    /// Milliseconds a cross-node call waits for the owning node's acknowledgement (then 503).
    pub request_timeout_ms: u64,
    /// Registry writes (connect, disconnect, join, leave) waiting for Redis; when full they
    /// are dropped and the node resynchronises everything on its next lease refresh.
    pub write_queue: usize,
}

impl ClusterSettings {
    /// Whether nodes share state through Redis (a server or a cluster) rather than run
    /// alone in memory.
    pub fn uses_redis(&self) -> bool {
        !self.redis_url.expose().is_empty() || !self.redis_cluster_nodes.is_empty()
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: Secret::new(""),
            redis_cluster_nodes: Vec::new(),
            redis_ca_file: String::new(),
            key_prefix: "sb".into(),
            lease_ttl_ms: 5000,
            request_timeout_ms: 2000,
            write_queue: 65536,
        }
    }
}

/// One route: which integration it calls and whether the answer goes back to the client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Name of an entry in `[integrations]`.
    pub integration: String,
    /// Send the integration's response body back to the caller as a frame.
    #[serde(default)]
    pub two_way: bool,
}

/// How an HTTP integration shapes its request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// POST the Lambda-proxy event JSON (AWS `AWS_PROXY` shape).
    Proxy,
    /// POST the raw message, with the connection id, route key and request id as headers.
    Passthrough,
}

/// One integration (a backend), by type.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum IntegrationSettings {
    /// An HTTP backend.
    Http {
        /// The URL the gateway POSTs to (http or https).
        url: String,
        /// `proxy` or `passthrough`.
        #[serde(default = "default_http_mode")]
        mode: HttpMode,
        /// Milliseconds before the call is abandoned (AWS: 50–29000, default 29000).
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Largest response body read from the backend; larger is an integration error.
        #[serde(default = "default_max_response_bytes")]
        max_response_bytes: usize,
    },
    /// No backend: a template with `$context.*` variables and `$input.body` substituted.
    Mock {
        /// The response body template.
        #[serde(default)]
        template: String,
        /// The status the mock answers (decides `$connect`).
        #[serde(default = "default_mock_status")]
        status: u16,
    },
    /// An AWS Lambda handler run unchanged by local worker processes (AWS's Runtime
    /// Interface Clients, served the Lambda Runtime API; see docs/lambda.md).
    Lambda(super::LambdaFunctionSettings),
}

fn default_http_mode() -> HttpMode {
    HttpMode::Proxy
}
fn default_timeout_ms() -> u64 {
    29_000
}
fn default_max_response_bytes() -> usize {
    6 * 1024 * 1024
}
fn default_mock_status() -> u16 {
    200
}

/// A secret string: its `Debug` and `Display` never show the value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for comparison; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
