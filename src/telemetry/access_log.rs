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

use crate::config::access_log::{Part, Var, parse};
use crate::config::{AccessLogSettings, ConfigError};
use crate::integrations::event::{Event, clf_time};
use crate::telemetry::metrics;

/// Lines that may wait for the writer.
const QUEUE: usize = 8192;

/// What one access-log line describes: an event and what came of it.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The event (connection, route, request and message ids, time, close).
    pub event: &'a Event<'a>,
    /// The status: handshake status on CONNECT, integration (or error) status on MESSAGE.
    pub status: Option<u16>,
    /// Milliseconds the integration took.
    pub integration_latency_ms: Option<f64>,
    /// What went wrong, if anything.
    pub error: Option<&'a str>,
}

impl<'a> AccessRecord<'a> {
    /// The line of `event` with nothing known yet of its outcome (a DISCONNECT).
    pub fn of(event: &'a Event<'a>) -> Self {
        Self {
            event,
            status: None,
            integration_latency_ms: None,
            error: None,
        }
    }
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

fn render(parts: &[Part], r: &AccessRecord<'_>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(256);
    for part in parts {
        let value: String = match part {
            Part::Text(t) => {
                out.push_str(t);
                continue;
            }
            Part::Var(var) => {
                let e = r.event;
                match var {
                    Var::ApiId => e.api_id.to_owned(),
                    Var::ConnectedAt => e.conn.connected_at_ms.to_string(),
                    Var::ConnectionId => e.conn.id_text.clone(),
                    Var::DomainName => e.conn.domain_name.clone(),
                    Var::EventType => e.event_type().as_str().to_owned(),
                    Var::MessageId => e.message_id().unwrap_or_default().to_owned(),
                    Var::RequestId => e.request_id.to_owned(),
                    Var::RequestTime => clf_time(e.request_time_ms),
                    Var::RequestTimeEpoch => e.request_time_ms.to_string(),
                    Var::RouteKey => e.route_key.to_owned(),
                    Var::Stage => e.conn.stage.to_string(),
                    Var::Status => r.status.map(|s| s.to_string()).unwrap_or_default(),
                    Var::IntegrationLatency => r
                        .integration_latency_ms
                        .map(|l| format!("{l:.3}"))
                        .unwrap_or_default(),
                    Var::ErrorMessage => r.error.unwrap_or_default().to_owned(),
                    Var::SourceIp => e.conn.source_ip.to_string(),
                    Var::UserAgent => e.conn.user_agent.clone().unwrap_or_default(),
                    Var::DisconnectStatusCode => e
                        .disconnect_close()
                        .map(|(c, _)| c.to_string())
                        .unwrap_or_default(),
                    Var::DisconnectReason => e
                        .disconnect_close()
                        .map(|(_, why)| why.to_owned())
                        .unwrap_or_default(),
                }
            }
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
    use crate::config::access_log::DEFAULT_FORMAT;
    use crate::connections::{ConnInfo, ConnectionId, NodeTag};

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
            trace_id: crate::connections::TraceId::random(),
        };
        let event = Event::message(&conn, "api", "chat", "R", 1_731_324_924_561, "M", "", false);
        let record = AccessRecord {
            status: Some(200),
            integration_latency_ms: Some(1.5),
            ..AccessRecord::of(&event)
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
