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

use crate::{client::AppState, rooms::membership::MembershipAction, storage::events as ev_store};

/// Most times one user's choice is made again in one room within [`REASSERT_WINDOW`].
const MAX_REASSERTS: u32 = 3;
const REASSERT_WINDOW: Duration = Duration::from_secs(3600);
/// Most (room, user) pairs remembered.
const MAX_REMEMBERED: usize = 1_000;

/// How often each local user's choice was made again lately.
#[derive(Default)]
pub struct OwnMemberships {
    recent: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

impl OwnMemberships {
    /// Counts one more reassertion for `user` in `room`; false once the bound is reached.
    fn allow(&self, room: &str, user: &str) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        if recent.len() >= MAX_REMEMBERED {
            recent.retain(|_, (since, _)| since.elapsed() < REASSERT_WINDOW);
            if recent.len() >= MAX_REMEMBERED {
                recent.clear();
            }
        }
        let entry = recent
            .entry((room.to_owned(), user.to_owned()))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= REASSERT_WINDOW {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= MAX_REASSERTS {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// Makes again the latest membership choice of each local user of `room_id` whose current
/// membership is an older choice of their own. Called after events from other servers were
/// stored in the room and none of its events wait for missing ones: with a partial picture
/// this node may resolve differently from the others, and the events it lacks settle that.
pub async fn keep(state: &AppState, room_id: &str) {
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
        if !state.own_memberships.allow(room_id, user.as_str()) {
            tracing::info!(room = %room_id, %user, "membership undone by state resolution again; leaving it");
            continue;
        }
        tracing::info!(
            room = %room_id, %user, now = %drift.current, chosen = %drift.latest,
            event = %drift.latest_event,
            "state resolution undid a local user's latest membership; making it again"
        );
        if let Err(e) = state
            .rooms
            .change_membership(&user, room_id, &user, action, None, serde_json::Map::new())
            .await
        {
            tracing::info!(room = %room_id, %user, error = %e, "could not make the membership again");
        }
    }
}
