//! The management API's authentication through the real binary: requests signed with the
//! `aws-sigv4` crate (AWS's own Rust signer) POST, GET and DELETE a live connection; bad
//! signatures, another region or service, old or future timestamps, unknown keys and
//! tampered bodies get 403 with AWS's error shapes; every route refuses callers without
//! valid credentials; bearer tokens rotate through the environment; SigV4 keys come from
//! the environment; the management API serves TLS; no secret reaches the logs.
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use common::*;
use futures_util::SinkExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

const AKID: &str = "AKIDSWITCHBOARDTEST";
const SECRET: &str = "sIgV4+secret/Key0123456789abcdefEXAMPLE";
const REGION: &str = "eu-central-1";

/// `[management]` accepting bearer tokens and SigV4, plus `extra`.
fn config(auth: &str, extra: &str) -> String {
    format!(
        "[management]\nauth = \"{auth}\"\nbearer_tokens = [\"{TOKEN}\"]\n\
         [management.sigv4]\nregion = \"{REGION}\"\naccess_keys = [\"{AKID}:{SECRET}\"]\n{WHOAMI}{extra}"
    )
}

/// Signing parameters that can each be wrong.
#[derive(Clone, Copy)]
struct Signer<'a> {
    key: &'a str,
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    time: SystemTime,
}

impl Default for Signer<'_> {
    fn default() -> Self {
        Self {
            key: AKID,
            secret: SECRET,
            region: REGION,
            service: "execute-api",
            time: SystemTime::now(),
        }
    }
}

impl Signer<'_> {
    /// The headers `aws-sigv4` adds to sign `method url` with `body`.
    fn headers(&self, method: &str, url: &str, body: &[u8]) -> Vec<(String, String)> {
        let identity = Credentials::new(self.key, self.secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let request =
            SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Sends a signed request; returns status, `x-amzn-errortype` and body.
    async fn send(
        &self,
        gw: &Gateway,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, String, String) {
        let url = gw.management_url(path);
        let headers = self.headers(method, &url, body);
        send_with(gw, method, path, &headers, body.to_vec()).await
    }
}

async fn send_with(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), gw.management_url(path))
        .body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, error_type, response.text().await.unwrap())
}

fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn signed_post_get_delete_reach_a_live_connection() {
    let gw = Gateway::start(&config("both", "")).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let signer = Signer::default();

    // POST, as the SDKs send it: stage prefix, `@` percent-encoded.
    let (status, _, _) = signer
        .send(
            &gw,
            "POST",
            &format!("/prod/%40connections/{id}"),
            b"signed hello",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "signed hello");
    // And without the encoding or the stage.
    let (status, _, _) = signer
        .send(&gw, "POST", &format!("/@connections/{id}"), b"second")
        .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "second");

    let (status, _, body) = signer
        .send(&gw, "GET", &format!("/prod/%40connections/{id}"), b"")
        .await;
    assert_eq!(status, 200);
    let described: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(described["identity"]["sourceIp"], "127.0.0.1");

    let (status, _, _) = signer
        .send(
            &gw,
            "DELETE",
            &format!("/prod/%40connections/{id}?code=4000&reason=bye"),
            b"",
        )
        .await;
    assert_eq!(status, 204);
    let close = expect_close(&mut ws, Duration::from_secs(3))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "bye");

    // Gone now: 410 to a correctly signed POST.
    let (status, _, body) = signer
        .send(&gw, "POST", &format!("/prod/%40connections/{id}"), b"late")
        .await;
    assert_eq!(status, 410);
    assert_eq!(body, "");
}

#[tokio::test]
async fn bad_signatures_are_403_with_aws_errors() {
    let gw = Gateway::start(&config("both", "")).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/prod/%40connections/{id}");
    let good = Signer::default();
    let twenty_minutes = Duration::from_secs(20 * 60);
    let cases: Vec<(&str, Signer<'_>, &str, &str)> = vec![
        (
            "wrong secret",
            Signer {
                secret: "not-the-secret-0123456789",
                ..good
            },
            "InvalidSignatureException",
            "The request signature we calculated does not match",
        ),
        (
            "wrong region",
            Signer {
                region: "us-west-2",
                ..good
            },
            "InvalidSignatureException",
            "Credential should be scoped to a valid region",
        ),
        (
            "wrong service",
            Signer {
                service: "s3",
                ..good
            },
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'execute-api'",
        ),
        (
            "20 minutes old",
            Signer {
                time: SystemTime::now() - twenty_minutes,
                ..good
            },
            "InvalidSignatureException",
            "Signature expired",
        ),
        (
            "20 minutes ahead",
            Signer {
                time: SystemTime::now() + twenty_minutes,
                ..good
            },
            "InvalidSignatureException",
            "Signature not yet current",
        ),
        (
            "unknown access key",
            Signer {
                key: "AKIDUNKNOWN",
                ..good
            },
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
    ];
    for (name, signer, error_type, text) in cases {
        let (status, got_type, body) = signer.send(&gw, "POST", &path, b"nope").await;
        assert_eq!(status, 403, "{name}");
        assert_eq!(got_type, error_type, "{name}");
        assert!(message(&body).starts_with(text), "{name}: {body}");
    }
    // Within the 15 minutes either way: accepted.
    let ten_minutes = Duration::from_secs(10 * 60);
    for time in [
        SystemTime::now() - ten_minutes,
        SystemTime::now() + ten_minutes,
    ] {
        let (status, _, _) = Signer { time, ..good }
            .send(&gw, "POST", &path, b"skewed")
            .await;
        assert_eq!(status, 200);
        assert_eq!(next_text(&mut ws).await, "skewed");
    }
    // A body changed after signing.
    let url = gw.management_url(&path);
    let headers = good.headers("POST", &url, b"original");
    let (status, got_type, _) = send_with(&gw, "POST", &path, &headers, b"tampered".to_vec()).await;
    assert_eq!(
        (status, got_type.as_str()),
        (403, "InvalidSignatureException")
    );
    // Signed for another path.
    let headers = good.headers(
        "POST",
        &gw.management_url("/prod/%40connections/other"),
        b"x",
    );
    let (status, _, _) = send_with(&gw, "POST", &path, &headers, b"x".to_vec()).await;
    assert_eq!(status, 403);
    // A replayed signature with a changed query.
    let headers = good.headers("DELETE", &url, b"");
    let (status, _, _) = send_with(
        &gw,
        "DELETE",
        &format!("{path}?code=4001"),
        &headers,
        Vec::new(),
    )
    .await;
    assert_eq!(status, 403);
    expect_silence(&mut ws, Duration::from_millis(200)).await;
    assert!(
        !gw.raw_logs().contains(SECRET),
        "the SigV4 secret appears in the logs"
    );
}

/// Every management route, with a well-formed connection id and group.
fn routes(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("POST", format!("/@connections/{id}")),
        ("GET", format!("/@connections/{id}")),
        ("DELETE", format!("/@connections/{id}")),
        ("POST", format!("/prod/%40connections/{id}")),
        ("GET", format!("/prod/@connections/{id}")),
        ("DELETE", format!("/prod/@connections/{id}")),
        ("GET", "/@connections".to_owned()),
        ("PUT", format!("/@groups/room/members/{id}")),
        ("DELETE", format!("/@groups/room/members/{id}")),
        ("GET", "/@groups/room/members".to_owned()),
        ("POST", "/@groups/room".to_owned()),
        ("POST", "/@broadcast".to_owned()),
        ("GET", "/metrics".to_owned()),
        ("POST", "/admin/drain".to_owned()),
        ("GET", "/nowhere".to_owned()),
        ("PATCH", format!("/@connections/{id}")),
    ]
}

#[tokio::test]
async fn every_route_refuses_callers_without_valid_credentials() {
    let gw = Gateway::start(&config("both", "")).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let forged = Signer {
        secret: "forged-secret-0123456789",
        ..Signer::default()
    };
    for (method, path) in routes(&id) {
        let none = send_with(&gw, method, &path, &[], b"x".to_vec()).await;
        assert_eq!(
            (none.0, none.1.as_str()),
            (403, "ForbiddenException"),
            "{method} {path}: none"
        );
        assert_eq!(message(&none.2), "Forbidden");
        let wrong_bearer = [(
            "authorization".to_owned(),
            "Bearer wrong-token-0123456789".to_owned(),
        )];
        let bearer = send_with(&gw, method, &path, &wrong_bearer, b"x".to_vec()).await;
        assert_eq!(bearer.0, 403, "{method} {path}: wrong bearer");
        let signed = forged.send(&gw, method, &path, b"x").await;
        assert_eq!(signed.0, 403, "{method} {path}: forged signature");
    }
    // Nothing was delivered or closed.
    expect_silence(&mut ws, Duration::from_millis(200)).await;
    // Health needs no credentials.
    let health = reqwest::get(gw.management_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    // The valid token still works.
    assert_eq!(gw.post(&id, "still here").await.0, 200);
    assert_eq!(next_text(&mut ws).await, "still here");
}

#[tokio::test]
async fn sigv4_only_refuses_bearer_tokens() {
    let gw = Gateway::start(&config("sigv4", "")).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let (status, body) = gw.post(&id, "bearer").await;
    assert_eq!(status, 403);
    assert_eq!(message(&body), "Missing Authentication Token");
    let (status, _, _) = Signer::default()
        .send(
            &gw,
            "POST",
            &format!("/prod/%40connections/{id}"),
            b"signed",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "signed");
}

#[tokio::test]
async fn credentials_from_the_environment_and_token_rotation() {
    let env_secret = "env+secret/0123456789abcdefghijKLMN";
    let gw = Gateway::start_with_env(
        &config("both", ""),
        &[
            (
                "SWITCHBOARD__MANAGEMENT__BEARER_TOKENS",
                "old-token-0123456789,new-token-0123456789",
            ),
            (
                "SWITCHBOARD__MANAGEMENT__SIGV4__ACCESS_KEYS",
                &format!("AKIDFROMENV:{env_secret}"),
            ),
        ],
    )
    .await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}");
    // Rotation: both the outgoing and the incoming token work; the file's token was replaced.
    for token in ["old-token-0123456789", "new-token-0123456789"] {
        let r = reqwest::Client::new()
            .post(gw.management_url(&path))
            .bearer_auth(token)
            .body(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(next_text(&mut ws).await, token);
    }
    assert_eq!(gw.post(&id, "x").await.0, 403);
    let env_signer = Signer {
        key: "AKIDFROMENV",
        secret: env_secret,
        ..Signer::default()
    };
    assert_eq!(
        env_signer.send(&gw, "POST", &path, b"env-signed").await.0,
        200
    );
    assert_eq!(next_text(&mut ws).await, "env-signed");
    // The file's key was replaced by the environment's.
    assert_eq!(
        Signer::default().send(&gw, "POST", &path, b"x").await.0,
        403
    );
    let logs = gw.raw_logs();
    for secret in [env_secret, "old-token-0123456789", "new-token-0123456789"] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

#[tokio::test]
async fn management_over_tls() {
    let dir = format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"));
    let extra =
        format!("[management.tls]\ncert_file = \"{dir}/cert.pem\"\nkey_file = \"{dir}/key.pem\"\n");
    let gw = Gateway::start(&config("both", &extra)).await;
    let (mut ws, id) = gw.connect_with_id().await;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(format!("{dir}/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let https = |request: String| {
        let connector = connector.clone();
        let addr = gw.management_addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
            String::from_utf8_lossy(&response).into_owned()
        }
    };
    let body = "over https";
    let response = https(format!(
        "POST /@connections/{id} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(next_text(&mut ws).await, body);
    let refused = https(format!(
        "POST /@connections/{id} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    ))
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // Plain HTTP to the TLS listener gets no answer.
    assert!(reqwest::get(gw.management_url("/healthz")).await.is_err());
    ws.send(Message::Close(None)).await.unwrap();
}

/// Polls a bearer-authenticated GET until it answers `want` (at most 5 s).
async fn wait_status(gw: &Gateway, token: &str, path: &str, want: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = reqwest::Client::new()
            .get(gw.management_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "token still answered {status}, not {want}, 5 s after the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bearer_tokens_rotate_by_reload_without_a_restart() {
    let gw = Gateway::start(&config("bearer", "")).await;
    let (_ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}");
    let next = "next-token-abcdefghij0123";
    let pid = gw.pid();
    // Step 1: both tokens.
    let both = config("bearer", "").replace(
        &format!("bearer_tokens = [\"{TOKEN}\"]"),
        &format!("bearer_tokens = [\"{TOKEN}\", \"{next}\"]"),
    );
    assert_ne!(both, config("bearer", ""));
    std::fs::write(gw.config_path(), &both).unwrap();
    gw.sighup();
    wait_status(&gw, next, &path, 200).await;
    wait_status(&gw, TOKEN, &path, 200).await;
    // Step 2: the old token retired.
    let only_next = config("bearer", "").replace(
        &format!("bearer_tokens = [\"{TOKEN}\"]"),
        &format!("bearer_tokens = [\"{next}\"]"),
    );
    std::fs::write(gw.config_path(), &only_next).unwrap();
    gw.sighup();
    wait_status(&gw, TOKEN, &path, 403).await;
    wait_status(&gw, next, &path, 200).await;
    assert_eq!(gw.pid(), pid);
    assert!(
        !gw.raw_logs().contains(next),
        "the new token appears in the logs"
    );
}
