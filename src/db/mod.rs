//! PostgreSQL: the pool, creating the database, and the embedded migrations.
//!
//! Migrations are compiled into the binary and run through diesel-async's
//! `AsyncConnectionWrapper` on a blocking thread (no libpq), under an advisory
//! lock so replicas starting together do not race. Statements live in
//! submodules by use: [`commit`] (the write path), [`history`] (replay),
//! [`partitions`] (the history tables' day partitions: ahead of time, and
//! retention) and [`stats`]; each returns rows, never frames.

pub mod commit;
pub mod history;
pub mod partitions;
pub mod schema;
pub mod stats;

use anyhow::Context;
use diesel::{QueryResult, QueryableByName};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

pub type Pool = DeadPool<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Arbitrary key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x7075_6c73_6568;

/// Builds the connection pool (connections are opened lazily).
///
/// `timeout` bounds each of the three waits of `Pool::get` (for a free
/// slot, for a new connection, for the check of an idle one), so while
/// PostgreSQL is down or stuck a caller learns it within about that time
/// (`PoolError` → `unavailable`) instead of waiting forever. Every idle
/// connection is checked before it is handed out: diesel-async's manager
/// drops one that is broken (closed by the server, or left inside a
/// transaction) and pings the others (`RecyclingMethod::Verified`), so after
/// a restart the dead connections are discarded (each `get` skips every
/// one it meets) and new ones are opened: a dead one is never handed out.
pub fn pool(url: &str, size: usize, timeout: Duration) -> anyhow::Result<Pool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    DeadPool::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .context("building the database pool")
}

/// Creates the database named in `url` if it does not exist, connecting to
/// the server's `postgres` database to do so.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_string();
    anyhow::ensure!(!name.is_empty(), "DATABASE_URL names no database");
    let mut admin = parsed.clone();
    admin.set_path("/postgres");
    let mut conn = AsyncPgConnection::establish(admin.as_str())
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {}",
                crate::config::redact_url(admin.as_str())
            )
        })?;

    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let found: Found =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .await?;
    if !found.found {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        use diesel::result::{DatabaseErrorKind, Error};
        match conn.batch_execute(&create).await {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another replica created it in the meantime: "already exists",
            // or pg_database's unique index when both ran at the same time.
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Applies pending migrations; returns how many ran.
pub async fn migrate(url: &str) -> anyhow::Result<usize> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        use diesel::connection::{Connection, SimpleConnection};
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)?;
        SimpleConnection::batch_execute(
            &mut conn,
            &format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"),
        )?;
        let ran = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| anyhow::anyhow!("running migrations: {e}"));
        SimpleConnection::batch_execute(
            &mut conn,
            &format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"),
        )?;
        ran
    })
    .await?
}

/// Creates the database if needed, migrates it and makes sure the history
/// tables have partitions for today and the days ahead (a database migrated
/// long ago, with no hub running since, has none for today).
pub async fn prepare(url: &str) -> anyhow::Result<()> {
    ensure_database(url).await?;
    let ran = migrate(url).await?;
    if ran > 0 {
        tracing::info!(migrations = ran, "database migrated");
    }
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .context("connecting to PostgreSQL")?;
    let created = partitions::ensure(&mut conn)
        .await
        .context("creating the history partitions")?;
    if created > 0 {
        tracing::info!(partitions = created, "created history partitions");
    }
    Ok(())
}

/// Cheap liveness query for `/ready`.
pub async fn ping(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .execute(conn)
        .await
        .map(|_| ())
}
