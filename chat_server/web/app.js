// The demo stream page and the embeddable panel (/embed/{room_id}): sign-in, then a
// RoomStore (chat-client.js) rendered into the DOM.  Message text goes through
// textContent; only the server's content_html (escaped, links and mentions marked up
// by the server) is ever assigned to innerHTML.
import { ChatClient, ChatError, RoomStore } from "./chat-client.js";

const REACTIONS = [
  ["👍", "thumbs up"],
  ["❤️", "heart"],
  ["😂", "laughing"],
  ["🎉", "party"],
];
const TIMEOUT_SECONDS = 300;
const TOKEN_KEY = "chat-demo-token";

const $ = (id) => document.getElementById(id);
const el = {
  body: document.body,
  whoami: $("whoami"),
  signOut: $("sign-out"),
  roomName: $("room-name"),
  online: $("online"),
  connection: $("connection"),
  notice: $("notice"),
  signIn: $("sign-in"),
  signInName: $("sign-in-name"),
  signInRole: $("sign-in-role"),
  signInError: $("sign-in-error"),
  loadOlder: $("load-older"),
  messages: $("messages"),
  typing: $("typing"),
  composer: $("composer"),
  input: $("message-input"),
  send: $("send"),
  moderation: $("moderation"),
  reports: $("reports"),
  reportsEmpty: $("reports-empty"),
  refreshReports: $("refresh-reports"),
};

const embed = el.body.dataset.mode === "embed";
const roomId = (() => {
  if (embed) return decodeURIComponent(location.pathname.replace(/^\/embed\//, "").replace(/\/$/, ""));
  return new URLSearchParams(location.search).get("room") || "lobby";
})();
el.roomName.textContent = roomId;
document.title = embed ? `Chat · ${roomId}` : `Live stream · ${roomId}`;

/** Everything of the signed-in session; null when signed out. */
let session = null;
/** Local, short-lived notices (e.g. "Reported"), shown when nothing more important is. */
let flash = null;

// --- tokens ------------------------------------------------------------------------------

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token) {
    // Keep the token out of the address bar, bookmarks and screenshots.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return token;
}

async function devSignIn(name, role) {
  const response = await fetch("/api/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ name, role }),
  });
  const data = await response.json().catch(() => null);
  if (response.status === 404) {
    throw new Error("Development sign-in is switched off on this server (production). Open the page with #token=<your JWT>.");
  }
  if (!response.ok) {
    const details = data?.error?.details;
    const first = details && typeof details === "object" ? Object.values(details).flat()[0] : null;
    throw new Error(first || data?.error?.message || `Sign-in failed (${response.status})`);
  }
  return data.token;
}

// --- sign-in form --------------------------------------------------------------------------

function showSignIn(message = "") {
  el.signIn.hidden = false;
  el.composer.hidden = true;
  el.moderation.hidden = true;
  el.whoami.hidden = true;
  el.signOut.hidden = true;
  el.signInError.textContent = message;
  el.online.hidden = true;
  el.connection.dataset.state = "idle";
  el.connection.textContent = "Not signed in";
  el.signInName.focus();
}

el.signIn.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = el.signInName.value.trim();
  if (!name) return;
  const button = el.signIn.querySelector("button[type=submit]");
  button.disabled = true;
  el.signInError.textContent = "";
  try {
    const token = await devSignIn(name, el.signInRole.value);
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
  } catch (err) {
    el.signInError.textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

el.signOut.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  stop();
  showSignIn();
});

// --- session -------------------------------------------------------------------------------

async function start(token) {
  stop();
  let io;
  try {
    ({ io } = await import("/static/vendor/socket.io.esm.min.js"));
  } catch {
    showNotice("error", "The socket.io-client bundle is missing on the server: run `make install` (npm ci).");
    return;
  }
  const client = new ChatClient({ io, token });
  const store = new RoomStore(client, roomId);
  session = { client, store, nodes: new Map(), rendered: null, timer: null, unsubscribe: null };
  window.chatDemo = { client, store }; // for the console (and the browser tests)
  session.unsubscribe = store.subscribe(render);
  store.start();
  el.signIn.hidden = true;
  el.composer.hidden = false;
  el.whoami.hidden = false;
  el.signOut.hidden = embed;
  el.online.hidden = false;
  el.whoami.textContent = `${client.me.username}${client.isModerator ? ` (${client.me.role})` : ""}`;
  el.moderation.hidden = !client.isModerator;
  render();
  client.connect().catch(() => {});
  // The room exists once joined: load the moderators' queue then (and after reconnects).
  if (client.isModerator) client.on("joined", (info) => { if (info.room_id === roomId && !info.resumed) refreshReports(); });
}

function stop() {
  if (!session) return;
  session.unsubscribe?.();
  clearInterval(session.timer);
  session.store.stop();
  session.client.disconnect();
  session = null;
  window.chatDemo = undefined;
  el.messages.replaceChildren();
  el.reports.replaceChildren();
  el.typing.textContent = "";
  el.online.textContent = "– online";
  hideNotice();
}

// --- rendering -----------------------------------------------------------------------------

const CONNECTION_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
  unauthorized: "Signed out",
};

function showNotice(kind, text) {
  el.notice.hidden = false;
  el.notice.dataset.kind = kind;
  if (el.notice.textContent !== text) el.notice.textContent = text;
}

function hideNotice() {
  el.notice.hidden = true;
  el.notice.textContent = "";
  delete el.notice.dataset.kind;
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function describeBan(banned) {
  const reason = banned.reason ? ` Reason: ${banned.reason}.` : "";
  if (!banned.until) return `You are banned from this room.${reason}`;
  return `You are timed out until ${formatTime(banned.until)} (you can read, not write).${reason}`;
}

/** Re-render from the store's snapshot (cheap: messages are keyed by message_id). */
function render() {
  if (!session) return;
  const snap = session.store.getSnapshot();
  const previous = session.rendered;
  session.rendered = snap;

  el.connection.dataset.state = snap.room === "banned" ? "banned" : snap.connection;
  el.connection.textContent = snap.room === "banned" ? "Banned" : CONNECTION_TEXT[snap.connection] || snap.connection;
  el.online.textContent = snap.online === null ? "– online" : `${snap.online} online`;

  if (snap.connection === "unauthorized") {
    sessionStorage.removeItem(TOKEN_KEY);
    stop();
    showSignIn("Your sign-in was refused or has expired. Sign in again.");
    return;
  }

  renderNotice(snap);
  renderComposer(snap);
  if (!previous || previous.messages !== snap.messages || previous.me.user_id !== snap.me.user_id) renderMessages(snap);
  if (!previous || previous.typing !== snap.typing) renderTyping(snap);
  el.loadOlder.hidden = !snap.hasOlder;
}

function rateLimitLeft(snap) {
  return Math.max(0, snap.rateLimitedUntil - Date.now());
}

function renderNotice(snap) {
  if (snap.banned) return showNotice("banned", describeBan(snap.banned));
  if (snap.connection === "reconnecting") {
    return showNotice("reconnecting", "Connection lost. Reconnecting… Messages you send now go out when it is back.");
  }
  if (snap.connection === "connecting") return showNotice("reconnecting", "Connecting to the chat…");
  const left = rateLimitLeft(snap);
  if (left > 0) {
    tickWhileLimited();
    // A fixed text (an alert region would re-announce a ticking one); the Send button
    // shows the countdown.
    return showNotice("rate-limited", "You are sending messages too fast. Wait until the Send button is back.");
  }
  if (snap.room === "error" && snap.error) return showNotice("error", `Could not join the room: ${snap.error.message}`);
  if (snap.error && snap.error.code !== "rate_limited" && snap.error.code !== "slow_mode" && snap.error.code !== "banned") {
    return showNotice("error", errorText(snap.error));
  }
  if (flash && flash.until > Date.now()) return showNotice(flash.kind, flash.text);
  hideNotice();
}

function errorText(error) {
  if (error.code === "message_rejected") {
    const reason = error.details?.reason;
    return `Message not sent${reason ? ` (${reason.replace(/_/g, " ")})` : ""}: ${error.message}`;
  }
  return error.message || error.code;
}

/** While rate-limited, re-render every second for the countdown. */
function tickWhileLimited() {
  if (!session || session.timer) return;
  session.timer = setInterval(() => {
    if (!session) return;
    if (rateLimitLeft(session.store.getSnapshot()) <= 0) {
      clearInterval(session.timer);
      session.timer = null;
      session.store.clearError();
    }
    render();
  }, 1000);
}

function renderComposer(snap) {
  const banned = !!snap.banned;
  const limited = rateLimitLeft(snap) > 0;
  el.input.disabled = banned;
  el.input.placeholder = banned ? "You cannot write in this room right now" : "Say something…";
  el.send.disabled = banned || limited;
  el.send.textContent = limited && !banned ? `Wait ${Math.ceil(rateLimitLeft(snap) / 1000)} s` : "Send";
}

function renderTyping(snap) {
  const names = snap.typing.map((t) => t.username);
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names[0]}, ${names[1]} and ${names.length - 2} more are typing…`;
  el.typing.textContent = text;
}

function renderMessages(snap) {
  const list = el.messages;
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const nodes = session.nodes;
  const keep = new Set();
  let cursor = list.firstElementChild;
  for (const m of snap.messages) {
    let node = nodes.get(m.message_id);
    if (!node && m.client_msg_id && !m.pending && !m.failed) {
      // The stored version of our local echo: reuse its element (announced once).
      const echoKey = `local:${m.client_msg_id}`;
      node = nodes.get(echoKey);
      if (node) {
        nodes.delete(echoKey);
        nodes.set(m.message_id, node);
      }
    }
    if (!node) {
      node = document.createElement("li");
      nodes.set(m.message_id, node);
    }
    if (node.chatMessage !== m) fillMessage(node, m, snap);
    keep.add(node);
    if (node !== cursor) list.insertBefore(node, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const [key, node] of nodes) {
    if (!keep.has(node)) {
      node.remove();
      nodes.delete(key);
    }
  }
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

function button(label, text, onClick, className = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.title = label;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

/**
 * Fill one message element; on later calls only the parts that changed are rebuilt, so
 * the log region does not announce the message again and keyboard focus stays put.
 * Text goes through textContent; content_html (server-made) is the only innerHTML.
 */
function fillMessage(node, m, snap) {
  const old = node.chatMessage;
  const me = snap.me.user_id;
  const isMine = m.user?.user_id === me;
  const moderator = session.client.isModerator;
  node.chatMessage = m;
  if (!old) {
    node.className = "message";
    node.replaceChildren();
    const meta = document.createElement("div");
    meta.className = "meta";
    const body = document.createElement("div");
    body.className = "body";
    const reactions = document.createElement("div");
    reactions.className = "reactions";
    reactions.setAttribute("role", "group");
    reactions.setAttribute("aria-label", "Reactions");
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.setAttribute("role", "group");
    node.parts = { meta, body, reactions, actions };
    node.append(meta, body, reactions, actions);
  }
  const { meta, body, reactions, actions } = node.parts;
  node.id = `msg-${m.message_id.replace(/[^\w-]/g, "_")}`;
  node.dataset.messageId = m.message_id;
  node.dataset.userId = m.user?.user_id || "";
  if (typeof m.seq === "number" && Number.isInteger(m.seq)) node.dataset.seq = String(m.seq);
  else delete node.dataset.seq;
  node.classList.toggle("mine", isMine);
  node.classList.toggle("pending", !!m.pending);
  node.classList.toggle("failed", !!m.failed);
  const name = m.user?.username || m.user?.user_id || "?";

  // Keep keyboard focus on the "same" button across a rebuild.
  const focused = node.contains(document.activeElement) ? document.activeElement.dataset.focusKey : undefined;

  const metaKey = `${name}|${m.timestamp}|${m.edited_at}|${m.pending}|${m.failed?.message}`;
  if (node.metaKey !== metaKey) {
    node.metaKey = metaKey;
    const author = Object.assign(document.createElement("span"), { className: "author", textContent: name });
    const time = Object.assign(document.createElement("time"), { dateTime: m.timestamp, textContent: formatTime(m.timestamp) });
    const badges = [];
    if (m.edited_at) badges.push(Object.assign(document.createElement("span"), { className: "badge", textContent: "edited" }));
    if (m.pending) badges.push(Object.assign(document.createElement("span"), { className: "badge", textContent: "sending…" }));
    if (m.failed) badges.push(Object.assign(document.createElement("span"), { className: "badge failed", textContent: `not sent: ${m.failed.message}` }));
    meta.replaceChildren(author, time, ...badges);
  }

  const server = typeof m.content_html === "string" && !m.pending && !m.failed;
  const bodyKey = `${server ? "html" : "text"}|${server ? m.content_html : m.content}|${me}`;
  if (node.bodyKey !== bodyKey) {
    node.bodyKey = bodyKey;
    if (server) {
      body.innerHTML = m.content_html; // server-made: escaped text, links, mention spans
      for (const span of body.querySelectorAll(".mention")) {
        if (span.dataset.userId === me) span.classList.add("mention-me");
      }
    } else {
      body.textContent = m.content; // plain text (encrypted messages, local echoes)
    }
  }
  const mentionsMe = !!m.mentionsMe || !!body.querySelector(".mention-me");
  node.classList.toggle("mentions-me", mentionsMe && !isMine);

  const reactionKey = JSON.stringify([m.reactions, m.mine]);
  if (node.reactionKey !== reactionKey) {
    node.reactionKey = reactionKey;
    const buttons = [];
    for (const [emoji, count] of Object.entries(m.reactions || {})) {
      if (!count) continue;
      const mine = (m.mine || []).includes(emoji);
      const label = `${emoji} ${count} ${count === 1 ? "reaction" : "reactions"}${mine ? ", including yours; click to remove yours" : "; click to add yours"}`;
      const b = button(label, "", () => react(m.message_id, emoji), "reaction");
      b.append(Object.assign(document.createElement("span"), { className: "emoji", textContent: emoji }), ` ${count}`);
      b.setAttribute("aria-pressed", String(mine));
      b.dataset.reaction = emoji;
      b.dataset.focusKey = `reaction:${emoji}`;
      buttons.push(b);
    }
    reactions.replaceChildren(...buttons);
  }

  const actionKey = `${m.pending}|${!!m.failed}|${isMine}|${moderator}|${name}`;
  if (node.actionKey !== actionKey) {
    node.actionKey = actionKey;
    actions.setAttribute("aria-label", `Actions for the message of ${name}`);
    const buttons = [];
    const add = (key, ...args) => { const b = button(...args); b.dataset.focusKey = key; buttons.push(b); return b; };
    if (m.failed) {
      add("retry", "Send this message again", "Retry", () => session?.store.retry(m.client_msg_id).catch(() => {}));
      add("discard", "Discard this message", "Discard", () => session?.store.dismiss(m.client_msg_id));
    } else if (!m.pending) {
      for (const [emoji, label] of REACTIONS) {
        add(`react:${emoji}`, `React with ${label}`, emoji, () => react(m.message_id, emoji), "react").dataset.reaction = emoji;
      }
      if (!isMine) add("report", `Report this message of ${name}`, "Report", () => report(m.message_id), "report");
      if (moderator) {
        add("delete", `Delete this message of ${name}`, "Delete",
          () => moderate(() => session.client.deleteMessage(m.message_id), "Message deleted."), "danger delete");
        if (!isMine) {
          const userId = m.user.user_id;
          add("timeout", `Time out ${name} for 5 minutes`, "Timeout 5 min",
            () => moderate(() => session.client.ban(roomId, userId, { durationSeconds: TIMEOUT_SECONDS, reason: "timeout from the chat panel" }),
              `${name} is timed out for 5 minutes.`), "danger timeout");
          add("ban", `Ban ${name} from this room`, "Ban",
            () => moderate(() => session.client.ban(roomId, userId, { reason: "banned from the chat panel" }), `${name} is banned from this room.`),
            "danger ban");
        }
      }
    }
    actions.replaceChildren(...buttons);
  }

  if (focused && !node.contains(document.activeElement)) {
    for (const b of node.querySelectorAll("button")) {
      if (b.dataset.focusKey === focused) { b.focus(); break; }
    }
  }
}

function setFlash(kind, text) {
  flash = { kind, text, until: Date.now() + 4000 };
  render();
  setTimeout(() => { if (flash && flash.until <= Date.now()) { flash = null; render(); } }, 4100);
}

async function react(messageId, emoji) {
  if (!session) return;
  try {
    await session.store.react(messageId, emoji);
  } catch { /* shown through the snapshot's error */ }
}

async function report(messageId) {
  if (!session) return;
  try {
    await session.client.report(messageId, "Reported from the chat panel");
    setFlash("info", "Thanks, the moderators will have a look.");
  } catch (err) {
    setFlash("error", `Could not report: ${err.message}`);
  }
}

async function moderate(action, done) {
  try {
    await action();
    setFlash("info", done);
    refreshReports();
  } catch (err) {
    setFlash("error", `Not done: ${err instanceof ChatError ? err.message : String(err)}`);
  }
}

// --- report queue (moderators) ---------------------------------------------------------------

async function refreshReports() {
  if (!session || !session.client.isModerator) return;
  let reports;
  try {
    reports = await session.client.reports({ roomId, status: "open" });
  } catch (err) {
    el.reportsEmpty.hidden = false;
    el.reportsEmpty.textContent = `The report queue is not available: ${err.message}`;
    el.reports.replaceChildren();
    return;
  }
  el.reportsEmpty.hidden = reports.length > 0;
  el.reportsEmpty.textContent = "No open reports.";
  el.reports.replaceChildren(...reports.map(reportItem));
}

function reportItem(r) {
  const li = document.createElement("li");
  li.className = "report";
  li.dataset.reportId = String(r.id);
  const head = document.createElement("div");
  head.textContent = `${r.reason || "No reason"} · reported by ${r.reporter_id || "?"}`;
  const quote = document.createElement("q");
  quote.className = "quote";
  const m = r.message;
  quote.textContent = m ? `${m.user?.username || m.user?.user_id}: ${m.content}` : `message ${r.message_id}`;
  const buttons = document.createElement("div");
  buttons.className = "buttons";
  const resolve = (action, text) => button(`${text} (report ${r.id})`, text, () => moderate(() => session.client.resolveReport(r.id, action), "Report resolved."));
  buttons.append(resolve("dismiss", "Dismiss"));
  if (!r.message_deleted) buttons.append(resolve("delete_message", "Delete message"));
  buttons.append(resolve("ban_user", "Ban author"));
  li.append(head, quote, buttons);
  return li;
}

el.refreshReports.addEventListener("click", () => refreshReports());

// --- composer ----------------------------------------------------------------------------------

async function sendFromInput() {
  if (!session) return;
  const snap = session.store.getSnapshot();
  const text = el.input.value.trim();
  if (!text || snap.banned || rateLimitLeft(snap) > 0) return;
  el.input.value = "";
  session.store.setTyping(false);
  try {
    await session.store.send(text);
  } catch (err) {
    const code = err instanceof ChatError ? err.code : "";
    if (code === "rate_limited" || code === "slow_mode" || code === "banned") {
      // Nothing was stored: give the text back instead of a failed bubble.
      const echo = session?.store.getSnapshot().messages.find((m) => m.failed && m.content === text);
      if (echo) session.store.dismiss(echo.client_msg_id);
      if (!el.input.value) el.input.value = text;
    }
  }
}

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendFromInput();
});

el.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendFromInput();
  }
});

el.input.addEventListener("input", () => {
  if (!session) return;
  session.store.setTyping(el.input.value.trim().length > 0);
});

el.input.addEventListener("blur", () => session?.store.setTyping(false));

el.loadOlder.addEventListener("click", () => session?.store.loadOlder().catch(() => {}));

// --- go ------------------------------------------------------------------------------------------

const initial = tokenFromFragment() || sessionStorage.getItem(TOKEN_KEY);
if (initial) {
  sessionStorage.setItem(TOKEN_KEY, initial);
  start(initial);
} else {
  showSignIn();
}
