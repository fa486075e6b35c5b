//! Connect-time admission and the identity it produces.
//!
//! [`ConnectAuth`] runs, before `$connect`, the checks `[auth]` configures, in this order:
//! origin allowlist ([`origin`]) → authorizer (HTTP REQUEST authorizer in [`authorizer`],
//! or JWTs in [`jwt`]) → API key ([`api_keys`]). A refusal is a status (401, 403, 429 or
//! 500) with AWS's message; a pass yields the [`AuthorizerContext`] that every later event
//! of the connection carries as `requestContext.authorizer`.
//!
//! When nothing is configured, [`ConnectAuth::build`] returns `None` and the handshake
//! skips admission with one branch. [`sigv4`] verifies AWS Signature Version 4 for the
//! management API. Nothing here logs a token, key or secret.

pub mod api_keys;
pub mod authorizer;
pub mod jwt;
pub mod origin;
pub mod policy;
pub mod sigv4;

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tracing::{Span, info};

use crate::config::{AuthorizerKind, ConfigError, IdentitySource, Settings};
pub use crate::connections::AuthorizerContext;
use crate::connections::ConnInfo;
use crate::integrations::http::HttpClient;

/// A handshake as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// Query parameters, percent-decoded, in order.
    pub query: &'a [(String, String)],
    /// The connection being admitted (id, stage, source IP, …).
    pub info: &'a ConnInfo,
    /// `requestContext.apiId`.
    pub api_id: &'a str,
}

impl Handshake<'_> {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of an identity source (`None` for the subprotocol, which only the JWT
    /// authorizer reads).
    pub fn identity(&self, source: &IdentitySource) -> Option<&str> {
        match source {
            IdentitySource::Header(name) => self.header(name),
            IdentitySource::Query(name) => self.query(name),
            IdentitySource::Subprotocol => None,
        }
    }
}

/// A handshake let in.
#[derive(Debug, Default)]
pub struct Admission {
    /// The authorizer's context, for every event of the connection.
    pub authorizer: Option<Arc<AuthorizerContext>>,
    /// The subprotocol the 101 must select when `$connect` chooses none (the JWT marker
    /// when the token came in `Sec-WebSocket-Protocol`).
    pub subprotocol: Option<String>,
}

/// A handshake refused before `$connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 429 or 500.
    pub status: StatusCode,
    /// The `{"message": …}` the client gets (AWS's wording).
    pub message: &'static str,
    /// Why, for the log (never contains a credential).
    pub reason: String,
}

impl Refusal {
    /// 401 `Unauthorized`.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", reason)
    }
    /// 403 `Forbidden`.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", reason)
    }
    /// 429 `Limit Exceeded`.
    pub fn limited(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "Limit Exceeded", reason)
    }
    /// 500 `Internal server error` (the authorizer failed).
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error",
            reason,
        )
    }

    fn new(status: StatusCode, message: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            message,
            reason: reason.into(),
        }
    }
}

/// The authorizer configured in `[auth]`.
enum Authorizer {
    Http(authorizer::HttpAuthorizer),
    Jwt(jwt::JwtAuthorizer),
}

/// What an authorizer let in: its context and, for the HTTP authorizer, a
/// `usageIdentifierKey`.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The context for every event.
    pub context: Option<Arc<AuthorizerContext>>,
    /// The API key the authorizer chose (`usageIdentifierKey`).
    pub usage_identifier_key: Option<String>,
    /// The subprotocol to select in the 101.
    pub subprotocol: Option<String>,
}

/// Every admission check `[auth]` configures.
pub struct ConnectAuth {
    origins: Option<origin::Allowlist>,
    authorizer: Option<Authorizer>,
    api_keys: Option<api_keys::ApiKeys>,
}

impl fmt::Debug for ConnectAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectAuth")
            .field("origins", &self.origins.is_some())
            .field(
                "authorizer",
                &match self.authorizer {
                    None => "none",
                    Some(Authorizer::Http(_)) => "http",
                    Some(Authorizer::Jwt(_)) => "jwt",
                },
            )
            .field("api_keys", &self.api_keys.is_some())
            .finish()
    }
}

impl ConnectAuth {
    /// Builds the checks `settings.auth` asks for; `None` when it asks for none. Key files
    /// are read here, so a bad one is a configuration error naming its key.
    pub fn build(settings: &Settings, http: &HttpClient) -> Result<Option<Self>, ConfigError> {
        let auth = &settings.auth;
        let origins = (!auth.allowed_origins.is_empty())
            .then(|| origin::Allowlist::new(&auth.allowed_origins));
        let authorizer = match auth.authorizer {
            AuthorizerKind::None => None,
            AuthorizerKind::Http => Some(Authorizer::Http(authorizer::HttpAuthorizer::new(
                &auth.http, http,
            )?)),
            AuthorizerKind::Jwt => Some(Authorizer::Jwt(jwt::JwtAuthorizer::new(&auth.jwt, http)?)),
        };
        let api_keys = auth
            .api_keys
            .required
            .then(|| api_keys::ApiKeys::new(&auth.api_keys));
        if origins.is_none() && authorizer.is_none() && api_keys.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            origins,
            authorizer,
            api_keys,
        }))
    }

    /// Runs origin → authorizer → API key for one handshake. Refusals are logged (status
    /// and reason, never a credential) in `span`.
    pub async fn admit(&self, handshake: Handshake<'_>, span: &Span) -> Result<Admission, Refusal> {
        let result = self.run(handshake).await;
        if let Err(refusal) = &result {
            info!(parent: span, status = refusal.status.as_u16(), reason = %refusal.reason, "connect refused by admission");
        }
        result
    }

    async fn run(&self, handshake: Handshake<'_>) -> Result<Admission, Refusal> {
        if let Some(origins) = &self.origins {
            origins.check(handshake.header("origin"))?;
        }
        let verdict = match &self.authorizer {
            None => Verdict::default(),
            Some(Authorizer::Http(a)) => a.authorize(&handshake).await?,
            Some(Authorizer::Jwt(a)) => a.authorize(&handshake).await?,
        };
        if let Some(keys) = &self.api_keys {
            let presented = match keys.source() {
                api_keys::Source::Header => handshake.header("x-api-key"),
                api_keys::Source::Authorizer => verdict.usage_identifier_key.as_deref(),
            };
            keys.check(presented)?;
        }
        Ok(Admission {
            authorizer: verdict.context,
            subprotocol: verdict.subprotocol,
        })
    }
}

/// Matches `text` against `pattern`, where `*` is any run of characters (`/` included) and
/// `?` is one character — the wildcards of IAM resources and origin patterns.
///
/// ```
/// use switchboard::auth::glob_match;
/// assert!(glob_match("arn:aws:execute-api:*:*:api/prod/*", "arn:aws:execute-api:us-east-1:1:api/prod/$connect"));
/// assert!(!glob_match("a/*/*", "a/b"));
/// assert!(glob_match("https://*.example.com", "https://app.example.com"));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// A JSON value as AWS stringifies context values: strings as they are, numbers and
/// booleans in their JSON form, anything else as JSON text.
pub(crate) fn stringify(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn glob() {
        let cases = [
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("arn:*/prod/$connect", "arn:x:y/prod/$connect", true),
            ("arn:*/prod/*/*", "arn:x:y/prod/$connect", false),
            ("arn:*/prod/*", "arn:x:y/prod/$connect", true),
            ("arn:*/dev/*", "arn:x:y/prod/$connect", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**a", "xa", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn context_serialises_flat_and_round_trips() {
        let ctx = AuthorizerContext {
            principal_id: Some("user-1".into()),
            context: BTreeMap::from([
                ("tenant".to_owned(), "acme".to_owned()),
                ("principalId".to_owned(), "spoof".to_owned()),
            ]),
        };
        let json = serde_json::to_value(&ctx).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"principalId": "user-1", "tenant": "acme"})
        );
        let back: AuthorizerContext = serde_json::from_value(json).unwrap();
        assert_eq!(back.principal_id.as_deref(), Some("user-1"));
        assert_eq!(back.context.len(), 1);
    }

    #[test]
    fn stringifies_like_aws() {
        assert_eq!(stringify(&serde_json::json!("a")), "a");
        assert_eq!(stringify(&serde_json::json!(12)), "12");
        assert_eq!(stringify(&serde_json::json!(1.5)), "1.5");
        assert_eq!(stringify(&serde_json::json!(true)), "true");
        assert_eq!(stringify(&serde_json::json!(["a", 1])), r#"["a",1]"#);
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
    }
}
