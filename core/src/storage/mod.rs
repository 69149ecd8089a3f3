//! SQLite storage: one database file, one writer, a small pool of readers.
//!
//! All SQL of the node lives below this module. Callers hand a closure to [`Db::read`] or
//! [`Db::write`]; it runs on tokio's blocking pool so the async runtime never waits on disk.
//! The database runs in WAL mode, so readers never block the writer and a transaction that
//! committed survives a crash of the process.

pub mod accounts;
pub mod aliases;
pub mod catchup;
pub mod events;
pub mod federation;
pub mod federation_e2ee;
pub mod keys;
pub mod media;
pub mod presence;
pub mod push;
pub mod pushers;
pub mod relations;
pub mod reports;
pub mod search;
pub mod sliding_sync;
pub mod staged;
pub mod state;
pub mod to_device;
pub mod user_data;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Transaction, hooks::Action};
use rusqlite_migration::{M, Migrations};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "neurite.db";

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/001_initial.sql")),
    M::up(include_str!("migrations/002_e2ee.sql")),
    M::up(include_str!("migrations/003_media.sql")),
    M::up(include_str!("migrations/004_federation.sql")),
    M::up(include_str!("migrations/005_federation_e2ee.sql")),
    M::up(include_str!("migrations/006_relations.sql")),
    M::up(include_str!("migrations/007_push.sql")),
    M::up(include_str!("migrations/008_client_extras.sql")),
    M::up(include_str!("migrations/009_sliding_sync.sql")),
    M::up(include_str!("migrations/010_remote_presence.sql")),
    M::up(include_str!("migrations/011_pushers.sql")),
    M::up(include_str!("migrations/012_search_batches.sql")),
    M::up(include_str!("migrations/013_leaner_event_writes.sql")),
    M::up(include_str!("migrations/014_staged_events.sql")),
    M::up(include_str!("migrations/015_invite_outbox.sql")),
    M::up(include_str!("migrations/016_event_indexes.sql")),
];

/// How many idle reader connections are kept open.
const MAX_IDLE_READERS: usize = 4;

/// Handle to the node's database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // Readers close before the writer (fields drop in order): the last connection to close
    // checkpoints the WAL into the database and removes it, which a read-only one cannot.
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Writer>,
    committed: AtomicI64,
    touched: Arc<Touched>,
    /// Bumped after every commit that queued something for another server.
    outbox: watch::Sender<u64>,
    /// Bumped after every commit that removed or changed an access token or a device.
    tokens: AtomicU64,
    /// Never sent on: dropped with the last handle, after the connections above are closed
    /// (fields drop in order, so it stays last).
    open: watch::Sender<()>,
}

/// What the transaction in progress on the writer changed, as seen by SQLite's update hook.
/// Only the tables someone outside the transaction waits on are tracked.
#[derive(Default)]
struct Touched {
    outbox: AtomicBool,
    tokens: AtomicBool,
}

impl Touched {
    fn record(&self, action: Action, table: &str) {
        match (table, action) {
            ("outbox" | "edu_outbox" | "invite_outbox", Action::SQLITE_INSERT) => {
                self.outbox.store(true, Ordering::Relaxed)
            }
            // Inserting a token invalidates no other; deleting a device deletes its tokens
            // through a cascade, so devices count too.
            ("access_tokens" | "devices", Action::SQLITE_DELETE | Action::SQLITE_UPDATE) => {
                self.tokens.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
    }
}

struct Writer {
    conn: Connection,
    pos: i64,
}

/// A write transaction. Hands out stream positions that become visible when it commits.
pub struct WriteTxn<'a> {
    txn: Transaction<'a>,
    pos: i64,
    allocated: bool,
}

impl<'a> WriteTxn<'a> {
    /// Allocates the next stream position.
    pub fn next_pos(&mut self) -> i64 {
        self.pos += 1;
        self.allocated = true;
        self.pos
    }

    /// The underlying SQLite transaction.
    pub fn conn(&self) -> &Connection {
        &self.txn
    }
}

impl std::ops::Deref for WriteTxn<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.txn
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = open_connection(path, false)?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        let pos = conn.query_row("SELECT pos FROM stream_position WHERE id = 1", [], |r| {
            r.get(0)
        })?;
        let touched = Arc::new(Touched::default());
        let hook = touched.clone();
        conn.update_hook(Some(
            move |action: Action, _db: &str, table: &str, _row: i64| hook.record(action, table),
        ))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(Writer { conn, pos }),
                readers: Mutex::new(Vec::new()),
                committed: AtomicI64::new(pos),
                touched,
                outbox: watch::channel(0).0,
                tokens: AtomicU64::new(0),
                open: watch::channel(()).0,
            }),
        })
    }

    /// Completes once the database is closed: every handle (and so every connection) is
    /// gone. Holds no handle itself.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut open = self.inner.open.subscribe();
        async move { while open.changed().await.is_ok() {} }
    }

    /// Runs `f` in a write transaction on the blocking pool and commits it.
    /// Returns `f`'s result; on error nothing of the transaction is kept.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write_blocking(f)).await?
    }

    /// Runs `f` with a reader connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.read_blocking(f)).await?
    }

    /// Runs `f` in a write transaction on the calling thread (for use outside async code).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T>) -> Result<T> {
        self.inner.write_blocking(f)
    }

    /// Runs `f` with a reader connection on the calling thread.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.inner.read_blocking(f)
    }

    /// The highest stream position committed so far.
    pub fn current_pos(&self) -> i64 {
        self.inner.committed.load(Ordering::Acquire)
    }

    /// A receiver that sees every commit, after this call, that queued events or EDUs for
    /// another server.
    pub fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.inner.outbox.subscribe()
    }

    /// A counter that changes after every commit that removed or changed an access token or
    /// a device. Read it before looking a token up: an answer is still good while the
    /// counter has not moved.
    pub fn token_generation(&self) -> u64 {
        self.inner.tokens.load(Ordering::Acquire)
    }
}

impl Inner {
    fn write_blocking<T>(&self, f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T>) -> Result<T> {
        // A closure that panicked left the lock poisoned. Its transaction was rolled back as
        // it unwound (rusqlite rolls back a dropped transaction) and the stream position only
        // moves on commit, so the writer is sound: take it back, and make sure.
        let mut guard = self.writer.lock().unwrap_or_else(|poisoned| {
            self.writer.clear_poison();
            poisoned.into_inner()
        });
        let writer = &mut *guard;
        if !writer.conn.is_autocommit() {
            tracing::warn!("a write transaction was left open; rolling it back");
            writer.conn.execute_batch("ROLLBACK")?;
        }
        let start_pos = writer.pos;
        self.touched.outbox.store(false, Ordering::Relaxed);
        self.touched.tokens.store(false, Ordering::Relaxed);
        let txn = writer
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut wtxn = WriteTxn {
            txn,
            pos: start_pos,
            allocated: false,
        };
        let result = f(&mut wtxn).and_then(|value| {
            if wtxn.allocated {
                wtxn.txn.execute(
                    "UPDATE stream_position SET pos = ?1 WHERE id = 1",
                    [wtxn.pos],
                )?;
            }
            Ok(value)
        });
        let WriteTxn {
            txn, pos: end_pos, ..
        } = wtxn;
        let outcome = match result {
            Ok(value) => txn.commit().map(|()| value).map_err(Error::from),
            Err(e) => {
                drop(txn);
                Err(e)
            }
        };
        match outcome {
            Ok(value) => {
                writer.pos = end_pos;
                self.committed.store(end_pos, Ordering::Release);
                if self.touched.tokens.swap(false, Ordering::Relaxed) {
                    self.tokens.fetch_add(1, Ordering::AcqRel);
                }
                if self.touched.outbox.swap(false, Ordering::Relaxed) {
                    self.outbox.send_modify(|v| *v = v.wrapping_add(1));
                }
                Ok(value)
            }
            // Positions handed out by a failed transaction were never visible; they are reused.
            Err(e) => Err(e),
        }
    }

    fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path, true)?,
        };
        let result = f(&conn);
        if let Ok(mut readers) = self.readers.lock()
            && readers.len() < MAX_IDLE_READERS
        {
            readers.push(conn);
        }
        result
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    if !read_only {
        // WAL: readers never block the writer. NORMAL sync: a committed transaction survives a
        // crash of the process (kill -9); only a power loss may drop the last few commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -2048)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A database in a fresh directory, for unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    use super::{DB_FILE, Db};

    /// A database in a fresh directory, removed when dropped.
    pub(crate) struct TempDb(PathBuf, pub(crate) Db);

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Stores a bare event of room `!r:x` (enough for the graph walks and membership reads).
    pub(crate) fn store_event(
        conn: &rusqlite::Connection,
        id: &str,
        sender: &str,
        state_key: &str,
        content: serde_json::Value,
        auth: &[String],
        depth: i64,
    ) {
        let json = serde_json::json!({
            "room_id": "!r:x", "sender": sender, "origin_server_ts": 0,
            "type": "m.room.member", "state_key": state_key, "content": content,
            "auth_events": auth, "prev_events": [], "depth": depth,
        })
        .to_string();
        let row = super::events::NewEvent {
            event_id: id,
            room_id: "!r:x",
            stream: None,
            event_type: "m.room.member",
            state_key: Some(state_key),
            sender,
            origin_server_ts: 0,
            depth,
            json: &json,
            state_before: None,
            state_after: None,
            prev_state: None,
            relates_to: None,
            rel_type: None,
            txn_device: None,
            txn_id: None,
            prev_events: &[],
            outlier: false,
            rejected: false,
        };
        super::events::insert_event(conn, &row).expect("insert");
    }

    pub(crate) fn open_temp() -> TempDb {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).expect("random");
        let dir = std::env::temp_dir().join(format!(
            "neurite-db-{}",
            data_encoding::HEXLOWER.encode(&name)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = Db::open(&dir.join(DB_FILE)).expect("open");
        TempDb(dir, db)
    }
}

#[cfg(test)]
mod tests {
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
                    let mut stmt = txn.prepare(
                        "SELECT event_id FROM outbox WHERE destination = ?1 ORDER BY id",
                    )?;
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
            .read_blocking(|c| {
                Ok(c.query_row("SELECT count(*) FROM access_tokens", [], |r| r.get(0))?)
            })
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
}
