//! Micro-benchmarks of the hot paths: event hashing and signing, the authorization check,
//! /sync response assembly and canonical JSON.
//!
//! Run with `cargo bench -p neurite-core`. The state they work on (an account, rooms and
//! messages) is made through the services a request handler calls, on a real SQLite file in
//! a temporary directory; no HTTP is involved.

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use neurite_core::{
    Config, PasswordCost,
    filter::Filter,
    rooms::{
        EventTemplate,
        create::CreateRoomRequest,
        graph::{RoomCtx, build_event, check_auth},
    },
    services::Services,
    sync::SyncRequest,
};
use ruma::{CanonicalJsonObject, OwnedUserId};
use serde_json::json;

struct Fixture {
    services: Arc<Services>,
    user: OwnedUserId,
    rooms: Vec<String>,
    runtime: tokio::runtime::Runtime,
    _dir: TempDir,
}

/// A directory removed on drop (no extra dependency for this).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One user in `rooms` rooms with `messages` messages each.
fn fixture(rooms: usize, messages: usize) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "neurite-bench-{}-{rooms}-{messages}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::new(&dir);
    config.password_cost = PasswordCost::TESTING;
    let services = Services::open(config).expect("open services");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (user, room_ids) = runtime.block_on(async {
        let user = services
            .accounts
            .register("bench", Some("bench-password"))
            .await
            .expect("register");
        let mut ids = Vec::new();
        for r in 0..rooms {
            let req: CreateRoomRequest = serde_json::from_value(
                json!({"preset": "private_chat", "name": format!("room {r}")}),
            )
            .expect("request");
            let room = services
                .rooms
                .create_room(&user, req)
                .await
                .expect("create room");
            for m in 0..messages {
                let tpl = EventTemplate::message(
                    "m.room.message",
                    json!({"msgtype": "m.text", "body": format!("message {m} in room {r}")}),
                );
                services
                    .rooms
                    .send(&user, room.as_str(), tpl, None)
                    .await
                    .expect("send");
            }
            ids.push(room.to_string());
        }
        (user, ids)
    });
    Fixture {
        services,
        user,
        rooms: room_ids,
        runtime,
        _dir: TempDir(dir),
    }
}

fn message() -> EventTemplate {
    EventTemplate::message(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "Hello, this is a message of ordinary length."}),
    )
}

fn events(c: &mut Criterion) {
    let f = fixture(1, 10);
    let ctx = f
        .services
        .db
        .read_blocking(|conn| RoomCtx::load(conn, &f.rooms[0]))
        .expect("room ctx");
    let identity = &f.services.identity;
    c.bench_function(
        "event: build, content-hash, sign and reference-hash a message",
        |b| {
            b.iter(|| {
                build_event(
                    &ctx,
                    identity,
                    &f.user,
                    black_box(&message()),
                    1_700_000_000_000,
                )
                .expect("build")
            })
        },
    );
    let (pdu, obj) =
        build_event(&ctx, identity, &f.user, &message(), 1_700_000_000_000).expect("build");
    c.bench_function("event: reference hash only", |b| {
        b.iter(|| ruma::signatures::reference_hash(black_box(&obj), &ctx.rules).expect("hash"))
    });
    c.bench_function(
        "auth: check a message against the room state (SQLite fetches)",
        |b| {
            f.services
                .db
                .read_blocking(|conn| {
                    b.iter(|| check_auth(conn, &ctx, black_box(&pdu)).expect("allowed"));
                    Ok(())
                })
                .expect("read");
        },
    );

    let text = serde_json::to_string(&obj).expect("serialise");
    c.bench_function("canonical JSON: parse a signed event", |b| {
        b.iter(|| serde_json::from_str::<CanonicalJsonObject>(black_box(&text)).expect("parse"))
    });
    c.bench_function("canonical JSON: serialise a signed event", |b| {
        b.iter(|| serde_json::to_string(black_box(&obj)).expect("serialise"))
    });
    let value: serde_json::Value = serde_json::from_str(&text).expect("value");
    c.bench_function("canonical JSON: convert a serde_json::Value", |b| {
        b.iter(|| ruma::CanonicalJsonValue::try_from(black_box(value.clone())).expect("canonical"))
    });
}

fn sync(c: &mut Criterion) {
    let f = fixture(20, 20);
    let req = |since: Option<String>| SyncRequest {
        since,
        full_state: false,
        timeout: Duration::ZERO,
        filter: Filter::default(),
    };
    let sync = &f.services.sync;
    let user = f.user.as_str();
    let first = f
        .runtime
        .block_on(sync.sync(user, "BENCHDEVICE", req(None)))
        .expect("sync");
    assert_eq!(
        first["rooms"]["join"].as_object().map(|m| m.len()),
        Some(20)
    );
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let mut group = c.benchmark_group("sync");
    group.sample_size(20);
    group.bench_function("initial sync, 20 rooms of 20 messages", |b| {
        b.iter(|| {
            f.runtime
                .block_on(sync.sync(user, "BENCHDEVICE", req(None)))
                .expect("sync")
        })
    });
    group.bench_function("incremental sync with nothing new", |b| {
        b.iter(|| {
            f.runtime
                .block_on(sync.sync(user, "BENCHDEVICE", req(Some(next.clone()))))
                .expect("sync")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = events, sync
}
criterion_main!(benches);
