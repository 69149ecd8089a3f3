//! matrix-rust-sdk's sliding sync against a running Neurite node (see README.md).
//!
//! Two users register; each runs a sliding sync connection with a room list and the to-device,
//! e2ee and account-data extensions. Alice creates a named, encrypted room, sends a plain
//! message, invites Bob; Bob sees the room with its name, joins, and both exchange an encrypted
//! message that the other side decrypts.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, pin_mut};
use matrix_sdk::{
    Client, Room, SlidingSync, SlidingSyncList, SlidingSyncMode,
    ruma::{
        OwnedEventId, OwnedRoomId,
        api::client::{
            account::register::v3::Request as RegisterRequest,
            room::create_room::v3::Request as CreateRoomRequest, sync::sync_events::v5 as http,
            uiaa,
        },
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent, StateEventType,
            room::message::RoomMessageEventContent,
        },
    },
    sliding_sync::Version,
};
use tokio::time::Instant;

const PASSWORD: &str = "a long password for the interop check";
const WAIT: Duration = Duration::from_secs(30);

async fn register(url: &str, name: &str) -> anyhow::Result<Client> {
    let client = Client::builder().homeserver_url(url).build().await?;
    let mut register = RegisterRequest::new();
    register.username = Some(format!("{name}{}", std::process::id()));
    register.password = Some(PASSWORD.to_owned());
    register.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client
        .matrix_auth()
        .register(register)
        .await
        .with_context(|| format!("register {name}"))?;
    Ok(client)
}

/// A sliding sync connection with a room list and the extensions an encrypted chat needs,
/// polled in the background. Returns the connection and a receiver of the room ids each
/// response touched.
async fn start_sync(
    client: &Client,
    id: &str,
) -> anyhow::Result<(
    SlidingSync,
    tokio::sync::mpsc::UnboundedReceiver<anyhow::Result<Vec<OwnedRoomId>>>,
)> {
    let mut to_device = http::request::ToDevice::default();
    to_device.enabled = Some(true);
    let mut e2ee = http::request::E2EE::default();
    e2ee.enabled = Some(true);
    let mut account_data = http::request::AccountData::default();
    account_data.enabled = Some(true);
    let sliding = client
        .sliding_sync(id)?
        .add_list(
            SlidingSyncList::builder("all")
                .sync_mode(SlidingSyncMode::new_selective().add_range(0..=19))
                .timeline_limit(5)
                .required_state(vec![
                    (StateEventType::RoomName, String::new()),
                    (StateEventType::RoomEncryption, String::new()),
                    (StateEventType::RoomMember, "$LAZY".to_owned()),
                    (StateEventType::RoomMember, "$ME".to_owned()),
                ]),
        )
        .with_to_device_extension(to_device)
        .with_e2ee_extension(e2ee)
        .with_account_data_extension(account_data)
        .build()
        .await
        .context("build sliding sync")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = sliding.clone();
    tokio::spawn(async move {
        let stream = driver.sync();
        pin_mut!(stream);
        while let Some(update) = stream.next().await {
            let item = update
                .map(|summary| summary.rooms)
                .map_err(|e| anyhow::anyhow!("sliding sync request failed: {e}"));
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
    });
    Ok((sliding, rx))
}

/// Waits until a sliding sync response mentions `room_id` (the room a client creates is known
/// to it at once, from the creation response, so `get_room` alone proves nothing).
async fn wait_for_room(
    who: &str,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<anyhow::Result<Vec<OwnedRoomId>>>,
    client: &Client,
    room_id: &OwnedRoomId,
) -> anyhow::Result<Room> {
    let deadline = Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("{who}: the room did not arrive in time"))?;
        let Some(rooms) = next else {
            bail!("{who}: the sliding sync stream ended");
        };
        if rooms?.contains(room_id) {
            return client
                .get_room(room_id)
                .context("the room is not known to the client");
        }
    }
}

/// Fetches `event_id` until it decrypts (the room key travels by to-device message through
/// sliding sync), and returns its body.
async fn decrypted_body(who: &str, room: &Room, event_id: &OwnedEventId) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let event = room.event(event_id, None).await.context("fetch event")?;
        if !event.kind.is_utd() {
            let parsed = event.raw().deserialize().context("decrypted event")?;
            if let AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(m)) =
                parsed
                && let Some(original) = m.as_original()
            {
                return Ok(original.content.body().to_owned());
            }
            bail!("{who}: the decrypted event is not a message");
        }
        if Instant::now() > deadline {
            bail!("{who}: the message never decrypted");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_encrypted(room: &Room) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !room.latest_encryption_state().await?.is_encrypted() {
        if Instant::now() > deadline {
            bail!("the room never became encrypted");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8008".to_owned());
    let alice = register(&url, "alice").await?;
    let bob = register(&url, "bob").await?;
    for client in [&alice, &bob] {
        // The SDK would pick native sliding sync from /versions; be explicit so that a missing
        // advertisement does not hide a protocol problem.
        client.set_sliding_sync_version(Version::Native);
    }

    let (alice_sync, mut alice_rx) = start_sync(&alice, "interop").await?;
    let (_bob_sync, mut bob_rx) = start_sync(&bob, "interop").await?;

    let mut create = CreateRoomRequest::new();
    create.name = Some("interop".to_owned());
    let room = alice.create_room(create).await.context("create room")?;
    let room_id = room.room_id().to_owned();
    room.send(RoomMessageEventContent::text_plain("hello from the sdk"))
        .await
        .context("send")?;
    let seen = wait_for_room("alice", &mut alice_rx, &alice, &room_id).await?;
    let name = seen.name();
    if name.as_deref() != Some("interop") {
        bail!("room name: expected interop, got {name:?}");
    }
    let list_count = alice_sync
        .on_list("all", |list| {
            let count = list.maximum_number_of_rooms();
            async move { count }
        })
        .await
        .flatten();
    if list_count != Some(1) {
        bail!("list count: expected 1, got {list_count:?}");
    }
    println!("room list: ok (name {name:?}, 1 room)");

    room.enable_encryption()
        .await
        .context("enable encryption")?;
    wait_encrypted(&room).await?;
    room.invite_user_by_id(bob.user_id().context("bob's id")?)
        .await
        .context("invite bob")?;
    let invited = wait_for_room("bob", &mut bob_rx, &bob, &room_id).await?;
    invited.join().await.context("bob joins")?;
    let bob_room = bob.get_room(&room_id).context("bob's room")?;
    wait_encrypted(&bob_room).await?;
    let bob_name = bob_room.name();
    if bob_name.as_deref() != Some("interop") {
        bail!("bob's room name: expected interop, got {bob_name:?}");
    }
    println!("invite and join: ok");

    let sent = room
        .send(RoomMessageEventContent::text_plain("a secret from alice"))
        .await
        .context("alice sends an encrypted message")?;
    if sent.encryption_info.is_none() {
        bail!("alice's message was not encrypted");
    }
    let body = decrypted_body("bob", &bob_room, &sent.response.event_id).await?;
    if body != "a secret from alice" {
        bail!("bob decrypted {body:?}");
    }
    let reply = bob_room
        .send(RoomMessageEventContent::text_plain("a secret from bob"))
        .await
        .context("bob sends an encrypted message")?;
    let body = decrypted_body("alice", &room, &reply.response.event_id).await?;
    if body != "a secret from bob" {
        bail!("alice decrypted {body:?}");
    }
    println!("encrypted exchange: ok");
    println!("sliding sync interop: ok");
    Ok(())
}
