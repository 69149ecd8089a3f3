//! Unit tests of the storage layer: queues, positions and the pool, against a real
//! database in a fresh directory.

use super::*;

use super::test_support::{self, open_temp};

#[test]
fn a_destination_queue_keeps_its_newest_events_and_drops_old_ones() {
    let temp = open_temp();
    let db = &temp.1;
    let left = db
        .write_blocking(|txn| {
            for i in 0..10 {
                federation::enqueue(txn, "far", &format!("$e{i}"), 1_000 + i)?;
                federation::enqueue(txn, "near", &format!("$e{i}"), 1_000 + i)?;
            }
            // The newest 4 stay, and of those only what was queued from 1_007 on.
            let dropped = federation::trim_queue(txn, "far", 4, 1_007)?;
            assert_eq!(dropped, 7);
            let queued = |dest: &str| -> Result<Vec<String>> {
                let mut stmt =
                    txn.prepare("SELECT event_id FROM outbox WHERE destination = ?1 ORDER BY id")?;
                let rows = stmt.query_map([dest], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            };
            Ok((queued("far")?, queued("near")?.len()))
        })
        .expect("write");
    assert_eq!(left.0, ["$e7", "$e8", "$e9"]);
    assert_eq!(left.1, 10, "another destination's queue is untouched");
}

#[test]
fn the_address_book_is_bounded_and_redials_only_peers_with_a_reason() {
    let temp = open_temp();
    let row = |i: usize, discovered: &str| federation::PeerRow {
        peer_id: format!("peer{i}"),
        server_name: Some(format!("srv{i}")),
        addresses: vec![format!("/ip4/192.168.1.1/tcp/{i}")],
        discovered: discovered.to_owned(),
        last_seen_ts: i as i64,
    };
    let (kept, redial) = temp
        .1
        .write_blocking(move |txn| {
            // Two peers the app added, seen long ago, then 600 others met since.
            federation::upsert_peer(txn, &row(0, "static"))?;
            federation::upsert_peer(txn, &row(1, "exchange"))?;
            federation::upsert_peer(txn, &row(1, "static"))?;
            for i in 2..602 {
                federation::upsert_peer(txn, &row(i, "inbound"))?;
            }
            federation::enqueue(txn, "srv500", "$waiting", 1)?;
            let kept = federation::peers(txn)?;
            let redial = federation::peers_to_redial(txn, "local", 32)?;
            Ok((kept, redial))
        })
        .expect("write");
    assert_eq!(kept.len(), federation::MAX_REMEMBERED_PEERS + 2);
    let has = |rows: &[federation::PeerRow], id: &str| rows.iter().any(|r| r.peer_id == id);
    assert!(
        has(&kept, "peer0") && has(&kept, "peer1"),
        "added peers dropped"
    );
    assert!(!has(&kept, "peer2"), "the least recently seen stayed");
    assert!(has(&kept, "peer601"));
    let redial: Vec<&str> = redial.iter().map(|r| r.peer_id.as_str()).collect();
    assert_eq!(redial, ["peer500", "peer1", "peer0"]);
}

#[test]
fn only_commits_that_queue_federation_work_wake_the_outbox() {
    let temp = open_temp();
    let db = &temp.1;
    let rx = db.outbox_changes();
    db.write_blocking(|txn| {
        txn.execute(
            "INSERT INTO filters (user_id, filter_id, json) VALUES ('@a:x', 1, '{}')",
            [],
        )?;
        Ok(())
    })
    .expect("unrelated write");
    assert!(
        !rx.has_changed().expect("open"),
        "an unrelated write woke the outbox"
    );
    // A queued EDU that rolls back wakes nobody.
    let failed: Result<()> = db.write_blocking(|txn| {
        txn.execute(
            "INSERT INTO edu_outbox (destination, json) VALUES ('b', '{}')",
            [],
        )?;
        Err(Error::Task("rolled back".into()))
    });
    assert!(failed.is_err());
    assert!(
        !rx.has_changed().expect("open"),
        "a rolled-back write woke the outbox"
    );
    db.write_blocking(|txn| {
        txn.execute(
            "INSERT INTO edu_outbox (destination, json) VALUES ('b', '{}')",
            [],
        )?;
        Ok(())
    })
    .expect("queue");
    assert!(
        rx.has_changed().expect("open"),
        "a queued EDU did not wake the outbox"
    );
}

#[test]
fn a_write_that_panics_leaves_nothing_behind_and_later_writes_work() {
    let temp = open_temp();
    let db = temp.1.clone();
    let before = db.current_pos();
    let panicked = std::thread::spawn(move || {
        let _: Result<()> = db.write_blocking(|txn| {
            txn.next_pos();
            txn.execute(
                "INSERT INTO filters (user_id, filter_id, json) VALUES ('@a:x', 1, '{}')",
                [],
            )?;
            panic!("a bug in a write closure");
        });
    })
    .join();
    assert!(panicked.is_err(), "the closure panicked");
    let db = &temp.1;
    assert_eq!(db.current_pos(), before, "no position was published");
    let pos = db
        .write_blocking(|txn| {
            let pos = txn.next_pos();
            txn.execute(
                "INSERT INTO filters (user_id, filter_id, json) VALUES ('@a:x', 2, '{}')",
                [],
            )?;
            Ok(pos)
        })
        .expect("the writer works after a panic");
    assert_eq!(
        pos,
        before + 1,
        "the position the panicked write took is reused"
    );
    let ids: Vec<i64> = db
        .read_blocking(|c| {
            let mut stmt = c.prepare("SELECT filter_id FROM filters ORDER BY filter_id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .expect("read");
    assert_eq!(ids, vec![2], "the panicked write's row was rolled back");
}

#[tokio::test]
async fn a_panic_in_an_async_write_is_an_error_and_the_writer_lives_on() {
    let temp = open_temp();
    let db = &temp.1;
    let failed: Result<()> = db
        .write(|_| -> Result<()> { panic!("a bug in a write closure") })
        .await;
    assert!(failed.is_err());
    db.write(|txn| {
        txn.execute(
            "INSERT INTO filters (user_id, filter_id, json) VALUES ('@a:x', 3, '{}')",
            [],
        )?;
        Ok(())
    })
    .await
    .expect("the writer works after a panic");
}

#[test]
fn removing_tokens_by_cascade_moves_the_token_generation() {
    let temp = open_temp();
    let db = &temp.1;
    db.write_blocking(|txn| {
        txn.execute_batch(
            "INSERT INTO users (user_id, localpart, created_ts) VALUES ('@a:x', 'a', 0);
             INSERT INTO devices (user_id, device_id) VALUES ('@a:x', 'D');
             INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)
                 VALUES (x'00', '@a:x', 'D', 0);",
        )?;
        Ok(())
    })
    .expect("seed");
    let before = db.token_generation();
    // Deleting the user removes its device and token through cascades alone.
    db.write_blocking(|txn| {
        txn.execute("DELETE FROM users WHERE user_id = '@a:x'", [])?;
        Ok(())
    })
    .expect("delete");
    assert_ne!(db.token_generation(), before);
    let left: i64 = db
        .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM access_tokens", [], |r| r.get(0))?))
        .expect("count");
    assert_eq!(left, 0);
}

/// Stores a member event of `user` sent by `sender` with the given membership.
fn member(conn: &Connection, id: &str, sender: &str, user: &str, membership: &str) {
    test_support::store_event(
        conn,
        id,
        sender,
        user,
        serde_json::json!({ "membership": membership }),
        &[],
        1,
    );
}

#[test]
fn a_local_users_membership_drifts_when_state_holds_an_older_choice_of_their_own() {
    let temp = open_temp();
    let drift = temp
        .1
        .write_blocking(|txn| {
            accounts::insert_user(txn, "@u:x", "u", None, 0)?;
            accounts::insert_user(txn, "@k:x", "k", None, 0)?;
            // @u joined, left, joined again; state resolution kept the leave.
            member(txn, "$j1", "@u:x", "@u:x", "join");
            member(txn, "$l1", "@u:x", "@u:x", "leave");
            member(txn, "$j2", "@u:x", "@u:x", "join");
            events::set_membership(txn, "!r:x", "@u:x", "leave", "$l1", 1)?;
            // @k joined, then was kicked: someone else's choice, no drift.
            member(txn, "$jk", "@k:x", "@k:x", "join");
            member(txn, "$kick", "@u:x", "@k:x", "leave");
            events::set_membership(txn, "!r:x", "@k:x", "leave", "$kick", 2)?;
            // A remote user in the same position is not this node's to correct.
            member(txn, "$rj", "@r:y", "@r:y", "join");
            member(txn, "$rl", "@r:y", "@r:y", "leave");
            events::set_membership(txn, "!r:x", "@r:y", "join", "$rj", 3)?;
            let drift = events::own_membership_drift(txn, "!r:x")?;
            let latest = events::latest_own_membership(txn, "!r:x", "@u:x")?;
            assert_eq!(latest, Some(("$j2".to_owned(), "join".to_owned())));
            // Once the state holds the latest choice, nothing drifts.
            events::set_membership(txn, "!r:x", "@u:x", "join", "$j2", 4)?;
            assert!(events::own_membership_drift(txn, "!r:x")?.is_empty());
            Ok(drift)
        })
        .expect("write");
    assert_eq!(
        drift,
        [events::OwnMembershipDrift {
            user_id: "@u:x".into(),
            current: "leave".into(),
            latest_event: "$j2".into(),
            latest: "join".into(),
        }]
    );
}

#[test]
fn a_new_event_cites_the_local_users_forks_first_then_the_deepest() {
    let temp = open_temp();
    let cited = temp
        .1
        .write_blocking(|txn| {
            accounts::insert_user(txn, "@u:x", "u", None, 0)?;
            // Thirty forks of other servers' users, deeper than the local user's join.
            for i in 0..30 {
                let id = format!("$r{i:02}");
                member(txn, &id, "@r:y", "@r:y", "join");
                txn.execute(
                    "UPDATE events SET depth = ?1 WHERE event_id = ?2",
                    rusqlite::params![100 + i, id],
                )?;
                events::advance_extremities(txn, "!r:x", &id, &[])?;
            }
            member(txn, "$ours", "@u:x", "@u:x", "join");
            events::advance_extremities(txn, "!r:x", "$ours", &[])?;
            events::extremities_to_cite(txn, "!r:x", 20)
        })
        .expect("write");
    assert_eq!(cited.len(), 20);
    assert_eq!(cited[0].0, "$ours", "the local user's join is cited");
    assert_eq!(cited[1], ("$r29".to_owned(), 129), "then the deepest");
    assert_eq!(cited[19].0, "$r11");
}
