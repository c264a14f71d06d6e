// chat-client.js with the real socket.io-client against a real chat-server.  Runs when
// CHAT_TEST_URL points at a server whose development sign-in is on (tests/js/
// test_node_unit.py starts one); skipped otherwise (plain `npm test`).
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { io } from "socket.io-client";

import { ChatClient, RoomStore } from "../../chat_server/web/chat-client.js";
import { until } from "./fakes.mjs";

const URL_BASE = process.env.CHAT_TEST_URL;
const ROOM = `js_${Math.random().toString(36).slice(2, 10)}`;
const clients = [];

async function signIn(name, role = "user") {
  const response = await fetch(`${URL_BASE}/api/dev/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name, role }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).token;
}

async function client(name, role) {
  const c = new ChatClient({ io, url: URL_BASE, token: await signIn(name, role), transports: ["websocket"], ackTimeoutMs: 3000 });
  clients.push(c);
  await c.connect();
  return c;
}

after(() => {
  for (const c of clients) c.disconnect();
});

describe("against a real server", { skip: URL_BASE ? false : "CHAT_TEST_URL is not set" }, () => {
  test("two clients chat, dedupe their own echo and resume after a drop", async () => {
    const ann = await client("Ann");
    const ben = await client("Ben");
    const annStore = new RoomStore(ann, ROOM).start();
    const benStore = new RoomStore(ben, ROOM).start();
    await until(() => annStore.getSnapshot().room === "joined" && benStore.getSnapshot().room === "joined", 5000, "both joined");

    const sent = await ann.send(ROOM, "hello @ben");
    assert.equal(sent.content, "hello @ben");
    assert.deepEqual(sent.mentions, ["ben"]);
    await until(() => benStore.getSnapshot().messages.length === 1, 5000, "Ben sees it");
    assert.equal(benStore.getSnapshot().messages[0].mentionsMe, true);
    await until(() => annStore.getSnapshot().messages.length === 1, 5000, "Ann sees it once");

    // The same client_msg_id again: the original message, nothing new stored.
    const again = await ann.send(ROOM, "hello @ben", { clientMsgId: sent.client_msg_id });
    assert.equal(again.message_id, sent.message_id);

    // Ben drops off; Ann writes; Ben comes back and catches up with since_seq.
    const resumed = new Promise((resolve) => ben.on("joined", (info) => info.resumed && resolve(info)));
    ben.socket.io.engine.close();
    await until(() => ben.state === "reconnecting" || ben.state === "connected", 3000, "drop noticed");
    for (let i = 1; i <= 3; i++) await ann.send(ROOM, `missed ${i}`);
    const info = await resumed;
    assert.equal(info.since_seq, sent.seq);
    await until(() => benStore.getSnapshot().messages.length === 4, 5000, "Ben caught up");
    const seqs = benStore.getSnapshot().messages.map((m) => m.seq);
    assert.deepEqual(seqs, [sent.seq, sent.seq + 1, sent.seq + 2, sent.seq + 3]);

    // Reactions and typing reach the other side.
    await ben.react(sent.message_id, "👍");
    await until(() => annStore.getSnapshot().messages[0].reactions["👍"] === 1, 5000, "reaction");
    annStore.setTyping(true);
    await until(() => benStore.getSnapshot().typing.some((t) => t.username === "Ann"), 5000, "typing");
    annStore.stop();
    benStore.stop();
  });

  test("a refused token ends in the unauthorized state", async () => {
    const c = new ChatClient({ io, url: URL_BASE, token: "not-a-token", transports: ["websocket"] });
    clients.push(c);
    await assert.rejects(c.connect(), (err) => err.code === "unauthorized");
    assert.equal(c.state, "unauthorized");
  });
});
