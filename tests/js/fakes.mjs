// Test doubles for chat-client.js: a fake socket.io-client socket and a tiny in-memory
// chat server that answers it the way chat-server does (acks, seq, client_msg_id
// idempotency, since_seq history, broadcasts to the sender too).

/** The minimum of socket.io-client's Socket that ChatClient uses. */
export class FakeSocket {
  constructor(server) {
    this.server = server;
    this.handlers = new Map();
    this.connected = false;
    this.emitted = [];
    this.opts = null;
    this.ioHandlers = new Map();
    this.io = { on: (event, fn) => this.ioHandlers.set(event, fn) };
    this.connectCalls = 0;
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(fn);
    return this;
  }

  fire(event, ...args) {
    for (const fn of this.handlers.get(event) || []) fn(...args);
  }

  emit(event, data, ack) {
    this.emitted.push({ event, data });
    if (this.server) this.server.handle(this, event, data, ack);
    return this;
  }

  connect() {
    this.connectCalls += 1;
    return this;
  }

  disconnect() {
    const was = this.connected;
    this.connected = false;
    if (was) this.fire("disconnect", "io client disconnect");
    return this;
  }

  // --- what the network does ---
  up() {
    this.connected = true;
    if (this.server) this.server.sockets.add(this);
    this.fire("connect");
  }

  drop(reason = "transport close") {
    this.connected = false;
    if (this.server) this.server.leaveAll(this);
    this.fire("disconnect", reason);
    this.io.handlers?.get?.("reconnect_attempt")?.();
    this.ioHandlers.get("reconnect_attempt")?.(1);
  }

  emitsOf(event) {
    return this.emitted.filter((e) => e.event === event).map((e) => e.data);
  }
}

/** `io` for ChatClient: hands out the given socket and records the options. */
export function fakeIo(socket) {
  const io = (urlOrOpts, maybeOpts) => {
    socket.opts = typeof urlOrOpts === "object" ? urlOrOpts : maybeOpts;
    socket.url = typeof urlOrOpts === "string" ? urlOrOpts : undefined;
    return socket;
  };
  return io;
}

let nextId = 1;

export function message(roomId, seq, user = "bob", extra = {}) {
  return {
    message_id: `m${nextId++}`, room_id: roomId, seq, user: { user_id: user, username: user, avatar: null }, content: `message ${seq}`,
    content_html: `message ${seq}`, type: "text", timestamp: new Date().toISOString(), edited_at: null, reactions: {}, mentions: [],
    reply_to: null, client_msg_id: null, ...extra,
  };
}

/** A small chat server behind FakeSockets. */
export class FakeServer {
  constructor({ historyLimit = 100, user = "alice" } = {}) {
    this.rooms = new Map();
    this.sockets = new Set();
    this.members = new Map(); // socket -> Set(room)
    this.historyLimit = historyLimit;
    this.user = user;
    this.byClientId = new Map();
    this.stored = 0;
    this.dropAcks = 0; // the next N acks are lost (the request is still processed)
    this.failNext = []; // error bodies returned by the next send_message calls
    this.ackDelayMs = 0;
    this.calls = [];
  }

  room(id) {
    if (!this.rooms.has(id)) this.rooms.set(id, []);
    return this.rooms.get(id);
  }

  /** Store a message from someone else and broadcast it (unless `silent`). */
  post(roomId, { user = "bob", silent = false, content } = {}) {
    const list = this.room(roomId);
    const m = message(roomId, list.length + 1, user, content ? { content, content_html: content } : {});
    list.push(m);
    if (!silent) this.broadcast(roomId, "new_message", m);
    return m;
  }

  broadcast(roomId, event, payload) {
    for (const socket of this.sockets) {
      if (socket.connected && this.members.get(socket)?.has(roomId)) socket.fire(event, payload);
    }
  }

  leaveAll(socket) {
    this.members.delete(socket);
  }

  answer(ack, body) {
    if (!ack) return;
    if (this.dropAcks > 0) {
      this.dropAcks -= 1;
      return;
    }
    if (this.ackDelayMs) setTimeout(() => ack(body), this.ackDelayMs);
    else queueMicrotask(() => ack(body));
  }

  handle(socket, event, data, ack) {
    this.calls.push({ event, data });
    if (event === "join_room") {
      const list = this.room(data.room_id);
      if (!this.members.has(socket)) this.members.set(socket, new Set());
      this.members.get(socket).add(data.room_id);
      let history;
      let hasMore;
      if (data.since_seq !== undefined) {
        const after = list.filter((m) => m.seq > data.since_seq);
        history = after.slice(0, this.historyLimit);
        hasMore = after.length > this.historyLimit;
      } else {
        history = list.slice(-this.historyLimit);
        hasMore = list.length > this.historyLimit;
      }
      this.answer(ack, { ok: true, room: { id: data.room_id }, history, has_more: hasMore, online_users: [{ user_id: this.user, username: this.user, avatar: null }] });
      return;
    }
    if (event === "send_message") {
      if (!this.members.get(socket)?.has(data.room_id)) {
        this.answer(ack, { ok: false, error: { code: "not_in_room", message: "join first" } });
        return;
      }
      if (this.failNext.length) {
        this.answer(ack, { ok: false, error: this.failNext.shift() });
        return;
      }
      const key = `${data.room_id}:${data.client_msg_id}`;
      let m = data.client_msg_id ? this.byClientId.get(key) : undefined;
      if (!m) {
        const list = this.room(data.room_id);
        m = message(data.room_id, list.length + 1, this.user, { content: data.content, content_html: data.content, client_msg_id: data.client_msg_id ?? null });
        list.push(m);
        this.stored += 1;
        if (data.client_msg_id) this.byClientId.set(key, m);
        this.broadcast(data.room_id, "new_message", m);
      }
      this.answer(ack, { ok: true, message: m });
      return;
    }
    if (event === "react") {
      this.answer(ack, { ok: true, reactions: { [data.reaction]: data.remove ? 0 : 1 }, action: data.remove ? "removed" : "added" });
      return;
    }
    this.answer(ack, { ok: true });
  }
}

/** Resolves after pending microtasks and timers of `ms`. */
export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` until it is true (or fails after `timeoutMs`). */
export async function until(predicate, timeoutMs = 2000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

/** A JWT-shaped token with the given claims (unsigned: the fake server does not check). */
export function fakeToken(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.sig`;
}
