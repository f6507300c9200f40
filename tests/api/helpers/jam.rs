//! [`Jam`]: the ingest queue of a hub made full on purpose, for the
//! backpressure tests. Commits wait behind a table lock the test holds,
//! requests fill the queue until the next one is refused with 503, and
//! releasing the lock lets everything commit.

use super::app::TestApp;
use super::config::{INGEST_KEY, PATIENCE};
use super::feed::events;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;

/// A full ingest queue; [`Jam::release`] empties it.
pub struct Jam {
    lock: AsyncPgConnection,
    stuck: actix_web::rt::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl TestApp {
    /// Fills the ingest queue (size it small: `ingest_queue`) until ingest
    /// answers 503; the events used are in scope `filler`.
    pub async fn jam_ingest(&self) -> Jam {
        let mut lock = self.db().await;
        diesel::sql_query("BEGIN").execute(&mut lock).await.unwrap();
        diesel::sql_query("LOCK TABLE channel_offsets IN EXCLUSIVE MODE")
            .execute(&mut lock)
            .await
            .unwrap();
        let filler = |tag: &str| events("filler", tag, 10);
        let stuck = {
            let (http, url) = (self.http.clone(), self.url("/api/events"));
            let body = filler("stuck");
            actix_web::rt::spawn(async move {
                http.post(url)
                    .bearer_auth(INGEST_KEY)
                    .json(&body)
                    .send()
                    .await
            })
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let waiting: i64 = diesel::select(diesel::dsl::sql::<BigInt>(
                "(SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database())",
            ))
            .get_result(&mut lock)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "commit not blocked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A request that is not answered at once is queued (its events are
        // committed later); the next one is refused.
        for n in 0.. {
            let body = filler(&format!("f{n}"));
            match tokio::time::timeout(Duration::from_millis(300), self.post_events(&body)).await {
                Ok((503, _)) => break,
                Ok((status, body)) => panic!("{status} {body}"),
                Err(_) => continue,
            }
        }
        Jam { lock, stuck }
    }
}

impl Jam {
    /// Releases the lock; the request that was stuck is then accepted.
    pub async fn release(mut self) {
        diesel::sql_query("ROLLBACK")
            .execute(&mut self.lock)
            .await
            .unwrap();
        assert_eq!(self.stuck.await.unwrap().unwrap().status(), 202);
    }
}
