//! Raw WebSocket over a plain TCP socket, written by hand, for tests where a real client
//! would refuse to misbehave: unmasked frames, reserved bits and opcodes, oversized or
//! fragmented control frames, invalid UTF-8 across fragments, hand-made handshakes.
//!
//! Frames from the test are masked (as a client's must be) unless asked otherwise; frames
//! from the gateway are parsed and must be unmasked.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A `Sec-WebSocket-Key` (base64 of 16 bytes).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// How long any single read waits before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// Opcodes.
pub mod op {
    /// Continuation.
    pub const CONT: u8 = 0x0;
    /// Text.
    pub const TEXT: u8 = 0x1;
    /// Binary.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// The masking key every masked frame uses.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encodes one frame. `rsv` is the three reserved bits (0–7); `mask` masks the payload
/// with [`MASK`] (clients must).
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let mask_bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked, final frame: what a well-behaved client sends.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, true, payload)
}

/// A masked close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    client_frame(op::CLOSE, &payload)
}

/// The request of a valid upgrade to `path`, with `extra` header lines (each ending in
/// `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A frame from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// The RSV bits.
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Payload (the gateway never masks).
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame (`None` for an empty close payload).
    pub fn close(&self) -> Option<(u16, String)> {
        assert_eq!(self.opcode, op::CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                String::from_utf8_lossy(&self.payload[2..]).into_owned(),
            )
        })
    }

    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone()).expect("UTF-8 payload")
    }
}

/// An HTTP response head read from a raw socket.
#[derive(Debug, Clone)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw TCP connection to the gateway.
pub struct Raw {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
}

impl Raw {
    /// Opens a TCP connection.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens a connection, sends `request` and reads the response head.
    pub async fn request(addr: SocketAddr, request: &str) -> (Raw, Head) {
        let mut raw = Raw::connect(addr).await;
        raw.send(request.as_bytes()).await;
        let head = raw.read_head().await;
        (raw, head)
    }

    /// Opens a WebSocket connection to `/prod` with a hand-made handshake (asserts 101).
    pub async fn websocket(addr: SocketAddr) -> Raw {
        let (raw, head) = Raw::request(addr, &upgrade_request("/prod", "")).await;
        assert_eq!(head.status, 101, "handshake: {head:?}");
        raw
    }

    /// Like [`Raw::websocket`], on a socket whose receive buffer is about `bytes` (set
    /// before connecting, so the window the gateway sees stays that small): what the
    /// gateway writes beyond it waits in the gateway's own send queue until the test reads.
    pub async fn websocket_with_receive_buffer(addr: SocketAddr, bytes: u32) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        raw.send(upgrade_request("/prod", "").as_bytes()).await;
        let head = raw.read_head().await;
        assert_eq!(head.status, 101, "handshake: {head:?}");
        raw
    }

    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes bytes; `false` if the gateway already closed the socket.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads the response head (status line and headers).
    pub async fn read_head(&mut self) -> Head {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Head { status, headers }
    }

    /// Reads one frame from the gateway; `None` when the socket closed first.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        if !self.fill_to(2).await {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "the gateway must not mask its frames");
        let (len, header) = match b1 & 0x7f {
            126 => {
                assert!(self.fill_to(4).await, "truncated frame");
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                assert!(self.fill_to(10).await, "truncated frame");
                let mut n = [0u8; 8];
                n.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (n as usize, 2),
        };
        assert!(self.fill_to(header + len).await, "truncated frame");
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Some(Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0x0f,
            payload,
        })
    }

    /// Reads frames until the gateway's close frame; returns the frames before it and
    /// the close's code and reason. Panics if the socket closes without one.
    pub async fn until_close(&mut self) -> (Vec<Frame>, Option<(u16, String)>) {
        let mut before = Vec::new();
        loop {
            let frame = self
                .read_frame()
                .await
                .expect("socket closed without a close frame");
            if frame.opcode == op::CLOSE {
                return (before, frame.close());
            }
            before.push(frame);
        }
    }

    /// The close code the gateway sends (skipping other frames).
    pub async fn close_code(&mut self) -> u16 {
        self.until_close()
            .await
            .1
            .expect("close frame without a code")
            .0
    }

    /// Waits until the gateway closes the TCP connection (EOF or reset); returns the
    /// bytes it sent first.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("the gateway kept the connection open for {READ_LIMIT:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return all,
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn fill_to(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            if !self.fill().await {
                return false;
            }
        }
        true
    }

    /// Reads more bytes into the buffer; `false` on EOF or reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("nothing from the gateway within {READ_LIMIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

/// The gateway process's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}
