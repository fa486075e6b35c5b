//! The end of a session's socket: the close handshake, however the session ended.
//!
//! When the gateway closes (a limit, a protocol error, DELETE, draining, idle, shutdown),
//! it sends its close frame, half-closes its side of the TCP connection, and then keeps
//! reading and discarding what the client still sends — its close reply, or the rest of a
//! message that was too big — until the client closes too or `CLOSE_LINGER` passes
//! (RFC 6455 §7.1.1). Closing the socket while unread bytes wait would make the kernel
//! answer with a reset, and a reset can discard the close frame before the client reads it.

use std::time::Duration;

use futures_util::SinkExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Ending, Ws};
use crate::connections::Close;

/// How long the gateway waits, after sending its close frame, for the client to close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes read (and discarded) per read while lingering.
const DISCARD_CHUNK: usize = 4096;

/// Finishes the socket's side of `ending` and returns the close to report.
pub(super) async fn finish_socket(ws: &mut Ws, ending: Ending) -> Close {
    match ending {
        Ending::ClientClosed(frame) => {
            // tungstenite queued the echo of the client's close; push it out.
            let _ = tokio::time::timeout(CLOSE_LINGER, ws.flush()).await;
            match frame {
                Some(f) => Close::new(u16::from(f.code), f.reason.as_str()),
                None => Close::no_status(),
            }
        }
        Ending::ServerCloses(close) => {
            let _ = tokio::time::timeout(CLOSE_LINGER, close_and_linger(ws, &close)).await;
            close
        }
        Ending::Dropped(close) => close,
        // The client is resuming on another socket: this one is let go as it is.
        Ending::Superseded => Close::abnormal("Resumed on another socket"),
    }
}

/// Sends the close frame, half-closes, then reads and discards until the client closes.
async fn close_and_linger(ws: &mut Ws, close: &Close) {
    let frame = CloseFrame {
        code: CloseCode::from(close.code),
        reason: close.reason.clone().into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Past this point the WebSocket protocol is over for the gateway: what arrives is
    // read as raw bytes from the socket itself (after a too-big frame, tungstenite could
    // not parse it anyway, and the fragment count no longer matters).
    let io = ws.get_mut().inner_mut();
    let _ = io.shutdown().await;
    let mut scratch = vec![0u8; DISCARD_CHUNK];
    while let Ok(n) = io.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}
