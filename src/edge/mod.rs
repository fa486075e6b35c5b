//! The client edge: the accept loop, the handshake pipeline (`handshake`) and the
//! per-connection session task (`session`), with close codes in `close` and the
//! fragments-per-message cap under the session's socket in `fragments`.
//!
//! The accept loop only accepts: each TCP connection gets its own task (spawned through the
//! tracker) that serves the HTTP/1 handshake under a deadline, so a slow client never
//! blocks the loop.

pub mod close;
pub mod fragments;
pub mod handshake;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::state::AppState;

/// Accepts clients until shutdown.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = state.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                state
                    .tracker
                    .spawn(serve_connection(stream, peer, state.clone()));
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
async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<AppState>) {
    let _ = stream.set_nodelay(true);
    let api = state.api();
    let client = &api.client;
    // Plain TCP as it is; with `[client.tls]`, after a TLS handshake under the header deadline.
    let tls_deadline = Duration::from_millis(client.header_timeout_ms);
    let Some(io) = crate::tls::accept(state.tls.client.as_ref(), stream, tls_deadline, peer).await
    else {
        return;
    };
    let service_state = state.clone();
    let service =
        service_fn(move |request| handshake::handle(request, peer, service_state.clone()));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(client.header_timeout_ms))
        .max_buf_size(client.max_header_bytes)
        .max_headers(client.max_headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let deadline = Duration::from_millis(client.handshake_timeout_ms);
    tokio::select! {
        result = tokio::time::timeout(deadline, connection) => match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => debug!(%peer, %error, "handshake connection ended with an error"),
            Err(_) => debug!(%peer, "handshake deadline passed; connection dropped"),
        },
        _ = state.shutdown.cancelled() => {}
    }
}
