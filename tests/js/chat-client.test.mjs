// Unit tests of chat_server/web/chat-client.js against a fake socket and server.
// Run: node --test tests/js/   (make test runs them through tests/js/test_node_unit.py)
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ChatClient, ChatError, RoomStore, decodeToken } from "../../chat_server/web/chat-client.js";
import { FakeServer, FakeSocket, fakeIo, fakeToken, tick, until } from "./fakes.mjs";

const TOKEN = fakeToken({ sub: "alice", name: "Alice", role: "user", exp: 9999999999 });

function setup({ server = new FakeServer(), ...options } = {}) {
  const socket = new FakeSocket(server);
  const client = new ChatClient({ io: fakeIo(socket), token: TOKEN, ackTimeoutMs: 60, retryDelayMs: 5, ...options });
  const received = [];
  client.on("message", (m, how) => received.push({ ...m, live: how.live }));
  return { server, socket, client, received };
}

async function connected(env) {
  const promise = env.client.connect();
  env.socket.up();
  await promise;
  return env;
}

describe("connecting", () => {
  test("sends the token in the CONNECT auth and reports states", async () => {
    const env = setup();
    const states = [];
    env.client.on("state", (s) => states.push(s));
    await connected(env);
    assert.deepEqual(env.socket.opts.auth, { token: TOKEN });
    assert.deepEqual(states, ["connecting", "connected"]);
    assert.equal(env.client.me.user_id, "alice");
    assert.equal(env.client.me.username, "Alice");
  });

  test("a refused token is final: state unauthorized, connect() rejects", async () => {
    const env = setup();
    const promise = env.client.connect();
    env.socket.fire("connect_error", new Error("unauthorized"));
    await assert.rejects(promise, (err) => err instanceof ChatError && err.code === "unauthorized");
    assert.equal(env.client.state, "unauthorized");
  });

  test("transport errors keep it connecting", async () => {
    const env = setup();
    env.client.connect();
    env.socket.fire("connect_error", new Error("xhr poll error"));
    assert.equal(env.client.state, "connecting");
  });

  test("needs io", () => {
    assert.throws(() => new ChatClient({ token: TOKEN }), TypeError);
  });
});

describe("join and history", () => {
  test("history arrives in order, once, and joined reports the room", async () => {
    const env = await connected(setup());
    env.server.post("lobby", { silent: true });
    env.server.post("lobby", { silent: true });
    const joined = [];
    env.client.on("joined", (info) => joined.push(info));
    const info = await env.client.join("lobby");
    assert.equal(info.room_id, "lobby");
    assert.deepEqual(env.received.map((m) => m.seq), [1, 2]);
    assert.equal(joined.length, 1);
    assert.equal(joined[0].resumed, false);
    assert.equal(env.socket.emitsOf("join_room")[0].since_seq, undefined);
  });

  test("join before connect waits for the connection", async () => {
    const env = setup();
    env.client.connect();
    const joining = env.client.join("lobby");
    await tick();
    assert.equal(env.socket.emitsOf("join_room").length, 0);
    env.socket.up();
    await joining;
    assert.equal(env.socket.emitsOf("join_room").length, 1);
  });

  test("a ban refusing the join is reported as banned", async () => {
    const env = await connected(setup());
    env.server.handle = (socket, event, data, ack) => ack({ ok: false, error: { code: "banned", message: "no", details: { until: null, reason: "spam" } } });
    const banned = [];
    env.client.on("banned", (e) => banned.push(e));
    await assert.rejects(env.client.join("lobby"), (err) => err.code === "banned");
    assert.deepEqual(banned, [{ room_id: "lobby", until: null, reason: "spam" }]);
  });
});

describe("dedupe", () => {
  test("a message in history and live is delivered once", async () => {
    const env = await connected(setup());
    const m = env.server.post("lobby", { silent: true });
    await env.client.join("lobby");
    env.socket.fire("new_message", m);
    env.socket.fire("new_message", m);
    assert.equal(env.received.length, 1);
  });

  test("own message: the ack and the new_message echo make one message", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    const sent = await env.client.send("lobby", "hello");
    await tick();
    assert.equal(env.received.filter((m) => m.message_id === sent.message_id).length, 1);
  });

  test("messages of rooms not joined are ignored", async () => {
    const env = await connected(setup());
    env.socket.fire("new_message", { message_id: "x", room_id: "elsewhere", seq: 1, user: { user_id: "b" } });
    assert.equal(env.received.length, 0);
  });
});

describe("send with retry", () => {
  test("carries a client_msg_id and resolves with the stored message", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    const m = await env.client.send("lobby", "hi");
    const sent = env.socket.emitsOf("send_message");
    assert.equal(sent.length, 1);
    assert.ok(sent[0].client_msg_id);
    assert.equal(m.client_msg_id, sent[0].client_msg_id);
    assert.equal(m.content, "hi");
  });

  test("a lost ack is retried with the same client_msg_id and stored once", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    env.server.dropAcks = 1;
    const retries = [];
    env.client.on("retry", (r) => retries.push(r));
    const m = await env.client.send("lobby", "once");
    const sent = env.socket.emitsOf("send_message");
    assert.equal(sent.length, 2);
    assert.equal(sent[0].client_msg_id, sent[1].client_msg_id);
    assert.equal(env.server.stored, 1);
    assert.equal(retries.length, 1);
    assert.equal(retries[0].error.code, "timeout");
    assert.equal(m.seq, 1);
  });

  test("unavailable is retried; rate_limited is not, and carries retry_after_ms", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    env.server.failNext.push({ code: "unavailable", message: "db down" });
    await env.client.send("lobby", "after outage");
    assert.equal(env.socket.emitsOf("send_message").length, 2);

    env.server.failNext.push({ code: "rate_limited", message: "slow down", retry_after_ms: 1500 });
    await assert.rejects(env.client.send("lobby", "too fast"), (err) => err.code === "rate_limited" && err.retryAfterMs === 1500);
    assert.equal(env.socket.emitsOf("send_message").length, 3);
  });

  test("gives up after sendRetries attempts", async () => {
    const env = await connected(setup({ sendRetries: 2 }));
    await env.client.join("lobby");
    env.server.failNext.push(...Array(5).fill({ code: "unavailable", message: "down" }));
    await assert.rejects(env.client.send("lobby", "x"), (err) => err.code === "unavailable");
    assert.equal(env.socket.emitsOf("send_message").length, 3);
  });

  test("a send during an outage waits for the re-join and goes out once", async () => {
    const env = await connected(setup({ ackTimeoutMs: 500 }));
    await env.client.join("lobby");
    env.socket.drop();
    const sending = env.client.send("lobby", "while offline");
    await tick(20);
    assert.equal(env.socket.emitsOf("send_message").length, 0);
    env.socket.up();
    const m = await sending;
    assert.equal(m.content, "while offline");
    assert.equal(env.server.stored, 1);
    const calls = env.server.calls.map((c) => c.event);
    assert.ok(calls.lastIndexOf("join_room") < calls.lastIndexOf("send_message"), "re-joined before sending");
  });

  test("a connection lost while waiting for the ack resends the same id after reconnecting", async () => {
    const env = await connected(setup({ ackTimeoutMs: 500 }));
    await env.client.join("lobby");
    env.server.dropAcks = 1; // stored, but the ack never comes back
    const sending = env.client.send("lobby", "lost ack");
    await tick(5);
    env.socket.drop();
    await tick(10);
    env.socket.up();
    const m = await sending;
    const sent = env.socket.emitsOf("send_message");
    assert.equal(sent.length, 2);
    assert.equal(sent[0].client_msg_id, sent[1].client_msg_id);
    assert.equal(env.server.stored, 1);
    assert.equal(m.seq, 1);
  });

  test("not_in_room makes it join again and resend", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    env.server.leaveAll(env.socket); // e.g. the server restarted the session
    const m = await env.client.send("lobby", "again");
    assert.equal(m.content, "again");
    assert.equal(env.socket.emitsOf("join_room").length, 2);
  });
});

describe("gaps and reconnects", () => {
  test("a seq gap in live messages is filled with join_room since_seq", async () => {
    const env = await connected(setup());
    env.server.post("lobby", { silent: true });
    await env.client.join("lobby");
    env.server.post("lobby", { silent: true }); // 2: lost on the way
    env.server.post("lobby", { silent: true }); // 3: lost too
    env.server.post("lobby"); // 4: arrives
    await until(() => env.received.length === 4, 1000, "gap filled");
    const joins = env.socket.emitsOf("join_room");
    assert.equal(joins.at(-1).since_seq, 1);
    assert.deepEqual(env.received.map((m) => m.seq).sort((a, b) => a - b), [1, 2, 3, 4]);
    assert.equal(new Set(env.received.map((m) => m.message_id)).size, 4);
  });

  test("after a drop it re-joins with since_seq and gets what was missed, without duplicates", async () => {
    const env = await connected(setup());
    const states = [];
    env.client.on("state", (s) => states.push(s));
    for (let i = 0; i < 3; i++) env.server.post("lobby", { silent: true });
    await env.client.join("lobby");
    env.socket.drop();
    assert.equal(env.client.state, "reconnecting");
    for (let i = 0; i < 4; i++) env.server.post("lobby"); // not delivered: the socket is down
    const resumed = [];
    env.client.on("joined", (info) => resumed.push(info));
    env.socket.up();
    await until(() => resumed.length === 1, 1000, "re-join");
    assert.equal(resumed[0].resumed, true);
    assert.equal(env.socket.emitsOf("join_room").at(-1).since_seq, 3);
    assert.deepEqual(env.received.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(states, ["reconnecting", "connected"]);
  });

  test("a long outage is fetched page by page", async () => {
    const env = await connected(setup({ server: new FakeServer({ historyLimit: 3 }) }));
    await env.client.join("lobby");
    env.socket.drop();
    for (let i = 0; i < 8; i++) env.server.post("lobby");
    env.socket.up();
    await until(() => env.received.length === 8, 1000, "all pages");
    assert.deepEqual(env.socket.emitsOf("join_room").slice(1).map((j) => j.since_seq), [0, 3, 6]);
  });

  test("the server closing the socket makes it reconnect by itself", async () => {
    const env = await connected(setup());
    env.socket.drop("io server disconnect");
    await until(() => env.socket.connectCalls === 1, 500, "socket.connect()");
  });

  test("disconnect() is final and fails waiting sends", async () => {
    const env = await connected(setup({ ackTimeoutMs: 1000 }));
    await env.client.join("lobby");
    env.socket.drop();
    const sending = env.client.send("lobby", "x");
    env.client.disconnect();
    await assert.rejects(sending, (err) => ["disconnected", "timeout"].includes(err.code));
    assert.equal(env.client.state, "disconnected");
  });
});

describe("typing and reactions", () => {
  test("typing true is throttled, false follows a true only", async () => {
    const env = await connected(setup({ typingIntervalMs: 1000 }));
    await env.client.join("lobby");
    env.client.typing("lobby", false);
    env.client.typing("lobby", true);
    env.client.typing("lobby", true);
    env.client.typing("lobby", false);
    env.client.typing("lobby", false);
    assert.deepEqual(env.socket.emitsOf("typing").map((t) => t.is_typing), [true, false]);
  });

  test("react sends remove only when asked", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    await env.client.react("m1", "👍");
    await env.client.react("m1", "👍", { remove: true });
    assert.deepEqual(env.socket.emitsOf("react"), [{ message_id: "m1", reaction: "👍" }, { message_id: "m1", reaction: "👍", remove: true }]);
  });
});

describe("banned", () => {
  test("a banned event stops sends and re-joins of that room", async () => {
    const env = await connected(setup());
    await env.client.join("lobby");
    const banned = [];
    env.client.on("banned", (e) => banned.push(e));
    env.socket.fire("banned", { room_id: "lobby", until: null, reason: "rude" });
    assert.equal(banned.length, 1);
    await assert.rejects(env.client.send("lobby", "x"), (err) => err.code === "banned");
    env.socket.drop();
    env.socket.up();
    await tick(5);
    assert.equal(env.socket.emitsOf("join_room").length, 1, "no re-join of a room we are banned from");
  });
});

describe("global bans", () => {
  test("room_id null bans every room, and the store shows it", async () => {
    const env = await connected(setup());
    const store = new RoomStore(env.client, "lobby").start();
    await env.client.join("video_1");
    await until(() => store.getSnapshot().room === "joined", 500, "joined");
    env.socket.fire("banned", { room_id: null, until: null, reason: "spam everywhere" });
    await assert.rejects(env.client.send("video_1", "x"), (err) => err.code === "banned");
    await assert.rejects(env.client.send("lobby", "x"), (err) => err.code === "banned");
    assert.deepEqual(store.getSnapshot().banned, { room_id: "lobby", until: null, reason: "spam everywhere" });
    env.socket.fire("unbanned", { room_id: null });
    await until(() => store.getSnapshot().room === "joined", 500, "joined again");
    assert.equal(store.getSnapshot().banned, null);
    store.stop();
  });
});

describe("REST helpers", () => {
  test("send the bearer token and map errors", async () => {
    const calls = [];
    const fetch = async (url, init) => {
      calls.push({ url, init });
      if (url.endsWith("/ban")) {
        return new Response(JSON.stringify({ error: { code: "forbidden", message: "no" } }), { status: 403 });
      }
      return new Response(JSON.stringify({ reports: [{ id: 1 }] }), { status: 200 });
    };
    const env = setup({ fetch, url: "http://chat.test" });
    assert.deepEqual(await env.client.reports({ roomId: "lobby" }), [{ id: 1 }]);
    assert.equal(calls[0].url, "http://chat.test/api/reports?status=open&room_id=lobby");
    assert.equal(calls[0].init.headers.Authorization, `Bearer ${TOKEN}`);
    await assert.rejects(env.client.ban("lobby", "bob", { durationSeconds: 60 }), (err) => err.code === "forbidden" && err.status === 403);
    assert.deepEqual(JSON.parse(calls[1].init.body), { user_id: "bob", duration_seconds: 60 });
  });
});

describe("decodeToken", () => {
  test("reads the claims (unicode names too) and survives garbage", () => {
    assert.equal(decodeToken(fakeToken({ sub: "u1", name: "Zoë 🎉" })).name, "Zoë 🎉");
    assert.deepEqual(decodeToken("not a token"), {});
  });
});

describe("RoomStore", () => {
  async function store(opts) {
    const env = await connected(setup(opts));
    const s = new RoomStore(env.client, "lobby", { typingTtlMs: 50 });
    let changes = 0;
    s.subscribe(() => changes++);
    s.start();
    await until(() => s.getSnapshot().room === "joined", 500, "joined");
    return { ...env, store: s, changes: () => changes };
  }

  test("snapshots are stable between changes and replaced on change", async () => {
    const env = await store();
    const a = env.store.getSnapshot();
    assert.equal(env.store.getSnapshot(), a);
    env.server.post("lobby");
    const b = env.store.getSnapshot();
    assert.notEqual(b, a);
    assert.equal(b.messages.length, 1);
  });

  test("messages are ordered by seq, whatever order they arrive in", async () => {
    const env = await store();
    const m3 = env.server.post("lobby", { silent: true });
    const m1 = env.server.post("lobby", { silent: true });
    m1.seq = 2; m3.seq = 3;
    env.socket.fire("new_message", m3);
    env.socket.fire("new_message", m1);
    await tick(5);
    assert.deepEqual(env.store.getSnapshot().messages.map((m) => m.seq), [2, 3]);
  });

  test("a local echo is shown at once and replaced by the stored message", async () => {
    const env = await store();
    env.server.ackDelayMs = 20;
    const sending = env.store.send("<b>hi</b>");
    const pending = env.store.getSnapshot().messages;
    assert.equal(pending.length, 1);
    assert.equal(pending[0].pending, true);
    assert.equal(pending[0].content_html, null, "a local echo has no HTML: it is rendered as text");
    await sending;
    const after = env.store.getSnapshot().messages;
    assert.equal(after.length, 1);
    assert.equal(after[0].pending, undefined);
    assert.ok(!after[0].message_id.startsWith("local:"));
  });

  test("rate_limited marks the echo failed and sets rateLimitedUntil; retry reuses the id", async () => {
    const env = await store();
    env.server.failNext.push({ code: "rate_limited", message: "slow down", retry_after_ms: 2000 });
    await assert.rejects(env.store.send("x"));
    const snap = env.store.getSnapshot();
    assert.equal(snap.messages[0].failed.code, "rate_limited");
    assert.ok(snap.rateLimitedUntil > Date.now() + 1000);
    assert.equal(snap.error.code, "rate_limited");
    const id = snap.messages[0].client_msg_id;
    const m = await env.store.retry(id);
    assert.equal(m.client_msg_id, id);
    assert.equal(env.store.getSnapshot().messages.length, 1);
  });

  test("typing, online count, reactions and deletions", async () => {
    const env = await store();
    env.socket.fire("user_typing", { room_id: "lobby", user_id: "bob", username: "Bob", is_typing: true });
    assert.deepEqual(env.store.getSnapshot().typing, [{ user_id: "bob", username: "Bob" }]);
    env.socket.fire("user_typing", { room_id: "lobby", user_id: "alice", username: "Alice", is_typing: true });
    assert.equal(env.store.getSnapshot().typing.length, 1, "never shows ourselves typing");
    await until(() => env.store.getSnapshot().typing.length === 0, 500, "typing expiry");

    env.socket.fire("room_stats", { room_id: "lobby", online_users: 7, message_count: 3 });
    assert.equal(env.store.getSnapshot().online, 7);

    const m = env.server.post("lobby");
    env.socket.fire("message_reaction", { room_id: "lobby", message_id: m.message_id, reactions: { "👍": 2 }, user_id: "alice", reaction: "👍", action: "added" });
    let view = env.store.getSnapshot().messages[0];
    assert.deepEqual(view.reactions, { "👍": 2 });
    assert.deepEqual(view.mine, ["👍"]);
    await env.store.react(m.message_id, "👍");
    assert.equal(env.socket.emitsOf("react").at(-1).remove, true, "toggling our own reaction removes it");

    env.socket.fire("message_deleted", { room_id: "lobby", message_id: m.message_id, seq: m.seq });
    assert.equal(env.store.getSnapshot().messages.length, 0);
  });

  test("a message from a typist ends their typing", async () => {
    const env = await store();
    env.socket.fire("user_typing", { room_id: "lobby", user_id: "bob", username: "Bob", is_typing: true });
    env.server.post("lobby", { user: "bob" });
    assert.equal(env.store.getSnapshot().typing.length, 0);
  });

  test("mentionsMe and banned", async () => {
    const env = await store();
    const list = env.server.room("lobby");
    const m = { ...env.server.post("lobby", { silent: true }), mentions: ["alice"] };
    list[list.length - 1] = m;
    env.socket.fire("new_message", m);
    assert.equal(env.store.getSnapshot().messages[0].mentionsMe, true);
    const until = new Date(Date.now() + 60_000).toISOString();
    env.socket.fire("banned", { room_id: "lobby", until, reason: "timeout" });
    const snap = env.store.getSnapshot();
    assert.equal(snap.room, "banned");
    assert.deepEqual(snap.banned, { room_id: "lobby", until, reason: "timeout" });
    env.store.stop();
  });

  test("connection state changes reach the snapshot", async () => {
    const env = await store();
    env.socket.drop();
    assert.equal(env.store.getSnapshot().connection, "reconnecting");
    env.socket.up();
    assert.equal(env.store.getSnapshot().connection, "connected");
  });
});
