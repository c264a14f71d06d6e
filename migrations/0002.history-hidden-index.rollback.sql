DROP STATISTICS IF EXISTS messages_shadow_stats;
DROP INDEX IF EXISTS messages_room_hidden_idx;
