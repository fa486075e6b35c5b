//! A function's settings resolved into what starting a worker needs: the launcher found on
//! disk, the command line, the environment every worker gets, the ARN.
//!
//! Checks the file system once, when the API is built (so `check-config`, startup and a
//! reload report a missing launcher or code directory by its key); spawns nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{ConfigError, LambdaFunctionSettings, LambdaSettings, RuntimeFamily};

/// Everything needed to start workers of one function. Two equal specs can share workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The integration's name (for keys in errors).
    pub integration: String,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub name: String,
    /// `arn:aws:lambda:<region>:000000000000:function:<name>`.
    pub arn: String,
    /// The program started: the Node RIC launcher or the Python interpreter.
    pub program: PathBuf,
    /// Its arguments (`<handler>`, or `-m awslambdaric <handler>`).
    pub args: Vec<String>,
    /// The task root: the working directory and `LAMBDA_TASK_ROOT`.
    pub code_dir: PathBuf,
    /// The environment of every worker, except the per-worker variables
    /// (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_LOG_STREAM_NAME`).
    pub env: Vec<(String, String)>,
    /// How long one invocation may run.
    pub timeout: Duration,
    /// Worker processes.
    pub concurrency: usize,
    /// Invocations that may wait for a worker.
    pub queue: usize,
}

/// Variables passed on from the gateway's own environment (nothing else is: the
/// gateway's secrets stay out of handlers, as on AWS where the environment is the
/// function's own).
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"];

impl FunctionSpec {
    /// Resolves function `integration`'s settings; errors name the key at fault.
    pub fn resolve(
        integration: &str,
        function: &LambdaFunctionSettings,
        lambda: &LambdaSettings,
    ) -> Result<Self, ConfigError> {
        let family = RuntimeFamily::of(&function.runtime).ok_or_else(|| {
            ConfigError::invalid(
                format!("integrations.{integration}.runtime"),
                "unsupported runtime",
            )
        })?;
        let launcher = match family {
            RuntimeFamily::Node => &lambda.node_ric,
            RuntimeFamily::Python => &lambda.python,
        };
        let program = find_program(launcher).ok_or_else(|| {
            let hint = match family {
                RuntimeFamily::Node => {
                    "install npm aws-lambda-ric (scripts/lambda-rics.sh) and point lambda.node_ric \
                     (or SWITCHBOARD__LAMBDA__NODE_RIC) at node_modules/.bin/aws-lambda-ric"
                }
                RuntimeFamily::Python => {
                    "point lambda.python (or SWITCHBOARD__LAMBDA__PYTHON) at a Python with \
                     awslambdaric installed (pip install awslambdaric)"
                }
            };
            ConfigError::invalid(
                family.launcher_key(),
                format!(
                    "launcher {launcher:?} for {} (integration {integration:?}) not found or not executable: {hint}",
                    function.runtime
                ),
            )
        })?;
        let code_dir = std::path::absolute(&function.code_dir).unwrap_or_default();
        if !code_dir.is_dir() {
            return Err(ConfigError::invalid(
                format!("integrations.{integration}.code_dir"),
                format!("{} is not a directory", function.code_dir.display()),
            ));
        }
        let args = match family {
            RuntimeFamily::Node => vec![function.handler.clone()],
            RuntimeFamily::Python => {
                vec!["-m".into(), "awslambdaric".into(), function.handler.clone()]
            }
        };
        let name = function.name(integration).to_owned();
        let region = function
            .environment
            .get("AWS_REGION")
            .or_else(|| lambda.environment.get("AWS_REGION"))
            .cloned()
            .unwrap_or_else(|| lambda.region.clone());
        let mut env: Vec<(String, String)> = INHERITED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
        let code_root = code_dir.to_string_lossy().into_owned();
        env.extend(
            [
                ("TZ", "UTC"),
                ("AWS_REGION", region.as_str()),
                ("AWS_DEFAULT_REGION", region.as_str()),
                (
                    "AWS_EXECUTION_ENV",
                    &format!("AWS_Lambda_{}", function.runtime),
                ),
                ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
                // The task root is read-only on Lambda: leave no __pycache__ in code_dir.
                ("PYTHONDONTWRITEBYTECODE", "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        // `[lambda.environment]` (every function's) and then the function's own
        // environment override the defaults above…
        for (key, value) in lambda.environment.iter().chain(&function.environment) {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        // …but not these (validation refuses them in `environment`).
        env.extend(
            [
                ("_HANDLER", function.handler.as_str()),
                ("LAMBDA_TASK_ROOT", code_root.as_str()),
                ("AWS_LAMBDA_FUNCTION_NAME", name.as_str()),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                (
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                    &function.memory_mb.to_string(),
                ),
                ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{name}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        Ok(Self {
            integration: integration.to_owned(),
            arn: format!("arn:aws:lambda:{region}:000000000000:function:{name}"),
            name,
            program,
            args,
            code_dir,
            env,
            timeout: Duration::from_millis(function.timeout_ms),
            concurrency: function.concurrency,
            queue: function.queue,
        })
    }
}

/// A launcher: a path (checked), or a bare command looked up on `PATH`.
pub(super) fn find_program(launcher: &str) -> Option<PathBuf> {
    if launcher.contains('/') {
        let path = std::path::absolute(launcher).ok()?;
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(launcher))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(code_dir: &Path) -> LambdaFunctionSettings {
        LambdaFunctionSettings {
            runtime: "python3.12".into(),
            handler: "app.handler".into(),
            code_dir: code_dir.to_owned(),
            timeout_ms: 3000,
            memory_mb: 256,
            concurrency: 1,
            queue: 1,
            function_name: Some("fn".into()),
            environment: [
                ("AWS_REGION".to_owned(), "eu-west-1".to_owned()),
                ("TABLE".to_owned(), "t".to_owned()),
            ]
            .into(),
        }
    }

    #[test]
    fn resolves_the_command_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let lambda = LambdaSettings {
            python: "sh".into(), // any executable on PATH stands in for python
            ..LambdaSettings::default()
        };
        let spec = FunctionSpec::resolve("chat", &function(dir.path()), &lambda).unwrap();
        assert_eq!(spec.args, ["-m", "awslambdaric", "app.handler"]);
        assert_eq!(
            spec.arn,
            "arn:aws:lambda:eu-west-1:000000000000:function:fn"
        );
        let get = |k: &str| {
            spec.env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(get("TABLE"), Some("t"));
        assert_eq!(get("_HANDLER"), Some("app.handler"));
        assert_eq!(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("256"));
        assert_eq!(get("AWS_EXECUTION_ENV"), Some("AWS_Lambda_python3.12"));
        assert_eq!(get("AWS_LAMBDA_MAX_CONCURRENCY"), None);
        assert_eq!(get("AWS_LAMBDA_RUNTIME_API"), None, "set per worker");
    }

    #[test]
    fn the_shared_environment_is_merged_under_the_functions_own() {
        let dir = tempfile::tempdir().unwrap();
        let lambda = LambdaSettings {
            python: "sh".into(),
            environment: [
                ("TABLE".to_owned(), "shared".to_owned()),
                ("AWS_CA_BUNDLE".to_owned(), "/ca.pem".to_owned()),
                ("TZ".to_owned(), "Europe/Paris".to_owned()),
            ]
            .into(),
            ..LambdaSettings::default()
        };
        let spec = FunctionSpec::resolve("chat", &function(dir.path()), &lambda).unwrap();
        let get = |k: &str| {
            let values: Vec<&str> = spec
                .env
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect();
            assert!(values.len() <= 1, "{k} set once: {values:?}");
            values.first().copied()
        };
        assert_eq!(get("TABLE"), Some("t"), "the function's own value wins");
        assert_eq!(get("AWS_CA_BUNDLE"), Some("/ca.pem"), "shared");
        assert_eq!(get("TZ"), Some("Europe/Paris"), "over the defaults");
        assert_eq!(get("AWS_REGION"), Some("eu-west-1"));

        let mut without_region = function(dir.path());
        without_region.environment.remove("AWS_REGION");
        let lambda = LambdaSettings {
            environment: [("AWS_REGION".to_owned(), "ap-south-1".to_owned())].into(),
            ..lambda
        };
        let spec = FunctionSpec::resolve("chat", &without_region, &lambda).unwrap();
        assert_eq!(
            spec.arn, "arn:aws:lambda:ap-south-1:000000000000:function:fn",
            "AWS_REGION from the shared environment before lambda.region"
        );
    }

    #[test]
    fn missing_launchers_and_code_dirs_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let lambda = LambdaSettings {
            python: "/nonexistent/python".into(),
            node_ric: "no-such-ric-on-path".into(),
            ..LambdaSettings::default()
        };
        let err = FunctionSpec::resolve("chat", &function(dir.path()), &lambda)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lambda.python"), "{err}");
        let node = LambdaFunctionSettings {
            runtime: "nodejs20.x".into(),
            ..function(dir.path())
        };
        let err = FunctionSpec::resolve("chat", &node, &lambda)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lambda.node_ric"), "{err}");
        let lambda = LambdaSettings {
            python: "sh".into(),
            ..LambdaSettings::default()
        };
        let err = FunctionSpec::resolve("chat", &function(&dir.path().join("x")), &lambda)
            .unwrap_err()
            .to_string();
        assert!(err.contains("integrations.chat.code_dir"), "{err}");
    }
}
