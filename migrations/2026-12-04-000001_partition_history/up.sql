-- History by day: events and notifications become partitioned by UTC day,
-- idempotency keys by UTC week, so retention drops whole partitions (DETACH
-- CONCURRENTLY + DROP: no row-by-row DELETE, no long lock on the parent)
-- and a replay or history read still goes through each partition's index.
--
-- Partition keys are server times, never a client's: events by `received_at`
-- (the commit's now()), notifications by `at` (set by the hub), keys by
-- `week` (the Monday, UTC, of the commit's week). A partitioned table's
-- unique constraint must contain its partition key, so:
--   * feed and notification offsets are unique by construction (the
--     channel_offsets row lock hands out each offset once) and are indexed,
--     not constrained;
--   * event and notification ids are UUIDv7 made by the hub;
--   * an idempotency key is unique per (scope, key, week) by constraint, and
--     the claim also looks for the key in earlier weeks (see db/commit.rs).
--     Weeks, not days, because that look costs one index probe per earlier
--     partition: at the default 7-day retention it is one or two.
--
-- Partitions are named <table>_pYYYYMMDD (the first day they hold) and
-- created ahead of time by pulsehub_create_partitions, which the hub calls
-- at start and every few minutes (db/partitions.rs); this migration creates
-- those for the existing rows' days through three days ahead, then moves
-- the rows over.

CREATE FUNCTION pulsehub_create_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date;
    w date;
    parent text;
    part text;
    lo text;
    hi text;
    created integer := 0;
BEGIN
    -- Replicas starting together: one creates, the others then find them.
    PERFORM pg_advisory_xact_lock(hashtext('pulsehub_create_partitions'));
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        FOREACH parent IN ARRAY ARRAY['events', 'notifications', 'idempotency_keys'] LOOP
            IF parent = 'idempotency_keys' THEN
                w := date_trunc('week', d)::date;
                part := parent || '_p' || to_char(w, 'YYYYMMDD');
                lo := quote_literal(w);
                hi := quote_literal(w + 7);
            ELSE
                part := parent || '_p' || to_char(d, 'YYYYMMDD');
                lo := quote_literal(d::timestamp AT TIME ZONE 'UTC');
                hi := quote_literal((d + 1)::timestamp AT TIME ZONE 'UTC');
            END IF;
            CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                           part, parent, lo, hi);
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE notifications RENAME TO notifications_unpartitioned;
ALTER TABLE idempotency_keys RENAME TO idempotency_keys_unpartitioned;

-- Domain events: the history of feed:{scope}.
CREATE TABLE events (
    event_id    UUID NOT NULL,
    scope       TEXT NOT NULL,
    feed_offset BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       JSONB,
    subject     JSONB,
    data        JSONB NOT NULL DEFAULT '{}',
    at          TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
) PARTITION BY RANGE (received_at);
CREATE INDEX events_feed ON events (scope, feed_offset);
CREATE INDEX events_recent ON events (scope, at);

-- Notifications: the history of user:{id} and system.
CREATE TABLE notifications (
    id             UUID NOT NULL,
    channel        TEXT NOT NULL,
    channel_offset BIGINT NOT NULL,
    level          TEXT NOT NULL,
    title          TEXT NOT NULL,
    body           TEXT NOT NULL DEFAULT '',
    at             TIMESTAMPTZ NOT NULL DEFAULT now()
) PARTITION BY RANGE (at);
CREATE INDEX notifications_feed ON notifications (channel, channel_offset);

-- Idempotency keys: a key seen before in a scope is a duplicate.
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    week       DATE NOT NULL DEFAULT date_trunc('week', now() AT TIME ZONE 'UTC')::date,
    CONSTRAINT idempotency_keys_claim PRIMARY KEY (scope, key, week)
) PARTITION BY RANGE (week);

SELECT pulsehub_create_partitions(
    LEAST(
        (SELECT (min(received_at) AT TIME ZONE 'UTC')::date FROM events_unpartitioned),
        (SELECT (min(at) AT TIME ZONE 'UTC')::date FROM notifications_unpartitioned),
        (SELECT (min(created_at) AT TIME ZONE 'UTC')::date FROM idempotency_keys_unpartitioned),
        (now() AT TIME ZONE 'UTC')::date
    ),
    (now() AT TIME ZONE 'UTC')::date + 3
);

INSERT INTO events (event_id, scope, feed_offset, kind, actor, subject, data, at, received_at)
SELECT event_id, scope, feed_offset, kind, actor, subject, data, at, received_at
FROM events_unpartitioned;
INSERT INTO notifications (id, channel, channel_offset, level, title, body, at)
SELECT id, channel, channel_offset, level, title, body, at
FROM notifications_unpartitioned;
INSERT INTO idempotency_keys (scope, key, event_id, created_at, week)
SELECT scope, key, event_id, created_at, date_trunc('week', created_at AT TIME ZONE 'UTC')::date
FROM idempotency_keys_unpartitioned;

DROP TABLE events_unpartitioned;
DROP TABLE notifications_unpartitioned;
DROP TABLE idempotency_keys_unpartitioned;
