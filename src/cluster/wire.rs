//! What nodes say to each other over Redis pub/sub: requests to the node that owns a
//! connection, its replies, and broadcasts. JSON, one message per publish.
//!
//! A request carries an [`ops::Op`] in its wire form ([`WireOp`]); a reply carries the
//! typed result of [`ops::apply`] on the owner, never an HTTP status.

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
    /// To every node, on the broadcast channel.
    Broadcast {
        /// The publishing node (which already delivered to its own members).
        from: String,
        /// The group, or every connection when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// The frame.
        payload: Payload,
    },
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
        };
        let mut msgs = vec![
            Wire::Request {
                from: "0a0b0c0d".into(),
                req: 7,
                conn: "AAAAAAAAAAAAAAAA".into(),
                op: WireOp::Post {
                    payload: Payload::of(&Message::Binary(Bytes::from_static(&[0, 255]))).unwrap(),
                },
            },
            Wire::Broadcast {
                from: "x".into(),
                group: Some("room".into()),
                payload: Payload::of(&Message::text("hi")).unwrap(),
            },
        ];
        let results = [
            Ok(Outcome::Done),
            Ok(Outcome::Membership { changed: true }),
            Ok(Outcome::Described(Box::new((record, 42)))),
            Err(DeliveryError::Gone),
            Err(DeliveryError::Full),
            Err(DeliveryError::Malformed),
        ];
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
