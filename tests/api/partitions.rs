//! History partitioned by day: the hub keeps partitions ahead, retention
//! drops whole days (and only days wholly past the window), idempotency keys
//! hold across days, and the migration moves an existing database over.

use crate::helpers::*;
use chrono::{Datelike, Duration as Days, NaiveDate, Utc};
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use pulsehub::db::partitions;
use serde_json::json;

const PARENTS: [&str; 3] = ["events", "notifications", "idempotency_keys"];

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// The partition of `parent` holding `day` (keys: a week from Monday).
fn part(parent: &str, day: NaiveDate) -> String {
    let first = if parent == "idempotency_keys" {
        day - Days::days(day.weekday().num_days_from_monday().into())
    } else {
        day
    };
    format!("{parent}_p{}", first.format("%Y%m%d"))
}

async fn attached(conn: &mut AsyncPgConnection) -> Vec<String> {
    partitions::list(conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.attached)
        .map(|p| p.name)
        .collect()
}

/// Offsets of the feed's retained history after `since`, and whether
/// `since` could be recovered, from the history endpoint.
async fn history(app: &TestApp, scope: &str, since: i64) -> (bool, Vec<i64>) {
    let token = app.token("alice", &[scope]);
    let (status, body) = app
        .get(
            &format!("/api/channels/feed:{scope}/history?since={since}&limit=100"),
            &token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap().to_vec();
    (body["recovered"].as_bool().unwrap(), offsets(&items))
}

/// Stores feed events of `scope` received on `day` (SQL, as an older hub
/// would have), advancing the channel's last offset.
async fn store_on(conn: &mut AsyncPgConnection, scope: &str, day: NaiveDate, offsets: &[i64]) {
    for o in offsets {
        conn.batch_execute(&format!(
            "INSERT INTO events (event_id, scope, feed_offset, kind, at, received_at) \
             VALUES (gen_random_uuid(), '{scope}', {o}, 'old.kind', '{day} 12:00Z', '{day} 12:00Z');
             INSERT INTO channel_offsets VALUES ('feed:{scope}', {o}) \
             ON CONFLICT (channel) DO UPDATE SET last_offset = excluded.last_offset"
        ))
        .await
        .unwrap();
    }
}

#[actix_web::test]
async fn a_starting_hub_makes_the_days_ahead() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    let names = attached(&mut conn).await;
    for parent in PARENTS {
        for d in 0..=partitions::DAYS_AHEAD {
            let want = part(parent, today() + Days::days(d.into()));
            assert!(names.contains(&want), "{want} missing: {names:?}");
        }
    }
    // As if the database had been migrated days ago and no hub ran since:
    // the last day ahead is missing until a hub starts.
    let last = today() + Days::days(partitions::DAYS_AHEAD.into());
    for parent in PARENTS {
        conn.batch_execute(&format!("DROP TABLE {}", part(parent, last)))
            .await
            .unwrap();
    }
    let mut config = test_config();
    config.database_url = app.database_url.clone();
    let _second = start_app(config).await;
    let names = attached(&mut conn).await;
    for parent in PARENTS {
        assert!(names.contains(&part(parent, last)), "{names:?}");
    }
}

#[actix_web::test]
async fn retention_drops_whole_days_past_the_window() {
    // The hub's own retention (at start, every 10 min) must not race the
    // test's: a window longer than the days the test makes.
    let app = spawn_with(|c| c.retention_hours = 24 * 365).await;
    let mut conn = app.db().await;
    let (old, kept) = (today() - Days::days(20), today() - Days::days(1));
    let first = today() - Days::days(21);
    conn.batch_execute(&format!(
        "SELECT pulsehub_create_partitions('{first}', '{}')",
        today()
    ))
    .await
    .unwrap();
    store_on(&mut conn, "ret", old, &[1, 2]).await;
    store_on(&mut conn, "ret", kept, &[3]).await;
    // Keys claimed on those days (the old day's week expires, yesterday's
    // cannot have: it holds yesterday).
    let monday = |d: NaiveDate| d - Days::days(d.weekday().num_days_from_monday().into());
    conn.batch_execute(&format!(
        "INSERT INTO idempotency_keys (scope, key, event_id, week) VALUES \
         ('ret', 'k-old', gen_random_uuid(), '{}'), \
         ('ret', 'k-kept', gen_random_uuid(), '{}')",
        monday(old),
        monday(kept)
    ))
    .await
    .unwrap();
    let (status, body) = app
        .post_events(&json!([{"scope": "ret", "kind": "new.kind"}]))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(history(&app, "ret", 0).await, (true, vec![1, 2, 3, 4]));

    // A 48-hour window: every day before the day 48 hours ago goes, the day
    // before yesterday and later stay; a week of keys goes once all of its
    // days would.
    let dropped = partitions::drop_expired(&mut conn, Utc::now() - Days::hours(48))
        .await
        .unwrap();
    let cutoff_day = (Utc::now() - Days::hours(48)).date_naive();
    let mut want = Vec::new();
    let mut d = first;
    while d < cutoff_day {
        want.push(part("events", d));
        want.push(part("notifications", d));
        if d.weekday() == chrono::Weekday::Mon && d + Days::days(7) <= cutoff_day {
            want.push(part("idempotency_keys", d));
        }
        d += Days::days(1);
    }
    // The week `first` falls in began before it: created, and wholly past.
    want.push(part("idempotency_keys", first));
    let mut got: Vec<String> = dropped.into_iter().map(|p| p.name).collect();
    got.sort();
    want.sort();
    want.dedup();
    assert_eq!(got, want);
    let names = attached(&mut conn).await;
    assert!(!names.contains(&part("events", old)));
    assert!(names.contains(&part("events", kept)));
    // Nothing more to drop.
    assert!(
        partitions::drop_expired(&mut conn, Utc::now() - Days::hours(48))
            .await
            .unwrap()
            .is_empty()
    );

    // The old day's events are gone (since=0 is no longer recovered), the
    // rest is there; the old day's key is free again, yesterday's still holds.
    assert_eq!(history(&app, "ret", 0).await, (false, vec![3, 4]));
    assert_eq!(history(&app, "ret", 2).await, (true, vec![3, 4]));
    let (_, body) = app
        .post_events(&json!([
            {"scope": "ret", "kind": "x", "key": "k-old"},
            {"scope": "ret", "kind": "x", "key": "k-kept"}
        ]))
        .await;
    assert_eq!(body, json!({"accepted": 1, "duplicates": 1}));
    assert_eq!(history(&app, "ret", 4).await, (true, vec![5]));
}

#[actix_web::test]
async fn a_detach_left_half_done_is_finished() {
    let app = spawn_with(|c| c.retention_hours = 24 * 365).await;
    let mut conn = app.db().await;
    let day = today() - Days::days(30);
    conn.batch_execute(&format!(
        "SELECT pulsehub_create_partitions('{day}', '{day}'); \
         ALTER TABLE events DETACH PARTITION {}",
        part("events", day)
    ))
    .await
    .unwrap();
    let dropped = partitions::drop_expired(&mut conn, Utc::now() - Days::days(7))
        .await
        .unwrap();
    let names: Vec<_> = dropped
        .iter()
        .map(|p| (p.name.clone(), p.attached))
        .collect();
    assert!(names.contains(&(part("events", day), false)), "{names:?}");
    assert!(
        names.contains(&(part("notifications", day), true)),
        "{names:?}"
    );
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let left: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_class WHERE relname IN ('{}', '{}', '{}')",
        part("events", day),
        part("notifications", day),
        part("idempotency_keys", day)
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(left.n, 0);
}

#[actix_web::test]
async fn the_migration_moves_existing_history_over() {
    // A database at the first migration, with history an older hub wrote.
    let url = fresh_unmigrated_database().await;
    {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            use diesel::Connection;
            use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
            use diesel_migrations::MigrationHarness;
            let mut c =
                <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url).unwrap();
            c.run_next_migration(pulsehub::db::MIGRATIONS).unwrap();
        })
        .await
        .unwrap();
    }
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let two_days_ago = today() - Days::days(2);
    conn.batch_execute(&format!(
        "INSERT INTO events (event_id, scope, feed_offset, kind, at, received_at) VALUES \
           (gen_random_uuid(), 'mig', 1, 'a', now(), '{two_days_ago} 08:00Z'), \
           (gen_random_uuid(), 'mig', 2, 'b', now(), now()); \
         INSERT INTO channel_offsets VALUES ('feed:mig', 2), ('system', 1); \
         INSERT INTO notifications (id, channel, channel_offset, level, title, at) \
           VALUES (gen_random_uuid(), 'system', 1, 'info', 'hello', '{two_days_ago} 09:00Z'); \
         INSERT INTO idempotency_keys (scope, key, event_id, created_at) \
           VALUES ('mig', 'seen', gen_random_uuid(), '{two_days_ago} 08:00Z')"
    ))
    .await
    .unwrap();

    let mut config = test_config();
    config.database_url = url;
    let app = start_app(config).await;
    assert_eq!(history(&app, "mig", 0).await, (true, vec![1, 2]));
    let names = attached(&mut conn).await;
    for parent in PARENTS {
        assert!(names.contains(&part(parent, two_days_ago)), "{names:?}");
    }
    let (_, body) = app
        .post_events(&json!([
            {"scope": "mig", "kind": "c", "key": "seen"},
            {"scope": "mig", "kind": "c", "key": "fresh"}
        ]))
        .await;
    assert_eq!(body, json!({"accepted": 1, "duplicates": 1}));
    assert_eq!(history(&app, "mig", 0).await, (true, vec![1, 2, 3]));
    let token = app.token("alice", &["mig"]);
    let (status, body) = app
        .get("/api/channels/system/history?since=0", &token)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["notification"]["title"], "hello");
}

/// The heavy variant behind a flag (figures in docs/benchmarks.md):
/// `cargo test --release --test api heavy_retention -- --ignored --nocapture`.
/// Fills one old day with 5,000,000 events, then drops it while a writer
/// posts through the hub and a reader pages history; prints the drop's time
/// and the slowest request meanwhile, the replay query's plan, and, for
/// comparison, a `DELETE` of as many rows from a plain table of the old shape.
#[actix_web::test]
#[ignore = "heavy: 5M rows, minutes; run with --ignored"]
async fn heavy_retention_of_a_five_million_row_day() {
    const ROWS: i64 = 5_000_000;
    let app = spawn_with(|c| c.retention_hours = 24 * 365).await;
    let mut conn = app.db().await;
    let old = today() - Days::days(9);
    let fill = |table: &str| {
        format!(
            "INSERT INTO {table} (event_id, scope, feed_offset, kind, data, at, received_at) \
             SELECT gen_random_uuid(), 'heavy-' || (i % 100), i, 'message.sent', \
                    jsonb_build_object('i', i), '{old} 12:00Z', '{old} 12:00Z' \
             FROM generate_series(1, {ROWS}) AS i"
        )
    };
    conn.batch_execute(&format!(
        "SELECT pulsehub_create_partitions('{old}', '{old}')"
    ))
    .await
    .unwrap();
    let began = std::time::Instant::now();
    conn.batch_execute(&fill("events")).await.unwrap();
    eprintln!(
        "filled {} with {ROWS} rows in {:?}",
        part("events", old),
        began.elapsed()
    );
    conn.batch_execute("ANALYZE events").await.unwrap();

    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let plan: Vec<Plan> = diesel::sql_query(
        "EXPLAIN SELECT feed_offset FROM events WHERE scope = 'heavy-7' AND feed_offset > 4000000 \
         ORDER BY feed_offset LIMIT 100",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
    eprintln!("replay plan:\n{}", plan.join("\n"));
    assert!(plan.iter().any(|l| l.contains("Index")), "{plan:?}");

    // Load beside the drop: one writer through the hub, one history reader.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, http, url) = (stop.clone(), app.http.clone(), app.url("/api/events"));
        tokio::spawn(async move {
            // (when it was sent, how long it took)
            let mut posts = Vec::new();
            // (AtomicBool::load by path: diesel's RunQueryDsl has a `load` too.)
            while !std::sync::atomic::AtomicBool::load(&stop, std::sync::atomic::Ordering::Relaxed)
            {
                let t = std::time::Instant::now();
                let res = http
                    .post(&url)
                    .bearer_auth(INGEST_KEY)
                    .json(&json!([{"scope": "live", "kind": "x"}]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                posts.push((t, t.elapsed()));
            }
            posts
        })
    };
    // Three seconds of the writer alone, then the drop, then three more.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let began = std::time::Instant::now();
    let dropped = partitions::drop_expired(&mut conn, Utc::now() - Days::days(7))
        .await
        .unwrap();
    let took = began.elapsed();
    let ended = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let posts = writer.await.unwrap();
    let during = |d: &(std::time::Instant, std::time::Duration)| d.0 + d.1 >= began && d.0 <= ended;
    let slowest = |it: &mut dyn Iterator<Item = &(std::time::Instant, std::time::Duration)>| {
        it.map(|p| p.1).max().unwrap_or_default()
    };
    eprintln!(
        "dropped {} partitions ({ROWS} events in one) in {took:?}; posts: {} in all, \
         slowest {:?} overlapping the drop ({} posts), slowest {:?} outside it",
        dropped.len(),
        posts.len(),
        slowest(&mut posts.iter().filter(|p| during(p))),
        posts.iter().filter(|p| during(p)).count(),
        slowest(&mut posts.iter().filter(|p| !during(p))),
    );
    assert!(dropped.iter().any(|p| p.name == part("events", old)));

    // The old way: DELETE of as many rows from a plain, indexed table.
    conn.batch_execute(
        "CREATE TABLE events_plain_bench (id BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE, \
           scope TEXT NOT NULL, feed_offset BIGINT NOT NULL, kind TEXT NOT NULL, actor JSONB, \
           subject JSONB, data JSONB NOT NULL DEFAULT '{}', at TIMESTAMPTZ NOT NULL, \
           received_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (scope, feed_offset)); \
         CREATE INDEX ON events_plain_bench (scope, at); \
         CREATE INDEX ON events_plain_bench (received_at)",
    )
    .await
    .unwrap();
    conn.batch_execute(&fill("events_plain_bench"))
        .await
        .unwrap();
    let began = std::time::Instant::now();
    conn.batch_execute(&format!(
        "DELETE FROM events_plain_bench WHERE received_at < '{}'",
        today() - Days::days(7)
    ))
    .await
    .unwrap();
    eprintln!(
        "the old way: DELETE of {ROWS} rows took {:?}",
        began.elapsed()
    );
}

#[actix_web::test]
async fn replicas_dropping_at_once_do_not_fail_each_other() {
    let app = spawn_with(|c| c.retention_hours = 24 * 365).await;
    let mut conn = app.db().await;
    let (first, last) = (today() - Days::days(40), today() - Days::days(31));
    conn.batch_execute(&format!(
        "SELECT pulsehub_create_partitions('{first}', '{last}')"
    ))
    .await
    .unwrap();
    let cutoff = Utc::now() - Days::days(30);
    let (a, b) = (app.db().await, app.db().await);
    let drop_with = |mut c: AsyncPgConnection| async move {
        partitions::drop_expired(&mut c, cutoff)
            .await
            .unwrap()
            .len()
    };
    let due = partitions::expired(&mut conn, cutoff).await.unwrap().len();
    let (na, nb) = tokio::join!(drop_with(a), drop_with(b));
    // Ten days of events and notifications and their weeks of keys, each
    // dropped by exactly one of the two.
    assert!(due >= 21, "{due}");
    assert_eq!(na + nb, due, "{na} + {nb}");
    assert!(partitions::expired(&mut conn, cutoff)
        .await
        .unwrap()
        .is_empty());
}
