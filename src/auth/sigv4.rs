//! Verification of AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256 …`), so an
//! unmodified AWS SDK `ApiGatewayManagementApi` client pointed at the management API with
//! an endpoint override can call it. Pure: no I/O, the clock is a parameter.
//!
//! The canonical request is rebuilt as AWS builds it for `execute-api`: the path as
//! received, dot segments and empty segments removed, then percent-encoded again (so
//! `%40connections` becomes `%2540connections`); query parameters decoded, strictly
//! re-encoded and sorted; the signed headers, lowercase, values trimmed and inner spaces
//! collapsed; the SHA-256 of the body (an `x-amz-content-sha256` header must match it).
//!
//! Refused with 403 and AWS's messages and `x-amzn-errortype`s: an incomplete header, a
//! credential scoped to another region or service, an `X-Amz-Date` more than
//! `max_clock_skew_secs` (AWS: 15 minutes) away from the gateway's clock, an unknown access
//! key, `host` not signed, a wrong signature. Presigned URLs (query-string signatures) and
//! session tokens are not supported.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::{digest, hmac};
use subtle::ConstantTimeEq as _;

use super::hex;
use crate::config::SigV4Settings;

/// The signing algorithm this verifier accepts.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service every credential scope must name.
pub const SERVICE: &str = "execute-api";

/// Characters left as they are: RFC 3986 unreserved.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Path encoding keeps `/`.
const PATH: &AsciiSet = &STRICT.remove(b'/');

/// A refusal: AWS's `x-amzn-errortype` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Error {
    /// e.g. `InvalidSignatureException`.
    pub error_type: &'static str,
    /// The `{"message": …}` text.
    pub message: String,
}

impl SigV4Error {
    fn incomplete(message: impl Into<String>) -> Self {
        Self {
            error_type: "IncompleteSignatureException",
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            error_type: "InvalidSignatureException",
            message: message.into(),
        }
    }
    fn mismatch() -> Self {
        Self::invalid(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    }
}

/// A request to verify, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path exactly as on the request line (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// Every header.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// The parts of an `Authorization` header.
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// Verifies signatures against the configured access keys. Borrows the settings, so a
/// reload that swaps them applies to the next call.
pub struct Verifier<'a> {
    settings: &'a SigV4Settings,
    service: &'a str,
}

impl fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("region", &self.settings.region)
            .field("access_keys", &self.settings.access_keys.len())
            .finish()
    }
}

/// Whether the request carries a SigV4 `Authorization` header.
pub fn is_sigv4(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(ALGORITHM.as_bytes()))
}

impl<'a> Verifier<'a> {
    /// A verifier for `execute-api` in the configured region.
    pub fn new(settings: &'a SigV4Settings) -> Self {
        Self {
            settings,
            service: SERVICE,
        }
    }

    /// Verifies `request` at time `now`; returns the access key id that signed it.
    pub fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<String, SigV4Error> {
        let header = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| SigV4Error::incomplete("Missing Authentication Token"))?;
        let auth = parse_authorization(header)?;
        let region = self.settings.region.as_str();
        let max_skew =
            TimeDelta::seconds(self.settings.max_clock_skew_secs.min(i32::MAX as u64) as i64);
        if auth.service != self.service {
            return Err(SigV4Error::invalid(format!(
                "Credential should be scoped to correct service: '{}'. ",
                self.service
            )));
        }
        if auth.region != region {
            return Err(SigV4Error::invalid(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                auth.region
            )));
        }
        let amz_date = request_date(request.headers)?;
        let signed_at = NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| {
                SigV4Error::incomplete(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
                ))
            })?
            .and_utc();
        let fmt = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
        if signed_at < now - max_skew {
            return Err(SigV4Error::invalid(format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - {} min.)",
                fmt(now - max_skew),
                fmt(now),
                max_skew.num_minutes()
            )));
        }
        if signed_at > now + max_skew {
            return Err(SigV4Error::invalid(format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + {} min.)",
                fmt(now + max_skew),
                fmt(now),
                max_skew.num_minutes()
            )));
        }
        if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
            return Err(SigV4Error::invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                auth.date,
                &amz_date[..amz_date.len().min(8)]
            )));
        }
        let secret = self
            .settings
            .pairs()
            .find(|(id, _)| *id == auth.access_key)
            .map(|(_, secret)| secret)
            .ok_or_else(|| SigV4Error {
                error_type: "UnrecognizedClientException",
                message: "The security token included in the request is invalid.".into(),
            })?;
        if !auth.signed_headers.contains(&"host") {
            return Err(SigV4Error::invalid(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let body_hash = hex(digest::digest(&digest::SHA256, request.body).as_ref());
        if let Some(claimed) = request.headers.get("x-amz-content-sha256")
            && claimed.as_bytes() != body_hash.as_bytes()
        {
            return Err(SigV4Error::invalid(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
        let canonical = canonical_request(request, &auth.signed_headers, &body_hash)
            .ok_or_else(SigV4Error::mismatch)?;
        let scope = format!(
            "{}/{}/{}/aws4_request",
            auth.date, auth.region, auth.service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let key = signing_key(secret, auth.date, auth.region, auth.service);
        let expected = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(auth.access_key.to_owned())
        } else {
            Err(SigV4Error::mismatch())
        }
    }
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, SigV4Error> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            SigV4Error::incomplete("Authorization header requires the AWS4-HMAC-SHA256 algorithm.")
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(SigV4Error::incomplete(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
        ));
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = parts[..] else {
        return Err(SigV4Error::incomplete(format!(
            "Credential should have 5 parts separated by '/': {}",
            parts.len()
        )));
    };
    if terminator != "aws4_request" {
        return Err(SigV4Error::invalid(
            "Credential should be scoped with a valid terminator: 'aws4_request'.",
        ));
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// `X-Amz-Date`, or `Date` (RFC 1123) converted to the basic ISO-8601 form.
fn request_date(headers: &HeaderMap) -> Result<String, SigV4Error> {
    if let Some(v) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) {
        return Ok(v.trim().to_owned());
    }
    if let Some(v) = headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        && let Ok(t) = DateTime::parse_from_rfc2822(v.trim())
    {
        return Ok(t.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ").to_string());
    }
    Err(SigV4Error::incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
    ))
}

/// The canonical request, or `None` when a signed header is missing.
fn canonical_request(
    request: &SignedRequest<'_>,
    signed: &[&str],
    body_hash: &str,
) -> Option<String> {
    let mut out = String::with_capacity(256);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query.unwrap_or_default()));
    out.push('\n');
    for name in signed {
        let mut values = request.headers.get_all(*name).iter().peekable();
        values.peek()?;
        out.push_str(name);
        out.push(':');
        let joined: Vec<String> = values
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        out.push_str(&joined.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(body_hash);
    Some(out)
}

/// The path with dot and empty segments removed, percent-encoded (again).
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = String::from("/");
    normalized.push_str(&segments.join("/"));
    if path.ends_with('/') && !normalized.ends_with('/') {
        normalized.push('/');
    }
    utf8_percent_encode(&normalized, PATH).to_string()
}

/// Query parameters decoded, strictly re-encoded, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            (
                utf8_percent_encode(&k, STRICT).to_string(),
                utf8_percent_encode(&v, STRICT).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn settings() -> SigV4Settings {
        SigV4Settings {
            region: "us-east-1".into(),
            access_keys: vec![Secret::new(format!("AKIDEXAMPLE:{SECRET}"))],
            max_clock_skew_secs: 900,
        }
    }

    fn verifier<'a>(settings: &'a SigV4Settings, service: &'a str) -> Verifier<'a> {
        let mut v = Verifier::new(settings);
        v.service = service;
        v
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn at(text: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
    }

    /// AWS's SigV4 test suite: `get-vanilla` and `get-vanilla-query-order-key-case`.
    #[test]
    fn aws_test_suite_vectors() {
        let s = settings();
        let v = verifier(&s, "service");
        let cases = [
            (
                "/",
                None,
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "/",
                Some("Param2=value2&Param1=value1"),
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
        ];
        for (path, query, signature) in cases {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
            );
            let h = headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                ("authorization", &auth),
            ]);
            let request = SignedRequest {
                method: "GET",
                path,
                query,
                headers: &h,
                body: b"",
            };
            assert_eq!(
                v.verify(&request, at("20150830T124000Z")).as_deref(),
                Ok("AKIDEXAMPLE"),
                "{query:?}"
            );
        }
    }

    #[test]
    fn refusals() {
        let s = settings();
        let v = verifier(&s, "service");
        let good = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let cases: [(&str, &str, &str, &str); 7] = [
            (
                good,
                "20150830T123600Z",
                "20150830T125200Z",
                "Signature expired",
            ),
            (
                good,
                "20150830T123600Z",
                "20150830T122000Z",
                "Signature not yet current",
            ),
            (
                &good.replace("us-east-1", "eu-west-1"),
                "20150830T123600Z",
                "20150830T123600Z",
                "valid region",
            ),
            (
                &good.replace("/service/", "/s3/"),
                "20150830T123600Z",
                "20150830T123600Z",
                "correct service",
            ),
            (
                &good.replace("AKIDEXAMPLE", "AKIDOTHER"),
                "20150830T123600Z",
                "20150830T123600Z",
                "security token",
            ),
            (
                &good.replace("5fa00", "5fa01"),
                "20150830T123600Z",
                "20150830T123600Z",
                "does not match",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request",
                "20150830T123600Z",
                "20150830T123600Z",
                "requires 'Credential'",
            ),
        ];
        for (auth, date, now, want) in cases {
            let h = headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", date),
                ("authorization", auth),
            ]);
            let request = SignedRequest {
                method: "GET",
                path: "/",
                query: None,
                headers: &h,
                body: b"",
            };
            let error = v.verify(&request, at(now)).unwrap_err();
            assert!(error.message.contains(want), "{want}: {error:?}");
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical_uri("/prod/%40connections/abc%3D"),
            "/prod/%2540connections/abc%253D"
        );
        assert_eq!(
            canonical_uri("/prod/@connections/x"),
            "/prod/%40connections/x"
        );
        assert_eq!(canonical_uri("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("reason=a%20b%2F"), "reason=a%20b%2F");
    }
}
