#!/usr/bin/env python3
"""The Switchboard chat example: a backend in Python's standard library, and the web
page it serves.

Switchboard POSTs the AWS Lambda-proxy event of every `$connect`, message and
`$disconnect` to /events (integration `mode = "proxy"`). The protocol:

    ws://gateway/prod?nickname=alice                     $connect: the nickname (optional,
                                                         1-32 letters, digits, _ . -)
    {"action": "join", "room": "lobby"}                  joins the caller to the room
    {"action": "leave", "room": "lobby"}                 removes the caller from it
    {"action": "sendmessage", "room": "lobby", "text": "hi"}
                                                         everyone in the room gets
        {"room": "lobby", "from": "<connectionId>", "nickname": "alice", "text": "hi"}
    (connection closes)                                  $disconnect: the rooms it was in get
        {"room": "lobby", "from": "<connectionId>", "nickname": "alice", "system": true,
         "text": "alice left"}

Rooms are Switchboard groups. Joining and leaving need no call back to the gateway: the
answer carries the `x-switchboard-join` / `x-switchboard-leave` header and the gateway
applies it. Sending uses the management API once per message: `POST /@groups/{room}`,
which reaches every member on every node.

GET / serves the chat page (index.html beside this file), told where the gateway is, and
GET /switchboard-resume.js the client it uses (clients/js): the page asks for a resumable
session, so a dropped connection comes back with its id, its rooms and every message it
missed (docs/resume.md); a resumed `$connect` (requestContext.resumed) changes nothing here.

Environment:
    SWITCHBOARD_MANAGEMENT_URL  management API base URL(s), comma-separated; tried in
                                order until one answers (default http://127.0.0.1:8081)
    SWITCHBOARD_TOKEN           bearer token of the management API (required)
    SWITCHBOARD_PUBLIC_URL      the WebSocket URL browsers connect to
                                (default ws://<this page's host>:8080/prod)
    HOST, PORT                  where this server listens (default 0.0.0.0:3000)
"""

import json
import os
import re
import signal
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOM = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")  # the gateway's group-name rule
NICKNAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")

MANAGEMENT_URLS = [
    u.strip().rstrip("/")
    for u in os.environ.get("SWITCHBOARD_MANAGEMENT_URL", "http://127.0.0.1:8081").split(",")
    if u.strip()
]
TOKEN = os.environ.get("SWITCHBOARD_TOKEN", "")
PUBLIC_URL = os.environ.get("SWITCHBOARD_PUBLIC_URL", "")
PAGE = (Path(__file__).parent / "index.html").read_text()
# The JavaScript client of resumable sessions the page uses: beside this file (as the
# compose kit mounts it), else in the repository's clients/js.
CLIENT_JS = next(
    (p.read_text() for p in (Path(__file__).parent / "switchboard-resume.js",
                             Path(__file__).parent.parent.parent / "clients/js/switchboard-resume.js")
     if p.exists()),
    "",
)


class Members:
    """What this backend knows of each connection: its nickname, its rooms, and the room
    it joined last (the default room of its sendmessage). One backend process holds it; run
    one backend (or keep this in a shared store) when you scale the gateway out."""

    def __init__(self):
        self.lock = threading.Lock()
        self.nicknames = {}
        self.rooms = {}
        self.last_room = {}

    def connect(self, connection_id, nickname):
        with self.lock:
            self.nicknames[connection_id] = nickname
            self.rooms[connection_id] = set()

    def join(self, connection_id, room):
        with self.lock:
            self.rooms.setdefault(connection_id, set()).add(room)
            self.last_room[connection_id] = room

    def leave(self, connection_id, room):
        with self.lock:
            self.rooms.get(connection_id, set()).discard(room)
            if self.last_room.get(connection_id) == room:
                self.last_room.pop(connection_id, None)

    def nickname(self, connection_id):
        with self.lock:
            return self.nicknames.get(connection_id) or default_nickname(connection_id)

    def room_of(self, connection_id):
        with self.lock:
            return self.last_room.get(connection_id)

    def disconnect(self, connection_id):
        """Forgets a connection; returns (nickname, rooms)."""
        with self.lock:
            nickname = self.nicknames.pop(connection_id, None) or default_nickname(connection_id)
            rooms = self.rooms.pop(connection_id, set())
            self.last_room.pop(connection_id, None)
            return nickname, sorted(rooms)


members = Members()


def default_nickname(connection_id):
    return "guest-" + connection_id[-4:]


def log(*parts):
    print("chat:", *parts, file=sys.stderr, flush=True)


def broadcast(room, message):
    """POSTs `message` to the room's group; returns the HTTP status (0: no gateway answered)."""
    body = json.dumps(message).encode()
    for base in MANAGEMENT_URLS:
        request = urllib.request.Request(
            f"{base}/@groups/{room}",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status  # 202: handed to every node
        except urllib.error.HTTPError as error:
            # 503: Redis unreachable (Retry-After says when to retry); try another node.
            log(f"POST {base}/@groups/{room}: {error.code}")
            if error.code != 503:
                return error.code
        except OSError as error:
            log(f"POST {base}/@groups/{room}: {error}")
    return 0


def handle(event):
    """Answers one proxy event: (status, headers, body)."""
    context = event.get("requestContext", {})
    connection_id = context.get("connectionId", "")
    event_type = context.get("eventType")
    if event_type == "CONNECT":
        query = event.get("queryStringParameters") or {}
        nickname = query.get("nickname") or default_nickname(connection_id)
        if not NICKNAME.match(nickname):
            return 400, {}, ""  # the handshake is refused with 400
        if not context.get("resumed"):
            # A resumed session (docs/resume.md) keeps its id and rooms: nothing to redo.
            members.connect(connection_id, nickname)
        return 200, {}, ""
    if event_type == "DISCONNECT":
        nickname, rooms = members.disconnect(connection_id)
        for room in rooms:
            broadcast(room, {"room": room, "from": connection_id, "nickname": nickname,
                             "system": True, "text": f"{nickname} left"})
        return 200, {}, ""
    try:
        message = json.loads(event.get("body") or "")
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return 200, {}, json.dumps({"error": "send JSON with an action"})
    action = message.get("action")
    room = message.get("room")
    if action == "sendmessage" and room is None:
        room = members.room_of(connection_id)
    if action in ("join", "leave", "sendmessage") and not (isinstance(room, str) and ROOM.match(room)):
        return 200, {}, json.dumps({"error": "a room is 1-128 characters of A-Z a-z 0-9 _ . : @ -"})
    if action == "join":
        members.join(connection_id, room)
        return 200, {"x-switchboard-join": room}, json.dumps({"joined": room})
    if action == "leave":
        members.leave(connection_id, room)
        return 200, {"x-switchboard-leave": room}, json.dumps({"left": room})
    if action == "sendmessage":
        text = message.get("text", "")
        if not isinstance(text, str):
            return 200, {}, json.dumps({"error": "text must be a string"})
        status = broadcast(room, {"room": room, "from": connection_id,
                                  "nickname": members.nickname(connection_id), "text": text})
        if status != 202:
            log(f"broadcast to {room} failed: {status}")
            return 200, {}, json.dumps({"error": f"the message could not be sent ({status})"})
        return 200, {}, ""
    return 200, {}, json.dumps({"error": f"unknown action {action!r}"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body, content_type="application/json", headers=None):
        data = body.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            event = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.reply(400, json.dumps({"error": "expected a proxy event"}))
            return
        status, headers, body = handle(event)
        self.reply(status, body, headers=headers)

    def do_GET(self):
        if self.path.split("?")[0] in ("/", "/index.html"):
            host = (self.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
            url = PUBLIC_URL or f"ws://{host}:8080/prod"
            page = PAGE.replace("__GATEWAY_URL__", json.dumps(url))
            self.reply(200, page, "text/html; charset=utf-8")
        elif self.path.split("?")[0] == "/switchboard-resume.js" and CLIENT_JS:
            self.reply(200, CLIENT_JS, "text/javascript; charset=utf-8")
        else:
            self.reply(200, '{"status":"ok"}')

    def log_message(self, fmt, *args):
        pass  # quiet: one line per event would drown the gateway's logs


def main():
    if not TOKEN:
        sys.exit("chat: set SWITCHBOARD_TOKEN to the gateway's management bearer token")
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "3000"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    # As PID 1 in a container, SIGTERM would otherwise be ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"listening on {host}:{port}, management API at {', '.join(MANAGEMENT_URLS)}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
