//! An operation on one connection ([`Op`]), what came of it ([`Outcome`]), and [`apply`]:
//! the one function that runs an operation on the node that owns the connection, whether
//! the caller is on this node or the request arrived from another one over the backplane.
//!
//! Outcomes are typed here and on the wire; only the management API turns them into HTTP
//! statuses. Nothing here waits: [`apply`] touches local state and queues record writes.
//! A join or leave may change whether this node wants the group's broadcasts; with Redis
//! the backplane settles that right after [`apply`] (a join waits for its subscription),
//! for local callers and for other nodes' requests alike ([`Op::group_change`]).

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use super::local::Local;
use super::{DeliveryError, Description, GroupName, Records};
use crate::connections::{Close, ConnectionId};

/// An operation on one connection, run by the node that owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Queue a frame for the client (POST).
    Post(Message),
    /// Describe the connection (GET).
    Get,
    /// Ask the connection to close (DELETE).
    Delete(Close),
    /// Add the connection to a group.
    Join(GroupName),
    /// Remove the connection from a group.
    Leave(GroupName),
}

impl Op {
    /// The group whose local membership this operation changes, and whether it joins: a
    /// node's interest in the group's broadcasts may change with it.
    pub fn group_change(&self) -> Option<(&GroupName, bool)> {
        match self {
            Self::Join(group) => Some((group, true)),
            Self::Leave(group) => Some((group, false)),
            _ => None,
        }
    }
}

/// What an operation did, when it did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The frame was queued, or the close was requested.
    Done,
    /// The connection's record and `lastActiveAt` (the answer to a GET).
    Described(Box<Description>),
    /// A join or leave ran; `changed` when membership changed (and was recorded).
    Membership {
        /// Whether the connection joined a group it was not in, or left one it was in.
        changed: bool,
    },
    /// A resumable session was handed over to the asking node; `next` is the offset its
    /// next frame gets (every earlier one is in Redis).
    Moved {
        /// The next frame's offset.
        next: u64,
    },
}

impl Outcome {
    /// The description a GET asked for; an owner that answered anything else is not
    /// speaking our protocol.
    pub fn into_description(self) -> Result<Description, DeliveryError> {
        match self {
            Self::Described(description) => Ok(*description),
            _ => Err(DeliveryError::Malformed),
        }
    }
}

/// Runs `op` on `id`, which this node must own (an id of another node is gone: this node
/// holds no connection of that name, unless it took the session over: [`Local::owns`]). A join or leave that changed membership is written
/// to `records`, so every caller records it the same way.
pub fn apply(
    local: &Local,
    records: &dyn Records,
    id: &ConnectionId,
    op: Op,
) -> Result<Outcome, DeliveryError> {
    if local.in_transit(id) {
        // A resumable session moving between nodes: ask again in a moment.
        return Err(DeliveryError::Unavailable);
    }
    if !local.owns(id) {
        return Err(DeliveryError::Gone);
    }
    match op {
        Op::Post(message) => {
            local.post(id, message)?;
            Ok(Outcome::Done)
        }
        Op::Get => local
            .describe(id)
            .map(|description| Outcome::Described(Box::new(description)))
            .ok_or(DeliveryError::Gone),
        Op::Delete(close) => {
            local.close(id, close)?;
            Ok(Outcome::Done)
        }
        Op::Join(group) => {
            let changed = local.join(&group, id)?;
            if changed {
                records.joined(&group, id);
            }
            Ok(Outcome::Membership { changed })
        }
        Op::Leave(group) => {
            let changed = local.leave(&group, id)?;
            if changed {
                records.left(&group, id);
            }
            Ok(Outcome::Membership { changed })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::connections::{ConnHandle, ConnInfo, ConnShared, NodeTag};

    /// Records what it is told, as text.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Log {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl Records for Log {
        fn connected(&self, shared: &ConnShared) {
            self.0
                .lock()
                .unwrap()
                .push(format!("connected {}", shared.info.id));
        }
        fn disconnected(&self, id: &ConnectionId, groups: &[Arc<str>]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("disconnected {id} {groups:?}"));
        }
        fn joined(&self, group: &GroupName, id: &ConnectionId) {
            self.0
                .lock()
                .unwrap()
                .push(format!("joined {} {id}", group.as_str()));
        }
        fn left(&self, group: &GroupName, id: &ConnectionId) {
            self.0
                .lock()
                .unwrap()
                .push(format!("left {} {id}", group.as_str()));
        }
    }

    const NODE: NodeTag = NodeTag([1, 2, 3, 4]);

    /// A node holding one connection whose queue takes at most two frames.
    fn node() -> (Local, Arc<ConnShared>) {
        let local = Local::new(NODE);
        let id = ConnectionId::new(NODE);
        let info = ConnInfo {
            id,
            id_text: id.to_string(),
            connected_at_ms: 1_700_000_000_000,
            source_ip: "192.0.2.7".parse().unwrap(),
            user_agent: Some("test".into()),
            stage: "prod".into(),
            domain_name: "example.test".into(),
            authorizer: None,
            trace_id: crate::connections::TraceId::random(),
        };
        let shared = Arc::new(ConnShared::new(info, 2, 1 << 20));
        local.registry.insert(ConnHandle::new(shared.clone()));
        (local, shared)
    }

    fn group(name: &str) -> GroupName {
        GroupName::parse(name).unwrap()
    }

    #[test]
    fn post_queues_until_the_outbox_is_full() {
        let (local, shared) = node();
        let id = shared.info.id;
        for _ in 0..2 {
            let outcome = apply(&local, &Log::default(), &id, Op::Post(Message::text("hi")));
            assert_eq!(outcome, Ok(Outcome::Done));
        }
        let third = apply(&local, &Log::default(), &id, Op::Post(Message::text("hi")));
        assert_eq!(third, Err(DeliveryError::Full));
        assert_eq!(shared.outbox.pop(), Some((Message::text("hi"), true)));
    }

    #[test]
    fn get_describes() {
        let (local, shared) = node();
        shared.touch(1_700_000_000_500);
        let outcome = apply(&local, &Log::default(), &shared.info.id, Op::Get).unwrap();
        let (record, last_active) = outcome.into_description().unwrap();
        assert_eq!(record.connection_id, shared.info.id_text);
        assert_eq!(record.source_ip, "192.0.2.7");
        assert_eq!(record.stage, "prod");
        assert_eq!(last_active, 1_700_000_000_500);
    }

    #[test]
    fn delete_requests_a_close_and_the_connection_is_then_gone() {
        let (local, shared) = node();
        let id = shared.info.id;
        let close = Close::new(4000, "bye");
        assert_eq!(
            apply(&local, &Log::default(), &id, Op::Delete(close.clone())),
            Ok(Outcome::Done)
        );
        assert_eq!(shared.close_request(), Some(&close));
        for op in [Op::Get, Op::Post(Message::text("late")), Op::Delete(close)] {
            assert_eq!(
                apply(&local, &Log::default(), &id, op),
                Err(DeliveryError::Gone)
            );
        }
    }

    #[test]
    fn join_and_leave_report_and_record_membership_changes() {
        let (local, shared) = node();
        let id = shared.info.id;
        let log = Log::default();
        let steps = [
            (Op::Join(group("room")), true, Some("joined room")),
            (Op::Join(group("room")), false, None),
            (Op::Leave(group("room")), true, Some("left room")),
            (Op::Leave(group("room")), false, None),
            (Op::Leave(group("never")), false, None),
        ];
        for (op, changed, recorded) in steps {
            let outcome = apply(&local, &log, &id, op.clone());
            assert_eq!(outcome, Ok(Outcome::Membership { changed }), "{op:?}");
            let expected: Vec<String> = recorded.map(|r| format!("{r} {id}")).into_iter().collect();
            assert_eq!(log.take(), expected, "{op:?}");
        }
        assert!(shared.groups.lock().unwrap().is_empty());
    }

    #[test]
    fn a_closing_connection_cannot_join_and_leaves_no_member_behind() {
        let (local, shared) = node();
        let id = shared.info.id;
        let log = Log::default();
        assert!(apply(&local, &log, &id, Op::Join(group("a"))).is_ok());
        assert!(local.has_members("a"));
        // What closing a connection does, in its order: the outbox first, then its groups.
        shared.outbox.close();
        assert_eq!(
            apply(&local, &log, &id, Op::Join(group("b"))),
            Err(DeliveryError::Gone)
        );
        assert_eq!(local.leave_all(&shared), vec![Arc::<str>::from("a")]);
        assert!(!local.has_members("a") && !local.has_members("b"));
    }

    #[test]
    fn a_session_in_transit_is_unavailable_until_its_move_is_over() {
        let (local, shared) = node();
        let id = shared.info.id;
        assert!(local.begin_transit(id));
        for op in [Op::Post(Message::text("x")), Op::Get, Op::Join(group("g"))] {
            assert_eq!(
                apply(&local, &Log::default(), &id, op),
                Err(DeliveryError::Unavailable)
            );
        }
        assert!(shared.outbox.pop().is_none());
        local.end_transit(id);
        assert!(apply(&local, &Log::default(), &id, Op::Get).is_ok());
    }

    #[test]
    fn unknown_and_foreign_ids_are_gone() {
        let (local, _) = node();
        let log = Log::default();
        let unknown = ConnectionId::new(NODE);
        let foreign = ConnectionId::new(NodeTag([9, 9, 9, 9]));
        for id in [unknown, foreign] {
            let ops = [
                Op::Post(Message::text("x")),
                Op::Get,
                Op::Delete(Close::normal()),
                Op::Join(group("room")),
                Op::Leave(group("room")),
            ];
            for op in ops {
                assert_eq!(
                    apply(&local, &log, &id, op.clone()),
                    Err(DeliveryError::Gone),
                    "{op:?}"
                );
            }
        }
        assert!(log.take().is_empty());
    }

    #[test]
    fn only_a_description_answers_a_get() {
        assert_eq!(
            Outcome::Done.into_description(),
            Err(DeliveryError::Malformed)
        );
    }
}
