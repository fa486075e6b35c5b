// switchboard-resume.js — a WebSocket client for Switchboard's resumable sessions
// (subprotocol "switchboard.resume.v1", docs/resume.md), for browsers and Node.js.
//
// It opens the socket offering the subprotocol, remembers the connection id, the resume
// token and the offset of the last message it delivered, acknowledges what it delivered,
// and when the socket drops without a close handshake it reconnects with jittered
// exponential backoff and resumes: the application sees every message once, in order,
// and is told ("fresh") when the gateway could not fill the gap and a new session began.
//
//   import { ResumableSocket } from "./switchboard-resume.js";
//   const socket = new ResumableSocket("wss://gateway.example/prod");
//   socket.on("open", ({ connectionId, resumed }) => { ... });
//   socket.on("message", ({ data, offset }) => { ... });   // data: string or Uint8Array
//   socket.on("fresh", ({ reason }) => { /* state from before is stale: refetch, rejoin */ });
//   socket.on("reconnecting", ({ attempt, delayMs }) => { ... });
//   socket.on("close", ({ code, reason }) => { /* final: the session is over */ });
//   socket.send(JSON.stringify({ action: "sendmessage", text: "hi" }));
//   socket.close();                                        // a clean close ends the session
//
// Node.js 22+ has a global WebSocket; on Node.js 20 run with --experimental-websocket, or
// pass any WHATWG-compatible constructor as the `WebSocket` option.

export const SUBPROTOCOL = "switchboard.resume.v1";
const CONTROL_PREFIX = '{"$sb":';

/** Close codes after which the session is over but a new one is worth opening. */
const RECONNECT_FRESH_CODES = new Set([1001, 1012, 1013]);

/**
 * The delay before reconnect attempt `attempt` (0-based): "full jitter", a uniform draw
 * between 0 and min(maxMs, initialMs * 2^attempt), so a herd of clients spreads out.
 */
export function backoffDelay(attempt, { initialMs = 100, maxMs = 5000 } = {}, random = Math.random) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * Parses one frame from the gateway: `{kind: "welcome", ...}`, `{kind: "message", offset,
 * data}`, or `{kind: "other"}` for a control frame this version does not know.
 * Throws on a frame that is not of the protocol.
 */
export function parseFrame(data) {
  if (typeof data === "string") {
    if (!data.startsWith(CONTROL_PREFIX)) throw new Error("not a switchboard.resume.v1 frame");
    const frame = JSON.parse(data);
    if (frame.$sb === "m") return { kind: "message", offset: frame.o, data: frame.d };
    if (frame.$sb === "welcome") return { kind: "welcome", ...frame };
    return { kind: "other" };
  }
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < 8) throw new Error("binary frame shorter than its offset");
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const offset = Number(view.getBigUint64(0));
  return { kind: "message", offset, data: bytes.subarray(8) };
}

/** A resumable WebSocket session (see the top of this file). */
export class ResumableSocket {
  /**
   * @param {string} url the stage URL, ws:// or wss://
   * @param {object} [options]
   * @param {Function} [options.WebSocket] the WebSocket constructor (default: global)
   * @param {{initialMs?: number, maxMs?: number}} [options.backoff] reconnect delays
   * @param {number} [options.ackEvery] acknowledge after this many messages (default 32)
   * @param {number} [options.ackIntervalMs] ... or this long after an unacknowledged one (1000)
   * @param {number} [options.maxQueued] messages `send` keeps while reconnecting (1000)
   * @param {Function} [options.random] the jitter's random source (tests)
   */
  constructor(url, options = {}) {
    this.url = url;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new Error("no WebSocket: pass options.WebSocket");
    this.backoff = options.backoff || {};
    this.ackEvery = options.ackEvery ?? 32;
    this.ackIntervalMs = options.ackIntervalMs ?? 1000;
    this.maxQueued = options.maxQueued ?? 1000;
    this.random = options.random || Math.random;
    this.connectionId = null;
    this.token = null;
    this.offset = 0;
    this.acked = 0;
    this.attempt = 0;
    this.closed = false;
    this.ready = false;
    this.queue = [];
    this.listeners = new Map();
    this.ackTimer = null;
    this.retryTimer = null;
    this.ws = null;
    this.connect();
  }

  /** Adds a listener for "open", "message", "fresh", "reconnecting", "close" or "error". */
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return this;
  }

  /** Removes a listener. */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  emit(event, detail) {
    for (const listener of this.listeners.get(event) || []) {
      try {
        listener(detail);
      } catch (error) {
        if (event !== "error") this.emit("error", error);
      }
    }
  }

  /**
   * Sends a message to the gateway (routed to the backend as any other). While the
   * socket is reconnecting it is kept (at most `maxQueued`) and sent once resumed; a
   * message sent just before a drop may be lost (only gateway → client is recovered).
   */
  send(data) {
    if (this.closed) throw new Error("the session is closed");
    if (typeof data === "string" && data.startsWith(CONTROL_PREFIX)) {
      throw new Error('messages must not start with {"$sb": (reserved for control frames)');
    }
    if (this.ready && this.ws.readyState === 1) {
      this.ws.send(data);
    } else if (this.queue.length < this.maxQueued) {
      this.queue.push(data);
    } else {
      throw new Error("too many messages queued while reconnecting");
    }
  }

  /** Ends the session for good: a clean close ($disconnect fires at once). */
  close(code = 1000, reason = "") {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.ackTimer);
    if (this.ws && this.ws.readyState <= 1) {
      this.flushAck();
      this.ws.close(code, reason);
    } else {
      this.emit("close", { code, reason });
    }
  }

  /** Whether a session is attached now. */
  get connected() {
    return this.ready;
  }

  connect() {
    let url = this.url;
    if (this.token) {
      const sep = url.includes("?") ? "&" : "?";
      url += `${sep}sb_resume=${encodeURIComponent(this.token)}&sb_offset=${this.offset}`;
    }
    const ws = new this.WebSocket(url, [SUBPROTOCOL]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (event) => this.onFrame(event.data);
    ws.onclose = (event) => this.onClose(ws, event);
    ws.onerror = () => {}; // a close event follows
  }

  onFrame(data) {
    let frame;
    try {
      frame = parseFrame(data);
    } catch (error) {
      this.emit("error", error);
      return;
    }
    if (frame.kind === "welcome") {
      const fresh = !frame.resumed && this.token !== null;
      this.connectionId = frame.connectionId;
      this.token = frame.token;
      if (!frame.resumed) this.offset = 0;
      this.acked = this.offset;
      this.attempt = 0;
      this.ready = true;
      if (fresh) this.emit("fresh", { reason: frame.reason || "unknown_session", connectionId: frame.connectionId });
      this.emit("open", { connectionId: frame.connectionId, resumed: frame.resumed, reason: frame.reason });
      for (const queued of this.queue.splice(0)) this.ws.send(queued);
      return;
    }
    if (frame.kind !== "message") return;
    if (frame.offset <= this.offset) return; // already delivered (defensive: never expected)
    if (frame.offset !== this.offset + 1) {
      this.emit("error", new Error(`gap: expected offset ${this.offset + 1}, got ${frame.offset}`));
    }
    this.offset = frame.offset;
    this.emit("message", { data: frame.data, offset: frame.offset });
    if (this.offset - this.acked >= this.ackEvery) {
      this.flushAck();
    } else if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => this.flushAck(), this.ackIntervalMs);
    }
  }

  flushAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.offset > this.acked && this.ws && this.ws.readyState === 1) {
      this.ws.send(`{"$sb":"ack","offset":${this.offset}}`);
      this.acked = this.offset;
    }
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    this.ready = false;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.closed) {
      this.emit("close", { code: event.code, reason: event.reason });
      return;
    }
    // 1006: the socket was lost without a close frame (or the handshake failed): resume.
    // A close frame ends the session; some closes are worth a fresh one.
    if (event.code !== 1006) {
      if (!RECONNECT_FRESH_CODES.has(event.code)) {
        this.closed = true;
        this.emit("close", { code: event.code, reason: event.reason });
        return;
      }
      this.token = null;
      this.offset = 0;
      this.emit("fresh", { reason: `closed ${event.code}` });
    }
    const delayMs = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.emit("reconnecting", { attempt: this.attempt, delayMs });
    this.retryTimer = setTimeout(() => {
      if (!this.closed) this.connect();
    }, delayMs);
  }
}
