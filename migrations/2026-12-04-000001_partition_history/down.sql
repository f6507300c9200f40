-- Back to plain tables (rows kept; a key claimed in several weeks keeps its
-- earliest claim).
CREATE TABLE events_plain (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    scope       TEXT NOT NULL,
    feed_offset BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       JSONB,
    subject     JSONB,
    data        JSONB NOT NULL DEFAULT '{}',
    at          TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (scope, feed_offset)
);
INSERT INTO events_plain (event_id, scope, feed_offset, kind, actor, subject, data, at, received_at)
SELECT event_id, scope, feed_offset, kind, actor, subject, data, at, received_at
FROM events ORDER BY received_at, scope, feed_offset;

CREATE TABLE notifications_plain (
    id             UUID PRIMARY KEY,
    channel        TEXT NOT NULL,
    channel_offset BIGINT NOT NULL,
    level          TEXT NOT NULL,
    title          TEXT NOT NULL,
    body           TEXT NOT NULL DEFAULT '',
    at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (channel, channel_offset)
);
INSERT INTO notifications_plain SELECT * FROM notifications;

CREATE TABLE idempotency_keys_plain (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
INSERT INTO idempotency_keys_plain (scope, key, event_id, created_at)
SELECT DISTINCT ON (scope, key) scope, key, event_id, created_at
FROM idempotency_keys ORDER BY scope, key, week;

DROP TABLE events;
DROP TABLE notifications;
DROP TABLE idempotency_keys;
DROP FUNCTION pulsehub_create_partitions(date, date);

ALTER TABLE events_plain RENAME TO events;
ALTER TABLE notifications_plain RENAME TO notifications;
ALTER TABLE idempotency_keys_plain RENAME TO idempotency_keys;
CREATE INDEX events_scope_at ON events (scope, at);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX notifications_at ON notifications (at);
