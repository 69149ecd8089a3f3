//! Typing notifications: kept in memory only, each with its own expiry.
//!
//! No timer runs while nobody types: an expiry task exists only for a live notification.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{notifier::Notifier, tasks::Tasks};

#[derive(Default)]
struct State {
    serial: u64,
    rooms: HashMap<String, RoomTyping>,
}

#[derive(Default)]
struct RoomTyping {
    serial: u64,
    users: HashMap<String, Instant>,
}

/// Who is typing where.
#[derive(Clone)]
pub struct Typing {
    state: Arc<Mutex<State>>,
    notifier: Arc<Notifier>,
    tasks: Tasks,
}

/// Longest typing notification honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

impl Typing {
    /// Creates the service; expiry timers run as `tasks`.
    pub fn new(notifier: Arc<Notifier>, tasks: Tasks) -> Self {
        Self {
            state: Default::default(),
            notifier,
            tasks,
        }
    }

    /// Sets or clears a user's typing state in a room.
    pub fn set(&self, room_id: &str, user_id: &str, typing: bool, timeout: Duration) {
        let timeout = timeout.min(MAX_TIMEOUT);
        let expires = Instant::now() + timeout;
        {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let changed = {
                let room = state.rooms.entry(room_id.to_owned()).or_default();
                if typing {
                    room.users.insert(user_id.to_owned(), expires).is_none()
                } else {
                    room.users.remove(user_id).is_some()
                }
            };
            if !changed && !typing {
                return;
            }
            state.serial += 1;
            let serial = state.serial;
            if let Some(room) = state.rooms.get_mut(room_id) {
                room.serial = serial;
            }
        }
        self.notifier.notify();
        if typing {
            let this = self.clone();
            let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
            self.tasks.spawn(async move {
                tokio::time::sleep(timeout).await;
                this.expire(&room_id, &user_id);
            });
        }
    }

    fn expire(&self, room_id: &str, user_id: &str) {
        {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let expired = state
                .rooms
                .get(room_id)
                .and_then(|r| r.users.get(user_id))
                .is_some_and(|e| *e <= now);
            if !expired {
                return;
            }
            state.serial += 1;
            let serial = state.serial;
            if let Some(room) = state.rooms.get_mut(room_id) {
                room.users.remove(user_id);
                room.serial = serial;
            }
        }
        self.notifier.notify();
    }

    /// The current serial, for sync tokens.
    pub fn serial(&self) -> u64 {
        self.state.lock().map(|s| s.serial).unwrap_or(0)
    }

    /// The users typing in a room if that changed after `since` (always when `since` is None).
    pub fn changed_since(&self, room_id: &str, since: Option<u64>) -> Option<Vec<String>> {
        let state = self.state.lock().ok()?;
        let room = state.rooms.get(room_id)?;
        // A serial from before a restart is larger than ours: treat it as stale.
        if let Some(since) = since
            && room.serial <= since
            && since <= state.serial
        {
            return None;
        }
        let now = Instant::now();
        let mut users: Vec<String> = room
            .users
            .iter()
            .filter(|(_, e)| **e > now)
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        Some(users)
    }

    /// Rooms whose typing users changed after serial `since` (all rooms with typing state
    /// when `since` is from before a restart).
    pub fn rooms_changed_since(&self, since: u64) -> Vec<String> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .rooms
            .iter()
            .filter(|(_, r)| r.serial > since || since > state.serial)
            .map(|(id, _)| id.clone())
            .collect()
    }
}
