//! The HTTP REQUEST authorizer: AWS's Lambda REQUEST authorizer as an HTTP endpoint.
//!
//! For each handshake: every identity source must be present and non-empty (else 401
//! without a call); the gateway POSTs AWS's authorizer event (`type: "REQUEST"`,
//! `methodArn`, every handshake header including `Connection`, `Upgrade` and
//! `content-length: 0` plus the `X-Forwarded-*` and `X-Amzn-Trace-Id` headers the
//! handshake presents, query parameters, `requestContext`; the request itself carries
//! the connection's `traceparent`) and reads the answer
//! ([`super::policy`]). 2xx with an allowing answer lets the connection in; a denying one
//! gives 403; an HTTP 401 (or the body `"Unauthorized"`) gives 401, an HTTP 403 gives 403;
//! anything else — unreachable, timeout, another status, a malformed answer, an answer
//! over 8 KiB — gives 500.
//!
//! With `cache_ttl_secs` set, parsed answers are kept per identity-source values (hashed
//! with SHA-256; the values themselves are not kept) and reused until they expire, so a
//! reconnect with the same token costs no call. AWS has no such cache for WebSocket APIs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use ring::digest;

use super::policy::{self, AuthorizerResult};
use super::{Handshake, Refusal, Verdict};
use crate::config::{ConfigError, HttpAuthorizerSettings, IdentitySource};
use crate::connections::id::request_id;
use crate::connections::now_ms;
use crate::integrations::event::{Event, EventDetail, header_pairs};
use crate::integrations::http::{HttpClient, TRACEPARENT};
use crate::routing::keys;

/// Largest authorizer answer accepted (AWS: 8 KB); larger is a failure (500).
pub const MAX_RESULT_BYTES: usize = 8 * 1024;

/// A cached answer, shared by every connection it admits.
struct Cached {
    expires: Instant,
    result: Arc<AuthorizerResult>,
    context: Arc<super::AuthorizerContext>,
}

/// Answers by identity-source digest. A std mutex: held only to look up, insert or prune,
/// never across an `.await`.
struct Cache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<[u8; 32], Cached>>,
}

impl Cache {
    fn get(
        &self,
        key: &[u8; 32],
    ) -> Option<(Arc<AuthorizerResult>, Arc<super::AuthorizerContext>)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some(c) if c.expires > Instant::now() => Some((c.result.clone(), c.context.clone())),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(
        &self,
        key: [u8; 32],
        result: Arc<AuthorizerResult>,
        context: Arc<super::AuthorizerContext>,
    ) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries {
            entries.retain(|_, c| c.expires > now);
        }
        if entries.len() >= self.max_entries {
            // Still full of live entries: make room by dropping an arbitrary one.
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(
            key,
            Cached {
                expires: now + self.ttl,
                result,
                context,
            },
        );
    }
}

/// An HTTP REQUEST authorizer.
pub struct HttpAuthorizer {
    uri: Uri,
    client: HttpClient,
    timeout: Duration,
    sources: Vec<IdentitySource>,
    region: String,
    account_id: String,
    cache: Option<Cache>,
}

impl HttpAuthorizer {
    /// Builds it from validated settings.
    pub fn new(
        settings: &HttpAuthorizerSettings,
        client: &HttpClient,
    ) -> Result<Self, ConfigError> {
        let uri = settings.url.parse().map_err(|e: http::uri::InvalidUri| {
            ConfigError::invalid("auth.http.url", e.to_string())
        })?;
        let sources = settings
            .identity_sources
            .iter()
            .map(|s| {
                IdentitySource::parse(s)
                    .ok_or_else(|| ConfigError::invalid("auth.http.identity_sources", s.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            uri,
            client: client.clone(),
            timeout: Duration::from_millis(settings.timeout_ms),
            sources,
            region: settings.region.clone(),
            account_id: settings.account_id.clone(),
            cache: (settings.cache_ttl_secs > 0).then(|| Cache {
                ttl: Duration::from_secs(settings.cache_ttl_secs),
                max_entries: settings.cache_max_entries,
                entries: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/$connect`.
    fn method_arn(&self, handshake: &Handshake<'_>) -> String {
        format!(
            "arn:aws:execute-api:{}:{}:{}/{}/{}",
            self.region,
            self.account_id,
            handshake.api_id,
            handshake.info.stage,
            keys::CONNECT
        )
    }

    /// Decides one handshake.
    pub async fn authorize(&self, handshake: &Handshake<'_>) -> Result<Verdict, Refusal> {
        let mut digest = digest::Context::new(&digest::SHA256);
        for source in &self.sources {
            let value = handshake
                .identity(source)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Refusal::unauthorized("identity source missing or empty"))?;
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            digest.update(&(value.len() as u64).to_be_bytes());
            digest.update(value.as_bytes());
        }
        let key: [u8; 32] = digest.finish().as_ref().try_into().unwrap_or([0; 32]);
        let method_arn = self.method_arn(handshake);

        let cached = self.cache.as_ref().and_then(|c| c.get(&key));
        let (result, context) = match cached {
            Some(hit) => hit,
            None => {
                let result = Arc::new(self.call(handshake, &method_arn).await?);
                let context = Arc::new(result.context.clone());
                if let Some(cache) = &self.cache {
                    cache.put(key, result.clone(), context.clone());
                }
                (result, context)
            }
        };
        if !result.allows(&method_arn) {
            return Err(Refusal::forbidden("authorizer denied"));
        }
        Ok(Verdict {
            context: Some(context),
            usage_identifier_key: result.usage_identifier_key.clone(),
            subprotocol: None,
        })
    }

    async fn call(
        &self,
        handshake: &Handshake<'_>,
        method_arn: &str,
    ) -> Result<AuthorizerResult, Refusal> {
        let body = self.event(handshake, method_arn);
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::USER_AGENT, "switchboard")
            .header(header::CONTENT_TYPE, "application/json")
            .header(TRACEPARENT, handshake.info.trace_id.child_traceparent())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Refusal::failed(format!("authorizer request: {e}")))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Refusal::failed(format!("authorizer unreachable: {e}")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESULT_BYTES)
                .collect()
                .await
                .map_err(|_| Refusal::failed("authorizer response over 8 KiB or unreadable"))?
                .to_bytes();
            Ok::<_, Refusal>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Refusal::failed("authorizer timed out"))??;
        match status {
            StatusCode::UNAUTHORIZED => {
                return Err(Refusal::unauthorized("authorizer answered 401"));
            }
            StatusCode::FORBIDDEN => return Err(Refusal::forbidden("authorizer answered 403")),
            s if !s.is_success() => {
                return Err(Refusal::failed(format!(
                    "authorizer answered {}",
                    s.as_u16()
                )));
            }
            _ => {}
        }
        // Lambda's `callback("Unauthorized")`.
        if body.as_ref() == b"\"Unauthorized\"" || body.as_ref() == b"Unauthorized" {
            return Err(Refusal::unauthorized("authorizer answered Unauthorized"));
        }
        policy::parse(&body).map_err(|e| Refusal::failed(e.to_string()))
    }

    /// AWS's REQUEST-authorizer event for this handshake.
    fn event(&self, handshake: &Handshake<'_>, method_arn: &str) -> Vec<u8> {
        let mut headers = header_pairs(handshake.headers, &[]);
        if !handshake.headers.contains_key(header::CONTENT_LENGTH) {
            headers.push(("content-length".to_owned(), "0".to_owned()));
        }
        let request_id = request_id();
        let event = Event {
            conn: handshake.info,
            api_id: handshake.api_id,
            route_key: keys::CONNECT,
            request_id: &request_id,
            request_time_ms: now_ms(),
            detail: EventDetail::Connect {
                headers: &headers,
                query: handshake.query,
                resumed: None,
            },
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(&event.to_proxy_json()).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("type".into(), "REQUEST".into());
            object.insert("methodArn".into(), method_arn.into());
            object.insert("stageVariables".into(), serde_json::json!({}));
            object.remove("isBase64Encoded");
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }
}
