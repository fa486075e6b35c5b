//! The built-in JWT authorizer: tokens verified in the gateway, no backend round trip.
//!
//! The token is taken from the first configured source that has one: a header (a
//! `Bearer ` prefix is stripped), a query parameter, or `Sec-WebSocket-Protocol` — the one
//! place besides the URL a browser can put it. The subprotocol convention: the client
//! offers the marker and then the token, `new WebSocket(url, ["bearer", jwt])`, and the
//! 101 selects the marker (`Sec-WebSocket-Protocol: bearer`) unless `$connect` chose
//! another offered subprotocol; the token is never echoed.
//!
//! HS256, RS256 and ES256 are verified, each key bound to its algorithm (a token naming
//! another algorithm than its key's is refused). Keys come from `[auth.jwt.keys]` and/or a
//! JWKS URL. The JWKS is fetched on first use, reused for `jwks_refresh_secs`, kept when a
//! refresh fails, and refetched for an unknown `kid` at most once a minute. `exp` is
//! required, and so are `iss` and `aud` when `issuer` / `audience` are configured;
//! `exp` and `nbf` are checked with `leeway_secs`.
//!
//! Outcomes: no token, a bad signature, an expired or otherwise invalid token, an unknown
//! `kid` → 401; a valid token without one of `required_scopes` → 403; no usable JWKS
//! (never fetched successfully) → 500. The `principal_claim` becomes `principalId` and
//! `context_claims` the context, stringified.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tracing::warn;

use super::{AuthorizerContext, Handshake, Refusal, Verdict, stringify};
use crate::config::{ConfigError, IdentitySource, JwtAlgorithm, JwtSettings};
use crate::integrations::http::HttpClient;

/// An unknown `kid` refetches the JWKS at most this often.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(60);
/// After a failed JWKS fetch, the next attempt waits this long (old keys stay in use).
const FETCH_RETRY: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One verification key, bound to its algorithm.
struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys of one JWKS fetch.
struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    /// When to fetch again.
    next_fetch: Instant,
    /// Whether any fetch ever succeeded.
    loaded: bool,
}

impl KeySet {
    fn find(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        self.keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .cloned()
    }
}

/// A JWKS URL and its cached keys.
struct Jwks {
    uri: Uri,
    client: HttpClient,
    timeout: Duration,
    refresh: Duration,
    /// The current keys; replaced whole after each fetch, read without a lock.
    keys: ArcSwap<KeySet>,
    /// Single-flights fetches; holds when an unknown `kid` last caused one.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// The keys, fetched first when they are due.
    async fn current(&self) -> Result<Arc<KeySet>, Refusal> {
        let set = self.keys.load_full();
        if Instant::now() < set.next_fetch {
            return usable(set);
        }
        let _guard = self.fetching.lock().await;
        let set = self.keys.load_full();
        if Instant::now() < set.next_fetch {
            return usable(set);
        }
        usable(self.fetch_and_store(&set).await)
    }

    /// The key with `kid`, refetching once (rate-limited) when it is unknown.
    async fn find(&self, kid: &str) -> Result<Option<Arc<VerifyKey>>, Refusal> {
        if let Some(key) = self.current().await?.find(kid) {
            return Ok(Some(key));
        }
        let mut last_refetch = self.fetching.lock().await;
        let set = self.keys.load_full();
        if let Some(key) = set.find(kid) {
            return Ok(Some(key));
        }
        if last_refetch.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFETCH) {
            return Ok(None);
        }
        *last_refetch = Some(Instant::now());
        Ok(self.fetch_and_store(&set).await.find(kid))
    }

    /// Fetches and stores the keys; on failure keeps `old` (retrying soon) and logs.
    async fn fetch_and_store(&self, old: &KeySet) -> Arc<KeySet> {
        let now = Instant::now();
        let next = match self.fetch().await {
            Ok(keys) => KeySet {
                keys,
                next_fetch: now + self.refresh,
                loaded: true,
            },
            Err(error) => {
                warn!(%error, url = %self.uri, "JWKS fetch failed; keeping the previous keys");
                KeySet {
                    keys: old.keys.clone(),
                    next_fetch: now + FETCH_RETRY.min(self.refresh),
                    loaded: old.loaded,
                }
            }
        };
        let next = Arc::new(next);
        self.keys.store(next.clone());
        next
    }

    async fn fetch(&self) -> Result<Vec<Arc<VerifyKey>>, String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(header::USER_AGENT, "switchboard")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("answered {}", status.as_u16()));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "timed out".to_owned())??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        Ok(set
            .keys
            .iter()
            .filter_map(key_from_jwk)
            .map(Arc::new)
            .collect())
    }
}

/// The keys, or 500 when no fetch ever succeeded.
fn usable(set: Arc<KeySet>) -> Result<Arc<KeySet>, Refusal> {
    if set.loaded {
        Ok(set)
    } else {
        Err(Refusal::failed("JWKS unavailable"))
    }
}

/// A signing key of a JWKS, if it is one the gateway verifies (RSA → RS256, P-256 →
/// ES256; symmetric `oct` keys and encryption keys are ignored).
fn key_from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Option<VerifyKey> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => inferred,
        Some(KeyAlgorithm::RS256) if inferred == Algorithm::RS256 => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) if inferred == Algorithm::ES256 => Algorithm::ES256,
        Some(_) => return None,
    };
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// The JWT authorizer.
pub struct JwtAuthorizer {
    sources: Vec<IdentitySource>,
    marker: String,
    static_keys: Vec<Arc<VerifyKey>>,
    jwks: Option<Jwks>,
    validations: HashMap<Algorithm, Validation>,
    required_scopes: Vec<String>,
    principal_claim: String,
    context_claims: Vec<String>,
}

impl JwtAuthorizer {
    /// Builds it from validated settings, reading key files.
    pub fn new(settings: &JwtSettings, client: &HttpClient) -> Result<Self, ConfigError> {
        let sources = settings
            .token_sources
            .iter()
            .map(|s| {
                IdentitySource::parse(s)
                    .ok_or_else(|| ConfigError::invalid("auth.jwt.token_sources", s.clone()))
            })
            .collect::<Result<_, _>>()?;
        let mut static_keys = Vec::new();
        for (kid, key) in &settings.keys {
            let at = format!("auth.jwt.keys.{kid}");
            let pem = || -> Result<Vec<u8>, ConfigError> {
                if key.public_key_pem.is_empty() {
                    std::fs::read(&key.public_key_file).map_err(|e| {
                        ConfigError::invalid(
                            format!("{at}.public_key_file"),
                            format!("{}: {e}", key.public_key_file),
                        )
                    })
                } else {
                    Ok(key.public_key_pem.as_bytes().to_vec())
                }
            };
            let bad_pem = |e: jsonwebtoken::errors::Error| {
                ConfigError::invalid(at.clone(), format!("not a usable public key PEM: {e}"))
            };
            let (algorithm, decoding) = match key.algorithm {
                JwtAlgorithm::HS256 => (
                    Algorithm::HS256,
                    DecodingKey::from_secret(key.secret.expose().as_bytes()),
                ),
                JwtAlgorithm::RS256 => (
                    Algorithm::RS256,
                    DecodingKey::from_rsa_pem(&pem()?).map_err(bad_pem)?,
                ),
                JwtAlgorithm::ES256 => (
                    Algorithm::ES256,
                    DecodingKey::from_ec_pem(&pem()?).map_err(bad_pem)?,
                ),
            };
            static_keys.push(Arc::new(VerifyKey {
                kid: Some(kid.clone()),
                algorithm,
                key: decoding,
            }));
        }
        let jwks = if settings.jwks_url.is_empty() {
            None
        } else {
            let uri = settings
                .jwks_url
                .parse()
                .map_err(|e: http::uri::InvalidUri| {
                    ConfigError::invalid("auth.jwt.jwks_url", e.to_string())
                })?;
            Some(Jwks {
                uri,
                client: client.clone(),
                timeout: Duration::from_millis(settings.jwks_timeout_ms),
                refresh: Duration::from_secs(settings.jwks_refresh_secs),
                keys: ArcSwap::from_pointee(KeySet {
                    keys: Vec::new(),
                    next_fetch: Instant::now(),
                    loaded: false,
                }),
                fetching: tokio::sync::Mutex::new(None),
            })
        };
        let mut validations = HashMap::new();
        for algorithm in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            let mut v = Validation::new(algorithm);
            v.leeway = settings.leeway_secs;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = !settings.audience.is_empty();
            if !settings.audience.is_empty() {
                v.set_audience(&settings.audience);
            }
            if !settings.issuer.is_empty() {
                v.set_issuer(&[&settings.issuer]);
            }
            // A configured issuer or audience must also be present, not only right when there.
            let mut required = vec!["exp"];
            if !settings.issuer.is_empty() {
                required.push("iss");
            }
            if !settings.audience.is_empty() {
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            validations.insert(algorithm, v);
        }
        Ok(Self {
            sources,
            marker: settings.subprotocol_marker.clone(),
            static_keys,
            jwks,
            validations,
            required_scopes: settings.required_scopes.clone(),
            principal_claim: settings.principal_claim.clone(),
            context_claims: settings.context_claims.clone(),
        })
    }

    /// The token and, when it came in `Sec-WebSocket-Protocol`, the marker to select.
    fn token<'h>(&self, handshake: &Handshake<'h>) -> Option<(&'h str, Option<String>)> {
        for source in &self.sources {
            let found = match source {
                IdentitySource::Header(name) => {
                    handshake.headers.get(name.as_str()).and_then(|v| {
                        let v = v.to_str().ok()?.trim();
                        let token = match v.get(..7) {
                            Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
                            _ => v,
                        };
                        Some((token, None))
                    })
                }
                IdentitySource::Query(name) => handshake
                    .query
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| (v.as_str(), None)),
                IdentitySource::Subprotocol => subprotocol_token(handshake.headers, &self.marker)
                    .map(|t| (t, Some(self.marker.clone()))),
            };
            if let Some(found) = found.filter(|(t, _)| !t.is_empty()) {
                return Some(found);
            }
        }
        None
    }

    /// Decides one handshake.
    pub async fn authorize(&self, handshake: &Handshake<'_>) -> Result<Verdict, Refusal> {
        let (token, subprotocol) = self
            .token(handshake)
            .ok_or_else(|| Refusal::unauthorized("no token"))?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::unauthorized("malformed token"))?;
        if !self.validations.contains_key(&header.alg) {
            return Err(Refusal::unauthorized(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let candidates = self.candidates(header.kid.as_deref(), header.alg).await?;
        if candidates.is_empty() {
            return Err(Refusal::unauthorized(
                "no key for the token's kid and algorithm",
            ));
        }
        let validation = &self.validations[&header.alg];
        let mut failure = ErrorKind::InvalidSignature;
        let mut claims = None;
        for key in &candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    // A key that verified the signature tells the more useful story.
                    if matches!(failure, ErrorKind::InvalidSignature) {
                        failure = e.into_kind();
                    }
                }
            }
        }
        let claims = claims.ok_or_else(|| Refusal::unauthorized(describe(&failure)))?;
        if !self.required_scopes.is_empty() && !has_scope(&claims, &self.required_scopes) {
            return Err(Refusal::forbidden("token lacks a required scope"));
        }
        let context = AuthorizerContext {
            principal_id: claims.get(&self.principal_claim).map(stringify),
            context: self
                .context_claims
                .iter()
                .filter_map(|c| claims.get(c).map(|v| (c.clone(), stringify(v))))
                .collect(),
        };
        Ok(Verdict {
            context: Some(Arc::new(context)),
            usage_identifier_key: None,
            subprotocol,
        })
    }

    /// Keys to try: the one with the token's `kid` (static, then JWKS), or without a `kid`
    /// every key of the token's algorithm.
    async fn candidates(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Vec<Arc<VerifyKey>>, Refusal> {
        let of_alg = |k: &Arc<VerifyKey>| k.algorithm == algorithm;
        match kid {
            Some(kid) => {
                if let Some(key) = self
                    .static_keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                {
                    return Ok(vec![key.clone()].into_iter().filter(of_alg).collect());
                }
                match &self.jwks {
                    Some(jwks) => Ok(jwks.find(kid).await?.into_iter().filter(of_alg).collect()),
                    None => Ok(Vec::new()),
                }
            }
            None => {
                let mut keys: Vec<_> = self
                    .static_keys
                    .iter()
                    .filter(|k| of_alg(k))
                    .cloned()
                    .collect();
                if let Some(jwks) = &self.jwks {
                    keys.extend(
                        jwks.current()
                            .await?
                            .keys
                            .iter()
                            .filter(|k| of_alg(k))
                            .cloned(),
                    );
                }
                Ok(keys)
            }
        }
    }
}

/// The token offered after `marker` in `Sec-WebSocket-Protocol` (all header lines).
fn subprotocol_token<'h>(headers: &'h http::HeaderMap, marker: &str) -> Option<&'h str> {
    let mut offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    offered.find(|p| *p == marker)?;
    offered.next()
}

/// Whether the claims carry one of `required` in `scope` (space-separated) or `scp`.
fn has_scope(claims: &Map<String, Value>, required: &[String]) -> bool {
    let mut granted: Vec<&str> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => granted.extend(s.split_whitespace()),
            Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    required.iter().any(|r| granted.contains(&r.as_str()))
}

/// A log-safe description of a verification failure (no token content).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::MissingRequiredClaim(_) => "missing a required claim",
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
        _ => "invalid token",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_after_the_marker() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "graphql-ws, bearer".parse().unwrap(),
        );
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "aaa.bbb.ccc".parse().unwrap(),
        );
        assert_eq!(subprotocol_token(&headers, "bearer"), Some("aaa.bbb.ccc"));
        assert_eq!(subprotocol_token(&headers, "other"), None);
        let mut only_marker = http::HeaderMap::new();
        only_marker.insert(header::SEC_WEBSOCKET_PROTOCOL, "bearer".parse().unwrap());
        assert_eq!(subprotocol_token(&only_marker, "bearer"), None);
    }

    #[test]
    fn scopes() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"scope":"read write","scp":["admin"]}"#).unwrap();
        assert!(has_scope(&claims, &["write".into()]));
        assert!(has_scope(&claims, &["admin".into(), "x".into()]));
        assert!(!has_scope(&claims, &["delete".into()]));
    }
}
