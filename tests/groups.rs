//! Groups, broadcast and listings on one node (the in-memory backplane), through the real
//! binary: membership by PUT/DELETE and by integration answer headers, group and
//! all-connection broadcasts, paginated member and connection listings.
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt as _;
use reqwest::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// PUT a member; asserts 204.
async fn join(gw: &Gateway, group: &str, id: &str) {
    let (status, body) = gw.join(group, id).await;
    assert_eq!((status, body), (204, Value::Null), "join {group} {id}");
}

/// POST to a group; asserts 202 with an empty body.
async fn to_group(gw: &Gateway, group: &str, text: &str) {
    let (status, body) = gw.to_group(group, text).await;
    assert_eq!((status, body), (202, Value::Null), "broadcast to {group}");
}

/// POST to every connection; asserts 202 with an empty body.
async fn to_all(gw: &Gateway, text: &str) {
    let (status, body) = gw.broadcast(text).await;
    assert_eq!((status, body), (202, Value::Null), "broadcast to all");
}

/// The members of `group` (all pages).
async fn members(gw: &Gateway, group: &str) -> Vec<String> {
    list_pages(
        &[gw],
        &format!("/@groups/{group}/members?limit=1000"),
        "members",
    )
    .await
    .concat()
}

/// Polls `members` until `want` holds (at most 5 s).
async fn wait_members(gw: &Gateway, group: &str, want: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = members(gw, group).await;
        if want(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "members of {group} never matched: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn whoami_config() -> String {
    format!("{}{WHOAMI}", base_config())
}

#[tokio::test]
async fn group_broadcast_reaches_members_only() {
    let gw = Gateway::start(&whoami_config()).await;
    let (mut a, id_a) = gw.connect_with_id().await;
    let (mut b, id_b) = gw.connect_with_id().await;
    let (mut c, _id_c) = gw.connect_with_id().await;

    join(&gw, "room", &id_a).await;
    join(&gw, "room", &id_b).await;
    assert_eq!(
        sorted(members(&gw, "room").await),
        sorted(vec![id_a.clone(), id_b.clone()])
    );

    to_group(&gw, "room", "to the room").await;
    to_all(&gw, "to everyone").await;
    assert_eq!(next_text(&mut a).await, "to the room");
    assert_eq!(next_text(&mut a).await, "to everyone");
    assert_eq!(next_text(&mut b).await, "to the room");
    assert_eq!(next_text(&mut b).await, "to everyone");
    // The non-member's first frame is the all-connections broadcast sent after it.
    assert_eq!(next_text(&mut c).await, "to everyone");

    // Removing a member: the next group broadcast skips it.
    let (status, body) = gw.leave("room", &id_b).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(members(&gw, "room").await, vec![id_a.clone()]);
    to_group(&gw, "room", "second").await;
    to_all(&gw, "marker").await;
    assert_eq!(next_text(&mut a).await, "second");
    assert_eq!(next_text(&mut a).await, "marker");
    assert_eq!(next_text(&mut b).await, "marker");
    assert_eq!(next_text(&mut c).await, "marker");

    // A group nobody is in: 202, nothing delivered; its listing is empty.
    to_group(&gw, "empty", "nobody").await;
    assert_eq!(members(&gw, "empty").await, Vec::<String>::new());
    to_all(&gw, "after empty").await;
    assert_eq!(next_text(&mut a).await, "after empty");

    // Binary bodies are broadcast as binary frames.
    let r = gw
        .request(Method::POST, "/@groups/room", vec![0u8, 159, 255])
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        next_message(&mut a).await,
        Message::binary(vec![0u8, 159, 255])
    );
}

#[tokio::test]
async fn membership_is_idempotent_and_ends_with_the_connection() {
    let gw = Gateway::start(&whoami_config()).await;
    let (mut a, id_a) = gw.connect_with_id().await;
    let (mut b, id_b) = gw.connect_with_id().await;

    // Adding twice: 204 both times, one membership, one copy of each broadcast.
    join(&gw, "room", &id_a).await;
    join(&gw, "room", &id_a).await;
    join(&gw, "room", &id_b).await;
    assert_eq!(
        sorted(members(&gw, "room").await),
        sorted(vec![id_a.clone(), id_b.clone()])
    );
    to_group(&gw, "room", "once").await;
    to_all(&gw, "marker").await;
    assert_eq!(next_text(&mut a).await, "once");
    assert_eq!(next_text(&mut a).await, "marker");

    // Removing a non-member is fine too (204).
    let (status, body) = gw.leave("other", &id_a).await;
    assert_eq!((status, body), (204, Value::Null));

    // Closing b ends its memberships: the listing shrinks, and it is 410 from then on.
    b.close(None).await.unwrap();
    let left = wait_members(&gw, "room", |m| m.len() == 1).await;
    assert_eq!(left, vec![id_a.clone()]);
    let (status, body) = gw.join("room", &id_b).await;
    assert_eq!(
        (status, body),
        (410, Value::Null),
        "PUT for a closed connection"
    );
    let (status, body) = gw.leave("room", &id_b).await;
    assert_eq!(
        (status, body),
        (410, Value::Null),
        "DELETE for a closed connection"
    );
    assert_eq!(members(&gw, "room").await, vec![id_a.clone()]);

    // A well-formed id nobody ever had is gone as well.
    let (status, _) = gw.join("room", "AAAAAAAAAAAAAAAA").await;
    assert_eq!(status, 410);

    // The last member leaving empties the group.
    a.close(None).await.unwrap();
    wait_members(&gw, "room", <[String]>::is_empty).await;
}

#[tokio::test]
async fn bad_names_ids_and_limits_are_400() {
    let gw = Gateway::start(&whoami_config()).await;
    let (_ws, id) = gw.connect_with_id().await;
    let long = "x".repeat(129);
    for (method, path, message) in [
        (
            Method::PUT,
            format!("/@groups/a%20b/members/{id}"),
            "Invalid group name: a b".to_owned(),
        ),
        (
            Method::PUT,
            format!("/@groups/a!b/members/{id}"),
            "Invalid group name: a!b".to_owned(),
        ),
        (
            Method::POST,
            format!("/@groups/{long}"),
            format!("Invalid group name: {long}"),
        ),
        (
            Method::GET,
            "/@groups/%C3%A9/members".to_owned(),
            "Invalid group name: é".to_owned(),
        ),
        (
            Method::PUT,
            "/@groups/room/members/nope".to_owned(),
            "Invalid connectionId: nope".to_owned(),
        ),
        (
            Method::GET,
            "/@groups/room/members?limit=0".to_owned(),
            "limit must be between 1 and 1000".to_owned(),
        ),
        (
            Method::GET,
            "/@groups/room/members?limit=1001".to_owned(),
            "limit must be between 1 and 1000".to_owned(),
        ),
        (
            Method::GET,
            "/@connections?limit=0".to_owned(),
            "limit must be between 1 and 1000".to_owned(),
        ),
        (
            Method::GET,
            "/@connections?limit=two".to_owned(),
            "limit must be between 1 and 1000".to_owned(),
        ),
    ] {
        let r = gw.request(method.clone(), &path, "").await;
        assert_eq!(r.status(), 400, "{method} {path}");
        assert_eq!(
            r.headers()
                .get("x-amzn-errortype")
                .map(|v| v.to_str().unwrap()),
            Some("BadRequestException")
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "message": message }),
            "{method} {path}"
        );
    }
    // Group routes need the token like every other management route.
    let r = reqwest::Client::new()
        .post(gw.management_url("/@broadcast"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Wrong methods on group paths: 405 naming the methods the path takes.
    for (method, path, allow) in [
        (Method::GET, "/@groups/room".to_owned(), "POST"),
        (Method::GET, "/@broadcast".to_owned(), "POST"),
        (
            Method::POST,
            format!("/@groups/room/members/{id}"),
            "PUT, DELETE",
        ),
        (Method::POST, "/@groups/room/members".to_owned(), "GET"),
    ] {
        let r = gw.request(method.clone(), &path, "").await;
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(
            r.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn listings_are_paginated_with_a_cursor() {
    let gw = Gateway::start(&whoami_config()).await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (ws, id) = gw.connect_with_id().await;
        join(&gw, "five", &id).await;
        clients.push(ws);
        ids.push(id);
    }

    let conns = list_pages(&[&gw], "/@connections?limit=2", "connections").await;
    assert_eq!(
        conns.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{conns:?}"
    );
    let all: Vec<String> = conns.concat();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        5,
        "each id once: {all:?}"
    );
    assert_eq!(sorted(all), sorted(ids.clone()));

    let mem = list_pages(&[&gw], "/@groups/five/members?limit=2", "members").await;
    assert_eq!(
        mem.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{mem:?}"
    );
    let all: Vec<String> = mem.concat();
    assert_eq!(sorted(all), sorted(ids.clone()));

    // Without a limit: one page of everything, cursor null.
    let (status, v) = gw.call(Method::GET, "/@connections", "").await;
    assert_eq!(status, 200);
    assert_eq!(v["cursor"], Value::Null);
    let listed = v["connections"].as_array().unwrap();
    assert_eq!(listed.len(), 5);
    // Each entry: id, connectedAt (ISO-8601 with ms), identity, stage.
    let first = &listed[0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["connectedAt", "connectionId", "identity", "stage"],
        "{first}"
    );
    assert_eq!(first["stage"], "prod");
    assert_eq!(first["identity"]["sourceIp"], "127.0.0.1");
    let at = first["connectedAt"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
        "{at}"
    );

    // limit=5 exactly: one page, no cursor.
    let one = list_pages(&[&gw], "/@connections?limit=5", "connections").await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].len(), 5);

    // A closed connection drops out of both listings.
    let gone = ids.remove(0);
    let ws = clients.remove(0);
    drop(ws);
    wait_members(&gw, "five", |m| m.len() == 4).await;
    let all = list_pages(&[&gw], "/@connections?limit=2", "connections")
        .await
        .concat();
    assert!(!all.contains(&gone));
    assert_eq!(sorted(all), sorted(ids));
}

/// `$connect` answers join/leave in proxy `headers`; a message route answers with plain
/// HTTP response headers.
#[tokio::test]
async fn integration_answers_join_and_leave_groups() {
    let backend = Backend::with_headers(|req| {
        let event = req.json();
        match event["requestContext"]["eventType"].as_str() {
            Some("CONNECT") => (
                200,
                vec![],
                r#"{"statusCode":200,"headers":{"X-Switchboard-Join":"lobby, news"},"multiValueHeaders":{"x-switchboard-join":["alerts"]}}"#.to_owned(),
            ),
            Some("MESSAGE") => {
                let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
                match body["action"].as_str() {
                    Some("join") => (
                        200,
                        vec![
                            ("x-switchboard-join".to_owned(), body["room"].as_str().unwrap().to_owned()),
                            ("x-switchboard-leave".to_owned(), "news,alerts".to_owned()),
                        ],
                        "joined".to_owned(),
                    ),
                    Some("bad") => (
                        200,
                        vec![("x-switchboard-join".to_owned(), "bad name,ok-room".to_owned())],
                        "done".to_owned(),
                    ),
                    _ => (200, vec![], String::new()),
                }
            }
            _ => (200, vec![], String::new()),
        }
    })
    .await;
    let config = format!(
        "{}{WHOAMI}\n[routes.\"$connect\"]\nintegration = \"backend\"\n\
         [routes.join]\nintegration = \"backend\"\ntwo_way = true\n\
         [routes.bad]\nintegration = \"backend\"\ntwo_way = true\n\
         [integrations.backend]\ntype = \"http\"\nurl = \"{}\"\nmode = \"proxy\"\n",
        base_config(),
        backend.url("/events")
    );
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    backend.next_event("CONNECT").await;

    // $connect joined lobby, news and alerts before the 101.
    for group in ["lobby", "news", "alerts"] {
        assert_eq!(members(&gw, group).await, vec![id.clone()], "{group}");
    }
    to_group(&gw, "news", "headline").await;
    assert_eq!(next_text(&mut ws).await, "headline");

    // A message route joins room-7 and leaves news and alerts (plain HTTP headers); the
    // change is applied before the two-way answer is sent.
    ws.send(Message::text(r#"{"action":"join","room":"room-7"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "joined");
    assert_eq!(members(&gw, "room-7").await, vec![id.clone()]);
    assert_eq!(members(&gw, "news").await, Vec::<String>::new());
    assert_eq!(members(&gw, "alerts").await, Vec::<String>::new());
    assert_eq!(members(&gw, "lobby").await, vec![id.clone()]);
    to_group(&gw, "news", "old news").await;
    to_group(&gw, "room-7", "in the room").await;
    assert_eq!(next_text(&mut ws).await, "in the room");

    // An invalid name in the header is skipped; the valid one still applies.
    ws.send(Message::text(r#"{"action":"bad"}"#)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "done");
    assert_eq!(members(&gw, "ok-room").await, vec![id.clone()]);

    // Memberships from headers end with the connection too.
    ws.close(None).await.unwrap();
    for group in ["lobby", "room-7", "ok-room"] {
        wait_members(&gw, group, <[String]>::is_empty).await;
    }
}

/// `POST /@broadcast` and group broadcasts honour the message size limit.
#[tokio::test]
async fn broadcast_over_the_limit_is_413() {
    let gw = Gateway::start(&format!(
        "{}{WHOAMI}\n[client]\nmax_frame_bytes = 1024\nmax_message_bytes = 1024\n",
        base_config()
    ))
    .await;
    let (mut ws, id) = gw.connect_with_id().await;
    join(&gw, "room", &id).await;
    for path in ["/@broadcast", "/@groups/room"] {
        let r = gw.request(Method::POST, path, "x".repeat(1025)).await;
        assert_eq!(r.status(), 413, "{path}");
    }
    to_group(&gw, "room", &"y".repeat(1024)).await;
    assert_eq!(next_text(&mut ws).await, "y".repeat(1024));
}
