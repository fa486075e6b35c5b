//! The answers of an HTTP REQUEST authorizer and what they decide. Pure: parsing and
//! evaluation, no I/O.
//!
//! Two shapes are accepted:
//! - AWS's IAM-policy response: `{"principalId", "policyDocument": {"Statement": [{"Action",
//!   "Effect", "Resource"}]}, "context", "usageIdentifierKey"}`. A statement applies when its
//!   `Action` covers `execute-api:Invoke` and its `Resource` covers the `methodArn`
//!   (`*` and `?` wildcards; `…/prod/*/*` does not cover `…/prod/$connect`, as on AWS).
//!   An applicable `Deny` wins; otherwise an applicable `Allow` lets the connection in;
//!   otherwise it is denied.
//! - The simple response of HTTP APIs: `{"isAuthorized": true|false, "context": {…}}`
//!   (`principalId` and `usageIdentifierKey` are honoured there too).
//!
//! Context values must be strings, numbers or booleans; they are stringified. Anything else
//! is a malformed answer (500).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{AuthorizerContext, glob_match, stringify};

/// Why an authorizer's answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed authorizer response: {0}")]
pub struct Malformed(pub String);

/// A parsed authorizer answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerResult {
    /// `principalId` and the stringified `context`.
    pub context: AuthorizerContext,
    /// How the answer decides.
    pub decision: Decision,
    /// `usageIdentifierKey`, the API key the authorizer chose.
    pub usage_identifier_key: Option<String>,
}

/// How an answer decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An IAM policy, evaluated against each handshake's `methodArn`.
    Policy(Vec<Statement>),
    /// The simple response's `isAuthorized`.
    Simple(bool),
}

/// One policy statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `Allow` (true) or `Deny` (false).
    pub allow: bool,
    /// Action patterns.
    pub actions: Vec<String>,
    /// Resource patterns.
    pub resources: Vec<String>,
}

impl AuthorizerResult {
    /// Whether the answer lets a handshake for `method_arn` in.
    pub fn allows(&self, method_arn: &str) -> bool {
        match &self.decision {
            Decision::Simple(allowed) => *allowed,
            Decision::Policy(statements) => {
                let applicable = |s: &&Statement| {
                    s.actions
                        .iter()
                        .any(|a| glob_match(&a.to_ascii_lowercase(), "execute-api:invoke"))
                        && s.resources.iter().any(|r| glob_match(r, method_arn))
                };
                let mut allowed = false;
                for statement in statements.iter().filter(applicable) {
                    if !statement.allow {
                        return false;
                    }
                    allowed = true;
                }
                allowed
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(t) => vec![t],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    principal_id: Option<Value>,
    policy_document: Option<RawPolicy>,
    is_authorized: Option<bool>,
    context: Option<BTreeMap<String, Value>>,
    usage_identifier_key: Option<String>,
}

#[derive(Deserialize)]
struct RawPolicy {
    #[serde(rename = "Statement")]
    statement: OneOrMany<RawStatement>,
}

#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "Effect")]
    effect: String,
    #[serde(rename = "Action")]
    action: OneOrMany<String>,
    #[serde(rename = "Resource")]
    resource: OneOrMany<String>,
}

/// Parses an authorizer's 2xx body.
pub fn parse(body: &[u8]) -> Result<AuthorizerResult, Malformed> {
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("not an authorizer response object: {e}")))?;
    let decision = match (raw.policy_document, raw.is_authorized) {
        (Some(policy), _) => {
            let mut statements = Vec::new();
            for s in policy.statement.into_vec() {
                let allow = if s.effect.eq_ignore_ascii_case("allow") {
                    true
                } else if s.effect.eq_ignore_ascii_case("deny") {
                    false
                } else {
                    return Err(Malformed(format!("unknown Effect {:?}", s.effect)));
                };
                statements.push(Statement {
                    allow,
                    actions: s.action.into_vec(),
                    resources: s.resource.into_vec(),
                });
            }
            Decision::Policy(statements)
        }
        (None, Some(authorized)) => Decision::Simple(authorized),
        (None, None) => {
            return Err(Malformed(
                "neither policyDocument nor isAuthorized".to_owned(),
            ));
        }
    };
    let principal_id = match raw.principal_id {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => Some(stringify(&v)),
        Some(_) => return Err(Malformed("principalId must be a string".to_owned())),
    };
    let mut context = BTreeMap::new();
    for (key, value) in raw.context.unwrap_or_default() {
        match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                context.insert(key, stringify(&value));
            }
            _ => {
                return Err(Malformed(format!(
                    "context value {key:?} must be a string, number or boolean"
                )));
            }
        }
    }
    Ok(AuthorizerResult {
        context: AuthorizerContext {
            principal_id,
            context,
        },
        decision,
        usage_identifier_key: raw.usage_identifier_key.filter(|k| !k.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:execute-api:us-east-1:000000000000:api1/prod/$connect";

    fn policy(statements: &str) -> AuthorizerResult {
        parse(
            format!(r#"{{"principalId":"u1","policyDocument":{{"Version":"2012-10-17","Statement":{statements}}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn evaluates_policies() {
        let cases = [
            (
                r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:us-east-1:000000000000:api1/prod/$connect"}]"#,
                true,
            ),
            (
                r#"{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"*"}"#,
                true,
            ),
            (
                r#"[{"Action":"execute-api:*","Effect":"Allow","Resource":["arn:aws:execute-api:*:*:api1/prod/*"]}]"#,
                true,
            ),
            // AWS: a wildcard of two segments does not cover $connect.
            (
                r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:us-east-1:000000000000:api1/prod/*/*"}]"#,
                false,
            ),
            (
                r#"[{"Action":"execute-api:Invoke","Effect":"Deny","Resource":"*"}]"#,
                false,
            ),
            (
                r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"*"},{"Action":"*","Effect":"Deny","Resource":"*"}]"#,
                false,
            ),
            (
                r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:us-east-1:000000000000:api1/dev/$connect"}]"#,
                false,
            ),
            (
                r#"[{"Action":"s3:GetObject","Effect":"Allow","Resource":"*"}]"#,
                false,
            ),
            ("[]", false),
        ];
        for (statements, want) in cases {
            assert_eq!(policy(statements).allows(ARN), want, "{statements}");
        }
    }

    #[test]
    fn parses_context_and_keys() {
        let r = parse(br#"{"principalId":"user-7","policyDocument":{"Statement":[]},"context":{"s":"x","n":42,"b":false},"usageIdentifierKey":"key-1"}"#).unwrap();
        assert_eq!(r.context.principal_id.as_deref(), Some("user-7"));
        assert_eq!(r.context.context["s"], "x");
        assert_eq!(r.context.context["n"], "42");
        assert_eq!(r.context.context["b"], "false");
        assert_eq!(r.usage_identifier_key.as_deref(), Some("key-1"));
    }

    #[test]
    fn simple_responses() {
        let yes = parse(br#"{"isAuthorized":true,"context":{"a":"b"}}"#).unwrap();
        assert!(yes.allows(ARN));
        assert_eq!(yes.context.principal_id, None);
        assert!(!parse(br#"{"isAuthorized":false}"#).unwrap().allows(ARN));
    }

    #[test]
    fn rejects_malformed_answers() {
        for bad in [
            &b"not json"[..],
            b"\"Unauthorized\"",
            b"{}",
            br#"{"isAuthorized":"yes"}"#,
            br#"{"isAuthorized":true,"context":{"nested":{"a":1}}}"#,
            br#"{"isAuthorized":true,"context":{"list":[1]}}"#,
            br#"{"policyDocument":{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}}"#,
            br#"{"policyDocument":{}}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
