//! The fragments-per-message cap: an IO adapter under the session's WebSocket that reads
//! the frame headers of the inbound byte stream and stops a message with too many frames.
//!
//! tungstenite caps a frame's and a message's size but not how many frames a message may
//! have: a client could send a message as hundreds of thousands of empty continuation
//! frames. [`FragmentGuard`] wraps the client socket and, as bytes pass to tungstenite,
//! follows the frame headers in them (FIN, opcode, the 7/16/64-bit length, the mask; the
//! payload is skipped without being looked at). It keeps a few bytes of state per
//! connection, allocates nothing, and does no per-byte work beyond header parsing.
//!
//! A message's frames are its first data frame and its continuations; control frames
//! (ping, pong, close) between them neither count nor end the message. When a message
//! reaches a frame over the cap, the read is cut just before that frame's header (so every
//! earlier frame still reaches tungstenite and is handled in order), and the next read
//! fails with an [`io::Error`] carrying [`TooManyFragments`], which `edge::close` turns
//! into close 1009. After that one error the guard passes bytes through untouched, so the
//! close handshake can read and discard the rest.
//!
//! Everything else about framing (masking, reserved bits and opcodes, sizes) stays
//! tungstenite's to check: the guard only counts, and a stream it cannot make sense of is
//! one tungstenite refuses first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error a read returns when a message has more frames than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message has more than {max} frames")]
pub struct TooManyFragments {
    /// The cap that was crossed (`client.max_fragments_per_message`).
    pub max: u32,
}

impl TooManyFragments {
    /// Whether `error` is this one (inside an [`io::Error`]).
    pub fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<TooManyFragments>())
    }
}

/// Where the parser is in the inbound frame stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// At the first byte of a frame (FIN, RSV, opcode).
    Start,
    /// At the second byte (MASK, 7-bit length).
    Length,
    /// Inside a 16- or 64-bit extended length: `left` bytes to go, `len` so far.
    ExtendedLength { left: u8, len: u64, masked: bool },
    /// Inside the masking key: `left` bytes to go, then `len` bytes of payload.
    Mask { left: u8, len: u64 },
    /// Inside the payload: `left` bytes to skip.
    Payload { left: u64 },
}

/// Whether the cap was crossed, and whether the read error was given yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tripped {
    /// Counting.
    No,
    /// Crossed; the next read returns the error.
    Pending,
    /// The error was returned; bytes pass through uncounted.
    Reported,
}

/// Counts the frames of each message in an inbound WebSocket byte stream (client to
/// server), without buffering: bytes are fed as they arrive, split anywhere.
#[derive(Debug, Clone)]
pub struct FragmentCounter {
    /// Most frames one message may have.
    max: u32,
    /// Frames of the current message so far (0 between messages).
    frames: u32,
    /// Position in the frame stream.
    header: Header,
    /// Whether the cap was crossed.
    tripped: Tripped,
}

impl FragmentCounter {
    /// A counter allowing `max` frames per message (at least 1).
    pub fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            frames: 0,
            header: Header::Start,
            tripped: Tripped::No,
        }
    }

    /// Feeds the next inbound `bytes`; returns how many of them may pass: all, or the
    /// bytes before the header of the first frame over the cap (then the counter is
    /// tripped, and ignores whatever it is fed after).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if self.tripped != Tripped::No {
            return bytes.len();
        }
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match self.header {
                Header::Start => {
                    if !self.frame_starts(rest[0]) {
                        self.tripped = Tripped::Pending;
                        return at;
                    }
                    self.header = Header::Length;
                    at += 1;
                }
                Header::Length => {
                    let masked = rest[0] & 0x80 != 0;
                    self.header = match rest[0] & 0x7f {
                        126 => Header::ExtendedLength {
                            left: 2,
                            len: 0,
                            masked,
                        },
                        127 => Header::ExtendedLength {
                            left: 8,
                            len: 0,
                            masked,
                        },
                        len => after_length(u64::from(len), masked),
                    };
                    at += 1;
                }
                Header::ExtendedLength { left, len, masked } => {
                    let len = (len << 8) | u64::from(rest[0]);
                    self.header = if left == 1 {
                        after_length(len, masked)
                    } else {
                        Header::ExtendedLength {
                            left: left - 1,
                            len,
                            masked,
                        }
                    };
                    at += 1;
                }
                Header::Mask { left, len } => {
                    let take = rest.len().min(usize::from(left));
                    let left = left - take as u8;
                    self.header = match (left, len) {
                        (0, 0) => Header::Start,
                        (0, len) => Header::Payload { left: len },
                        (left, len) => Header::Mask { left, len },
                    };
                    at += take;
                }
                Header::Payload { left } => {
                    let take = (rest.len() as u64).min(left);
                    let left = left - take;
                    self.header = if left == 0 {
                        Header::Start
                    } else {
                        Header::Payload { left }
                    };
                    at += take as usize;
                }
            }
        }
        bytes.len()
    }

    /// Counts a frame from its first byte; `false` if it is one frame too many.
    fn frame_starts(&mut self, first: u8) -> bool {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        if opcode & 0x08 != 0 {
            // A control frame: not part of the message around it.
            return true;
        }
        self.frames = if opcode == 0 {
            self.frames.saturating_add(1)
        } else {
            1
        };
        if self.frames > self.max {
            return false;
        }
        if fin {
            self.frames = 0;
        }
        true
    }

    /// Whether the cap was crossed (the error may still be due).
    pub fn is_tripped(&self) -> bool {
        self.tripped != Tripped::No
    }

    /// The error to return now, once, after the cap was crossed.
    fn take_error(&mut self) -> Option<io::Error> {
        (self.tripped == Tripped::Pending).then(|| {
            self.tripped = Tripped::Reported;
            io::Error::other(TooManyFragments { max: self.max })
        })
    }
}

/// The parser state once a frame's length is known.
fn after_length(len: u64, masked: bool) -> Header {
    match (masked, len) {
        (true, len) => Header::Mask { left: 4, len },
        (false, 0) => Header::Start,
        (false, len) => Header::Payload { left: len },
    }
}

/// A client socket whose inbound frames are counted per message (see the module docs).
/// Writes pass through untouched.
#[derive(Debug)]
pub struct FragmentGuard<S> {
    /// The socket.
    inner: S,
    /// The frame counter of the inbound stream.
    counter: FragmentCounter,
}

impl<S> FragmentGuard<S> {
    /// Wraps `inner`, allowing `max` frames per message.
    pub fn new(inner: S, max: u32) -> Self {
        Self {
            inner,
            counter: FragmentCounter::new(max),
        }
    }

    /// The socket itself, to read past the WebSocket protocol once it is over (the close
    /// handshake discards what the client still sends).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Counts bytes that were read from the socket before it was wrapped (what the HTTP
    /// handshake read past its end); returns how many of them may be handed to
    /// tungstenite, as [`FragmentCounter::feed`].
    pub fn feed_read_ahead(&mut self, bytes: &[u8]) -> usize {
        self.counter.feed(bytes)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FragmentGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(error) = this.counter.take_error() {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let read = buf.filled().len() - before;
        let pass = this.counter.feed(&buf.filled()[before..]);
        if pass < read {
            if pass == 0 {
                // Nothing to hand over first: fail now (an empty read would mean EOF).
                return Poll::Ready(Err(this.counter.take_error().expect("just tripped")));
            }
            // Hand over the frames before the one over the cap; the error comes next.
            buf.set_filled(before + pass);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FragmentGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: u8 = 0x1;
    const CONT: u8 = 0x0;
    const PING: u8 = 0x9;

    /// A client frame header (masked, as a client's must be) and payload.
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut out = vec![((fin as u8) << 7) | opcode];
        match len {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        // Payload bytes that look like frame headers, to catch a parser that reads them.
        out.extend(std::iter::repeat_n(0x81, len));
        out
    }

    /// A message of `n` frames whose payloads have `len` bytes each.
    fn message(n: usize, len: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| frame(i == n - 1, if i == 0 { TEXT } else { CONT }, len))
            .collect()
    }

    /// Feeds `bytes` in pieces of `step` bytes; returns the bytes passed in all.
    fn feed_in_steps(counter: &mut FragmentCounter, bytes: &[u8], step: usize) -> usize {
        let mut passed = 0;
        for chunk in bytes.chunks(step) {
            passed += counter.feed(chunk);
            if counter.is_tripped() {
                break;
            }
        }
        passed
    }

    #[test]
    fn counts_frames_per_message_however_the_bytes_are_split() {
        let len = |bytes: &[Vec<u8>]| bytes.iter().map(Vec::len).sum::<usize>();
        let empty_unmasked = vec![0x01, 0x00, 0x00, 0x00, 0x80, 0x00];
        let whole = [frame(true, TEXT, 5), frame(true, TEXT, 0)].concat();
        // (what, bytes, cap, how many bytes pass)
        let cases: Vec<(&str, Vec<u8>, u32, usize)> = vec![
            (
                "a message at the cap",
                message(4, 3),
                4,
                len(&[message(4, 3)]),
            ),
            ("one frame over", message(5, 3), 4, len(&[message(4, 3)])),
            (
                "each message is counted afresh",
                [message(4, 3), message(5, 3)].concat(),
                4,
                len(&[message(4, 3), message(4, 3)]),
            ),
            (
                "16-bit lengths",
                message(3, 300),
                3,
                len(&[message(3, 300)]),
            ),
            (
                "16-bit lengths, over",
                message(3, 300),
                2,
                len(&[message(2, 300)]),
            ),
            (
                "64-bit lengths",
                message(2, 70_000),
                2,
                len(&[message(2, 70_000)]),
            ),
            (
                "64-bit lengths, over",
                message(2, 70_000),
                1,
                len(&[frame(false, TEXT, 70_000)]),
            ),
            ("empty unmasked frames, over", empty_unmasked, 2, 4),
            ("unfragmented messages", whole.clone(), 1, whole.len()),
        ];
        for (what, bytes, cap, want) in cases {
            for step in [1, 2, 3, 7, 64, bytes.len()] {
                let mut counter = FragmentCounter::new(cap);
                let passed = feed_in_steps(&mut counter, &bytes, step);
                assert_eq!(passed, want, "{what}, in pieces of {step}");
                assert_eq!(counter.is_tripped(), want < bytes.len(), "{what}");
            }
        }
    }

    #[test]
    fn control_frames_inside_a_message_neither_count_nor_reset() {
        // 3 data frames with pings between them: allowed at a cap of 3 ...
        let mut bytes = frame(false, TEXT, 2);
        bytes.extend(frame(true, PING, 4));
        bytes.extend(frame(false, CONT, 2));
        bytes.extend(frame(true, PING, 0));
        bytes.extend(frame(true, PING, 0));
        bytes.extend(frame(true, CONT, 2));
        let mut counter = FragmentCounter::new(3);
        assert_eq!(counter.feed(&bytes), bytes.len());
        // ... and a ping does not start the count again: at a cap of 2 the third data
        // frame is refused though a ping came just before it.
        let mut counter = FragmentCounter::new(2);
        let cut = bytes.len() - frame(true, CONT, 2).len();
        assert_eq!(counter.feed(&bytes), cut);
    }

    #[test]
    fn after_tripping_everything_passes() {
        let mut counter = FragmentCounter::new(1);
        assert_eq!(counter.feed(&message(2, 1)), frame(false, TEXT, 1).len());
        assert!(
            counter
                .take_error()
                .is_some_and(|e| TooManyFragments::is(&e))
        );
        assert!(counter.take_error().is_none(), "the error is given once");
        assert_eq!(counter.feed(&message(9, 1)), message(9, 1).len());
    }
}

/// The guard under a real tungstenite server: the read error, and the close after it.
#[cfg(test)]
mod with_tungstenite {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    use super::*;

    /// A client text frame (first or continuation) with a zero mask and payload `a`.
    fn frame(fin: bool, first: bool) -> [u8; 7] {
        let opcode = if first { 0x1 } else { 0x0 };
        [((fin as u8) << 7) | opcode, 0x81, 0, 0, 0, 0, b'a']
    }

    fn message(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| frame(i == n - 1, i == 0)).collect()
    }

    #[tokio::test]
    async fn the_gateway_can_still_send_its_close_after_the_read_error() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut ws =
            WebSocketStream::from_raw_socket(FragmentGuard::new(server, 3), Role::Server, None)
                .await;
        // A message at the cap, then one over it, in one write: the first is delivered.
        client
            .write_all(&[message(3), message(4)].concat())
            .await
            .unwrap();
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first, Message::text("aaa"));
        let error = ws.next().await.unwrap().unwrap_err();
        assert!(
            matches!(&error, WsError::Io(e) if TooManyFragments::is(e)),
            "{error:?}"
        );
        assert_eq!(
            crate::edge::close::for_error(&error).map(|c| c.code),
            Ok(1009)
        );
        let close = CloseFrame {
            code: CloseCode::from(1009),
            reason: "Message too big".into(),
        };
        ws.send(Message::Close(Some(close))).await.unwrap();
        let mut got = [0u8; 19];
        client.read_exact(&mut got).await.unwrap();
        let mut want = vec![0x88, 17, 0x03, 0xf1];
        want.extend_from_slice(b"Message too big");
        assert_eq!(got.to_vec(), want);
        // What the client sends on passes through (the close handshake reads it raw).
        client.write_all(&message(9)).await.unwrap();
        let mut rest = [0u8; 63];
        ws.get_mut().read_exact(&mut rest).await.unwrap();
    }
}
