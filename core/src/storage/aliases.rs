//! Room aliases.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Creates an alias; returns false if it exists already.
pub fn insert_alias(conn: &Connection, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO room_aliases (alias, room_id, creator) VALUES (?1, ?2, ?3)",
        params![alias, room_id, creator],
    )?;
    Ok(n == 1)
}

/// Resolves an alias to `(room_id, creator)`.
pub fn get_alias(conn: &Connection, alias: &str) -> Result<Option<(String, String)>> {
    Ok(conn
        .prepare_cached("SELECT room_id, creator FROM room_aliases WHERE alias = ?1")?
        .query_row([alias], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Deletes an alias.
pub fn delete_alias(conn: &Connection, alias: &str) -> Result<()> {
    conn.execute("DELETE FROM room_aliases WHERE alias = ?1", [alias])?;
    Ok(())
}

/// Every local alias of a room.
pub fn aliases_of_room(conn: &Connection, room_id: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias")?;
    let rows = stmt.query_map([room_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Points every alias of room `from` at room `to`.
pub fn move_aliases(conn: &Connection, from: &str, to: &str) -> Result<()> {
    conn.prepare_cached("UPDATE room_aliases SET room_id = ?2 WHERE room_id = ?1")?
        .execute(rusqlite::params![from, to])?;
    Ok(())
}
