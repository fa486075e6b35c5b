//! `switchboard import`: an AWS SAM/CloudFormation template or a Serverless Framework
//! `serverless.yml` in, Switchboard configuration text and a report out.
//!
//! - [`template`] loads YAML or JSON into one tree (CloudFormation short-form tags turned
//!   into their long forms);
//! - [`intrinsics`] evaluates `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join` and the rest;
//! - [`sam`] maps `AWS::ApiGatewayV2::*` and the functions behind them, after `Globals`;
//! - [`serverless`] maps the `websocket` events of a `serverless.yml`;
//! - [`write`] renders the configuration, [`report`] what was and was not translated.
//!
//! Owns reading the one template file and nothing else: the caller writes the result.
//! It builds configuration *text*; of the crate it reads only [`crate::config`] (which
//! runtimes a `lambda` integration runs), so it sits just above it. The tests load the
//! text with the gateway's own loader.
//!
//! **Why `saphyr` for YAML.** CloudFormation's short forms (`!Ref X`, `!GetAtt X.Arn`,
//! `!Sub '…'`, `!Join [...]`) are YAML local tags, and a loader must hand them back.
//! `serde_yaml` is archived; its forks (`yaml_serde`, `serde_yaml_ng`) keep tags too but
//! carry a translated C parser (`unsafe`) and a serde-shaped value we would convert anyway.
//! `saphyr` is the maintained successor of `yaml-rust`/`yaml-rust2` (same maintainers),
//! pure safe Rust, YAML 1.2, keeps every user tag as `Yaml::Tagged(tag, node)` on
//! scalars, sequences and mappings alike, and caps alias expansion (no billion laughs).
//! Its dependencies (`saphyr-parser`, `hashlink`, `ordered-float`, `arraydeque`) are small.

pub mod intrinsics;
pub mod report;
mod sam;
mod serverless;
pub mod template;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

pub use report::Report;
pub use write::AccessKey;

use template::Node;

/// Which kind of file is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An AWS SAM or CloudFormation template (YAML or JSON).
    Sam,
    /// A Serverless Framework `serverless.yml`.
    Serverless,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sam" | "cloudformation" | "cfn" => Ok(Format::Sam),
            "serverless" => Ok(Format::Serverless),
            other => Err(format!("unknown format {other:?}: use sam or serverless")),
        }
    }
}

/// What the caller decides about an import.
#[derive(Debug, Clone)]
pub struct Options {
    /// The format; `None` detects it from the content.
    pub format: Option<Format>,
    /// `AWS::Region` (and the SigV4 region); `None`: the serverless `provider.region`, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// `AWS::StackName`; `None`: `switchboard`.
    pub stack_name: Option<String>,
    /// The serverless stage (`${opt:stage}`, `${sls:stage}`); `None`: `provider.stage`, else `dev`.
    pub stage: Option<String>,
    /// The logical id of the WebSocket API to import when a template has several.
    pub api: Option<String>,
    /// The directory the configuration will be written to: `code_dir` is relative to it.
    pub out_dir: PathBuf,
    /// Environment for `${env:NAME}` in a `serverless.yml`.
    pub env: BTreeMap<String, String>,
    /// The key pair written to `[management.sigv4]`.
    pub access_key: AccessKey,
}

/// A finished import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The format that was read.
    pub format: Format,
    /// The configuration file's text (the report included as comments).
    pub toml: String,
    /// What was and was not translated.
    pub report: Report,
}

/// Why a file could not be imported at all. Everything smaller (a route whose target
/// cannot be found, a table) goes into the [`Report`] instead.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The template.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or JSON.
    #[error("{path}: not valid {syntax}: {message}")]
    Syntax {
        /// The template.
        path: PathBuf,
        /// `YAML` or `JSON`.
        syntax: &'static str,
        /// The parser's message, with the position.
        message: String,
    },
    /// Neither a CloudFormation template nor a `serverless.yml`.
    #[error(
        "{path}: not a SAM/CloudFormation template (no `Resources`) nor a serverless.yml (no `service` with `functions`)"
    )]
    UnknownFormat {
        /// The template.
        path: PathBuf,
    },
    /// A template, but without a WebSocket API.
    #[error("{path}: no WebSocket API to import: {reason}")]
    NotWebSocket {
        /// The template.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A template whose structure is wrong where the import needs it.
    #[error("{path}: {message}")]
    Invalid {
        /// The template.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Why a mapping refused a parsed document (the path is added by [`import_text`]).
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No WebSocket API in it.
    NotWebSocket(String),
    /// A structural problem.
    Invalid(String),
}

/// Reads `path` and imports it.
pub fn import_file(path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    import_text(&text, path, options)
}

/// Imports `text`, the content of the file at `path` (code directories are relative to
/// its directory).
pub fn import_text(text: &str, path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let is_json = text.trim_start().starts_with('{');
    let doc = if is_json {
        template::parse_json(text)
    } else {
        template::parse_yaml(text)
    }
    .map_err(|message| ImportError::Syntax {
        path: path.to_owned(),
        syntax: if is_json { "JSON" } else { "YAML" },
        message,
    })?;
    let format = match options.format {
        Some(format) => format,
        None => detect(&doc).ok_or_else(|| ImportError::UnknownFormat {
            path: path.to_owned(),
        })?,
    };
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let dirs = Dirs {
        template: absolute(path.parent().unwrap_or(Path::new(""))),
        out: absolute(&options.out_dir),
    };
    let result = match format {
        Format::Sam => sam::translate(&doc, &file_name, &dirs, options),
        Format::Serverless => serverless::translate(&doc, &file_name, &dirs, options),
    };
    let (config, report) = result.map_err(|refusal| match refusal {
        Refusal::NotWebSocket(reason) => ImportError::NotWebSocket {
            path: path.to_owned(),
            reason,
        },
        Refusal::Invalid(message) => ImportError::Invalid {
            path: path.to_owned(),
            message,
        },
    })?;
    let header = format!(
        "Written by `switchboard import`. Check it with `switchboard check-config <this file>`,\n\
         then run `switchboard serve --config <this file>`.\n\n{}",
        report.render()
    );
    Ok(Imported {
        format,
        toml: write::render(&config, &header),
        report,
    })
}

/// Which format a parsed document is: `Resources` (or the CloudFormation version or a
/// transform) means a template; `service` with `functions` or `provider` a `serverless.yml`.
pub fn detect(doc: &Node) -> Option<Format> {
    let has = |key: &str| doc.get(key).is_some();
    if has("Resources") || has("AWSTemplateFormatVersion") || has("Transform") {
        Some(Format::Sam)
    } else if has("service") && (has("functions") || has("provider")) {
        Some(Format::Serverless)
    } else {
        None
    }
}

/// The two directories paths are relative to.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    /// The template's directory (code paths in the template are relative to it).
    pub template: PathBuf,
    /// The configuration's directory (`code_dir` is written relative to it).
    pub out: PathBuf,
}

impl Dirs {
    /// `path` (relative to the template) as `code_dir`: relative to the configuration's
    /// directory, `/`-separated, ending in `/`.
    pub fn code_dir(&self, path: &str) -> String {
        let target = normalize(&self.template.join(path));
        let mut dir = relative(&self.out, &target);
        if !dir.ends_with('/') {
            dir.push('/');
        }
        dir
    }
}

/// `path` made absolute against the current directory, without touching the file system.
fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

/// Removes `.` and folds `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `target` relative to the directory `base` (both absolute and normalized).
fn relative(base: &Path, target: &Path) -> String {
    let base: Vec<Component<'_>> = base.components().collect();
    let target: Vec<Component<'_>> = target.components().collect();
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); base.len() - common];
    parts.extend(
        target[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        "./".to_owned()
    } else {
        parts.join("/")
    }
}

/// Hands out integration names, unique within one configuration.
#[derive(Debug, Default)]
pub(crate) struct Names(Vec<String>);

impl Names {
    /// `wanted` made a valid, unused integration name (`-2`, `-3`, ... on a clash).
    pub fn take(&mut self, wanted: &str) -> String {
        let base: String = wanted
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = if base.is_empty() {
            "integration".to_owned()
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 2;
        while self.0.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.0.push(name.clone());
        name
    }
}

/// Refuses a runtime the `lambda` integration cannot launch (it runs `nodejs<N>.x` and
/// `python3.<N>` through AWS's Runtime Interface Clients).
pub(crate) fn check_runtime(runtime: &str) -> Result<(), String> {
    match crate::config::RuntimeFamily::of(runtime) {
        Some(_) => Ok(()),
        None => Err(format!(
            "runtime {runtime}: the lambda integration runs nodejs<N>.x and python3.<N> only (docs/lambda.md)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_dir_is_relative_to_the_config() {
        let dirs = Dirs {
            template: PathBuf::from("/app/sam"),
            out: PathBuf::from("/app"),
        };
        assert_eq!(dirs.code_dir("onconnect/"), "sam/onconnect/");
        assert_eq!(dirs.code_dir("./src/../onconnect"), "sam/onconnect/");
        let same = Dirs {
            template: PathBuf::from("/app"),
            out: PathBuf::from("/app"),
        };
        assert_eq!(same.code_dir("onconnect/"), "onconnect/");
        assert_eq!(same.code_dir("."), "./");
        let elsewhere = Dirs {
            template: PathBuf::from("/app/sam"),
            out: PathBuf::from("/etc/switchboard"),
        };
        assert_eq!(elsewhere.code_dir("fn"), "../../app/sam/fn/");
    }

    #[test]
    fn names_are_unique_and_valid() {
        let mut names = Names::default();
        assert_eq!(names.take("onconnect"), "onconnect");
        assert_eq!(names.take("onconnect"), "onconnect-2");
        assert_eq!(names.take("a.b"), "a_b");
    }

    #[test]
    fn formats_are_detected() {
        let sam = template::parse_yaml("Resources: {}").unwrap();
        let sls = template::parse_yaml("service: chat\nfunctions: {}").unwrap();
        let other = template::parse_yaml("hello: world").unwrap();
        assert_eq!(detect(&sam), Some(Format::Sam));
        assert_eq!(detect(&sls), Some(Format::Serverless));
        assert_eq!(detect(&other), None);
        assert_eq!("serverless".parse::<Format>(), Ok(Format::Serverless));
        assert!("terraform".parse::<Format>().is_err());
    }
}
