//! What local users ask for whose answer may lie on other servers: joining and leaving rooms,
//! resolving aliases, telling room-mates' servers about typing and read receipts, and
//! fetching other users' keys.
//!
//! Each request is answered here when it can be (a room this server takes part in, an alias
//! of its own) and otherwise through [`crate::federation`], which does the talking. Client
//! handlers reach it as [`crate::services::Services::federated`], so they parse, call one
//! method and answer, and the client API never calls into the server-server API itself.

use std::{collections::BTreeMap, time::Duration};

use ruma::UserId;
use serde_json::{Map, Value};

use crate::{
    error::Result,
    federation::{devices, edus, membership, query},
    http::AppState,
    rooms::membership::MembershipAction,
};

/// Local users' requests that may cross servers; borrows the node's services.
pub struct Federated<'a> {
    services: &'a AppState,
}

impl<'a> Federated<'a> {
    pub(crate) fn new(services: &'a AppState) -> Self {
        Self { services }
    }

    /// Joins `user` to `room` (a room id, or an alias): on this server when it takes part in
    /// the room, else through another server, tried in turn: those of `via` (the client's
    /// `server_name`/`via`), those an alias of another server named, the inviter's and those
    /// last seen in the room, then the room id's own. Returns the room id.
    pub async fn join(
        &self,
        user: &UserId,
        room: &str,
        mut via: Vec<String>,
        reason: Option<String>,
    ) -> Result<String> {
        let state = self.services;
        // An alias of another server: ask it for the room and the servers to join through.
        let (room, alias_servers) = match room.strip_prefix('#') {
            Some(_) if !room.ends_with(&format!(":{}", state.identity.server_name())) => {
                query::resolve_alias(state, room).await?
            }
            _ => (room.to_owned(), Vec::new()),
        };
        if room.starts_with('!') && !membership::is_resident(state, &room).await? {
            // A room that lives elsewhere: join through the servers we were told of.
            via.extend(alias_servers);
            via.extend(membership::join_candidates(state, &room, user.as_str()).await?);
            if let Some((_, server)) = room.split_once(':') {
                via.push(server.to_owned());
            }
            via.dedup();
            membership::join_remote(state, user, &room, &via).await?;
            return Ok(room);
        }
        let room_id = state.rooms.resolve_room(&room).await?;
        state
            .rooms
            .change_membership(
                user,
                room_id.as_str(),
                user,
                MembershipAction::Join,
                reason,
                Map::new(),
            )
            .await?;
        Ok(room_id.to_string())
    }

    /// `user` leaves `room`; an invite to a room this server does not take part in is
    /// declined through the inviter's server.
    pub async fn leave(&self, user: &UserId, room: &str, reason: Option<String>) -> Result<()> {
        let state = self.services;
        if room.starts_with('!')
            && !membership::is_resident(state, room).await?
            && state
                .rooms
                .membership_of(room, user.as_str())
                .await?
                .as_deref()
                == Some("invite")
        {
            return membership::reject_remote_invite(state, user, room).await;
        }
        state
            .rooms
            .change_membership(
                user,
                room,
                user,
                MembershipAction::Leave,
                reason,
                Map::new(),
            )
            .await
    }

    /// The room an alias names and the servers to join it through: from this server's
    /// directory for its own aliases, else from the alias's server.
    pub async fn resolve_alias(&self, alias: &str) -> Result<(String, Vec<String>)> {
        query::resolve_alias(self.services, alias).await
    }

    /// A joined user starts or stops typing: room-mates here see it at once, those of other
    /// servers once their server is told.
    pub async fn set_typing(
        &self,
        room: &str,
        user: &str,
        typing: bool,
        timeout: Duration,
    ) -> Result<()> {
        let state = self.services;
        state.rooms.require_joined(room, user).await?;
        state.typing.set(room, user, typing, timeout);
        edus::send_typing(state, room, user, typing).await
    }

    /// Moves one of the user's read markers (`m.read`, `m.read.private`, `m.fully_read`);
    /// a public read receipt is also sent to the room's other servers.
    pub async fn set_read_marker(
        &self,
        user: &str,
        room: &str,
        ty: &str,
        event: &str,
        thread_id: Option<&str>,
    ) -> Result<()> {
        let state = self.services;
        state
            .user_data
            .set_read_marker(user, room, ty, event, thread_id)
            .await?;
        if ty == "m.read" {
            edus::send_receipt(state, room, user, event).await?;
        }
        Ok(())
    }

    /// Client `/keys/query`, local and remote users alike.
    pub async fn query_keys(
        &self,
        caller: &UserId,
        requested: BTreeMap<String, Vec<String>>,
        timeout_ms: Option<u64>,
    ) -> Result<Value> {
        devices::query_keys(self.services, caller, requested, timeout_ms).await
    }

    /// Client `/keys/claim`, local and remote users alike.
    pub async fn claim_keys(
        &self,
        caller: &UserId,
        requested: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Value> {
        devices::claim_keys(self.services, caller, requested).await
    }
}
