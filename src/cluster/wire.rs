//! What nodes say to each other over Redis pub/sub, one message per publish:
//!
//! - requests to the node that owns a connection and its replies ([`Wire`]): JSON. A
//!   request carries an [`ops::Op`] in its wire form ([`WireOp`]); a reply carries the
//!   typed result of [`ops::apply`] on the owner, never an HTTP status.
//! - broadcasts, to a group or to every connection ([`Envelope`]): a compact binary
//!   envelope around the raw payload, encoded once by the publisher and decoded once per
//!   receiving node into a [`Message`] that shares the received bytes.
//!
//! The two never collide: JSON text starts with `{`, an envelope with a byte above 0x7F.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use super::ops::{self, Outcome};
use super::{DeliveryError, GroupName};
use crate::connections::Close;

/// A frame's payload on the wire: text as is, binary as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Whether `data` is the text of a text frame (else base64 of a binary frame).
    pub text: bool,
    /// The payload.
    pub data: String,
}

impl Payload {
    /// The wire form of a frame (`None` for control frames).
    pub fn of(message: &Message) -> Option<Self> {
        match message {
            Message::Text(t) => Some(Self {
                text: true,
                data: t.to_string(),
            }),
            Message::Binary(b) => Some(Self {
                text: false,
                data: STANDARD.encode(b),
            }),
            _ => None,
        }
    }

    /// The frame again (`None` for bad base64).
    pub fn into_message(self) -> Option<Message> {
        if self.text {
            Some(Message::text(self.data))
        } else {
            STANDARD
                .decode(self.data)
                .ok()
                .map(|b| Message::Binary(Bytes::from(b)))
        }
    }
}

/// An operation on one connection ([`ops::Op`]) as it travels to the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WireOp {
    /// Queue a frame.
    Post {
        /// The frame.
        payload: Payload,
    },
    /// Describe the connection (GET).
    Get,
    /// Close it.
    Delete {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Add it to a group.
    Join {
        /// The group.
        group: String,
    },
    /// Remove it from a group.
    Leave {
        /// The group.
        group: String,
    },
}

impl WireOp {
    /// The wire form of `op` (`None` for a control frame, which no node posts).
    pub fn of(op: ops::Op) -> Option<Self> {
        Some(match op {
            ops::Op::Post(message) => Self::Post {
                payload: Payload::of(&message)?,
            },
            ops::Op::Get => Self::Get,
            ops::Op::Delete(Close { code, reason }) => Self::Delete { code, reason },
            ops::Op::Join(group) => Self::Join {
                group: group.as_str().to_owned(),
            },
            ops::Op::Leave(group) => Self::Leave {
                group: group.as_str().to_owned(),
            },
        })
    }

    /// The operation again; [`DeliveryError::Malformed`] for bad base64 or an invalid
    /// group name (no well-behaved node sends either).
    pub fn into_op(self) -> Result<ops::Op, DeliveryError> {
        let group = |name: &str| GroupName::parse(name).ok_or(DeliveryError::Malformed);
        Ok(match self {
            Self::Post { payload } => {
                ops::Op::Post(payload.into_message().ok_or(DeliveryError::Malformed)?)
            }
            Self::Get => ops::Op::Get,
            Self::Delete { code, reason } => ops::Op::Delete(Close { code, reason }),
            Self::Join { group: name } => ops::Op::Join(group(&name)?),
            Self::Leave { group: name } => ops::Op::Leave(group(&name)?),
        })
    }
}

/// One pub/sub message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    /// To the owner of `conn`, on its inbox channel.
    Request {
        /// The asking node's tag (where the reply goes).
        from: String,
        /// Request number, unique on the asking node.
        req: u64,
        /// The connection id.
        conn: String,
        /// What to do.
        op: WireOp,
    },
    /// The owner's answer, on the asking node's inbox channel.
    Reply {
        /// The request it answers.
        req: u64,
        /// What [`ops::apply`] said on the owner.
        result: Result<Outcome, DeliveryError>,
    },
    /// To the node holding resumable session `conn`, on its inbox channel: hand it over to
    /// the asking node, whose client resumed it there. Answered by a [`Wire::Reply`]
    /// ([`Outcome::Moved`] when done).
    HandOver {
        /// The asking node's tag (where the session goes, and the reply).
        from: String,
        /// Request number, unique on the asking node.
        req: u64,
        /// The session's connection id.
        conn: String,
        /// The session's secret, as the resuming client presented it.
        secret: String,
        /// This move's name: the asker gives up on it by writing it into the session's
        /// hash, and the holder switches the owner only if it is not there.
        move_id: String,
        /// The groups the asking node listens to for the session: the session must be in
        /// no other.
        groups: Vec<String>,
    },
    /// On a group's channel (or the broadcast channel when `group` is `None`), published
    /// by the node handing session `conn` over: broadcasts before it are the old node's to
    /// deliver to the session, broadcasts after it the new node's. Both read the channel in
    /// the one order Redis gives it, so nothing is delivered twice or missed.
    Cut {
        /// The session's connection id.
        conn: String,
        /// The group whose channel this is on (`None`: the broadcast channel).
        group: Option<String>,
    },
}

/// A broadcast on the backplane, as published: the binary envelope
///
/// ```text
/// byte 0   tag: 0xA1 = to every connection, 0xA2 = to a group
/// byte 1   flags: bit 0 set = a text frame (else binary); other bits 0
/// [group only] byte 2 = n, the group name's length (1–128), then its n bytes
/// rest     the frame's payload, as is (no base64, no escaping)
/// ```
///
/// The overhead is 2 bytes, plus 1 + the name's length for a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The group, or every connection when `None`.
    pub group: Option<GroupName>,
    /// The frame (text or binary).
    pub message: Message,
}

/// Tag of a broadcast to every connection.
const TAG_ALL: u8 = 0xA1;
/// Tag of a broadcast to a group.
const TAG_GROUP: u8 = 0xA2;
/// Flag: the payload is a text frame's.
const FLAG_TEXT: u8 = 0x01;

impl Envelope {
    /// Encodes a broadcast of `message` to `group` (or everyone): one allocation, the
    /// payload copied once. `None` for a control frame, which nobody broadcasts.
    pub fn encode(group: Option<&GroupName>, message: &Message) -> Option<Vec<u8>> {
        let (flags, payload): (u8, &[u8]) = match message {
            Message::Text(t) => (FLAG_TEXT, t.as_str().as_bytes()),
            Message::Binary(b) => (0, b),
            _ => return None,
        };
        let name = group.map_or(&[][..], |g| g.as_str().as_bytes());
        let mut out = Vec::with_capacity(3 + name.len() + payload.len());
        match group {
            None => out.extend_from_slice(&[TAG_ALL, flags]),
            Some(_) => {
                // A valid group name is 1–128 bytes: its length fits one byte.
                out.extend_from_slice(&[TAG_GROUP, flags, name.len() as u8]);
                out.extend_from_slice(name);
            }
        }
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Decodes an envelope; the message shares `bytes` (no copy of the payload). `None`
    /// for anything malformed: an unknown tag or flag, a bad group name, or a text
    /// payload that is not UTF-8.
    pub fn decode(bytes: Bytes) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        if flags & !FLAG_TEXT != 0 {
            return None;
        }
        let (group, start) = match tag {
            TAG_ALL => (None, 2),
            TAG_GROUP => {
                let (&len, rest) = rest.split_first()?;
                let name = rest.get(..usize::from(len))?;
                let group = GroupName::parse(std::str::from_utf8(name).ok()?)?;
                (Some(group), 3 + usize::from(len))
            }
            _ => return None,
        };
        let payload = bytes.slice(start..);
        let message = if flags & FLAG_TEXT != 0 {
            Message::Text(payload.try_into().ok()?)
        } else {
            Message::Binary(payload)
        };
        Some(Self { group, message })
    }

    /// Whether `bytes` look like an envelope rather than JSON (by the first byte).
    pub fn is_envelope(bytes: &[u8]) -> bool {
        matches!(bytes.first(), Some(&TAG_ALL | &TAG_GROUP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ConnectionRecord;

    #[test]
    fn round_trips() {
        let record = ConnectionRecord {
            connection_id: "AAAAAAAAAAAAAAAA".into(),
            connected_at: 1,
            source_ip: "192.0.2.1".into(),
            user_agent: None,
            stage: "prod".into(),
            domain_name: "h".into(),
            authorizer: None,
            trace_id: None,
            status: None,
        };
        let mut msgs = vec![Wire::Request {
            from: "0a0b0c0d".into(),
            req: 7,
            conn: "AAAAAAAAAAAAAAAA".into(),
            op: WireOp::Post {
                payload: Payload::of(&Message::Binary(Bytes::from_static(&[0, 255]))).unwrap(),
            },
        }];
        let results = [
            Ok(Outcome::Done),
            Ok(Outcome::Membership { changed: true }),
            Ok(Outcome::Described(Box::new((record, 42)))),
            Ok(Outcome::Moved { next: 9 }),
            Err(DeliveryError::Gone),
            Err(DeliveryError::Full),
            Err(DeliveryError::Malformed),
        ];
        msgs.push(Wire::HandOver {
            from: "0a0b0c0d".into(),
            req: 8,
            conn: "AAAAAAAAAAAAAAAA".into(),
            secret: "s".into(),
            move_id: "m".into(),
            groups: vec!["room".into()],
        });
        msgs.push(Wire::Cut {
            conn: "AAAAAAAAAAAAAAAA".into(),
            group: None,
        });
        msgs.extend(
            results
                .into_iter()
                .map(|result| Wire::Reply { req: 7, result }),
        );
        for m in msgs {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), m, "{json}");
        }
        let p = Payload::of(&Message::Binary(Bytes::from_static(&[1, 2]))).unwrap();
        assert_eq!(
            p.into_message(),
            Some(Message::Binary(Bytes::from_static(&[1, 2])))
        );
    }

    #[test]
    fn envelopes_round_trip_with_the_payload_as_is() {
        let room = GroupName::parse("room").unwrap();
        let long = GroupName::parse(&"g".repeat(128)).unwrap();
        let cases = [
            (None, Message::text("hello")),
            (None, Message::text("")),
            (None, Message::Binary(Bytes::from_static(&[0, 255, b'{']))),
            (
                Some(room.clone()),
                Message::text("h\u{e9}llo {\"json\": 1}"),
            ),
            (Some(room.clone()), Message::Binary(Bytes::new())),
            (
                Some(long.clone()),
                Message::Binary(Bytes::from(vec![7u8; 70_000])),
            ),
        ];
        for (group, message) in cases {
            let bytes = Envelope::encode(group.as_ref(), &message).unwrap();
            assert!(Envelope::is_envelope(&bytes));
            let overhead = 2 + group.as_ref().map_or(0, |g| 1 + g.as_str().len());
            assert_eq!(bytes.len(), overhead + message.len(), "{group:?}");
            // The payload is carried verbatim at the end.
            let payload: &[u8] = match &message {
                Message::Text(t) => t.as_str().as_bytes(),
                Message::Binary(b) => b,
                _ => unreachable!(),
            };
            assert!(bytes.ends_with(payload));
            let back = Envelope::decode(Bytes::from(bytes)).unwrap();
            assert_eq!(back, Envelope { group, message });
        }
        // The exact layout.
        assert_eq!(
            Envelope::encode(Some(&room), &Message::text("hi")).unwrap(),
            b"\xA2\x01\x04roomhi"
        );
        assert_eq!(
            Envelope::encode(None, &Message::Binary(Bytes::from_static(&[9]))).unwrap(),
            b"\xA1\x00\x09"
        );
        assert_eq!(Envelope::encode(None, &Message::Ping(Bytes::new())), None);
    }

    #[test]
    fn the_decoded_message_shares_the_received_bytes() {
        let bytes = Bytes::from(Envelope::encode(None, &Message::binary(vec![1u8; 64])).unwrap());
        let Envelope { message, .. } = Envelope::decode(bytes.clone()).unwrap();
        let Message::Binary(payload) = message else {
            panic!("binary expected")
        };
        assert_eq!(payload.as_ptr(), bytes[2..].as_ptr());
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let bad: [&[u8]; 10] = [
            b"",
            b"\xA1",
            b"\xA2\x01",
            b"\xA2\x01\x05room",  // the name is shorter than its length
            b"\xA2\x01\x00hi",    // empty group name
            b"\xA2\x01\x03a bhi", // invalid group name
            b"\xA1\x02hi",        // unknown flag
            b"\xA1\x01\xff\xfe",  // text that is not UTF-8
            b"\xA3\x01hi",        // unknown tag
            br#"{"t":"reply"}"#,  // JSON is not an envelope
        ];
        for bytes in bad {
            assert_eq!(
                Envelope::decode(Bytes::from_static(bytes)),
                None,
                "{bytes:?}"
            );
        }
        assert!(!Envelope::is_envelope(br#"{"t":"reply"}"#));
        assert!(!Envelope::is_envelope(b""));
    }

    #[test]
    fn a_reply_is_typed_not_a_status() {
        let reply = Wire::Reply {
            req: 3,
            result: Err(DeliveryError::Full),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(json, r#"{"t":"reply","req":3,"result":{"Err":"full"}}"#);
        let done = r#"{"t":"reply","req":3,"result":{"Ok":{"membership":{"changed":false}}}}"#;
        assert_eq!(
            serde_json::from_str::<Wire>(done).unwrap(),
            Wire::Reply {
                req: 3,
                result: Ok(Outcome::Membership { changed: false }),
            }
        );
    }

    #[test]
    fn ops_survive_the_wire_and_bad_ones_are_malformed() {
        let ops = [
            ops::Op::Post(Message::text("hi")),
            ops::Op::Post(Message::Binary(Bytes::from_static(&[0, 1, 255]))),
            ops::Op::Get,
            ops::Op::Delete(Close::new(4001, "bye")),
            ops::Op::Join(GroupName::parse("room").unwrap()),
            ops::Op::Leave(GroupName::parse("room").unwrap()),
        ];
        for op in ops {
            let wire = WireOp::of(op.clone()).unwrap();
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireOp = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_op(), Ok(op), "{json}");
        }
        assert_eq!(WireOp::of(ops::Op::Post(Message::Ping(Bytes::new()))), None);
        let bad = [
            WireOp::Post {
                payload: Payload {
                    text: false,
                    data: "not base64!".into(),
                },
            },
            WireOp::Join {
                group: "a b".into(),
            },
            WireOp::Leave { group: "".into() },
        ];
        for wire in bad {
            assert_eq!(
                wire.clone().into_op(),
                Err(DeliveryError::Malformed),
                "{wire:?}"
            );
        }
    }
}
