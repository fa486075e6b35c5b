//! Settings of who may connect and who may call the management API: `[auth]` (origin
//! allowlist, the HTTP REQUEST or JWT authorizer, API keys), the management API's SigV4
//! credentials, and TLS for either listener. Pure data and validation; the running forms
//! live in [`crate::auth`], [`crate::management::auth`] and [`crate::tls`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, ManagementAuth, Secret, Settings};

/// Which authorizer runs on `$connect`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    /// No authorizer: every handshake that passes the other checks is let in.
    None,
    /// An HTTP endpoint answering AWS's REQUEST-authorizer event (`[auth.http]`).
    Http,
    /// JWTs verified in the gateway (`[auth.jwt]`).
    Jwt,
}

/// `[auth]`: admission checks run before `$connect`, in this order: origin, authorizer,
/// API key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `none`, `http` or `jwt`.
    pub authorizer: AuthorizerKind,
    /// Browser origins allowed to connect (`https://app.example.com`, `*` wildcards allowed).
    /// Empty: no origin check. A handshake without `Origin` (not a browser) is not checked.
    pub allowed_origins: Vec<String>,
    /// The HTTP REQUEST authorizer.
    pub http: HttpAuthorizerSettings,
    /// The built-in JWT authorizer.
    pub jwt: JwtSettings,
    /// API keys.
    pub api_keys: ApiKeySettings,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            authorizer: AuthorizerKind::None,
            allowed_origins: Vec::new(),
            http: HttpAuthorizerSettings::default(),
            jwt: JwtSettings::default(),
            api_keys: ApiKeySettings::default(),
        }
    }
}

/// `[auth.http]`: an HTTP endpoint that receives AWS's REQUEST-authorizer event and answers
/// with an IAM policy or a simple `{"isAuthorized": …}` response.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpAuthorizerSettings {
    /// The URL the authorizer event is POSTed to.
    pub url: String,
    /// Values that must be present and non-empty, else 401 without calling the authorizer:
    /// `route.request.header.NAME` or `route.request.querystring.NAME`. They also key the cache.
    pub identity_sources: Vec<String>,
    /// Milliseconds before the call is abandoned (then 500).
    pub timeout_ms: u64,
    /// Seconds a result is reused for the same identity-source values (0: no cache, as AWS).
    pub cache_ttl_secs: u64,
    /// Most results kept in the cache.
    pub cache_max_entries: usize,
    /// Region in the `methodArn` sent to the authorizer.
    pub region: String,
    /// Account id in the `methodArn`.
    pub account_id: String,
}

impl Default for HttpAuthorizerSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            identity_sources: vec!["route.request.header.Authorization".into()],
            timeout_ms: 5000,
            cache_ttl_secs: 0,
            cache_max_entries: 10_000,
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }
}

/// A JWT signature algorithm the gateway verifies.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (a shared secret).
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

/// One statically configured JWT verification key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySettings {
    /// `HS256`, `RS256` or `ES256`; a token must name the same algorithm.
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret (at least 32 bytes).
    #[serde(default = "empty_secret")]
    pub secret: Secret,
    /// RS256/ES256: a PEM file with the public key.
    #[serde(default)]
    pub public_key_file: String,
    /// RS256/ES256: the public key PEM inline (instead of a file).
    #[serde(default)]
    pub public_key_pem: String,
}

fn empty_secret() -> Secret {
    Secret::new("")
}

/// `[auth.jwt]`: JWTs verified in the gateway, without a backend round trip.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// Where the token is looked for, first found wins: `route.request.header.NAME` (a
    /// `Bearer ` prefix is stripped), `route.request.querystring.NAME`, or
    /// `route.request.subprotocol` (the offered subprotocol after `subprotocol_marker`).
    pub token_sources: Vec<String>,
    /// The subprotocol that announces a token: the client offers `[marker, token]` and the
    /// 101 selects `marker`.
    pub subprotocol_marker: String,
    /// A JWKS document with the verification keys (http or https); empty: only `keys`.
    pub jwks_url: String,
    /// Seconds a fetched JWKS is used before it is fetched again.
    pub jwks_refresh_secs: u64,
    /// Milliseconds a JWKS fetch may take.
    pub jwks_timeout_ms: u64,
    /// Accepted `iss`; empty: not checked.
    pub issuer: String,
    /// Accepted `aud` values (any one); empty: not checked.
    pub audience: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Scopes (`scope` or `scp` claim) of which the token must carry at least one, else 403;
    /// empty: not checked.
    pub required_scopes: Vec<String>,
    /// The claim that becomes `principalId`.
    pub principal_claim: String,
    /// Claims copied into the authorizer context (stringified).
    pub context_claims: Vec<String>,
    /// Static keys by `kid` (a token without a `kid` is tried against keys of its algorithm).
    pub keys: BTreeMap<String, JwtKeySettings>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            token_sources: vec!["route.request.header.Authorization".into()],
            subprotocol_marker: "bearer".into(),
            jwks_url: String::new(),
            jwks_refresh_secs: 600,
            jwks_timeout_ms: 5000,
            issuer: String::new(),
            audience: Vec::new(),
            leeway_secs: 60,
            required_scopes: Vec::new(),
            principal_claim: "sub".into(),
            context_claims: Vec::new(),
            keys: BTreeMap::new(),
        }
    }
}

/// `[auth.api_keys]`: keys clients present on `$connect`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Whether a known key is required on `$connect` (missing or unknown: 403).
    pub required: bool,
    /// `$request.header.x-api-key` or `$context.authorizer.usageIdentifierKey` (AWS's
    /// `ApiKeySelectionExpression`).
    pub selection_expression: String,
    /// Key name → key.
    pub keys: BTreeMap<String, ApiKeyEntry>,
}

impl Default for ApiKeySettings {
    fn default() -> Self {
        Self {
            required: false,
            selection_expression: "$request.header.x-api-key".into(),
            keys: BTreeMap::new(),
        }
    }
}

/// One API key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The key itself (at least 20 characters, as AWS requires).
    pub value: Secret,
    /// Connections per second this key may open (token bucket); 0: no limit. Over it: 429.
    #[serde(default)]
    pub rate_per_sec: f64,
    /// Connections the bucket allows at once; 0: `max(1, rate_per_sec)`.
    #[serde(default)]
    pub burst: u32,
    /// Connections per UTC day; 0: no quota. Over it: 429 until midnight UTC.
    #[serde(default)]
    pub daily_quota: u64,
}

/// `[management.sigv4]`: AWS Signature Version 4 for management callers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SigV4Settings {
    /// The region the credential scope must name.
    pub region: String,
    /// `ACCESS_KEY_ID:SECRET_ACCESS_KEY` pairs.
    pub access_keys: Vec<Secret>,
    /// Largest difference between the request's `X-Amz-Date` and the gateway's clock (AWS: 900).
    pub max_clock_skew_secs: u64,
}

impl Default for SigV4Settings {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            access_keys: Vec::new(),
            max_clock_skew_secs: 900,
        }
    }
}

impl SigV4Settings {
    /// The access keys as `(id, secret)` pairs; malformed entries are skipped (validation
    /// rejects them first).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.access_keys
            .iter()
            .filter_map(|k| k.expose().split_once(':'))
            .map(|(id, secret)| (id.trim(), secret.trim()))
    }
}

/// `[client.tls]` / `[management.tls]`: serve TLS with this certificate chain and key.
/// Both empty: plain TCP.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl TlsSettings {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// Where an identity value (authorizer identity source, JWT token source) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `route.request.header.NAME` (stored lowercase).
    Header(String),
    /// `route.request.querystring.NAME`.
    Query(String),
    /// `route.request.subprotocol` (JWT only).
    Subprotocol,
}

impl IdentitySource {
    /// Parses `route.request.header.X`, `route.request.querystring.X` or
    /// `route.request.subprotocol`.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "route.request.subprotocol" {
            return Some(Self::Subprotocol);
        }
        if let Some(name) = text.strip_prefix("route.request.header.") {
            let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            return valid.then(|| Self::Header(name.to_ascii_lowercase()));
        }
        let name = text.strip_prefix("route.request.querystring.")?;
        (!name.is_empty()).then(|| Self::Query(name.to_owned()))
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| invalid(key, e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(key, "must be an http:// or https:// URL"));
    }
    Ok(())
}

fn tls(key: &str, tls: &TlsSettings) -> Result<(), ConfigError> {
    if tls.cert_file.is_empty() != tls.key_file.is_empty() {
        return Err(invalid(
            key,
            "cert_file and key_file must both be set (TLS on) or both be empty (TLS off)",
        ));
    }
    Ok(())
}

/// Checks `[auth]`, the management credentials and both TLS sections.
pub(super) fn validate(settings: &Settings) -> Result<(), ConfigError> {
    let auth = &settings.auth;
    for origin in &auth.allowed_origins {
        if origin.trim().is_empty() {
            return Err(invalid("auth.allowed_origins", "an origin cannot be empty"));
        }
    }
    match auth.authorizer {
        AuthorizerKind::None => {}
        AuthorizerKind::Http => validate_http(&auth.http)?,
        AuthorizerKind::Jwt => validate_jwt(&auth.jwt)?,
    }
    let keys = &auth.api_keys;
    match keys.selection_expression.as_str() {
        "$request.header.x-api-key" => {}
        "$context.authorizer.usageIdentifierKey" => {
            if auth.authorizer != AuthorizerKind::Http {
                return Err(invalid(
                    "auth.api_keys.selection_expression",
                    "usageIdentifierKey comes from the HTTP authorizer: set auth.authorizer = \"http\"",
                ));
            }
        }
        _ => {
            return Err(invalid(
                "auth.api_keys.selection_expression",
                "must be \"$request.header.x-api-key\" or \"$context.authorizer.usageIdentifierKey\"",
            ));
        }
    }
    if keys.required && keys.keys.is_empty() {
        return Err(invalid(
            "auth.api_keys.keys",
            "required = true needs at least one key",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, key) in &keys.keys {
        let at = format!("auth.api_keys.keys.{name}");
        if key.value.expose().len() < 20 {
            return Err(invalid(
                &format!("{at}.value"),
                "must be at least 20 characters",
            ));
        }
        if !seen.insert(key.value.expose()) {
            return Err(invalid(
                &format!("{at}.value"),
                "the same value is used by another key",
            ));
        }
        if !key.rate_per_sec.is_finite() || key.rate_per_sec < 0.0 {
            return Err(invalid(
                &format!("{at}.rate_per_sec"),
                "must be 0 (no limit) or a positive number",
            ));
        }
    }
    let management = &settings.management;
    if matches!(
        management.auth,
        ManagementAuth::Sigv4 | ManagementAuth::Both
    ) {
        let sigv4 = &management.sigv4;
        if sigv4.access_keys.is_empty() {
            return Err(invalid(
                "management.sigv4.access_keys",
                "SigV4 needs at least one ACCESS_KEY_ID:SECRET pair",
            ));
        }
        for key in &sigv4.access_keys {
            let ok = key
                .expose()
                .split_once(':')
                .is_some_and(|(id, secret)| !id.trim().is_empty() && !secret.trim().is_empty());
            if !ok {
                return Err(invalid(
                    "management.sigv4.access_keys",
                    "every entry must be ACCESS_KEY_ID:SECRET_ACCESS_KEY",
                ));
            }
        }
        if sigv4.region.is_empty() {
            return Err(invalid("management.sigv4.region", "cannot be empty"));
        }
        if sigv4.max_clock_skew_secs == 0 {
            return Err(invalid(
                "management.sigv4.max_clock_skew_secs",
                "must be greater than 0",
            ));
        }
    }
    tls("client.tls", &settings.client.tls)?;
    tls("management.tls", &management.tls)?;
    Ok(())
}

fn validate_http(http: &HttpAuthorizerSettings) -> Result<(), ConfigError> {
    http_url("auth.http.url", &http.url)?;
    for source in &http.identity_sources {
        match IdentitySource::parse(source) {
            Some(IdentitySource::Header(_) | IdentitySource::Query(_)) => {}
            _ => {
                return Err(invalid(
                    "auth.http.identity_sources",
                    format!(
                        "{source:?}: use route.request.header.NAME or route.request.querystring.NAME"
                    ),
                ));
            }
        }
    }
    if !(50..=29_000).contains(&http.timeout_ms) {
        return Err(invalid(
            "auth.http.timeout_ms",
            "must be between 50 and 29000",
        ));
    }
    if http.cache_ttl_secs > 0 && http.identity_sources.is_empty() {
        return Err(invalid(
            "auth.http.cache_ttl_secs",
            "a cache needs identity_sources to key it",
        ));
    }
    if http.cache_max_entries == 0 {
        return Err(invalid(
            "auth.http.cache_max_entries",
            "must be greater than 0",
        ));
    }
    Ok(())
}

fn validate_jwt(jwt: &JwtSettings) -> Result<(), ConfigError> {
    if jwt.token_sources.is_empty() {
        return Err(invalid(
            "auth.jwt.token_sources",
            "at least one source is required",
        ));
    }
    for source in &jwt.token_sources {
        if IdentitySource::parse(source).is_none() {
            return Err(invalid(
                "auth.jwt.token_sources",
                format!(
                    "{source:?}: use route.request.header.NAME, route.request.querystring.NAME or route.request.subprotocol"
                ),
            ));
        }
    }
    let marker_ok = !jwt.subprotocol_marker.is_empty()
        && http::HeaderValue::from_str(&jwt.subprotocol_marker).is_ok()
        && !jwt.subprotocol_marker.contains([',', ' ']);
    if !marker_ok {
        return Err(invalid(
            "auth.jwt.subprotocol_marker",
            "must be a non-empty token without commas or spaces",
        ));
    }
    if jwt.jwks_url.is_empty() && jwt.keys.is_empty() {
        return Err(invalid(
            "auth.jwt",
            "set jwks_url or at least one entry in keys",
        ));
    }
    if !jwt.jwks_url.is_empty() {
        http_url("auth.jwt.jwks_url", &jwt.jwks_url)?;
    }
    if jwt.jwks_refresh_secs == 0 {
        return Err(invalid(
            "auth.jwt.jwks_refresh_secs",
            "must be greater than 0",
        ));
    }
    if !(50..=29_000).contains(&jwt.jwks_timeout_ms) {
        return Err(invalid(
            "auth.jwt.jwks_timeout_ms",
            "must be between 50 and 29000",
        ));
    }
    if jwt.principal_claim.is_empty() {
        return Err(invalid("auth.jwt.principal_claim", "cannot be empty"));
    }
    for (kid, key) in &jwt.keys {
        let at = format!("auth.jwt.keys.{kid}");
        match key.algorithm {
            JwtAlgorithm::HS256 => {
                if key.secret.expose().len() < 32 {
                    return Err(invalid(
                        &format!("{at}.secret"),
                        "HS256 needs a secret of at least 32 bytes",
                    ));
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                if key.public_key_file.is_empty() == key.public_key_pem.is_empty() {
                    return Err(invalid(
                        &at,
                        "set exactly one of public_key_file and public_key_pem",
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigSource, load};

    fn error_for(text: &str) -> String {
        load(ConfigSource::Text(text), Vec::new())
            .expect_err(text)
            .to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let none = "[management]\nauth = \"none\"\n";
        let cases: &[(&str, &str)] = &[
            ("[auth]\nauthorizer = \"http\"\n", "auth.http.url"),
            (
                "[auth]\nauthorizer = \"http\"\n[auth.http]\nurl = \"http://a\"\nidentity_sources = [\"stageVariables.x\"]\n",
                "auth.http.identity_sources",
            ),
            (
                "[auth]\nauthorizer = \"http\"\n[auth.http]\nurl = \"http://a\"\nidentity_sources = []\ncache_ttl_secs = 5\n",
                "auth.http.cache_ttl_secs",
            ),
            ("[auth]\nauthorizer = \"jwt\"\n", "auth.jwt"),
            (
                "[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\njwks_url = \"ftp://x\"\n",
                "auth.jwt.jwks_url",
            ),
            (
                "[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\ntoken_sources = [\"cookie\"]\njwks_url = \"http://x\"\n",
                "auth.jwt.token_sources",
            ),
            (
                "[auth]\nauthorizer = \"jwt\"\n[auth.jwt.keys.k]\nalgorithm = \"HS256\"\nsecret = \"short\"\n",
                "auth.jwt.keys.k.secret",
            ),
            (
                "[auth]\nauthorizer = \"jwt\"\n[auth.jwt.keys.k]\nalgorithm = \"RS256\"\n",
                "auth.jwt.keys.k",
            ),
            (
                "[auth]\nauthorizer = \"jwt\"\n[auth.jwt.keys.k]\nalgorithm = \"PS256\"\n",
                "auth.jwt.keys.k.algorithm",
            ),
            ("[auth.api_keys]\nrequired = true\n", "auth.api_keys.keys"),
            (
                "[auth.api_keys]\nselection_expression = \"$context.authorizer.usageIdentifierKey\"\n",
                "auth.api_keys.selection_expression",
            ),
            (
                "[auth.api_keys.keys.a]\nvalue = \"short\"\n",
                "auth.api_keys.keys.a.value",
            ),
            ("[client.tls]\ncert_file = \"c.pem\"\n", "client.tls"),
        ];
        for (text, key) in cases {
            let err = error_for(&format!("{none}{text}"));
            assert!(
                err.contains(key),
                "error for {text:?} should name {key}: {err}"
            );
        }
        let management: &[(&str, &str)] = &[
            (
                "[management]\nauth = \"sigv4\"\n",
                "management.sigv4.access_keys",
            ),
            (
                "[management]\nauth = \"both\"\nbearer_tokens = [\"0123456789abcdef\"]\n[management.sigv4]\naccess_keys = [\"no-colon\"]\n",
                "management.sigv4.access_keys",
            ),
            (
                "[management]\nauth = \"both\"\n[management.sigv4]\naccess_keys = [\"A:B\"]\n",
                "management.bearer_tokens",
            ),
        ];
        for (text, key) in management {
            let err = error_for(text);
            assert!(
                err.contains(key),
                "error for {text:?} should name {key}: {err}"
            );
        }
    }

    #[test]
    fn sigv4_keys_from_the_environment_keep_their_case() {
        let env = vec![(
            "SWITCHBOARD__MANAGEMENT__SIGV4__ACCESS_KEYS".to_owned(),
            "AKIDONE:Secret/One+1,AKIDTWO:Secret/Two+2".to_owned(),
        )];
        let s = load(ConfigSource::Text("[management]\nauth = \"sigv4\"\n"), env).expect("loads");
        let pairs: Vec<_> = s.management.sigv4.pairs().collect();
        assert_eq!(
            pairs,
            [("AKIDONE", "Secret/One+1"), ("AKIDTWO", "Secret/Two+2")]
        );
    }
}
