//! The access log: one line per CONNECT, MESSAGE and DISCONNECT event, formatted by a
//! template of AWS `$context.*` variables (JSON by default), written to stdout or a file.
//!
//! The template is parsed once; an unknown variable is a configuration error. Values are
//! JSON-escaped (without quotes) so a JSON template stays valid whatever a header holds.
//! Lines go through a bounded queue to one writer task: the hot path never waits on the
//! disk, and when the queue is full a line is dropped and counted
//! (`switchboard_messages_dropped_total{reason="access_log"}`).

use std::io::Write as _;

use tokio::sync::mpsc;

use crate::config::{AccessLogSettings, ConfigError};
use crate::connections::ConnInfo;
use crate::integrations::event::{EventType, clf_time};
use crate::telemetry::metrics;

/// AWS's suggested JSON format for WebSocket access logs.
pub const DEFAULT_FORMAT: &str = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","requestTime":"$context.requestTime","eventType":"$context.eventType","routeKey":"$context.routeKey","status":"$context.status","connectionId":"$context.connectionId","integrationLatency":"$context.integrationLatency"}"#;

/// Lines that may wait for the writer.
const QUEUE: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    ApiId,
    ConnectedAt,
    ConnectionId,
    DomainName,
    EventType,
    MessageId,
    RequestId,
    RequestTime,
    RequestTimeEpoch,
    RouteKey,
    Stage,
    Status,
    IntegrationLatency,
    ErrorMessage,
    SourceIp,
    UserAgent,
    DisconnectStatusCode,
    DisconnectReason,
}

impl Var {
    fn from_name(name: &str) -> Option<Self> {
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// What one access-log line describes.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The connection.
    pub conn: &'a ConnInfo,
    /// `$context.apiId`.
    pub api_id: &'a str,
    /// CONNECT, MESSAGE or DISCONNECT.
    pub event_type: EventType,
    /// The selected route.
    pub route_key: &'a str,
    /// The request id.
    pub request_id: &'a str,
    /// MESSAGE only.
    pub message_id: Option<&'a str>,
    /// Epoch ms the event arrived.
    pub request_time_ms: i64,
    /// The status: handshake status on CONNECT, integration (or error) status on MESSAGE.
    pub status: Option<u16>,
    /// Milliseconds the integration took.
    pub integration_latency_ms: Option<f64>,
    /// What went wrong, if anything.
    pub error: Option<&'a str>,
    /// DISCONNECT only: code and reason.
    pub disconnect: Option<(u16, &'a str)>,
}

/// The configured access log.
#[derive(Debug)]
pub struct AccessLog {
    parts: Vec<Part>,
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Parses the format and starts the writer (`None` when the log is disabled).
    pub fn start(settings: &AccessLogSettings) -> Result<Option<Self>, ConfigError> {
        if !settings.enabled {
            return Ok(None);
        }
        let parts = parse(&settings.format)?;
        let mut out: Box<dyn std::io::Write + Send> = if settings.destination == "stdout" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&settings.destination)
                .map_err(|e| ConfigError::invalid("access_log.destination", e.to_string()))?;
            Box::new(std::io::BufWriter::new(file))
        };
        let (lines, mut rx) = mpsc::channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Some(line) = rx.blocking_recv() {
                    let _ = out.write_all(line.as_bytes());
                    if rx.is_empty() {
                        let _ = out.flush();
                    }
                }
                let _ = out.flush();
            })
            .map_err(|e| ConfigError::invalid("access_log", e.to_string()))?;
        Ok(Some(Self { parts, lines }))
    }

    /// Queues one line (dropped and counted when the writer is behind).
    pub fn log(&self, record: &AccessRecord<'_>) {
        let mut line = render(&self.parts, record);
        line.push('\n');
        if self.lines.try_send(line).is_err() {
            metrics::dropped("access_log", 1);
        }
    }
}

/// Checks a format without starting anything (`check-config`, reload).
pub fn validate(format: &str) -> Result<(), ConfigError> {
    parse(format).map(drop)
}

fn parse(format: &str) -> Result<Vec<Part>, ConfigError> {
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

fn render(parts: &[Part], r: &AccessRecord<'_>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(256);
    for part in parts {
        let value: String = match part {
            Part::Text(t) => {
                out.push_str(t);
                continue;
            }
            Part::Var(var) => match var {
                Var::ApiId => r.api_id.to_owned(),
                Var::ConnectedAt => r.conn.connected_at_ms.to_string(),
                Var::ConnectionId => r.conn.id_text.clone(),
                Var::DomainName => r.conn.domain_name.clone(),
                Var::EventType => r.event_type.as_str().to_owned(),
                Var::MessageId => r.message_id.unwrap_or_default().to_owned(),
                Var::RequestId => r.request_id.to_owned(),
                Var::RequestTime => clf_time(r.request_time_ms),
                Var::RequestTimeEpoch => r.request_time_ms.to_string(),
                Var::RouteKey => r.route_key.to_owned(),
                Var::Stage => r.conn.stage.to_string(),
                Var::Status => r.status.map(|s| s.to_string()).unwrap_or_default(),
                Var::IntegrationLatency => r
                    .integration_latency_ms
                    .map(|l| format!("{l:.3}"))
                    .unwrap_or_default(),
                Var::ErrorMessage => r.error.unwrap_or_default().to_owned(),
                Var::SourceIp => r.conn.source_ip.to_string(),
                Var::UserAgent => r.conn.user_agent.clone().unwrap_or_default(),
                Var::DisconnectStatusCode => {
                    r.disconnect.map(|(c, _)| c.to_string()).unwrap_or_default()
                }
                Var::DisconnectReason => r
                    .disconnect
                    .map(|(_, why)| why.to_owned())
                    .unwrap_or_default(),
            },
        };
        // JSON-escape without the surrounding quotes.
        let escaped = serde_json::to_string(&value).unwrap_or_default();
        let _ = write!(out, "{}", &escaped[1..escaped.len().saturating_sub(1)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{ConnectionId, NodeTag};

    #[test]
    fn renders_the_default_json_format() {
        let id = ConnectionId::new(NodeTag([1; 4]));
        let conn = ConnInfo {
            id,
            id_text: id.to_string(),
            connected_at_ms: 1,
            source_ip: "127.0.0.1".parse().unwrap(),
            user_agent: Some("ua \"quoted\"".into()),
            stage: "prod".into(),
            domain_name: "h".into(),
            authorizer: None,
        };
        let record = AccessRecord {
            conn: &conn,
            api_id: "api",
            event_type: EventType::Message,
            route_key: "chat",
            request_id: "R",
            message_id: Some("M"),
            request_time_ms: 1_731_324_924_561,
            status: Some(200),
            integration_latency_ms: Some(1.5),
            error: None,
            disconnect: None,
        };
        let line = render(&parse(DEFAULT_FORMAT).unwrap(), &record);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["requestId"], "R");
        assert_eq!(v["eventType"], "MESSAGE");
        assert_eq!(v["routeKey"], "chat");
        assert_eq!(v["status"], "200");
        assert_eq!(v["integrationLatency"], "1.500");
        assert_eq!(v["requestTime"], "11/Nov/2024:11:35:24 +0000");
        let ua = render(&parse("$context.identity.userAgent").unwrap(), &record);
        assert_eq!(ua, r#"ua \"quoted\""#);
    }

    #[test]
    fn unknown_variables_name_the_key() {
        let err = parse("$context.nope").unwrap_err().to_string();
        assert!(
            err.contains("access_log.format") && err.contains("nope"),
            "{err}"
        );
    }
}
