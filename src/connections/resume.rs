//! A resumable session's state (subprotocol `switchboard.resume.v1`): its secret token,
//! the offsets it gives the frames sent to the client, and the bounded history those
//! frames wait in until the client acknowledges them — which is also where messages wait
//! while the session is suspended (its socket dropped, its connection kept).
//!
//! The history is the connection's one source of frames: a frame is numbered and stored
//! here, and, while a socket is attached, also queued in the connection's [`Outbox`] under
//! the same lock, so a resume's replay (everything after the client's offset) and the live
//! queue never overlap and never leave a gap. Frames are kept in their wire form (wrapped
//! once, shared by the history and the queue).
//!
//! Bounds: at most `max_messages` frames and `max_bytes` payload bytes per session. While
//! a socket is attached the oldest frames are trimmed past either bound (a resume from
//! before them gets "start fresh"); while suspended a frame that would cross a bound is
//! refused ([`SendError::Full`], a 429), so nothing is lost silently.
//!
//! Wire forms (docs/resume.md): a text payload goes out as the text frame
//! `{"$sb":"m","o":<offset>,"d":<payload as a JSON string>}`; a binary payload as a binary
//! frame of the offset (8 bytes, big-endian) followed by the payload's bytes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use tokio_tungstenite::tungstenite::Message;

use super::{ConnectionId, Outbox, SendError};

/// The WebSocket subprotocol a client offers to get a resumable session.
pub const SUBPROTOCOL: &str = "switchboard.resume.v1";

/// The prefix of every control frame, in both directions (`{"$sb":"welcome",…}`,
/// `{"$sb":"ack",…}`). A client frame starting with it is never routed.
pub const CONTROL_PREFIX: &str = "{\"$sb\":";

/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 18;

/// Why a session cannot be resumed (the `reason` of a "start fresh" welcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such session here: never was, its window passed, or it was closed.
    Unknown,
    /// Frames after the client's offset were trimmed from the history.
    Trimmed,
    /// The client claims an offset the session never sent.
    BadOffset,
    /// The token does not parse.
    BadToken,
    /// The session's node may still be alive (cluster mode): the client should try again
    /// shortly (the handshake answers 409, not a fresh start).
    Busy,
}

impl Refusal {
    /// The reason's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_session",
            Self::Trimmed => "history_trimmed",
            Self::BadOffset => "bad_offset",
            Self::BadToken => "bad_token",
            Self::Busy => "busy",
        }
    }
}

/// A resume token as the client presents it: `<connection id>.<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The session's connection id (which also names the node that owns it).
    pub id: ConnectionId,
    /// The secret, base64url.
    pub secret: String,
}

impl Token {
    /// Parses `<16-char id>.<secret>`; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, secret) = text.split_once('.')?;
        let id = ConnectionId::parse(id)?;
        let ok = secret.len() == SECRET_BYTES * 4 / 3
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self {
            id,
            secret: secret.to_owned(),
        })
    }
}

/// Where a resumable session's frames are also kept, so that another node can resume it
/// when this one dies (cluster mode: Redis Streams, `cluster::redis::sessions`). Called
/// under the history's lock, so it only queues.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// Frame `offset` (in its wire form) was kept.
    fn kept(&self, id: &ConnectionId, offset: u64, frame: &Message);
    /// The client processed every frame up to `offset`.
    fn acked(&self, id: &ConnectionId, offset: u64);
    /// The session joined (`true`) or left `group`.
    fn group(&self, id: &ConnectionId, group: &str, joined: bool);
    /// The session is over: what was kept for it can go.
    fn ended(&self, id: &ConnectionId);
}

/// The history and the attachment state, under one lock.
#[derive(Debug, Default)]
struct History {
    /// Frames kept, oldest first, with their offsets (consecutive).
    frames: VecDeque<(u64, Message)>,
    /// Payload bytes of `frames`.
    bytes: usize,
    /// The offset the next frame gets (offsets start at 1; 0 means "nothing yet").
    next: u64,
    /// Whether a socket is attached (frames are also queued in the outbox).
    attached: bool,
    /// Set once the session is over (closed or expired): it can no longer be resumed.
    ended: bool,
    /// How many sockets attached so far (a suspension's watcher knows its own).
    generation: u64,
    /// Set when the session ended here because it moved to another node (cluster mode):
    /// its `$disconnect` is that node's to fire.
    moved: bool,
    /// While the session is arriving from another node (cluster mode): the frames that
    /// reached it here before the offsets it continues from are known, unnumbered.
    arriving: Option<VecDeque<Message>>,
    /// Built here from another node's session and not yet confirmed as this node's
    /// (cluster mode): its window cannot end it meanwhile.
    provisional: bool,
    /// Moving to another node (cluster mode): its history is final (a frame for it now is
    /// "gone" here) and its window cannot end it until the move is decided.
    sealed: bool,
}

/// A resumable session's state, shared by its sessions (one at a time) and its senders.
#[derive(Debug)]
pub struct Resumable {
    /// The token's secret (compared in constant time).
    secret: String,
    /// The history and attachment.
    history: Mutex<History>,
    /// Set when a resume on a new socket asks the attached session to let go.
    superseded: AtomicBool,
    /// Wakes a resume waiting for the superseded session to let go.
    detached: tokio::sync::Notify,
    /// Most frames kept.
    max_messages: usize,
    /// Most payload bytes kept.
    max_bytes: usize,
    /// Where frames are also kept (cluster mode), with the session's id.
    mirror: Option<(ConnectionId, std::sync::Arc<dyn Mirror>)>,
}

impl Resumable {
    /// A new session, attached to the socket that opened it, with a fresh secret.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        let bytes: [u8; SECRET_BYTES] = rand::rng().random();
        Self {
            secret: URL_SAFE_NO_PAD.encode(bytes),
            history: Mutex::new(History {
                next: 1,
                attached: true,
                ..History::default()
            }),
            superseded: AtomicBool::new(false),
            detached: tokio::sync::Notify::new(),
            max_messages,
            max_bytes,
            mirror: None,
        }
    }

    /// A session another node kept (cluster mode), taken over here: its secret, the
    /// frames kept after the client's offset (consecutive, checked by the caller), and the
    /// offset the next frame gets. It starts with no socket attached.
    pub fn adopted(
        secret: String,
        frames: Vec<(u64, Message)>,
        next: u64,
        (max_messages, max_bytes): (usize, usize),
    ) -> Self {
        let bytes = frames.iter().map(|(_, f)| f.len()).sum();
        Self {
            secret,
            history: Mutex::new(History {
                frames: frames.into(),
                bytes,
                next,
                attached: false,
                provisional: true,
                ..History::default()
            }),
            ..Self::new(max_messages, max_bytes)
        }
    }

    /// A session moving here from a node that still holds it (cluster mode): frames that
    /// reach it meanwhile wait, unnumbered, until [`Resumable::arrived`] says where its
    /// offsets continue. It starts with no socket attached.
    pub fn arriving(secret: String, (max_messages, max_bytes): (usize, usize)) -> Self {
        Self {
            secret,
            history: Mutex::new(History {
                arriving: Some(VecDeque::new()),
                provisional: true,
                ..History::default()
            }),
            ..Self::new(max_messages, max_bytes)
        }
    }

    /// The move is over: the old node kept `frames` (after the client's offset,
    /// consecutive) and the next frame gets `next`. Frames that arrived meanwhile are
    /// numbered from there, in the order they came.
    pub fn arrived(&self, frames: Vec<(u64, Message)>, next: u64) {
        let mut h = self.history();
        let waiting = h.arriving.take().unwrap_or_default();
        h.bytes = frames.iter().map(|(_, f)| f.len()).sum();
        h.frames = frames.into();
        h.next = next;
        for message in waiting {
            let offset = h.next;
            let frame = wrap(offset, &message);
            if let Some((id, mirror)) = &self.mirror {
                mirror.kept(id, offset, &frame);
            }
            h.bytes += frame.len();
            h.frames.push_back((offset, frame));
            h.next += 1;
        }
        self.trim(&mut h);
    }

    /// A session [`Resumable::adopted`] or [`Resumable::arriving`] is this node's now: its
    /// window may end it.
    pub fn confirm(&self) {
        self.history().provisional = false;
    }

    /// Seals the history of a session about to move to another node: returns the offset
    /// its next frame gets there (`None` if it ended already). Until [`Resumable::unseal`]
    /// or [`Resumable::hand_off`], a frame for it is "gone" here and its window waits.
    pub fn seal(&self) -> Option<u64> {
        let mut h = self.history();
        if h.ended {
            return None;
        }
        h.sealed = true;
        Some(h.next)
    }

    /// The move did not happen: the session takes frames here again.
    pub fn unseal(&self) {
        self.history().sealed = false;
    }

    /// Whether its window must wait (a move or an adoption is being decided).
    pub fn is_pinned(&self) -> bool {
        let h = self.history();
        h.provisional || h.sealed
    }

    /// Ends the session here because another node holds it now (cluster mode): no more
    /// frames, no resume here, and nothing forgotten in the mirror (the new node continues
    /// from it). `false` if it had ended already.
    pub fn hand_off(&self) -> bool {
        {
            let mut h = self.history();
            if h.ended {
                return false;
            }
            h.ended = true;
            h.sealed = false;
            h.provisional = false;
            h.moved = true;
            h.attached = false;
            h.frames = VecDeque::new();
            h.bytes = 0;
        }
        self.detached.notify_waiters();
        true
    }

    /// Whether the session ended here because it moved to another node.
    pub fn has_moved(&self) -> bool {
        self.history().moved
    }

    /// Keeps this session's frames in `mirror` too.
    pub fn mirrored(mut self, id: ConnectionId, mirror: std::sync::Arc<dyn Mirror>) -> Self {
        self.mirror = Some((id, mirror));
        self
    }

    /// The token's secret (for the mirror's copy).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The session joined (`true`) or left `group` (told to the mirror).
    pub fn group_changed(&self, group: &str, joined: bool) {
        if let Some((id, mirror)) = &self.mirror {
            mirror.group(id, group, joined);
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token the client presents to resume: `<id>.<secret>`.
    pub fn token(&self, id: &str) -> String {
        format!("{id}.{}", self.secret)
    }

    /// Whether `secret` is this session's (constant time).
    pub fn secret_matches(&self, secret: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.secret.as_bytes().ct_eq(secret.as_bytes()).into()
    }

    /// Numbers `message`, keeps it, and queues it in `outbox` when a socket is attached.
    pub fn push(&self, outbox: &Outbox, message: &Message) -> Result<(), SendError> {
        let mut h = self.history();
        if h.ended || h.sealed {
            return Err(SendError::Gone);
        }
        if let Some(waiting) = h.arriving.as_ref().map(VecDeque::len) {
            // Its offsets are not known yet: it waits, bounded as a suspended history.
            let len = message.len();
            if waiting >= self.max_messages || h.bytes + len > self.max_bytes {
                crate::telemetry::metrics::dropped("resume_history_full", 1);
                return Err(SendError::Full);
            }
            h.bytes += len;
            h.arriving
                .get_or_insert_default()
                .push_back(message.clone());
            return Ok(());
        }
        let offset = h.next;
        let frame = wrap(offset, message);
        let len = frame.len();
        if h.attached {
            outbox.push(frame.clone())?;
        } else if h.frames.len() >= self.max_messages || h.bytes + len > self.max_bytes {
            crate::telemetry::metrics::dropped("resume_history_full", 1);
            return Err(SendError::Full);
        }
        if let Some((id, mirror)) = &self.mirror {
            mirror.kept(id, offset, &frame);
        }
        h.frames.push_back((offset, frame));
        h.bytes += len;
        h.next += 1;
        self.trim(&mut h);
        Ok(())
    }

    /// Drops the oldest frames past either bound.
    fn trim(&self, h: &mut History) {
        while h.frames.len() > self.max_messages || h.bytes > self.max_bytes {
            let Some((_, old)) = h.frames.pop_front() else {
                break;
            };
            h.bytes -= old.len();
        }
    }

    /// The client processed every frame up to `offset`: they need not be kept.
    pub fn ack(&self, offset: u64) {
        let mut h = self.history();
        drop_through(&mut h, offset);
        if let Some((id, mirror)) = &self.mirror {
            mirror.acked(id, offset);
        }
    }

    /// Whether a resume from `offset` (the last frame the client processed) can be served
    /// now: every later frame is still kept.
    pub fn check(&self, offset: u64) -> Result<(), Refusal> {
        let h = self.history();
        check(&h, offset)
    }

    /// Attaches a new socket after `offset`: returns the frames to replay, in order; from
    /// now on new frames are also queued in `outbox` (which the caller's detach emptied).
    pub fn attach(&self, offset: u64) -> Result<Vec<Message>, Refusal> {
        let mut h = self.history();
        if h.attached {
            return Err(Refusal::Unknown);
        }
        check(&h, offset)?;
        drop_through(&mut h, offset);
        h.attached = true;
        h.generation += 1;
        self.superseded.store(false, Ordering::Release);
        Ok(h.frames.iter().map(|(_, f)| f.clone()).collect())
    }

    /// The socket is gone: frames are kept in the history only, and the outbox's queued
    /// copies are dropped (a resume replays them). Wakes a resume waiting for this.
    pub fn detach(&self, outbox: &Outbox) {
        {
            let mut h = self.history();
            h.attached = false;
            outbox.clear();
        }
        self.superseded.store(false, Ordering::Release);
        self.detached.notify_waiters();
    }

    /// Whether a socket is attached.
    pub fn is_attached(&self) -> bool {
        self.history().attached
    }

    /// Which attachment this is (it changes at every resume): a suspension's watcher ends
    /// when it changed.
    pub fn generation(&self) -> u64 {
        self.history().generation
    }

    /// Asks the attached session (if any) to let go of its socket, and waits until it has
    /// (at most `limit`). Returns whether the session is now detached.
    pub async fn take_over(&self, outbox: &Outbox, limit: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let detached = self.detached.notified();
                tokio::pin!(detached);
                detached.as_mut().enable();
                if !self.is_attached() {
                    return;
                }
                self.superseded.store(true, Ordering::Release);
                outbox.wake();
                detached.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Whether a resume elsewhere asked this session's socket to let go (an atomic load).
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Ends the session if it is still the suspension of `generation` (no socket
    /// attached since); returns whether it did. An ended session cannot be resumed.
    pub fn expire(&self, generation: u64) -> bool {
        let mut h = self.history();
        if h.attached || h.ended || h.provisional || h.sealed || h.generation != generation {
            return false;
        }
        h.ended = true;
        true
    }

    /// Ends the session (it closed): no resume, no more frames; a resume waiting for the
    /// socket to let go stops waiting.
    pub fn end(&self) {
        {
            let mut h = self.history();
            h.ended = true;
            h.attached = false;
            h.frames = VecDeque::new();
            h.bytes = 0;
        }
        if let Some((id, mirror)) = &self.mirror {
            mirror.ended(id);
        }
        self.detached.notify_waiters();
    }

    /// Frames and payload bytes kept now.
    pub fn kept(&self) -> (usize, usize) {
        let h = self.history();
        (h.frames.len(), h.bytes)
    }

    /// The offset of the last frame numbered (0: none yet).
    pub fn last_offset(&self) -> u64 {
        self.history().next - 1
    }
}

fn check(h: &History, offset: u64) -> Result<(), Refusal> {
    if h.ended {
        return Err(Refusal::Unknown);
    }
    if offset >= h.next {
        return Err(Refusal::BadOffset);
    }
    let first_kept = h.frames.front().map_or(h.next, |(o, _)| *o);
    if offset + 1 < first_kept {
        return Err(Refusal::Trimmed);
    }
    Ok(())
}

fn drop_through(h: &mut History, offset: u64) {
    while h.frames.front().is_some_and(|(o, _)| *o <= offset) {
        if let Some((_, f)) = h.frames.pop_front() {
            h.bytes -= f.len();
        }
    }
    if h.frames.is_empty() && h.frames.capacity() > 16 {
        h.frames = VecDeque::new();
    }
}

/// The wire form of a payload numbered `offset` (see the module doc).
pub fn wrap(offset: u64, message: &Message) -> Message {
    match message {
        Message::Binary(data) => {
            let mut framed = Vec::with_capacity(8 + data.len());
            framed.extend_from_slice(&offset.to_be_bytes());
            framed.extend_from_slice(data);
            Message::binary(framed)
        }
        Message::Text(text) => {
            let mut framed = String::with_capacity(text.len() + 32);
            framed.push_str("{\"$sb\":\"m\",\"o\":");
            framed.push_str(&offset.to_string());
            framed.push_str(",\"d\":");
            // Serialising a string cannot fail.
            framed.push_str(&serde_json::to_string(text.as_str()).unwrap_or_default());
            framed.push('}');
            Message::text(framed)
        }
        other => other.clone(),
    }
}

/// The first frame of a resumable connection: who it is, how to resume it, and whether
/// this connect resumed it (or why it could not: then `reason` says so and the client
/// starts fresh with the new id).
pub fn welcome(
    id: &str,
    token: &str,
    resumed: bool,
    offset: u64,
    window_secs: u64,
    reason: Option<Refusal>,
) -> Message {
    let mut value = serde_json::json!({
        "$sb": "welcome",
        "connectionId": id,
        "token": token,
        "resumed": resumed,
        "offset": offset,
        "windowSecs": window_secs,
    });
    if let Some(reason) = reason {
        value["reason"] = reason.as_str().into();
    }
    Message::text(value.to_string())
}

/// A client control frame, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `{"$sb":"ack","offset":N}`: every frame up to `N` was processed.
    Ack(u64),
    /// Another kind (ignored, for forward compatibility).
    Other,
    /// Not a JSON object with a string `$sb`.
    Invalid,
}

/// Parses a client control frame (a text frame starting with [`CONTROL_PREFIX`]).
pub fn parse_control(text: &str) -> Control {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "$sb", borrow)]
        kind: &'a str,
        offset: Option<u64>,
    }
    match serde_json::from_str::<Frame<'_>>(text) {
        Ok(Frame {
            kind: "ack",
            offset: Some(offset),
        }) => Control::Ack(offset),
        Ok(_) => Control::Other,
        Err(_) => Control::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::NodeTag;

    fn text(m: &Message) -> String {
        m.to_text().unwrap().to_owned()
    }

    #[test]
    fn text_and_binary_frames_keep_the_payload() {
        let t = wrap(7, &Message::text("he said \"hi\"\n"));
        let v: serde_json::Value = serde_json::from_str(&text(&t)).unwrap();
        assert_eq!(v["$sb"], "m");
        assert_eq!(v["o"], 7);
        assert_eq!(v["d"], "he said \"hi\"\n");
        let b = wrap(258, &Message::binary(vec![0xff, 0, 1]));
        assert_eq!(
            b.into_data().to_vec(),
            vec![0, 0, 0, 0, 0, 0, 1, 2, 0xff, 0, 1]
        );
    }

    #[test]
    fn tokens_parse_only_when_well_formed() {
        let r = Resumable::new(10, 1000);
        let id = ConnectionId::new(NodeTag([1, 2, 3, 4]));
        let token = Token::parse(&r.token(&id.to_string())).unwrap();
        assert_eq!(token.id, id);
        assert!(r.secret_matches(&token.secret));
        assert!(!r.secret_matches("x"));
        for bad in [
            "",
            "abc",
            &format!("{id}"),
            &format!("{id}.short"),
            &format!("{id}.{}", "!".repeat(24)),
        ] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn suspended_history_replays_after_the_offset_and_refuses_past_its_bound() {
        let outbox = Outbox::new(100, 1 << 20);
        let r = Resumable::new(3, 1 << 20);
        r.push(&outbox, &Message::text("1")).unwrap();
        assert_eq!(
            outbox.pop().map(|(m, _)| text(&m)).unwrap(),
            "{\"$sb\":\"m\",\"o\":1,\"d\":\"1\"}"
        );
        r.detach(&outbox);
        r.push(&outbox, &Message::text("2")).unwrap();
        r.push(&outbox, &Message::text("3")).unwrap();
        assert_eq!(r.push(&outbox, &Message::text("4")), Err(SendError::Full));
        assert!(outbox.pop().is_none(), "nothing is queued while suspended");
        assert_eq!(r.check(5), Err(Refusal::BadOffset));
        let replay = r.attach(1).unwrap();
        let offsets: Vec<String> = replay.iter().map(text).collect();
        assert_eq!(offsets.len(), 2);
        assert!(offsets[0].contains("\"o\":2") && offsets[1].contains("\"o\":3"));
        assert_eq!(r.attach(1), Err(Refusal::Unknown), "already attached");
    }

    #[test]
    fn attached_history_trims_the_oldest_and_a_resume_from_before_them_is_refused() {
        let outbox = Outbox::new(100, 1 << 20);
        let r = Resumable::new(2, 1 << 20);
        for n in 0..5 {
            r.push(&outbox, &Message::text(n.to_string())).unwrap();
        }
        assert_eq!(r.kept().0, 2);
        r.detach(&outbox);
        assert_eq!(r.check(2), Err(Refusal::Trimmed));
        assert_eq!(r.check(3), Ok(()));
        r.ack(4);
        assert_eq!(r.kept().0, 1);
        assert_eq!(r.attach(5), Ok(vec![]));
    }

    #[test]
    fn an_expired_session_cannot_be_resumed() {
        let outbox = Outbox::new(100, 1 << 20);
        let r = Resumable::new(2, 1 << 20);
        assert!(!r.expire(0), "attached sessions do not expire");
        r.detach(&outbox);
        assert!(
            !r.expire(1),
            "another suspension's watcher does not end this one"
        );
        assert!(r.expire(0));
        assert_eq!(r.check(0), Err(Refusal::Unknown));
        assert_eq!(r.push(&outbox, &Message::text("x")), Err(SendError::Gone));
    }

    #[test]
    fn an_arriving_session_numbers_what_waited_after_the_old_nodes_frames() {
        let outbox = Outbox::new(100, 1 << 20);
        let r = Resumable::arriving("s".repeat(24), (10, 1 << 20));
        r.push(&outbox, &Message::text("late 1")).unwrap();
        r.push(&outbox, &Message::text("late 2")).unwrap();
        assert_eq!(r.check(0), Err(Refusal::BadOffset), "no offsets yet");
        r.arrived(vec![(4, wrap(4, &Message::text("kept 4")))], 5);
        let replay: Vec<String> = r.attach(3).unwrap().iter().map(text).collect();
        assert_eq!(replay.len(), 3);
        for (frame, (offset, payload)) in
            replay
                .iter()
                .zip([(4, "kept 4"), (5, "late 1"), (6, "late 2")])
        {
            let v: serde_json::Value = serde_json::from_str(frame).unwrap();
            assert_eq!(
                (v["o"].as_u64(), v["d"].as_str()),
                (Some(offset), Some(payload))
            );
        }
        r.push(&outbox, &Message::text("live")).unwrap();
        assert!(text(&outbox.pop().unwrap().0).contains("\"o\":7"));
    }

    #[test]
    fn a_session_handed_off_takes_nothing_more_and_cannot_be_resumed_here() {
        let outbox = Outbox::new(100, 1 << 20);
        let r = Resumable::new(10, 1 << 20);
        r.push(&outbox, &Message::text("1")).unwrap();
        r.detach(&outbox);
        assert!(r.hand_off());
        assert!(r.has_moved());
        assert!(!r.hand_off(), "only once");
        assert_eq!(r.push(&outbox, &Message::text("2")), Err(SendError::Gone));
        assert_eq!(r.check(1), Err(Refusal::Unknown));
        assert!(!r.expire(0), "its window is not this node's any more");
    }

    #[test]
    fn a_sealed_session_takes_no_frame_and_waits_out_its_window_until_the_move_is_decided() {
        let outbox = Outbox::new(100, 1 << 20);
        let r = Resumable::new(10, 1 << 20);
        r.push(&outbox, &Message::text("1")).unwrap();
        r.detach(&outbox);
        assert_eq!(r.seal(), Some(2));
        assert!(r.is_pinned());
        assert_eq!(r.push(&outbox, &Message::text("2")), Err(SendError::Gone));
        assert!(!r.expire(0), "its window waits for the move");
        r.unseal();
        assert!(r.push(&outbox, &Message::text("2")).is_ok());
        assert!(r.expire(0));
        let adopted = Resumable::adopted("s".repeat(24), vec![], 1, (10, 1 << 20));
        assert!(!adopted.expire(0), "provisional until confirmed");
        adopted.confirm();
        assert!(adopted.expire(0));
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            parse_control("{\"$sb\":\"ack\",\"offset\":12}"),
            Control::Ack(12)
        );
        assert_eq!(parse_control("{\"$sb\":\"later\"}"), Control::Other);
        assert_eq!(parse_control("{\"$sb\":"), Control::Invalid);
    }
}
