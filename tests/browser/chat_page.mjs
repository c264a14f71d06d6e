// Browser test of the demo page, driven by tests/browser/test_chat_page.py.
//
// Two users in two browser contexts (Alice, a moderator, on a desktop-sized window; Bob
// on a phone-sized one) chat both ways, react, see each other typing and mentions,
// survive a network drop of Bob's without duplicates or gaps, get rate-limited, report,
// and Alice times Bob out, whose panel then shows it.  An XSS payload must render as
// text.  A third user opens the embeddable panel with a #token= fragment.
//
// Environment: CHAT_URL (server), CHAT_ROOM, CHROMIUM (executable), SCREENSHOTS (folder),
// NODE_PROJECT (the folder of the project's package.json, for playwright-core),
// RATE_LIMIT (Bob's messages per window, as the server was started with).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(join(process.env.NODE_PROJECT, "package.json"));
const { chromium } = require("playwright-core");

const URL_BASE = process.env.CHAT_URL;
const ROOM = process.env.CHAT_ROOM;
const SHOTS = process.env.SCREENSHOTS;
const RATE_LIMIT = Number(process.env.RATE_LIMIT || 8);
const T = 8000; // per-expectation timeout
mkdirSync(SHOTS, { recursive: true });

const started = Date.now();
function step(name) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${name}`);
}

const profile = mkdtempSync(join(tmpdir(), "chat-browser-test-"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  // Playwright gives every launch a fresh profile of its own; these keep Chromium off
  // the network (only the loopback server is reachable here) and quick to start.
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", `--disk-cache-dir=${join(profile, "cache")}`],
  timeout: 30000,
});

const problems = [];
const expectedErrors = new Set([429]); // rate limiting is part of the scenario
// Bob's network drop is part of the scenario: a reconnection attempt that falls inside it
// (on a slow machine the offline window outlasts the client's first reconnection delay)
// makes Chromium log the failed WebSocket.  The browser writes this only while offline.
const offlineConsoleError = /WebSocket connection to .* failed: Error in connection establishment: net::ERR_INTERNET_DISCONNECTED$/;
async function open(name, viewport, path) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, reducedMotion: "reduce" });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  page.on("dialog", async (dialog) => {
    problems.push(`${name}: a ${dialog.type()} dialog opened: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on("pageerror", (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !offlineConsoleError.test(msg.text())) problems.push(`${name}: console error: ${msg.text()}`);
  });
  page.on("response", (r) => { if (r.status() >= 400 && !expectedErrors.has(r.status())) problems.push(`${name}: HTTP ${r.status()} for ${r.request().method()} ${r.url()}`); });
  await page.goto(URL_BASE + path);
  return { name, context, page };
}

async function signIn(user, name, role) {
  const { page } = user;
  await page.getByLabel("Display name").fill(name);
  await page.getByLabel("Role").selectOption(role);
  await page.getByRole("button", { name: "Join chat" }).click();
  await page.locator("#connection[data-state=connected]").waitFor();
  await page.locator("#messages").waitFor();
}

const messageInput = (u) => u.page.getByLabel("Message", { exact: true });
const messages = (u) => u.page.locator("#messages > li.message");
const messageWith = (u, text) => u.page.locator("#messages > li.message:not(.pending)", { hasText: text });

async function say(user, text) {
  await messageInput(user).fill(text);
  await messageInput(user).press("Enter");
  await messageWith(user, text.replace(/<[^>]*>/g, "").trim().slice(-12)).first().waitFor();
}

/** message ids and seqs of a page, in DOM order (stored messages only). */
async function stored(user) {
  return user.page.$$eval("#messages > li.message[data-seq]", (items) => items.map((li) => ({ id: li.dataset.messageId, seq: Number(li.dataset.seq) })));
}

async function shot(user, file) {
  await user.page.screenshot({ path: join(SHOTS, file) });
}

try {
  step("open two pages");
  const alice = await open("alice", { width: 1280, height: 760 }, `/?room=${encodeURIComponent(ROOM)}`);
  const bob = await open("bob", { width: 390, height: 844 }, `/?room=${encodeURIComponent(ROOM)}`);
  await alice.page.getByLabel("Display name").waitFor();
  await shot(alice, "01-sign-in.png");

  step("sign in: Alice as a moderator, Bob as a viewer");
  await signIn(alice, "Alice", "moderator");
  await signIn(bob, "Bob", "user");
  await alice.page.locator("#online", { hasText: "2 online" }).waitFor();
  await bob.page.locator("#online", { hasText: "2 online" }).waitFor();

  step("layout: chat beside the video on a desktop, below it on a phone");
  const box = async (u, sel) => u.page.locator(sel).boundingBox();
  const [aVideo, aChat, bVideo, bChat] = [await box(alice, ".video"), await box(alice, ".chat"), await box(bob, ".video"), await box(bob, ".chat")];
  assert.ok(aChat.x >= aVideo.x + aVideo.width, `desktop: chat beside the video (${JSON.stringify({ aVideo, aChat })})`);
  assert.ok(bChat.y >= bVideo.y + bVideo.height, `phone: chat below the video (${JSON.stringify({ bVideo, bChat })})`);
  assert.ok(bChat.width <= 390, "phone: the panel fits the screen");

  step("typing indicator");
  await messageInput(alice).pressSequentially("hello @bob", { delay: 15 });
  await bob.page.locator("#typing", { hasText: "Alice is typing" }).waitFor();

  step("chat both ways with Enter");
  await messageInput(alice).press("Enter");
  await messageWith(bob, "hello @bob").waitFor();
  await bob.page.locator("#typing:empty").waitFor();
  await say(bob, "hi Alice, nice stream");
  await messageWith(alice, "hi Alice, nice stream").waitFor();

  step("mentions: highlighted for Bob, not for Alice");
  await bob.page.locator("#messages li.message.mentions-me .mention.mention-me", { hasText: "@bob" }).waitFor();
  assert.equal(await alice.page.locator("#messages li.mentions-me").count(), 0);

  step("reactions");
  const aliceMsgOnBob = messageWith(bob, "hello @bob");
  await aliceMsgOnBob.hover();
  await aliceMsgOnBob.getByRole("button", { name: "React with thumbs up" }).click();
  await messageWith(alice, "hello @bob").locator("button.reaction", { hasText: "👍 1" }).waitFor();
  await aliceMsgOnBob.locator("button.reaction[aria-pressed=true]", { hasText: "👍 1" }).waitFor();
  await messageWith(alice, "hello @bob").hover(); // the message's toolbar shows on hover (or keyboard focus)
  await messageWith(alice, "hello @bob").getByRole("button", { name: "React with party" }).click();
  await aliceMsgOnBob.locator("button.reaction", { hasText: "🎉 1" }).waitFor();

  step("XSS payloads render as text");
  const payload = `<img src=x onerror="window.__xss=1;alert(1)"> <script>window.__xss=2;alert(2)</script> xss-marker`;
  await messageInput(bob).fill(payload);
  await messageInput(bob).press("Enter");
  await messageWith(alice, "xss-marker").waitFor();
  await messageWith(bob, "xss-marker").waitFor();
  for (const u of [alice, bob]) {
    const found = await u.page.evaluate(() => ({
      xss: window.__xss ?? null,
      injected: document.querySelectorAll("#messages img, #messages script, #messages [onerror]").length,
      body: [...document.querySelectorAll("#messages li.message .body")].map((b) => b.textContent).find((t) => t.includes("xss-marker")),
    }));
    assert.equal(found.xss, null, `${u.name}: the payload ran`);
    assert.equal(found.injected, 0, `${u.name}: an element was injected`);
    assert.ok(found.body.includes("xss-marker"), `${u.name}: the message text is shown`);
  }
  // What the server stores is text with the markup removed; the same payload typed into
  // a local echo (before the server answers) is shown as literal text.
  const echo = await bob.page.evaluate((text) => {
    const li = document.createElement("li");
    const body = document.createElement("div");
    body.textContent = text;
    li.append(body);
    return { html: body.innerHTML.includes("&lt;img"), children: body.children.length };
  }, payload);
  assert.deepEqual(echo, { html: true, children: 0 });

  step("network drop: Bob reconnects with since_seq, no duplicates, no gaps");
  const before = await stored(bob);
  await bob.page.evaluate(() => {
    window.__joins = [];
    window.chatDemo.client.on("joined", (info) => window.__joins.push({ resumed: info.resumed, since_seq: info.since_seq }));
  });
  await bob.context.setOffline(true);
  await bob.page.evaluate(() => window.chatDemo.client.socket.io.engine.close());
  await bob.page.locator("#connection[data-state=reconnecting]").waitFor();
  await bob.page.locator("#notice", { hasText: "Reconnecting" }).waitFor();
  await shot(bob, "05-phone-reconnecting.png");
  for (const n of [1, 2, 3]) await say(alice, `while Bob was away ${n}`);
  await bob.context.setOffline(false);
  await bob.page.locator("#connection[data-state=connected]").waitFor({ timeout: 15000 });
  await messageWith(bob, "while Bob was away 3").waitFor();
  const after = await stored(bob);
  const onAlice = await stored(alice);
  const ids = after.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, "no duplicates after the reconnect");
  assert.deepEqual(after.map((m) => m.seq), [...after.map((m) => m.seq)].sort((a, b) => a - b), "ordered by seq");
  assert.deepEqual(ids, onAlice.map((m) => m.id), "Bob has exactly Alice's messages");
  assert.equal(after.length, before.length + 3);
  assert.deepEqual(await bob.page.evaluate(() => window.__joins), [{ resumed: true, since_seq: Math.max(...before.map((m) => m.seq)) }],
    "re-joined once, asking only for what came after the last message seen");

  step("report: Bob reports, Alice sees it in her queue");
  const toReport = messageWith(bob, "while Bob was away 1");
  await toReport.hover();
  await toReport.getByRole("button", { name: /^Report this message/ }).click();
  await bob.page.locator("#notice", { hasText: "moderators will have a look" }).waitFor();
  assert.equal(await bob.page.locator("#moderation").isVisible(), false, "viewers have no report queue");
  assert.equal(await bob.page.locator("#messages button.ban, #messages button.timeout, #messages button.delete").count(), 0, "viewers have no moderation buttons");
  await alice.page.getByRole("button", { name: "Refresh" }).click();
  await alice.page.locator("#reports li.report", { hasText: "while Bob was away 1" }).waitFor();
  await shot(alice, "02-desktop-chat-moderator.png");
  await shot(bob, "03-phone-chat.png");

  step("rate limit: Bob sends too fast");
  const sentByBob = 2;
  const burst = ["what a goal", "did you see that?", "replay please", "best match this year", "who is the keeper",
    "loving the commentary", "ref needs glasses", "third half incoming", "snacks ready", "ok one more", "last one"];
  for (let i = 0; i < RATE_LIMIT - sentByBob + 2; i++) {
    await messageInput(bob).fill(burst[i]);
    await messageInput(bob).press("Enter");
    if (await bob.page.locator("#notice[data-kind=rate-limited]").isVisible()) break;
    await bob.page.waitForTimeout(60);
  }
  await bob.page.locator("#notice[data-kind=rate-limited]", { hasText: "too fast" }).waitFor();
  await bob.page.getByRole("button", { name: /^Wait \d+ s$/ }).waitFor();
  assert.ok(burst.includes(await messageInput(bob).inputValue()), "the refused text is given back");
  assert.equal(await bob.page.locator("#messages li.failed").count(), 0, "only the rate limit refused messages");
  await shot(bob, "06-phone-rate-limited.png");

  step("moderator deletes a message");
  const xssOnAlice = messageWith(alice, "xss-marker");
  await xssOnAlice.hover();
  await xssOnAlice.getByRole("button", { name: "Delete this message of Bob" }).click();
  await messageWith(bob, "xss-marker").waitFor({ state: "detached" });
  await messageWith(alice, "xss-marker").waitFor({ state: "detached" });

  step("moderator times Bob out; Bob's panel shows it");
  const bobsOnAlice = messageWith(alice, "hi Alice, nice stream");
  await bobsOnAlice.hover();
  await bobsOnAlice.getByRole("button", { name: "Time out Bob for 5 minutes" }).click();
  await bob.page.locator("#notice[data-kind=banned]", { hasText: "timed out" }).waitFor();
  await bob.page.locator("#connection", { hasText: "Banned" }).waitFor();
  assert.equal(await messageInput(bob).isDisabled(), true, "a banned user cannot type");
  await shot(bob, "07-phone-banned.png");
  await say(alice, "the show goes on");
  await messageWith(bob, "the show goes on").waitFor({ state: "detached", timeout: 1000 }).catch(() => {});
  assert.equal(await messageWith(bob, "the show goes on").count(), 0, "a banned user is out of the room");

  step("the embeddable panel with a #token= fragment");
  const response = await fetch(`${URL_BASE}/api/dev/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "Carol" }),
  });
  const { token } = await response.json();
  const carol = await open("carol", { width: 360, height: 640 }, `/embed/${encodeURIComponent(ROOM)}#token=${token}`);
  await carol.page.locator("#connection[data-state=connected]").waitFor();
  await messageWith(carol, "the show goes on").waitFor();
  assert.equal(new URL(carol.page.url()).hash, "", "the token is removed from the address bar");
  assert.equal(await carol.page.locator(".stage").isVisible(), false, "the embed shows only the panel");
  await shot(carol, "08-embed.png");

  assert.deepEqual(problems, [], "no dialogs, page errors or console errors");
  step("done");
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
