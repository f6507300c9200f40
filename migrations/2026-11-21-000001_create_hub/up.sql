-- The hub's durable state. Every read the hub makes on a hot path is served by
-- an index: feed replay by (scope, feed_offset), "last minute" by (scope, at),
-- notification replay by (channel, channel_offset), stats by the small
-- per-scope tables (counters, subject_states, scopes).

-- Latest offset of every recoverable channel (feed:{scope}, user:{id}, system).
-- The row lock taken by the upsert serialises writers of one channel, so
-- offsets grow by exactly one in commit order, across replicas too.
CREATE TABLE channel_offsets (
    channel     TEXT PRIMARY KEY,
    last_offset BIGINT NOT NULL
);

-- Domain events: the history of feed:{scope}.
CREATE TABLE events (
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
CREATE INDEX events_scope_at ON events (scope, at);
CREATE INDEX events_received_at ON events (received_at);

-- Notifications: the history of user:{id} and system.
CREATE TABLE notifications (
    id             UUID PRIMARY KEY,
    channel        TEXT NOT NULL,
    channel_offset BIGINT NOT NULL,
    level          TEXT NOT NULL,
    title          TEXT NOT NULL,
    body           TEXT NOT NULL DEFAULT '',
    at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (channel, channel_offset)
);
CREATE INDEX notifications_at ON notifications (at);

-- Events per scope and kind, all time.
CREATE TABLE counters (
    scope TEXT NOT NULL,
    kind  TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (scope, kind)
);

-- Latest state of every subject (from its latest event that carried one) and
-- when it last had an event.
CREATE TABLE subject_states (
    scope         TEXT NOT NULL,
    subject_type  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    state         TEXT,
    last_event_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, subject_type, subject_id)
);
CREATE INDEX subject_states_by_state ON subject_states (scope, subject_type, state);
CREATE INDEX subject_states_recent ON subject_states (scope, last_event_at);

-- Per-scope summary: the stats version (only grows, shared by replicas) and
-- the time of the latest event.
CREATE TABLE scopes (
    scope         TEXT PRIMARY KEY,
    stats_version BIGINT NOT NULL DEFAULT 0,
    last_event_at TIMESTAMPTZ
);

-- Idempotency keys: a key seen before in a scope is a duplicate.
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
