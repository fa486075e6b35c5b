//! The example chat backend (`examples/chat/server.py`, Python standard library only)
//! run for real against two real gateway nodes configured by the compose kit's
//! `deploy/switchboard.toml` and sharing a real redis-server: two clients on different
//! nodes join a room and each hears the other's message.
mod common;

use common::*;
use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The nickname the backend gives a client that sent none.
fn guest(id: &str) -> String {
    format!("guest-{}", &id[id.len() - 4..])
}

async fn send(ws: &mut Client, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

async fn next_json(ws: &mut Client) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[tokio::test]
async fn example_chat_backend_joins_and_broadcasts() {
    let redis = RedisServer::start().await;
    let backend_port = free_port();
    // Node a's management port is fixed up front so the backend can be told it.
    let management_port = free_port();
    let management = format!("http://127.0.0.1:{management_port}");
    let _backend = ChatBackend::start(backend_port, &management, "").await;
    let config = compose_config();
    let redis_url = redis.url();
    let chat_url = format!("http://127.0.0.1:{backend_port}/events");
    let env = [
        ("SWITCHBOARD__CLUSTER__REDIS_URL", redis_url.as_str()),
        ("SWITCHBOARD__INTEGRATIONS__CHAT__URL", chat_url.as_str()),
        ("SWITCHBOARD__MANAGEMENT__BEARER_TOKENS", TOKEN),
    ];
    let listen = format!("127.0.0.1:{management_port}");
    let mut env_a = env.to_vec();
    env_a.push(("SWITCHBOARD__MANAGEMENT__LISTEN", &listen));
    let a = Gateway::start_with_env(&config, &env_a).await;
    assert_eq!(a.management_addr.port(), management_port);
    let b = Gateway::start_with_env(&config, &env).await;
    a.wait_backplane_ready().await;
    b.wait_backplane_ready().await;

    // One client on each node; both join "lobby" (the answer header does it).
    let (mut alice, alice_id) = a.connect_with_id().await;
    let (mut bob, bob_id) = b.connect_with_id().await;
    for ws in [&mut alice, &mut bob] {
        send(ws, json!({"action": "join", "room": "lobby"})).await;
        assert_eq!(next_json(ws).await, json!({"joined": "lobby"}));
    }

    // Alice speaks (room named); Bob speaks (room remembered from his join).
    send(
        &mut alice,
        json!({"action": "sendmessage", "room": "lobby", "text": "hi bob"}),
    )
    .await;
    let want =
        json!({"room": "lobby", "from": alice_id, "nickname": guest(&alice_id), "text": "hi bob"});
    assert_eq!(next_json(&mut alice).await, want);
    assert_eq!(next_json(&mut bob).await, want);
    send(
        &mut bob,
        json!({"action": "sendmessage", "text": "hi alice"}),
    )
    .await;
    let want =
        json!({"room": "lobby", "from": bob_id, "nickname": guest(&bob_id), "text": "hi alice"});
    assert_eq!(next_json(&mut bob).await, want);
    assert_eq!(next_json(&mut alice).await, want);

    // Bob leaves; Alice's next message reaches only her, then a direct POST to Bob is his
    // next frame (nothing from the room came before it).
    send(&mut bob, json!({"action": "leave", "room": "lobby"})).await;
    assert_eq!(next_json(&mut bob).await, json!({"left": "lobby"}));
    send(
        &mut alice,
        json!({"action": "sendmessage", "room": "lobby", "text": "alone"}),
    )
    .await;
    assert_eq!(next_json(&mut alice).await["text"], "alone");
    let (status, _) = a.post(&bob_id, "direct").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut bob).await, "direct");

    // A nickname from the query string; leaving (closing) is announced to the room by the
    // backend's $disconnect handler, on the other node.
    let mut carol = b.connect_path("/prod?nickname=carol").await;
    send(&mut carol, json!({"action": "join", "room": "lobby"})).await;
    assert_eq!(next_json(&mut carol).await, json!({"joined": "lobby"}));
    send(
        &mut carol,
        json!({"action": "sendmessage", "text": "hello"}),
    )
    .await;
    let heard = next_json(&mut alice).await;
    assert_eq!(
        (heard["nickname"].as_str(), heard["text"].as_str()),
        (Some("carol"), Some("hello"))
    );
    carol.close(None).await.unwrap();
    let notice = next_json(&mut alice).await;
    assert_eq!(notice["system"], true);
    assert_eq!(notice["text"], "carol left");

    // An invalid nickname refuses the handshake with the backend's 400.
    match tokio_tungstenite::connect_async(b.ws_url("/prod?nickname=no%20spaces")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected a 400 handshake, got {other:?}"),
    }

    // Bad input gets a clear answer on the socket.
    send(&mut alice, json!({"action": "join", "room": "no spaces"})).await;
    let v = next_json(&mut alice).await;
    assert!(v["error"].as_str().unwrap().starts_with("a room is"), "{v}");
}
