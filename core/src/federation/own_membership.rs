//! Local users keep the membership they chose last.
//!
//! State resolution orders member events by the power levels they cite before it looks at
//! which came first. So when a user leaves and joins again while power levels change on
//! other phones, the room's resolved state can end with the user's *older* membership: the
//! first leave after the rejoin, or the join before a second leave. Every server resolves
//! the same way, so the room stays consistent, but not as the user asked.
//!
//! After events from other servers change a room's state (and nothing it received waits for
//! missing events any more), this node compares each local
//! user's membership in the current state with the latest member event the user sent here.
//! When the state holds an older event of their own (not a kick, ban or invite by someone
//! else) whose membership differs, the node makes their latest choice again: a new join or
//! leave built on the current state, which then comes after everything it resolved. How often
//! that happens for one user in one room is bounded, so two choices that keep undoing each
//! other cannot loop.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::UserId;

use crate::{http::AppState, rooms::membership::MembershipAction, storage::events as ev_store};

/// Most times one user's choice is made again in one room within [`REASSERT_WINDOW`].
const MAX_REASSERTS: u32 = 3;
const REASSERT_WINDOW: Duration = Duration::from_secs(3600);
/// Most (room, user) pairs remembered.
const MAX_REMEMBERED: usize = 1_000;

/// How often each local user's choice was made again lately, and the last choice handled.
#[derive(Default)]
pub struct OwnMemberships {
    recent: Mutex<HashMap<(String, String), Reasserted>>,
}

struct Reasserted {
    since: Instant,
    count: u32,
    /// The member event whose choice was last made again: a second look at the same drift
    /// (several transactions taken in at once) does nothing.
    latest_event: String,
}

impl OwnMemberships {
    /// Whether `latest_event`, the user's latest choice in `room`, is to be made again now:
    /// not if it was already, nor once the bound is reached.
    fn allow(&self, room: &str, user: &str, latest_event: &str) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        if recent.len() >= MAX_REMEMBERED {
            recent.retain(|_, r| r.since.elapsed() < REASSERT_WINDOW);
            if recent.len() >= MAX_REMEMBERED {
                recent.clear();
            }
        }
        let entry = recent
            .entry((room.to_owned(), user.to_owned()))
            .or_insert_with(|| Reasserted {
                since: Instant::now(),
                count: 0,
                latest_event: String::new(),
            });
        if entry.latest_event == latest_event {
            return false;
        }
        if entry.since.elapsed() >= REASSERT_WINDOW {
            (entry.since, entry.count) = (Instant::now(), 0);
        }
        if entry.count >= MAX_REASSERTS {
            return false;
        }
        entry.count += 1;
        entry.latest_event = latest_event.to_owned();
        true
    }
}

/// Makes again the latest membership choice of each local user of `room_id` whose current
/// membership is an older choice of their own. Called after events from other servers were
/// stored in the room and none of its events wait for missing ones: with a partial picture
/// this node may resolve differently from the others, and the events it lacks settle that.
///
/// A join is made again on this node's graph while another local user keeps the node in the
/// room. When none does, the node joins again through a server that is in the room: that
/// server's template cites the room's state as the room sees it (this node, out of the room,
/// is no longer sent its events, and a join built on its stale power levels could lose the
/// same way again), and its answer brings this node up to date.
pub async fn keep(state: &AppState, room_id: &str) {
    reassert(state, room_id, true).await;
}

/// [`keep`] right after a remote join: only on this node's graph, which the join just
/// brought up to date.
pub(super) async fn keep_after_join(state: &AppState, room_id: &str) {
    reassert(state, room_id, false).await;
}

async fn reassert(state: &AppState, room_id: &str, may_join_remotely: bool) {
    let room = room_id.to_owned();
    let drifts = match state
        .db
        .read(move |c| ev_store::own_membership_drift(c, &room))
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(room = %room_id, error = %e, "could not compare memberships");
            return;
        }
    };
    for drift in drifts {
        let action = match drift.latest.as_str() {
            "join" => MembershipAction::Join,
            "leave" => MembershipAction::Leave,
            _ => continue,
        };
        let Ok(user) = UserId::parse(drift.user_id.as_str()) else {
            continue;
        };
        if !state
            .own_memberships
            .allow(room_id, user.as_str(), &drift.latest_event)
        {
            continue;
        }
        tracing::info!(
            room = %room_id, %user, now = %drift.current, chosen = %drift.latest,
            event = %drift.latest_event,
            "state resolution undid a local user's latest membership; making it again"
        );
        let remote = may_join_remotely
            && action == MembershipAction::Join
            && !super::membership::is_resident(state, room_id)
                .await
                .unwrap_or(true);
        let outcome = if remote {
            Box::pin(super::membership::join_remote(state, &user, room_id, &[])).await
        } else {
            state
                .rooms
                .change_membership(&user, room_id, &user, action, None, serde_json::Map::new())
                .await
        };
        if let Err(e) = outcome {
            tracing::info!(room = %room_id, %user, error = %e, "could not make the membership again");
        }
    }
}
