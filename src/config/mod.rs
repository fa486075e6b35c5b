//! Configuration: loading a TOML file plus `SWITCHBOARD__SECTION__KEY` environment
//! overrides into typed [`Settings`], and validating them with the offending key named.
//!
//! Owns no I/O beyond reading the one file. Deeper checks that need the route and
//! integration machinery (parsing the selection expression, mock templates) run when the
//! gateway builds its [`crate::api::Api`], which reports errors in the same shape.

pub mod access_log;
mod auth;
mod lambda;
mod limits;
mod net;
mod resume;
mod settings;

pub use auth::*;
pub use lambda::*;
pub use limits::*;
pub use net::IpRange;
pub use resume::ResumeSettings;
pub use settings::*;

use config::{Config, Environment, File, FileFormat};

/// The embedded default configuration (`config/default.toml`): one node, in memory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment overrides: `SWITCHBOARD__CLIENT__LISTEN=0.0.0.0:8080`.
pub const ENV_PREFIX: &str = "SWITCHBOARD";

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed as TOML.
    #[error("cannot read configuration: {0}")]
    Source(String),
    /// A key is unknown, or its value has the wrong type.
    #[error("invalid configuration at `{key}`: {message}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// An error about one key.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where the settings come from.
#[derive(Debug, Clone)]
pub enum ConfigSource<'a> {
    /// The embedded `config/default.toml`.
    Embedded,
    /// A TOML file on disk.
    File(&'a std::path::Path),
    /// TOML text (tests).
    Text(&'a str),
}

/// Loads settings from `source`, applies environment overrides from `env` (pass
/// `std::env::vars()`), and validates them.
pub fn load(
    source: ConfigSource<'_>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let text = match source {
        ConfigSource::Embedded => DEFAULT_TOML.to_owned(),
        ConfigSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Source(format!("{}: {e}", path.display())))?,
        ConfigSource::Text(text) => text.to_owned(),
    };
    let mut overrides = config::Map::new();
    // `SWITCHBOARD__LAMBDA__ENVIRONMENT__<NAME>`: applied below, keeping `<NAME>`'s case
    // (the `config` crate lowercases every key it reads from the environment).
    let mut lambda_environment = Vec::new();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix(&format!("{ENV_PREFIX}__")) else {
            continue;
        };
        match strip_prefix_ignore_case(rest, LAMBDA_ENVIRONMENT_OVERRIDE) {
            Some(name) => lambda_environment.push((name.to_owned(), value)),
            None => {
                overrides.insert(key, value);
            }
        }
    }
    let raw = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("api.stages")
                .with_list_parse_key("client.trusted_proxies")
                .with_list_parse_key("cluster.redis_cluster_nodes")
                .with_list_parse_key("management.bearer_tokens")
                .with_list_parse_key("management.sigv4.access_keys")
                .with_list_parse_key("auth.allowed_origins")
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Source(e.to_string()))?;
    let mut settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::invalid(key, e.into_inner().to_string())
    })?;
    settings.lambda.environment.extend(lambda_environment);
    if let ConfigSource::File(path) = source
        && let Some(base) = path.parent()
    {
        // Relative paths in a file are relative to the file, not to the working directory.
        lambda::resolve_paths(base, &mut settings.lambda, &mut settings.integrations);
    }
    settings.validate()?;
    Ok(settings)
}

/// After the prefix: the overrides of `[lambda.environment]`, whose names keep their case.
const LAMBDA_ENVIRONMENT_OVERRIDE: &str = "LAMBDA__ENVIRONMENT__";

/// `text` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

impl Settings {
    /// Checks what the types alone cannot: ranges, references between sections, names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api.stages.is_empty() {
            return Err(ConfigError::invalid(
                "api.stages",
                "at least one stage is required",
            ));
        }
        for stage in &self.api.stages {
            let ok = !stage.is_empty()
                && stage.len() <= 128
                && stage
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(ConfigError::invalid(
                    "api.stages",
                    format!("stage {stage:?} must be 1-128 characters of A-Z a-z 0-9 - _"),
                ));
            }
        }
        let c = &self.client;
        positive("client.header_timeout_ms", c.header_timeout_ms)?;
        positive("client.handshake_timeout_ms", c.handshake_timeout_ms)?;
        if c.max_header_bytes < 8192 {
            return Err(ConfigError::invalid(
                "client.max_header_bytes",
                "must be at least 8192",
            ));
        }
        positive("client.max_headers", c.max_headers as u64)?;
        positive("client.read_buffer_bytes", c.read_buffer_bytes as u64)?;
        positive("client.max_frame_bytes", c.max_frame_bytes as u64)?;
        if c.max_message_bytes < c.max_frame_bytes {
            return Err(ConfigError::invalid(
                "client.max_message_bytes",
                "must be at least client.max_frame_bytes",
            ));
        }
        positive(
            "client.max_fragments_per_message",
            u64::from(c.max_fragments_per_message),
        )?;
        positive("client.idle_timeout_secs", c.idle_timeout_secs)?;
        positive("client.max_lifetime_secs", c.max_lifetime_secs)?;
        positive(
            "client.outbound_queue_messages",
            c.outbound_queue_messages as u64,
        )?;
        if c.outbound_queue_bytes < c.max_message_bytes {
            return Err(ConfigError::invalid(
                "client.outbound_queue_bytes",
                "must be at least client.max_message_bytes",
            ));
        }
        positive("client.slow_consumer_grace_ms", c.slow_consumer_grace_ms)?;
        positive(
            "client.max_inflight_per_connection",
            c.max_inflight_per_connection as u64,
        )?;
        positive("client.max_json_depth", c.max_json_depth as u64)?;
        if c.max_json_depth > 127 {
            // serde_json refuses JSON nested 128 levels or deeper (found by fuzzing).
            return Err(ConfigError::invalid(
                "client.max_json_depth",
                "must be at most 127 (the JSON parser's own nesting limit)",
            ));
        }
        if c.callbacks && self.management.auth == ManagementAuth::None {
            return Err(ConfigError::invalid(
                "client.callbacks",
                "serves @connections on the client listener, which is never unauthenticated: \
                 set management.auth to \"bearer\", \"sigv4\" or \"both\"",
            ));
        }
        if c.public_host.contains(['/', ' ']) {
            return Err(ConfigError::invalid(
                "client.public_host",
                "must be a host name, optionally with :port (no scheme, no path)",
            ));
        }
        if matches!(
            self.management.auth,
            ManagementAuth::Bearer | ManagementAuth::Both
        ) {
            if self.management.bearer_tokens.is_empty() {
                return Err(ConfigError::invalid(
                    "management.bearer_tokens",
                    "auth = \"bearer\" needs at least one token (or set auth = \"none\" explicitly)",
                ));
            }
            if self
                .management
                .bearer_tokens
                .iter()
                .any(|t| t.expose().len() < 16)
            {
                return Err(ConfigError::invalid(
                    "management.bearer_tokens",
                    "every token must be at least 16 characters",
                ));
            }
        }
        access_log::parse(&self.access_log.format)?;
        if self.access_log.destination.is_empty() {
            return Err(ConfigError::invalid(
                "access_log.destination",
                "must be \"stdout\" or a file path",
            ));
        }
        let cluster = &self.cluster;
        if !cluster.redis_url.expose().is_empty() {
            redis_url("cluster.redis_url", cluster.redis_url.expose())?;
            if !cluster.redis_cluster_nodes.is_empty() {
                return Err(ConfigError::invalid(
                    "cluster.redis_cluster_nodes",
                    "set either redis_url (one Redis server) or redis_cluster_nodes (a Redis Cluster), not both",
                ));
            }
        }
        for node in &cluster.redis_cluster_nodes {
            redis_url("cluster.redis_cluster_nodes", node.expose())?;
        }
        if !cluster.redis_ca_file.is_empty() {
            let tls = std::iter::once(&cluster.redis_url)
                .chain(&cluster.redis_cluster_nodes)
                .any(|u| u.expose().starts_with("rediss://"));
            if !tls {
                return Err(ConfigError::invalid(
                    "cluster.redis_ca_file",
                    "is for TLS: the Redis URLs must be rediss://",
                ));
            }
            std::fs::File::open(&cluster.redis_ca_file).map_err(|e| {
                ConfigError::invalid("cluster.redis_ca_file", format!("cannot be read: {e}"))
            })?;
        }
        let prefix_ok = !cluster.key_prefix.is_empty()
            && cluster
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "cluster.key_prefix",
                "must be non-empty: A-Z a-z 0-9 _ - .",
            ));
        }
        if cluster.lease_ttl_ms < 300 {
            return Err(ConfigError::invalid(
                "cluster.lease_ttl_ms",
                "must be at least 300",
            ));
        }
        positive("cluster.request_timeout_ms", cluster.request_timeout_ms)?;
        positive("cluster.write_queue", cluster.write_queue as u64)?;
        let idle = self.http_client.idle_timeout_ms;
        if !(100..=3_600_000).contains(&idle) {
            // Under 100 ms the pool never evicts (its check runs at most every 90 ms);
            // a bound above keeps the timer's deadline arithmetic far from overflow.
            return Err(ConfigError::invalid(
                "http_client.idle_timeout_ms",
                "must be between 100 and 3600000",
            ));
        }
        self.limits.validate(&self.routes)?;
        self.resume.validate()?;
        auth::validate(self)?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        for (key, route) in &self.routes {
            let at = format!("routes.{key}");
            if key.is_empty() {
                return Err(ConfigError::invalid(at, "a route key cannot be empty"));
            }
            if key.starts_with('$')
                && !matches!(key.as_str(), "$connect" | "$disconnect" | "$default")
            {
                return Err(ConfigError::invalid(
                    at,
                    "keys starting with $ are reserved: only $connect, $disconnect and $default",
                ));
            }
            if !self.integrations.contains_key(&route.integration) {
                return Err(ConfigError::invalid(
                    format!("{at}.integration"),
                    format!("no integration named {:?}", route.integration),
                ));
            }
        }
        for (name, integration) in &self.integrations {
            if let IntegrationSettings::Http {
                url, timeout_ms, ..
            } = integration
            {
                let parsed = url::Url::parse(url).map_err(|e| {
                    ConfigError::invalid(format!("integrations.{name}.url"), e.to_string())
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::invalid(
                        format!("integrations.{name}.url"),
                        "must be an http:// or https:// URL",
                    ));
                }
                if !(50..=29_000).contains(timeout_ms) {
                    return Err(ConfigError::invalid(
                        format!("integrations.{name}.timeout_ms"),
                        "must be between 50 and 29000",
                    ));
                }
            }
            if let IntegrationSettings::Mock { status, .. } = integration
                && !(100..=599).contains(status)
            {
                return Err(ConfigError::invalid(
                    format!("integrations.{name}.status"),
                    "must be an HTTP status between 100 and 599",
                ));
            }
            if let IntegrationSettings::Lambda(function) = integration {
                function.validate(name)?;
            }
        }
        lambda::validate(&self.lambda)?;
        Ok(())
    }
}

/// A Redis URL: `redis://` or `rediss://` (TLS).
fn redis_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(value).map_err(|e| ConfigError::invalid(key, e.to_string()))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(ConfigError::invalid(
            key,
            "must be a redis:// or rediss:// URL",
        ));
    }
    Ok(())
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Settings, ConfigError> {
        load(ConfigSource::Text(text), Vec::new())
    }

    const MINIMAL: &str = "[management]\nauth = \"none\"\n";

    #[test]
    fn a_redis_cluster_is_named_by_its_seed_urls_and_excludes_redis_url() {
        let cluster = |body: &str| load_text(&format!("{MINIMAL}[cluster]\n{body}\n"));
        let ok =
            cluster(r#"redis_cluster_nodes = ["redis://127.0.0.1:7000", "rediss://:pw@h:7001"]"#)
                .expect("two seeds");
        assert!(ok.cluster.uses_redis());
        assert_eq!(ok.cluster.redis_cluster_nodes.len(), 2);
        let both =
            cluster("redis_url = \"redis://a:6379\"\nredis_cluster_nodes = [\"redis://b:7000\"]");
        let message = both.unwrap_err().to_string();
        assert!(
            message.contains("cluster.redis_cluster_nodes") && message.contains("not both"),
            "{message}"
        );
        let bad = cluster(r#"redis_cluster_nodes = ["http://127.0.0.1:7000"]"#);
        let message = bad.unwrap_err().to_string();
        assert!(
            message.contains("cluster.redis_cluster_nodes") && message.contains("redis://"),
            "{message}"
        );
        assert!(!load_text(MINIMAL).unwrap().cluster.uses_redis());
        let plain_ca = cluster("redis_url = \"redis://a:6379\"\nredis_ca_file = \"Cargo.toml\"");
        let message = plain_ca.unwrap_err().to_string();
        assert!(
            message.contains("cluster.redis_ca_file") && message.contains("rediss://"),
            "{message}"
        );
        let missing =
            cluster("redis_url = \"rediss://a:6379\"\nredis_ca_file = \"/nonexistent/ca.pem\"");
        let message = missing.unwrap_err().to_string();
        assert!(
            message.contains("cluster.redis_ca_file") && message.contains("cannot be read"),
            "{message}"
        );
        cluster("redis_url = \"rediss://a:6379\"\nredis_ca_file = \"Cargo.toml\"")
            .expect("a readable file");
    }

    #[test]
    fn embedded_default_matches_the_typed_defaults() {
        let embedded = load(ConfigSource::Embedded, Vec::new()).expect("default loads");
        let typed = Settings::default();
        assert_eq!(embedded.api, typed.api);
        assert_eq!(embedded.client, typed.client);
        assert_eq!(embedded.log, typed.log);
        assert_eq!(embedded.server, typed.server);
        assert_eq!(embedded.cluster, typed.cluster);
        assert_eq!(embedded.access_log, typed.access_log);
        assert_eq!(embedded.limits, typed.limits);
        assert_eq!(embedded.http_client, typed.http_client);
        assert_eq!(embedded.management.listen, typed.management.listen);
        assert_eq!(embedded.management.auth, typed.management.auth);
        assert_eq!(embedded.auth, typed.auth);
        assert_eq!(embedded.management.sigv4, typed.management.sigv4);
        assert_eq!(embedded.management.tls, typed.management.tls);
        assert_eq!(embedded.lambda, typed.lambda);
        assert!(embedded.routes.contains_key("$default"));
        assert!(embedded.routes.contains_key("whoami"));
    }

    #[test]
    fn env_overrides_apply() {
        let env = vec![
            (
                "SWITCHBOARD__CLIENT__LISTEN".to_owned(),
                "127.0.0.1:9999".to_owned(),
            ),
            (
                "SWITCHBOARD__CLIENT__IDLE_TIMEOUT_SECS".to_owned(),
                "5".to_owned(),
            ),
            (
                "SWITCHBOARD__MANAGEMENT__BEARER_TOKENS".to_owned(),
                "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let s = load(ConfigSource::Embedded, env).expect("loads");
        assert_eq!(s.client.listen.port(), 9999);
        assert_eq!(s.client.idle_timeout_secs, 5);
        assert_eq!(s.management.bearer_tokens.len(), 2);
        assert_eq!(s.management.bearer_tokens[1].expose(), "bbbbbbbbbbbbbbbb");
    }

    #[test]
    fn lambda_environment_from_the_file_and_overrides_keeps_the_names_case() {
        let text = "[management]\nauth = \"none\"\n[lambda.environment]\n\
                    AWS_CA_BUNDLE = \"/etc/ca.pem\"\nmixed_Case = \"file\"\n";
        let env = vec![
            (
                "SWITCHBOARD__LAMBDA__ENVIRONMENT__AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
                "http://127.0.0.1:8000".to_owned(),
            ),
            (
                "SWITCHBOARD__lambda__Environment__mixed_Case".to_owned(),
                "env".to_owned(),
            ),
            (
                "SWITCHBOARD__LAMBDA__ENVIRONMENT__NUMBER".to_owned(),
                "0042".to_owned(),
            ),
            (
                "SWITCHBOARD__LAMBDA__REGION".to_owned(),
                "eu-west-1".to_owned(),
            ),
        ];
        let s = load(ConfigSource::Text(text), env).expect("loads");
        let environment: Vec<(&str, &str)> = s
            .lambda
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            environment,
            [
                ("AWS_CA_BUNDLE", "/etc/ca.pem"),
                ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
                ("NUMBER", "0042"),
                ("mixed_Case", "env"),
            ],
            "the environment override wins, names and values as given"
        );
        assert_eq!(s.lambda.region, "eu-west-1", "other [lambda] overrides");

        let err = load(
            ConfigSource::Text(MINIMAL),
            vec![(
                "SWITCHBOARD__LAMBDA__ENVIRONMENT__AWS_LAMBDA_RUNTIME_API".to_owned(),
                "x".to_owned(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("lambda.environment.AWS_LAMBDA_RUNTIME_API"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[client]\nlisten_port = 1\n[management]\nauth = \"none\"\n",
                "client",
            ),
            (
                "[client]\nidle_timeout_secs = \"soon\"\n",
                "client.idle_timeout_secs",
            ),
            (
                "[client]\nmax_header_bytes = 100\n[management]\nauth = \"none\"\n",
                "client.max_header_bytes",
            ),
            (
                "[management]\nauth = \"bearer\"\n",
                "management.bearer_tokens",
            ),
            (
                "[management]\nauth = \"none\"\n[routes.x]\nintegration = \"nope\"\n",
                "routes.x.integration",
            ),
            (
                "[management]\nauth = \"none\"\n[routes.\"$foo\"]\nintegration = \"m\"\n[integrations.m]\ntype = \"mock\"\n",
                "routes.$foo",
            ),
            (
                "[management]\nauth = \"none\"\n[integrations.h]\ntype = \"http\"\nurl = \"ftp://x\"\n",
                "integrations.h.url",
            ),
            (
                "[management]\nauth = \"none\"\n[integrations.h]\ntype = \"http\"\nurl = \"http://x\"\ntimeout_ms = 40000\n",
                "integrations.h.timeout_ms",
            ),
            (
                "[management]\nauth = \"none\"\n[integrations.h]\ntype = \"mock\"\nbogus = 1\n",
                "integrations.h",
            ),
            (
                "[management]\nauth = \"none\"\n[api]\nstages = [\"a/b\"]\n",
                "api.stages",
            ),
            ("[unknown_section]\nx = 1\n", "unknown_section"),
            (
                "[client]\nmax_fragments_per_message = 0\n[management]\nauth = \"none\"\n",
                "client.max_fragments_per_message",
            ),
            (
                "[management]\nauth = \"none\"\n[http_client]\nmax_idle = 1\n",
                "http_client",
            ),
            (
                "[management]\nauth = \"none\"\n[http_client]\nidle_timeout_ms = 0\n",
                "http_client.idle_timeout_ms",
            ),
            (
                "[management]\nauth = \"none\"\n[http_client]\nidle_timeout_ms = 3600001\n",
                "http_client.idle_timeout_ms",
            ),
            (
                "[client]\nmax_json_depth = 128\n[management]\nauth = \"none\"\n",
                "client.max_json_depth",
            ),
            (
                "[client]\ncallbacks = true\n[management]\nauth = \"none\"\n",
                "client.callbacks",
            ),
            (
                "[client]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.internal\"]\n[management]\nauth = \"none\"\n",
                "client.trusted_proxies",
            ),
            (
                "[client]\npublic_host = \"https://ws.example.com\"\n[management]\nauth = \"none\"\n",
                "client.public_host",
            ),
            (
                "[management]\nauth = \"none\"\n[integrations.l]\ntype = \"lambda\"\nruntime = \"nodejs20.x\"\nhandler = \"app.handler\"\ncode_dir = \"x\"\nbogus = 1\n",
                "integrations.l",
            ),
            (
                "[management]\nauth = \"none\"\n[integrations.l]\ntype = \"lambda\"\nruntime = \"ruby3.3\"\nhandler = \"app.handler\"\ncode_dir = \"x\"\n",
                "integrations.l.runtime",
            ),
            (
                "[management]\nauth = \"none\"\n[lambda]\nregion = \"\"\n",
                "lambda.region",
            ),
        ];
        for (text, key) in cases {
            let err = load_text(text).expect_err(text).to_string();
            assert!(
                err.contains(key),
                "error for {text:?} should name {key}: {err}"
            );
        }
    }

    #[test]
    fn unknown_key_message_names_the_field() {
        let err = load_text("[client]\nlisten_port = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = load_text(MINIMAL).expect("loads");
        assert_eq!(s.client.max_frame_bytes, 32 * 1024);
        assert!(s.routes.is_empty());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("super-secret-token-value");
        assert!(!format!("{s:?}").contains("super"));
    }
}
