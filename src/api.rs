//! The running form of the API's configuration: parsed routes, built integrations, the
//! WebSocket settings every connection uses. Built once from [`Settings`]; any error names
//! the configuration key at fault, so `check-config` and startup report the same thing.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::{ClientSettings, ConfigError, Settings};
use crate::integrations::Integration;
use crate::integrations::http::HttpClient;
use crate::routing::{Route, RouteTable, SelectionExpression};
use crate::telemetry::metrics::RouteMetrics;

/// The API as the edge and sessions use it.
#[derive(Debug)]
pub struct Api {
    /// `requestContext.apiId`.
    pub id: String,
    /// Accepted stages; the first is the one `/` means.
    pub stages: Vec<Arc<str>>,
    /// Routes and the selection expression.
    pub routes: RouteTable,
    /// Client-side limits and timers.
    pub client: ClientSettings,
    /// The tungstenite configuration for every connection (small buffers, AWS limits).
    pub ws_config: WebSocketConfig,
    /// Admission checks before `$connect` (origin, authorizer, API key); `None` when
    /// `[auth]` configures none, so the handshake skips them.
    pub auth: Option<Arc<crate::auth::ConnectAuth>>,
    /// Resumable sessions (`[resume]`): whether they are offered, the window, the bounds.
    pub resume: crate::config::ResumeSettings,
}

impl Api {
    /// Builds the API from validated settings.
    pub fn build(settings: &Settings, http: &HttpClient) -> Result<Self, ConfigError> {
        let expression = SelectionExpression::parse(&settings.api.route_selection_expression)
            .map_err(|e| ConfigError::invalid("api.route_selection_expression", e.to_string()))?;
        let mut integrations = std::collections::HashMap::new();
        for (name, integration) in &settings.integrations {
            integrations.insert(
                name.as_str(),
                Arc::new(Integration::from_settings(
                    name,
                    integration,
                    http,
                    &settings.lambda,
                )?),
            );
        }
        let mut routes = Vec::new();
        for (key, route) in &settings.routes {
            let integration = integrations
                .get(route.integration.as_str())
                .cloned()
                .ok_or_else(|| {
                    ConfigError::invalid(format!("routes.{key}.integration"), "unknown integration")
                })?;
            routes.push(Route {
                key: key.as_str().into(),
                integration,
                two_way: route.two_way,
                metrics: settings
                    .api
                    .stages
                    .iter()
                    .map(|stage| RouteMetrics::new(stage, key))
                    .collect(),
            });
        }
        let c = &settings.client;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(c.read_buffer_bytes)
            .write_buffer_size(c.write_buffer_bytes)
            .max_write_buffer_size(
                c.outbound_queue_bytes
                    .saturating_mul(2)
                    .max(c.write_buffer_bytes + c.max_message_bytes + 1),
            )
            .max_frame_size(Some(c.max_frame_bytes))
            .max_message_size(Some(c.max_message_bytes));
        Ok(Self {
            id: settings.api.id.clone(),
            stages: settings
                .api
                .stages
                .iter()
                .map(|s| Arc::from(s.as_str()))
                .collect(),
            routes: RouteTable::new(expression, routes),
            client: settings.client.clone(),
            ws_config,
            auth: crate::auth::ConnectAuth::build(settings, http)?.map(Arc::new),
            resume: settings.resume.clone(),
        })
    }

    /// The stage a handshake path names: `/` is the first stage, `/{stage}` must be one of
    /// the configured stages.
    pub fn stage_for_path(&self, path: &str) -> Option<&Arc<str>> {
        let trimmed = path.trim_start_matches('/').trim_end_matches('/');
        if trimmed.is_empty() {
            return self.stages.first();
        }
        self.stages.iter().find(|s| ***s == *trimmed)
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.client.idle_timeout_secs)
    }

    /// Maximum connection lifetime.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.client.max_lifetime_secs)
    }

    /// Server ping interval, if pings are on.
    pub fn ping_interval(&self) -> Option<Duration> {
        (self.client.ping_interval_secs > 0)
            .then(|| Duration::from_secs(self.client.ping_interval_secs))
    }
}
