//! Parsing what an HTTP backend answered in proxy mode.
//!
//! A JSON object with a `statusCode` key is a Lambda-proxy response
//! (`{statusCode, headers, multiValueHeaders, body, isBase64Encoded}`) and must have that
//! shape exactly: another top-level key or a wrong type makes it malformed, as on AWS.
//! Anything else is a plain body, passed through as it is. Pure; fuzzed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::Value;

/// A backend's answer, reduced to what the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyResult {
    /// `statusCode` when the answer had the proxy shape.
    pub status: Option<u16>,
    /// The `Sec-WebSocket-Protocol` header of a proxy answer, if any.
    pub subprotocol: Option<String>,
    /// The body to send back: `None` when a proxy answer had no `body`.
    pub body: Option<Bytes>,
    /// Whether `body` is binary (it was base64 with `isBase64Encoded: true`).
    pub binary: bool,
    /// Group changes the answer asked for (`x-switchboard-join` / `x-switchboard-leave`).
    pub groups: GroupChanges,
}

/// Groups an integration answer asks the gateway to add the caller to, or remove it from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChanges {
    /// Comma-separated names from `x-switchboard-join`.
    pub join: Vec<String>,
    /// Comma-separated names from `x-switchboard-leave`.
    pub leave: Vec<String>,
}

/// The header naming groups to join.
pub const JOIN_HEADER: &str = "x-switchboard-join";
/// The header naming groups to leave.
pub const LEAVE_HEADER: &str = "x-switchboard-leave";

impl GroupChanges {
    /// Reads one header; ignores names that are not group headers.
    pub fn add_header(&mut self, name: &str, value: &str) {
        let list = if name.eq_ignore_ascii_case(JOIN_HEADER) {
            &mut self.join
        } else if name.eq_ignore_ascii_case(LEAVE_HEADER) {
            &mut self.leave
        } else {
            return;
        };
        list.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
        );
    }

    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && self.leave.is_empty()
    }
}

/// Why a proxy-shaped answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed proxy response: {0}")]
pub struct Malformed(pub String);

/// Parses a backend's response body.
pub fn parse(raw: Bytes) -> Result<ProxyResult, Malformed> {
    let plain = |raw: Bytes| ProxyResult {
        status: None,
        subprotocol: None,
        body: (!raw.is_empty()).then_some(raw),
        binary: false,
        groups: GroupChanges::default(),
    };
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Ok(plain(raw));
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&raw) else {
        return Ok(plain(raw));
    };
    if !map.contains_key("statusCode") {
        return Ok(plain(raw));
    }
    let mut result = ProxyResult {
        status: None,
        subprotocol: None,
        body: None,
        binary: false,
        groups: GroupChanges::default(),
    };
    let mut body_text: Option<String> = None;
    for (key, value) in map {
        match key.as_str() {
            "statusCode" => {
                let code = value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| Malformed("statusCode must be an integer 100-599".into()))?;
                result.status = Some(code as u16);
            }
            "headers" => match value {
                Value::Null => {}
                Value::Object(headers) => {
                    for (name, v) in headers {
                        let v = scalar_string(&v).ok_or_else(|| {
                            Malformed(format!("header {name:?} must be a string"))
                        })?;
                        result.groups.add_header(&name, &v);
                        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                            result.subprotocol = Some(v);
                        }
                    }
                }
                _ => return Err(Malformed("headers must be an object".into())),
            },
            "multiValueHeaders" => match value {
                Value::Null => {}
                Value::Object(headers) => {
                    for (name, v) in headers {
                        let Value::Array(values) = v else {
                            return Err(Malformed(format!(
                                "multiValueHeaders {name:?} must be an array"
                            )));
                        };
                        let values: Option<Vec<String>> =
                            values.iter().map(scalar_string).collect();
                        let values = values.ok_or_else(|| {
                            Malformed(format!("multiValueHeaders {name:?} must hold strings"))
                        })?;
                        for v in &values {
                            result.groups.add_header(&name, v);
                        }
                        if name.eq_ignore_ascii_case("sec-websocket-protocol")
                            && result.subprotocol.is_none()
                        {
                            result.subprotocol = values.first().cloned();
                        }
                    }
                }
                _ => return Err(Malformed("multiValueHeaders must be an object".into())),
            },
            "body" => match value {
                Value::Null => {}
                Value::String(s) => body_text = Some(s),
                _ => return Err(Malformed("body must be a string".into())),
            },
            "isBase64Encoded" => match value {
                Value::Bool(b) => result.binary = b,
                Value::Null => {}
                _ => return Err(Malformed("isBase64Encoded must be a boolean".into())),
            },
            other => return Err(Malformed(format!("unexpected key {other:?}"))),
        }
    }
    result.body = match body_text {
        None => None,
        Some(text) if result.binary => Some(Bytes::from(
            STANDARD
                .decode(text.as_bytes())
                .map_err(|_| Malformed("body is not valid base64".into()))?,
        )),
        Some(text) => Some(Bytes::from(text)),
    };
    Ok(result)
}

/// Header values may be strings, numbers or booleans (as Lambda runtimes emit them).
fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ProxyResult, Malformed> {
        parse(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn plain_bodies_pass_through() {
        for text in ["hello", "[1,2]", "{\"a\":1}", "{not json", "  {\"b\":2}"] {
            let r = p(text).unwrap();
            assert_eq!(r.status, None);
            assert_eq!(r.body.as_deref(), Some(text.as_bytes()));
        }
        assert_eq!(p("").unwrap().body, None);
    }

    #[test]
    fn proxy_shape_is_read() {
        let r = p(r#"{"statusCode":200,"headers":{"Sec-WebSocket-Protocol":"chat"},"body":"hi"}"#)
            .unwrap();
        assert_eq!(r.status, Some(200));
        assert_eq!(r.subprotocol.as_deref(), Some("chat"));
        assert_eq!(r.body.as_deref(), Some(&b"hi"[..]));
        let r = p(r#"{"statusCode":401}"#).unwrap();
        assert_eq!((r.status, r.body), (Some(401), None));
        let r = p(r#"{"statusCode":200,"body":"aGk=","isBase64Encoded":true}"#).unwrap();
        assert!(r.binary);
        assert_eq!(r.body.as_deref(), Some(&b"hi"[..]));
        let r = p(r#"{"statusCode":"201","multiValueHeaders":{"sec-websocket-protocol":["a"]}}"#)
            .unwrap();
        assert_eq!((r.status, r.subprotocol.as_deref()), (Some(201), Some("a")));
    }

    #[test]
    fn group_headers_are_read() {
        let r = p(r#"{"statusCode":200,"headers":{"X-Switchboard-Join":"a, b"},"multiValueHeaders":{"x-switchboard-leave":["c","d,e"]}}"#).unwrap();
        assert_eq!(r.groups.join, ["a", "b"]);
        assert_eq!(r.groups.leave, ["c", "d", "e"]);
    }

    #[test]
    fn malformed_proxy_shapes_are_refused() {
        for text in [
            r#"{"statusCode":200,"extra":1}"#,
            r#"{"statusCode":"abc"}"#,
            r#"{"statusCode":99}"#,
            r#"{"statusCode":200,"body":5}"#,
            r#"{"statusCode":200,"headers":[]}"#,
            r#"{"statusCode":200,"headers":{"a":{}}}"#,
            r#"{"statusCode":200,"isBase64Encoded":"yes"}"#,
            r#"{"statusCode":200,"body":"!!!","isBase64Encoded":true}"#,
        ] {
            assert!(p(text).is_err(), "{text}");
        }
    }
}
