//! Replay of recoverable channels (`feed:`, `user:`, `system`): how a
//! `since` is answered, and the frames read back from PostgreSQL, for the
//! WebSocket session and the history endpoint alike.
//!
//! Contract (PROTOCOL.md): `since: N` within the retained history replays
//! every item with offset > N, in order (`recovered: true`); no `since`, one
//! newer than the latest offset, or one older than the history gives the
//! recent items (`recovered: false`). Replayed frames are rendered by the
//! same encoders as live ones ([`crate::events`]), so they are byte-for-byte
//! the frames a live subscriber got.

use crate::db::history::{self, Rows};
use crate::events::{event_frame, notification_frame, EventView};
use crate::frame::Outbound;
use crate::protocol::Channel;
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;

/// Which items of a recoverable channel to send for a given `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Everything after this offset, and the history reaches back to it.
    After(i64),
    /// The last items only: no `since`, or history does not reach back.
    Recent,
}

/// Decides how to answer `since` given a channel's bounds. Returns the plan
/// and whether it is a recovery (`recovered` in PROTOCOL.md).
pub fn plan(since: Option<i64>, latest: i64, first: Option<i64>) -> (Plan, bool) {
    match since {
        None => (Plan::Recent, false),
        Some(s) if s > latest => (Plan::Recent, false),
        Some(s) if s == latest => (Plan::After(s), true),
        Some(s) => match first {
            Some(f) if s + 1 >= f => (Plan::After(s), true),
            _ => (Plan::Recent, false),
        },
    }
}

/// The start of a replay: what `subscribed` (or the history answer) says,
/// and the first page.
#[derive(Debug)]
pub struct Opening {
    /// The channel's latest offset now.
    pub latest: i64,
    pub recovered: bool,
    /// The position the items follow (the client has everything up to it).
    pub from: i64,
    pub items: Vec<Outbound>,
    /// More items after these may exist (a full page of `After`).
    pub more: bool,
}

/// Answers `since`: pages of `page` items after it, or the last `recent`.
pub async fn open(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    since: Option<i64>,
    page: i64,
    recent: i64,
) -> QueryResult<Opening> {
    let (latest, first) = history::bounds(conn, channel).await?;
    let (plan, recovered) = plan(since, latest, first);
    let (from, items, more) = match plan {
        Plan::After(after) => {
            let items = self::page(conn, channel, after, page).await?;
            let more = items.len() as i64 == page;
            (after, items, more)
        }
        Plan::Recent => {
            let items = frames(channel, history::recent(conn, channel, recent).await?);
            let from = items.first().map_or(latest, |i| i.seq - 1);
            (from, items, false)
        }
    };
    Ok(Opening {
        latest,
        recovered,
        from,
        items,
        more,
    })
}

/// Up to `limit` frames with offset > `after`, in order.
pub async fn page(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    after: i64,
    limit: i64,
) -> QueryResult<Vec<Outbound>> {
    Ok(frames(
        channel,
        history::after(conn, channel, after, limit).await?,
    ))
}

fn frames(channel: &Channel, rows: Rows) -> Vec<Outbound> {
    match rows {
        Rows::Events(rows) => {
            let scope = channel.scope().unwrap_or_default();
            rows.into_iter()
                .map(|r| Outbound {
                    seq: r.offset,
                    text: event_frame(
                        scope,
                        r.offset,
                        &EventView {
                            id: &r.id,
                            kind: &r.kind,
                            actor: r.actor.as_ref(),
                            subject: r.subject.as_ref(),
                            data: &r.data,
                            at: &r.at,
                        },
                    ),
                })
                .collect()
        }
        Rows::Notes(rows) => {
            let name = channel.to_string();
            rows.into_iter()
                .map(|r| Outbound {
                    seq: r.offset,
                    text: notification_frame(
                        &name, r.offset, &r.id, &r.level, &r.title, &r.body, &r.at,
                    ),
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_plans() {
        // No since: recent items.
        assert_eq!(plan(None, 10, Some(1)), (Plan::Recent, false));
        // Up to date.
        assert_eq!(plan(Some(10), 10, Some(1)), (Plan::After(10), true));
        // Missed a few, all retained.
        assert_eq!(plan(Some(4), 10, Some(1)), (Plan::After(4), true));
        assert_eq!(plan(Some(0), 10, Some(1)), (Plan::After(0), true));
        // History pruned below since + 1.
        assert_eq!(plan(Some(4), 10, Some(6)), (Plan::Recent, false));
        assert_eq!(plan(Some(5), 10, Some(6)), (Plan::After(5), true));
        // since from the future (e.g. another database).
        assert_eq!(plan(Some(11), 10, Some(1)), (Plan::Recent, false));
        // Empty channel.
        assert_eq!(plan(Some(0), 0, None), (Plan::After(0), true));
        // Everything pruned.
        assert_eq!(plan(Some(3), 10, None), (Plan::Recent, false));
    }
}
