-- Initial schema: everything PROTOCOL.md needs, so later features add little.
-- depends:

CREATE TABLE rooms (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    name          text NOT NULL,
    type          text NOT NULL DEFAULT 'public' CHECK (type IN ('public', 'private', 'dm')),
    settings      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- last_seq is bumped in the same statement that inserts a message: the row lock it
    -- takes serialises writers of one room, which is what makes seq gapless.
    last_seq      bigint NOT NULL DEFAULT 0,
    message_count bigint NOT NULL DEFAULT 0
);

CREATE TABLE room_members (
    room_id      text NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id      text NOT NULL,
    username     text NOT NULL,
    avatar       text,
    role         text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'moderator', 'owner')),
    joined_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_idx ON room_members (user_id);

CREATE TABLE messages (
    message_id    text PRIMARY KEY,
    room_id       text NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    user_id       text NOT NULL,
    username      text NOT NULL,
    avatar        text,
    type          text NOT NULL DEFAULT 'text' CHECK (type IN ('text', 'encrypted', 'system')),
    content       text NOT NULL,
    content_html  text,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    mentions      text[] NOT NULL DEFAULT '{}',
    reply_to      text,
    client_msg_id text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    edited_at     timestamptz,
    deleted_at    timestamptz,
    deleted_by    text
);
-- Keyset history reads: (room_id, seq) serves latest-N, before_seq and after_seq.
CREATE UNIQUE INDEX messages_room_seq_idx ON messages (room_id, seq);
-- Idempotent sends: one message per (room, user, client_msg_id).
CREATE UNIQUE INDEX messages_client_msg_idx ON messages (room_id, user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
-- A user's recent messages in a room (purge on ban, spam checks).
CREATE INDEX messages_room_user_idx ON messages (room_id, user_id, seq);

CREATE TABLE reactions (
    message_id text NOT NULL REFERENCES messages(message_id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    reaction   text NOT NULL CHECK (length(reaction) BETWEEN 1 AND 64),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, reaction, user_id)
);

CREATE TABLE bans (
    id         bigserial PRIMARY KEY,
    room_id    text REFERENCES rooms(id) ON DELETE CASCADE,  -- NULL: global ban
    user_id    text NOT NULL,
    reason     text,
    shadow     boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,                                   -- NULL: permanent
    lifted_at  timestamptz,
    lifted_by  text
);
CREATE INDEX bans_active_idx ON bans (user_id, room_id) WHERE lifted_at IS NULL;

CREATE TABLE reports (
    id           bigserial PRIMARY KEY,
    message_id   text NOT NULL REFERENCES messages(message_id) ON DELETE CASCADE,
    room_id      text NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    reporter_id  text NOT NULL,
    reason       text NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    resolved_by  text,
    action       text,
    note         text,
    UNIQUE (message_id, reporter_id)
);
CREATE INDEX reports_status_idx ON reports (status, room_id, created_at);

CREATE TABLE audit_log (
    id                bigserial PRIMARY KEY,
    room_id           text,
    actor_id          text NOT NULL,
    action            text NOT NULL,
    target_user_id    text,
    target_message_id text,
    reason            text,
    details           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_room_idx ON audit_log (room_id, id);

-- The audit log is append-only: refuse UPDATE and DELETE at the database itself.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE blocks (
    user_id         text NOT NULL,
    blocked_user_id text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, blocked_user_id),
    CHECK (user_id <> blocked_user_id)
);

-- Last known presence per user, as the source design keeps it; live presence is in
-- Redis (or memory), this is what survives restarts (last_seen_at).
CREATE TABLE user_presence (
    user_id      text PRIMARY KEY,
    status       text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
