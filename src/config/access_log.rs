//! The access log's format: a template of AWS `$context.*` variables, parsed once when the
//! configuration is loaded (an unknown variable names `access_log.format`). Rendering a
//! line is `crate::telemetry::access_log`'s job.

use super::ConfigError;

/// AWS's suggested JSON format for WebSocket access logs.
pub const DEFAULT_FORMAT: &str = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","requestTime":"$context.requestTime","eventType":"$context.eventType","routeKey":"$context.routeKey","status":"$context.status","connectionId":"$context.connectionId","integrationLatency":"$context.integrationLatency"}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A `$context.*` variable an access-log line can carry.
pub enum Var {
    /// `$context.apiId`.
    ApiId,
    /// `$context.connectedAt`.
    ConnectedAt,
    /// `$context.connectionId`.
    ConnectionId,
    /// `$context.domainName`.
    DomainName,
    /// `$context.eventType`.
    EventType,
    /// `$context.messageId`.
    MessageId,
    /// `$context.requestId` (or `extendedRequestId`).
    RequestId,
    /// `$context.requestTime` (CLF).
    RequestTime,
    /// `$context.requestTimeEpoch`.
    RequestTimeEpoch,
    /// `$context.routeKey`.
    RouteKey,
    /// `$context.stage`.
    Stage,
    /// `$context.status` (or `integration.status`, `integrationStatus`).
    Status,
    /// `$context.integrationLatency` (or `integration.latency`).
    IntegrationLatency,
    /// `$context.error.message` (or `error.messageString`, `integration.error`).
    ErrorMessage,
    /// `$context.identity.sourceIp`.
    SourceIp,
    /// `$context.identity.userAgent`.
    UserAgent,
    /// `$context.disconnectStatusCode`.
    DisconnectStatusCode,
    /// `$context.disconnectReason`.
    DisconnectReason,
}

impl Var {
    /// The variable a name (after `$context.`) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "apiId" => Self::ApiId,
            "connectedAt" => Self::ConnectedAt,
            "connectionId" => Self::ConnectionId,
            "domainName" => Self::DomainName,
            "eventType" => Self::EventType,
            "messageId" => Self::MessageId,
            "requestId" | "extendedRequestId" => Self::RequestId,
            "requestTime" => Self::RequestTime,
            "requestTimeEpoch" => Self::RequestTimeEpoch,
            "routeKey" => Self::RouteKey,
            "stage" => Self::Stage,
            "status" | "integration.status" | "integrationStatus" => Self::Status,
            "integrationLatency" | "integration.latency" => Self::IntegrationLatency,
            "error.message" | "error.messageString" | "integration.error" => Self::ErrorMessage,
            "identity.sourceIp" => Self::SourceIp,
            "identity.userAgent" => Self::UserAgent,
            "disconnectStatusCode" => Self::DisconnectStatusCode,
            "disconnectReason" => Self::DisconnectReason,
            _ => return None,
        })
    }
}

/// A piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Text(String),
    /// A variable, rendered JSON-escaped.
    Var(Var),
}

/// Parses a format; an unknown variable is an error naming `access_log.format`.
pub fn parse(format: &str) -> Result<Vec<Part>, ConfigError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(pos) = rest.find("$context.") {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + "$context.".len()..];
        let len = after
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric()
                    || (c == '.' && after[i + 1..].starts_with(|n: char| n.is_ascii_alphabetic())))
            })
            .map_or(after.len(), |(i, _)| i);
        let name = &after[..len];
        let var = Var::from_name(name).ok_or_else(|| {
            ConfigError::invalid(
                "access_log.format",
                format!("unknown variable $context.{name}"),
            )
        })?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Var(var));
        rest = &after[len..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}
