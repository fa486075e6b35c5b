//! The configuration an import produces, and its TOML text.
//!
//! A small model of just the keys an import writes (`[api]`, `[management]`, `[routes]`,
//! `[integrations]`, and commented-out `[auth]` blocks for authorizers it cannot
//! translate), rendered by hand: every value is a string, a number, a boolean or a list of
//! strings, and writing it ourselves keeps the order of the template and lets comments sit
//! next to the keys they explain. Nothing here knows about SAM or serverless.

use std::fmt::Write as _;

/// Everything written to the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[api] stages`; empty leaves the gateway's default.
    pub stages: Vec<String>,
    /// `[api] route_selection_expression`; `None` leaves the default.
    pub route_selection_expression: Option<String>,
    /// `[routes.<key>]`, in template order.
    pub routes: Vec<Route>,
    /// `[integrations.<name>]`, in order of first use.
    pub integrations: Vec<Integration>,
    /// Authorizers written as commented-out blocks.
    pub authorizers: Vec<Authorizer>,
    /// `[management]`: SigV4, the way AWS SDKs call `@connections`.
    pub management: Management,
}

/// `[routes.<key>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The route key (`$connect`, `sendmessage`, ...).
    pub key: String,
    /// The integration's name.
    pub integration: String,
    /// Whether the integration's answer goes back to the client (a `$default` route response).
    pub two_way: bool,
}

/// `[integrations.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    /// The table name under `[integrations]`.
    pub name: String,
    /// What it calls.
    pub kind: Kind,
}

/// The integration types an import writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `type = "lambda"`: a function run by the gateway.
    Lambda(Lambda),
    /// `type = "http"`: an `HTTP_PROXY`/`HTTP` integration's URL.
    Http {
        /// The URL.
        url: String,
        /// `proxy` or `passthrough`.
        mode: &'static str,
        /// `TimeoutInMillis`, when the template set one.
        timeout_ms: Option<u64>,
    },
    /// `type = "mock"`: a `MOCK` integration (answers 200 with an empty body).
    Mock,
}

/// The settings of a `lambda` integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Lambda {
    /// `Runtime`, e.g. `nodejs20.x`.
    pub runtime: String,
    /// `Handler`, e.g. `app.handler`.
    pub handler: String,
    /// The code directory, relative to the configuration file's directory, ending in `/`.
    pub code_dir: String,
    /// `Timeout` in milliseconds.
    pub timeout_ms: u64,
    /// `MemorySize` in MB.
    pub memory_mb: u64,
    /// `FunctionName`, else the logical id (what `AWS_LAMBDA_FUNCTION_NAME` says).
    pub function_name: String,
    /// `Environment.Variables`: a value, or why there is none (written as a comment).
    pub environment: Vec<(String, Result<String, String>)>,
    /// Whether the function's IAM policy lets it call `@connections`
    /// (`execute-api:ManageConnections`): then it gets the management key pair as its AWS
    /// credentials, which the SDK signs those calls with.
    pub manage_connections: bool,
}

/// An authorizer the configuration cannot express yet, written commented out.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorizer {
    /// Its logical id (or serverless name).
    pub name: String,
    /// Why it is commented out.
    pub why: String,
    /// `IdentitySource` entries the gateway accepts (header and query string ones).
    pub identity_sources: Vec<String>,
    /// A one-line description of the function behind it, if known.
    pub function: Option<String>,
}

/// `[management]` with SigV4 and one key pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Management {
    /// `[management.sigv4] region`.
    pub region: String,
    /// The key pair accepted on `@connections`.
    pub access_key: AccessKey,
}

/// An access key pair for the management API's SigV4 check.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The access key id (`AKIA…`).
    pub id: String,
    /// The secret access key.
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl AccessKey {
    /// A fresh random pair: `AKIA` + 16 characters, and a 40-character secret.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        use ring::rand::{SecureRandom, SystemRandom};
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 56];
        rng.fill(&mut bytes)?;
        let pick = |alphabet: &[u8], b: u8| alphabet[usize::from(b) % alphabet.len()] as char;
        let id: String = bytes[..16].iter().map(|&b| pick(UPPER, b)).collect();
        let secret: String = bytes[16..].iter().map(|&b| pick(ANY, b)).collect();
        Ok(Self {
            id: format!("AKIA{id}"),
            secret,
        })
    }
}

/// The configuration as TOML, with `header` (the report) as comments on top.
pub fn render(config: &Config, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    out.push('\n');

    out.push_str("[api]\n");
    if config.stages.is_empty() {
        out.push_str("# No stage in the template: the default stage (prod) is served.\n");
    } else {
        let _ = writeln!(out, "stages = {}", list(&config.stages));
    }
    if let Some(expression) = &config.route_selection_expression {
        let _ = writeln!(out, "route_selection_expression = {}", string(expression));
    }

    out.push_str(
        "\n[client]\n\
         # AWS handlers post to https://{requestContext.domainName}/{stage}/@connections/{id}:\n\
         # serve @connections on this listener too, with the [management] authentication.\n\
         # https:// needs [client.tls] or a TLS-terminating load balancer; set public_host to\n\
         # the name clients use (docs/behaviour.md, \"Callbacks where AWS handlers look\").\n\
         callbacks = true\n",
    );

    let m = &config.management;
    out.push_str(
        "\n[management]\n\
         # AWS SDKs sign @connections calls with SigV4. This key pair was generated by the\n\
         # import; functions whose IAM policy allows execute-api:ManageConnections get it as\n\
         # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. To use your own, change it everywhere.\n\
         auth = \"sigv4\"\n\n[management.sigv4]\n",
    );
    let _ = writeln!(out, "region = {}", string(&m.region));
    let _ = writeln!(
        out,
        "access_keys = [{}]",
        string(&format!("{}:{}", m.access_key.id, m.access_key.secret))
    );

    if config
        .integrations
        .iter()
        .any(|i| matches!(i.kind, Kind::Lambda(_)))
    {
        out.push_str(
            "\n[lambda]\n# AWS_REGION of the functions. The launchers (node_ric, python) keep their\n\
             # defaults: see docs/lambda.md to install AWS's Runtime Interface Clients.\n",
        );
        let _ = writeln!(out, "region = {}", string(&m.region));
        out.push_str(
            "# What AWS gave every function (service endpoints, the CA of the gateway's TLS,\n\
             # credentials) goes in [lambda.environment], under each function's own:\n\
             # [lambda.environment]\n\
             # AWS_ENDPOINT_URL_DYNAMODB = \"http://127.0.0.1:8000\"\n\
             # AWS_CA_BUNDLE = \"/path/to/ca.pem\"          # boto3\n\
             # NODE_EXTRA_CA_CERTS = \"/path/to/ca.pem\"    # Node.js\n",
        );
    }

    for route in &config.routes {
        let _ = writeln!(out, "\n[routes.{}]", key(&route.key));
        let _ = writeln!(out, "integration = {}", string(&route.integration));
        if route.two_way {
            out.push_str("two_way = true\n");
        }
    }

    for integration in &config.integrations {
        let name = key(&integration.name);
        let _ = writeln!(out, "\n[integrations.{name}]");
        match &integration.kind {
            Kind::Lambda(lambda) => {
                out.push_str("type = \"lambda\"\n");
                let _ = writeln!(out, "runtime = {}", string(&lambda.runtime));
                let _ = writeln!(out, "handler = {}", string(&lambda.handler));
                let _ = writeln!(out, "code_dir = {}", string(&lambda.code_dir));
                let _ = writeln!(out, "timeout_ms = {}", lambda.timeout_ms);
                let _ = writeln!(out, "memory_mb = {}", lambda.memory_mb);
                let _ = writeln!(out, "function_name = {}", string(&lambda.function_name));
                let credentials = lambda.manage_connections
                    && !lambda
                        .environment
                        .iter()
                        .any(|(var, _)| var == "AWS_ACCESS_KEY_ID");
                if !lambda.environment.is_empty() || credentials {
                    let _ = writeln!(out, "\n[integrations.{name}.environment]");
                    for (var, value) in &lambda.environment {
                        match value {
                            Ok(value) => {
                                let _ = writeln!(out, "{} = {}", key(var), string(value));
                            }
                            Err(why) => {
                                let _ = writeln!(
                                    out,
                                    "# {} = ?  not resolved: {}",
                                    key(var),
                                    one_line(why)
                                );
                            }
                        }
                    }
                    if credentials {
                        out.push_str(
                            "# Its IAM policy allows execute-api:ManageConnections: the [management.sigv4]\n\
                             # key pair, which its AWS SDK signs @connections calls with.\n",
                        );
                        let _ = writeln!(out, "AWS_ACCESS_KEY_ID = {}", string(&m.access_key.id));
                        let _ = writeln!(
                            out,
                            "AWS_SECRET_ACCESS_KEY = {}",
                            string(&m.access_key.secret)
                        );
                    }
                }
            }
            Kind::Http {
                url,
                mode,
                timeout_ms,
            } => {
                out.push_str("type = \"http\"\n");
                let _ = writeln!(out, "url = {}", string(url));
                let _ = writeln!(out, "mode = {}", string(mode));
                if let Some(ms) = timeout_ms {
                    let _ = writeln!(out, "timeout_ms = {ms}");
                }
            }
            Kind::Mock => {
                out.push_str("type = \"mock\"\nstatus = 200\n");
            }
        }
    }

    for authorizer in &config.authorizers {
        let _ = writeln!(
            out,
            "\n# Authorizer {}: not translated, because {}",
            authorizer.name,
            one_line(&authorizer.why)
        );
        if let Some(function) = &authorizer.function {
            let _ = writeln!(out, "# Its function: {}.", one_line(function));
        }
        out.push_str(
            "# To use it, serve the function over HTTP (AWS's REQUEST-authorizer event in, a policy\n\
             # out), put its URL below and uncomment:\n\
             # [auth]\n\
             # authorizer = \"http\"\n\
             # [auth.http]\n\
             # url = \"\"\n",
        );
        if !authorizer.identity_sources.is_empty() {
            let _ = writeln!(
                out,
                "# identity_sources = {}",
                list(&authorizer.identity_sources)
            );
        }
    }
    out
}

/// A TOML basic string.
pub fn string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, quoted otherwise (`"$connect"`).
pub fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { name.to_owned() } else { string(name) }
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Text made safe for a comment line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_are_escaped() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(key("$connect"), "\"$connect\"");
        assert_eq!(key("send-message_2"), "send-message_2");
        assert_eq!(key("a.b"), "\"a.b\"");
        assert_eq!(key(""), "\"\"");
    }

    #[test]
    fn generated_keys_look_like_aws_keys() {
        let a = AccessKey::generate().unwrap();
        let b = AccessKey::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.id.starts_with("AKIA") && a.id.len() == 20, "{}", a.id);
        assert_eq!(a.secret.len(), 40);
        assert!(!format!("{a:?}").contains(&a.secret));
    }
}
