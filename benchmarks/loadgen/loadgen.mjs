// Load generator of the benchmarks: many Socket.IO clients in ONE efficient Node.js process,
// speaking raw Engine.IO v4 / Socket.IO v5 over WebSocket (the `ws` package), the same way
// against our server and the reference server.
//
//   node benchmarks/loadgen/loadgen.mjs '<json config>'
//
// Wire: Engine.IO OPEN `0{...}` -> we send CONNECT `40{"token": jwt}` -> `40{"sid"}` (or
// `44{...}` refused); PING `2` -> PONG `3`; events `42<id>["name",{...}]`, acks `43<id>[...]`.
//
// Talks to the Python driver (benchmarks/run.py) with JSON lines on stdout:
//   {"type":"sync","name":...}   the generator then waits for one line on stdin, so the
//                                driver can sample server CPU / RSS at exact phase limits;
//   {"type":"log",...}           progress;
//   {"type":"result",...}        the final figures (last line).
// Latency is send-to-receive on one clock (performance.now() of this process): every
// message carries client_msg_id "<tag>-<n>", and the receive path finds that id in the raw
// frame without parsing the JSON (so a busy room costs the generator little).  Deliveries
// are counted per message: expected = messages sent x room members at the step's start;
// anything not received when the step's drain ends is lost.  The generator reports its own
// CPU (process.cpuUsage) and event-loop delay per step, so a saturated generator shows.

import { createHmac } from "node:crypto";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const cfg = JSON.parse(process.argv[2] || "{}");
const DEFLATE = cfg.deflate !== false; // offer permessage-deflate as browsers do; the server decides

// --- output and the driver handshake ------------------------------------------------------
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
// The last line, then exit once it has left: stdout to a pipe is written asynchronously,
// and the result line (latency buckets of every step) is far larger than a pipe's buffer.
// Exiting on a timer instead cut it off whenever the driver was slow to read (a busy
// machine: seen after the two-node layout, the line ending at 3 x 64 KiB).
const finish = (obj, code) => process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
const log = (msg, extra = {}) => out({ type: "log", msg, ...extra });
const stdinLines = [];
const stdinWaiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const w = stdinWaiters.shift();
  if (w) w(line);
  else stdinLines.push(line);
}).on("close", () => { while (stdinWaiters.length) stdinWaiters.shift()("eof"); });

async function sync(name, data = {}) {
  out({ type: "sync", name, ...data });
  if (cfg.noSync) return "go";
  if (stdinLines.length) return stdinLines.shift();
  return new Promise((resolve) => stdinWaiters.push(resolve));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- tokens ------------------------------------------------------------------------------
const b64url = (s) => Buffer.from(s).toString("base64url");
function mintToken(sub, name) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, name, role: "user", iat: now, exp: now + 6 * 3600 }));
  const sig = createHmac("sha256", cfg.secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// --- latency histogram: 0.05 ms buckets below 100 ms, 1 ms buckets to 10 s, then overflow --
const FINE = 2000; // 0..100 ms in 0.05 ms
const COARSE = 9900; // 100..10000 ms in 1 ms
class Hist {
  constructor() { this.b = new Uint32Array(FINE + COARSE + 1); this.n = 0; this.sum = 0; this.max = 0; }
  add(ms) {
    const i = ms < 100 ? Math.floor(ms * 20) : ms < 10000 ? FINE + Math.floor(ms - 100) : FINE + COARSE;
    this.b[i < 0 ? 0 : i]++; this.n++; this.sum += ms; if (ms > this.max) this.max = ms;
  }
  static upper(i) { return i < FINE ? (i + 1) / 20 : i < FINE + COARSE ? 100 + (i - FINE + 1) : Infinity; }
  pct(p) {
    if (!this.n) return null;
    const target = Math.ceil((p / 100) * this.n);
    let c = 0;
    for (let i = 0; i < this.b.length; i++) { c += this.b[i]; if (c >= target) return Math.min(Hist.upper(i), this.max); }
    return this.max;
  }
  summary() {
    return { count: this.n, mean_ms: this.n ? this.sum / this.n : null, p50_ms: this.pct(50), p90_ms: this.pct(90),
      p99_ms: this.pct(99), p999_ms: this.pct(99.9), max_ms: this.n ? this.max : null };
  }
  // Non-empty buckets as [upper_ms, count], for plots.
  buckets() {
    const res = [];
    for (let i = 0; i < this.b.length; i++) if (this.b[i]) res.push([Hist.upper(i) === Infinity ? 10000 : Hist.upper(i), this.b[i]]);
    return res;
  }
}

// --- per-step delivery accounting ----------------------------------------------------------
const TAG = cfg.tag || "b" + Math.random().toString(36).slice(2, 7);
const ID_NEEDLE = Buffer.from('"client_msg_id":');
const EVENT_PREFIX = Buffer.from('42["new_message",');
let step = null; // the step being measured (see runSteps)
let framesIn = 0;
let lastFrameAt = 0;
let strayDeliveries = 0; // new_message of an earlier step (late) or not ours

function isNewMessage(buf) {
  if (buf.length <= EVENT_PREFIX.length) return false;
  for (let k = 2; k < EVENT_PREFIX.length; k++) if (buf[k] !== EVENT_PREFIX[k]) return false;
  return true;
}

function onNewMessage(client, buf) {
  // Find "client_msg_id":"<TAG>-<n>" in the raw frame (searched from the end: both
  // servers put it last, and no user text can contain the quoted key unescaped).
  let i = buf.lastIndexOf(ID_NEEDLE);
  if (i < 0) { strayDeliveries++; return; }
  i += ID_NEEDLE.length;
  while (buf[i] === 0x20) i++;
  if (buf[i] !== 0x22) { strayDeliveries++; return; }
  i++;
  for (let k = 0; k < TAG.length; k++) if (buf[i + k] !== TAG.charCodeAt(k)) { strayDeliveries++; return; }
  i += TAG.length + 1; // "-"
  let n = 0;
  for (let c = buf[i]; c >= 0x30 && c <= 0x39; c = buf[++i]) n = n * 10 + (c - 0x30);
  const s = step;
  if (!s || n < s.base || n >= s.base + s.count || s.sendAt[n - s.base] === 0) { strayDeliveries++; return; }
  const j = n - s.base;
  // Each (message, client) pair counts once: a copy is a duplicate, a message from a room
  // the client is not in is a misdelivery; neither can hide a loss.
  if (s.sendRoom[j] !== client.room) { s.wrongRoom++; return; }
  const bit = j * s.slots + client.slot;
  const mask = 1 << (bit & 7);
  if (s.seen[bit >> 3] & mask) { s.duplicates++; return; }
  s.seen[bit >> 3] |= mask;
  const now = performance.now();
  s.received++;
  s.perNode[client.node]++;
  if (now <= s.sendEnd) s.receivedInWindow++;
  s.lat.add(now - s.sendAt[j]);
}

// --- one Socket.IO client over a raw WebSocket ---------------------------------------------
class Client {
  constructor(index, node, url, prefix) {
    this.index = index; this.node = node; this.url = url;
    this.room = 0; this.slot = index; // room index and place in it (delivery accounting)
    this.user = `${prefix}${index}`;
    this.token = mintToken(this.user, `Bench ${index}`);
    this.ws = null; this.connected = false; this.closed = false;
    this.nextAck = 1; this.acks = new Map();
    this.extensions = "";
  }

  connect(timeoutMs = 20000) {
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      let settled = false;
      const done = (err) => {
        if (settled) return; settled = true; clearTimeout(timer);
        if (err) { try { this.ws.terminate(); } catch {} reject(err); } else resolve(performance.now() - t0);
      };
      const timer = setTimeout(() => done(new Error("connect timeout")), timeoutMs);
      const ws = new WebSocket(this.url, { perMessageDeflate: DEFLATE, handshakeTimeout: timeoutMs, skipUTF8Validation: true });
      this.ws = ws;
      ws.on("upgrade", (res) => { this.extensions = res.headers["sec-websocket-extensions"] || ""; });
      ws.on("message", (buf) => {
        framesIn++; lastFrameAt = performance.now();
        const t = buf[0];
        if (t === 0x34) { // "4" MESSAGE
          const s = buf[1];
          if (s === 0x32) { // "2" EVENT
            if (isNewMessage(buf)) onNewMessage(this, buf);
          } else if (s === 0x33) { // "3" ACK
            let i = 2, id = 0;
            for (let c = buf[i]; c >= 0x30 && c <= 0x39; c = buf[++i]) id = id * 10 + (c - 0x30);
            const cb = this.acks.get(id);
            if (cb) { this.acks.delete(id); cb(buf, i); }
          } else if (s === 0x30) { // "0" CONNECT ok
            this.connected = true; done(null);
          } else if (s === 0x34) { // "4" CONNECT_ERROR
            done(new Error("refused: " + buf.toString().slice(2, 200)));
          }
        } else if (t === 0x32) { // "2" PING
          ws.send("3");
        } else if (t === 0x30) { // "0" OPEN
          ws.send("40" + JSON.stringify({ token: this.token }));
        }
      });
      ws.on("error", (e) => done(e));
      ws.on("close", () => {
        if (this.connected && !this.closed && step) step.disconnects++;
        this.connected = false; this.closed = true; done(new Error("closed"));
      });
    });
  }

  // Emit an event with an ack; onAck(parsedAckArgs | null on failure, latencyMs).
  emit(event, data, onAck) {
    const id = this.nextAck++;
    const t0 = performance.now();
    if (onAck) this.acks.set(id, (buf, i) => {
      let parsed = null;
      try { parsed = JSON.parse(buf.toString("utf8", i)); } catch {}
      onAck(Array.isArray(parsed) ? parsed[0] : null, performance.now() - t0);
    });
    this.ws.send(`42${id}${JSON.stringify([event, data])}`);
    return id;
  }

  call(event, data, timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${event} ack timeout`)), timeoutMs);
      this.emit(event, data, (ack) => { clearTimeout(timer); resolve(ack); });
    });
  }

  close() { this.closed = true; try { this.ws.close(); } catch {} }
}

// --- helpers --------------------------------------------------------------------------------
async function pool(items, concurrency, fn) {
  let next = 0;
  const errors = [];
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      try { await fn(item); } catch (e) { errors.push(String(e && e.message || e)); }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return errors;
}

function makeClients(n, prefix = cfg.userPrefix || "bench") {
  const urls = cfg.urls;
  return Array.from({ length: n }, (_, i) => new Client(i, i % urls.length, urls[i % urls.length], prefix));
}

async function connectAll(clients, concurrency) {
  const lat = new Hist();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const errors = await pool(clients, concurrency, async (c) => lat.add(await c.connect()));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const ok = clients.filter((c) => c.connected).length;
  return { attempted: clients.length, connected: ok, failed: clients.length - ok, seconds: elapsed, concurrency,
    connects_per_s: ok / elapsed, latency: lat.summary(), errors: summariseErrors(errors),
    generator_cpu_util: (cpu.user + cpu.system) / 1e6 / elapsed,
    extensions: [...new Set(clients.map((c) => c.extensions))] };
}

function summariseErrors(errors) {
  const counts = {};
  for (const e of errors) counts[e] = (counts[e] || 0) + 1;
  return counts;
}

async function joinAll(clients, roomOf, concurrency) {
  const refused = {};
  const errors = await pool(clients.filter((c) => c.connected), concurrency, async (c) => {
    const ack = await c.call("join_room", { room_id: roomOf(c) });
    if (!ack || ack.ok !== true) { const code = ack?.error?.code || "no_ack"; refused[code] = (refused[code] || 0) + 1; }
    else c.joined = true;
  });
  return { joined: clients.filter((c) => c.joined).length, refused, errors: summariseErrors(errors) };
}

// Wait until no frame has arrived for quietMs (setup broadcasts such as user_joined settle).
async function quiet(quietMs = 500, maxMs = 60000) {
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs) {
    if (performance.now() - lastFrameAt >= quietMs) return (performance.now() - t0) / 1000;
    await sleep(50);
  }
  return (performance.now() - t0) / 1000;
}

// Unique, benign chat text: random words plus the message number, so the server's spam
// rules (near-duplicate detection per user) never trip and its profanity filter finds nothing.
const WORDS = ("great stream today what a play nice move that was close who else is watching from home love this song " +
  "the music is good can you explain the last round again thanks for the tips see you tomorrow hello everyone " +
  "good morning from the coast this build looks strong which map is next turn the volume up a bit please " +
  "amazing clutch well played team chat is fast tonight first time here enjoying the show quick question " +
  "about the settings what camera do you use the view is beautiful rain here all day coffee time again").split(" ");
let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
function chatText(n) {
  const k = 6 + Math.floor(rnd() * 6);
  const words = [];
  for (let i = 0; i < k; i++) words.push(WORDS[Math.floor(rnd() * WORDS.length)]);
  return `${words.join(" ")} ${n}`;
}

// --- stepped sending ------------------------------------------------------------------------
// Open loop: message k of a step is due at t0 + k/rate whatever the server does (no
// coordinated omission); senders take turns.  After the last send, the step drains until
// every expected delivery and ack has arrived or drain_s passes.
let msgCounter = 0;
async function runStep(rate, durationS, senders, roomOfSender, members, nodes, slots, warm = false) {
  const count = Math.max(1, Math.round(rate * durationS));
  const s = {
    base: msgCounter, count, sendAt: new Float64Array(count), sendRoom: new Int32Array(count),
    slots, seen: new Uint8Array(Math.ceil((count * slots) / 8)), duplicates: 0, wrongRoom: 0,
    received: 0, receivedInWindow: 0, sent: 0, lat: new Hist(), ackLat: new Hist(), acked: 0, ackErrors: {},
    disconnects: 0, perNode: new Array(nodes).fill(0), sendEnd: Infinity,
  };
  msgCounter += count;
  const expectedPer = members();
  strayDeliveries = 0;
  if (!warm) await sync("step_begin", { rate, duration_s: durationS });
  step = s;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  s.sendEnd = t0 + durationS * 1000 + 1e9; // open until the last send, fixed below
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(count, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
      while (s.sent < due) {
        const j = s.sent++;
        const sender = senders[j % senders.length];
        if (!sender.connected) { s.ackErrors.sender_disconnected = (s.ackErrors.sender_disconnected || 0) + 1; continue; }
        const n = s.base + j;
        s.sendRoom[j] = sender.room;
        s.sendAt[j] = performance.now();
        sender.emit("send_message", { room_id: roomOfSender(sender), content: chatText(n), client_msg_id: `${TAG}-${n}` }, (ack, ms) => {
          if (ack && ack.ok === true) { s.acked++; s.ackLat.add(ms); } else {
            const code = ack?.error?.code ? `${ack.error.code}${ack.error.details?.reason ? "/" + ack.error.details.reason : ""}` : "bad_ack";
            s.ackErrors[code] = (s.ackErrors[code] || 0) + 1;
          }
        });
      }
      if (s.sent >= count) return resolve();
      setTimeout(tick, 1);
    };
    tick();
  });
  const tSent = performance.now();
  s.sendEnd = t0 + durationS * 1000 > tSent ? t0 + durationS * 1000 : tSent;
  // Count in-window deliveries honestly: those received before sendEnd were already counted
  // as in-window (sendEnd was far in the future); nothing to undo since sendEnd >= now.
  const expected = expectedPer * count;
  const drainLimit = tSent + (cfg.drain_s ?? 5) * 1000;
  const pendingAcks = () => senders.reduce((a, c) => a + c.acks.size, 0);
  while (performance.now() < drainLimit && (s.received < expected || pendingAcks() > 0)) await sleep(10);
  const tEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  loop.disable();
  step = null;
  const ackTimeouts = pendingAcks();
  for (const c of senders) c.acks.clear();
  if (ackTimeouts) s.ackErrors.ack_timeout = ackTimeouts;
  const wall = (tEnd - t0) / 1000;
  const missing = expected - s.received;
  const result = {
    rate, duration_s: durationS, send_seconds: (tSent - t0) / 1000, wall_seconds: wall, members: expectedPer,
    sent: s.sent, acked: s.acked, ack_errors: s.ackErrors, ack_latency: s.ackLat.summary(), ack_latency_buckets: s.ackLat.buckets(),
    expected_deliveries: expected, delivered: s.received, lost: Math.max(0, missing), duplicates: s.duplicates,
    wrong_room: s.wrongRoom,
    loss_ratio: expected ? Math.max(0, missing) / expected : 0,
    delivered_in_window: s.receivedInWindow, deliveries_per_s_window: s.receivedInWindow / ((s.sendEnd - t0) / 1000),
    deliveries_per_s: s.received / wall, acked_per_s: s.acked / ((tSent - t0) / 1000),
    per_node_delivered: s.perNode, late_or_stray: strayDeliveries, disconnects: s.disconnects,
    latency: s.lat.summary(), latency_buckets: s.lat.buckets(),
    generator: { cpu_user_s: cpu.user / 1e6, cpu_system_s: cpu.system / 1e6, cpu_util: (cpu.user + cpu.system) / 1e6 / wall,
      loop_delay_p99_ms: loop.percentile(99) / 1e6, loop_delay_max_ms: loop.max / 1e6 },
  };
  if (!warm) await sync("step_end", { rate, delivered: s.received, sent: s.sent, acked: s.acked });
  return result;
}

async function runSteps(senders, roomOfSender, members, nodes, slots) {
  const steps = [];
  if (cfg.warmup_s) { // not reported: lets both servers' code warm up (JIT, caches, pools)
    const w = await runStep(cfg.steps[0].rate, cfg.warmup_s, senders, roomOfSender, members, nodes, slots, true);
    log(`warm-up at ${cfg.steps[0].rate}/s: delivered ${w.delivered}/${w.expected_deliveries}`);
    await quiet(300, 30000);
  }
  for (const st of cfg.steps) {
    const r = await runStep(st.rate, st.duration_s, senders, roomOfSender, members, nodes, slots);
    steps.push(r);
    log(`rate ${st.rate}/s: delivered ${r.delivered}/${r.expected_deliveries} acked ${r.acked}/${r.sent} ` +
      `p50 ${fmt(r.latency.p50_ms)} p99 ${fmt(r.latency.p99_ms)} ms, ack p99 ${fmt(r.ack_latency.p99_ms)} ms, gen cpu ${(r.generator.cpu_util * 100).toFixed(0)}%`);
    const p99 = cfg.mode === "ingest" ? r.ack_latency.p99_ms : r.latency.p99_ms;
    const failed = r.loss_ratio > (cfg.stop_loss ?? 0.05) || (p99 ?? Infinity) > (cfg.stop_p99_ms ?? 2000);
    if (failed && st.rate >= (cfg.min_stop_rate ?? 0)) {
      log(`stopping after rate ${st.rate}/s: past saturation`);
      break;
    }
    // Let a server that fell behind flush its backlog before the next step starts.
    r.settle_seconds = await quiet(failed ? 1000 : 300, failed ? 60000 : 10000);
  }
  return steps;
}
const fmt = (x) => (x == null ? "-" : x.toFixed(1));

// --- modes ----------------------------------------------------------------------------------
async function modeConnect() {
  if (cfg.warmup) { // load the server's connect and join code paths before the baseline
    const warm = makeClients(cfg.warmup, `${cfg.userPrefix || "bench"}w`);
    await connectAll(warm, 20);
    await joinAll(warm, () => `${cfg.room_prefix}warmup`, 20);
    for (const c of warm) c.close();
    await sleep(1000);
  }
  const clients = makeClients(cfg.clients);
  await sync("before_connect");
  const connect = await connectAll(clients, cfg.concurrency || 100);
  log(`connected ${connect.connected}/${connect.attempted} in ${connect.seconds.toFixed(2)} s`);
  // Idle a moment before the RSS sample: lets a garbage-collected server (the reference)
  // collect the handshakes' garbage, so RSS counts what the connections keep.
  await quiet(500, 10000);
  await sleep(cfg.idle_ms ?? 2000);
  await sync("connected", { connected: connect.connected });
  let join = null;
  if (cfg.idle_room_size) {
    join = await joinAll(clients, (c) => `${cfg.room_prefix}${Math.floor(c.index / cfg.idle_room_size)}`, cfg.concurrency || 100);
    await quiet(500, 20000);
    await sleep(cfg.idle_ms ?? 2000);
    await sync("joined", { joined: join.joined });
  }
  const stillOpen = clients.filter((c) => c.connected).length;
  for (const c of clients) c.close();
  return { connect, join, still_open_at_end: stillOpen };
}

async function modeFanout() {
  const clients = makeClients(cfg.clients);
  const connect = await connectAll(clients, cfg.concurrency || 100);
  log(`connected ${connect.connected}/${connect.attempted} in ${connect.seconds.toFixed(2)} s`);
  const tj = performance.now();
  const join = await joinAll(clients, () => cfg.room, cfg.join_concurrency || 50);
  const settle = await quiet(1000, 120000);
  log(`joined ${join.joined} in ${((performance.now() - tj) / 1000).toFixed(1)} s (settled ${settle.toFixed(1)} s)`);
  const senders = clients.filter((c) => c.joined).slice(0, cfg.senders || 10);
  const steps = await runSteps(senders, () => cfg.room, () => clients.filter((c) => c.joined && c.connected).length, cfg.urls.length, clients.length);
  for (const c of clients) c.close();
  return { connect, join, steps, extensions: connect.extensions };
}

async function modeIngest() {
  const perRoom = cfg.clients_per_room || 2;
  const clients = makeClients(cfg.rooms * perRoom);
  for (const c of clients) { c.room = Math.floor(c.index / perRoom); c.slot = c.index % perRoom; }
  const roomOf = (c) => `${cfg.room_prefix}${c.room}`;
  const connect = await connectAll(clients, cfg.concurrency || 100);
  const join = await joinAll(clients, roomOf, cfg.concurrency || 100);
  await quiet(1000, 60000);
  log(`ingest: ${join.joined} clients in ${cfg.rooms} rooms`);
  const senders = clients.filter((c) => c.joined);
  const steps = await runSteps(senders, roomOf, () => perRoom, cfg.urls.length, perRoom);
  for (const c of clients) c.close();
  return { connect, join, steps, extensions: connect.extensions };
}

const modes = { connect: modeConnect, fanout: modeFanout, ingest: modeIngest };
try {
  const t0 = performance.now();
  const result = await modes[cfg.mode]();
  finish({ type: "result", mode: cfg.mode, deflate_offered: DEFLATE, seconds: (performance.now() - t0) / 1000, ...result }, 0);
} catch (e) {
  finish({ type: "error", error: String(e && e.stack || e) }, 1);
}
