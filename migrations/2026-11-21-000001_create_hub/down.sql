DROP TABLE idempotency_keys;
DROP TABLE scopes;
DROP TABLE subject_states;
DROP TABLE counters;
DROP TABLE notifications;
DROP TABLE events;
DROP TABLE channel_offsets;
