//! How a read error from the client maps to the close the gateway sends (or, when the
//! socket is unusable, to the 1006 it reports).

use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

use super::fragments::TooManyFragments;
use crate::connections::Close;
use crate::connections::close::truncate_reason;

/// The close for a read error: `Ok` to send, `Err` when the socket is unusable and the
/// close can only be reported.
pub fn for_error(error: &WsError) -> Result<Close, Close> {
    match error {
        WsError::Capacity(_) => Ok(Close::too_big()),
        WsError::Utf8(_) => Ok(Close::new(1007, "Invalid UTF-8 in text frame")),
        // Not the socket failing: `fragments` refused a message with too many frames.
        WsError::Io(e) if TooManyFragments::is(e) => Ok(Close::too_big()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => Err(Close::abnormal("Connection closed abnormally")),
        WsError::Protocol(e) => Ok(Close::new(
            1002,
            truncate_reason(&format!("Protocol error: {e}")),
        )),
        _ => Ok(Close::new(1011, "Internal error")),
    }
}
