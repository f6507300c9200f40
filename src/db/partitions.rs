//! The history tables' day partitions: created ahead, dropped past the
//! retention window.
//!
//! `events` and `notifications` are partitioned by UTC day,
//! `idempotency_keys` by UTC week (Monday to Sunday: a key's claim probes
//! every earlier partition, so fewer is cheaper), each named
//! `<table>_pYYYYMMDD` after its first day (migration `partition_history`). The hub keeps
//! [`DAYS_AHEAD`] days of partitions ready (no cron: every replica calls
//! [`ensure`] at start and on each maintenance tick; an advisory lock in
//! `pulsehub_create_partitions` makes concurrent calls harmless).
//!
//! Retention ([`drop_expired`]) drops a partition once all of it is older
//! than the cutoff, so history is kept for the retention window rounded up
//! to whole days, and keys up to a week longer. Each partition is first detached with `DETACH PARTITION ...
//! CONCURRENTLY` (a SHARE UPDATE EXCLUSIVE lock: reads and writes of the
//! table go on) and then dropped, which then locks nothing anyone uses; a
//! detach interrupted half-way is finished with `FINALIZE` on the next tick,
//! and a table detached but not dropped is dropped then.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{Bool, Text};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// Days of partitions kept ready after today.
pub const DAYS_AHEAD: i32 = 3;

/// Creates any missing partition from today through [`DAYS_AHEAD`] days
/// ahead; returns how many it created.
pub async fn ensure(conn: &mut AsyncPgConnection) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct Created {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        created: i32,
    }
    let row: Created = diesel::sql_query(
        "SELECT pulsehub_create_partitions((now() AT TIME ZONE 'UTC')::date, \
                                           (now() AT TIME ZONE 'UTC')::date + $1) AS created",
    )
    .bind::<diesel::sql_types::Integer, _>(DAYS_AHEAD)
    .get_result(conn)
    .await?;
    Ok(row.created)
}

/// One day partition of a history table.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Partition {
    /// `events`, `notifications` or `idempotency_keys`.
    #[diesel(sql_type = Text)]
    pub parent: String,
    /// `<parent>_pYYYYMMDD`.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Still attached (false: detached and left behind by an interrupted drop).
    #[diesel(sql_type = Bool)]
    pub attached: bool,
    /// A `DETACH ... CONCURRENTLY` was interrupted: finish it with `FINALIZE`.
    #[diesel(sql_type = Bool)]
    pub pending: bool,
}

impl Partition {
    /// The first UTC day the partition holds.
    pub fn day(&self) -> Option<NaiveDate> {
        let digits = self.name.rsplit("_p").next()?;
        NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
    }

    /// The days it holds: a week of keys, a day of anything else.
    pub fn days(&self) -> u64 {
        if self.parent == "idempotency_keys" {
            7
        } else {
            1
        }
    }
}

/// Every day partition (attached or left detached), oldest first.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Partition>> {
    diesel::sql_query(LIST).load(conn).await
}

/// Partitions holding only rows older than `cutoff`, oldest first.
pub async fn expired(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> QueryResult<Vec<Partition>> {
    let cutoff_day = cutoff.date_naive();
    Ok(list(conn)
        .await?
        .into_iter()
        // Starting on day d it holds [d, d + n): all of it is older than the
        // cutoff when d + n <= cutoff, i.e. d + n is at most the cutoff's day.
        .filter(|p| {
            p.day()
                .and_then(|d| d.checked_add_days(chrono::Days::new(p.days())))
                .is_some_and(|end| end <= cutoff_day)
        })
        .collect())
}

/// Drops every partition past `cutoff`; returns the partitions dropped.
/// Each statement runs on its own (not in a transaction: `DETACH ...
/// CONCURRENTLY` refuses to run in one).
pub async fn drop_expired(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> QueryResult<Vec<Partition>> {
    // One replica at a time (two detaching one partition fail each other);
    // a session lock, since the statements cannot share a transaction. A
    // connection lost meanwhile releases it.
    conn.batch_execute(&format!("SELECT pg_advisory_lock({RETENTION_LOCK})"))
        .await?;
    let dropped = drop_listed(conn, cutoff).await;
    let unlocked = conn
        .batch_execute(&format!("SELECT pg_advisory_unlock({RETENTION_LOCK})"))
        .await;
    let dropped = dropped?;
    unlocked?;
    Ok(dropped)
}

/// Arbitrary key of the advisory lock held while dropping partitions.
const RETENTION_LOCK: i64 = 0x7075_6c73_6572;

async fn drop_listed(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> QueryResult<Vec<Partition>> {
    let expired = expired(conn, cutoff).await?;
    for p in &expired {
        // Names come from the catalog and match `<parent>_p<8 digits>`.
        if p.attached {
            let how = if p.pending {
                "FINALIZE"
            } else {
                "CONCURRENTLY"
            };
            conn.batch_execute(&format!(
                "ALTER TABLE \"{}\" DETACH PARTITION \"{}\" {how}",
                p.parent, p.name
            ))
            .await?;
        }
        conn.batch_execute(&format!("DROP TABLE IF EXISTS \"{}\"", p.name))
            .await?;
    }
    Ok(expired)
}

/// The day partitions of the three tables in this schema, attached or not.
const LIST: &str = "\
SELECT * FROM (\
SELECT p.relname::text AS parent, c.relname::text AS name, true AS attached, \
       i.inhdetachpending AS pending \
FROM pg_inherits i \
JOIN pg_class c ON c.oid = i.inhrelid \
JOIN pg_class p ON p.oid = i.inhparent \
WHERE p.relname IN ('events', 'notifications', 'idempotency_keys') \
  AND p.relnamespace = current_schema()::regnamespace \
  AND c.relname ~ '_p[0-9]{8}$' \
UNION ALL \
SELECT substring(c.relname from '^(.*)_p[0-9]{8}$'), c.relname::text, false, false \
FROM pg_class c \
WHERE c.relkind = 'r' AND NOT c.relispartition \
  AND c.relnamespace = current_schema()::regnamespace \
  AND c.relname ~ '^(events|notifications|idempotency_keys)_p[0-9]{8}$' \
) parts ORDER BY right(name, 8), name";
