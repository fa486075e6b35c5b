// Two real browser pages on the chat example, through haproxy to a three-node cluster.
//
//   node tests/browser/chat.mjs <page-url> <screenshot.png>
//
// Opens two pages (alice, bob) in headless Chromium (CHROMIUM, default /usr/bin/chromium),
// makes sure they landed on different gateway nodes (the node tag is the first 4 bytes of
// the connection id), checks that messages cross both ways, closes bob's page and checks
// that alice is told "bob left" — the chat backend's $disconnect handler sent it. Prints
// one JSON line with what it saw; exits non-zero on any failure.
import { chromium } from "playwright-core";

const [pageUrl, screenshot] = process.argv.slice(2);
if (!pageUrl || !screenshot) {
  console.error("usage: chat.mjs <page-url> <screenshot.png>");
  process.exit(2);
}
const TIMEOUT = 10_000;

/** The 4-byte node tag inside a connection id (base64url). */
function nodeOf(connectionId) {
  return Buffer.from(connectionId, "base64url").subarray(0, 4).toString("hex");
}

async function openChat(browser, nickname) {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(pageUrl);
  await page.fill("#nickname", nickname);
  await page.fill("#room", "lobby");
  await page.click("#connect");
  await page.waitForFunction(() => document.body.dataset.connectionId);
  await page.locator("#log li", { hasText: "you joined lobby" }).waitFor();
  const id = await page.evaluate(() => document.body.dataset.connectionId);
  return { page, id, node: nodeOf(id) };
}

async function say(chat, text) {
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
  const alice = await openChat(browser, "alice");
  let bob = await openChat(browser, "bob");
  // Round robin puts the second page on another node; make sure of it.
  for (let attempt = 0; bob.node === alice.node && attempt < 6; attempt++) {
    await bob.page.close();
    bob = await openChat(browser, "bob");
  }
  if (bob.node === alice.node) throw new Error(`both pages landed on node ${alice.node}`);

  await say(alice, "hello from alice");
  await sees(bob, "hello from alice");
  await say(bob, "hello from bob");
  await sees(alice, "hello from bob");

  await bob.page.close();
  await sees(alice, "bob left");

  await alice.page.screenshot({ path: screenshot });
  console.log(JSON.stringify({
    ok: true,
    alice: { id: alice.id, node: alice.node },
    bob: { id: bob.id, node: bob.node },
    screenshot,
  }));
} finally {
  await browser.close();
}
