//! Databases: a fresh PostgreSQL database per test, cloned from a template
//! migrated once per set of migrations; databases of test processes that
//! no longer run are dropped on the way.
//!
//! PostgreSQL is found at `DATABASE_URL` (default: the local server). A test
//! that cannot reach it fails loudly: `scripts/test.sh` starts it.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server URL without a database (tests create their own databases).
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut u = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    u.set_path("");
    u.to_string().trim_end_matches('/').to_string()
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// Creates a fresh, migrated database and returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let template = template_name();
    let mut admin = admin(&server).await;
    // One process at a time builds the template (nextest runs tests as processes).
    admin
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let exists = diesel_async::RunQueryDsl::execute(
        diesel::sql_query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&template),
        &mut admin,
    )
    .await
    .unwrap()
        > 0;
    if !exists {
        pulsehub::db::prepare(&format!("{server}/{template}"))
            .await
            .expect("migrating the template database");
    }
    drop_stale_databases(&mut admin).await;
    admin
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    let name = next_name();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("cloning the template database");
    format!("{server}/{name}")
}

/// Creates an empty database (no migrations run) and returns its URL.
pub async fn fresh_unmigrated_database() -> String {
    let server = server_url();
    let mut admin = admin(&server).await;
    let name = next_name();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a database");
    format!("{server}/{name}")
}

/// A connection to the server's `postgres` database, or a loud failure.
async fn admin(server: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {server} ({e}); run scripts/test.sh, which starts it")
        })
}

/// A database name of this process (dropped once it has exited).
fn next_name() -> String {
    format!(
        "pulsehub_test_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    )
}

/// The template is named after the migrations, so changing them rebuilds it.
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut entries: Vec<_> = walk(std::path::Path::new(dir));
    entries.sort();
    for path in entries {
        path.hash(&mut h);
        std::fs::read(&path).unwrap().hash(&mut h);
    }
    format!("pulsehub_tpl_{:x}", h.finish())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Drops test databases left by test processes that no longer run.
async fn drop_stale_databases(admin: &mut AsyncPgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Db {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let dbs: Vec<Db> = diesel_async::RunQueryDsl::load(
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'pulsehub_test_%'"),
        admin,
    )
    .await
    .unwrap_or_default();
    for db in dbs {
        let pid = db
            .datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    db.datname
                ))
                .await;
        }
    }
}
