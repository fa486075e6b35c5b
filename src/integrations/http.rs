//! The `http` integration: calls a backend over one pooled keep-alive HTTP client.
//!
//! Proxy mode POSTs the Lambda-proxy event JSON; passthrough mode POSTs the raw message
//! with the connection id, route key and request id as headers. A transport status of 500
//! or more is an integration error; anything else is an answer (its proxy `statusCode`, if
//! it has one, decides `$connect`). Every request carries `traceparent` (the connection's
//! trace id, a fresh span id), so a backend's traces join the gateway's.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::event::{Event, EventDetail};
use super::{IntegrationError, IntegrationResponse, proxy_response};
use crate::config::{HttpClientSettings, HttpMode};

/// The shared client: pooled, keep-alive, http and https.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the one HTTP client every integration shares, its keep-alive pool bounded by
/// `[http_client]`: at most `max_idle_per_host` idle connections per host, each closed
/// after `idle_timeout_ms` idle.
pub fn build_client(pool: &HttpClientSettings) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring supports the default protocol versions")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .pool_idle_timeout(Duration::from_millis(pool.idle_timeout_ms))
        // Without a timer the pool only drops an expired connection when it is next
        // checked out, so after a burst the idle ones would stay open indefinitely.
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// W3C Trace Context: every call carries the connection's trace id and a fresh span id.
pub const TRACEPARENT: &str = "traceparent";

/// Headers of passthrough mode.
pub mod headers {
    /// The connection id.
    pub const CONNECTION_ID: &str = "x-switchboard-connection-id";
    /// The selected route key.
    pub const ROUTE_KEY: &str = "x-switchboard-route-key";
    /// The request id.
    pub const REQUEST_ID: &str = "x-switchboard-request-id";
    /// CONNECT, MESSAGE or DISCONNECT.
    pub const EVENT_TYPE: &str = "x-switchboard-event-type";
    /// The stage.
    pub const STAGE: &str = "x-switchboard-stage";
    /// DISCONNECT only: the close code.
    pub const DISCONNECT_CODE: &str = "x-switchboard-disconnect-status-code";
    /// DISCONNECT only: the close reason.
    pub const DISCONNECT_REASON: &str = "x-switchboard-disconnect-reason";
    /// MESSAGE only: the body is base64 of a binary frame.
    pub const BASE64: &str = "x-switchboard-is-base64-encoded";
}

/// An HTTP backend.
#[derive(Debug, Clone)]
pub struct HttpIntegration {
    uri: Uri,
    mode: HttpMode,
    timeout: Duration,
    max_response_bytes: usize,
    client: HttpClient,
}

impl HttpIntegration {
    /// An integration calling `uri` through `client`.
    pub fn new(
        uri: Uri,
        mode: HttpMode,
        timeout: Duration,
        max_response_bytes: usize,
        client: HttpClient,
    ) -> Self {
        Self {
            uri,
            mode,
            timeout,
            max_response_bytes,
            client,
        }
    }

    /// Calls the backend for `event`.
    pub async fn call(&self, event: &Event<'_>) -> Result<IntegrationResponse, IntegrationError> {
        let request = self.request(event)?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| IntegrationError::Unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            let header_subprotocol = response
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut header_groups = proxy_response::GroupChanges::default();
            for (name, value) in response.headers() {
                if let Ok(value) = value.to_str() {
                    header_groups.add_header(name.as_str(), value);
                }
            }
            let body = Limited::new(response.into_body(), self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| IntegrationError::Body(e.to_string()))?
                .to_bytes();
            Ok::<_, IntegrationError>((status, header_subprotocol, header_groups, body))
        };
        let (status, header_subprotocol, header_groups, body) =
            tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| IntegrationError::Timeout)??;
        if status >= 500 {
            return Err(IntegrationError::Status(status));
        }
        let parsed = match self.mode {
            HttpMode::Proxy => proxy_response::parse(body)?,
            HttpMode::Passthrough => proxy_response::ProxyResult {
                status: None,
                subprotocol: None,
                body: (!body.is_empty()).then_some(body),
                binary: false,
                groups: Default::default(),
            },
        };
        let mut groups = parsed.groups;
        groups.join.extend(header_groups.join);
        groups.leave.extend(header_groups.leave);
        let effective = match parsed.status {
            Some(proxy_status) if (200..300).contains(&status) => proxy_status,
            _ => status,
        };
        Ok(IntegrationResponse {
            status: effective,
            subprotocol: parsed.subprotocol.or(header_subprotocol),
            body: parsed.body,
            binary: parsed.binary,
            groups,
        })
    }

    fn request(&self, event: &Event<'_>) -> Result<Request<Full<Bytes>>, IntegrationError> {
        let builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::USER_AGENT, "switchboard")
            .header(TRACEPARENT, event.conn.trace_id.child_traceparent());
        let request = match self.mode {
            HttpMode::Proxy => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(event.to_proxy_json()))),
            HttpMode::Passthrough => {
                let mut builder = builder
                    .header(headers::CONNECTION_ID, event.conn.id_text.as_str())
                    .header(headers::ROUTE_KEY, header_value(event.route_key))
                    .header(headers::REQUEST_ID, event.request_id)
                    .header(headers::EVENT_TYPE, event.event_type().as_str())
                    .header(headers::STAGE, &*event.conn.stage);
                let body = match event.detail {
                    EventDetail::Message {
                        body, is_base64, ..
                    } => {
                        if is_base64 {
                            builder = builder.header(headers::BASE64, "true");
                        }
                        Bytes::copy_from_slice(body.as_bytes())
                    }
                    EventDetail::Disconnect { code, reason } => {
                        builder = builder
                            .header(headers::DISCONNECT_CODE, code)
                            .header(headers::DISCONNECT_REASON, header_value(reason));
                        Bytes::new()
                    }
                    EventDetail::Connect { .. } => Bytes::new(),
                };
                builder.body(Full::new(body))
            }
        };
        request.map_err(|e| IntegrationError::Unreachable(e.to_string()))
    }
}

/// A header value from arbitrary text: invalid bytes become `?` rather than failing.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        let cleaned: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        HeaderValue::from_str(&cleaned).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

/// The error and its sources in one line (hyper's top-level message alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
