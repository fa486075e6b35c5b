// The chat page loses its connection while others keep talking, and comes back with
// every message once (resumable sessions, docs/resume.md; one gateway node).
//
//   node tests/browser/resume.mjs <page-url> <gateway-ws-url> <screenshot.png>
//
// Alice's page reaches the gateway through a TCP proxy this script runs
// (clients/js/test/proxy.mjs); Bob's page connects directly. The proxy resets Alice's
// connection (no close frame, as a lost network) and holds her reconnects back while Bob
// sends ten messages; then it lets her through. Her page must resume (same connection
// id) and show each of Bob's messages exactly once, in order; and she can still talk.
// Prints one JSON line with what it saw; exits non-zero on any failure.
import { chromium } from "playwright-core";
import { startProxy } from "../../clients/js/test/proxy.mjs";

const [pageUrl, gatewayUrl, screenshot] = process.argv.slice(2);
if (!pageUrl || !gatewayUrl || !screenshot) {
  console.error("usage: resume.mjs <page-url> <gateway-ws-url> <screenshot.png>");
  process.exit(2);
}
const TIMEOUT = 15_000;
const target = new URL(gatewayUrl);
const proxy = await startProxy(target.hostname, Number(target.port));
const viaProxy = `ws://127.0.0.1:${proxy.port}${target.pathname}`;

async function openChat(browser, nickname, gateway) {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(`${pageUrl}?gateway=${encodeURIComponent(gateway)}`);
  await page.fill("#nickname", nickname);
  await page.fill("#room", "lobby");
  await page.click("#connect");
  await page.waitForFunction(() => document.body.dataset.connectionId);
  await page.locator("#log li", { hasText: "you joined lobby" }).waitFor();
  const id = await page.evaluate(() => document.body.dataset.connectionId);
  return { page, id };
}

async function say(chat, text) {
  await chat.page.locator("#send-button:not([disabled])").waitFor();
  await chat.page.fill("#text", text);
  await chat.page.click("#send-button");
}

async function sees(chat, text) {
  await chat.page.locator("#log li", { hasText: text }).first().waitFor();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const alice = await openChat(browser, "alice", viaProxy);
  const bob = await openChat(browser, "bob", gatewayUrl);
  await say(bob, "before the drop");
  await sees(alice, "before the drop");

  proxy.cut();
  await alice.page.locator("#status", { hasText: "reconnecting" }).waitFor();
  const sent = Array.from({ length: 10 }, (_, n) => `while alice was away ${n}`);
  for (const text of sent) {
    await say(bob, text);
    await sees(bob, text);
  }
  proxy.resume();
  await alice.page.locator("#status", { hasText: "(resumed)" }).waitFor();
  await sees(alice, sent.at(-1));

  const log = await alice.page.locator("#log li").allTextContents();
  const missed = log.filter((line) => line.includes("while alice was away"));
  const expected = sent.map((text) => `bob${text}`);
  if (JSON.stringify(missed) !== JSON.stringify(expected)) {
    throw new Error(`alice's log: ${JSON.stringify(missed)}, expected ${JSON.stringify(expected)}`);
  }
  if (log.some((line) => line.includes("new session"))) throw new Error("alice started fresh");
  const idAfter = await alice.page.evaluate(() => document.body.dataset.connectionId);
  if (idAfter !== alice.id) throw new Error(`alice's id changed: ${alice.id} → ${idAfter}`);

  await say(alice, "back again");
  await sees(bob, "back again");
  await alice.page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ ok: true, alice: alice.id, bob: bob.id, missed: missed.length, screenshot }));
} finally {
  await browser.close();
  proxy.close();
}
