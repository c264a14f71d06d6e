// The React hook (chat_server/web/use-chat.js) rendered with React's test renderer
// (no DOM needed), against the fake socket and server.
import assert from "node:assert/strict";
import { test } from "node:test";

import React from "react";
import TestRenderer from "react-test-renderer";

import { useChat } from "../../chat_server/web/use-chat.js";
import { FakeServer, FakeSocket, fakeToken, tick } from "./fakes.mjs";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act, create } = TestRenderer;

function harness() {
  const server = new FakeServer();
  const sockets = [];
  const io = (opts) => {
    const socket = new FakeSocket(server);
    socket.opts = opts;
    sockets.push(socket);
    return socket;
  };
  const seen = { current: null, renders: 0 };
  function Probe({ token, roomId }) {
    seen.current = useChat(token, roomId, { io, client: { ackTimeoutMs: 100, retryDelayMs: 5 } });
    seen.renders += 1;
    return null;
  }
  return { server, sockets, seen, Probe };
}

test("useChat connects, joins, shows live messages and sends", async () => {
  const h = harness();
  const token = fakeToken({ sub: "alice", name: "Alice", exp: 9999999999 });
  h.server.post("video_1", { silent: true, content: "earlier" });
  let renderer;
  await act(async () => {
    renderer = create(React.createElement(h.Probe, { token, roomId: "video_1" }));
  });
  assert.equal(h.sockets.length, 1);
  assert.deepEqual(h.sockets[0].opts.auth, { token });
  assert.equal(h.seen.current.connection, "connecting");

  await act(async () => {
    h.sockets[0].up();
    await tick(5);
  });
  assert.equal(h.seen.current.connection, "connected");
  assert.equal(h.seen.current.room, "joined");
  assert.deepEqual(h.seen.current.messages.map((m) => m.content), ["earlier"]);
  assert.equal(h.seen.current.me.username, "Alice");

  await act(async () => {
    h.server.post("video_1", { content: "live one" });
    h.sockets[0].fire("user_typing", { room_id: "video_1", user_id: "bob", username: "Bob", is_typing: true });
    h.sockets[0].fire("room_stats", { room_id: "video_1", online_users: 2, message_count: 2 });
  });
  assert.deepEqual(h.seen.current.messages.map((m) => m.content), ["earlier", "live one"]);
  assert.deepEqual(h.seen.current.typing.map((t) => t.username), ["Bob"]);
  assert.equal(h.seen.current.online, 2);

  await act(async () => {
    const sent = await h.seen.current.sendMessage("  mine  ");
    assert.equal(sent.content, "mine");
  });
  assert.deepEqual(h.seen.current.messages.map((m) => m.content), ["earlier", "live one", "mine"]);
  assert.equal(h.server.stored, 1);

  await act(async () => renderer.unmount());
  assert.equal(h.sockets[0].connected, false, "unmount closes the connection");
});

test("a new room opens a new connection; no token, no connection", async () => {
  const h = harness();
  let renderer;
  await act(async () => {
    renderer = create(React.createElement(h.Probe, { token: null, roomId: "a" }));
  });
  assert.equal(h.sockets.length, 0);
  assert.equal(h.seen.current.connection, "idle");
  assert.deepEqual(h.seen.current.messages, []);

  const token = fakeToken({ sub: "alice", exp: 9999999999 });
  await act(async () => renderer.update(React.createElement(h.Probe, { token, roomId: "a" })));
  await act(async () => { h.sockets[0].up(); await tick(5); });
  await act(async () => renderer.update(React.createElement(h.Probe, { token, roomId: "b" })));
  assert.equal(h.sockets.length, 2);
  assert.equal(h.sockets[0].connected, false);
  await act(async () => { h.sockets[1].up(); await tick(5); });
  assert.equal(h.seen.current.roomId, "b");
  assert.equal(h.seen.current.room, "joined");
  await act(async () => renderer.unmount());
});

test("a rate-limited send leaves a failed echo and the error in the state", async () => {
  const h = harness();
  const token = fakeToken({ sub: "alice", exp: 9999999999 });
  let renderer;
  await act(async () => {
    renderer = create(React.createElement(h.Probe, { token, roomId: "r" }));
  });
  await act(async () => { h.sockets[0].up(); await tick(5); });
  h.server.failNext.push({ code: "rate_limited", message: "Slow down", retry_after_ms: 3000 });
  await act(async () => {
    assert.equal(await h.seen.current.sendMessage("too fast"), undefined);
  });
  assert.equal(h.seen.current.error.code, "rate_limited");
  assert.ok(h.seen.current.rateLimitedUntil > Date.now());
  assert.equal(h.seen.current.messages[0].failed.code, "rate_limited");
  await act(async () => renderer.unmount());
});
