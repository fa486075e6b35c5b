//! Settings of the `lambda` integration: one function (`[integrations.<name>]` with
//! `type = "lambda"`) and how each runtime's Runtime Interface Client is launched
//! (`[lambda]`). Validation names the key at fault; relative paths are resolved against
//! the configuration file's directory when the settings come from a file.
//!
//! No I/O: whether a launcher or a code directory exists is checked when the integration is
//! built (`integrations::lambda`), which reports errors in the same shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, IntegrationSettings};

/// `[lambda]`: how workers of each runtime family are launched.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaSettings {
    /// The Node.js RIC launcher (`node_modules/.bin/aws-lambda-ric` of npm
    /// `aws-lambda-ric`): a path, or a command looked up on `PATH`. Started as
    /// `<node_ric> <handler>` for `nodejs*` functions.
    pub node_ric: String,
    /// A Python interpreter with PyPI `awslambdaric` installed: a path, or a command looked
    /// up on `PATH`. Started as `<python> -m awslambdaric <handler>` for `python3.*`
    /// functions.
    pub python: String,
    /// The region handlers are told (`AWS_REGION`, the function ARN) when neither a
    /// function's own `environment` nor [`LambdaSettings::environment`] sets `AWS_REGION`.
    pub region: String,
    /// Environment variables every function gets, under its own `environment` (a
    /// function's own value wins): what an AWS account provides all its functions, such as
    /// service endpoints (`AWS_ENDPOINT_URL_DYNAMODB`), a CA bundle (`AWS_CA_BUNDLE`,
    /// `NODE_EXTRA_CA_CERTS`) or credentials. `SWITCHBOARD__LAMBDA__ENVIRONMENT__<NAME>`
    /// overrides keep the case of `<NAME>`.
    pub environment: BTreeMap<String, String>,
}

impl Default for LambdaSettings {
    fn default() -> Self {
        Self {
            node_ric: "aws-lambda-ric".into(),
            python: "python3".into(),
            region: "us-east-1".into(),
            environment: BTreeMap::new(),
        }
    }
}

/// The runtime family of a function: decides the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFamily {
    /// `nodejs<N>.x`: `lambda.node_ric`.
    Node,
    /// `python3.<N>`: `lambda.python -m awslambdaric`.
    Python,
}

impl RuntimeFamily {
    /// The family of a Lambda runtime identifier, or `None` for one without a launcher.
    ///
    /// ```
    /// use switchboard::config::RuntimeFamily;
    /// assert_eq!(RuntimeFamily::of("nodejs20.x"), Some(RuntimeFamily::Node));
    /// assert_eq!(RuntimeFamily::of("python3.12"), Some(RuntimeFamily::Python));
    /// assert_eq!(RuntimeFamily::of("java21"), None);
    /// ```
    pub fn of(runtime: &str) -> Option<Self> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(version) = runtime
            .strip_prefix("nodejs")
            .and_then(|r| r.strip_suffix(".x"))
            && digits(version)
        {
            return Some(Self::Node);
        }
        if let Some(minor) = runtime.strip_prefix("python3.")
            && digits(minor)
        {
            return Some(Self::Python);
        }
        None
    }

    /// The `[lambda]` key naming this family's launcher.
    pub fn launcher_key(self) -> &'static str {
        match self {
            Self::Node => "lambda.node_ric",
            Self::Python => "lambda.python",
        }
    }
}

/// One Lambda function run by local workers (`type = "lambda"`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LambdaFunctionSettings {
    /// A Lambda runtime identifier: `nodejs<N>.x` or `python3.<N>` (decides the launcher and
    /// `AWS_EXECUTION_ENV`).
    pub runtime: String,
    /// The handler as on AWS: `app.handler` (file `app`, export `handler`).
    pub handler: String,
    /// The code directory (`LAMBDA_TASK_ROOT`, the workers' working directory): absolute,
    /// or relative to the configuration file's directory.
    pub code_dir: PathBuf,
    /// Milliseconds an invocation may run before the worker is killed and replaced
    /// (SAM's default: 3000; Lambda: at most 900000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory in MB, a hint only: reported as `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` and
    /// `context.memoryLimitInMB`, not enforced.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Worker processes, each running one invocation at a time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Invocations that may wait for a free worker; beyond it a call fails at once.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// `AWS_LAMBDA_FUNCTION_NAME` and the name in the function ARN; default: the
    /// integration's name.
    #[serde(default)]
    pub function_name: Option<String>,
    /// Environment variables of the workers (the function's configuration on AWS).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

fn default_timeout_ms() -> u64 {
    3000
}
fn default_memory_mb() -> u32 {
    128
}
fn default_concurrency() -> usize {
    2
}
fn default_queue() -> usize {
    64
}

/// Variables the gateway sets for every worker, which a function's `environment` may not
/// override. `AWS_LAMBDA_MAX_CONCURRENCY` would switch the RICs into a multi-concurrent
/// mode the gateway does not serve.
pub const RESERVED_ENVIRONMENT: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_MAX_CONCURRENCY",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "_LAMBDA_TELEMETRY_LOG_FD",
];

impl LambdaFunctionSettings {
    /// The function's name: `function_name`, or the integration's name.
    pub fn name<'a>(&'a self, integration: &'a str) -> &'a str {
        self.function_name.as_deref().unwrap_or(integration)
    }

    /// Checks the function's settings; errors name `integrations.<integration>.<key>`.
    pub fn validate(&self, integration: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("integrations.{integration}.{k}");
        if RuntimeFamily::of(&self.runtime).is_none() {
            return Err(ConfigError::invalid(
                key("runtime"),
                format!(
                    "unsupported runtime {:?}: use nodejs<N>.x or python3.<N>",
                    self.runtime
                ),
            ));
        }
        let handler = &self.handler;
        let handler_ok = handler
            .rsplit_once('.')
            .is_some_and(|(module, function)| !module.is_empty() && !function.is_empty())
            && !handler.contains("..")
            && !handler.starts_with('/')
            && !handler
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
        if !handler_ok {
            return Err(ConfigError::invalid(
                key("handler"),
                "must be <file>.<function>, e.g. app.handler",
            ));
        }
        if self.code_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(key("code_dir"), "must not be empty"));
        }
        if !(100..=900_000).contains(&self.timeout_ms) {
            return Err(ConfigError::invalid(
                key("timeout_ms"),
                "must be between 100 and 900000",
            ));
        }
        if !(128..=10_240).contains(&self.memory_mb) {
            return Err(ConfigError::invalid(
                key("memory_mb"),
                "must be between 128 and 10240",
            ));
        }
        if !(1..=1000).contains(&self.concurrency) {
            return Err(ConfigError::invalid(
                key("concurrency"),
                "must be between 1 and 1000",
            ));
        }
        if self.queue > 100_000 {
            return Err(ConfigError::invalid(key("queue"), "must be at most 100000"));
        }
        let name = self.name(integration);
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            let at = if self.function_name.is_some() {
                key("function_name")
            } else {
                format!("integrations.{integration}")
            };
            return Err(ConfigError::invalid(
                at,
                format!(
                    "function name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ \
                     (set function_name when the integration's name is not one)"
                ),
            ));
        }
        check_environment(&key("environment"), &self.environment)?;
        Ok(())
    }
}

/// Checks the variable names of an `environment` table whose key is `at`: valid names, and
/// none the gateway sets itself.
fn check_environment(at: &str, environment: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for variable in environment.keys() {
        let at = format!("{at}.{variable}");
        let name_ok = variable
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && variable
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(ConfigError::invalid(
                at,
                "a variable name is letters, digits and _, not starting with a digit",
            ));
        }
        if RESERVED_ENVIRONMENT.contains(&variable.as_str()) {
            return Err(ConfigError::invalid(
                at,
                "reserved: the gateway sets it for every worker",
            ));
        }
    }
    Ok(())
}

/// Checks `[lambda]`.
pub(super) fn validate(settings: &LambdaSettings) -> Result<(), ConfigError> {
    if settings.node_ric.trim().is_empty() {
        return Err(ConfigError::invalid("lambda.node_ric", "must not be empty"));
    }
    if settings.python.trim().is_empty() {
        return Err(ConfigError::invalid("lambda.python", "must not be empty"));
    }
    let region_ok = !settings.region.is_empty()
        && settings
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(ConfigError::invalid(
            "lambda.region",
            "must be a region name such as us-east-1",
        ));
    }
    check_environment("lambda.environment", &settings.environment)
}

/// Makes relative paths of the `lambda` settings absolute against `base` (the
/// configuration file's directory): every function's `code_dir`, and launchers written as
/// a relative path (`./node_modules/.bin/aws-lambda-ric`; a bare command name is looked up
/// on `PATH` instead).
pub(super) fn resolve_paths(
    base: &Path,
    lambda: &mut LambdaSettings,
    integrations: &mut BTreeMap<String, IntegrationSettings>,
) {
    for integration in integrations.values_mut() {
        if let IntegrationSettings::Lambda(function) = integration
            && function.code_dir.is_relative()
        {
            function.code_dir = base.join(&function.code_dir);
        }
    }
    for launcher in [&mut lambda.node_ric, &mut lambda.python] {
        let path = Path::new(launcher.as_str());
        if path.is_relative() && launcher.contains('/') {
            *launcher = base.join(path).to_string_lossy().into_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function() -> LambdaFunctionSettings {
        LambdaFunctionSettings {
            runtime: "nodejs20.x".into(),
            handler: "app.handler".into(),
            code_dir: "handlers".into(),
            timeout_ms: 3000,
            memory_mb: 128,
            concurrency: 2,
            queue: 64,
            function_name: None,
            environment: BTreeMap::new(),
        }
    }

    #[test]
    fn runtimes_are_recognised() {
        for (runtime, family) in [
            ("nodejs18.x", Some(RuntimeFamily::Node)),
            ("nodejs22.x", Some(RuntimeFamily::Node)),
            ("python3.9", Some(RuntimeFamily::Python)),
            ("python3.13", Some(RuntimeFamily::Python)),
            ("nodejs.x", None),
            ("nodejs20", None),
            ("python2.7", None),
            ("python3.", None),
            ("provided.al2023", None),
        ] {
            assert_eq!(RuntimeFamily::of(runtime), family, "{runtime}");
        }
    }

    #[test]
    fn bad_function_settings_name_the_key() {
        type Change = fn(&mut LambdaFunctionSettings);
        let cases: &[(Change, &str)] = &[
            (|f| f.runtime = "java21".into(), "integrations.chat.runtime"),
            (
                |f| f.handler = "handler".into(),
                "integrations.chat.handler",
            ),
            (|f| f.handler = "../x.h".into(), "integrations.chat.handler"),
            (|f| f.handler = "app.".into(), "integrations.chat.handler"),
            (|f| f.code_dir = "".into(), "integrations.chat.code_dir"),
            (|f| f.timeout_ms = 0, "integrations.chat.timeout_ms"),
            (|f| f.timeout_ms = 900_001, "integrations.chat.timeout_ms"),
            (|f| f.memory_mb = 64, "integrations.chat.memory_mb"),
            (|f| f.concurrency = 0, "integrations.chat.concurrency"),
            (|f| f.queue = 1_000_000, "integrations.chat.queue"),
            (
                |f| f.function_name = Some("a b".into()),
                "integrations.chat.function_name",
            ),
            (
                |f| {
                    f.environment
                        .insert("AWS_LAMBDA_MAX_CONCURRENCY".into(), "4".into());
                },
                "integrations.chat.environment.AWS_LAMBDA_MAX_CONCURRENCY",
            ),
            (
                |f| {
                    f.environment.insert("1X".into(), "".into());
                },
                "integrations.chat.environment.1X",
            ),
        ];
        for (change, key) in cases {
            let mut f = function();
            change(&mut f);
            let err = f.validate("chat").expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(function().validate("chat").is_ok());
        let err = function().validate("my chat").unwrap_err().to_string();
        assert!(err.contains("integrations.my chat"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_base() {
        let mut lambda = LambdaSettings {
            node_ric: "./ric/aws-lambda-ric".into(),
            ..LambdaSettings::default()
        };
        let mut integrations = BTreeMap::from([
            ("a".to_owned(), IntegrationSettings::Lambda(function())),
            (
                "b".to_owned(),
                IntegrationSettings::Lambda(LambdaFunctionSettings {
                    code_dir: "/abs/code".into(),
                    ..function()
                }),
            ),
        ]);
        resolve_paths(Path::new("/etc/sb"), &mut lambda, &mut integrations);
        let dir = |name: &str| match &integrations[name] {
            IntegrationSettings::Lambda(f) => f.code_dir.clone(),
            _ => unreachable!(),
        };
        assert_eq!(dir("a"), Path::new("/etc/sb/handlers"));
        assert_eq!(dir("b"), Path::new("/abs/code"));
        assert_eq!(lambda.node_ric, "/etc/sb/./ric/aws-lambda-ric");
        assert_eq!(
            lambda.python, "python3",
            "a bare command stays a PATH lookup"
        );
    }
}
