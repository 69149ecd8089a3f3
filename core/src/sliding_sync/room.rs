//! One room of a sliding sync response.

use std::collections::BTreeSet;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{MAX_TIMELINE_LIMIT, RoomParams, state_content};
use crate::{
    error::Result,
    filter::RoomEventFilter,
    rooms::{
        format::{Viewer, client_event},
        timeline::{Direction, Page, Visible, paginate, state_at, token, visible_range},
    },
    storage::{
        events::{self as ev_store, MembershipRow, StoredEvent},
        state::StateMap,
    },
    sync::invite_state_events,
};

/// Most heroes named for a room without a name.
const MAX_HEROES: usize = 5;

/// Builds the response part of single rooms.
pub(super) struct RoomBuilder<'a> {
    pub conn: &'a Connection,
    pub user: &'a str,
    pub device: &'a str,
    pub now_pos: i64,
    pub now: i64,
}

/// Whether a `required_state` rule asks for the state entry `(ty, key)`.
pub(crate) fn rule_matches(rules: &[(String, String)], ty: &str, key: &str, user: &str) -> bool {
    // A rule naming the type outright decides for that type over a `*` rule.
    let explicit = rules.iter().any(|(t, _)| t == ty);
    rules.iter().any(|(t, k)| {
        let type_ok = t == ty || (t == "*" && !explicit);
        let key_ok = k == "*" || k == key || (k == "$ME" && key == user);
        type_ok && key_ok
    })
}

impl RoomBuilder<'_> {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user_id: self.user,
            device_id: Some(self.device),
        }
    }

    /// Events as the client sees them, with the edits, threads and references bundled that
    /// the user may see.
    fn format(
        &self,
        room_id: &str,
        events: &[StoredEvent],
        range: Option<Visible>,
    ) -> Result<Vec<Value>> {
        crate::rooms::relations::client_events(
            self.conn,
            room_id,
            events,
            self.viewer(),
            range,
            self.now,
        )
    }

    /// The room as the client should see it. `known_upto` is the stream position up to which
    /// the connection already holds the room (`None`: the room is new to it).
    pub(super) fn build(
        &self,
        m: &MembershipRow,
        params: &RoomParams,
        known_upto: Option<i64>,
        bump_stamp: i64,
        is_dm: bool,
    ) -> Result<Value> {
        let conn = self.conn;
        let room_id = m.room_id.as_str();
        let mut out = Map::new();
        if known_upto.is_none() {
            out.insert("initial".into(), json!(true));
        }
        out.insert("bump_stamp".into(), json!(bump_stamp));
        out.insert("is_dm".into(), json!(is_dm));
        if m.membership == "invite" || m.membership == "knock" {
            let state = invite_state_events(conn, room_id, self.user, &m.event_id)?;
            if m.membership == "invite" {
                out.insert("invite_state".into(), json!(state));
            } else {
                out.insert("knock_state".into(), json!(state));
            }
            self.names(room_id, &mut out)?;
            return Ok(Value::Object(out));
        }
        let Some(visible) = visible_range(conn, room_id, self.user, self.now_pos)? else {
            // Left without ever joining (a rejected invite): only the own membership event.
            let own: Vec<StoredEvent> = ev_store::get_event(conn, &m.event_id)?
                .into_iter()
                .collect();
            out.insert("timeline".into(), json!(self.format(room_id, &own, None)?));
            out.insert("limited".into(), json!(false));
            out.insert("num_live".into(), json!(0));
            return Ok(Value::Object(out));
        };
        let upto = visible.upto;
        let after = known_upto.unwrap_or(0);
        let limit = params.timeline_limit.unwrap_or(0).min(MAX_TIMELINE_LIMIT) as usize;
        let (mut timeline, more) = paginate(
            conn,
            room_id,
            Page {
                from: upto,
                to: Some(after),
                dir: Direction::Backward,
                limit,
            },
            &RoomEventFilter::default(),
            visible,
        )?;
        timeline.reverse();
        let limited = match more {
            Some(_) => true,
            // With no room for events, there is a gap whenever any event is new.
            None if limit == 0 => {
                known_upto.is_some()
                    && ev_store::count_room_events_between(conn, room_id, after, upto)? > 0
            }
            None => false,
        };
        let prev_batch = timeline
            .first()
            .and_then(|e| e.stream)
            .map_or(token(upto), |s| token(s - 1));
        let num_live = if known_upto.is_some() {
            timeline.len()
        } else {
            0
        };

        // required_state: everything asked for on a new room, only what changed on a known one.
        let current = state_at(conn, room_id, upto, self.now_pos)?;
        let before: Option<StateMap> = known_upto
            .map(|k| state_at(conn, room_id, k, self.now_pos))
            .transpose()?;
        let rules = &params.required_state;
        let lazy = rules
            .iter()
            .any(|(t, k)| t == "m.room.member" && k == "$LAZY");
        let lazy_users: BTreeSet<&str> = if lazy {
            timeline.iter().map(|e| e.sender.as_str()).collect()
        } else {
            BTreeSet::new()
        };
        let heroes = self.heroes(room_id)?;
        // A client that loads members lazily still needs the members it names the room after
        // (a direct chat's invitee has sent nothing yet): their member events come as if
        // asked for by name.
        let hero_members: BTreeSet<&str> = match (&heroes, lazy) {
            (Some(heroes), true) => heroes.iter().map(|m| m.user_id.as_str()).collect(),
            _ => BTreeSet::new(),
        };
        let mut required_state = Vec::new();
        for ((ty, key), id) in &current {
            let lazy_member = ty == "m.room.member" && lazy_users.contains(key.as_str());
            let hero_member = ty == "m.room.member" && hero_members.contains(key.as_str());
            if !lazy_member && !hero_member && !rule_matches(rules, ty, key, self.user) {
                continue;
            }
            // Members the timeline needs are sent again: the client may have dropped them.
            if !lazy_member
                && before
                    .as_ref()
                    .is_some_and(|b| b.get(&(ty.clone(), key.clone())) == Some(id))
            {
                continue;
            }
            if let Some(ev) = ev_store::get_event(conn, id)? {
                required_state.push(client_event(conn, &ev, Some(self.viewer()), self.now)?);
            }
        }

        self.names(room_id, &mut out)?;
        if let Some(heroes) = heroes {
            out.insert("heroes".into(), self.hero_entries(room_id, &heroes)?);
        }
        let members = ev_store::room_members(conn, room_id, None)?;
        let joined = members.iter().filter(|m| m.membership == "join").count();
        let invited = members.iter().filter(|m| m.membership == "invite").count();
        out.insert("joined_count".into(), json!(joined));
        out.insert("invited_count".into(), json!(invited));
        let counts = crate::push::unread_counts(conn, self.user, room_id, false)?;
        out.insert("notification_count".into(), json!(counts.room.0));
        out.insert("highlight_count".into(), json!(counts.room.1));
        out.insert("required_state".into(), json!(required_state));
        out.insert(
            "timeline".into(),
            json!(self.format(room_id, &timeline, Some(visible))?),
        );
        out.insert("limited".into(), json!(limited));
        out.insert("prev_batch".into(), json!(prev_batch));
        out.insert("num_live".into(), json!(num_live));
        Ok(Value::Object(out))
    }

    /// The room's `name` and `avatar`, if set.
    fn names(&self, room_id: &str, out: &mut Map<String, Value>) -> Result<()> {
        let conn = self.conn;
        if let Some(url) = state_content(conn, room_id, "m.room.avatar", "")?
            .and_then(|c| c.get("url").and_then(Value::as_str).map(str::to_owned))
            .filter(|u| !u.is_empty())
        {
            out.insert("avatar".into(), json!(url));
        }
        if let Some(name) = room_name(conn, room_id)? {
            out.insert("name".into(), json!(name));
        }
        Ok(())
    }

    /// For a room without a name, the members (joined or invited, not the user) the client
    /// names it after; `None` for a named room.
    fn heroes(&self, room_id: &str) -> Result<Option<Vec<MembershipRow>>> {
        if room_name(self.conn, room_id)?.is_some() {
            return Ok(None);
        }
        let mut heroes = Vec::new();
        for m in ev_store::room_members(self.conn, room_id, None)? {
            if m.user_id == self.user || !(m.membership == "join" || m.membership == "invite") {
                continue;
            }
            heroes.push(m);
            if heroes.len() == MAX_HEROES {
                break;
            }
        }
        Ok(Some(heroes))
    }

    /// The `heroes` field: each hero's user id with the display name and avatar of their
    /// member event (an invite carries the invitee's profile as the inviting server knew it).
    fn hero_entries(&self, room_id: &str, heroes: &[MembershipRow]) -> Result<Value> {
        let mut list = Vec::new();
        for m in heroes {
            let mut hero = json!({ "user_id": m.user_id });
            if let Some(content) = state_content(self.conn, room_id, "m.room.member", &m.user_id)? {
                for field in ["displayname", "avatar_url"] {
                    if let Some(v) = content
                        .get(field)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                    {
                        hero[field] = json!(v);
                    }
                }
            }
            list.push(hero);
        }
        Ok(json!(list))
    }
}

/// A room's name, if it has a non-empty one.
fn room_name(conn: &Connection, room_id: &str) -> Result<Option<String>> {
    Ok(state_content(conn, room_id, "m.room.name", "")?
        .and_then(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|n| !n.is_empty()))
}
