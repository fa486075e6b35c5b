//! WebSocket protocol conformance, modelled on the Autobahn|Testsuite case list (sections
//! 1 framing, 2 pings/pongs, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8,
//! 7 close handling, 9 limits), run against the echo route: `$default` → mock
//! `$input.body`, two-way. Frames are written by hand (tests/common/raw.rs). Each case
//! names its Autobahn number and states the expected behaviour in a comment; where
//! Switchboard answers differently from a plain echo server on purpose (AWS's limits and
//! binary policy, no frame for an empty answer), the case says so. docs/conformance.md
//! has the summary and how to run Autobahn's own fuzzing client.

mod common;

use std::time::Duration;

use common::raw::{Frame, Raw, client_frame, close_frame, frame, op};
use common::*;

/// The echo route on `$default`, plus `extra` sections.
fn echo(extra: &str) -> String {
    format!(
        "{}[routes.\"$default\"]\nintegration = \"echo\"\ntwo_way = true\n\
         [integrations.echo]\ntype = \"mock\"\ntemplate = \"$input.body\"\n{extra}",
        base_config()
    )
}

async fn gateway() -> Gateway {
    Gateway::start(&echo("")).await
}

/// The next frame, which must exist.
async fn next(raw: &mut Raw) -> Frame {
    raw.read_frame()
        .await
        .expect("the gateway closed the socket")
}

/// Asserts the next frame is a text echo of `payload`.
async fn expect_text(raw: &mut Raw, payload: &[u8], case: &str) {
    let f = next(raw).await;
    assert_eq!(
        (f.fin, f.rsv, f.opcode),
        (true, 0, op::TEXT),
        "{case}: {f:?}"
    );
    assert_eq!(f.payload, payload, "{case}");
}

/// Asserts the next frame is a pong carrying `payload`.
async fn expect_pong(raw: &mut Raw, payload: &[u8], case: &str) {
    let f = next(raw).await;
    assert_eq!((f.fin, f.opcode), (true, op::PONG), "{case}: {f:?}");
    assert_eq!(f.payload, payload, "{case}");
}

/// Asserts nothing but the close with `code` comes, then the TCP connection ends.
async fn expect_close_then_eof(raw: &mut Raw, code: u16, case: &str) {
    let (before, close) = raw.until_close().await;
    assert!(
        before.is_empty(),
        "{case}: frames before the close: {before:?}"
    );
    assert_eq!(close.map(|c| c.0), Some(code), "{case}");
    // No further frame (the gateway may wait briefly for our close reply).
    assert_eq!(
        raw.read_frame().await,
        None,
        "{case}: a frame after the close"
    );
}

/// Proves nothing was sent before: a marker message's echo is the very next frame.
async fn expect_nothing_before_marker(raw: &mut Raw, case: &str) {
    raw.send(&client_frame(op::TEXT, b"marker")).await;
    expect_text(raw, b"marker", case).await;
}

/// Writes `bytes` one byte at a time, 1 ms apart (Autobahn's "chopped" variants).
async fn send_chopped(raw: &mut Raw, bytes: &[u8]) {
    for b in bytes {
        raw.send(std::slice::from_ref(b)).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---- 1 Framing ----

/// 1.1.1–1.1.8 text messages of 0, 125, 126, 127, 128, 65535, 65536 bytes; 1.2.x binary.
#[tokio::test]
async fn section_1_framing() {
    let gw = gateway().await;
    // 1.1.2–1.1.5 and a frame at the 32 KiB limit: echoed byte for byte, one frame each
    // (7-bit, 16-bit lengths).
    for len in [125usize, 126, 127, 128, 32_768] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let payload = vec![b'*'; len];
        raw.send(&client_frame(op::TEXT, &payload)).await;
        expect_text(&mut raw, &payload, &format!("1.1 text of {len}")).await;
    }
    // 1.1.1 empty text: the mock answers an empty body, and an empty answer sends no frame
    // (AWS's rule for integration answers), so the next frame is the marker's echo.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::TEXT, b"")).await;
    expect_nothing_before_marker(&mut raw, "1.1.1").await;
    // 1.1.6–1.1.7 65535 and 65536 bytes in one frame: over the AWS frame limit
    // (`client.max_frame_bytes` = 32 KiB): close 1009.
    for len in [65_535usize, 65_536] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(op::TEXT, &vec![b'*'; len])).await;
        expect_close_then_eof(&mut raw, 1009, &format!("1.1 text of {len}")).await;
    }
    // 1.1.8 65536 bytes in one frame written in chunks of 997 bytes: the same 1009.
    let mut raw = Raw::websocket(gw.client_addr).await;
    let bytes = client_frame(op::TEXT, &vec![b'*'; 65_536]);
    for chunk in bytes.chunks(997) {
        if !raw.try_send(chunk).await {
            break;
        }
    }
    expect_close_then_eof(&mut raw, 1009, "1.1.8").await;
    // 1.2.x binary messages of any size: AWS rejects binary frames, so the gateway closes
    // with 1003 (`client.binary_frames = "reject"`).
    for len in [0usize, 125, 126, 65_535] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(op::BINARY, &vec![0xfe; len])).await;
        let code = if len > 32_768 { 1009 } else { 1003 };
        expect_close_then_eof(&mut raw, code, &format!("1.2 binary of {len}")).await;
    }
}

/// 1.1.6–1.1.8 again with the limits raised: a 65536-byte text frame is echoed.
#[tokio::test]
async fn section_1_framing_with_raised_limits() {
    let gw = Gateway::start(&echo(
        "[client]\nmax_frame_bytes = 1048576\nmax_message_bytes = 1048576\noutbound_queue_bytes = 4194304\n",
    ))
    .await;
    for len in [65_535usize, 65_536] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let payload = vec![b'*'; len];
        raw.send(&client_frame(op::TEXT, &payload)).await;
        expect_text(&mut raw, &payload, &format!("1.1 text of {len}")).await;
    }
}

/// 1.2.x with `client.binary_frames = "base64"`: a binary message is routed to `$default`
/// base64-encoded, so the echo is a text frame holding the base64 of the payload.
#[tokio::test]
async fn section_1_binary_as_base64() {
    let gw = Gateway::start(&echo("[client]\nbinary_frames = \"base64\"\n")).await;
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::BINARY, &[0xfe, 0x00, 0xff]))
        .await;
    expect_text(&mut raw, b"/gD/", "1.2 binary as base64").await;
}

// ---- 2 Pings and pongs ----

#[tokio::test]
async fn section_2_pings_and_pongs() {
    let gw = gateway().await;
    // 2.1–2.4 a ping with no payload, text, binary and a 125-byte payload: a pong with the
    // same payload.
    for (case, payload) in [
        ("2.1", Vec::new()),
        ("2.2", b"Hello, world!".to_vec()),
        ("2.3", vec![0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff]),
        ("2.4", vec![0xfe; 125]),
    ] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(op::PING, &payload)).await;
        expect_pong(&mut raw, &payload, case).await;
    }
    // 2.5 a ping with 126 bytes (control frames are at most 125): close 1002.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::PING, &[0xfe; 126])).await;
    expect_close_then_eof(&mut raw, 1002, "2.5").await;
    // 2.6 a 125-byte ping written one byte at a time: a pong.
    let mut raw = Raw::websocket(gw.client_addr).await;
    send_chopped(&mut raw, &client_frame(op::PING, &[b'x'; 125])).await;
    expect_pong(&mut raw, &[b'x'; 125], "2.6").await;
    // 2.7–2.8 unsolicited pongs, with and without payload: ignored (nothing sent back).
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::PONG, b"")).await;
    raw.send(&client_frame(op::PONG, b"unsolicited")).await;
    expect_nothing_before_marker(&mut raw, "2.7-2.8").await;
    // 2.9 an unsolicited pong, then a ping: only the ping's pong.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::PONG, b"unsolicited")).await;
    raw.send(&client_frame(op::PING, b"solicited")).await;
    expect_pong(&mut raw, b"solicited", "2.9").await;
    expect_nothing_before_marker(&mut raw, "2.9").await;
    // 2.10–2.11 ten pings in a row (then the same written byte by byte): ten pongs, in
    // order.
    for chopped in [false, true] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let pings: Vec<u8> = (0..10)
            .flat_map(|i| client_frame(op::PING, format!("ping {i}").as_bytes()))
            .collect();
        if chopped {
            send_chopped(&mut raw, &pings).await;
        } else {
            raw.send(&pings).await;
        }
        for i in 0..10 {
            expect_pong(&mut raw, format!("ping {i}").as_bytes(), "2.10").await;
        }
    }
}

// ---- 3 Reserved bits ----

/// 3.1–3.7 a frame with RSV bits set (no extension is negotiated): close 1002. The case's
/// valid text before it is echoed (the test waits for that echo before sending the bad
/// frame: answers come from concurrent integration calls, and a protocol error read right
/// behind a message may close the connection before its answer is written — Autobahn's
/// "non-strict" outcome); the ping after the bad frame gets no pong.
#[tokio::test]
async fn section_3_reserved_bits() {
    let gw = gateway().await;
    let cases: [(&str, u8, u8); 7] = [
        ("3.1", 1, op::TEXT),
        ("3.2", 2, op::TEXT),
        ("3.3", 3, op::TEXT),
        ("3.4", 4, op::TEXT),
        ("3.5", 5, op::BINARY),
        ("3.6", 6, op::PING),
        ("3.7", 7, op::CLOSE),
    ];
    for (case, rsv, opcode) in cases {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(op::TEXT, b"Hello, world!")).await;
        expect_text(&mut raw, b"Hello, world!", case).await;
        let payload: &[u8] = if opcode == op::CLOSE {
            &[0x03, 0xe8]
        } else {
            b"x"
        };
        let mut bytes = frame(true, rsv, opcode, true, payload);
        bytes.extend(client_frame(op::PING, b""));
        raw.send(&bytes).await;
        expect_close_then_eof(&mut raw, 1002, case).await;
    }
}

// ---- 4 Opcodes ----

/// 4.1.1–4.1.5 reserved data opcodes 3–7 and 4.2.1–4.2.5 reserved control opcodes
/// 0xB–0xF, alone or after a valid text and followed by a ping: close 1002 (the text
/// before is echoed — the test waits for it, see section 3 — and the ping after gets no
/// pong).
#[tokio::test]
async fn section_4_opcodes() {
    let gw = gateway().await;
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let case = format!("4.x opcode {opcode:#x}");
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(opcode, b"")).await;
        expect_close_then_eof(&mut raw, 1002, &case).await;

        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(op::TEXT, b"Hello, world!")).await;
        expect_text(&mut raw, b"Hello, world!", &case).await;
        let mut bytes = client_frame(opcode, b"reserved opcode payload");
        bytes.extend(client_frame(op::PING, b""));
        raw.send(&bytes).await;
        expect_close_then_eof(&mut raw, 1002, &case).await;
    }
}

// ---- 5 Fragmentation ----

#[tokio::test]
async fn section_5_fragmentation() {
    let gw = gateway().await;
    // 5.1–5.2 a ping or a pong in two fragments: close 1002.
    for (case, opcode) in [("5.1", op::PING), ("5.2", op::PONG)] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let mut bytes = frame(false, 0, opcode, true, b"frag");
        bytes.extend(frame(true, 0, op::CONT, true, b"ment"));
        raw.send(&bytes).await;
        expect_close_then_eof(&mut raw, 1002, case).await;
    }
    // 5.3–5.5 a text message in two fragments (sent together, apart, byte by byte):
    // echoed as one message.
    for (case, how) in [("5.3", 0), ("5.4", 1), ("5.5", 2)] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let first = frame(false, 0, op::TEXT, true, b"frag");
        let second = frame(true, 0, op::CONT, true, b"ment");
        match how {
            0 => raw.send(&[first, second].concat()).await,
            1 => {
                raw.send(&first).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                raw.send(&second).await;
            }
            _ => send_chopped(&mut raw, &[first, second].concat()).await,
        }
        expect_text(&mut raw, b"fragment", case).await;
    }
    // 5.6–5.8 a ping between the fragments of a text message (together, apart, byte by
    // byte): the pong first, then the echo of the whole message.
    for (case, how) in [("5.6", 0), ("5.7", 1), ("5.8", 2)] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let parts = [
            frame(false, 0, op::TEXT, true, b"frag"),
            client_frame(op::PING, b"between"),
            frame(true, 0, op::CONT, true, b"ment"),
        ];
        match how {
            0 => raw.send(&parts.concat()).await,
            1 => {
                for part in &parts {
                    raw.send(part).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            _ => send_chopped(&mut raw, &parts.concat()).await,
        }
        expect_pong(&mut raw, b"between", case).await;
        expect_text(&mut raw, b"fragment", case).await;
    }
    // 5.9–5.14 a continuation with no message started (final or not, alone or followed by
    // fragments): close 1002, and nothing is echoed.
    for (case, fin) in [("5.9", true), ("5.12", false)] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let mut bytes = frame(fin, 0, op::CONT, true, b"non-continuation payload");
        bytes.extend(client_frame(op::TEXT, b"Hello, world!"));
        raw.send(&bytes).await;
        expect_close_then_eof(&mut raw, 1002, case).await;
    }
    // 5.15 a complete fragmented message, then a continuation, then more: the first is
    // echoed (the test waits for it, see section 3), then close 1002.
    let mut raw = Raw::websocket(gw.client_addr).await;
    let first = [
        frame(false, 0, op::TEXT, true, b"frag1"),
        frame(true, 0, op::CONT, true, b"frag2"),
    ]
    .concat();
    raw.send(&first).await;
    expect_text(&mut raw, b"frag1frag2", "5.15").await;
    let stray = [
        frame(false, 0, op::CONT, true, b"frag3"),
        frame(true, 0, op::CONT, true, b"frag4"),
    ]
    .concat();
    raw.send(&stray).await;
    expect_close_then_eof(&mut raw, 1002, "5.15").await;
    // 5.18 a new text message starts while one is being fragmented: close 1002.
    let mut raw = Raw::websocket(gw.client_addr).await;
    let bytes = [
        frame(false, 0, op::TEXT, true, b"frag1"),
        frame(true, 0, op::TEXT, true, b"frag2"),
    ]
    .concat();
    raw.send(&bytes).await;
    expect_close_then_eof(&mut raw, 1002, "5.18").await;
    // 5.19–5.20 a text message in five fragments with pings between them, sent over time:
    // each pong as its ping arrives, then the echo of the whole message.
    let mut raw = Raw::websocket(gw.client_addr).await;
    for i in 1..=5u8 {
        let opcode = if i == 1 { op::TEXT } else { op::CONT };
        raw.send(&frame(i == 5, 0, opcode, true, format!("f{i}").as_bytes()))
            .await;
        if i == 2 || i == 4 {
            let payload = format!("pongme {i}");
            raw.send(&client_frame(op::PING, payload.as_bytes())).await;
            expect_pong(&mut raw, payload.as_bytes(), "5.19").await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_text(&mut raw, b"f1f2f3f4f5", "5.19").await;
}

// ---- 6 UTF-8 handling ----

#[tokio::test]
async fn section_6_utf8() {
    let gw = gateway().await;
    // 6.1.1–6.1.3 an empty text message, whole or in empty fragments: valid; the empty
    // echo sends no frame (as 1.1.1).
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(
        &[
            frame(false, 0, op::TEXT, true, b""),
            frame(false, 0, op::CONT, true, b""),
            frame(true, 0, op::CONT, true, b""),
        ]
        .concat(),
    )
    .await;
    expect_nothing_before_marker(&mut raw, "6.1").await;
    // 6.2.1–6.2.4 valid UTF-8 in one frame, split at every byte position, and one byte per
    // fragment: echoed intact.
    let valid = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞".as_bytes();
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::TEXT, valid)).await;
    expect_text(&mut raw, valid, "6.2.1").await;
    for split in 1..valid.len() {
        let bytes = [
            frame(false, 0, op::TEXT, true, &valid[..split]),
            frame(true, 0, op::CONT, true, &valid[split..]),
        ]
        .concat();
        raw.send(&bytes).await;
        expect_text(&mut raw, valid, &format!("6.2.2 split at {split}")).await;
    }
    let per_byte: Vec<u8> = valid
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            let opcode = if i == 0 { op::TEXT } else { op::CONT };
            frame(i == valid.len() - 1, 0, opcode, true, &[*b])
        })
        .collect();
    raw.send(&per_byte).await;
    expect_text(&mut raw, valid, "6.2.4").await;
    // 6.5–6.7, 6.9–6.11 boundary and noncharacter code points are valid: echoed.
    let valid_cases: &[&[u8]] = &[
        b"\x00",
        b"\x7f",
        b"\xc2\x80",
        b"\xdf\xbf",
        b"\xe0\xa0\x80",
        b"\xef\xbf\xbf",
        b"\xf0\x90\x80\x80",
        b"\xf4\x8f\xbf\xbf",
        b"\xef\xbf\xbe",
        b"\xee\x80\x80",
        b"\xef\xbb\xbf",
    ];
    for bytes in valid_cases {
        raw.send(&client_frame(op::TEXT, bytes)).await;
        expect_text(&mut raw, bytes, &format!("6.x valid {bytes:02x?}")).await;
    }
    // 6.3–6.4, 6.6, 6.8, 6.10–6.21 invalid UTF-8 — lone continuation bytes, truncated
    // sequences, overlong forms, surrogates, code points above U+10FFFF, 5- and 6-byte
    // forms, 0xFE/0xFF — in one frame or split into fragments: close 1007. The
    // connection fails fast: an invalid fragment closes before the message is complete.
    let invalid_cases: &[&[u8]] = &[
        b"\x80",
        b"\xbf",
        b"\xc0\x80",
        b"\xc1\xbf",
        b"\xe0\x80\x80",
        b"\xe0\x9f\xbf",
        b"\xf0\x80\x80\x80",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\xfc\x84\x80\x80\x80\x80",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xed\xa0\x80\xed\xb0\x80",
        b"\xfe",
        b"\xff",
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        b"\xc2",
        b"\xe0\xa0",
        b"\xf0\x90\x80",
    ];
    for bytes in invalid_cases {
        let case = format!("6.x invalid {bytes:02x?}");
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&client_frame(op::TEXT, bytes)).await;
        expect_close_then_eof(&mut raw, 1007, &case).await;
        // The same split into one-byte fragments.
        let mut raw = Raw::websocket(gw.client_addr).await;
        let fragments: Vec<u8> = bytes
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                let opcode = if i == 0 { op::TEXT } else { op::CONT };
                frame(i == bytes.len() - 1, 0, opcode, true, &[*b])
            })
            .collect();
        raw.send(&fragments).await;
        expect_close_then_eof(&mut raw, 1007, &format!("{case} fragmented")).await;
    }
    // 6.4.1 fail fast: an invalid first fragment closes 1007 with the message unfinished.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&frame(
        false,
        0,
        op::TEXT,
        true,
        b"\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80",
    ))
    .await;
    expect_close_then_eof(&mut raw, 1007, "6.4.1").await;
}

// ---- 7 Close handling ----

#[tokio::test]
async fn section_7_close_handling() {
    let gw = gateway().await;
    // 7.1.1 a text, then a close 1000: the echo, then the close echoed (1000).
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::TEXT, b"Hello, world!")).await;
    expect_text(&mut raw, b"Hello, world!", "7.1.1").await;
    raw.send(&close_frame(1000, "")).await;
    expect_close_then_eof(&mut raw, 1000, "7.1.1").await;
    // 7.1.2–7.1.4 a close followed by a second close, a ping, or a text: only the close
    // reply; nothing after the close is answered, and the TCP connection ends.
    for (case, after) in [
        ("7.1.2", close_frame(1000, "")),
        ("7.1.3", client_frame(op::PING, b"after close")),
        ("7.1.4", client_frame(op::TEXT, b"after close")),
    ] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&[close_frame(1000, ""), after].concat()).await;
        expect_close_then_eof(&mut raw, 1000, case).await;
    }
    // 7.1.5 a close in the middle of a fragmented message: the close is answered, the
    // unfinished message is not echoed.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(
        &[
            frame(false, 0, op::TEXT, true, b"frag1"),
            close_frame(1000, ""),
        ]
        .concat(),
    )
    .await;
    expect_close_then_eof(&mut raw, 1000, "7.1.5").await;
    // 7.1.6 a large message, then a close: the echo is written before the close reply.
    let mut raw = Raw::websocket(gw.client_addr).await;
    let big = vec![b'x'; 30_000];
    raw.send(&[client_frame(op::TEXT, &big), close_frame(1000, "")].concat())
        .await;
    let (before, close) = raw.until_close().await;
    assert_eq!(close.map(|c| c.0), Some(1000), "7.1.6");
    assert!(
        before.iter().all(|f| f.payload == big),
        "7.1.6: unexpected frames {before:?}"
    );
    // 7.3.1 a close with no payload: answered with an empty close (no code to echo).
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::CLOSE, b"")).await;
    let (before, close) = raw.until_close().await;
    assert!(before.is_empty());
    assert_eq!(close, None, "7.3.1: the reply to an empty close is empty");
    // 7.3.2 a close payload of one byte: close 1002.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::CLOSE, b"\x03")).await;
    expect_close_then_eof(&mut raw, 1002, "7.3.2").await;
    // 7.3.3–7.3.5 a close with a code, with a reason, with a 123-byte reason: echoed.
    for (case, reason) in [
        ("7.3.3", String::new()),
        ("7.3.4", "Hello World!".to_owned()),
        ("7.3.5", "*".repeat(123)),
    ] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&close_frame(1000, &reason)).await;
        let (_, close) = raw.until_close().await;
        assert_eq!(close, Some((1000, reason)), "{case}");
    }
    // 7.3.6 a close with a 124-byte reason (a 126-byte control frame): close 1002.
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&close_frame(1000, &"*".repeat(124))).await;
    expect_close_then_eof(&mut raw, 1002, "7.3.6").await;
    // 7.5.1 a close reason that is not UTF-8: close 1007.
    let mut raw = Raw::websocket(gw.client_addr).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80");
    raw.send(&client_frame(op::CLOSE, &payload)).await;
    expect_close_then_eof(&mut raw, 1007, "7.5.1").await;
    // 7.7.1–7.7.13 valid close codes are echoed: 1000–1003, 1007–1011, 1012 and 1013
    // (registered after Autobahn was written), 3000, 3999, 4000, 4999.
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 3999, 4000, 4999,
    ] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&close_frame(code, "")).await;
        expect_close_then_eof(&mut raw, code, &format!("7.7 code {code}")).await;
    }
    // 7.9.1–7.9.13 invalid close codes (0, 999, 1004–1006, 1014–1016, 1100, 2000, 2999,
    // 5000, 65535): answered with 1002.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&close_frame(code, "")).await;
        expect_close_then_eof(&mut raw, 1002, &format!("7.9 code {code}")).await;
    }
}

/// The close frame is not lost to a reset: a client that goes on writing an oversized
/// message (1 MiB, over `client.max_message_bytes`) after the gateway refused it still
/// reads the 1009 close. Closing a socket with received bytes unread makes the kernel send
/// a reset and throw away what it has not sent yet — here the close frame, queued behind
/// an echo the client has not read (its receive window is kept small). The gateway
/// half-closes instead, and reads on until the client closes. Twenty rounds, half with one
/// 1 MiB frame and half with 32 KiB fragments.
#[tokio::test]
async fn section_7_close_survives_a_client_still_sending() {
    let gw = gateway().await;
    let echoed = vec![b'e'; ECHO];
    let payload = vec![b'x'; 1024 * 1024];
    let one_frame = client_frame(op::TEXT, &payload);
    let chunks: Vec<&[u8]> = payload.chunks(32_768).collect();
    let fragments: Vec<u8> = chunks
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            let opcode = if i == 0 { op::TEXT } else { op::CONT };
            frame(i == chunks.len() - 1, 0, opcode, true, c)
        })
        .collect();
    for round in 0..20 {
        let oversized = if round % 2 == 0 {
            &one_frame
        } else {
            &fragments
        };
        let mut raw = Raw::websocket_with_receive_buffer(gw.client_addr, 4096).await;
        // An echo the client does not read yet: part of it waits in the gateway's queue.
        raw.send(&client_frame(op::TEXT, &echoed)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Enough of the oversized message for the gateway to refuse it and close ...
        let (first, rest) = oversized.split_at(160 * 1024);
        raw.send(first).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // ... while the rest is still on its way, in several writes.
        for chunk in rest.chunks(128 * 1024) {
            if !raw.try_send(chunk).await {
                break;
            }
        }
        let echo = raw
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("round {round}: the socket ended before the echo"));
        assert_eq!(echo.payload.len(), ECHO, "round {round}");
        let close = raw
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("round {round}: the socket ended without a close frame"));
        assert_eq!(
            close.close(),
            Some((1009, "Message too big".to_owned())),
            "round {round}"
        );
    }
}

/// The echo queued ahead of the close in [`section_7_close_survives_a_client_still_sending`].
const ECHO: usize = 16 * 1024;

/// 7.x `$disconnect` sees what the client's close said (an extension of Autobahn's
/// cases: the close code and reason reach the backend).
#[tokio::test]
async fn section_7_close_reaches_disconnect() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&echo(&format!(
        "[routes.\"$disconnect\"]\nintegration = \"hook\"\n[integrations.hook]\ntype = \"http\"\nurl = \"{}\"\n",
        backend.url("/hook")
    )))
    .await;
    for (payload, code, reason) in [
        (close_frame(4000, "bye"), 4000, "bye"),
        (
            client_frame(op::CLOSE, b""),
            1005,
            "Client-side close frame status not set",
        ),
        (close_frame(1014, ""), 1002, "Protocol violation"),
    ] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        raw.send(&payload).await;
        raw.until_close().await;
        let event = backend.next_event("DISCONNECT").await;
        assert_eq!(event["requestContext"]["disconnectStatusCode"], code);
        assert_eq!(event["requestContext"]["disconnectReason"], reason);
    }
}

// ---- 9 Limits and performance ----

#[tokio::test]
async fn section_9_limits() {
    let gw = gateway().await;
    // 9.1.1 a 64 KiB text message, in 32 KiB frames (AWS's frame limit): echoed whole.
    let payload = vec![b'*'; 65_536];
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(
        &[
            frame(false, 0, op::TEXT, true, &payload[..32_768]),
            frame(true, 0, op::CONT, true, &payload[32_768..]),
        ]
        .concat(),
    )
    .await;
    expect_text(&mut raw, &payload, "9.1.1").await;
    // 9.1.2–9.1.6 messages of 256 KiB to 16 MiB (here 256 KiB and 1 MiB, in 32 KiB
    // frames): over AWS's 128 KiB message limit, close 1009 as soon as the total crosses
    // it; the rest is never read into memory.
    for size in [256 * 1024usize, 1024 * 1024] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let chunk = vec![b'*'; 32_768];
        let frames = size / chunk.len();
        for i in 0..frames {
            let opcode = if i == 0 { op::TEXT } else { op::CONT };
            if !raw
                .try_send(&frame(i == frames - 1, 0, opcode, true, &chunk))
                .await
            {
                break;
            }
        }
        expect_close_then_eof(&mut raw, 1009, &format!("9.1 text of {size}")).await;
    }
    // 9.2.x binary messages: close 1003 (binary is rejected before size matters).
    let mut raw = Raw::websocket(gw.client_addr).await;
    raw.send(&client_frame(op::BINARY, &[0u8; 32_768])).await;
    expect_close_then_eof(&mut raw, 1003, "9.2").await;
    // 9.3.x–9.4.x a 128 KiB message in fragments of 64 B to 32 KiB: echoed whole.
    let payload = vec![b'f'; 128 * 1024];
    for fragment in [64usize, 4096, 32_768] {
        let mut raw = Raw::websocket(gw.client_addr).await;
        let chunks: Vec<&[u8]> = payload.chunks(fragment).collect();
        let bytes: Vec<u8> = chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                let opcode = if i == 0 { op::TEXT } else { op::CONT };
                frame(i == chunks.len() - 1, 0, opcode, true, c)
            })
            .collect();
        raw.send(&bytes).await;
        expect_text(&mut raw, &payload, &format!("9.3 fragments of {fragment}")).await;
    }
    // 9.7.x–9.8.x 1000 small messages in a burst: all echoed. Integration calls run
    // concurrently, so answers may come in any order (as on AWS): compared as a set.
    let mut raw = Raw::websocket(gw.client_addr).await;
    let burst: Vec<u8> = (0..1000)
        .flat_map(|i| client_frame(op::TEXT, format!("message {i:04}").as_bytes()))
        .collect();
    raw.send(&burst).await;
    let mut got: Vec<String> = Vec::new();
    for _ in 0..1000 {
        got.push(next(&mut raw).await.text());
    }
    got.sort();
    let want: Vec<String> = (0..1000).map(|i| format!("message {i:04}")).collect();
    assert_eq!(got, want, "9.7");
}
