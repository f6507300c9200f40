// @generated automatically by Diesel CLI, then edited: the partitioned
// history tables have no primary key in PostgreSQL (a partitioned table's
// unique keys must hold the partition key), so diesel is given the key each
// row is found by.

diesel::table! {
    channel_offsets (channel) {
        channel -> Text,
        last_offset -> Int8,
    }
}

diesel::table! {
    counters (scope, kind) {
        scope -> Text,
        kind -> Text,
        count -> Int8,
    }
}

diesel::table! {
    events (scope, feed_offset) {
        event_id -> Uuid,
        scope -> Text,
        feed_offset -> Int8,
        kind -> Text,
        actor -> Nullable<Jsonb>,
        subject -> Nullable<Jsonb>,
        data -> Jsonb,
        at -> Timestamptz,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (scope, key) {
        scope -> Text,
        key -> Text,
        event_id -> Uuid,
        created_at -> Timestamptz,
        week -> Date,
    }
}

diesel::table! {
    notifications (id) {
        id -> Uuid,
        channel -> Text,
        channel_offset -> Int8,
        level -> Text,
        title -> Text,
        body -> Text,
        at -> Timestamptz,
    }
}

diesel::table! {
    scopes (scope) {
        scope -> Text,
        stats_version -> Int8,
        last_event_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    subject_states (scope, subject_type, subject_id) {
        scope -> Text,
        subject_type -> Text,
        subject_id -> Text,
        state -> Nullable<Text>,
        last_event_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    channel_offsets,
    counters,
    events,
    idempotency_keys,
    notifications,
    scopes,
    subject_states,
);
