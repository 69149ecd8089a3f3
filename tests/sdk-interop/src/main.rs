//! matrix-rust-sdk against a running Neurite node, the way Element X drives it (see README.md).
//!
//! Two users register, set display names, and each runs matrix-sdk-ui's `SyncService` (a
//! `RoomListService` connection plus the encryption connection for to-device messages and
//! device lists). Every check reads the room list the way Element X does: the rooms
//! `RoomListService` hands out and their cached display names, membership and encryption.
//!
//! Alice creates a room named `interop` and invites Bob: both lists show it by its name, Bob's
//! as an invite until he joins. Alice then opens a direct chat with Bob (`Client::create_dm`,
//! encrypted from its creation): her list names it after Bob's display name and knows it is
//! encrypted; Bob's lists it as an invite named after Alice, then, once joined, as an encrypted
//! room. Last, both exchange a message in the direct chat through matrix-sdk-ui timelines, and
//! each side must decrypt the other's.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use matrix_sdk::{
    Client, EncryptionState, Room, RoomState,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::{
            account::register::v3::Request as RegisterRequest,
            room::create_room::v3::Request as CreateRoomRequest, uiaa,
        },
        events::room::message::RoomMessageEventContent,
    },
    sliding_sync::Version,
};
use matrix_sdk_ui::{
    room_list_service::filters::new_filter_non_left,
    sync_service::SyncService,
    timeline::{RoomExt, Timeline},
};
use tokio::{sync::watch, time::Instant};

const PASSWORD: &str = "a long password for the interop check";
/// The longest any single expectation may take to come true.
const WAIT: Duration = Duration::from_secs(30);
/// How soon after its creation a direct chat must show with its name and encryption (the
/// creation wakes the room list's long poll at once; this leaves room for a busy machine).
const SOON: Duration = Duration::from_secs(10);
const ALICE_NAME: &str = "Alice Interop";
const BOB_NAME: &str = "Bob Interop";

/// Registers a user on a client with its own SQLite stores under `dir`, as Element X keeps them.
async fn register(url: &str, dir: &Path, name: &str, display_name: &str) -> anyhow::Result<Client> {
    let client = Client::builder()
        .homeserver_url(url)
        .sqlite_store(dir.join(name), None)
        .build()
        .await
        .with_context(|| format!("{name}'s client"))?;
    let mut register = RegisterRequest::new();
    register.username = Some(format!("{name}{}", std::process::id()));
    register.password = Some(PASSWORD.to_owned());
    register.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client
        .matrix_auth()
        .register(register)
        .await
        .with_context(|| format!("register {name}"))?;
    // The SDK would pick native sliding sync from /versions; be explicit so that a missing
    // advertisement does not hide a protocol problem.
    client.set_sliding_sync_version(Version::Native);
    client
        .account()
        .set_display_name(Some(display_name))
        .await
        .with_context(|| format!("{name} sets a display name"))?;
    Ok(client)
}

/// One user's client with its sync running and its room list as Element X shows it.
struct User {
    who: &'static str,
    client: Client,
    sync: SyncService,
    /// The non-left rooms of `RoomListService`'s list, in the list's order.
    rooms: watch::Receiver<Vec<Room>>,
}

impl User {
    async fn start(who: &'static str, client: Client) -> anyhow::Result<Self> {
        let sync = SyncService::builder(client.clone())
            .build()
            .await
            .with_context(|| format!("{who}: build the sync service"))?;
        sync.start().await;
        let room_list = sync.room_list_service();
        let all_rooms = room_list
            .all_rooms()
            .await
            .with_context(|| format!("{who}: the all-rooms list"))?;
        let (tx, rooms) = watch::channel(Vec::new());
        // The list's stream borrows the list: both live in a task that mirrors the list's
        // entries into the watch channel.
        tokio::spawn(async move {
            let (stream, controller) = all_rooms.entries_with_dynamic_adapters(100);
            controller.set_filter(Box::new(new_filter_non_left()));
            futures_util::pin_mut!(stream);
            let mut entries = matrix_sdk_ui::eyeball_im::Vector::new();
            while let Some(diffs) = stream.next().await {
                for diff in diffs {
                    diff.apply(&mut entries);
                }
                let rooms = entries.iter().map(|r| (**r).clone()).collect();
                if tx.send(rooms).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            who,
            client,
            sync,
            rooms,
        })
    }

    /// Waits until the room list holds `room_id` and `check` accepts it. `what` says what was
    /// expected, for the failure message.
    async fn wait_room(
        &mut self,
        room_id: &RoomId,
        what: &str,
        check: impl Fn(&Room) -> bool,
    ) -> anyhow::Result<Room> {
        let deadline = Instant::now() + WAIT;
        // Room info changes that leave the list's order alone (the encryption state) reach the
        // room's own info subscriber rather than the list.
        let mut info = None;
        loop {
            let found = self
                .rooms
                .borrow_and_update()
                .iter()
                .find(|r| r.room_id() == room_id)
                .cloned();
            if let Some(room) = &found {
                if check(room) {
                    return Ok(room.clone());
                }
                if info.is_none() {
                    info = Some(room.subscribe_info());
                }
            }
            let woken = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    changed = self.rooms.changed() => changed.is_ok(),
                    _ = async {
                        match info.as_mut() {
                            Some(sub) => { sub.next().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => true,
                }
            })
            .await;
            match woken {
                Ok(true) => {}
                Ok(false) => bail!("{}: the room list stopped", self.who),
                Err(_) => bail!(
                    "{}: expected {what} within {WAIT:?}; the room list shows {}",
                    self.who,
                    describe(found.as_ref())
                ),
            }
        }
    }
}

/// What the room list shows of a room, for failure messages.
fn describe(room: Option<&Room>) -> String {
    match room {
        None => "no such room".to_owned(),
        Some(room) => format!(
            "it with name {:?}, state {:?}, encryption {:?}, direct targets {}",
            room.cached_display_name().map(|n| n.to_string()),
            room.state(),
            room.encryption_state(),
            room.direct_targets_length()
        ),
    }
}

fn named(room: &Room, name: &str) -> bool {
    room.cached_display_name()
        .is_some_and(|n| n.to_string() == name)
}

/// Waits until `timeline` shows a message with `body` from the server (not a local echo) and
/// returns whether it arrived encrypted.
async fn wait_message(who: &str, timeline: &Timeline, body: &str) -> anyhow::Result<bool> {
    let deadline = Instant::now() + WAIT;
    let (_, mut updates) = timeline.subscribe().await;
    loop {
        let mut undecrypted = 0;
        for item in timeline.items().await {
            let Some(event) = item.as_event() else {
                continue;
            };
            if event.is_local_echo() {
                continue;
            }
            if event.content().as_unable_to_decrypt().is_some() {
                undecrypted += 1;
            }
            if event
                .content()
                .as_message()
                .is_some_and(|m| m.body() == body)
            {
                return Ok(event.encryption_info().is_some());
            }
        }
        match tokio::time::timeout_at(deadline, updates.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("{who}: the timeline stopped"),
            Err(_) => bail!(
                "{who}: the message {body:?} did not show within {WAIT:?} \
                 ({undecrypted} undecryptable events in the timeline)"
            ),
        }
    }
}

async fn run(url: &str, dir: &Path) -> anyhow::Result<()> {
    let mut alice = User::start("alice", register(url, dir, "alice", ALICE_NAME).await?).await?;
    let mut bob = User::start("bob", register(url, dir, "bob", BOB_NAME).await?).await?;
    let bob_id = bob.client.user_id().context("bob's id")?.to_owned();

    // A named room, with an invite.
    let mut create = CreateRoomRequest::new();
    create.name = Some("interop".to_owned());
    create.invite = vec![bob_id.clone()];
    let room = alice
        .client
        .create_room(create)
        .await
        .context("create room")?;
    let room_id: OwnedRoomId = room.room_id().to_owned();
    room.send(RoomMessageEventContent::text_plain("hello from the sdk"))
        .await
        .context("send")?;
    alice
        .wait_room(&room_id, "the room named interop", |r| named(r, "interop"))
        .await?;
    let invite = bob
        .wait_room(&room_id, "an invite named interop", |r| {
            r.state() == RoomState::Invited && named(r, "interop")
        })
        .await?;
    println!("named room: ok (alice's list names it, bob's lists the invite by its name)");
    invite.join().await.context("bob joins the named room")?;
    bob.wait_room(&room_id, "the joined room named interop", |r| {
        r.state() == RoomState::Joined && named(r, "interop")
    })
    .await?;
    println!("join: ok");

    // A direct chat, encrypted from its creation.
    let dm = alice
        .client
        .create_dm(&bob_id)
        .await
        .context("create the direct chat")?;
    let dm_id = dm.room_id().to_owned();
    let created = Instant::now();
    let dm = alice
        .wait_room(
            &dm_id,
            &format!("the direct chat named {BOB_NAME:?} and encrypted"),
            |r| {
                named(r, BOB_NAME)
                    && matches!(r.encryption_state(), EncryptionState::Encrypted)
                    && r.direct_targets_length() == 1
            },
        )
        .await?;
    let took = created.elapsed();
    if took > SOON {
        bail!(
            "alice: the direct chat took {took:?} to be named and encrypted (more than {SOON:?})"
        );
    }
    println!(
        "direct chat, alice: ok (named {BOB_NAME:?} and encrypted {} ms after creation)",
        took.as_millis()
    );
    let dm_invite = bob
        .wait_room(
            &dm_id,
            &format!("an invite to the direct chat named {ALICE_NAME:?}"),
            |r| r.state() == RoomState::Invited && named(r, ALICE_NAME),
        )
        .await?;
    dm_invite
        .join()
        .await
        .context("bob joins the direct chat")?;
    let bob_dm = bob
        .wait_room(
            &dm_id,
            &format!("the joined direct chat named {ALICE_NAME:?} and encrypted"),
            |r| {
                r.state() == RoomState::Joined
                    && named(r, ALICE_NAME)
                    && matches!(r.encryption_state(), EncryptionState::Encrypted)
            },
        )
        .await?;
    println!("direct chat, bob: ok (invite, then joined, named {ALICE_NAME:?}, encrypted)");

    // The encrypted exchange, through the timelines Element X shows.
    let alice_timeline = dm.timeline().await.context("alice's timeline")?;
    let bob_timeline = bob_dm.timeline().await.context("bob's timeline")?;
    alice_timeline
        .send(RoomMessageEventContent::text_plain("a secret from alice").into())
        .await
        .context("alice sends")?;
    if !wait_message("bob", &bob_timeline, "a secret from alice").await? {
        bail!("bob: alice's message arrived unencrypted");
    }
    bob_timeline
        .send(RoomMessageEventContent::text_plain("a secret from bob").into())
        .await
        .context("bob sends")?;
    if !wait_message("alice", &alice_timeline, "a secret from bob").await? {
        bail!("alice: bob's message arrived unencrypted");
    }
    println!("encrypted exchange: ok");

    alice.sync.stop().await;
    bob.sync.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8008".to_owned());
    let dir = std::env::temp_dir().join(format!("neurite-sdk-interop-{}", std::process::id()));
    let result = run(&url, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!("sliding sync interop: ok");
    Ok(())
}
