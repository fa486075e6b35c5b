//! The client edge: the accept loop, the handshake pipeline (`handshake`, with the
//! headers AWS adds in `forwarded`) and the per-connection session task (`session`), with
//! close codes in `close` and the fragments-per-message cap under the session's socket in
//! `fragments`; `@connections` calls on this listener go to the router the composition
//! root handed over (`callbacks`).
//!
//! The accept loop only accepts: each TCP connection gets its own task (spawned through the
//! tracker) that serves the HTTP/1 handshake under a deadline, so a slow client never
//! blocks the loop.

pub mod callbacks;
pub mod close;
pub mod forwarded;
pub mod fragments;
pub mod handshake;
pub mod resume;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use http_body_util::Either;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::state::AppState;
use forwarded::Transport;

/// Accepts clients until shutdown. With `callbacks` (the management router, when
/// `client.callbacks` is on), `/{stage}/@connections/{id}` calls are answered by it.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, callbacks: Option<Router>) {
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = state.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let transport = Transport {
                    peer,
                    local_port,
                    tls: state.tls.client.is_some(),
                };
                state.tracker.spawn(serve_connection(
                    stream,
                    transport,
                    state.clone(),
                    callbacks.clone(),
                ));
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning, then retry.
                warn!(%error, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Serves the HTTP handshake of one TCP connection; the upgrade hands it to a session.
/// A connection that has served a callback is a backend's keep-alive connection: at the
/// handshake deadline it is shut down gracefully (the call in flight finishes, within
/// one more deadline) instead of being dropped.
async fn serve_connection(
    stream: TcpStream,
    transport: Transport,
    state: Arc<AppState>,
    callbacks: Option<Router>,
) {
    let peer = transport.peer;
    let _ = stream.set_nodelay(true);
    let api = state.api();
    let client = &api.client;
    // Plain TCP as it is; with `[client.tls]`, after a TLS handshake under the header deadline.
    let tls_deadline = Duration::from_millis(client.header_timeout_ms);
    let Some(io) = crate::tls::accept(state.tls.client.as_ref(), stream, tls_deadline, peer).await
    else {
        return;
    };
    let served_callback = Arc::new(AtomicBool::new(false));
    let service_state = state.clone();
    let served = served_callback.clone();
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let state = service_state.clone();
        let router = callbacks
            .as_ref()
            .filter(|_| {
                callbacks::is_callback(&state.api(), request.uri().path(), request.headers())
            })
            .cloned();
        let served = served.clone();
        async move {
            match router {
                Some(router) => {
                    served.store(true, Ordering::Relaxed);
                    let response = callbacks::serve(router, request, peer).await?;
                    Ok(response.map(Either::Right))
                }
                None => {
                    let response = handshake::handle(request, transport, state).await?;
                    Ok::<_, std::convert::Infallible>(response.map(Either::Left))
                }
            }
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(client.header_timeout_ms))
        .max_buf_size(client.max_header_bytes)
        .max_headers(client.max_headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let deadline = Duration::from_millis(client.handshake_timeout_ms);
    let mut connection = std::pin::pin!(connection);
    let timer = tokio::time::sleep(deadline);
    let mut timer = std::pin::pin!(timer);
    let mut graceful = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "handshake connection ended with an error");
                }
                return;
            }
            _ = timer.as_mut() => {
                if graceful || !served_callback.load(Ordering::Relaxed) {
                    debug!(%peer, "handshake deadline passed; connection dropped");
                    return;
                }
                graceful = true;
                connection.as_mut().graceful_shutdown();
                timer.as_mut().reset(tokio::time::Instant::now() + deadline);
            }
            _ = state.shutdown.cancelled() => return,
        }
    }
}
