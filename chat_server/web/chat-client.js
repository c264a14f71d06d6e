// @ts-check
/**
 * A small browser (and Node) client for chat-server's Socket.IO protocol
 * (docs/protocol.md §2), on top of the stock `socket.io-client` v4.
 *
 * What it adds to a bare socket:
 *
 * - **join and re-join**: rooms joined once are joined again after every reconnect,
 *   with `since_seq` = the highest `seq` seen, so the missed messages come back in the
 *   ack (no duplicates: see dedupe; no gaps: see gap fill);
 * - **send with retry**: every message carries a `client_msg_id`; on an ack timeout, a
 *   dropped connection, `unavailable` or `not_in_room` it is sent again with the *same*
 *   id, which the server turns into the original message instead of a second one;
 * - **dedupe** by `message_id` (the server sends `new_message` to the sender too, and a
 *   message can arrive live and in a history page);
 * - **gap fill** by `seq`: a live message whose `seq` skips numbers triggers a
 *   `join_room {since_seq}` for what is missing;
 * - a tiny event emitter with the protocol's event names, plus `state`, `message`,
 *   `joined` and `retry`;
 * - REST helpers with the same token (moderation: delete, ban, reports).
 *
 * {@link RoomStore} keeps the state of one room (ordered messages, typing, online count,
 * ban, rate limit) as immutable snapshots; the demo page renders it and the React hook
 * (`use-chat.js`) exposes it through `useSyncExternalStore`.
 *
 * No bare imports: pass `io` from `socket.io-client` (the demo page imports the vendored
 * ESM bundle, Node tests import the npm package, unit tests pass a fake).
 *
 * @module chat-client
 */

/**
 * @typedef {object} ChatUser
 * @property {string} user_id
 * @property {string} username
 * @property {string|null} [avatar]
 */

/**
 * A chat message as the server sends it (docs/protocol.md §2 "Message").
 * @typedef {object} Message
 * @property {string} message_id
 * @property {string} room_id
 * @property {number} seq
 * @property {ChatUser} user
 * @property {string} content        plain text: render with `textContent`
 * @property {string|null} [content_html]  server-made safe HTML (escaped text, links, mentions)
 * @property {string} type
 * @property {string} timestamp
 * @property {string|null} [edited_at]
 * @property {Record<string, number>} reactions
 * @property {string[]} mentions
 * @property {string|null} [reply_to]
 * @property {string|null} [client_msg_id]
 */

/**
 * The error body of a failed ack or REST call.
 * @typedef {object} ErrorBody
 * @property {string} code
 * @property {string} message
 * @property {number} [retry_after_ms]
 * @property {any} [details]
 */

/**
 * Connection states: `idle` (not started), `connecting` (first attempt), `connected`,
 * `reconnecting` (lost, socket.io-client is retrying), `disconnected` (closed by us),
 * `unauthorized` (the server refused the token; final).
 * @typedef {"idle"|"connecting"|"connected"|"reconnecting"|"disconnected"|"unauthorized"} ConnectionState
 */

/** Error codes after which a send is tried again with the same `client_msg_id`. */
export const RETRYABLE_CODES = new Set(["timeout", "disconnected", "unavailable", "not_in_room"]);

/** Server events that the client re-emits unchanged (after its own bookkeeping). */
export const SERVER_EVENTS = [
  "new_message", "user_joined", "user_left", "user_typing", "room_stats", "message_reaction",
  "message_updated", "message_deleted", "presence", "banned", "unbanned", "mentioned",
];

/** An error with a protocol error code (`rate_limited`, `banned`, `timeout` ...). */
export class ChatError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {{retryAfterMs?: number, details?: any, status?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "ChatError";
    /** @type {string} */
    this.code = code;
    /** @type {number|undefined} */
    this.retryAfterMs = extra.retryAfterMs;
    this.details = extra.details;
    /** HTTP status for REST errors. */
    this.status = extra.status;
  }

  /**
   * @param {Partial<ErrorBody>|undefined|null} body
   * @param {number} [status]
   */
  static from(body, status) {
    const b = body || {};
    return new ChatError(b.code || "internal_error", b.message || "Request failed",
      { retryAfterMs: b.retry_after_ms, details: b.details, status });
  }
}

/** A random id for `client_msg_id` (crypto.randomUUID where available). */
export function newClientMsgId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  return `m-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

/**
 * The claims of a JWT (not verified: only to know who "me" is; the server verifies).
 * @param {string} token
 * @returns {{sub?: string, name?: string, username?: string, role?: string, exp?: number, [k: string]: any}}
 */
export function decodeToken(token) {
  try {
    const part = String(token).split(".")[1] || "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const binary = typeof atob === "function" ? atob(b64) : Buffer.from(b64, "base64").toString("binary");
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A minimal event emitter (works the same in browsers and Node). */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Subscribe; returns a function that unsubscribes.
   * @param {string} event
   * @param {(...args: any[]) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @param {string} event
   * @param {(...args: any[]) => void} listener
   */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /**
   * @param {string} event
   * @param {...any} args
   */
  emit(event, ...args) {
    for (const listener of [...(this._listeners.get(event) || [])]) {
      try {
        listener(...args);
      } catch (err) {
        // One broken listener must not stop the others (or the client's bookkeeping).
        console.error(`chat-client: listener of ${event} failed`, err);
      }
    }
  }
}

/** A promise with its resolve/reject, for "room ready on this connection". */
function deferred() {
  /** @type {(v?: any) => void} */ let resolve = () => {};
  /** @type {(e: any) => void} */ let reject = () => {};
  /** @type {Promise<any>} */
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => {}); // rejections are observed by whoever awaits it
  return { promise, resolve, reject };
}

const SEEN_LIMIT = 5000;

/**
 * @typedef {object} RoomEntry
 * @property {string} id
 * @property {boolean} joined        joined on the current connection
 * @property {boolean} everJoined    joined once: later joins ask for `since_seq`
 * @property {number} lastSeq        highest seq received live or in history
 * @property {Map<string, true>} seen  message ids already delivered (bounded)
 * @property {ReturnType<typeof deferred>} ready
 * @property {{room_id: string, until: string|null, reason: string|null}|null} banned
 * @property {Promise<void>} fills   chain of gap fills (one at a time)
 * @property {any} [info]            what the last join answered (see the `joined` event)
 */

/**
 * @typedef {object} ChatClientOptions
 * @property {(url?: string, opts?: any) => any} io  `io` of socket.io-client (or a fake)
 * @property {string} token          the JWT
 * @property {string} [url]          server URL (default: the page's origin)
 * @property {string[]} [transports] default `["websocket", "polling"]`
 * @property {number} [ackTimeoutMs] how long to wait for an ack (default 8000)
 * @property {number} [sendRetries]  extra attempts of a send (default 4)
 * @property {number} [retryDelayMs] first retry delay, doubled each time (default 400)
 * @property {number} [typingIntervalMs] resend `typing: true` at most this often (default 2000)
 * @property {object} [socketOptions] more options for `io()`
 * @property {typeof fetch} [fetch]  for the REST helpers (default: global fetch)
 */

/**
 * The protocol client.  Events (subscribe with {@link ChatClient#on}):
 *
 * | event | arguments |
 * |---|---|
 * | `state` | `(state: ConnectionState, detail?)` |
 * | `message` | `(message: Message, {live: boolean})`: each message once (live, history, gap fill or own ack) |
 * | `joined` | `({room_id, room, online_users, has_more, resumed, history})` after every (re)join |
 * | `join_error` | `(room_id, ChatError)` |
 * | `retry` | `({room_id, client_msg_id, attempt, error})` before a send is tried again |
 * | `banned` | `({room_id, until, reason})` (also when a join is refused for a ban) |
 * | server events | `user_joined`, `user_left`, `user_typing`, `room_stats`, `message_reaction`, `message_updated`, `message_deleted`, `presence`, `mentioned`, `unbanned` as sent |
 */
export class ChatClient extends Emitter {
  /** @param {ChatClientOptions} options */
  constructor(options) {
    super();
    if (!options || typeof options.io !== "function") throw new TypeError("ChatClient needs options.io (from socket.io-client)");
    this.options = {
      transports: ["websocket", "polling"], ackTimeoutMs: 8000, sendRetries: 4, retryDelayMs: 400, typingIntervalMs: 2000,
      ...options,
    };
    this.token = options.token;
    /** Who the token says we are (unverified; for display and "is this me"). */
    this.me = (() => {
      const claims = decodeToken(options.token);
      return { user_id: claims.sub || "", username: claims.name || claims.username || claims.sub || "", role: claims.role || "user" };
    })();
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {any} */
    this.socket = null;
    /** @type {Map<string, RoomEntry>} */
    this.rooms = new Map();
    /** @type {Set<{reject: (e: any) => void}>} */
    this._pending = new Set();
    /** @type {Map<string, {on: boolean, sentAt: number}>} */
    this._typing = new Map();
    this._everConnected = false;
  }

  /** True for moderator and admin tokens (the server still checks every action). */
  get isModerator() {
    return this.me.role === "moderator" || this.me.role === "admin";
  }

  /**
   * @param {ConnectionState} state
   * @param {any} [detail]
   */
  _setState(state, detail) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state, detail);
  }

  /**
   * Open the connection.  Resolves on the first successful connect; rejects with
   * `ChatError("unauthorized")` when the server refuses the token.  Afterwards
   * socket.io-client reconnects by itself and the client re-joins its rooms.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.socket) return this._connected || Promise.resolve();
    const { io, url, transports, socketOptions } = this.options;
    this._setState("connecting");
    const opts = {
      auth: { token: this.token }, transports, reconnectionDelay: 500, reconnectionDelayMax: 5000, ...(socketOptions || {}),
    };
    const socket = url ? io(url, opts) : io(opts);
    this.socket = socket;
    this._connected = new Promise((resolve, reject) => {
      this._firstConnect = { resolve, reject };
    });
    this._connected.catch(() => {});

    socket.on("connect", () => this._onConnect());
    socket.on("disconnect", (/** @type {string} */ reason) => this._onDisconnect(reason));
    socket.on("connect_error", (/** @type {any} */ err) => this._onConnectError(err));
    if (socket.io && typeof socket.io.on === "function") {
      socket.io.on("reconnect_attempt", () => {
        if (this.state !== "disconnected" && this.state !== "unauthorized") this._setState("reconnecting");
      });
    }
    socket.on("new_message", (/** @type {Message} */ m) => this._receive(m, { live: true }));
    socket.on("banned", (/** @type {any} */ e) => this._onBanned(e));
    socket.on("unbanned", (/** @type {any} */ e) => this.emit("unbanned", e));
    for (const name of SERVER_EVENTS) {
      if (name === "new_message" || name === "banned" || name === "unbanned") continue;
      socket.on(name, (/** @type {any} */ payload) => this._onServerEvent(name, payload));
    }
    return this._connected;
  }

  /** Close the connection for good (no reconnect). */
  disconnect() {
    this._setState("disconnected");
    this._failPending(new ChatError("disconnected", "Disconnected"));
    for (const room of this.rooms.values()) {
      room.joined = false;
      room.ready.reject(new ChatError("disconnected", "Disconnected"));
    }
    if (this.socket) this.socket.disconnect();
  }

  _onConnect() {
    this._everConnected = true;
    this._setState("connected");
    this._firstConnect?.resolve();
    for (const room of this.rooms.values()) {
      if (!room.banned) this._join(room).catch(() => {});
    }
  }

  /** @param {string} reason */
  _onDisconnect(reason) {
    this._failPending(new ChatError("disconnected", `Connection lost (${reason})`));
    for (const room of this.rooms.values()) {
      room.joined = false;
      room.ready = deferred();
    }
    this._typing.clear();
    if (reason === "io client disconnect" || this.state === "disconnected") {
      this._setState("disconnected");
      return;
    }
    this._setState("reconnecting", reason);
    if (reason === "io server disconnect") {
      // The server closed this socket (e.g. a node draining): socket.io-client does
      // not retry by itself in that case.
      setTimeout(() => { if (this.state === "reconnecting" && this.socket) this.socket.connect(); }, this.options.retryDelayMs);
    }
  }

  /** @param {any} err */
  _onConnectError(err) {
    const message = err && err.message;
    if (message === "unauthorized") {
      this._setState("unauthorized");
      this._firstConnect?.reject(new ChatError("unauthorized", "The server refused the token"));
      this._failPending(new ChatError("unauthorized", "The server refused the token"));
      if (this.socket) this.socket.disconnect();
      return;
    }
    // Transport errors: socket.io-client keeps retrying.
    if (this.state !== "disconnected") this._setState(this._everConnected ? "reconnecting" : "connecting", message);
  }

  /** @param {ChatError} error */
  _failPending(error) {
    for (const entry of [...this._pending]) entry.reject(error);
    this._pending.clear();
  }

  /**
   * Emit an event with an ack; resolves with the ack body, rejects with
   * `ChatError("timeout")` or `ChatError("disconnected")`.
   * @param {string} event
   * @param {any} payload
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  call(event, payload, timeoutMs = this.options.ackTimeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.socket || !this.socket.connected) {
        reject(new ChatError("disconnected", "Not connected"));
        return;
      }
      let done = false;
      const entry = {
        reject: (/** @type {any} */ err) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          this._pending.delete(entry);
          reject(err);
        },
      };
      const timer = setTimeout(() => entry.reject(new ChatError("timeout", `No answer to ${event} within ${timeoutMs} ms`)), timeoutMs);
      this._pending.add(entry);
      this.socket.emit(event, payload, (/** @type {any} */ ack) => {
        if (done) return; // answered after the timeout: the caller has moved on (or retried)
        done = true;
        clearTimeout(timer);
        this._pending.delete(entry);
        resolve(ack && typeof ack === "object" ? ack : { ok: false, error: { code: "internal_error", message: "Malformed ack" } });
      });
    });
  }

  /**
   * Join a room (again after every reconnect, with `since_seq`).  Resolves with the
   * join ack of the current connection.
   * @param {string} roomId
   * @returns {Promise<any>}
   */
  async join(roomId) {
    let room = this.rooms.get(roomId);
    if (!room) {
      room = { id: roomId, joined: false, everJoined: false, lastSeq: 0, seen: new Map(), ready: deferred(), banned: null, fills: Promise.resolve(), info: null };
      this.rooms.set(roomId, room);
    }
    room.banned = null;
    if (room.joined && room.info) return room.info;
    if (this.socket && this.socket.connected) return this._join(room);
    return room.ready.promise;
  }

  /**
   * One `join_room` on the current connection, resuming from `lastSeq` when the room was
   * joined before.  Pages through `has_more` so a long outage leaves no gap.
   * @param {RoomEntry} room
   */
  async _join(room) {
    const resumed = room.everJoined;
    const first = room.lastSeq;
    let ack;
    let since = room.lastSeq;
    try {
      for (let page = 0; ; page++) {
        const payload = /** @type {any} */ ({ room_id: room.id });
        if (resumed) payload.since_seq = since;
        ack = await this.call("join_room", payload);
        if (!ack.ok) throw ChatError.from(ack.error);
        room.everJoined = true;
        const history = ack.history || [];
        for (const m of history) this._receive(m, { live: false, fromHistory: true });
        // Without since_seq, has_more means "older messages exist" (load them with
        // loadOlder); with it, "more after this page": go on from the page's last seq
        // (not from lastSeq, which a live message may already have moved past the page).
        if (!resumed || !ack.has_more || !history.length || page >= 50) break;
        since = history[history.length - 1].seq;
      }
    } catch (err) {
      const error = err instanceof ChatError ? err : new ChatError("internal_error", String(err));
      if (error.code === "banned") {
        this._onBanned({ room_id: room.id, until: error.details?.until ?? null, reason: error.details?.reason ?? null });
      } else {
        this.emit("join_error", room.id, error);
        if (RETRYABLE_CODES.has(error.code) && this.socket?.connected && error.code !== "disconnected") {
          // A dependency hiccup: try again shortly (sends wait for the room meanwhile).
          setTimeout(() => { if (!room.joined && !room.banned && this.rooms.get(room.id) === room && this.socket?.connected) this._join(room).catch(() => {}); },
            Math.max(this.options.retryDelayMs, error.retryAfterMs || 0));
          throw error;
        }
      }
      room.ready.reject(error);
      throw error;
    }
    room.joined = true;
    const info = { room_id: room.id, room: ack.room, online_users: ack.online_users || [], has_more: !!ack.has_more, resumed, since_seq: resumed ? first : null };
    room.info = info;
    room.ready.resolve(info);
    this.emit("joined", info);
    return info;
  }

  /**
   * Leave a room (and stop re-joining it).
   * @param {string} roomId
   */
  async leave(roomId) {
    const room = this.rooms.get(roomId);
    this.rooms.delete(roomId);
    if (room) room.ready.reject(new ChatError("not_in_room", "Left the room"));
    if (room?.joined && this.socket?.connected) {
      try { await this.call("leave_room", { room_id: roomId }); } catch { /* leaving anyway */ }
    }
  }

  /**
   * Wait until the room is joined on the current connection (at most `timeoutMs`).
   * @param {string} roomId
   * @param {number} timeoutMs
   */
  async _ready(roomId, timeoutMs) {
    const room = this.rooms.get(roomId);
    if (!room) throw new ChatError("not_in_room", `Join ${roomId} first`);
    if (room.banned) throw new ChatError("banned", "You are banned from this room", { details: room.banned });
    if (room.joined) return;
    /** @type {any} */
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new ChatError("timeout", "Not connected")), timeoutMs);
    });
    try {
      await Promise.race([room.ready.promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Send a message.  The same `client_msg_id` is reused on every retry, so a message
   * whose ack got lost is stored once.  Resolves with the stored Message; rejects with a
   * ChatError (`rate_limited` with `retryAfterMs`, `banned`, `message_rejected` ...).
   * @param {string} roomId
   * @param {string} content
   * @param {{clientMsgId?: string, type?: "text"|"encrypted", replyTo?: string}} [opts]
   * @returns {Promise<Message>}
   */
  async send(roomId, content, opts = {}) {
    const clientMsgId = opts.clientMsgId || newClientMsgId();
    /** @type {any} */
    const payload = { room_id: roomId, content, client_msg_id: clientMsgId };
    if (opts.type) payload.type = opts.type;
    if (opts.replyTo) payload.reply_to = opts.replyTo;
    const { sendRetries, retryDelayMs, ackTimeoutMs } = this.options;
    for (let attempt = 1; ; attempt++) {
      try {
        await this._ready(roomId, ackTimeoutMs);
        const ack = await this.call("send_message", payload);
        if (!ack.ok) throw ChatError.from(ack.error);
        this._stopTypingLocally(roomId);
        this._receive(ack.message, { live: false, fromAck: true });
        return ack.message;
      } catch (err) {
        const error = err instanceof ChatError ? err : new ChatError("internal_error", String(err));
        if (!RETRYABLE_CODES.has(error.code) || attempt > sendRetries || this.state === "disconnected" || this.state === "unauthorized") throw error;
        if (error.code === "not_in_room") {
          const room = this.rooms.get(roomId);
          if (!room) throw error;
          room.joined = false;
          room.ready = deferred();
          if (this.socket?.connected) this._join(room).catch(() => {});
        }
        this.emit("retry", { room_id: roomId, client_msg_id: clientMsgId, attempt, error });
        await sleep(Math.max(error.retryAfterMs || 0, retryDelayMs * 2 ** (attempt - 1)));
      }
    }
  }

  /**
   * Tell the room whether we are typing.  `true` is sent at most every
   * `typingIntervalMs` (the server announces "stopped" itself a few seconds after the
   * last one); `false` only after a `true`.
   * @param {string} roomId
   * @param {boolean} isTyping
   */
  typing(roomId, isTyping) {
    const now = Date.now();
    const last = this._typing.get(roomId);
    if (isTyping) {
      if (last?.on && now - last.sentAt < this.options.typingIntervalMs) return;
      this._typing.set(roomId, { on: true, sentAt: now });
    } else {
      if (!last?.on) return;
      this._typing.delete(roomId);
    }
    if (this.rooms.get(roomId)?.joined) this.call("typing", { room_id: roomId, is_typing: isTyping }).catch(() => {});
  }

  /** @param {string} roomId */
  _stopTypingLocally(roomId) {
    this._typing.delete(roomId); // the server ends typing when a message is sent
  }

  /**
   * Toggle (or with `remove`, set) our reaction on a message.  Resolves with the new
   * counts; the room also gets `message_reaction`.
   * @param {string} messageId
   * @param {string} reaction  an emoji (or a configured reaction name)
   * @param {{remove?: boolean}} [opts]
   * @returns {Promise<{reactions: Record<string, number>, action: string}>}
   */
  async react(messageId, reaction, opts = {}) {
    /** @type {any} */
    const payload = { message_id: messageId, reaction };
    if (typeof opts.remove === "boolean") payload.remove = opts.remove;
    const ack = await this.call("react", payload);
    if (!ack.ok) throw ChatError.from(ack.error);
    return { reactions: ack.reactions, action: ack.action };
  }

  /**
   * Deliver a message once: seq bookkeeping (and gap detection) for live and history
   * messages, dedupe by `message_id` for all.
   * @param {Message} m
   * @param {{live: boolean, fromAck?: boolean, fromHistory?: boolean}} how
   */
  _receive(m, how) {
    if (!m || typeof m !== "object" || !m.message_id) return;
    const room = this.rooms.get(m.room_id);
    if (!room) return;
    // Our own ack may carry a seq above messages of others still on their way: it does
    // not move lastSeq (its new_message echo does), so they are not mistaken for a gap.
    if (!how.fromAck && typeof m.seq === "number") {
      if (how.live && room.joined && m.seq > room.lastSeq + 1 && room.everJoined) this._fillGap(room, room.lastSeq);
      if (m.seq > room.lastSeq) room.lastSeq = m.seq;
    }
    if (room.seen.has(m.message_id)) return;
    room.seen.set(m.message_id, true);
    if (room.seen.size > SEEN_LIMIT) {
      // Forget the oldest ids; old messages are not resent by since_seq anyway.
      const drop = room.seen.size - SEEN_LIMIT;
      let i = 0;
      for (const key of room.seen.keys()) {
        if (i++ >= drop) break;
        room.seen.delete(key);
      }
    }
    this.emit("message", m, { live: how.live });
  }

  /**
   * Fetch what came after `sinceSeq` (a live message skipped numbers).  Fills run one
   * at a time per room; duplicates are dropped by `_receive`.
   * @param {RoomEntry} room
   * @param {number} sinceSeq
   */
  _fillGap(room, sinceSeq) {
    room.fills = room.fills.then(async () => {
      for (let page = 0; page < 50; page++) {
        if (!room.joined || !this.socket?.connected) return; // the re-join will resume
        let ack;
        try {
          ack = await this.call("join_room", { room_id: room.id, since_seq: sinceSeq });
        } catch {
          return;
        }
        if (!ack.ok) return;
        const history = ack.history || [];
        for (const m of history) this._receive(m, { live: false, fromHistory: true });
        if (!ack.has_more || !history.length) return;
        sinceSeq = history[history.length - 1].seq;
      }
    });
  }

  /** @param {{room_id: string|null, until: string|null, reason: string|null}} event */
  _onBanned(event) {
    if (!event) return;
    // room_id null: a global ban, which applies to every room.
    const rooms = event.room_id == null ? [...this.rooms.values()] : [this.rooms.get(event.room_id)];
    for (const room of rooms) {
      if (!room) continue;
      room.banned = { room_id: room.id, until: event.until ?? null, reason: event.reason ?? null };
      room.joined = false;
      const error = new ChatError("banned", "You are banned from this room", { details: room.banned });
      room.ready.reject(error);
      room.ready = deferred();
    }
    this.emit("banned", event);
  }

  /**
   * @param {string} name
   * @param {any} payload
   */
  _onServerEvent(name, payload) {
    this.emit(name, payload);
  }

  // --- REST (moderation and history) --------------------------------------------------

  /**
   * A REST call with the client's token.  Resolves with the parsed JSON (or null for an
   * empty body); rejects with a ChatError carrying the server's code and status.
   * @param {string} method
   * @param {string} path
   * @param {any} [body]
   */
  async request(method, path, body) {
    const doFetch = this.options.fetch || globalThis.fetch;
    const base = (this.options.url || "").replace(/\/$/, "");
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await doFetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!response.ok) {
      const retry = response.headers?.get?.("Retry-After");
      const error = ChatError.from(data && data.error, response.status);
      if (error.retryAfterMs === undefined && retry) error.retryAfterMs = Number(retry) * 1000;
      throw error;
    }
    return data;
  }

  /**
   * Older messages (REST keyset cursor), oldest first.
   * @param {string} roomId
   * @param {number} beforeSeq
   * @param {number} [limit]
   * @returns {Promise<{messages: Message[], has_more: boolean}>}
   */
  async loadOlder(roomId, beforeSeq, limit = 50) {
    const page = await this.request("GET", `/api/rooms/${encodeURIComponent(roomId)}/messages?before_seq=${beforeSeq}&limit=${limit}`);
    for (const m of page.messages || []) this._receive(m, { live: false });
    return { messages: page.messages || [], has_more: !!page.has_more };
  }

  /** Soft-delete a message (author or moderator): `DELETE /api/messages/{id}`. @param {string} messageId */
  deleteMessage(messageId) {
    return this.request("DELETE", `/api/messages/${encodeURIComponent(messageId)}`);
  }

  /**
   * Ban (or with `durationSeconds`, time out) a user from a room (room moderators).
   * @param {string} roomId
   * @param {string} userId
   * @param {{durationSeconds?: number, reason?: string}} [opts]
   */
  ban(roomId, userId, opts = {}) {
    /** @type {any} */
    const body = { user_id: userId };
    if (opts.durationSeconds) body.duration_seconds = opts.durationSeconds;
    if (opts.reason) body.reason = opts.reason;
    return this.request("POST", `/api/rooms/${encodeURIComponent(roomId)}/ban`, body);
  }

  /**
   * Report a message to the moderators.
   * @param {string} messageId
   * @param {string} reason
   */
  report(messageId, reason) {
    return this.request("POST", `/api/messages/${encodeURIComponent(messageId)}/report`, { reason });
  }

  /**
   * The moderators' review queue (`GET /api/reports`).
   * @param {{roomId?: string, status?: string}} [filter]
   * @returns {Promise<any[]>}
   */
  async reports(filter = {}) {
    const query = new URLSearchParams({ status: filter.status || "open" });
    if (filter.roomId) query.set("room_id", filter.roomId);
    const data = await this.request("GET", `/api/reports?${query}`);
    return Array.isArray(data) ? data : (data && (data.reports || data.items)) || [];
  }

  /**
   * Resolve a report: `dismiss`, `delete_message` or `ban_user`.
   * @param {string|number} reportId
   * @param {"dismiss"|"delete_message"|"ban_user"} action
   * @param {string} [note]
   */
  resolveReport(reportId, action, note) {
    return this.request("POST", `/api/reports/${encodeURIComponent(String(reportId))}/resolve`, note ? { action, note } : { action });
  }
}

// --- RoomStore: the state of one room as immutable snapshots ------------------------------

/**
 * A message in a snapshot: the server's Message plus local fields.  Local echoes of
 * messages still being sent have `pending: true` (and `failed` with the error once they
 * failed); their `message_id` is `local:<client_msg_id>`.
 * @typedef {Message & {pending?: boolean, failed?: {code: string, message: string}|null, mine?: string[], mentionsMe?: boolean}} ViewMessage
 */

/**
 * @typedef {object} RoomSnapshot
 * @property {string} roomId
 * @property {ConnectionState} connection
 * @property {"joining"|"joined"|"banned"|"error"} room  the room's own state
 * @property {ViewMessage[]} messages   ordered by seq; pending local echoes last
 * @property {{user_id: string, username: string}[]} typing   others typing now
 * @property {number|null} online       users online in the room
 * @property {ChatUser[]} onlineUsers
 * @property {{room_id: string, until: string|null, reason: string|null}|null} banned
 * @property {number} rateLimitedUntil  epoch ms; 0 when not limited
 * @property {ChatError|null} error     the last error worth showing
 * @property {boolean} hasOlder         older history exists (see loadOlder)
 * @property {ChatUser & {role: string}} me
 */

/**
 * The state of one room, kept from a {@link ChatClient}'s events.  `subscribe` and
 * `getSnapshot` follow React's `useSyncExternalStore` contract: the snapshot object is
 * replaced on every change and is stable otherwise.
 */
export class RoomStore {
  /**
   * @param {ChatClient} client
   * @param {string} roomId
   * @param {{typingTtlMs?: number, maxMessages?: number}} [options]
   */
  constructor(client, roomId, options = {}) {
    this.client = client;
    this.roomId = roomId;
    this.options = { typingTtlMs: 6000, maxMessages: 500, ...options };
    /** @type {Map<string, ViewMessage>} message_id → message */
    this._messages = new Map();
    /** @type {Map<string, ViewMessage>} client_msg_id → local echo */
    this._pending = new Map();
    /** @type {Map<string, {user_id: string, username: string, timer: any}>} */
    this._typing = new Map();
    /** @type {Set<string>} `${message_id}\u0000${reaction}` that are ours */
    this._mine = new Set();
    /** @type {Set<() => void>} */
    this._listeners = new Set();
    /** @type {(() => void)[]} */
    this._unsubscribe = [];
    this._state = {
      room: /** @type {RoomSnapshot["room"]} */ ("joining"), online: /** @type {number|null} */ (null), onlineUsers: /** @type {ChatUser[]} */ ([]),
      banned: /** @type {RoomSnapshot["banned"]} */ (null), rateLimitedUntil: 0, error: /** @type {ChatError|null} */ (null), hasOlder: false,
    };
    /** @type {any} */
    this._banTimer = null;
    /** @type {RoomSnapshot|null} */
    this._snapshot = null;
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
  }

  /**
   * @param {() => void} listener
   * @returns {() => void}
   */
  subscribe(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /** @returns {RoomSnapshot} */
  getSnapshot() {
    if (!this._snapshot) {
      const ordered = [...this._messages.values()].sort((a, b) => a.seq - b.seq);
      const me = this.client.me;
      this._snapshot = {
        roomId: this.roomId,
        connection: this.client.state,
        ...this._state,
        messages: [...ordered, ...this._pending.values()],
        typing: [...this._typing.values()].map(({ user_id, username }) => ({ user_id, username })),
        me: { ...me },
      };
    }
    return this._snapshot;
  }

  _changed() {
    this._snapshot = null;
    for (const listener of [...this._listeners]) listener();
  }

  /** @param {Partial<RoomStore["_state"]>} patch */
  _set(patch) {
    Object.assign(this._state, patch);
    this._changed();
  }

  /**
   * @param {Message} m
   * @returns {ViewMessage}
   */
  _view(m) {
    const me = this.client.me.user_id;
    const mine = Object.keys(m.reactions || {}).filter((r) => this._mine.has(`${m.message_id}\u0000${r}`));
    return { ...m, reactions: { ...(m.reactions || {}) }, mine, mentionsMe: !!me && Array.isArray(m.mentions) && m.mentions.includes(me) };
  }

  /** Subscribe to the client and join the room. */
  start() {
    const c = this.client;
    const mine = (/** @type {any} */ e) => e && e.room_id === this.roomId;
    this._unsubscribe.push(
      c.on("state", () => this._changed()),
      c.on("message", (/** @type {Message} */ m) => {
        if (m.room_id !== this.roomId) return;
        if (m.client_msg_id && this._pending.has(m.client_msg_id) && m.user?.user_id === c.me.user_id) this._pending.delete(m.client_msg_id);
        this._messages.set(m.message_id, this._view(m));
        this._clearTyping(m.user?.user_id);
        this._trim();
        this._changed();
      }),
      c.on("joined", (/** @type {any} */ info) => {
        if (info.room_id !== this.roomId) return;
        const patch = { room: /** @type {const} */ ("joined"), banned: null, onlineUsers: info.online_users, error: null };
        if (!info.resumed) Object.assign(patch, { hasOlder: info.has_more });
        if (this._state.online === null || !info.resumed) Object.assign(patch, { online: info.online_users.length });
        this._set(patch);
      }),
      c.on("join_error", (/** @type {string} */ roomId, /** @type {ChatError} */ error) => {
        if (roomId === this.roomId) this._set({ room: "error", error });
      }),
      c.on("room_stats", (/** @type {any} */ e) => { if (mine(e)) this._set({ online: e.online_users }); }),
      c.on("user_joined", (/** @type {any} */ e) => {
        if (!mine(e)) return;
        const users = this._state.onlineUsers.filter((u) => u.user_id !== e.user_id);
        this._set({ onlineUsers: [...users, { user_id: e.user_id, username: e.username, avatar: e.avatar ?? null }] });
      }),
      c.on("user_left", (/** @type {any} */ e) => {
        if (!mine(e)) return;
        this._clearTyping(e.user_id);
        this._set({ onlineUsers: this._state.onlineUsers.filter((u) => u.user_id !== e.user_id) });
      }),
      c.on("user_typing", (/** @type {any} */ e) => {
        if (!mine(e) || e.user_id === c.me.user_id) return;
        if (e.is_typing) {
          const old = this._typing.get(e.user_id);
          if (old) clearTimeout(old.timer);
          // The server says "stopped" by itself; the local timer only covers a lost event.
          const timer = setTimeout(() => { this._typing.delete(e.user_id); this._changed(); }, this.options.typingTtlMs);
          this._typing.set(e.user_id, { user_id: e.user_id, username: e.username, timer });
          this._changed();
        } else if (this._clearTyping(e.user_id)) {
          this._changed();
        }
      }),
      c.on("message_reaction", (/** @type {any} */ e) => {
        if (!mine(e)) return;
        const key = `${e.message_id}\u0000${e.reaction}`;
        if (e.user_id === c.me.user_id) {
          if (e.action === "added") this._mine.add(key); else this._mine.delete(key);
        }
        const m = this._messages.get(e.message_id);
        if (m) {
          this._messages.set(e.message_id, this._view({ ...m, reactions: e.reactions || {} }));
          this._changed();
        }
      }),
      c.on("message_updated", (/** @type {Message} */ m) => {
        if (m.room_id !== this.roomId || !this._messages.has(m.message_id)) return;
        this._messages.set(m.message_id, this._view(m));
        this._changed();
      }),
      c.on("message_deleted", (/** @type {any} */ e) => {
        if (mine(e) && this._messages.delete(e.message_id)) this._changed();
      }),
      // room_id null: a global ban (or its end), which applies to this room too.
      c.on("banned", (/** @type {any} */ e) => { if (e && (mine(e) || e.room_id == null)) this._onBanned({ ...e, room_id: this.roomId }); }),
      c.on("unbanned", (/** @type {any} */ e) => { if (e && (mine(e) || e.room_id == null) && this._state.banned) this.rejoin(); }),
    );
    this.client.join(this.roomId).catch(() => {});
    return this;
  }

  /** Stop listening and leave the room. */
  stop() {
    for (const off of this._unsubscribe.splice(0)) off();
    for (const t of this._typing.values()) clearTimeout(t.timer);
    this._typing.clear();
    clearTimeout(this._banTimer);
    this.client.leave(this.roomId).catch(() => {});
  }

  /** Join again (after a timeout ended). */
  rejoin() {
    clearTimeout(this._banTimer);
    this._set({ banned: null, room: "joining", error: null });
    this.client.join(this.roomId).catch(() => {});
  }

  /** @param {{room_id: string, until: string|null, reason: string|null}} e */
  _onBanned(e) {
    clearTimeout(this._banTimer);
    this._set({ banned: { room_id: e.room_id, until: e.until ?? null, reason: e.reason ?? null }, room: "banned" });
    for (const t of this._typing.values()) clearTimeout(t.timer);
    this._typing.clear();
    if (e.until) {
      const wait = Date.parse(e.until) - Date.now();
      // A timeout ends by itself: join again then (capped so the timer stays sane).
      if (wait > 0 && wait < 7 * 24 * 3600 * 1000) this._banTimer = setTimeout(() => this.rejoin(), wait + 500);
    }
  }

  /** @param {string|undefined} userId */
  _clearTyping(userId) {
    const t = userId ? this._typing.get(userId) : undefined;
    if (!t || !userId) return false;
    clearTimeout(t.timer);
    this._typing.delete(userId);
    return true;
  }

  _trim() {
    const extra = this._messages.size - this.options.maxMessages;
    if (extra <= 0) return;
    const oldest = [...this._messages.values()].sort((a, b) => a.seq - b.seq).slice(0, extra);
    for (const m of oldest) this._messages.delete(m.message_id);
    this._state.hasOlder = true;
  }

  /**
   * Send a message with a local echo (shown at once as `pending`, replaced by the stored
   * message).  Resolves with the stored Message or rejects with a ChatError; the echo
   * then carries `failed` (retry with {@link RoomStore#retry}, drop with
   * {@link RoomStore#dismiss}).  `rate_limited`, `slow_mode` and `banned` also update the
   * snapshot (`rateLimitedUntil`, `banned`).
   * @param {string} content
   * @param {{clientMsgId?: string}} [opts]
   * @returns {Promise<Message>}
   */
  async send(content, opts = {}) {
    const clientMsgId = opts.clientMsgId || newClientMsgId();
    const me = this.client.me;
    const lastSeq = this.client.rooms.get(this.roomId)?.lastSeq || 0;
    /** @type {ViewMessage} */
    const echo = {
      message_id: `local:${clientMsgId}`, room_id: this.roomId, seq: lastSeq + 0.5, user: { user_id: me.user_id, username: me.username, avatar: null },
      content, content_html: null, type: "text", timestamp: new Date().toISOString(), reactions: {}, mentions: [], client_msg_id: clientMsgId,
      pending: true, failed: null, mine: [],
    };
    this._pending.set(clientMsgId, echo);
    this._changed();
    try {
      const message = await this.client.send(this.roomId, content, { clientMsgId });
      if (this._pending.delete(clientMsgId)) this._changed();
      return message;
    } catch (err) {
      const error = err instanceof ChatError ? err : new ChatError("internal_error", String(err));
      if (this._pending.has(clientMsgId)) {
        this._pending.set(clientMsgId, { ...echo, pending: false, failed: { code: error.code, message: error.message } });
      }
      if ((error.code === "rate_limited" || error.code === "slow_mode") && error.retryAfterMs) {
        this._state.rateLimitedUntil = Date.now() + error.retryAfterMs;
      }
      if (error.code === "banned" && error.details) this._onBanned({ room_id: this.roomId, until: error.details.until ?? null, reason: error.details.reason ?? null });
      this._set({ error });
      throw error;
    }
  }

  /**
   * Send a failed local echo again, with its original `client_msg_id`.
   * @param {string} clientMsgId
   */
  retry(clientMsgId) {
    const echo = this._pending.get(clientMsgId);
    if (!echo) return Promise.reject(new ChatError("not_found", "Nothing to retry"));
    this._pending.delete(clientMsgId);
    return this.send(echo.content, { clientMsgId });
  }

  /** Drop a failed local echo. @param {string} clientMsgId */
  dismiss(clientMsgId) {
    if (this._pending.delete(clientMsgId)) this._changed();
  }

  /** Forget the last error (e.g. after showing it). */
  clearError() {
    if (this._state.error) this._set({ error: null });
  }

  /**
   * Toggle our reaction on a message.
   * @param {string} messageId
   * @param {string} reaction
   */
  async react(messageId, reaction) {
    const has = this._mine.has(`${messageId}\u0000${reaction}`);
    try {
      return await this.client.react(messageId, reaction, { remove: has });
    } catch (err) {
      const error = err instanceof ChatError ? err : new ChatError("internal_error", String(err));
      if (error.code === "rate_limited" && error.retryAfterMs) this._state.rateLimitedUntil = Date.now() + error.retryAfterMs;
      this._set({ error });
      throw error;
    }
  }

  /** @param {boolean} isTyping */
  setTyping(isTyping) {
    this.client.typing(this.roomId, isTyping);
  }

  /** Load the page of history before the oldest message shown. */
  async loadOlder() {
    const oldest = [...this._messages.values()].reduce((min, m) => Math.min(min, m.seq), Infinity);
    if (!Number.isFinite(oldest)) return;
    const page = await this.client.loadOlder(this.roomId, oldest);
    this._set({ hasOlder: page.has_more });
  }
}
