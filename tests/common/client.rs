//! WebSocket clients (tokio-tungstenite) of the gateway under test: connecting, and reading
//! what the gateway sends with a deadline on every wait (next text, next message, the
//! close frame, silence).

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use super::Endpoints;

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Endpoints {
    /// `ws://…/prod` (or another path).
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.client_addr, path)
    }

    /// Connects a client to `/prod`.
    pub async fn connect(&self) -> Client {
        self.connect_path("/prod").await
    }

    /// Connects a client to `path`, with Nagle's algorithm off (`TCP_NODELAY`) as the
    /// gateway's own sockets: otherwise a small frame sent while the previous one is unacked
    /// waits for the peer's delayed ACK (up to 40 ms of real time), which a test on paused
    /// time never gives it — the clock jumps to the next timer first.
    pub async fn connect_path(&self, path: &str) -> Client {
        let (ws, response) = connect_async_with_config(self.ws_url(path), None, true)
            .await
            .expect("connect");
        assert_eq!(response.status(), 101);
        ws
    }

    /// Connects and asks the `whoami` route for the connection id (the config must have it).
    pub async fn connect_with_id(&self) -> (Client, String) {
        let mut ws = self.connect().await;
        ws.send(Message::text(r#"{"action":"whoami"}"#))
            .await
            .unwrap();
        let reply = next_text(&mut ws).await;
        let v: Value = serde_json::from_str(&reply).expect("whoami JSON");
        (
            ws,
            v["connectionId"].as_str().expect("connectionId").to_owned(),
        )
    }
}

/// The next text frame (skipping pings), within 10 s.
pub async fn next_text(ws: &mut Client) -> String {
    match next_message(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next message other than ping/pong, within 10 s.
pub async fn next_message(ws: &mut Client) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Waits for the server's close frame (within `limit`); returns it.
pub async fn expect_close(ws: &mut Client, limit: Duration) -> Option<CloseFrame> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within {limit:?}"),
            Ok(None) => panic!("stream ended without a close frame"),
            Ok(Some(Err(e))) => panic!("error before close: {e}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Asserts nothing arrives on `ws` within `wait`.
pub async fn expect_silence(ws: &mut Client, wait: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected silence, got {msg:?}");
    }
}

/// A rustls client that trusts the test CA (`tests/fixtures/tls/ca.pem`), for `wss://`
/// and HTTPS to a gateway serving `tests/fixtures/tls/cert.pem`.
pub fn test_ca_connector() -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("test CA") {
        roots
            .add(cert.expect("test CA certificate"))
            .expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Polls `f` every 50 ms until it returns `Some` (at most `limit`).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
