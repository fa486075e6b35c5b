//! Integrations: calling backends for CONNECT, MESSAGE and DISCONNECT events.
//!
//! One enum with a file (or folder) per kind (`http`, `mock`, `lambda`), the event
//! envelopes (`event`) and the
//! parser for proxy answers (`proxy_response`). Knows nothing about sockets: it gets an
//! [`event::Event`] and returns an [`IntegrationResponse`] or an [`IntegrationError`].

pub mod event;
pub mod http;
pub mod lambda;
pub mod mock;
pub mod proxy_response;

use std::time::Duration;

use bytes::Bytes;

use crate::config::{ConfigError, IntegrationSettings, LambdaSettings};
use event::Event;

/// A backend's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationResponse {
    /// The status that decides `$connect` (proxy `statusCode`, else the HTTP status).
    pub status: u16,
    /// A `Sec-WebSocket-Protocol` the backend chose (copied into the 101 on `$connect`).
    pub subprotocol: Option<String>,
    /// The body for a two-way route; `None` sends nothing back.
    pub body: Option<Bytes>,
    /// Whether `body` is binary.
    pub binary: bool,
    /// Groups to join or leave (`x-switchboard-join` / `x-switchboard-leave`).
    pub groups: proxy_response::GroupChanges,
}

/// Why an integration call failed.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// No answer within the integration's timeout.
    #[error("integration timed out")]
    Timeout,
    /// The backend could not be reached.
    #[error("integration unreachable: {0}")]
    Unreachable(String),
    /// The backend answered with a server error.
    #[error("integration answered {0}")]
    Status(u16),
    /// The response body could not be read, or was over the size limit.
    #[error("integration response unreadable: {0}")]
    Body(String),
    /// A proxy-shaped answer with the wrong shape.
    #[error(transparent)]
    Malformed(#[from] proxy_response::Malformed),
    /// A Lambda function failed as Lambda reports it: it threw, timed out, crashed, failed
    /// its init, or was throttled.
    #[error(transparent)]
    Lambda(#[from] lambda::LambdaError),
}

impl IntegrationError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::Status(_) => "status",
            Self::Body(_) => "body",
            Self::Malformed(_) => "malformed",
            Self::Lambda(e) => e.kind(),
        }
    }

    /// The HTTP status a failed `$connect` answers with: 504 for a timeout, the backend's
    /// own status for a server error, 502 for everything else — a Lambda function's
    /// failure included, its own timeout too (as AWS answers a `$connect` Lambda that
    /// throws or times out).
    pub fn connect_status(&self) -> u16 {
        match self {
            Self::Timeout => 504,
            Self::Status(s) => *s,
            _ => 502,
        }
    }
}

/// A mock template that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// One configured integration.
#[derive(Debug, Clone)]
pub enum Integration {
    /// An HTTP backend.
    Http(Box<http::HttpIntegration>),
    /// A static template.
    Mock(mock::MockIntegration),
    /// An AWS Lambda handler run by local workers.
    Lambda(lambda::LambdaIntegration),
}

impl Integration {
    /// Builds integration `name` from its settings (`lambda`: how workers are launched).
    pub fn from_settings(
        name: &str,
        settings: &IntegrationSettings,
        client: &http::HttpClient,
        lambda: &LambdaSettings,
    ) -> Result<Self, ConfigError> {
        match settings {
            IntegrationSettings::Http {
                url,
                mode,
                timeout_ms,
                max_response_bytes,
            } => {
                let uri = url.parse().map_err(|e: ::http::uri::InvalidUri| {
                    ConfigError::invalid(format!("integrations.{name}.url"), e.to_string())
                })?;
                Ok(Self::Http(Box::new(http::HttpIntegration::new(
                    uri,
                    *mode,
                    Duration::from_millis(*timeout_ms),
                    *max_response_bytes,
                    client.clone(),
                ))))
            }
            IntegrationSettings::Mock { template, status } => Ok(Self::Mock(
                mock::MockIntegration::new(template, *status).map_err(|e| {
                    ConfigError::invalid(format!("integrations.{name}.template"), e.0)
                })?,
            )),
            IntegrationSettings::Lambda(function) => Ok(Self::Lambda(
                lambda::LambdaIntegration::new(name, function, lambda)?,
            )),
        }
    }

    /// Calls the integration. `body` is the message as received (lets a mock echo it
    /// without copying).
    pub async fn call(
        &self,
        event: &Event<'_>,
        body: Option<&Bytes>,
    ) -> Result<IntegrationResponse, IntegrationError> {
        match self {
            Self::Http(h) => h.call(event).await,
            Self::Mock(m) => Ok(m.call(event, body)),
            Self::Lambda(l) => l.call(event).await,
        }
    }

    /// Whether calls reach a backend (mock calls never fail and cost no I/O).
    pub fn is_mock(&self) -> bool {
        matches!(self, Self::Mock(_))
    }
}
