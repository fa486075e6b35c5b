//! The `lambda` integration: AWS Lambda handlers run unchanged by AWS's own Runtime
//! Interface Clients (`aws-lambda-ric` for Node.js, `awslambdaric` for Python), in local
//! worker processes the gateway starts, serves the Lambda Runtime API to, and supervises.
//!
//! - `spec`: settings → the command line and environment of a worker (checked at build).
//! - `runtime_api`: the Runtime API server of one worker (`/next`, `/response`, `/error`,
//!   `/init/error`).
//! - `worker`: one RIC process, its Runtime API, its output copied into the log.
//! - `pool`: a function's warm workers, its bounded queue, timeouts, restarts.
//!
//! This file is the integration: the proxy event in, the handler's result mapped exactly as
//! the `http` integration maps a proxy answer, Lambda's failures as [`LambdaError`].
//! See docs/lambda.md.

mod pool;
mod runtime_api;
mod spec;
mod worker;

use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use super::event::Event;
use super::{IntegrationError, IntegrationResponse, proxy_response};
use crate::config::{ConfigError, LambdaFunctionSettings, LambdaSettings};
use pool::Pool;
use spec::FunctionSpec;

/// API Gateway's longest integration timeout: a call that has no answer by then (queued,
/// starting, or a handler whose own timeout is longer) answers like any integration
/// timeout, while the handler runs on, as on AWS.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

/// An invocation that failed as Lambda reports it: the handler threw, timed out, crashed
/// its runtime, failed its init, or the function was throttled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lambda function {function} failed (request {request_id}): {error_type}: {message}")]
pub struct LambdaError {
    /// The function's name.
    pub function: String,
    /// The Lambda request id (`context.awsRequestId`), to find the handler's output.
    pub request_id: String,
    /// Lambda's `errorType` (`Error`, `Sandbox.Timeout`, `Runtime.ExitError`, …).
    pub error_type: String,
    /// Lambda's `errorMessage`.
    pub message: String,
}

impl LambdaError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self.error_type.as_str() {
            "Sandbox.Timeout" => "function_timeout",
            "Runtime.ExitError" => "function_exit",
            "TooManyRequestsException" => "function_throttled",
            _ => "function_error",
        }
    }
}

/// A function and its pool of workers. Clones share the pool.
#[derive(Debug, Clone)]
pub struct LambdaIntegration {
    pool: Arc<Pool>,
}

/// Pools alive in this process, so that rebuilding the API (a reload) with a function
/// whose settings did not change keeps its warm workers: the new API finds the old API's
/// pool here while the old API still holds it. Weak: a pool no API holds is dropped (and
/// its workers killed). A std mutex: short sections at build time only.
static POOLS: LazyLock<Mutex<Vec<Weak<Pool>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

impl LambdaIntegration {
    /// Builds integration `name`: finds the launcher and the code directory (errors name
    /// the key). Starts nothing: workers start on the first call.
    pub fn new(
        name: &str,
        function: &LambdaFunctionSettings,
        lambda: &LambdaSettings,
    ) -> Result<Self, ConfigError> {
        let spec = FunctionSpec::resolve(name, function, lambda)?;
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        if let Some(pool) = pools
            .iter()
            .filter_map(Weak::upgrade)
            .find(|pool| *pool.spec() == spec)
        {
            return Ok(Self { pool });
        }
        let pool = Arc::new(Pool::new(spec));
        pools.push(Arc::downgrade(&pool));
        Ok(Self { pool })
    }

    /// Invokes the function with `event`'s proxy JSON and maps its result.
    pub async fn call(&self, event: &Event<'_>) -> Result<IntegrationResponse, IntegrationError> {
        let spec = self.pool.spec();
        let request_id = runtime_api::request_id();
        debug!(
            function = %spec.name,
            lambda_request_id = %request_id,
            request_id = %event.request_id,
            "lambda invoke"
        );
        let invoke = self.pool.invoke(
            request_id.as_str().into(),
            Bytes::from(event.to_proxy_json()),
        );
        match tokio::time::timeout(INTEGRATION_TIMEOUT, invoke).await {
            Err(_) => Err(IntegrationError::Timeout),
            Ok(Ok(result)) => Ok(answer(result)?),
            Ok(Err(failure)) => Err(IntegrationError::Lambda(LambdaError {
                function: spec.name.clone(),
                request_id,
                error_type: failure.error_type,
                message: failure.message,
            })),
        }
    }
}

/// A handler's result as the gateway's answer, read like an `http` proxy answer: an
/// object with `statusCode` is a proxy response (and must have that shape), anything else
/// is the body as it is; without `statusCode` the status is 200. `null` (a handler that
/// returned nothing) is an empty 200.
fn answer(result: Bytes) -> Result<IntegrationResponse, proxy_response::Malformed> {
    if result.trim_ascii() == b"null" {
        return Ok(IntegrationResponse {
            status: 200,
            subprotocol: None,
            body: None,
            binary: false,
            groups: Default::default(),
        });
    }
    let parsed = proxy_response::parse(result)?;
    Ok(IntegrationResponse {
        status: parsed.status.unwrap_or(200),
        subprotocol: parsed.subprotocol,
        body: parsed.body,
        binary: parsed.binary,
        groups: parsed.groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> IntegrationResponse {
        answer(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    #[test]
    fn results_map_like_proxy_answers() {
        let r = a(r#"{"statusCode":403}"#);
        assert_eq!((r.status, r.body), (403, None));
        let r = a(r#"{"statusCode":200,"body":"hi","headers":{"x-switchboard-join":"g"}}"#);
        assert_eq!(
            (r.status, r.body.as_deref(), r.groups.join),
            (200, Some(&b"hi"[..]), vec!["g".to_owned()])
        );
        let r = a(r#""plain""#);
        assert_eq!(
            (r.status, r.body.as_deref()),
            (200, Some(&b"\"plain\""[..]))
        );
        let r = a("null");
        assert_eq!((r.status, r.body), (200, None));
        assert!(answer(Bytes::from_static(br#"{"statusCode":200,"oops":1}"#)).is_err());
    }

    #[test]
    fn errors_have_metric_kinds() {
        let e = |t: &str| LambdaError {
            function: "f".into(),
            request_id: "r".into(),
            error_type: t.into(),
            message: String::new(),
        };
        assert_eq!(e("Sandbox.Timeout").kind(), "function_timeout");
        assert_eq!(e("Runtime.ExitError").kind(), "function_exit");
        assert_eq!(e("TypeError").kind(), "function_error");
        let error = IntegrationError::Lambda(e("Sandbox.Timeout"));
        assert_eq!(
            error.connect_status(),
            502,
            "AWS: a Lambda timeout on $connect is 502"
        );
    }
}
