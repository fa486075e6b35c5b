//! Writes to the client, each bounded: a DELETE or shutdown interrupts a write that cannot
//! finish, and a client that reads too slowly for a write to finish within
//! `client.slow_consumer_grace_ms` is closed with 1013 (the slow-consumer policy).

use std::time::Duration;

use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info};

use super::{Ending, Ws, requested_close};
use crate::connections::{Close, ConnShared, now_ms};
use crate::telemetry::metrics;

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Runs one write to the socket, bounded: a DELETE or shutdown interrupts it, and a client
/// that reads too slowly for it to finish within `grace` is closed with 1013. Returns how
/// the session ends, or `None` when the write went through.
pub(super) async fn bounded(
    shared: &ConnShared,
    grace: Duration,
    write: impl Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
) -> Option<Ending> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once (the socket has room): then no grace timer is armed
    // and no close wait registered — a timer per write is measurable on the hot path.
    match futures_util::FutureExt::now_or_never(write.as_mut()) {
        Some(Ok(())) => return None,
        Some(Err(error)) => return write_failed(error),
        None => {}
    }
    // The rest is the rare slow path, boxed: its waits would otherwise add ~500 bytes to
    // every idle session's future (its largest state is a pending write).
    Box::pin(slow_write(shared, grace, write)).await
}

/// The session's end when a write failed: the socket is unusable.
fn write_failed(error: tokio_tungstenite::tungstenite::Error) -> Option<Ending> {
    debug!(%error, "write failed");
    Some(Ending::Dropped(Close::abnormal(
        "Connection closed abnormally",
    )))
}

/// A write that could not complete at once: wait for it, a close request or the grace
/// period, whichever comes first.
async fn slow_write(
    shared: &ConnShared,
    grace: Duration,
    write: std::pin::Pin<
        &mut impl Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
    >,
) -> Option<Ending> {
    let close_requested = async {
        loop {
            shared.outbox.ready().await;
            if shared.close_request().is_some() || super::superseded(shared) {
                break;
            }
        }
    };
    let end = tokio::select! {
        biased;
        _ = close_requested => Some(requested_close(shared)),
        result = tokio::time::timeout(grace, write) => match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => write_failed(error),
            Err(_) => {
                info!(grace_ms = grace.as_millis() as u64, "slow consumer: closing");
                metrics::dropped("slow_consumer", 1);
                Some(Ending::ServerCloses(Close::new(1013, "Slow consumer")))
            }
        },
    };
    // The wait above may have taken a wake-up meant for a frame queued meanwhile: hand it
    // back to the session loop (a spurious wake-up costs it one empty check).
    shared.outbox.wake();
    end
}

/// Writes `first` and up to a batch of further queued frames, then flushes once. Activity
/// and the frame count are recorded before the frames leave, so whoever sees a frame also sees them; more than a
/// batch wakes the session again.
pub(super) async fn write_queued(
    ws: &mut Ws,
    shared: &ConnShared,
    first: (Message, bool),
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    shared.touch(now_ms() as u64);
    let (mut message, mut more) = first;
    let mut frames = 1;
    loop {
        // Counted before the write: with no write buffer, `feed` may put the frame on the
        // wire at once, and whoever sees it must see it counted.
        metrics::messages_out(1);
        ws.feed(message).await?;
        if !more {
            break;
        }
        if frames == WRITE_BATCH {
            shared.outbox.wake();
            break;
        }
        // Only the session pops, so a frame is there.
        let Some(next) = shared.outbox.pop() else {
            break;
        };
        (message, more) = next;
        frames += 1;
    }
    ws.flush().await
}
