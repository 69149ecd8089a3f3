//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature).
//!
//! Each function runs the code the server runs on what a peer or a client sends; where that
//! code is not public, a thin wrapper here calls it. Nothing here is meant for other uses.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use ruma::{OwnedUserId, UserId, room_version_rules::RoomVersionRules};
use serde_json::{Value, json};

pub use crate::federation::auth::{
    AuthFailure, XMatrix, check_header, sign_request, verify_body, verify_request,
};
pub use crate::federation::bounded::{
    MAX_DEPTH, MAX_REQUEST_VALUES, ShapeError, capped_arrays, check_shape,
};
pub use crate::filter::{EventFilter, Filter, RoomEventFilter, RoomFilter, type_matches};
pub use crate::identity::{Identity, public_key_map};
pub use crate::push::{new_rule, parse_actions, ruleset_from_stored};
pub use crate::rooms::pdu::Pdu;
pub use crate::rooms::remote::{verify_pdu, verify_pdu_keyed};
pub use crate::sliding_sync::{ListRequest, Request as SlidingSyncRequest, RoomParams};
pub use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId};

use crate::{
    config::{Config, PasswordCost},
    federation::rooms::{MAX_TRANSACTION_PDUS, Transaction, transaction_answer},
    rooms::{
        create::CreateRoomRequest,
        graph::{self, EventTemplate, RoomCtx},
    },
    services::Services,
    storage::state as state_store,
};

/// The rules of a room version this node supports.
pub fn room_version_rules(version: &str) -> Option<RoomVersionRules> {
    graph::version_rules(version).ok().map(|(_, rules)| rules)
}

/// Adds a content hash and `identity`'s signature to an event as a server signs its own
/// events (whatever hashes, signatures and `unsigned` it had are dropped first). `false` if
/// ruma cannot sign it (not an object of the right shape, too large).
pub fn sign_pdu(
    obj: &mut CanonicalJsonObject,
    identity: &Identity,
    rules: &RoomVersionRules,
) -> bool {
    obj.remove("hashes");
    obj.remove("signatures");
    obj.remove("unsigned");
    ruma::signatures::hash_and_sign_event(
        identity.server_name().as_str(),
        identity.key_pair(),
        obj,
        &rules.redaction,
    )
    .is_ok()
}

/// A client request body as every client endpoint reads it (`Json<T>`).
pub fn client_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    crate::http::parse_body(bytes).ok()
}

/// A sliding sync request body as the endpoint reads it: the body must be a JSON object,
/// `conn_id` a short string; what the connection's previous request (`stored`) set and this
/// one leaves out carries over; then the request is parsed and checked. Returns the request
/// and the to-device `since` position.
pub fn sliding_sync_request(
    body: &[u8],
    stored: Option<&Value>,
) -> Option<(SlidingSyncRequest, Option<i64>)> {
    let mut body: Value = client_body(body)?;
    crate::sliding_sync::conn_id(&body).ok()?;
    if let Some(stored) = stored {
        crate::sliding_sync::apply_sticky(&mut body, stored);
    }
    crate::sliding_sync::read_request(&body).ok()
}

/// Which of `rooms` (a list's rooms in order) the request's lists and subscriptions select,
/// with the parameters each is sent with, as a response is built.
pub fn sliding_sync_rooms(
    req: &SlidingSyncRequest,
    rooms: &[&str],
) -> std::collections::BTreeMap<String, RoomParams> {
    let mut wanted = std::collections::BTreeMap::new();
    for list in req.lists.values() {
        crate::sliding_sync::select_ranges(list, rooms, &mut wanted);
    }
    for (room_id, params) in &req.room_subscriptions {
        wanted.entry(room_id.clone()).or_default().merge(params);
    }
    wanted
}

/// Whether a room's `required_state` rules ask for the state entry `(ty, key)`.
pub fn required_state_matches(rules: &[(String, String)], ty: &str, key: &str, user: &str) -> bool {
    crate::sliding_sync::room::rule_matches(rules, ty, key, user)
}

/// The actions a user's push rules give an event (its JSON text) in a room of three, after
/// the user's stored rule set (`m.push_rules` account data, if any) is read and one rule
/// made from a `PUT /pushrules/global/{kind}/{rule_id}` body is added to it. `None` if the
/// event is not JSON.
pub fn push_actions(
    stored: Option<&str>,
    kind: &str,
    rule_id: &str,
    rule_body: &[u8],
    event: &str,
) -> Option<Vec<ruma::push::Action>> {
    use futures::FutureExt;
    let user = UserId::parse("@alice:example.org").ok()?;
    let mut rules = ruleset_from_stored(&user, stored);
    if let Some(body) = client_body::<serde_json::Map<String, Value>>(rule_body)
        && crate::push::check_path("global", kind).is_ok()
        && let Ok(rule) = new_rule(kind, rule_id, &body)
    {
        let _ = rules.insert(rule, None, None);
    }
    let raw = serde_json::value::RawValue::from_string(event.to_owned()).ok()?;
    let room = ruma::RoomId::parse("!room:example.org").ok()?;
    let ctx = ruma::push::PushConditionRoomCtx::new(
        room,
        ruma::UInt::from(3u32),
        user,
        "Alice".to_owned(),
    );
    rules
        .get_actions(&ruma::serde::Raw::<Value>::from_json(raw), &ctx)
        .now_or_never()
        .map(<[ruma::push::Action]>::to_vec)
}

/// A node in a fresh directory with one room, which a user of another server (whose key
/// the node knows, so what it sends can be signed) has joined: `/send` bodies from that
/// server are taken in as the handler takes them in.
pub struct TransactionNode {
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    services: Arc<Services>,
    remote: Identity,
    rules: RoomVersionRules,
    placeholders: Vec<(&'static str, String)>,
}

impl TransactionNode {
    /// Sets the node up in `dir` (which should not exist; it is removed when dropped).
    ///
    /// # Panics
    /// If the node or its room cannot be set up.
    pub fn open(dir: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = Config::new(dir);
        config.password_cost = PasswordCost::TESTING;
        let services = Services::open(config).expect("node");
        let remote = Identity::from_seed(&[0x5a; 32]).expect("remote identity");
        let bob: OwnedUserId =
            UserId::parse(format!("@bob:{}", remote.server_name())).expect("remote user");
        let (room, rules, state) = runtime.block_on(async {
            let alice = services
                .accounts
                .register("alice", None)
                .await
                .expect("alice");
            let room = services
                .rooms
                .create_room(
                    &alice,
                    CreateRoomRequest {
                        preset: Some("public_chat".into()),
                        ..Default::default()
                    },
                )
                .await
                .expect("room")
                .to_string();
            let (r, remote_key, b) = (room.clone(), Identity::from_seed(&[0x5a; 32]), bob.clone());
            let (rules, state) = services
                .db
                .write(move |txn| {
                    let remote_key = remote_key?;
                    let mut ctx = RoomCtx::load(txn, &r)?;
                    let join = EventTemplate::state(
                        "m.room.member",
                        b.as_str(),
                        json!({ "membership": "join" }),
                    );
                    graph::append(txn, &mut ctx, &remote_key, &b, &join, None)?;
                    Ok((ctx.rules.clone(), state_store::current_state(txn, &r)?))
                })
                .await
                .expect("remote join");
            (room, rules, state)
        });
        let id = |ty: &str, key: &str| {
            state
                .get(&(ty.to_owned(), key.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        let local = services.identity.server_name().to_string();
        let placeholders = vec![
            ("%R", room.clone()),
            ("%S", remote.server_name().to_string()),
            ("%L", local.clone()),
            ("%U", bob.to_string()),
            ("%A", format!("@alice:{local}")),
            ("%C", id("m.room.create", "")),
            ("%P", id("m.room.power_levels", "")),
            ("%J", id("m.room.join_rules", "")),
            ("%M", id("m.room.member", bob.as_str())),
        ];
        Self {
            dir: dir.to_owned(),
            runtime,
            services,
            remote,
            rules,
            placeholders,
        }
    }

    /// The short names a fuzz input may use for this node's room, servers, users and state
    /// events (`%R` the room id, `%U` the remote user, `%M` their join, …), and their values.
    pub fn placeholders(&self) -> &[(&'static str, String)] {
        &self.placeholders
    }

    /// `text` with every placeholder replaced by its value.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in &self.placeholders {
            if out.contains(name) {
                out = out.replace(name, value);
            }
        }
        out
    }

    /// Takes in a `/send` body from the remote server as the handler does, after its request
    /// signature was checked: its shape, then its parse, the first PDUs (each hashed and
    /// signed by the remote server first when `sign`), their verification and the room
    /// graph, then the EDUs. The resolver that fetches missing events is not started. `None`
    /// if the body is refused before any PDU is looked at; else the answer.
    pub fn send(&self, body: &[u8], sign: bool) -> Option<Value> {
        check_shape(body, MAX_REQUEST_VALUES, MAX_DEPTH).ok()?;
        let Transaction { pdus, edus } = if body.is_empty() {
            serde_json::from_value(json!({}))
        } else {
            serde_json::from_slice(body)
        }
        .ok()?;
        let mut pdus: Vec<Value> = pdus.into_iter().take(MAX_TRANSACTION_PDUS).collect();
        if sign {
            for pdu in &mut pdus {
                if let Ok(mut obj) = serde_json::from_value::<CanonicalJsonObject>(pdu.clone())
                    && sign_pdu(&mut obj, &self.remote, &self.rules)
                    && let Ok(signed) = serde_json::to_value(&obj)
                {
                    *pdu = signed;
                }
            }
        }
        let origin = self.remote.server_name().to_string();
        let state = &self.services;
        let results = self.runtime.block_on(async {
            let (results, _taken) =
                crate::federation::inbound::verify_and_take_in(state, &origin, pdus).await;
            crate::federation::edus::receive(state, &origin, edus).await;
            results
        });
        Some(transaction_answer(results))
    }
}

impl Drop for TransactionNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
