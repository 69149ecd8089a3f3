//! matrix-rust-sdk's sliding sync against a running Neurite node (see README.md).

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, pin_mut};
use matrix_sdk::{
    Client, SlidingSyncList, SlidingSyncMode,
    ruma::{
        api::client::{
            account::register::v3::Request as RegisterRequest, room::create_room::v3::Request as CreateRoomRequest,
            uiaa,
        },
        events::{StateEventType, room::message::RoomMessageEventContent},
    },
    sliding_sync::Version,
};

const PASSWORD: &str = "a long password for the interop check";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8008".to_owned());
    let client = Client::builder().homeserver_url(&url).build().await?;

    let mut register = RegisterRequest::new();
    register.username = Some(format!("sdk{}", std::process::id()));
    register.password = Some(PASSWORD.to_owned());
    register.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client
        .matrix_auth()
        .register(register)
        .await
        .context("register")?;
    // The node does not advertise the feature yet: tell the client to use it anyway.
    client.set_sliding_sync_version(Version::Native);

    let mut create = CreateRoomRequest::new();
    create.name = Some("interop".to_owned());
    let room = client.create_room(create).await.context("create room")?;
    room.send(RoomMessageEventContent::text_plain("hello from the sdk"))
        .await
        .context("send")?;

    let sliding = client
        .sliding_sync("interop")?
        .add_list(
            SlidingSyncList::builder("all")
                .sync_mode(SlidingSyncMode::new_selective().add_range(0..=19))
                .timeline_limit(5)
                .required_state(vec![
                    (StateEventType::RoomName, String::new()),
                    (StateEventType::RoomMember, "$LAZY".to_owned()),
                    (StateEventType::RoomMember, "$ME".to_owned()),
                ]),
        )
        .with_to_device_extension(Default::default())
        .with_e2ee_extension(Default::default())
        .build()
        .await
        .context("build sliding sync")?;

    let stream = sliding.sync();
    pin_mut!(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .context("no sliding sync update in time")?;
        let Some(update) = next else {
            bail!("the sliding sync stream ended");
        };
        let summary = update.context("sliding sync request failed")?;
        if summary.rooms.iter().any(|r| r == room.room_id()) {
            break;
        }
    }

    let seen = client
        .get_room(room.room_id())
        .context("the room is not known to the client")?;
    let name = seen.name();
    if name.as_deref() != Some("interop") {
        bail!("room name: expected interop, got {name:?}");
    }
    let list_count = sliding
        .on_list("all", |list| {
            let count = list.maximum_number_of_rooms();
            async move { count }
        })
        .await
        .flatten();
    if list_count != Some(1) {
        bail!("list count: expected 1, got {list_count:?}");
    }
    println!("sliding sync interop: ok");
    Ok(())
}
