//! The two servers loadgen runs as its own child processes: the bare baseline server
//! (tokio-tungstenite, one task per connection, no routing and no registry, 1 KiB read
//! buffer, unbuffered writes) that every ratio target is measured against — an echo server,
//! or with `--broadcast` a chat room that sends every message to every connection — and the
//! local HTTP backend the `http-route` scenario calls through the gateway and directly.

use std::convert::Infallible;
use std::io::Write as _;

use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What the backend answers every request with: a Lambda-proxy response whose body the
/// gateway sends back to the client as `{"ok":true}`.
pub const BACKEND_ANSWER: &str = r#"{"statusCode":200,"body":"{\"ok\":true}"}"#;

/// The frame a client gets back through the gateway for [`BACKEND_ANSWER`].
pub const BACKEND_FRAME: &str = r#"{"ok":true}"#;

fn announce(listener: &TcpListener) -> Result<()> {
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({ "listening": addr.to_string() }))?;
    out.flush()?;
    Ok(())
}

/// Runs the baseline server on `listen` until killed. Without `broadcast` every text or
/// binary message is sent back as it came; with it, every such message is sent to every
/// connection (the sender too) through one `tokio::sync::broadcast` channel, the idiomatic
/// tokio chat room: one shared message, one wake-up and one write per connection.
pub async fn baseline(listen: &str, read_buffer: usize, broadcast: bool) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    announce(&listener)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_frame_size(Some(32 << 10))
        .max_message_size(Some(128 << 10));
    let hub = broadcast.then(|| broadcast::channel::<Message>(64).0);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            match hub {
                Some(hub) => relay(ws, hub).await,
                None => echo(ws).await,
            }
        });
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

async fn relay(mut ws: WebSocketStream<TcpStream>, hub: broadcast::Sender<Message>) {
    let mut inbox = hub.subscribe();
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    let _ = hub.send(message);
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            outgoing = inbox.recv() => match outgoing {
                Ok(message) => {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

/// Runs the HTTP/1.1 backend on `listen` until killed: reads each request body and answers
/// [`BACKEND_ANSWER`].
pub async fn http_backend(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    announce(&listener)?;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let service = service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let response = hyper::Response::builder()
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(BACKEND_ANSWER.as_bytes())))
                        .unwrap_or_default();
                    Ok::<_, Infallible>(response)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
