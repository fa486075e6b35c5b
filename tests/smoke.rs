//! The embedded-default exchange the README shows: echo, whoami, and a push.
mod common;

use common::*;
use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn default_config_echoes_and_pushes() {
    let default =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
            .unwrap();
    let gw = Gateway::start_with_env(
        &default,
        &[("SWITCHBOARD__MANAGEMENT__BEARER_TOKENS", TOKEN)],
    )
    .await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    let (status, _) = gw.post(&id, "pushed").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "pushed");
}
