//! Scale-out behind a real load balancer: three gateway nodes sharing a real redis-server,
//! a real `haproxy` in front (round robin, WebSocket tunnels, HTTP health checks on each
//! node's management `/healthz`), and clients spread over the nodes chatting through a
//! group that an HTTP backend joins them to and broadcasts to.
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// Six clients through haproxy land on all three nodes (round robin); each joins `room`
/// through the chat backend's `x-switchboard-join` answer; every message a client sends
/// is broadcast by the backend to the group and reaches all six, on every node.
#[tokio::test]
async fn clients_behind_haproxy_chat_through_a_group() {
    let redis = RedisServer::start().await;

    // The chat backend: `join` answers with x-switchboard-join; `sendmessage` makes the
    // backend POST the message to the group through a management API (rotating nodes).
    let management: Arc<Mutex<Vec<String>>> = Arc::default();
    let next_node = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let backend = {
        let management = management.clone();
        Backend::with_headers(move |req| {
            let event = req.json();
            let id = event["requestContext"]["connectionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let body: Value =
                serde_json::from_str(event["body"].as_str().unwrap_or("null")).unwrap_or_default();
            match body["action"].as_str() {
                Some("join") => {
                    let room = body["room"].as_str().unwrap_or_default().to_owned();
                    (
                        200,
                        vec![("x-switchboard-join".to_owned(), room.clone())],
                        format!("joined {room}"),
                    )
                }
                Some("sendmessage") => {
                    let nodes = management.lock().unwrap().clone();
                    let url = format!(
                        "{}/@groups/room",
                        nodes[next_node.fetch_add(1, Ordering::Relaxed) % nodes.len()]
                    );
                    let message = json!({"from": id, "text": body["text"]}).to_string();
                    let http = http.clone();
                    tokio::spawn(async move {
                        let r = http
                            .post(url)
                            .bearer_auth(TOKEN)
                            .body(message)
                            .send()
                            .await
                            .expect("group broadcast");
                        assert_eq!(r.status(), 202);
                    });
                    (200, vec![], String::new())
                }
                _ => (200, vec![], String::new()),
            }
        })
        .await
    };
    let extra = format!(
        "{WHOAMI}[routes.join]\nintegration = \"chat\"\ntwo_way = true\n\
         [routes.sendmessage]\nintegration = \"chat\"\n\
         [integrations.chat]\ntype = \"http\"\nurl = \"{}\"\nmode = \"proxy\"\n",
        backend.url("/chat")
    );
    let config = cluster_config(&redis, &extra);
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start(&config).await);
    }
    let mut tags = HashMap::new();
    for (i, gw) in gws.iter().enumerate() {
        tags.insert(gw.wait_backplane_ready().await, i);
        management
            .lock()
            .unwrap()
            .push(format!("http://{}", gw.management_addr));
    }
    assert_eq!(tags.len(), 3, "three distinct node tags");

    let refs: Vec<&Gateway> = gws.iter().collect();
    let mut haproxy = Haproxy::start(&refs);
    haproxy.wait_all_up(3).await;

    // Six clients through haproxy; the node tag in each id says where it landed.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (mut ws, response) = connect_async(haproxy.ws_url())
            .await
            .expect("connect via haproxy");
        assert_eq!(response.status(), 101);
        ws.send(Message::text(r#"{"action":"whoami"}"#))
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        let id = v["connectionId"].as_str().unwrap().to_owned();
        let node = *tags
            .get(&node_of(&id))
            .unwrap_or_else(|| panic!("{id} names no known node"));
        clients.push((ws, id, node));
    }
    let landed: Vec<usize> = clients.iter().map(|c| c.2).collect();
    let mut per_node = [0; 3];
    for n in &landed {
        per_node[*n] += 1;
    }
    assert_eq!(
        per_node,
        [2, 2, 2],
        "round robin over three nodes: {landed:?}"
    );
    // The owner agrees: each connection is local to the node its tag names.
    for (_, id, node) in &clients {
        let (status, _) = gws[*node].get_connection(id).await;
        assert_eq!(status, 200);
    }

    // Everyone joins the room through the backend's answer header.
    for (ws, _, _) in clients.iter_mut() {
        ws.send(Message::text(r#"{"action":"join","room":"room"}"#))
            .await
            .unwrap();
        assert_eq!(next_text(ws).await, "joined room");
    }
    let ids: HashSet<String> = clients.iter().map(|c| c.1.clone()).collect();
    // The listing comes from Redis, written in the background: it catches up quickly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed: HashSet<String> =
            list_pages(&[&gws[0]], "/@groups/room/members?limit=1000", "members")
                .await
                .concat()
                .into_iter()
                .collect();
        if listed == ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group lists {listed:?}, not {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Each client speaks in turn; every client, on every node, hears each message.
    for speaker in 0..clients.len() {
        let text = format!("message {speaker}");
        let from = clients[speaker].1.clone();
        clients[speaker]
            .0
            .send(Message::text(
                json!({"action": "sendmessage", "text": text}).to_string(),
            ))
            .await
            .unwrap();
        let want = json!({"from": from, "text": text});
        for (ws, id, node) in clients.iter_mut() {
            let got: Value = serde_json::from_str(&next_text(ws).await).unwrap();
            assert_eq!(got, want, "{id} on node {node}");
        }
    }
}
