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

    /// Overwrites a stored event's JSON with text that does not parse, as a damaged file would.
    pub(crate) fn damage_event_json(
        conn: &rusqlite::Connection,
        event_id: &str,
    ) -> rusqlite::Result<()> {
        conn.execute(
            "UPDATE events SET json = '{' WHERE event_id = ?1",
            [event_id],
        )
        .map(drop)
    }

    /// How many state groups are stored.
    pub(crate) fn state_group_count(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT count(*) FROM state_groups", [], |row| row.get(0))
    }
}

#[cfg(test)]
mod tests;
