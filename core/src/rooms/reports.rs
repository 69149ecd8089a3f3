//! Reporting events and rooms to the node's operator.

use super::{Rooms, timeline::visible_range};
use crate::{
    error::{MatrixError, Result},
    storage::{events as ev_store, now_ms, reports},
};

/// Longest reason kept.
const MAX_REASON: usize = 4096;

impl Rooms {
    /// Stores a report of an event; `404 M_NOT_FOUND` unless the reporter can see the event.
    pub async fn report_event(
        &self,
        reporter: &str,
        room_id: &str,
        event_id: &str,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<()> {
        check_reason(reason.as_deref())?;
        if score.is_some_and(|s| !(-100..=0).contains(&s)) {
            return Err(MatrixError::invalid_param("score must be between -100 and 0").into());
        }
        let (reporter, room_id, event_id) =
            (reporter.to_owned(), room_id.to_owned(), event_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .write(move |txn| {
                let not_found = || MatrixError::not_found("Event not found");
                let ev = ev_store::get_event(txn, &event_id)?.ok_or_else(not_found)?;
                if ev.room_id != room_id || ev.rejected {
                    return Err(not_found().into());
                }
                let range = visible_range(txn, &room_id, &reporter, now_pos)?;
                let visible =
                    range.is_some_and(|r| ev.stream.is_some_and(|s| s > r.floor && s <= r.upto));
                if !visible {
                    return Err(not_found().into());
                }
                reports::insert(
                    txn,
                    &reports::NewReport {
                        room_id: &room_id,
                        event_id: Some(&event_id),
                        reporter: &reporter,
                        reason: reason.as_deref(),
                        score,
                        received_ts: now_ms(),
                    },
                )
            })
            .await
    }

    /// Stores a report of a room; `404 M_NOT_FOUND` if this node does not know the room.
    pub async fn report_room(
        &self,
        reporter: &str,
        room_id: &str,
        reason: Option<String>,
    ) -> Result<()> {
        check_reason(reason.as_deref())?;
        let (reporter, room_id) = (reporter.to_owned(), room_id.to_owned());
        self.db
            .write(move |txn| {
                if ev_store::get_room(txn, &room_id)?.is_none() {
                    return Err(MatrixError::not_found("Room not found").into());
                }
                reports::insert(
                    txn,
                    &reports::NewReport {
                        room_id: &room_id,
                        event_id: None,
                        reporter: &reporter,
                        reason: reason.as_deref(),
                        score: None,
                        received_ts: now_ms(),
                    },
                )
            })
            .await
    }

    /// How many reports a room has had (its events included).
    pub async fn report_count(&self, room_id: &str) -> Result<i64> {
        let room_id = room_id.to_owned();
        self.db
            .read(move |c| reports::count_for_room(c, &room_id))
            .await
    }
}

fn check_reason(reason: Option<&str>) -> Result<()> {
    if reason.is_some_and(|r| r.len() > MAX_REASON) {
        return Err(MatrixError::bad_json("reason is too long").into());
    }
    Ok(())
}
