//! What nodes say to each other over Redis pub/sub: requests to the node that owns a
//! connection, its replies, and broadcasts. JSON, one message per publish.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

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

/// An operation on one connection, run by the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
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
        op: Op,
    },
    /// The owner's answer, on the asking node's inbox channel.
    Reply {
        /// The request it answers.
        req: u64,
        /// HTTP-like status: 200/204 done, 410 gone, 429 queue full, 400 bad request.
        status: u16,
        /// For GET: the description JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
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

    #[test]
    fn round_trips() {
        let msgs = [
            Wire::Request {
                from: "0a0b0c0d".into(),
                req: 7,
                conn: "AAAAAAAAAAAAAAAA".into(),
                op: Op::Post {
                    payload: Payload::of(&Message::Binary(Bytes::from_static(&[0, 255]))).unwrap(),
                },
            },
            Wire::Reply {
                req: 7,
                status: 410,
                body: None,
            },
            Wire::Broadcast {
                from: "x".into(),
                group: Some("room".into()),
                payload: Payload::of(&Message::text("hi")).unwrap(),
            },
        ];
        for m in msgs {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), m);
        }
        let p = Payload::of(&Message::Binary(Bytes::from_static(&[1, 2]))).unwrap();
        assert_eq!(
            p.into_message(),
            Some(Message::Binary(Bytes::from_static(&[1, 2])))
        );
    }
}
