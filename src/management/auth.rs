//! Authentication of management callers, per `management.auth`: bearer tokens (several at
//! once, so one can be rotated; compared in constant time), AWS Signature Version 4
//! ([`crate::auth::sigv4`]) as AWS SDKs send it, either, or none when the operator chose
//! `auth = "none"` explicitly. Credentials are read from the running settings on every
//! call, so a reload that swaps them applies to the next call. Tokens, secrets and
//! signatures are never logged.
//!
//! A SigV4 signature covers the body, so a signed request's body is read whole (up to
//! `client.max_message_bytes`, else 413) before the call is authorized, and handed on.

use axum::body::Body;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Limited};
use subtle::ConstantTimeEq as _;
use tracing::debug;

use super::error::ApiError;
use crate::auth::sigv4::{self, SignedRequest, Verifier};
use crate::config::{ManagementAuth, ManagementSettings};

/// Whether the request carries a valid bearer token under the configured mode (`none`
/// accepts everyone; `sigv4` accepts no bearer token).
pub fn is_authorized(settings: &ManagementSettings, headers: &HeaderMap) -> bool {
    match settings.auth {
        ManagementAuth::None => true,
        ManagementAuth::Sigv4 => false,
        ManagementAuth::Bearer | ManagementAuth::Both => {
            let Some(token) = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
            else {
                return false;
            };
            // Check every token so timing does not reveal which one matched.
            settings.bearer_tokens.iter().fold(false, |ok, t| {
                ok | bool::from(t.expose().as_bytes().ct_eq(token.trim().as_bytes()))
            })
        }
    }
}

/// Authorizes one call. Returns the body to hand on (buffered when a signature covered
/// it) and, when the caller is refused, the answer to give: 403 with AWS's message and
/// `x-amzn-errortype` (`ForbiddenException` for a missing or wrong bearer token,
/// `MissingAuthenticationTokenException` when only SigV4 is accepted and none was sent,
/// the SigV4 exceptions otherwise), or 413 for a signed body over `max_body_bytes`.
pub async fn authorize(
    settings: &ManagementSettings,
    max_body_bytes: usize,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> (Body, Option<ApiError>) {
    let sigv4_on = matches!(settings.auth, ManagementAuth::Sigv4 | ManagementAuth::Both);
    if settings.auth == ManagementAuth::None {
        return (body, None);
    }
    if sigv4_on && sigv4::is_sigv4(headers) {
        let bytes = match Limited::new(body, max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return (Body::empty(), Some(ApiError::too_large(max_body_bytes))),
        };
        let request = SignedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            headers,
            body: &bytes,
        };
        return match Verifier::new(&settings.sigv4).verify(&request, chrono::Utc::now()) {
            Ok(_access_key) => (Body::from(bytes), None),
            Err(error) => {
                debug!(error_type = error.error_type, "SigV4 verification failed");
                (
                    Body::empty(),
                    Some(ApiError {
                        status: StatusCode::FORBIDDEN,
                        error_type: error.error_type,
                        message: Some(error.message),
                        allow: None,
                    }),
                )
            }
        };
    }
    if is_authorized(settings, headers) {
        return (body, None);
    }
    let refusal = if settings.auth == ManagementAuth::Sigv4 {
        ApiError {
            status: StatusCode::FORBIDDEN,
            error_type: "MissingAuthenticationTokenException",
            message: Some("Missing Authentication Token".into()),
            allow: None,
        }
    } else {
        ApiError::forbidden()
    };
    (Body::empty(), Some(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings() -> ManagementSettings {
        ManagementSettings {
            bearer_tokens: vec![
                Secret::new("old-token-0123456789"),
                Secret::new("new-token-0123456789"),
            ],
            ..ManagementSettings::default()
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn accepts_any_configured_token() {
        let s = settings();
        assert!(is_authorized(&s, &headers("Bearer old-token-0123456789")));
        assert!(is_authorized(&s, &headers("Bearer new-token-0123456789")));
        assert!(!is_authorized(&s, &headers("Bearer other-token-0123456")));
        assert!(!is_authorized(&s, &headers("Basic old-token-0123456789")));
        assert!(!is_authorized(&s, &HeaderMap::new()));
    }

    #[test]
    fn none_accepts_everyone() {
        let s = ManagementSettings {
            auth: ManagementAuth::None,
            ..ManagementSettings::default()
        };
        assert!(is_authorized(&s, &HeaderMap::new()));
    }

    #[tokio::test]
    async fn sigv4_only_refuses_bearer_and_missing_credentials() {
        let s = ManagementSettings {
            auth: ManagementAuth::Sigv4,
            ..settings()
        };
        assert!(!is_authorized(&s, &headers("Bearer old-token-0123456789")));
        let uri: Uri = "/@connections/x".parse().unwrap();
        let (_, refused) = authorize(
            &s,
            1024,
            &Method::GET,
            &uri,
            &HeaderMap::new(),
            Body::empty(),
        )
        .await;
        let refused = refused.expect("refused");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.error_type, "MissingAuthenticationTokenException");
        let bad_sig = headers(
            "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00",
        );
        let (_, refused) = authorize(&s, 1024, &Method::GET, &uri, &bad_sig, Body::empty()).await;
        assert_eq!(refused.expect("refused").status, StatusCode::FORBIDDEN);
    }
}
