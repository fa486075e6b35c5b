// Tests of switchboard-resume.js. The unit tests run anywhere; the others need a gateway
// with [resume] enabled (window_secs = 2) and an echo $default route, named by
// SWITCHBOARD_WS_URL, SWITCHBOARD_MANAGEMENT_URL and SWITCHBOARD_TOKEN — tests/js_client.rs
// starts one and runs this file (node --experimental-websocket --test on Node.js 20).
import { test } from "node:test";
import assert from "node:assert/strict";
import { ResumableSocket, backoffDelay, parseFrame } from "../switchboard-resume.js";
import { startProxy } from "./proxy.mjs";

const WS_URL = process.env.SWITCHBOARD_WS_URL;
const MANAGEMENT_URL = process.env.SWITCHBOARD_MANAGEMENT_URL;
const TOKEN = process.env.SWITCHBOARD_TOKEN;
const live = { skip: !WS_URL && "SWITCHBOARD_WS_URL is not set (tests/js_client.rs sets it)" };

test("backoff is jittered, grows, and is capped", () => {
  assert.equal(backoffDelay(0, { initialMs: 100, maxMs: 5000 }, () => 0.999), 99);
  assert.equal(backoffDelay(3, { initialMs: 100, maxMs: 5000 }, () => 0.5), 400);
  assert.equal(backoffDelay(40, { initialMs: 100, maxMs: 5000 }, () => 0.999), 4995);
  assert.equal(backoffDelay(5, {}, () => 0), 0);
  const draws = new Set(Array.from({ length: 50 }, () => backoffDelay(4)));
  assert.ok(draws.size > 10, "delays differ between clients");
});

test("frames parse: text, binary with its 8-byte offset, welcome, unknown", () => {
  assert.deepEqual(parseFrame('{"$sb":"m","o":7,"d":"{\\"a\\":1}"}'), { kind: "message", offset: 7, data: '{"a":1}' });
  const binary = new Uint8Array([0, 0, 0, 0, 0, 0, 1, 2, 0xff, 0]);
  const parsed = parseFrame(binary.buffer);
  assert.equal(parsed.offset, 258);
  assert.deepEqual([...parsed.data], [0xff, 0]);
  assert.equal(parseFrame('{"$sb":"welcome","connectionId":"x","resumed":false}').kind, "welcome");
  assert.equal(parseFrame('{"$sb":"future"}').kind, "other");
  assert.throws(() => parseFrame("plain text"));
  assert.throws(() => parseFrame(new Uint8Array(3)));
});

async function manage(method, path, body) {
  const response = await fetch(MANAGEMENT_URL + path, {
    method,
    headers: { authorization: `Bearer ${TOKEN}` },
    body,
  });
  return response.status;
}

function once(socket, event) {
  return new Promise((resolve) => {
    const listener = (detail) => {
      socket.off(event, listener);
      resolve(detail);
    };
    socket.on(event, listener);
  });
}

function until(predicate, what, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (predicate()) return resolve();
      if (Date.now() - started > ms) return reject(new Error(`timed out: ${what}`));
      setTimeout(poll, 10);
    };
    poll();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A proxy to the gateway and its ws:// URL. */
async function proxied() {
  const target = new URL(WS_URL);
  const proxy = await startProxy(target.hostname, Number(target.port));
  return { proxy, url: `ws://127.0.0.1:${proxy.port}${target.pathname}` };
}

test("a cut connection resumes: every message once, in order, same id", live, async () => {
  const { proxy, url } = await proxied();
  const socket = new ResumableSocket(url, { backoff: { initialMs: 50, maxMs: 200 }, ackEvery: 8 });
  const received = [];
  const opens = [];
  const fresh = [];
  socket.on("message", ({ data }) => received.push(data));
  socket.on("open", (detail) => opens.push(detail));
  socket.on("fresh", (detail) => fresh.push(detail));
  await once(socket, "open");
  const id = socket.connectionId;
  assert.equal(await manage("PUT", `/@groups/js-room/members/${id}`), 204);

  const total = 200;
  const posting = (async () => {
    for (let n = 0; n < total; n++) {
      const status = n % 2
        ? await manage("POST", "/@groups/js-room", `m${n}`)
        : await manage("POST", `/@connections/${id}`, `m${n}`);
      assert.ok(status === 200 || status === 202, `message ${n}: ${status}`);
      if (n === 60) {
        await until(() => received.length >= 20, "some messages before the cut");
        proxy.cut(); // the network drops; reconnects wait
        setTimeout(() => proxy.resume(), 300);
      }
    }
  })();
  await posting;
  await until(() => received.length >= total, `all ${total} messages (got ${received.length})`);
  await sleep(200);
  assert.deepEqual(received, Array.from({ length: total }, (_, n) => `m${n}`));
  assert.equal(socket.connectionId, id, "the id survives the resume");
  assert.ok(opens.length >= 2 && opens.at(-1).resumed, JSON.stringify(opens));
  assert.deepEqual(fresh, []);
  // A message the client sends still reaches the backend (the echo route answers it).
  socket.send("ping");
  await until(() => received.at(-1) === "ping", "echo of ping");
  socket.close();
  const closed = await once(socket, "close");
  assert.equal(closed.code, 1000);
  proxy.close();
});

test("a resume after the window is told to start fresh", live, async () => {
  const { proxy, url } = await proxied();
  const socket = new ResumableSocket(url, { backoff: { initialMs: 50, maxMs: 200 } });
  await once(socket, "open");
  const oldId = socket.connectionId;
  proxy.cut();
  await sleep(3000); // window_secs = 2
  const fresh = once(socket, "fresh");
  proxy.resume();
  const { reason, connectionId } = await fresh;
  assert.equal(reason, "unknown_session");
  assert.notEqual(connectionId, oldId);
  assert.equal(await manage("POST", `/@connections/${oldId}`, "late"), 410);
  socket.close();
  proxy.close();
});

test("a close frame from the gateway ends the session for good", live, async () => {
  const socket = new ResumableSocket(WS_URL);
  await once(socket, "open");
  const reconnecting = [];
  socket.on("reconnecting", (detail) => reconnecting.push(detail));
  const closed = once(socket, "close");
  assert.equal(await manage("DELETE", `/@connections/${socket.connectionId}?code=4000&reason=bye`), 204);
  assert.deepEqual(await closed, { code: 4000, reason: "bye" });
  await sleep(300);
  assert.deepEqual(reconnecting, []);
  assert.throws(() => socket.send("x"));
});
