//! Connect-time admission through the real binary: the HTTP REQUEST authorizer against a
//! real authorizer server started here (identity sources, IAM-policy and simple answers,
//! 401/403/500, the result cache, `usageIdentifierKey`), the JWT authorizer with tokens
//! signed here with real keys (HS256 secret, RS256/ES256 PEM fixtures, a JWKS served over
//! HTTP with rotation and an unknown `kid`), the origin allowlist, API keys (403, rate
//! limit, daily quota), the pipeline order, context propagation into CONNECT, MESSAGE and
//! DISCONNECT events and GET `@connections`, TLS on the client edge, and that no credential
//! reaches the logs.
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::SinkExt as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

// ---------------------------------------------------------------------------------------
// Helpers

const HS_SECRET: &str = "hs256-test-secret-0123456789-abcdef";
const ARN: &str = "arn:aws:execute-api:us-east-1:000000000000:switchboard/prod/$connect";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT with `claims`, signed with `key` under `alg` and `kid`.
fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        Some("hs1"),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        claims,
    )
}

fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem(name)).expect("rsa pem")
}

fn ec_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&pem(name)).expect("ec pem")
}

/// Claims valid for five minutes.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 300, "iat": now()})
}

/// Tries a handshake with extra headers; the socket and the 101, or the refusal's status.
async fn try_connect(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    u16,
> {
    let mut request = gw.ws_url(path).into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match connect_async(request).await {
        Ok(ok) => Ok(ok),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("handshake failed without a status: {other}"),
    }
}

async fn status_of(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    match try_connect(gw, path, headers).await {
        Ok(_) => 101,
        Err(status) => status,
    }
}

async fn connect_ok(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Client {
    match try_connect(gw, path, headers).await {
        Ok((ws, _)) => ws,
        Err(status) => panic!("expected 101, got {status}"),
    }
}

/// `$connect`, `$default` and `$disconnect` all POST proxy events to `events`.
fn event_routes(events: &Backend) -> String {
    format!(
        "[routes.\"$connect\"]\nintegration = \"events\"\n[routes.\"$default\"]\nintegration = \"events\"\n\
         [routes.\"$disconnect\"]\nintegration = \"events\"\n\
         [integrations.events]\ntype = \"http\"\nurl = \"{}\"\n",
        events.url("/events")
    )
}

/// An authorizer answer with an IAM policy.
fn policy(effect: &str, resource: &str, principal: &str, context: Value) -> String {
    json!({
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]
        },
        "context": context
    })
    .to_string()
}

/// The token the authorizer event carries in `headers.Authorization`.
fn event_token(received: &Received) -> String {
    let event = received.json();
    event["headers"]["Authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `[auth.http]` on `authorizer` (`http_extra` goes into that section), then `extra`.
fn http_authorizer_config_with(authorizer: &Backend, http_extra: &str, extra: &str) -> String {
    format!(
        "{}[auth]\nauthorizer = \"http\"\n[auth.http]\nurl = \"{}\"\ntimeout_ms = 1000\n{http_extra}\n{extra}",
        base_config(),
        authorizer.url("/authorize")
    )
}

fn http_authorizer_config(authorizer: &Backend, extra: &str) -> String {
    http_authorizer_config_with(authorizer, "", extra)
}

/// An authorizer deciding by token: `allow-*` Allow (principal = the token), `deny` Deny,
/// `simple-yes`/`simple-no` simple answers, `wrong-stage` Allow on another stage,
/// `two-segments` Allow on `prod/*/*`, `unauthorized` HTTP 401, `forbidden` HTTP 403,
/// `error` HTTP 500, `malformed` not JSON, `nested` a nested context value, `big` an
/// answer over 8 KiB, `callback` the body "Unauthorized".
fn decide(received: &Received) -> (u16, String) {
    let token = event_token(received);
    let token = token.strip_prefix("Bearer ").unwrap_or(&token).to_owned();
    let context = json!({"tenant": "acme", "tier": 3, "beta": true});
    match token.as_str() {
        t if t.starts_with("allow-") => (200, policy("Allow", ARN, t, context)),
        "deny" => (200, policy("Deny", ARN, "u", context)),
        "simple-yes" => (
            200,
            json!({"isAuthorized": true, "context": {"via": "simple"}}).to_string(),
        ),
        "simple-no" => (200, json!({"isAuthorized": false}).to_string()),
        "wrong-stage" => (
            200,
            policy("Allow", &ARN.replace("/prod/", "/dev/"), "u", context),
        ),
        "two-segments" => (
            200,
            policy("Allow", &ARN.replace("$connect", "*/*"), "u", context),
        ),
        "unauthorized" => (401, String::new()),
        "forbidden" => (403, String::new()),
        "error" => (500, String::new()),
        "malformed" => (200, "{not json".to_owned()),
        "nested" => (200, policy("Allow", ARN, "u", json!({"deep": {"a": 1}}))),
        "big" => (
            200,
            policy("Allow", ARN, "u", json!({"pad": "x".repeat(9000)})),
        ),
        "callback" => (200, "\"Unauthorized\"".to_owned()),
        _ => (200, policy("Deny", "*", "u", json!({}))),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP REQUEST authorizer

#[tokio::test]
async fn http_authorizer_missing_identity_source_is_401_without_a_call() {
    let authorizer = Backend::with(decide).await;
    let gw = Gateway::start(&http_authorizer_config(&authorizer, "")).await;
    assert_eq!(status_of(&gw, "/prod", &[]).await, 401);
    assert_eq!(status_of(&gw, "/prod", &[("Authorization", "")]).await, 401);
    authorizer.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn http_authorizer_event_and_context_propagation() {
    let authorizer = Backend::with(decide).await;
    let events = Backend::start().await;
    let gw = Gateway::start(&http_authorizer_config(&authorizer, &event_routes(&events))).await;
    let mut ws = connect_ok(
        &gw,
        "/prod?room=lobby",
        &[
            ("Authorization", "Bearer allow-user-42"),
            ("User-Agent", "auth-test/1"),
        ],
    )
    .await;

    // The authorizer event: AWS's REQUEST shape.
    let call = authorizer.next().await;
    assert_eq!(call.path, "/authorize");
    let event = call.json();
    assert_eq!(event["type"], "REQUEST");
    assert_eq!(event["methodArn"], ARN);
    assert_eq!(event["headers"]["Authorization"], "Bearer allow-user-42");
    assert_eq!(event["headers"]["Upgrade"], "websocket");
    assert_eq!(event["headers"]["Connection"], "Upgrade");
    assert_eq!(event["headers"]["content-length"], "0");
    assert_eq!(
        event["multiValueHeaders"]["Authorization"],
        json!(["Bearer allow-user-42"])
    );
    assert_eq!(event["queryStringParameters"]["room"], "lobby");
    assert_eq!(event["stageVariables"], json!({}));
    assert_eq!(event["requestContext"]["routeKey"], "$connect");
    assert_eq!(event["requestContext"]["eventType"], "CONNECT");
    assert_eq!(event["requestContext"]["stage"], "prod");
    assert!(event["requestContext"].get("authorizer").is_none());
    let id = event["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16);

    // CONNECT, MESSAGE and DISCONNECT all carry the stringified context.
    let expected =
        json!({"principalId": "allow-user-42", "tenant": "acme", "tier": "3", "beta": "true"});
    let connect = events.next_event("CONNECT").await;
    assert_eq!(connect["requestContext"]["connectionId"], id.as_str());
    assert_eq!(connect["requestContext"]["authorizer"], expected);
    ws.send(Message::text("hello")).await.unwrap();
    let message = events.next_event("MESSAGE").await;
    assert_eq!(message["requestContext"]["authorizer"], expected);
    assert_eq!(message["body"], "hello");

    // GET @connections shows the principal.
    let (_, got) = gw.get_connection(&id).await;
    assert_eq!(got["identity"]["principalId"], "allow-user-42");
    assert_eq!(got["identity"]["userAgent"], "auth-test/1");

    ws.close(None).await.unwrap();
    let disconnect = events.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["authorizer"], expected);
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1005);
}

#[tokio::test]
async fn http_authorizer_denials_are_403_and_failures_500() {
    let authorizer = Backend::with(decide).await;
    let events = Backend::start().await;
    let gw = Gateway::start(&http_authorizer_config(&authorizer, &event_routes(&events))).await;
    let cases = [
        ("deny", 403),
        ("wrong-stage", 403),
        ("two-segments", 403),
        ("simple-no", 403),
        ("forbidden", 403),
        ("unauthorized", 401),
        ("callback", 401),
        ("error", 500),
        ("malformed", 500),
        ("nested", 500),
        ("big", 500),
        ("simple-yes", 101),
    ];
    for (token, want) in cases {
        let status = status_of(&gw, "/prod", &[("Authorization", token)]).await;
        assert_eq!(status, want, "token {token}");
        let call = authorizer.next().await;
        assert_eq!(event_token(&call), token);
    }
    // No refused handshake reached $connect; the one accepted did, with the simple
    // context, and its $disconnect followed when the test dropped it.
    let connect = events.next().await.json();
    assert_eq!(connect["requestContext"]["eventType"], "CONNECT");
    assert_eq!(
        connect["requestContext"]["authorizer"],
        json!({"via": "simple"})
    );
    let disconnect = events.next().await.json();
    assert_eq!(disconnect["requestContext"]["eventType"], "DISCONNECT");
    assert_eq!(
        disconnect["requestContext"]["authorizer"],
        json!({"via": "simple"})
    );
    events.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn http_authorizer_timeout_and_unreachable_are_500() {
    let slow = Backend::slow(Duration::from_millis(1500)).await;
    let gw = Gateway::start(&http_authorizer_config(&slow, "")).await;
    let started = std::time::Instant::now();
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", "allow-x")]).await,
        500
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!(
        "{}[auth]\nauthorizer = \"http\"\n[auth.http]\nurl = \"http://127.0.0.1:{port}/authorize\"\n",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", "allow-x")]).await,
        500
    );
}

#[tokio::test]
async fn http_authorizer_cache_reuses_results_per_identity() {
    let authorizer = Backend::with(decide).await;
    let gw = Gateway::start(&http_authorizer_config_with(
        &authorizer,
        "cache_ttl_secs = 1\nidentity_sources = [\"route.request.header.Authorization\", \"route.request.querystring.room\"]\n",
        "",
    ))
    .await;
    let a = [("Authorization", "allow-cached")];
    assert_eq!(status_of(&gw, "/prod?room=1", &a).await, 101);
    assert_eq!(event_token(&authorizer.next().await), "allow-cached");
    // Same identity values: answered from the cache.
    assert_eq!(status_of(&gw, "/prod?room=1", &a).await, 101);
    authorizer.expect_none(Duration::from_millis(200)).await;
    // A denial is cached too.
    assert_eq!(
        status_of(&gw, "/prod?room=1", &[("Authorization", "deny")]).await,
        403
    );
    authorizer.next().await;
    assert_eq!(
        status_of(&gw, "/prod?room=1", &[("Authorization", "deny")]).await,
        403
    );
    authorizer.expect_none(Duration::from_millis(200)).await;
    // Another value of any source is another entry.
    assert_eq!(status_of(&gw, "/prod?room=2", &a).await, 101);
    authorizer.next().await;
    // After the TTL the authorizer is asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_of(&gw, "/prod?room=1", &a).await, 101);
    assert_eq!(event_token(&authorizer.next().await), "allow-cached");
}

#[tokio::test]
async fn usage_identifier_key_selects_the_api_key() {
    let authorizer = Backend::with(|received| {
        let token = event_token(received);
        let key = token.strip_prefix("key:").unwrap_or_default();
        (
            200,
            json!({"principalId": "p", "usageIdentifierKey": key,
                   "policyDocument": {"Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}]}})
            .to_string(),
        )
    })
    .await;
    let gw = Gateway::start(&http_authorizer_config(
        &authorizer,
        "[auth.api_keys]\nrequired = true\nselection_expression = \"$context.authorizer.usageIdentifierKey\"\n\
         [auth.api_keys.keys.partner]\nvalue = \"partner-key-0123456789\"\n",
    ))
    .await;
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[("Authorization", "key:partner-key-0123456789")]
        )
        .await,
        101
    );
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[("Authorization", "key:other-key-0123456789")]
        )
        .await,
        403
    );
    // No usageIdentifierKey at all.
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", "none")]).await,
        403
    );
    // x-api-key is not the selected source here.
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[
                ("Authorization", "none"),
                ("x-api-key", "partner-key-0123456789")
            ]
        )
        .await,
        403
    );
}

// ---------------------------------------------------------------------------------------
// JWT authorizer

fn jwt_config(extra_jwt: &str, extra: &str) -> String {
    format!(
        "{}[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\n\
         token_sources = [\"route.request.header.Authorization\", \"route.request.querystring.access_token\", \"route.request.subprotocol\"]\n\
         issuer = \"https://issuer.test\"\naudience = [\"switchboard\"]\nleeway_secs = 5\n\
         context_claims = [\"email\", \"roles\", \"n\"]\n{extra_jwt}\n\
         [auth.jwt.keys.hs1]\nalgorithm = \"HS256\"\nsecret = \"{HS_SECRET}\"\n\
         [auth.jwt.keys.r1]\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\n\
         [auth.jwt.keys.e1]\nalgorithm = \"ES256\"\npublic_key_file = \"{}\"\n{extra}",
        base_config(),
        fixture("rsa1.pub.pem"),
        fixture("ec1.pub.pem")
    )
}

fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "https://issuer.test", "aud": "switchboard", "exp": now() + 300,
           "email": "a@example.com", "roles": ["admin", "dev"], "n": 7})
}

#[tokio::test]
async fn jwt_token_from_header_query_and_subprotocol() {
    let gw = Gateway::start(&jwt_config("", "")).await;
    let token = hs(good_claims("u1"));
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[("Authorization", &format!("Bearer {token}"))]
        )
        .await,
        101
    );
    assert_eq!(
        status_of(&gw, &format!("/prod?access_token={token}"), &[]).await,
        101
    );
    // The browser convention: offer ["bearer", token]; the 101 selects "bearer".
    let (_ws, response) = try_connect(
        &gw,
        "/prod",
        &[("Sec-WebSocket-Protocol", &format!("bearer, {token}"))],
    )
    .await
    .expect("subprotocol token accepted");
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    // The marker without a token, and no token at all.
    assert_eq!(
        status_of(&gw, "/prod", &[("Sec-WebSocket-Protocol", "bearer")]).await,
        401
    );
    assert_eq!(status_of(&gw, "/prod", &[]).await, 401);
}

#[tokio::test]
async fn jwt_rejects_invalid_tokens() {
    let gw = Gateway::start(&jwt_config("required_scopes = [\"chat\"]", "")).await;
    let with = |patch: Value| {
        let mut c = good_claims("u");
        c["scope"] = json!("chat read");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let other_secret = EncodingKey::from_secret(b"another-secret-0123456789-abcdefgh");
    let cases: Vec<(&str, String, u16)> = vec![
        ("valid", hs(with(json!({}))), 101),
        (
            "scope via scp",
            hs(with(json!({"scope": null, "scp": ["chat"]}))),
            101,
        ),
        ("within leeway", hs(with(json!({"exp": now() - 2}))), 101),
        ("expired", hs(with(json!({"exp": now() - 60}))), 401),
        ("no exp", hs(with(json!({"exp": null}))), 401),
        ("not yet valid", hs(with(json!({"nbf": now() + 120}))), 401),
        (
            "wrong issuer",
            hs(with(json!({"iss": "https://evil.test"}))),
            401,
        ),
        ("wrong audience", hs(with(json!({"aud": "other"}))), 401),
        ("no issuer", hs(with(json!({"iss": null}))), 401),
        ("no audience", hs(with(json!({"aud": null}))), 401),
        (
            "one of several audiences",
            hs(with(json!({"aud": ["x", "switchboard"]}))),
            101,
        ),
        (
            "bad signature",
            sign(
                Algorithm::HS256,
                Some("hs1"),
                &other_secret,
                with(json!({})),
            ),
            401,
        ),
        (
            "unknown kid",
            sign(
                Algorithm::HS256,
                Some("nope"),
                &EncodingKey::from_secret(HS_SECRET.as_bytes()),
                with(json!({})),
            ),
            401,
        ),
        // An RS256 key's kid with an HS256 token: the algorithm is bound to the key.
        (
            "alg confusion",
            sign(
                Algorithm::HS256,
                Some("r1"),
                &EncodingKey::from_secret(&pem("rsa1.pub.pem")),
                with(json!({})),
            ),
            401,
        ),
        ("missing scope", hs(with(json!({"scope": "read"}))), 403),
        ("garbage", "not.a.jwt".to_owned(), 401),
    ];
    for (name, token, want) in cases {
        let status = status_of(
            &gw,
            "/prod",
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(status, want, "{name}");
    }
}

#[tokio::test]
async fn jwt_rs256_and_es256_context_reaches_every_event() {
    let events = Backend::start().await;
    let gw = Gateway::start(&jwt_config("", &event_routes(&events))).await;
    let rs = sign(
        Algorithm::RS256,
        Some("r1"),
        &rsa_key("rsa1.pem"),
        good_claims("rsa-user"),
    );
    let mut ws = connect_ok(&gw, "/prod", &[("Authorization", &format!("Bearer {rs}"))]).await;
    let expected = json!({"principalId": "rsa-user", "email": "a@example.com",
                          "roles": "[\"admin\",\"dev\"]", "n": "7"});
    let connect = events.next_event("CONNECT").await;
    assert_eq!(connect["requestContext"]["authorizer"], expected);
    let id = connect["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    ws.send(Message::text("{\"action\":\"x\"}")).await.unwrap();
    assert_eq!(
        events.next_event("MESSAGE").await["requestContext"]["authorizer"],
        expected
    );
    let (_, got) = gw.get_connection(&id).await;
    assert_eq!(got["identity"]["principalId"], "rsa-user");
    // DELETE closes it: DISCONNECT still carries the context.
    let (status, _) = gw.delete_connection(&id).await;
    assert_eq!(status, 204);
    let disconnect = events.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["authorizer"], expected);
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1000);

    let es = sign(
        Algorithm::ES256,
        Some("e1"),
        &ec_key("ec1.pem"),
        good_claims("ec-user"),
    );
    let _ws = connect_ok(&gw, "/prod", &[("Authorization", &format!("Bearer {es}"))]).await;
    let connect = events.next_event("CONNECT").await;
    assert_eq!(
        connect["requestContext"]["authorizer"]["principalId"],
        "ec-user"
    );
    // Signed by the other RSA key under r1's kid: refused.
    let forged = sign(
        Algorithm::RS256,
        Some("r1"),
        &rsa_key("rsa2.pem"),
        good_claims("x"),
    );
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[("Authorization", &format!("Bearer {forged}"))]
        )
        .await,
        401
    );
}

/// A JWKS server whose document the test can change; it records each fetch.
async fn jwks_server(
    initial: Vec<(&str, Algorithm, EncodingKey)>,
) -> (Backend, Arc<Mutex<String>>) {
    let document = Arc::new(Mutex::new(jwks(initial)));
    let served = document.clone();
    let backend = Backend::with(move |_| (200, served.lock().unwrap().clone())).await;
    (backend, document)
}

fn jwks(keys: Vec<(&str, Algorithm, EncodingKey)>) -> String {
    let keys = keys
        .into_iter()
        .map(|(kid, alg, key)| {
            let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
            jwk.common.key_id = Some(kid.to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn jwks_config(jwks: &Backend) -> String {
    format!(
        "{}[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\njwks_url = \"{}\"\nprincipal_claim = \"sub\"\n",
        base_config(),
        jwks.url("/.well-known/jwks.json")
    )
}

#[tokio::test]
async fn jwks_rotation_and_unknown_kid_refetch() {
    let (server, document) = jwks_server(vec![("k1", Algorithm::RS256, rsa_key("rsa1.pem"))]).await;
    let gw = Gateway::start(&jwks_config(&server)).await;
    let bearer = |t: &str| format!("Bearer {t}");
    let k1 = sign(
        Algorithm::RS256,
        Some("k1"),
        &rsa_key("rsa1.pem"),
        claims("one"),
    );
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", &bearer(&k1))]).await,
        101
    );
    assert_eq!(server.next().await.path, "/.well-known/jwks.json");
    // Cached: no second fetch.
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", &bearer(&k1))]).await,
        101
    );
    server.expect_none(Duration::from_millis(200)).await;

    // Rotation: the issuer adds k2 (EC) and drops k1. A token with the new kid refetches.
    *document.lock().unwrap() = jwks(vec![("k2", Algorithm::ES256, ec_key("ec1.pem"))]);
    let k2 = sign(
        Algorithm::ES256,
        Some("k2"),
        &ec_key("ec1.pem"),
        claims("two"),
    );
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", &bearer(&k2))]).await,
        101
    );
    server.next().await;
    // k1 is gone from the refreshed set.
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", &bearer(&k1))]).await,
        401
    );

    // Another unknown kid within the minute: refused without a fetch.
    *document.lock().unwrap() = jwks(vec![
        ("k2", Algorithm::ES256, ec_key("ec1.pem")),
        ("k3", Algorithm::RS256, rsa_key("rsa2.pem")),
    ]);
    let k3 = sign(
        Algorithm::RS256,
        Some("k3"),
        &rsa_key("rsa2.pem"),
        claims("three"),
    );
    assert_eq!(
        status_of(&gw, "/prod", &[("Authorization", &bearer(&k3))]).await,
        401
    );
    server.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn jwks_unreachable_is_500() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!(
        "{}[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\njwks_url = \"http://127.0.0.1:{port}/jwks\"\n",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let token = sign(
        Algorithm::RS256,
        Some("k1"),
        &rsa_key("rsa1.pem"),
        claims("x"),
    );
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[("Authorization", &format!("Bearer {token}"))]
        )
        .await,
        500
    );
}

// ---------------------------------------------------------------------------------------
// Origin allowlist, API keys, pipeline order

#[tokio::test]
async fn origin_allowlist() {
    let config = format!(
        "{}[auth]\nallowed_origins = [\"https://app.example.com\", \"https://*.trusted.dev\"]\n",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    assert_eq!(
        status_of(&gw, "/prod", &[("Origin", "https://app.example.com")]).await,
        101
    );
    assert_eq!(
        status_of(&gw, "/prod", &[("Origin", "https://x.trusted.dev")]).await,
        101
    );
    assert_eq!(
        status_of(&gw, "/prod", &[("Origin", "https://evil.example")]).await,
        403
    );
    // Not a browser: no Origin, no check.
    assert_eq!(status_of(&gw, "/prod", &[]).await, 101);
}

#[tokio::test]
async fn api_keys_from_the_header_with_rate_limit_and_quota() {
    let config = format!(
        "{}[auth.api_keys]\nrequired = true\n\
         [auth.api_keys.keys.mobile]\nvalue = \"mobile-key-0123456789\"\ndaily_quota = 2\n\
         [auth.api_keys.keys.web]\nvalue = \"web-key-0123456789abc\"\nrate_per_sec = 0.5\nburst = 1\n",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    assert_eq!(status_of(&gw, "/prod", &[]).await, 403);
    assert_eq!(
        status_of(&gw, "/prod", &[("x-api-key", "unknown-key-0123456789")]).await,
        403
    );
    let mobile = [("x-api-key", "mobile-key-0123456789")];
    assert_eq!(status_of(&gw, "/prod", &mobile).await, 101);
    assert_eq!(status_of(&gw, "/prod", &mobile).await, 101);
    assert_eq!(status_of(&gw, "/prod", &mobile).await, 429);
    let web = [("x-api-key", "web-key-0123456789abc")];
    assert_eq!(status_of(&gw, "/prod", &web).await, 101);
    assert_eq!(status_of(&gw, "/prod", &web).await, 429);
}

#[tokio::test]
async fn pipeline_runs_origin_then_authorizer_then_api_key_then_connect() {
    let authorizer = Backend::with(decide).await;
    let events = Backend::start().await;
    let extra = format!(
        "[auth]\nauthorizer = \"http\"\nallowed_origins = [\"https://ok.example\"]\n\
         [auth.api_keys]\nrequired = true\n[auth.api_keys.keys.k]\nvalue = \"the-api-key-0123456789\"\n{}",
        event_routes(&events)
    );
    let config = format!(
        "{}[auth.http]\nurl = \"{}\"\n{extra}",
        base_config(),
        authorizer.url("/authorize")
    );
    let gw = Gateway::start(&config).await;
    let origin = ("Origin", "https://ok.example");
    let key = ("x-api-key", "the-api-key-0123456789");
    // A bad origin stops before the authorizer.
    let bad_origin = [
        ("Origin", "https://evil.example"),
        ("Authorization", "allow-a"),
        key,
    ];
    assert_eq!(status_of(&gw, "/prod", &bad_origin).await, 403);
    authorizer.expect_none(Duration::from_millis(200)).await;
    // A denying authorizer stops before the API key and $connect.
    assert_eq!(
        status_of(&gw, "/prod", &[origin, ("Authorization", "deny"), key]).await,
        403
    );
    authorizer.next().await;
    // A missing key is checked after the authorizer allowed.
    assert_eq!(
        status_of(&gw, "/prod", &[origin, ("Authorization", "allow-b")]).await,
        403
    );
    authorizer.next().await;
    events.expect_none(Duration::from_millis(200)).await;
    // All good: $connect runs with the context.
    assert_eq!(
        status_of(&gw, "/prod", &[origin, ("Authorization", "allow-c"), key]).await,
        101
    );
    authorizer.next().await;
    let connect = events.next_event("CONNECT").await;
    assert_eq!(
        connect["requestContext"]["authorizer"]["principalId"],
        "allow-c"
    );
}

// ---------------------------------------------------------------------------------------
// TLS on the client edge

fn tls_files(section: &str) -> String {
    let dir = format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"));
    format!("[{section}]\ncert_file = \"{dir}/cert.pem\"\nkey_file = \"{dir}/key.pem\"\n")
}

#[tokio::test]
async fn wss_with_a_jwt_in_the_subprotocol() {
    let config = format!(
        "{}{}{WHOAMI}[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\ntoken_sources = [\"route.request.subprotocol\"]\n\
         [auth.jwt.keys.hs1]\nalgorithm = \"HS256\"\nsecret = \"{HS_SECRET}\"\n",
        base_config(),
        tls_files("client.tls")
    );
    let gw = Gateway::start(&config).await;
    let tcp = tokio::net::TcpStream::connect(gw.client_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = test_ca_connector()
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let token = hs(claims("tls-user"));
    let mut request = format!("wss://localhost:{}/prod", gw.client_addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&format!("bearer, {token}")).unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("wss upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let reply = match tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    };
    let id = serde_json::from_str::<Value>(&reply).unwrap()["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    // A push over the (plain) management API arrives through TLS.
    assert_eq!(gw.post(&id, "over tls").await.0, 200);
    match tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), "over tls"),
        other => panic!("expected the push, got {other:?}"),
    }
    // Plain TCP to a TLS listener gets no WebSocket.
    assert!(connect_async(gw.ws_url("/prod")).await.is_err());
}

#[tokio::test]
async fn bad_tls_files_are_a_config_error() {
    let config = format!(
        "{}[client.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
        base_config()
    );
    let (code, _, stderr) = check_config(&config);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("client.tls.cert_file"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Secrets stay out of the logs

#[tokio::test]
async fn no_credential_appears_in_any_log_line() {
    let authorizer = Backend::with(decide).await;
    let api_key = "logcheck-api-key-0123456789";
    let config = format!(
        "{}[log]\nlevel = \"debug\"\n[auth]\nauthorizer = \"http\"\n[auth.http]\nurl = \"{}\"\n\
         [auth.api_keys]\nrequired = true\n[auth.api_keys.keys.k]\nvalue = \"{api_key}\"\n{WHOAMI}",
        base_config(),
        authorizer.url("/authorize")
    );
    let gw = Gateway::start(&config).await;
    let token = "allow-secret-token-value-987";
    let mut ws = connect_ok(
        &gw,
        "/prod",
        &[("Authorization", token), ("x-api-key", api_key)],
    )
    .await;
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let reply = next_text(&mut ws).await;
    let id = serde_json::from_str::<Value>(&reply).unwrap()["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(gw.post(&id, "x").await.0, 200);
    // Refusals with wrong credentials of every kind.
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[("Authorization", "deny-secret-xyz"), ("x-api-key", api_key)]
        )
        .await,
        403
    );
    assert_eq!(
        status_of(
            &gw,
            "/prod",
            &[
                ("Authorization", token),
                ("x-api-key", "wrong-api-key-0123456789")
            ]
        )
        .await,
        403
    );
    let wrong = reqwest::Client::new()
        .get(gw.management_url(&format!("/@connections/{id}")))
        .bearer_auth("wrong-management-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = gw.raw_logs();
    assert!(logs.contains("connected"), "logs were captured");
    for secret in [
        TOKEN,
        token,
        api_key,
        "deny-secret-xyz",
        "wrong-api-key-0123456789",
        "wrong-management-token-123",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

// ---------------------------------------------------------------------------------------
// Cluster: the context travels in the connection record

#[tokio::test]
async fn authorizer_context_crosses_nodes_and_survives_node_death() {
    let redis = RedisServer::start().await;
    let events = Backend::start().await;
    let extra = format!(
        "{WHOAMI}[auth]\nauthorizer = \"jwt\"\n[auth.jwt]\ncontext_claims = [\"email\"]\n\
         [auth.jwt.keys.hs1]\nalgorithm = \"HS256\"\nsecret = \"{HS_SECRET}\"\n\
         [routes.\"$disconnect\"]\nintegration = \"events\"\n\
         [integrations.events]\ntype = \"http\"\nurl = \"{}\"\n",
        events.url("/events")
    );
    let config = cluster_config(&redis, &extra);
    let mut owner = Gateway::start(&config).await;
    let other = Gateway::start(&config).await;
    owner.wait_backplane_ready().await;
    other.wait_backplane_ready().await;

    let mut token_claims = claims("cluster-user");
    token_claims["email"] = json!("c@example.com");
    let token = hs(token_claims);
    let mut ws = connect_ok(
        &owner,
        "/prod",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let reply = next_text(&mut ws).await;
    let id = serde_json::from_str::<Value>(&reply).unwrap()["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();

    // GET through the other node shows the principal.
    let (status, described) = other.get_connection(&id).await;
    assert_eq!(status, 200);
    assert_eq!(described["identity"]["principalId"], "cluster-user");

    // The owner dies; the survivor's $disconnect still carries the context.
    owner.sigkill().await;
    let disconnect = events.next_event("DISCONNECT").await;
    let ctx = &disconnect["requestContext"];
    assert_eq!(ctx["connectionId"], id.as_str());
    assert_eq!(ctx["disconnectStatusCode"], 1006);
    assert_eq!(
        ctx["authorizer"],
        json!({"principalId": "cluster-user", "email": "c@example.com"})
    );
}
