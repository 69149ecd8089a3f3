//! `/sync` (v3): initial and incremental responses, and long-polling.
//!
//! `next_batch` is `s{stream}_{typing}`: everything stored at a stream position up to
//! `stream` has been delivered, and typing changes up to serial `typing`. A third part
//! `_d{pos}` appears when to-device messages above `pos` are still waiting (see
//! [`crate::e2ee::sync`]).
//!
//! It stays one file (a little over 600 lines): the response is built by one `Builder` whose
//! parts (timeline, state, summaries, invited and left rooms) share its fields and rules.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::{
    e2ee,
    error::{MatrixError, Result},
    filter::Filter,
    notifier::Notifier,
    rooms::{
        format::{Viewer, client_event, stripped_state},
        timeline::{Visible, parse_token, state_at, token},
    },
    storage::{
        Db,
        events::{self as ev_store, MembershipRow, StoredEvent},
        now_ms,
        push::PUSH_RULES_TYPE,
        state::{self as state_store, StateMap},
        to_device, user_data,
    },
    typing::Typing,
};

/// Longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeline length when the filter gives none.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// State shown in an invite.
pub(crate) const INVITE_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// A `/sync` request.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The `since` token.
    pub since: Option<String>,
    /// Send full state even on incremental syncs.
    pub full_state: bool,
    /// Long-poll timeout.
    pub timeout: Duration,
    /// The filter.
    pub filter: Filter,
}

/// The sync service.
#[derive(Clone)]
pub struct SyncService {
    db: Db,
    notifier: Arc<Notifier>,
    typing: Typing,
}

struct Since {
    pos: i64,
    typing: Option<u64>,
    /// To-device messages were delivered up to here (`_d{pos}`), when short of `pos`.
    to_device: Option<i64>,
}

fn parse_since(token: &str) -> Result<Since> {
    let bad = || MatrixError::invalid_param("Invalid since token");
    let pos = parse_token(token).ok_or_else(bad)?;
    let typing = token.split('_').nth(1).and_then(|t| t.parse().ok());
    let to_device = token
        .split('_')
        .nth(2)
        .and_then(|t| t.strip_prefix('d'))
        .and_then(|t| t.parse().ok());
    Ok(Since {
        pos,
        typing,
        to_device,
    })
}

impl SyncService {
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>, typing: Typing) -> Self {
        Self {
            db,
            notifier,
            typing,
        }
    }

    /// Answers a sync, waiting up to the timeout for something new on incremental syncs.
    pub async fn sync(&self, user_id: &str, device_id: &str, req: SyncRequest) -> Result<Value> {
        let since = req.since.as_deref().map(parse_since).transpose()?;
        let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
        let mut changes = self.notifier.subscribe();
        let mut acknowledged = false;
        loop {
            let now_pos = self.db.current_pos();
            let typing_serial = self.typing.serial();
            let typing = self.typing.clone();
            let (user, device, filter) =
                (user_id.to_owned(), device_id.to_owned(), req.filter.clone());
            let since_pos = since.as_ref().map(|s| s.pos);
            let since_typing = since.as_ref().and_then(|s| s.typing);
            let since_to_device = since.as_ref().and_then(|s| s.to_device);
            let full_state = req.full_state;
            let (body, empty, acked_upto, to_device_upto) = self
                .db
                .read(move |conn| {
                    let b = Builder {
                        conn,
                        user: &user,
                        device: &device,
                        since: since_pos,
                        since_typing,
                        now_pos,
                        filter: &filter,
                        full_state,
                        typing: &typing,
                        now: now_ms(),
                    };
                    let (mut body, empty) = b.build()?;
                    let e2ee = e2ee::sync::SyncSection::build(
                        conn,
                        &user,
                        &device,
                        since_pos,
                        since_to_device,
                        now_pos,
                    )?;
                    let empty = empty && !e2ee.has_news();
                    let (acked, upto) = (e2ee.acknowledged_upto, e2ee.to_device_upto);
                    e2ee.write_into(&mut body);
                    Ok((body, empty, acked, upto))
                })
                .await?;
            if let (Some(upto), false) = (acked_upto, acknowledged) {
                // The client holds a token past these to-device messages: they arrived.
                acknowledged = true;
                let (user, device) = (user_id.to_owned(), device_id.to_owned());
                self.db
                    .write(move |txn| to_device::delete_upto(txn, &user, &device, upto))
                    .await?;
            }
            let waiting = since.is_some() && empty && !req.full_state;
            if !waiting || tokio::time::Instant::now() >= deadline || self.notifier.is_closing() {
                let mut body = body;
                body["next_batch"] = json!(match to_device_upto {
                    Some(d) => format!("s{now_pos}_{typing_serial}_d{d}"),
                    None => format!("s{now_pos}_{typing_serial}"),
                });
                return Ok(body);
            }
            tokio::select! {
                r = changes.changed() => { if r.is_err() { return Ok(body) } }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

struct Builder<'a> {
    conn: &'a Connection,
    user: &'a str,
    device: &'a str,
    since: Option<i64>,
    since_typing: Option<u64>,
    now_pos: i64,
    filter: &'a Filter,
    full_state: bool,
    typing: &'a Typing,
    now: i64,
}

impl Builder<'_> {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user_id: self.user,
            device_id: Some(self.device),
        }
    }

    /// Builds the body and says whether it carries nothing new.
    fn build(&self) -> Result<(Value, bool)> {
        let since = self.since.unwrap_or(0);
        let mut join = Map::new();
        let mut invite = Map::new();
        let mut leave = Map::new();
        let memberships = ev_store::memberships_of_user(self.conn, self.user)?;
        let touched = self.rooms_touched_since()?;
        for m in &memberships {
            if !self.filter.room.allows_room(&m.room_id) {
                continue;
            }
            let changed = self.since.is_none_or(|s| m.stream > s);
            match m.membership.as_str() {
                "join" => {
                    if let Some(room) = self.joined_room(m, touched.as_ref())? {
                        join.insert(m.room_id.clone(), room);
                    }
                }
                "invite" if changed => {
                    invite.insert(m.room_id.clone(), self.invited_room(m)?);
                }
                "leave" | "ban"
                    if changed && (self.since.is_some() || self.filter.room.include_leave) =>
                {
                    leave.insert(m.room_id.clone(), self.left_room(m)?);
                }
                _ => {}
            }
        }
        let mut global = Vec::new();
        for (room, ty, content) in user_data::account_data_since(self.conn, self.user, since)? {
            if room.is_empty() && self.filter.account_data.allows_type(&ty) {
                global.push(
                    json!({ "type": ty, "content": serde_json::from_str::<Value>(&content)? }),
                );
            }
        }
        if self.since.is_none()
            && self.filter.account_data.allows_type(PUSH_RULES_TYPE)
            && !global.iter().any(|e| e["type"] == PUSH_RULES_TYPE)
            && let Ok(user) = ruma::UserId::parse(self.user)
        {
            // Everyone has push rules: the server defaults until first changed.
            let content = crate::push::account_data_content(&user, None);
            global.push(json!({ "type": PUSH_RULES_TYPE, "content": content }));
        }
        let presence = crate::presence::sync_events(
            self.conn,
            self.user,
            since,
            self.now,
            &self.filter.presence,
        )?;
        let empty = join.is_empty()
            && invite.is_empty()
            && leave.is_empty()
            && global.is_empty()
            && presence.is_empty();
        Ok((
            json!({
                "rooms": { "join": join, "invite": invite, "leave": leave, "knock": {} },
                "account_data": { "events": global },
                "presence": { "events": presence },
                // to_device, device_lists and the key counts: e2ee::sync::SyncSection.
            }),
            empty,
        ))
    }

    fn timeline_limit(&self) -> usize {
        self.filter
            .room
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| (l as usize).clamp(1, 500))
    }

    /// Timeline events of a room in `(after, upto]`, newest `limit` matching the filter, and
    /// the part of the room the user may see up to `upto` (for [`Self::format`]).
    fn timeline(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<(Vec<StoredEvent>, bool, Option<Visible>)> {
        let visible = self.visible_upto(room_id, upto)?;
        // History visibility `joined`/`invited` hides what came before the membership.
        let floor = visible.map_or(0, |v| v.floor);
        let (events, more) = crate::rooms::timeline::paginate(
            self.conn,
            room_id,
            crate::rooms::timeline::Page {
                from: upto,
                to: Some(after),
                dir: crate::rooms::timeline::Direction::Backward,
                limit: self.timeline_limit(),
            },
            &self.filter.room.timeline,
            crate::rooms::timeline::Visible { floor, upto },
        )?;
        let mut events = events;
        events.reverse();
        Ok((events, more.is_some(), visible))
    }

    /// The part of a room the user may see, cut at `upto`.
    fn visible_upto(&self, room_id: &str, upto: i64) -> Result<Option<Visible>> {
        Ok(
            crate::rooms::timeline::visible_range(self.conn, room_id, self.user, self.now_pos)?
                .map(|v| Visible {
                    floor: v.floor,
                    upto: v.upto.min(upto),
                }),
        )
    }

    /// Timeline events in client format, with bundled aggregations of what the user could
    /// see in `range`.
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

    /// State to send with a timeline: the state at its start, or only what changed since
    /// `since` when the client already holds the earlier state.
    fn state_for(
        &self,
        room_id: &str,
        timeline: &[StoredEvent],
        since: Option<i64>,
        upto: i64,
    ) -> Result<Vec<Value>> {
        let start: StateMap = match timeline.first() {
            Some(first) => match first.state_before {
                Some(g) => state_store::load_state_group(self.conn, g)?,
                None => StateMap::new(),
            },
            None => state_at(self.conn, room_id, upto, self.now_pos)?,
        };
        let known: StateMap = match since {
            Some(s) => state_at(self.conn, room_id, s, self.now_pos)?,
            None => StateMap::new(),
        };
        let in_timeline: std::collections::HashSet<&str> =
            timeline.iter().map(|e| e.event_id.as_str()).collect();
        let lazy = self.filter.room.state.lazy_load_members;
        let wanted_members: std::collections::HashSet<&str> = timeline
            .iter()
            .map(|e| e.sender.as_str())
            .chain(std::iter::once(self.user))
            .collect();
        let mut out = Vec::new();
        for ((ty, key), id) in &start {
            if in_timeline.contains(id.as_str())
                || known.get(&(ty.clone(), key.clone())) == Some(id)
            {
                // Members the timeline needs are resent under lazy loading even if known (the
                // own member only when the client gets the room whole).
                if !(lazy
                    && ty == "m.room.member"
                    && wanted_members.contains(key.as_str())
                    && (since.is_none() || key != self.user))
                {
                    continue;
                }
            }
            if lazy && ty == "m.room.member" && !wanted_members.contains(key.as_str()) {
                continue;
            }
            let Some(ev) = ev_store::get_event(self.conn, id)? else {
                continue;
            };
            if !self.filter.room.state.matches(&ev) {
                continue;
            }
            out.push(client_event(self.conn, &ev, Some(self.viewer()), self.now)?);
        }
        Ok(out)
    }

    /// On an incremental sync, every room with something stored since `since` that a joined
    /// room's entry could show: an event, a receipt, or room account data of the user. A room
    /// outside this set (and with no typing change) has nothing new, so it is skipped without
    /// the per-room reads. `None` on an initial sync.
    fn rooms_touched_since(&self) -> Result<Option<HashSet<String>>> {
        let Some(since) = self.since else {
            return Ok(None);
        };
        let mut rooms = ev_store::rooms_with_events_after(self.conn, since)?;
        rooms.extend(user_data::rooms_with_receipts_after(self.conn, since)?);
        for (room, _, _) in user_data::account_data_since(self.conn, self.user, since)? {
            if !room.is_empty() {
                rooms.insert(room);
            }
        }
        Ok(Some(rooms))
    }

    fn joined_room(
        &self,
        m: &MembershipRow,
        touched: Option<&HashSet<String>>,
    ) -> Result<Option<Value>> {
        let room_id = m.room_id.as_str();
        // A room joined after `since` is new to the client: send it whole.
        let since = self.since.filter(|s| m.stream <= *s);
        // `full_state` sends all state, but the timeline still starts at `since`.
        let state_since = if self.full_state { None } else { since };
        // Nothing stored for the room since then and nobody started or stopped typing: the
        // checks below would all come out empty.
        if state_since.is_some()
            && touched.is_some_and(|t| !t.contains(room_id))
            && self
                .typing
                .changed_since(room_id, self.since_typing)
                .is_none()
        {
            return Ok(None);
        }
        let after = since.unwrap_or(0);
        let (timeline, limited, visible) = self.timeline(room_id, after, self.now_pos)?;
        let receipts = user_data::receipts_since(self.conn, room_id, after)?;
        let typing = self.typing.changed_since(
            room_id,
            if since.is_some() {
                self.since_typing
            } else {
                None
            },
        );
        let mut account_data = Vec::new();
        for (room, ty, content) in user_data::account_data_since(self.conn, self.user, after)? {
            if room == room_id {
                account_data.push(
                    json!({ "type": ty, "content": serde_json::from_str::<Value>(&content)? }),
                );
            }
        }
        let state_changed = since.is_some() && limited;
        if state_since.is_some()
            && timeline.is_empty()
            && receipts.is_empty()
            && typing.is_none()
            && account_data.is_empty()
            && !state_changed
        {
            return Ok(None);
        }
        // Under lazy loading the client may never have been sent the members of this
        // timeline's senders, so they are worked out even when nothing else changed.
        let state = if state_since.is_none() || limited || self.filter.room.state.lazy_load_members
        {
            self.state_for(room_id, &timeline, state_since, self.now_pos)?
        } else {
            Vec::new()
        };
        let prev_batch = timeline
            .first()
            .and_then(|e| e.stream)
            .map_or(token(after), |s| token(s - 1));
        let mut ephemeral = Vec::new();
        if let Some(users) = typing {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
        }
        let receipts = receipt_content(receipts, self.user);
        if !receipts.is_empty() {
            ephemeral.push(json!({ "type": "m.receipt", "content": receipts }));
        }
        let (joined, invited, heroes) = self.summary(room_id)?;
        let by_thread = self.filter.room.timeline.unread_thread_notifications;
        let counts = crate::push::unread_counts(self.conn, self.user, room_id, by_thread)?;
        let mut room = json!({
            "timeline": { "events": self.format(room_id, &timeline, visible)?, "limited": limited, "prev_batch": prev_batch },
            "state": { "events": state },
            "ephemeral": { "events": ephemeral },
            "account_data": { "events": account_data },
            "summary": {
                "m.joined_member_count": joined,
                "m.invited_member_count": invited,
                "m.heroes": heroes,
            },
            "unread_notifications": {
                "notification_count": counts.room.0,
                "highlight_count": counts.room.1,
            },
        });
        if by_thread {
            let threads: Map<String, Value> = counts
                .threads
                .into_iter()
                .map(|(root, (n, h))| {
                    (
                        root,
                        json!({ "notification_count": n, "highlight_count": h }),
                    )
                })
                .collect();
            room["unread_thread_notifications"] = Value::Object(threads);
        }
        Ok(Some(room))
    }

    fn summary(&self, room_id: &str) -> Result<(usize, usize, Vec<String>)> {
        let members = ev_store::room_members(self.conn, room_id, None)?;
        let joined = members.iter().filter(|m| m.membership == "join").count();
        let invited = members.iter().filter(|m| m.membership == "invite").count();
        let heroes = members
            .iter()
            .filter(|m| {
                m.user_id != self.user && (m.membership == "join" || m.membership == "invite")
            })
            .take(5)
            .map(|m| m.user_id.clone())
            .collect();
        Ok((joined, invited, heroes))
    }

    fn invited_room(&self, m: &MembershipRow) -> Result<Value> {
        let events = invite_state_events(self.conn, &m.room_id, self.user, &m.event_id)?;
        Ok(json!({ "invite_state": { "events": events } }))
    }

    fn left_room(&self, m: &MembershipRow) -> Result<Value> {
        let since = if self.full_state { None } else { self.since };
        let after = since.unwrap_or(0);
        let saw_room =
            crate::rooms::timeline::visible_upto(self.conn, &m.room_id, self.user, self.now_pos)?
                .is_some();
        let (timeline, limited, visible) = if saw_room {
            self.timeline(&m.room_id, after, m.stream)?
        } else {
            // Someone who only ever had an invite sees their own leave and nothing else.
            let own = ev_store::get_event(self.conn, &m.event_id)?;
            let visible = self.visible_upto(&m.room_id, m.stream)?;
            (own.into_iter().collect(), false, visible)
        };
        let state = if saw_room {
            self.state_for(&m.room_id, &timeline, since, m.stream)?
        } else {
            Vec::new()
        };
        let prev_batch = timeline
            .first()
            .and_then(|e| e.stream)
            .map_or(token(after), |s| token(s - 1));
        Ok(json!({
            "timeline": { "events": self.format(&m.room_id, &timeline, visible)?, "limited": limited, "prev_batch": prev_batch },
            "state": { "events": state },
            "account_data": { "events": [] },
        }))
    }
}

/// The stripped state an invitee sees of a room: the invite's own event last.
pub(crate) fn invite_state_events(
    conn: &Connection,
    room_id: &str,
    user: &str,
    invite_event_id: &str,
) -> Result<Vec<Value>> {
    let mut events = Vec::new();
    // An invite from another server brings the room's stripped state with it.
    if let Some(json) = crate::storage::federation::invite_state(conn, room_id, user)? {
        events = serde_json::from_str::<Vec<Value>>(&json).unwrap_or_default();
        if let Some(invite) = ev_store::get_event(conn, invite_event_id)? {
            let mut own = stripped_state(&invite)?;
            own["event_id"] = json!(invite.event_id);
            own["origin_server_ts"] = json!(invite.origin_server_ts);
            events.push(own);
        }
        return Ok(events);
    }
    for ty in INVITE_STATE {
        if let Some(id) = state_store::current_state_event(conn, room_id, ty, "")?
            && let Some(ev) = ev_store::get_event(conn, &id)?
        {
            events.push(stripped_state(&ev)?);
        }
    }
    if let Some(invite) = ev_store::get_event(conn, invite_event_id)? {
        if let Some(sender_member) =
            state_store::current_state_event(conn, room_id, "m.room.member", &invite.sender)?
            && sender_member != invite.event_id
            && let Some(ev) = ev_store::get_event(conn, &sender_member)?
        {
            events.push(stripped_state(&ev)?);
        }
        let mut own = stripped_state(&invite)?;
        own["event_id"] = json!(invite.event_id);
        own["origin_server_ts"] = json!(invite.origin_server_ts);
        events.push(own);
    }
    Ok(events)
}

/// The content of an `m.receipt` event for `receipts`, as `user` may see them (private
/// receipts only their own).
pub(crate) fn receipt_content(receipts: Vec<user_data::Receipt>, user: &str) -> Map<String, Value> {
    let mut content: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in receipts {
        if r.receipt_type == "m.read.private" && r.user_id != user {
            continue;
        }
        let mut receipt = json!({ "ts": r.ts });
        if !r.thread_id.is_empty() {
            receipt["thread_id"] = json!(r.thread_id);
        }
        let entry = content.entry(r.event_id.clone()).or_default();
        let by_type = entry
            .entry(r.receipt_type.clone())
            .or_insert_with(|| json!({}));
        by_type[r.user_id.as_str()] = receipt;
    }
    content
        .into_iter()
        .map(|(k, v)| (k, Value::Object(v)))
        .collect()
}
