//! Resumable sessions (`switchboard.resume.v1`, docs/resume.md) through the real binary:
//! a client whose TCP connection is cut mid-stream resumes with its id, its groups and
//! every message posted or broadcast meanwhile, exactly once and in order; `$disconnect`
//! fires once, when the window passes (never at the drop); a resume too late, or with a
//! bad token, is told to start fresh; a client without the subprotocol sees nothing new.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A gateway offering resumable sessions with a `window`, whose `$connect` and
/// `$disconnect` POST their events to `backend`, and an echo `$default`.
fn config(backend: &Backend, window_secs: u64, extra: &str) -> String {
    format!(
        r#"{base}
[resume]
enabled = true
window_secs = {window_secs}
{extra}

[routes."$connect"]
integration = "events"

[routes."$disconnect"]
integration = "events"

[routes."$default"]
integration = "echo"
two_way = true

[integrations.echo]
type = "mock"
template = "echo:$input.body"

[integrations.events]
type = "http"
url = "{url}"
timeout_ms = 2000
"#,
        base = base_config(),
        url = backend.url("/events"),
    )
}

#[tokio::test]
async fn a_client_cut_mid_stream_resumes_with_every_message_once_in_order() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 30, "")).await;
    let (mut ws, id, token) = open_session(&gw).await;
    let connect = backend.next_event("CONNECT").await;
    assert_eq!(connect["requestContext"]["resumed"], false);
    assert_eq!(gw.join("room", &id).await.0, 204);

    // A backend posts numbered messages and a group broadcasts, interleaved, throughout.
    const EACH: usize = 300;
    let producer = {
        let endpoints = Endpoints::clone(&gw);
        let id = id.clone();
        tokio::spawn(async move {
            for n in 0..EACH {
                let (status, _) = endpoints.post(&id, format!("post-{n}")).await;
                assert_eq!(status, 200, "POST {n}");
                let (status, _) = endpoints.to_group("room", &format!("group-{n}")).await;
                assert!(status == 200 || status == 202, "group {n}: {status}");
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    // The client reads a part of the stream, then its TCP connection is cut.
    let mut got = Numbered::default();
    for _ in 0..60 {
        got.read(&mut ws).await;
    }
    cut(ws);
    until_suspended(&gw, &id).await;
    // Messages posted while suspended wait; give the producer time to post some.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, members) = gw
        .call(reqwest::Method::GET, "/@groups/room/members", "")
        .await;
    assert_eq!(status, 200);
    assert!(
        members.to_string().contains(&id),
        "still a member while suspended: {members}"
    );

    // Resume from the last offset processed (the client may have lost frames in flight).
    let mut ws = connect_resumable(&gw, &resume_query(&token, got.last)).await;
    let w = welcome(&mut ws).await;
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["connectionId"], id.as_str());
    assert_eq!(w["offset"], got.last);
    producer.await.unwrap();
    while got.payloads.len() < 2 * EACH {
        got.read(&mut ws).await;
    }
    expect_silence(&mut ws, Duration::from_millis(300)).await;

    // Every message exactly once, each stream in its own order.
    let posts: Vec<&String> = got
        .payloads
        .iter()
        .filter(|p| p.starts_with("post-"))
        .collect();
    let groups: Vec<&String> = got
        .payloads
        .iter()
        .filter(|p| p.starts_with("group-"))
        .collect();
    let expected = |kind: &str| (0..EACH).map(|n| format!("{kind}-{n}")).collect::<Vec<_>>();
    assert_eq!(
        posts.into_iter().cloned().collect::<Vec<_>>(),
        expected("post")
    );
    assert_eq!(
        groups.into_iter().cloned().collect::<Vec<_>>(),
        expected("group")
    );
    let (status, v) = gw.get_connection(&id).await;
    assert_eq!((status, &v["status"]), (200, &Value::from("connected")));

    // The backend saw one more CONNECT, marked as a resume, and no DISCONNECT yet.
    let events = events_for(&backend, &id, Duration::from_millis(300)).await;
    let kinds: Vec<(&Value, &Value)> = events
        .iter()
        .map(|e| {
            (
                &e["requestContext"]["eventType"],
                &e["requestContext"]["resumed"],
            )
        })
        .collect();
    assert_eq!(kinds, vec![(&Value::from("CONNECT"), &Value::from(true))]);

    // A message from the client is still routed, and its reply is numbered too.
    ws.send(Message::text("hello")).await.unwrap();
    got.read(&mut ws).await;
    assert_eq!(got.payloads.last().unwrap(), "echo:hello");

    // A clean close ends the session at once: $disconnect, exactly once.
    ws.close(None).await.unwrap();
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert!(
        events_for(&backend, &id, Duration::from_millis(500))
            .await
            .is_empty()
    );
    assert_eq!(gw.post(&id, "late").await.0, 410);
}

#[tokio::test]
async fn a_resume_after_the_window_starts_fresh_and_disconnect_fires_once() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 1, "")).await;
    let (ws, id, token) = open_session(&gw).await;
    backend.next_event("CONNECT").await;
    cut(ws);
    // Not at the drop: while suspended, POST is accepted and nothing reaches $disconnect.
    until_suspended(&gw, &id).await;
    assert_eq!(gw.post(&id, "kept").await.0, 200);
    backend.expect_none(Duration::from_millis(500)).await;
    // The window passes: $disconnect, once, with the drop's code.
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1006);
    backend.expect_none(Duration::from_millis(1500)).await;
    assert_eq!(gw.post(&id, "late").await.0, 410);

    // The late resume is told to start fresh, with a new id.
    let mut ws = connect_resumable(&gw, &resume_query(&token, 0)).await;
    let w = welcome(&mut ws).await;
    assert_eq!(w["resumed"], false);
    assert_eq!(w["reason"], "unknown_session");
    assert_ne!(w["connectionId"], id.as_str());
    let connect = backend.next_event("CONNECT").await;
    assert_eq!(connect["requestContext"]["resumed"], false);
    assert_eq!(
        connect["queryStringParameters"],
        Value::Null,
        "resume parameters are the gateway's"
    );
}

#[tokio::test]
async fn bad_tokens_and_offsets_start_fresh_and_a_stale_offset_ends_the_old_session() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 30, "max_messages = 3")).await;
    let (mut ws, id, token) = open_session(&gw).await;
    // A wrong secret, a malformed token, an offset that is not a number: fresh
    // sessions, and the real one is untouched.
    let forged = format!("{id}.{}", "A".repeat(24));
    for (query, reason) in [
        (resume_query(&forged, 0), "unknown_session"),
        (resume_query("garbage", 0), "bad_token"),
        (format!("?sb_resume={token}&sb_offset=x"), "bad_offset"),
    ] {
        let mut other = connect_resumable(&gw, &query).await;
        let w = welcome(&mut other).await;
        assert_eq!(
            (&w["resumed"], &w["reason"]),
            (&Value::from(false), &Value::from(reason)),
            "{query}"
        );
        assert_ne!(w["connectionId"], id.as_str());
    }
    // A fourth message trims the first from a history of three while attached.
    for n in 0..4 {
        assert_eq!(gw.post(&id, format!("m{n}")).await.0, 200);
    }
    let mut got = Numbered::default();
    for _ in 0..4 {
        got.read(&mut ws).await;
    }
    cut(ws);
    until_suspended(&gw, &id).await;
    // While suspended the history is bounded: it holds three frames the client never
    // acknowledged, so a fourth is refused (429), not kept at the cost of a gap.
    assert_eq!(gw.post(&id, "s1").await.0, 429);
    // Resuming from before what was trimmed: start fresh, and the old session ends now.
    let mut ws = connect_resumable(&gw, &resume_query(&token, 0)).await;
    let w = welcome(&mut ws).await;
    assert_eq!(w["reason"], "history_trimmed");
    let fresh_token = w["token"].as_str().unwrap().to_owned();
    eventually("old session closed", Duration::from_secs(5), || async {
        (gw.get_connection(&id).await.0 == 410).then_some(())
    })
    .await;

    // The right token with an offset never sent: the client is confused; it starts
    // fresh, and the session it named (still attached here) is closed with 4001.
    let mut other = connect_resumable(&gw, &resume_query(&fresh_token, 99)).await;
    assert_eq!(welcome(&mut other).await["reason"], "bad_offset");
    let close = expect_close(&mut ws, Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 4001);
}

#[tokio::test]
async fn a_resume_takes_over_a_socket_the_gateway_still_holds() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 30, "")).await;
    let (mut old, id, token) = open_session(&gw).await;
    for n in 0..3 {
        assert_eq!(gw.post(&id, format!("m{n}")).await.0, 200);
    }
    let mut got = Numbered::default();
    got.read(&mut old).await;
    // The client acknowledges offset 1, then (its network gone, the gateway none the
    // wiser) resumes from 1 on a new socket while the old one is still open.
    old.send(Message::text(r#"{"$sb":"ack","offset":1}"#))
        .await
        .unwrap();
    let mut ws = connect_resumable(&gw, &resume_query(&token, 1)).await;
    let w = welcome(&mut ws).await;
    assert_eq!(w["resumed"], true);
    got.read(&mut ws).await;
    got.read(&mut ws).await;
    assert_eq!(got.payloads, ["m0", "m1", "m2"]);
    // The old socket was let go.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match old.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the superseded socket ends");
    // A control frame that is not JSON closes with 1007.
    ws.send(Message::text(r#"{"$sb":nope"#)).await.unwrap();
    let close = expect_close(&mut ws, Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1007);
}

#[tokio::test]
async fn a_client_without_the_subprotocol_sees_nothing_new() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 30, "")).await;
    let mut ws = gw.connect().await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        "echo:hi",
        "no welcome, no envelope"
    );
    let connect = backend.next_event("CONNECT").await;
    let id = connect["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(connect["requestContext"].get("resumed").is_none());
    assert_eq!(gw.post(&id, "raw").await.0, 200);
    assert_eq!(next_text(&mut ws).await, "raw");
    let (_, v) = gw.get_connection(&id).await;
    assert!(v.get("status").is_none(), "{v}");
    // A frame that looks like a control frame is an ordinary message here.
    ws.send(Message::text(r#"{"$sb":"ack","offset":1}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, r#"echo:{"$sb":"ack","offset":1}"#);
    // A drop closes at once: $disconnect now.
    cut(ws);
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert_eq!(gw.post(&id, "late").await.0, 410);
}

#[tokio::test]
async fn resume_is_off_unless_configured_and_bad_settings_name_their_key() {
    // Off: the subprotocol is not selected, and frames are unchanged.
    let gw = Gateway::start(&format!(
        "{}[routes.\"$default\"]\nintegration = \"echo\"\ntwo_way = true\n[integrations.echo]\ntype = \"mock\"\ntemplate = \"$input.body\"\n",
        base_config()
    ))
    .await;
    let mut request = gw.ws_url("/prod").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    // tungstenite refuses a 101 without the offered subprotocol: so does a browser.
    assert!(
        connect_async_with_config(request, None, true)
            .await
            .is_err()
    );
    let bad: BTreeMap<&str, &str> = BTreeMap::from([
        ("window_secs = 0", "resume.window_secs"),
        ("max_messages = 0", "resume.max_messages"),
        ("max_bytes = 10", "resume.max_bytes"),
        ("max_suspended = 0", "resume.max_suspended"),
        ("windows = 3", "windows"),
    ]);
    for (line, key) in bad {
        let (code, _, stderr) = check_config(&format!("{}[resume]\n{line}\n", base_config()));
        assert_ne!(code, Some(0), "{line}");
        assert!(stderr.contains(key), "{line}: {stderr}");
    }
}

#[tokio::test]
async fn in_cluster_mode_a_session_resumes_on_its_own_node() {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let extra = format!(
        "[resume]\nenabled = true\nwindow_secs = 2\n\
         [routes.\"$disconnect\"]\nintegration = \"events\"\n\
         [integrations.events]\ntype = \"http\"\nurl = \"{}\"\ntimeout_ms = 2000\n",
        backend.url("/events")
    );
    let gws = nodes(&redis, 2, &extra).await;
    let (a, b) = (&gws[0], &gws[1]);
    let (mut ws, id, token) = open_session(a).await;
    // Through the other node: a join, a POST and a group message reach the owner.
    assert_eq!(b.join("room", &id).await.0, 204);
    assert_eq!(b.post(&id, "p0").await.0, 200);
    assert_eq!(b.to_group("room", "g0").await.0, 202);
    let mut got = Numbered::default();
    got.read(&mut ws).await;
    got.read(&mut ws).await;
    cut(ws);
    until_suspended(b, &id).await; // seen from the other node
    assert_eq!(b.post(&id, "p1").await.0, 200);
    assert_eq!(b.to_group("room", "g1").await.0, 202);
    // Back on its own node: everything, once, in order.
    let mut ws = connect_resumable(a, &resume_query(&token, got.last)).await;
    assert_eq!(welcome(&mut ws).await["resumed"], true);
    got.read(&mut ws).await;
    got.read(&mut ws).await;
    assert_eq!(got.payloads, ["p0", "g0", "p1", "g1"]);
    // A clean close ends it: $disconnect, once.
    ws.close(None).await.unwrap();
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert!(
        events_for(&backend, &id, Duration::from_millis(1500))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn in_cluster_mode_a_session_moves_to_the_live_node_its_client_resumes_through() {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let gws = nodes(&redis, 3, &resume_events_config(&backend, 10)).await;
    assert_a_session_moves_between_live_nodes(&gws, &backend).await;
}

#[tokio::test]
async fn a_reply_still_being_computed_when_the_session_moves_follows_it() {
    let redis = RedisServer::start().await;
    let events = Backend::start().await;
    // The backend answers a client's message one second late.
    let slow = Backend::with_headers_delayed(Duration::from_secs(1), |_| {
        (200, Vec::new(), "late reply".to_owned())
    })
    .await;
    let extra = format!(
        "{}[routes.\"$default\"]\nintegration = \"slow\"\ntwo_way = true\n\
         [integrations.slow]\ntype = \"http\"\nurl = \"{}\"\ntimeout_ms = 5000\n",
        resume_events_config(&events, 10),
        slow.url("/slow")
    );
    let gws = nodes(&redis, 2, &extra).await;
    let (mut ws, id, token) = open_session(&gws[0]).await;
    ws.send(Message::text("question")).await.unwrap();
    slow.next().await; // the call is running on the first node
    // The client is cut and comes back through the other node before the answer: the
    // session moves there, and the reply the first node receives afterwards follows it.
    cut(ws);
    let mut ws = resume_through(&gws[1], &token, 0).await;
    let w = welcome(&mut ws).await;
    assert_eq!(
        (&w["resumed"], &w["connectionId"]),
        (&Value::from(true), &Value::from(id.as_str())),
        "{w}"
    );
    let mut got = Numbered::default();
    got.read(&mut ws).await;
    assert_eq!(got.payloads, ["late reply"]);
}

#[tokio::test]
async fn a_session_dropped_again_after_a_resume_gets_a_whole_new_window() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 2, "")).await;
    let (ws, id, token) = open_session(&gw).await;
    backend.next_event("CONNECT").await;
    cut(ws);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = connect_resumable(&gw, &resume_query(&token, 0)).await;
    assert_eq!(welcome(&mut ws).await["resumed"], true);
    backend.next_event("CONNECT").await;
    cut(ws);
    // Past the first drop's window, within the second's: still kept.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, v) = gw.get_connection(&id).await;
    assert_eq!(
        (status, &v["status"]),
        (200, &Value::from("suspended")),
        "{v}"
    );
    let mut ws = connect_resumable(&gw, &resume_query(&token, 0)).await;
    assert_eq!(welcome(&mut ws).await["resumed"], true);
    ws.close(None).await.unwrap();
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert!(
        events_for(&backend, &id, Duration::from_millis(2500))
            .await
            .is_empty(),
        "$disconnect once"
    );
}

#[tokio::test]
async fn deleting_a_suspended_session_or_shutting_down_fires_disconnect_once() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, 30, "")).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (ws, id, _) = open_session(&gw).await;
        ids.push(id);
        backend.next_event("CONNECT").await;
        cut(ws);
    }
    for id in &ids {
        until_suspended(&gw, id).await;
    }
    // DELETE: now, with its code.
    assert_eq!(
        gw.call(
            reqwest::Method::DELETE,
            &format!("/@connections/{}?code=4000&reason=bye", ids[0]),
            ""
        )
        .await
        .0,
        204
    );
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(
        disconnect["requestContext"]["connectionId"],
        ids[0].as_str()
    );
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 4000);
    assert_eq!(gw.post(&ids[0], "late").await.0, 410);
    // Shutdown: the other one, before the process exits.
    let mut gw = gw;
    gw.sigterm();
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(
        disconnect["requestContext"]["connectionId"],
        ids[1].as_str()
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
    backend.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn in_cluster_mode_a_session_resumes_on_another_node_after_its_node_is_killed() {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let mut gws = nodes(&redis, 3, &resume_events_config(&backend, 3)).await;
    let (mut ws, id, token) = open_session(&gws[0]).await;
    assert_eq!(
        backend.next_event("CONNECT").await["requestContext"]["resumed"],
        false
    );
    // Through the other node: a join and five POSTs, all accepted by the owner.
    assert_eq!(gws[1].join("room", &id).await.0, 204);
    for n in 0..5 {
        assert_eq!(gws[1].post(&id, format!("p{n}")).await.0, 200);
    }
    let mut got = Numbered::default();
    got.read(&mut ws).await;
    got.read(&mut ws).await;
    // Twenty more through the owner itself, each answered 200 only once Redis holds it;
    // the owner dies right after the last answer, with 23 messages the client never
    // processed.
    for n in 5..24 {
        assert_eq!(gws[0].post(&id, format!("p{n}")).await.0, 200);
    }
    // The last one while Redis holds writes back for half a second: its 200 waits for
    // Redis (an acknowledgement before the write would die with the node, and the resume
    // below would miss it).
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "500", "WRITE"]), "OK");
    assert_eq!(gws[0].post(&id, "p24").await.0, 200);
    gws[0].sigkill().await;
    drop(ws);
    // While the dead node is found dead and a survivor adopts its session, POSTs and group
    // messages keep coming: refused (503) until then and asked again, none lost.
    const EACH: usize = 40;
    const PREFIXES: [&str; 4] = ["x", "d", "e", "f"];
    let senders = [
        tokio::spawn(send_numbered(
            (*gws[2]).clone(),
            Some(id.clone()),
            "x",
            EACH,
        )),
        tokio::spawn(send_numbered((*gws[1]).clone(), None, "d", EACH)),
        tokio::spawn(send_numbered((*gws[2]).clone(), None, "e", EACH)),
        tokio::spawn(send_numbered((*gws[1]).clone(), None, "f", EACH)),
    ];
    // The client resumes on the other node: asked to retry (409) while the dead node's
    // lease runs, then resumed there with its id (the session moves there from the node
    // that adopted it, if that was another).
    let b = &gws[1];
    let mut ws = resume_through(b, &token, got.last).await;
    let w = welcome(&mut ws).await;
    assert_eq!(
        (&w["resumed"], &w["connectionId"]),
        (&Value::from(true), &Value::from(id.as_str())),
        "{w}"
    );
    for _ in 0..23 {
        got.read(&mut ws).await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut during = Numbered {
        last: got.last,
        payloads: Vec::new(),
    };
    for _ in 0..PREFIXES.len() * EACH {
        during.read(&mut ws).await;
    }
    got.last = during.last;
    assert_each_sender_once_in_order(&during.payloads, &PREFIXES, EACH);
    // It lives on this node now: POSTs, its group and GET reach it here.
    assert_eq!(b.post(&id, "p25").await.0, 200);
    got.read(&mut ws).await;
    // Through a third node too: the id names the dead node, Redis names the new owner
    // (asked only because the dead node did not answer).
    let c = &gws[2];
    assert_eq!(c.post(&id, "p26").await.0, 200);
    got.read(&mut ws).await;
    assert_eq!(b.to_group("room", "g0").await.0, 202);
    got.read(&mut ws).await;
    let want: Vec<String> = (0..27)
        .map(|n| format!("p{n}"))
        .chain(["g0".to_owned()])
        .collect();
    assert_eq!(got.payloads, want);
    let (status, v) = c.get_connection(&id).await;
    assert_eq!(
        (status, &v["status"]),
        (200, &Value::from("connected")),
        "{v}"
    );
    let connect = backend.next_event("CONNECT").await;
    assert_eq!(connect["requestContext"]["connectionId"], id.as_str());
    assert_eq!(connect["requestContext"]["resumed"], true);
    // The dead node is reaped and its window passes: no $disconnect for the session.
    assert!(
        events_for(&backend, &id, Duration::from_secs(6))
            .await
            .is_empty(),
        "no $disconnect while the session lives on"
    );
    // A clean close ends it: $disconnect, once.
    ws.close(None).await.unwrap();
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert!(
        events_for(&backend, &id, Duration::from_millis(500))
            .await
            .is_empty()
    );
}
