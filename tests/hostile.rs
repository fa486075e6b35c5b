//! Hostile input against the real listener: raw sockets where a WebSocket client would
//! refuse to misbehave. For each attack: the documented answer (docs/limits.md), no panic
//! (the process is alive, still serves a fresh client, and every attacked session was
//! cleaned up — a panicking session task would leave its registry entry behind), and
//! bounded memory (the process's VmRSS before and after).

mod common;

use std::time::{Duration, Instant};

use common::raw::{Raw, client_frame, frame, op, rss_kib, upgrade_request};
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The echo route (mock `$input.body`, two-way on `$default`) and `whoami`.
fn echo_config(extra: &str) -> String {
    format!(
        "{}{WHOAMI}[routes.\"$default\"]\nintegration = \"echo\"\ntwo_way = true\n\
         [integrations.echo]\ntype = \"mock\"\ntemplate = \"$input.body\"\n{extra}",
        base_config()
    )
}

/// Asserts the gateway is alive and serving: a fresh client gets its echo.
async fn assert_serving(gw: &mut Gateway) {
    assert_eq!(
        gw.wait_exit(Duration::ZERO).await,
        None,
        "the gateway process exited"
    );
    let mut ws = gw.connect().await;
    ws.send(Message::text("still there?")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still there?");
    ws.close(None).await.unwrap();
}

/// Waits until the gateway holds no connection (every attacked session finished its
/// cleanup), within 5 s.
async fn assert_no_sessions_left(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, listing) = gw.call(reqwest::Method::GET, "/@connections", "").await;
        let left = listing["connections"].as_array().map_or(0, Vec::len);
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} sessions never finished: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts VmRSS grew by less than `bound_kib` since `before`.
fn assert_rss_bounded(gw: &Gateway, before: u64, bound_kib: u64, what: &str) {
    let after = rss_kib(gw.pid());
    let growth = after.saturating_sub(before);
    eprintln!("{what}: VmRSS {before} → {after} KiB (+{growth})");
    assert!(
        growth < bound_kib,
        "{what}: VmRSS grew {growth} KiB ({before} → {after}), bound {bound_kib} KiB"
    );
}

/// Starts a gateway and warms it up (first connection), returning its RSS baseline.
async fn start(extra: &str) -> (Gateway, u64) {
    let mut gw = Gateway::start(&echo_config(extra)).await;
    assert_serving(&mut gw).await;
    let before = rss_kib(gw.pid());
    (gw, before)
}

const MIB: u64 = 1024;

// ---- Handshake ----

/// Slowloris: clients that dribble their headers are dropped at `header_timeout_ms`,
/// while a normal client connects and is served meanwhile.
#[tokio::test]
async fn slowloris_handshakes_are_dropped_at_the_header_deadline() {
    let (mut gw, before) = start("[client]\nheader_timeout_ms = 600\n").await;
    let mut loris = Vec::new();
    for _ in 0..100 {
        let mut raw = Raw::connect(gw.client_addr).await;
        raw.send(b"GET /prod HTTP/1.1\r\nHost: x\r\n").await;
        loris.push(raw);
    }
    let started = Instant::now();
    // Keep dribbling one header byte at a time on the first socket; the rest stay silent.
    let dribbler = {
        let mut raw = loris.remove(0);
        tokio::spawn(async move {
            for _ in 0..40 {
                if !raw.try_send(b"X").await {
                    return Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
    };
    assert_serving(&mut gw).await;
    for raw in &mut loris {
        let sent = raw.read_to_end().await;
        assert!(
            sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
            "{sent:?}"
        );
    }
    let silent_closed = started.elapsed();
    assert!(
        silent_closed >= Duration::from_millis(450) && silent_closed < Duration::from_millis(3000),
        "silent sockets closed after {silent_closed:?}"
    );
    let dribble_closed = dribbler
        .await
        .unwrap()
        .expect("dribbling socket stayed open for 4 s");
    assert!(dribble_closed.duration_since(started) < Duration::from_millis(3000));
    assert_rss_bounded(&gw, before, 8 * MIB, "slowloris");
    assert_serving(&mut gw).await;
}

/// Oversized headers and too many headers get 431.
#[tokio::test]
async fn oversized_and_too_many_headers_get_431() {
    let (mut gw, before) = start("").await;
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    let (_, head) = Raw::request(gw.client_addr, &upgrade_request("/prod", &big)).await;
    assert_eq!(head.status, 431);
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (_, head) = Raw::request(gw.client_addr, &upgrade_request("/prod", &many)).await;
    assert_eq!(head.status, 431);
    // Just under both limits is fine.
    let some: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (_, head) = Raw::request(gw.client_addr, &upgrade_request("/prod", &some)).await;
    assert_eq!(head.status, 101);
    drop(head);
    for _ in 0..50 {
        let (_, head) = Raw::request(gw.client_addr, &upgrade_request("/prod", &big)).await;
        assert_eq!(head.status, 431);
    }
    assert_rss_bounded(&gw, before, 8 * MIB, "oversized headers");
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// A bad `Sec-WebSocket-Key` gets 400, a version other than 13 gets 426 naming 13, and a
/// plain GET gets 426.
#[tokio::test]
async fn bad_key_version_and_plain_get_are_refused() {
    let (mut gw, _) = start("").await;
    let with = |key: &str, version: &str| {
        format!(
            "GET /prod HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}{version}\r\n"
        )
    };
    let v13 = "Sec-WebSocket-Version: 13\r\n";
    let cases: &[(String, u16)] = &[
        (with("Sec-WebSocket-Key: not base64!!\r\n", v13), 400),
        (with("Sec-WebSocket-Key: AAAAAAAAAAA=\r\n", v13), 400),
        (with("Sec-WebSocket-Key: \r\n", v13), 400),
        (with("", v13), 400),
        (
            with(
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "Sec-WebSocket-Version: 8\r\n",
            ),
            426,
        ),
        (
            with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            426,
        ),
        ("GET /prod HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 426),
    ];
    for (request, status) in cases {
        let (_, head) = Raw::request(gw.client_addr, request).await;
        assert_eq!(head.status, *status, "{request:?}");
        if *status == 426 && request.contains("Upgrade: websocket") {
            assert_eq!(
                head.header("sec-websocket-version"),
                Some("13"),
                "{request:?}"
            );
        }
        if *status == 426 && !request.contains("Upgrade: websocket") {
            assert_eq!(head.header("upgrade"), Some("websocket"));
        }
    }
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

// ---- Frames ----

/// Sends `bytes` on a fresh raw WebSocket and returns the gateway's close code.
async fn close_code_for(gw: &Gateway, bytes: &[u8]) -> u16 {
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(bytes).await;
    raw.close_code().await
}

/// Every protocol violation closes with 1002: unmasked frames, control frames over 125
/// bytes, fragmented control frames, reserved opcodes, RSV bits, stray continuations.
#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let (mut gw, before) = start("").await;
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "unmasked text".into(),
            frame(true, 0, op::TEXT, false, b"hi"),
        ),
        ("unmasked ping".into(), frame(true, 0, op::PING, false, b"")),
        (
            "ping of 126 bytes".into(),
            client_frame(op::PING, &[b'p'; 126]),
        ),
        ("close of 126 bytes".into(), {
            let mut p = 1000u16.to_be_bytes().to_vec();
            p.extend_from_slice(&[b'r'; 124]);
            client_frame(op::CLOSE, &p)
        }),
        (
            "fragmented ping".into(),
            frame(false, 0, op::PING, true, b"x"),
        ),
        (
            "fragmented pong".into(),
            frame(false, 0, op::PONG, true, b"x"),
        ),
        (
            "continuation without a start".into(),
            client_frame(op::CONT, b"x"),
        ),
        ("new text inside a fragmented message".into(), {
            let mut b = frame(false, 0, op::TEXT, true, b"a");
            b.extend(client_frame(op::TEXT, b"b"));
            b
        }),
    ];
    for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        cases.push((
            format!("reserved opcode {opcode:#x}"),
            client_frame(opcode, b"x"),
        ));
    }
    for rsv in 1..=7 {
        cases.push((
            format!("RSV bits {rsv:03b}"),
            frame(true, rsv, op::TEXT, true, b"x"),
        ));
    }
    for (name, bytes) in &cases {
        assert_eq!(close_code_for(&gw, bytes).await, 1002, "{name}");
    }
    assert_rss_bounded(&gw, before, 8 * MIB, "protocol violations");
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// A fragmented message whose total crosses `max_message_bytes` closes with 1009, though
/// each fragment is under `max_frame_bytes`; one just under the limit is echoed whole.
#[tokio::test]
async fn fragmented_message_over_the_limit_closes_1009() {
    let (mut gw, before) =
        start("[client]\nmax_frame_bytes = 1024\nmax_message_bytes = 4096\n").await;
    let chunk = [b'a'; 1000];
    let fragments = |n: usize| {
        let mut bytes = frame(false, 0, op::TEXT, true, &chunk);
        for i in 1..n {
            bytes.extend(frame(i == n - 1, 0, op::CONT, true, &chunk));
        }
        bytes
    };
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&fragments(4)).await;
    let echo = raw.read_frame().await.unwrap();
    assert_eq!((echo.opcode, echo.payload.len()), (op::TEXT, 4000));
    raw.send(&fragments(5)).await;
    assert_eq!(
        raw.until_close().await.1.unwrap(),
        (1009, "Message too big".into())
    );
    // A single frame over max_frame_bytes, and a huge announced length, too.
    assert_eq!(
        close_code_for(&gw, &client_frame(op::TEXT, &[b'b'; 1025])).await,
        1009
    );
    let mut huge = vec![0x81, 0xff];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&common::raw::MASK);
    assert_eq!(close_code_for(&gw, &huge).await, 1009);
    assert_rss_bounded(&gw, before, 8 * MIB, "oversized messages");
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// A message of `n` frames (a text frame, then continuations), each carrying `piece`.
fn fragmented(n: usize, piece: &[u8]) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let opcode = if i == 0 { op::TEXT } else { op::CONT };
            frame(i == n - 1, 0, opcode, true, piece)
        })
        .collect()
}

/// `client.max_fragments_per_message`: a message of exactly the cap's frames (pings
/// between them do not count) is echoed; one more frame closes with 1009, also when the
/// frames come in the same write as the handshake; and 200,000 empty continuations at the
/// default cap close with 1009 instead of being read on.
#[tokio::test]
async fn too_many_fragments_in_one_message_close_1009() {
    let (mut gw, before) = start("[client]\nmax_fragments_per_message = 100\n").await;
    let mut raw = Raw::websocket(gw.client_addr).await;
    // 100 frames, with a ping after the 50th.
    let mut at_cap = fragmented(100, b"a");
    let at = 50 * frame(false, 0, op::CONT, true, b"a").len();
    at_cap.splice(at..at, client_frame(op::PING, b"between"));
    raw.send(&at_cap).await;
    assert_eq!(raw.read_frame().await.unwrap().opcode, op::PONG);
    assert_eq!(raw.read_frame().await.unwrap().text(), "a".repeat(100));
    raw.send(&fragmented(101, b"c")).await;
    assert_eq!(
        raw.until_close().await.1.unwrap(),
        (1009, "Message too big".into())
    );
    // The frames in the handshake's own write (read ahead by the HTTP parser) count too.
    let mut request = upgrade_request("/prod", "").into_bytes();
    request.extend(fragmented(101, b"d"));
    let mut raw = Raw::connect(gw.client_addr).await;
    raw.send(&request).await;
    assert_eq!(raw.read_head().await.status, 101);
    assert_eq!(raw.close_code().await, 1009);
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
    assert_rss_bounded(&gw, before, 8 * MIB, "fragment floods");

    // The issue's case at the default cap (4096): 200,000 empty continuation frames.
    let (mut gw, _) = start("").await;
    let mut raw = Raw::websocket(gw.client_addr).await;
    let flood = fragmented(200_000, b"");
    for chunk in flood.chunks(64 * 1024) {
        if !raw.try_send(chunk).await {
            break;
        }
    }
    assert_eq!(raw.close_code().await, 1009);
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&fragmented(4096, b"")).await;
    raw.send(&client_frame(op::TEXT, b"after 4096 empty fragments"))
        .await;
    assert_eq!(
        raw.read_frame().await.unwrap().text(),
        "after 4096 empty fragments",
        "an empty message gets no answer; the next one is echoed"
    );
    drop(raw);
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// Invalid UTF-8 split across fragments closes with 1007; a valid character split across
/// fragments is echoed.
#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_1007() {
    let (mut gw, _) = start("").await;
    let mut raw = Raw::websocket(gw.client_addr).await;
    let mut euro = frame(false, 0, op::TEXT, true, b"price \xE2\x82");
    euro.extend(frame(true, 0, op::CONT, true, b"\xAC"));
    raw.send(&euro).await;
    assert_eq!(raw.read_frame().await.unwrap().text(), "price €");
    let mut bad = frame(false, 0, op::TEXT, true, b"price \xE2\x82");
    bad.extend(frame(true, 0, op::CONT, true, b"\x28"));
    raw.send(&bad).await;
    assert_eq!(raw.close_code().await, 1007);
    // Invalid in the first fragment, before the message is complete.
    let code = close_code_for(&gw, &frame(false, 0, op::TEXT, true, b"\xFF\xFE")).await;
    assert_eq!(code, 1007);
    // A truncated sequence at the end of the final fragment.
    let mut cut = frame(false, 0, op::TEXT, true, b"ok");
    cut.extend(frame(true, 0, op::CONT, true, b"\xF0\x9F"));
    assert_eq!(close_code_for(&gw, &cut).await, 1007);
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// Sends `body` as one text message in fragments under the frame limit.
async fn send_in_fragments(raw: &mut Raw, body: &[u8]) {
    let chunks: Vec<&[u8]> = body.chunks(30_000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { op::TEXT } else { op::CONT };
        raw.send(&frame(i == chunks.len() - 1, 0, opcode, true, chunk))
            .await;
    }
}

/// Deeply nested JSON is refused before route selection with AWS's `Bad request body`
/// frame; the connection stays open. Nesting far past serde's recursion limit (tens of
/// thousands of levels, sent in fragments under the frame limit) must not overflow a stack.
/// Text that is not JSON, however many brackets it opens, is routed (echoed) instead.
#[tokio::test]
async fn deeply_nested_json_gets_bad_request_body() {
    let (mut gw, before) = start("").await;
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::TEXT, br#"{"action":"whoami"}"#))
        .await;
    let whoami: Value = serde_json::from_str(&raw.read_frame().await.unwrap().text()).unwrap();
    let id = whoami["connectionId"].as_str().unwrap().to_owned();
    for depth in [65, 1000, 60_000] {
        // Both fit the 128 KiB message limit.
        let objects = depth.min(20_000);
        for body in [
            format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
            format!("{}1{}", r#"{"a":"#.repeat(objects), "}".repeat(objects)),
        ] {
            send_in_fragments(&mut raw, body.as_bytes()).await;
            let reply = raw.read_frame().await.expect("a reply");
            let v: Value = serde_json::from_str(&reply.text()).unwrap();
            assert_eq!(v["message"], "Bad request body", "depth {depth}");
            assert_eq!(v["connectionId"], id.as_str());
            let message_id = v["messageId"].as_str().unwrap();
            assert_eq!(message_id.len(), 16);
            let want = format!(
                r#"{{"message" : "Bad request body", "connectionId": "{id}", "messageId": "{message_id}"}}"#
            );
            assert_eq!(reply.text(), want);
        }
    }
    // At the limit it is routed (here: echoed by $default).
    let body = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    raw.send(&client_frame(op::TEXT, body.as_bytes())).await;
    assert_eq!(raw.read_frame().await.unwrap().text(), body);
    // Not JSON (unclosed, or cut short): echoed, scanned without recursion too.
    for body in [
        "[".repeat(120_000),
        format!("{}1{}", "[".repeat(60_000), "]".repeat(59_999)),
        r#"{"a":"#.repeat(20_000),
    ] {
        send_in_fragments(&mut raw, body.as_bytes()).await;
        let reply = raw.read_frame().await.expect("an echo");
        assert!(
            reply.payload == body.as_bytes(),
            "not echoed ({} bytes)",
            body.len()
        );
    }
    assert_rss_bounded(&gw, before, 8 * MIB, "deep JSON");
    raw.send(&common::raw::close_frame(1000, "")).await;
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

// ---- Floods ----

/// A connection flood against `limits.max_connections`: exactly the cap gets 101, the
/// rest 429; connections already open keep being served; a closed one frees its slot.
#[tokio::test]
async fn connection_flood_is_capped_and_others_are_served() {
    let (mut gw, before) = start("[limits]\nmax_connections = 20\n").await;
    // The warm-up client's slot is free once its session is gone.
    assert_no_sessions_left(&gw).await;
    let mut mine = Raw::websocket(gw.client_addr).await;
    let attempts = (0..150).map(|_| {
        let addr = gw.client_addr;
        tokio::spawn(async move { Raw::request(addr, &upgrade_request("/prod", "")).await })
    });
    let mut open = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        let (raw, head) = attempt.await.unwrap();
        match head.status {
            101 => open.push(raw),
            429 => {
                assert_eq!(head.header("retry-after"), Some("1"));
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(open.len(), 19, "the cap is 20, one slot was ours");
    assert_eq!(refused, 131);
    // Ours is still served during the flood.
    mine.send(&client_frame(op::TEXT, b"mine")).await;
    assert_eq!(mine.read_frame().await.unwrap().text(), "mine");
    assert_rss_bounded(&gw, before, 16 * MIB, "connection flood");
    // Closing one frees its slot.
    let mut one = open.pop().unwrap();
    one.send(&common::raw::close_frame(1000, "")).await;
    one.read_to_end().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (raw, head) = Raw::request(gw.client_addr, &upgrade_request("/prod", "")).await;
        if head.status == 101 {
            open.push(raw);
            break;
        }
        assert_eq!(head.status, 429);
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(open);
    drop(mine);
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// A message flood against `limits.connection_messages`: the burst is echoed, then each
/// message gets the `Too Many Requests` frame, and after `close_after_throttled` of them
/// the connection is closed with 1008. Another client is served throughout.
#[tokio::test]
async fn message_flood_is_throttled_then_closed_1008() {
    let (mut gw, before) = start(
        "[limits]\nconnection_messages = { rate = 0.1, burst = 5 }\nclose_after_throttled = 20\n",
    )
    .await;
    let (mut other, _) = gw.connect_with_id().await;
    let (mut ws, id) = gw.connect_with_id().await;
    // whoami used one token of the burst of five; four more are echoed.
    for i in 0..4 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
    }
    let flood: Vec<Message> = (0..200).map(|i| Message::text(format!("f{i}"))).collect();
    for m in flood {
        if ws.feed(m).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
    let mut echoes = Vec::new();
    let mut throttled = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with('{') => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["message"], "Too Many Requests");
                assert_eq!(v["connectionId"], id.as_str());
                assert_eq!(v["requestId"].as_str().map(str::len), Some(16));
                // AWS's frame shape, byte for byte.
                let want = format!(
                    r#"{{"message": "Too Many Requests", "connectionId":"{id}", "requestId":"{}"}}"#,
                    v["requestId"].as_str().unwrap()
                );
                assert_eq!(t.as_str(), want);
                throttled += 1;
            }
            Ok(Some(Ok(Message::Text(t)))) => echoes.push(t.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("close code"),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(echoes, Vec::<String>::new());
    assert_eq!(throttled, 19);
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "Too many requests");
    // The other client (its own bucket: 4 tokens left) is still served.
    other.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut other).await, "hello");
    assert_rss_bounded(&gw, before, 8 * MIB, "message flood");
    drop(ws);
    other.close(None).await.unwrap();
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}

/// An inbound flood towards a slow backend: at `max_inflight_per_connection` the gateway
/// stops reading, so the client's writes block (TCP backpressure) long before the flood is
/// written, and the gateway's memory stays flat.
#[tokio::test]
async fn inbound_flood_to_a_slow_backend_is_backpressured() {
    let backend = Backend::slow(Duration::from_secs(3)).await;
    let config = format!(
        "{}[client]\nmax_inflight_per_connection = 2\n[routes.\"$default\"]\nintegration = \"slow\"\n\
         [integrations.slow]\ntype = \"http\"\nurl = \"{}\"\n",
        base_config(),
        backend.url("/slow")
    );
    let gw = Gateway::start(&config).await;
    let before = rss_kib(gw.pid());
    let mut raw = Raw::websocket(gw.client_addr).await;
    let message = client_frame(op::TEXT, &[b'x'; 30_000]);
    let total: usize = 200 * 1024 * 1024;
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while written < total {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, raw.send(&message)).await {
            Ok(()) => written += message.len(),
            Err(_) => break,
        }
    }
    eprintln!("inbound flood: {written} bytes accepted before the writes blocked");
    assert!(
        written < 32 * 1024 * 1024,
        "the gateway kept reading: {written} bytes accepted"
    );
    // Exactly the in-flight cap reached the backend.
    backend.next().await;
    backend.next().await;
    backend.expect_none(Duration::from_millis(300)).await;
    assert_rss_bounded(&gw, before, 8 * MIB, "inbound flood");
}

// ---- Backend connections ----

/// Open file descriptors of the gateway process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

/// Waits (up to `limit`) until the gateway holds at most `bound` descriptors; returns the
/// last count.
async fn fds_settle_to(gw: &Gateway, bound: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let now = open_fds(gw.pid());
        if now <= bound || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Descriptors the gateway may open or keep besides its pooled backend connections.
const FD_MARGIN: usize = 4;

/// A gateway whose `$disconnect` calls a slow HTTP backend, with `[http_client]` set to
/// `pool`; returns it, the backend, and the gateway's descriptor count once warmed up.
async fn disconnect_gateway(pool: &str) -> (Gateway, Backend, usize) {
    // Slow answers keep the calls of a burst in flight together: one connection each.
    let backend = Backend::slow(Duration::from_millis(300)).await;
    let extra = format!(
        "[routes.\"$disconnect\"]\nintegration = \"rec\"\n\
         [integrations.rec]\ntype = \"http\"\nurl = \"{}\"\n[http_client]\n{pool}",
        backend.url("/disconnect")
    );
    let mut gw = Gateway::start(&echo_config(&extra)).await;
    assert_serving(&mut gw).await;
    backend.next().await; // the warm-up client's $disconnect
    assert_no_sessions_left(&gw).await;
    let baseline = open_fds(gw.pid());
    (gw, backend, baseline)
}

/// Opens `n` connections, drops them all at once (each runs `$disconnect`), and waits
/// until the backend has received every call.
async fn disconnect_burst(gw: &Gateway, backend: &Backend, n: usize) {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        open.push(Raw::websocket(gw.client_addr).await);
    }
    drop(open);
    for _ in 0..n {
        backend.next().await;
    }
    assert_no_sessions_left(gw).await;
}

/// After a burst of 200 `$disconnect` calls at once, the backend HTTP client keeps at most
/// `http_client.max_idle_per_host` idle connections: the gateway's descriptors settle to
/// the cap (plus a small margin), not one per call, although the idle timeout is long.
#[tokio::test]
async fn idle_backend_connections_are_capped_per_host() {
    let cap = 8;
    let (mut gw, backend, baseline) = disconnect_gateway(&format!(
        "max_idle_per_host = {cap}\nidle_timeout_ms = 60000\n"
    ))
    .await;
    disconnect_burst(&gw, &backend, 200).await;
    // The last calls answer 300 ms after they arrive; give them time to return their
    // connections to the pool.
    let bound = baseline + cap + FD_MARGIN;
    let settled = fds_settle_to(&gw, bound, Duration::from_secs(5)).await;
    eprintln!("disconnect burst: {baseline} descriptors before, {settled} after (bound {bound})");
    assert!(
        settled <= bound,
        "{settled} descriptors after the burst; at most {bound} expected (cap {cap})"
    );
    // And it stays there: nothing else was waiting to be closed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = open_fds(gw.pid());
    assert!(later <= bound, "{later} descriptors later; bound {bound}");
    assert_serving(&mut gw).await;
}

/// With a short `http_client.idle_timeout_ms`, the idle backend connections a burst left
/// behind are closed once it passes (within twice the timeout): the descriptors return to
/// what the gateway held before.
#[tokio::test]
async fn idle_backend_connections_close_after_the_idle_timeout() {
    let idle_ms = 500;
    let (mut gw, backend, baseline) = disconnect_gateway(&format!(
        "max_idle_per_host = 64\nidle_timeout_ms = {idle_ms}\n"
    ))
    .await;
    disconnect_burst(&gw, &backend, 100).await;
    let pooled = open_fds(gw.pid());
    eprintln!("after the burst: {pooled} descriptors (baseline {baseline})");
    // Calls end 300 ms after they arrive; then at most two idle periods pass.
    let bound = baseline + FD_MARGIN;
    let settled = fds_settle_to(&gw, bound, Duration::from_millis(300 + 3 * idle_ms)).await;
    assert!(
        settled <= bound,
        "{settled} descriptors {}ms after the burst; at most {bound} expected",
        300 + 3 * idle_ms
    );
    assert_serving(&mut gw).await;
}

/// When many connections close at once, at most 32 `$disconnect` calls are in flight per
/// node: with a backend that answers each after 300 ms, no more than 32 calls arrive before
/// the first answers, and every one arrives in the end.
#[tokio::test]
async fn disconnect_calls_of_a_mass_close_are_bounded_in_flight() {
    const IN_FLIGHT: usize = 32;
    let (mut gw, backend, _) = disconnect_gateway("").await;
    let n = 100;
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        open.push(Raw::websocket(gw.client_addr).await);
    }
    drop(open);
    backend.next().await;
    let first = std::time::Instant::now();
    let mut early = 1;
    for _ in 1..n {
        backend.next().await;
        // The first calls answer 300 ms after they arrived; before that, no permit is free.
        if first.elapsed() < Duration::from_millis(200) {
            early += 1;
        }
    }
    eprintln!("{early} of {n} $disconnect calls arrived within 200 ms of the first");
    assert!(
        early <= IN_FLIGHT,
        "{early} calls in flight at once; at most {IN_FLIGHT} expected"
    );
    assert_no_sessions_left(&gw).await;
    assert_serving(&mut gw).await;
}
