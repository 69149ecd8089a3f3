//! Ephemeral data across servers: typing notifications, read receipts and presence.

use std::time::Duration;

use serde_json::{Value, json};

use crate::e2ee::remote::server_of;
use crate::{
    client::AppState,
    error::Result,
    storage::{events as ev_store, federation as fed_store, now_ms, user_data},
};

/// How long a typing notice from another server lasts unless renewed or cleared.
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

async fn queue(state: &AppState, room_id: &str, edu: Value) -> Result<()> {
    let (room, local, json) = (
        room_id.to_owned(),
        state.identity.server_name().to_string(),
        edu.to_string(),
    );
    state
        .db
        .write(move |txn| fed_store::enqueue_edu_for_room(txn, &room, &local, &json))
        .await?;
    state.notifier.notify();
    Ok(())
}

/// Tells the other servers in the room that a local user started or stopped typing.
pub async fn send_typing(
    state: &AppState,
    room_id: &str,
    user_id: &str,
    typing: bool,
) -> Result<()> {
    let edu = json!({
        "edu_type": "m.typing",
        "content": { "room_id": room_id, "user_id": user_id, "typing": typing },
    });
    queue(state, room_id, edu).await
}

/// Tells the other servers in the room about a local user's public read receipt.
pub async fn send_receipt(
    state: &AppState,
    room_id: &str,
    user_id: &str,
    event_id: &str,
) -> Result<()> {
    let edu = json!({
        "edu_type": "m.receipt",
        "content": { room_id: { "m.read": { user_id: {
            "event_ids": [event_id],
            "data": { "ts": now_ms() },
        } } } },
    });
    queue(state, room_id, edu).await
}

fn from_origin(user: &str, origin: &str) -> bool {
    server_of(user) == Some(origin)
}

/// Applies EDUs received from `origin`; anything about users of other servers is ignored.
pub async fn receive(state: &AppState, origin: &str, edus: Vec<Value>) {
    for edu in edus.into_iter().take(100) {
        let content = &edu["content"];
        match edu["edu_type"].as_str() {
            Some("m.typing") => {
                let (Some(room), Some(user)) =
                    (content["room_id"].as_str(), content["user_id"].as_str())
                else {
                    continue;
                };
                let typing = content["typing"].as_bool().unwrap_or(false);
                if from_origin(user, origin) && is_joined(state, room, user).await {
                    state.typing.set(room, user, typing, REMOTE_TYPING_TIMEOUT);
                }
            }
            Some("m.receipt") => {
                let Some(rooms) = content.as_object() else {
                    continue;
                };
                for (room, by_type) in rooms {
                    let Some(readers) = by_type["m.read"].as_object() else {
                        continue;
                    };
                    for (user, receipt) in readers {
                        let Some(event_id) = receipt["event_ids"]
                            .as_array()
                            .and_then(|a| a.last())
                            .and_then(Value::as_str)
                        else {
                            continue;
                        };
                        if !from_origin(user, origin) || !is_joined(state, room, user).await {
                            continue;
                        }
                        let r = user_data::Receipt {
                            user_id: user.clone(),
                            receipt_type: "m.read".into(),
                            thread_id: receipt["data"]["thread_id"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                            event_id: event_id.to_owned(),
                            ts: receipt["data"]["ts"].as_i64().unwrap_or_else(now_ms),
                        };
                        let room = room.clone();
                        let stored = state
                            .db
                            .write(move |txn| {
                                let pos = txn.next_pos();
                                user_data::set_receipt(txn, &room, &r, pos)
                            })
                            .await;
                        if stored.is_ok() {
                            state.notifier.notify();
                        }
                    }
                }
            }
            Some("m.presence") => state.presence.receive_remote(origin, content).await,
            Some("m.device_list_update" | "m.signing_key_update" | "m.direct_to_device") => {
                super::devices::receive_edu(state, origin, &edu).await;
            }
            _ => {}
        }
    }
}

/// Whether `user` is joined to `room`. An EDU cannot be asked for again, so one whose
/// sender's membership could not be read is dropped, and the failure logged.
async fn is_joined(state: &AppState, room: &str, user: &str) -> bool {
    let (r, u) = (room.to_owned(), user.to_owned());
    state
        .db
        .read(move |c| Ok(ev_store::membership(c, &r, &u)?.is_some_and(|m| m.membership == "join")))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, room, user, "membership unreadable; EDU dropped");
            false
        })
}
