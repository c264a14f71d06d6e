-- History reads (storage/history.py): numbered pages without OFFSET, and honest estimates.
-- depends: 0001.initial-schema
-- Not in a transaction, so that the index is built CONCURRENTLY: building it reads the whole
-- messages table, and a plain CREATE INDEX would hold up every new message meanwhile.
-- transactional: false

-- The messages some viewer does not see (deleted, shadow-banned): a small share of a room.
-- A numbered page is turned into a seq bound by counting and stepping over these through
-- this index instead of counting every visible message above the page with OFFSET.  The
-- predicate is written exactly as the query writes it, so the planner can use the index;
-- user_id and deleted_at ride along so that the index alone tells whether the viewer sees
-- the message (an index-only scan).
CREATE INDEX CONCURRENTLY messages_room_hidden_idx ON messages (room_id, seq) INCLUDE (user_id, deleted_at)
    WHERE deleted_at IS NOT NULL OR (metadata ->> 'shadow') IS NOT NULL;

-- Without statistics on this expression the planner guesses that 0.5 % of the messages are
-- not shadow-banned, and serves an OFFSET page with a sort of the whole room instead of
-- walking the (room_id, seq) index (60 ms instead of a few for page 10 of 100,000 rows).
CREATE STATISTICS messages_shadow_stats ON ((metadata ->> 'shadow')) FROM messages;
ANALYZE messages;
