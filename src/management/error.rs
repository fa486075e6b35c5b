//! Errors of the management API as AWS-shaped responses: the status, an
//! `x-amzn-ErrorType` header (which AWS SDKs map to exception types) and a
//! `{"message": …}` body — except 410, whose body AWS leaves empty.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// AWS exception name, e.g. `GoneException`.
    pub error_type: &'static str,
    /// Text for the body; `None` for an empty body.
    pub message: Option<String>,
    /// For 405: the methods the path accepts (`Allow` header).
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// 400 `BadRequestException`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            Some(message.into()),
        )
    }
    /// 403 `ForbiddenException`.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            Some("Forbidden".into()),
        )
    }
    /// 404 for a path or method that names nothing.
    pub fn no_route(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            Some(format!(
                "No method found matching route {path} for http method {method}."
            )),
        )
    }
    /// 410 `GoneException`, empty body.
    pub fn gone() -> Self {
        Self::new(StatusCode::GONE, "GoneException", None)
    }
    /// 413 `PayloadTooLargeException`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            Some(format!("Message is larger than {limit} bytes")),
        )
    }
    /// 429 `LimitExceededException`.
    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            Some(message.into()),
        )
    }

    /// 503 `ServiceUnavailableException` with `Retry-After`.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            Some("The cluster backplane is unavailable; retry later".into()),
        )
    }

    fn new(status: StatusCode, error_type: &'static str, message: Option<String>) -> Self {
        Self {
            status,
            error_type,
            message,
            allow: None,
        }
    }

    /// 405 for a known path with a method it does not accept.
    pub fn method_not_allowed(method: &http::Method, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowedException",
                Some(format!("Method {method} is not allowed here; use {allow}")),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match &self.message {
            Some(message) => {
                let body = serde_json::json!({ "message": message }).to_string();
                let mut r = body.into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            None => ().into_response(),
        };
        *response.status_mut() = self.status;
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static(self.error_type),
        );
        response
    }
}
