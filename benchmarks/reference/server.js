// Reference server for the benchmarks: stock Socket.IO 4.x on Node.js with the chat's
// room semantics and nothing else (no storage, no moderation, no presence).
//
//   PORT=9000 JWT_SECRET=... node benchmarks/reference/server.js
//
// join_room {room_id}                          -> join, ack {ok, room, history: [], has_more: false, online_users: []}
// send_message {room_id, content, client_msg_id} -> new_message (Message) to the room, sender included; ack {ok, message}
// The JWT (HS256, JWT_SECRET) of the CONNECT packet's auth.token is verified with jsonwebtoken.
"use strict";

const crypto = require("node:crypto");
const jwt = require("jsonwebtoken");
const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 9000);
const secret = process.env.JWT_SECRET;
if (!secret) throw new Error("JWT_SECRET is required");

const httpServer = http.createServer();
const io = new Server(httpServer, { cors: { origin: "*" } });
const lastSeq = new Map(); // room id -> last seq
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

io.use((socket, next) => {
  try {
    const claims = jwt.verify(socket.handshake.auth?.token ?? "", secret, { algorithms: ["HS256"] });
    if (!claims.sub || !claims.exp) throw new Error("claims");
    socket.data.user = { user_id: String(claims.sub), username: claims.name || claims.username || String(claims.sub), avatar: claims.avatar ?? null };
    next();
  } catch {
    next(new Error("unauthorized"));
  }
});

io.on("connection", (socket) => {
  const fail = (ack, code, message) => typeof ack === "function" && ack({ ok: false, error: { code, message } });

  socket.on("join_room", (data, ack) => {
    const roomId = data?.room_id;
    if (typeof roomId !== "string" || !roomId) return fail(ack, "validation_error", "room_id is required");
    socket.join(`r:${roomId}`);
    if (typeof ack === "function") ack({ ok: true, room: { id: roomId, name: roomId, type: "public", settings: {} }, history: [], has_more: false, online_users: [] });
  });

  socket.on("send_message", (data, ack) => {
    const roomId = data?.room_id;
    if (typeof roomId !== "string" || !socket.rooms.has(`r:${roomId}`)) return fail(ack, "not_in_room", "join the room first");
    const content = typeof data.content === "string" ? data.content.trim() : "";
    if (!content) return fail(ack, "message_rejected", "Message is empty");
    const seq = (lastSeq.get(roomId) || 0) + 1;
    lastSeq.set(roomId, seq);
    const message = {
      message_id: crypto.randomUUID().replace(/-/g, ""),
      room_id: roomId,
      seq,
      user: socket.data.user,
      content,
      content_html: escapeHtml(content),
      type: "text",
      timestamp: new Date().toISOString(),
      edited_at: null,
      reactions: {},
      mentions: [],
      reply_to: null,
      client_msg_id: data.client_msg_id ?? null,
    };
    io.to(`r:${roomId}`).emit("new_message", message);
    if (typeof ack === "function") ack({ ok: true, message });
  });
});

httpServer.listen(port, "127.0.0.1", () => console.log(`reference socket.io server listening on 127.0.0.1:${port}`));
process.on("SIGTERM", () => process.exit(0));
