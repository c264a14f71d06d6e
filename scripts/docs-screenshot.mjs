// Regenerates docs/screenshot.png: a short conversation on the demo page of a running
// development server, seen by a viewer (with a mention, reactions and someone typing).
//
//   make run                                   # terminal 1
//   node scripts/docs-screenshot.mjs http://127.0.0.1:8000 docs/screenshot.png
//
// Uses playwright-core (npm devDependency) with the system Chromium (/usr/bin/chromium
// or $CHROMIUM); the development sign-in must be on (not production).  pngquant, if
// installed (apt-get install pngquant), makes the file about three times smaller.
import { spawnSync } from "node:child_process";

import { chromium } from "playwright-core";

const [base = "http://127.0.0.1:8000", out = "docs/screenshot.png"] = process.argv.slice(2);
const room = `stream-${Date.now().toString(36)}`;

async function token(name, role = "user") {
  const r = await fetch(`${base}/api/dev/token`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name, role }) });
  if (!r.ok) throw new Error(`dev sign-in failed: ${r.status}`);
  return (await r.json()).token;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const open = async (name, role, viewport) => {
    const context = await browser.newContext({ viewport, reducedMotion: "reduce", colorScheme: "light" });
    const page = await context.newPage();
    await page.goto(`${base}/?room=${room}#token=${await token(name, role)}`);
    await page.locator("#connection[data-state=connected]").waitFor();
    return page;
  };
  const say = async (page, text) => {
    await page.getByLabel("Message", { exact: true }).fill(text);
    await page.getByLabel("Message", { exact: true }).press("Enter");
    await page.locator("#messages li.message:not(.pending)", { hasText: text }).waitFor();
  };
  const host = await open("Maya", "moderator", { width: 1000, height: 600 });
  const sam = await open("Sam", "user", { width: 1000, height: 600 });
  const viewer = await open("Jo", "user", { width: 1200, height: 680 });
  await say(host, "Welcome to the stream! We start in five minutes 🎬");
  await say(sam, "hi everyone, first time here");
  await say(host, "@jo glad you made it, the slides are at https://example.org/slides");
  await say(viewer, "thanks @maya! audio is great today");
  await say(sam, "can you zoom in on the diagram?");
  const react = async (page, text, label) => {
    const li = page.locator("#messages li.message", { hasText: text });
    await li.hover();
    await li.getByRole("button", { name: label }).click();
  };
  await react(sam, "Welcome to the stream", "React with heart");
  await react(viewer, "Welcome to the stream", "React with heart");
  await react(viewer, "audio is great", "React with thumbs up");
  await react(host, "audio is great", "React with thumbs up");
  await react(sam, "audio is great", "React with party");
  await host.getByLabel("Message", { exact: true }).pressSequentially("sure, one sec", { delay: 20 });
  await viewer.locator("#typing", { hasText: "Maya is typing" }).waitFor();
  await viewer.mouse.move(5, 5);
  await viewer.evaluate(() => document.activeElement?.blur());
  await viewer.waitForTimeout(300);
  await viewer.screenshot({ path: out });
  // Keep the committed picture small: quantise it when pngquant is installed.
  const quant = spawnSync("pngquant", ["--force", "--skip-if-larger", "--quality=70-95", "--output", out, out]);
  console.log(`wrote ${out}${quant.status === 0 ? " (pngquant)" : ""}`);
} finally {
  await browser.close();
}
