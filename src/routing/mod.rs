//! Route selection: the route table and the choice of a route for each message.
//!
//! The selection expression is parsed once when the table is built; `select` evaluates it
//! per message with no I/O. An exact match on the evaluated value wins, then `$default`.

mod body;
pub mod expression;

use std::collections::HashMap;
use std::sync::Arc;

use crate::integrations::Integration;
use crate::telemetry::metrics::RouteMetrics;
pub use expression::{Evaluation, SelectionExpression};

/// The reserved route keys (events name them too, so they live with the events).
pub use crate::integrations::event::keys;

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its key, reported as `requestContext.routeKey`.
    pub key: Arc<str>,
    /// The integration it calls.
    pub integration: Arc<Integration>,
    /// Whether the integration's answer is sent back to the caller.
    pub two_way: bool,
    /// Metric handles, one set per stage.
    pub metrics: Arc<[RouteMetrics]>,
}

impl Route {
    /// This route's metric handles for `stage` (`None` for a stage the API does not have).
    pub fn metrics(&self, stage: &str) -> Option<&RouteMetrics> {
        self.metrics.iter().find(|m| &*m.stage == stage)
    }
}

/// The outcome of route selection for one message.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// This route handles the message.
    Route(&'a Route),
    /// No route matched and there is no `$default`.
    NoRoute,
    /// The body nests deeper than the configured limit.
    TooDeep,
}

/// All routes of the API.
#[derive(Debug, Clone)]
pub struct RouteTable {
    expression: SelectionExpression,
    /// Custom routes by key.
    routes: HashMap<Arc<str>, Route>,
    connect: Option<Route>,
    disconnect: Option<Route>,
    default: Option<Route>,
}

impl RouteTable {
    /// A table from its expression and routes (reserved keys are picked out of `routes`).
    pub fn new(expression: SelectionExpression, routes: impl IntoIterator<Item = Route>) -> Self {
        let mut table = Self {
            expression,
            routes: HashMap::new(),
            connect: None,
            disconnect: None,
            default: None,
        };
        for route in routes {
            match &*route.key {
                keys::CONNECT => table.connect = Some(route),
                keys::DISCONNECT => table.disconnect = Some(route),
                keys::DEFAULT => table.default = Some(route),
                _ => {
                    table.routes.insert(route.key.clone(), route);
                }
            }
        }
        table
    }

    /// Number of routes, reserved ones included.
    pub fn len(&self) -> usize {
        self.routes.len()
            + [&self.connect, &self.disconnect, &self.default]
                .iter()
                .filter(|r| r.is_some())
                .count()
    }

    /// Whether there is no route at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `$connect` route, if configured.
    pub fn connect(&self) -> Option<&Route> {
        self.connect.as_ref()
    }

    /// The `$disconnect` route, if configured.
    pub fn disconnect(&self) -> Option<&Route> {
        self.disconnect.as_ref()
    }

    /// Picks the route for a text message. Non-JSON goes to `$default`.
    pub fn select(&self, body: &str, max_depth: usize) -> Selection<'_> {
        match self.expression.evaluate(body, max_depth) {
            Evaluation::Value(value) => match self.routes.get(value.as_str()) {
                Some(route) => Selection::Route(route),
                None => self.fallback(),
            },
            Evaluation::NotJson => self.fallback(),
            Evaluation::TooDeep => Selection::TooDeep,
        }
    }

    /// The route for messages the expression cannot evaluate (binary frames).
    pub fn fallback(&self) -> Selection<'_> {
        match &self.default {
            Some(route) => Selection::Route(route),
            None => Selection::NoRoute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::mock::MockIntegration;

    fn route(key: &str) -> Route {
        Route {
            key: key.into(),
            integration: Arc::new(Integration::Mock(MockIntegration::new("", 200).unwrap())),
            two_way: false,
            metrics: Arc::new([]),
        }
    }

    fn selected(table: &RouteTable, body: &str) -> String {
        match table.select(body, 64) {
            Selection::Route(r) => r.key.to_string(),
            Selection::NoRoute => "<none>".into(),
            Selection::TooDeep => "<deep>".into(),
        }
    }

    #[test]
    fn selects_exact_match_then_default() {
        let expr = SelectionExpression::parse("$request.body.action").unwrap();
        let table = RouteTable::new(expr, ["join", "$default", "$connect"].map(route));
        let cases = [
            (r#"{"action":"join"}"#, "join"),
            (r#"{"action":"Join"}"#, "$default"),
            (r#"{"action":"$connect"}"#, "$default"),
            (r#"{"other":1}"#, "$default"),
            ("not json", "$default"),
            ("42", "$default"),
            (
                &format!("{}1{}", "[".repeat(100), "]".repeat(100)),
                "<deep>",
            ),
            // Plain text with many brackets is not JSON: `$default`, not too deep.
            (&("{".repeat(100) + " hello"), "$default"),
        ];
        for (body, want) in cases {
            assert_eq!(selected(&table, body), want, "{body}");
        }
    }

    #[test]
    fn no_default_means_no_route() {
        let expr = SelectionExpression::parse("$request.body.action").unwrap();
        let table = RouteTable::new(expr, ["join"].map(route));
        assert_eq!(selected(&table, r#"{"action":"join"}"#), "join");
        assert_eq!(selected(&table, r#"{"action":"leave"}"#), "<none>");
        assert_eq!(selected(&table, "plain"), "<none>");
    }
}
