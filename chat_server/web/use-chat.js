// @ts-check
/**
 * `useChat(token, roomId)`: the React hook of the source design, over Socket.IO, on top
 * of {@link module:chat-client}.  Plain ES module, not built: copy it (with
 * `chat-client.js`) into a React ≥ 18 app that has `react` and `socket.io-client`.
 *
 * ```jsx
 * import { useChat } from "./use-chat.js";
 *
 * function ChatPanel({ token, roomId }) {
 *   const { messages, typing, online, connection, banned, sendMessage, react, setTyping } = useChat(token, roomId);
 *   return (
 *     <>
 *       <p role="status">{connection} · {online ?? "?"} online</p>
 *       <ol role="log" aria-live="polite">
 *         {messages.map((m) => <li key={m.message_id}>{m.user.username}: {m.content}</li>)}
 *       </ol>
 *       {typing.length > 0 && <p>{typing.map((t) => t.username).join(", ")} typing…</p>}
 *       <input disabled={!!banned} onChange={() => setTyping(true)}
 *              onKeyDown={(e) => { if (e.key === "Enter") { sendMessage(e.currentTarget.value); e.currentTarget.value = ""; } }} />
 *     </>
 *   );
 * }
 * ```
 *
 * Render `m.content` as text (React does) or `m.content_html` with
 * `dangerouslySetInnerHTML` (the server guarantees it is safe); never the raw input.
 *
 * @module use-chat
 */
import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import { io as defaultIo } from "socket.io-client";

import { ChatClient, RoomStore } from "./chat-client.js";

/** @typedef {import("./chat-client.js").RoomSnapshot} RoomSnapshot */
/** @typedef {import("./chat-client.js").Message} Message */

/**
 * @typedef {object} UseChatOptions
 * @property {string} [url]          server URL (default: the page's origin)
 * @property {(url?: string, opts?: any) => any} [io]  another `io` (tests pass a fake)
 * @property {Partial<import("./chat-client.js").ChatClientOptions>} [client]  more ChatClient options
 */

/**
 * @typedef {RoomSnapshot & {
 *   client: ChatClient|null,
 *   sendMessage: (content: string) => Promise<Message|undefined>,
 *   react: (messageId: string, reaction: string) => Promise<any>,
 *   setTyping: (isTyping: boolean) => void,
 *   retry: (clientMsgId: string) => Promise<Message|undefined>,
 *   loadOlder: () => Promise<void>,
 * }} UseChatResult
 */

/** @type {RoomSnapshot} */
const IDLE = Object.freeze({
  roomId: "", connection: "idle", room: "joining", messages: [], typing: [], online: null, onlineUsers: [], banned: null,
  rateLimitedUntil: 0, error: null, hasOlder: false, me: { user_id: "", username: "", avatar: null, role: "user" },
});

const noSubscribe = () => () => {};
const idle = () => IDLE;

/**
 * Connect with `token`, join `roomId` and keep the room's state.  A new token or room
 * closes the old connection and opens a new one; unmounting closes it.  Sends retry
 * with the same `client_msg_id`, reconnects resume with `since_seq`, messages are
 * deduplicated and ordered by `seq` (see chat-client.js).
 *
 * @param {string|null|undefined} token  JWT (nothing happens without one)
 * @param {string|null|undefined} roomId
 * @param {UseChatOptions} [options]
 * @returns {UseChatResult}
 */
export function useChat(token, roomId, options = {}) {
  const { url, io = defaultIo } = options;
  const clientOptions = options.client;
  /** @type {[RoomStore|null, (s: RoomStore|null) => void]} */
  const [store, setStore] = useState(/** @type {RoomStore|null} */ (null));

  useEffect(() => {
    if (!token || !roomId) return undefined;
    const client = new ChatClient({ ...(clientOptions || {}), io, url, token });
    const roomStore = new RoomStore(client, roomId).start();
    client.connect().catch(() => {}); // the state ("unauthorized") is in the snapshot
    setStore(roomStore);
    return () => {
      roomStore.stop();
      client.disconnect();
      setStore(null);
    };
    // clientOptions and io are read once per connection on purpose (an inline object
    // would otherwise reconnect on every render).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [token, roomId, url]);

  const snapshot = useSyncExternalStore(store ? store.subscribe : noSubscribe, store ? store.getSnapshot : idle, store ? store.getSnapshot : idle);

  const sendMessage = useCallback(
    /** @param {string} content */
    async (content) => {
      const text = String(content ?? "").trim();
      if (!store || !text) return undefined;
      try {
        return await store.send(text);
      } catch {
        return undefined; // the failed echo and `error` are in the snapshot
      }
    },
    [store],
  );
  const react = useCallback(
    /** @param {string} messageId @param {string} reaction */
    (messageId, reaction) => (store ? store.react(messageId, reaction).catch(() => undefined) : Promise.resolve(undefined)),
    [store],
  );
  const setTyping = useCallback(/** @param {boolean} on */ (on) => store?.setTyping(on), [store]);
  const retry = useCallback(
    /** @param {string} id */
    (id) => (store ? store.retry(id).catch(() => undefined) : Promise.resolve(undefined)),
    [store],
  );
  const loadOlder = useCallback(() => (store ? store.loadOlder().catch(() => undefined) : Promise.resolve()), [store]);

  return { ...snapshot, client: store ? store.client : null, sendMessage, react, setTyping, retry, loadOlder };
}

export default useChat;
