//! The `mock` integration: no backend, a response template with `$context.*` variables
//! and `$input.body` substituted. The template is parsed once at startup.

use bytes::Bytes;

use super::event::Event;
use super::{IntegrationResponse, TemplateError};

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Copied as is.
    Text(String),
    /// `$input.body`.
    Body,
    /// A `$context.*` variable.
    Context(ContextVar),
}

/// The `$context` variables a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContextVar {
    ConnectionId,
    ConnectedAt,
    DomainName,
    EventType,
    MessageId,
    RouteKey,
    RequestId,
    ApiId,
    Stage,
    RequestTime,
    RequestTimeEpoch,
    SourceIp,
    UserAgent,
}

impl ContextVar {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "connectionId" => Self::ConnectionId,
            "connectedAt" => Self::ConnectedAt,
            "domainName" => Self::DomainName,
            "eventType" => Self::EventType,
            "messageId" => Self::MessageId,
            "routeKey" => Self::RouteKey,
            "requestId" | "extendedRequestId" => Self::RequestId,
            "apiId" => Self::ApiId,
            "stage" => Self::Stage,
            "requestTime" => Self::RequestTime,
            "requestTimeEpoch" => Self::RequestTimeEpoch,
            "identity.sourceIp" => Self::SourceIp,
            "identity.userAgent" => Self::UserAgent,
            _ => return None,
        })
    }
}

/// A mock integration.
#[derive(Debug, Clone)]
pub struct MockIntegration {
    parts: Vec<Part>,
    status: u16,
}

impl MockIntegration {
    /// Parses `template`; unknown variables are an error naming them.
    pub fn new(template: &str, status: u16) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(pos) = rest.find('$') {
            text.push_str(&rest[..pos]);
            rest = &rest[pos..];
            let name_len = rest[1..]
                .char_indices()
                .find(|&(i, c)| {
                    !(c.is_ascii_alphanumeric()
                        || c == '_'
                        || (c == '.'
                            && rest[1 + i + 1..].starts_with(|n: char| n.is_ascii_alphabetic())))
                })
                .map_or(rest.len() - 1, |(i, _)| i);
            let name = &rest[1..1 + name_len];
            let part = if name == "input.body" {
                Some(Part::Body)
            } else if let Some(var) = name.strip_prefix("context.") {
                Some(Part::Context(ContextVar::from_name(var).ok_or_else(
                    || TemplateError(format!("unknown variable ${name}")),
                )?))
            } else if name.starts_with("input") || name.starts_with("context") {
                return Err(TemplateError(format!("unknown variable ${name}")));
            } else {
                None
            };
            match part {
                Some(part) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(part);
                    rest = &rest[1 + name_len..];
                }
                None => {
                    text.push('$');
                    rest = &rest[1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts, status })
    }

    /// Renders the template for `event`. A template that is exactly `$input.body` returns the
    /// body without copying it.
    pub fn call(&self, event: &Event<'_>, body: Option<&Bytes>) -> IntegrationResponse {
        let rendered = match self.parts.as_slice() {
            [] => Bytes::new(),
            [Part::Body] => body.cloned().unwrap_or_default(),
            parts => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Body => out.push_str(event.body()),
                        Part::Context(var) => push_var(&mut out, *var, event),
                    }
                }
                Bytes::from(out)
            }
        };
        IntegrationResponse {
            status: self.status,
            subprotocol: None,
            body: (!rendered.is_empty()).then_some(rendered),
            binary: false,
            groups: Default::default(),
        }
    }
}

fn push_var(out: &mut String, var: ContextVar, event: &Event<'_>) {
    use std::fmt::Write as _;
    let conn = event.conn;
    let _ = match var {
        ContextVar::ConnectionId => write!(out, "{}", conn.id_text),
        ContextVar::ConnectedAt => write!(out, "{}", conn.connected_at_ms),
        ContextVar::DomainName => write!(out, "{}", conn.domain_name),
        ContextVar::EventType => write!(out, "{}", event.event_type().as_str()),
        ContextVar::MessageId => match event.detail {
            super::event::EventDetail::Message { message_id, .. } => write!(out, "{message_id}"),
            _ => Ok(()),
        },
        ContextVar::RouteKey => write!(out, "{}", event.route_key),
        ContextVar::RequestId => write!(out, "{}", event.request_id),
        ContextVar::ApiId => write!(out, "{}", event.api_id),
        ContextVar::Stage => write!(out, "{}", conn.stage),
        ContextVar::RequestTime => write!(out, "{}", event.request_time_clf()),
        ContextVar::RequestTimeEpoch => write!(out, "{}", event.request_time_ms),
        ContextVar::SourceIp => write!(out, "{}", conn.source_ip),
        ContextVar::UserAgent => write!(out, "{}", conn.user_agent.as_deref().unwrap_or("")),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{ConnInfo, ConnectionId, NodeTag};
    use crate::integrations::event::EventDetail;

    fn render(template: &str, body: &str) -> String {
        let id = ConnectionId::new(NodeTag([9; 4]));
        let conn = ConnInfo {
            id,
            id_text: id.to_string(),
            connected_at_ms: 5,
            source_ip: "127.0.0.1".parse().unwrap(),
            user_agent: None,
            stage: "prod".into(),
            domain_name: "h".into(),
            authorizer: None,
            trace_id: crate::connections::TraceId::random(),
        };
        let event = Event {
            conn: &conn,
            api_id: "api",
            route_key: "r",
            request_id: "q",
            request_time_ms: 7,
            detail: EventDetail::Message {
                message_id: "m",
                body,
                is_base64: false,
            },
        };
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        let out = MockIntegration::new(template, 200)
            .unwrap()
            .call(&event, Some(&bytes));
        String::from_utf8(out.body.unwrap_or_default().to_vec())
            .unwrap()
            .replace(&conn.id_text, "<ID>")
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(render("$input.body", "hello"), "hello");
        assert_eq!(
            render(r#"{"connectionId": "$context.connectionId"}"#, "x"),
            r#"{"connectionId": "<ID>"}"#
        );
        assert_eq!(
            render("$context.routeKey/$context.stage/$context.messageId.", "x"),
            "r/prod/m."
        );
        assert_eq!(
            render("cost: $5 and $context.identity.sourceIp", "x"),
            "cost: $5 and 127.0.0.1"
        );
        assert_eq!(render("[$input.body]", "b"), "[b]");
    }

    #[test]
    fn unknown_variables_are_refused() {
        assert!(MockIntegration::new("$context.nope", 200).is_err());
        assert!(MockIntegration::new("$input.json", 200).is_err());
    }
}
