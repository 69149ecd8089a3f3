//! The media repository's storage: metadata rows in SQLite, and the bytes as content-addressed
//! files in the data directory.
//!
//! A blob is named by the SHA-256 of its bytes (`media/blobs/ab/ab…`), so the same bytes
//! uploaded twice are stored once. Blobs are written to `media/tmp/` first, flushed to disk
//! and then renamed into place, so a blob file is either absent or complete. File work never
//! happens inside a database transaction: a blob is made durable first, then a short write
//! transaction records the row that points at it.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Folder of the media repository inside the data directory.
pub const MEDIA_DIR: &str = "media";

/// A blob: the SHA-256 (lowercase hex) and length of some stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// SHA-256 of the bytes, lowercase hex (64 characters).
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

// ---------------------------------------------------------------- files

/// The content-addressed files under `data_dir/media`.
#[derive(Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the media folders under `data_dir` and removes temporary files left by
    /// uploads that were interrupted (a crash, a killed app).
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join(MEDIA_DIR);
        let store = Self {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
        };
        std::fs::create_dir_all(&store.blobs)?;
        std::fs::create_dir_all(&store.tmp)?;
        for entry in std::fs::read_dir(&store.tmp)? {
            let path = entry?.path();
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove stale temporary media file");
            }
        }
        Ok(store)
    }

    /// Where the blob with this digest lives, or `None` if `sha256` is not a SHA-256 hex digest
    /// (so no stored value can point outside the blob folder).
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| self.blobs.join(&sha256[..2]).join(sha256))
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, sha256: &str) -> Result<File> {
        let path = self.path(sha256).ok_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "stored media digest is malformed",
            ))
        })?;
        Ok(File::open(path)?)
    }

    /// Starts writing a new blob into a temporary file.
    pub fn writer(&self) -> Result<BlobWriter> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
        let tmp_path = self
            .tmp
            .join(data_encoding::HEXLOWER.encode(&name) + ".part");
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        Ok(BlobWriter {
            file: Some(file),
            tmp_path,
            blobs: self.blobs.clone(),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores `bytes` as a blob (blocking).
    pub fn put(&self, bytes: &[u8]) -> Result<Blob> {
        let mut writer = self.writer()?;
        writer.write(bytes)?;
        writer.finish()
    }
}

/// A blob being written. Dropping it before [`BlobWriter::finish`] removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp_path: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Appends bytes (blocking).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Io(io::Error::other("blob writer already finished")))?;
        file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the bytes to disk and moves them to their content address (blocking). If a blob
    /// with the same digest exists already, the new copy is discarded: the bytes are the same.
    pub fn finish(mut self) -> Result<Blob> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Io(io::Error::other("blob writer already finished")))?;
        file.sync_all()?;
        drop(file);
        let sha256 = data_encoding::HEXLOWER.encode(&self.hasher.clone().finalize());
        let dir = self.blobs.join(&sha256[..2]);
        let path = dir.join(&sha256);
        if path.exists() {
            std::fs::remove_file(&self.tmp_path)?;
        } else {
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(&self.tmp_path, &path)?;
            // Make the rename itself durable before a database row points at the blob.
            File::open(&dir)?.sync_all()?;
        }
        Ok(Blob {
            sha256,
            size: self.size,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

// ---------------------------------------------------------------- rows

/// A row of the `media` table.
#[derive(Debug, Clone)]
pub struct MediaRow {
    /// The user who uploaded (or created) it.
    pub uploader: String,
    /// The content, once uploaded.
    pub blob: Option<Blob>,
    /// The `Content-Type` given at upload.
    pub content_type: Option<String>,
    /// The file name given at upload.
    pub filename: Option<String>,
    /// For a pending asynchronous upload: when it stops being valid.
    pub unused_expires_ts: Option<i64>,
}

/// What an upload records.
#[derive(Debug, Clone)]
pub struct NewContent<'a> {
    /// The stored bytes.
    pub blob: &'a Blob,
    /// The `Content-Type` given at upload.
    pub content_type: &'a str,
    /// The file name given at upload.
    pub filename: Option<&'a str>,
    /// When.
    pub ts: i64,
}

/// Records uploaded media.
pub fn insert_media(
    conn: &Connection,
    origin: &str,
    media_id: &str,
    uploader: &str,
    content: &NewContent<'_>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO media (origin, media_id, uploader, created_ts, sha256, size, content_type, filename, uploaded_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?4)",
    )?
    .execute(params![
        origin,
        media_id,
        uploader,
        content.ts,
        content.blob.sha256,
        content.blob.size as i64,
        content.content_type,
        content.filename,
    ])?;
    Ok(())
}

/// Records a media id whose content will be uploaded later (`POST /create`).
pub fn insert_pending(
    conn: &Connection,
    origin: &str,
    media_id: &str,
    uploader: &str,
    now: i64,
    expires_ts: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO media (origin, media_id, uploader, created_ts, unused_expires_ts)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![origin, media_id, uploader, now, expires_ts])?;
    Ok(())
}

/// Forgets pending uploads that expired before `now`; returns how many.
pub fn delete_expired_pending(conn: &Connection, now: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM media WHERE sha256 IS NULL AND unused_expires_ts IS NOT NULL AND unused_expires_ts < ?1",
        )?
        .execute([now])?)
}

/// How many pending (created, not yet uploaded, unexpired) uploads a user has.
pub fn count_pending(conn: &Connection, uploader: &str, now: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM media WHERE uploader = ?1 AND sha256 IS NULL AND unused_expires_ts >= ?2",
        )?
        .query_row(params![uploader, now], |r| r.get(0))?)
}

/// Fills in the content of a pending upload. Returns false if it already has content (or does
/// not exist), so that two racing uploads cannot both succeed.
pub fn complete_pending(
    conn: &Connection,
    origin: &str,
    media_id: &str,
    content: &NewContent<'_>,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE media SET sha256 = ?3, size = ?4, content_type = ?5, filename = ?6,
                uploaded_ts = ?7, unused_expires_ts = NULL
             WHERE origin = ?1 AND media_id = ?2 AND sha256 IS NULL",
        )?
        .execute(params![
            origin,
            media_id,
            content.blob.sha256,
            content.blob.size as i64,
            content.content_type,
            content.filename,
            content.ts,
        ])?;
    Ok(n == 1)
}

/// Bytes of content `uploader` has uploaded to this node (each upload counted, even when its
/// bytes are shared with another).
pub fn uploaded_bytes(conn: &Connection, uploader: &str) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(size), 0) FROM media WHERE uploader = ?1 AND sha256 IS NOT NULL",
        )?
        .query_row([uploader], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Bytes of content all users have uploaded to this node, counted as [`uploaded_bytes`] does.
pub fn uploaded_bytes_total(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT coalesce(sum(size), 0) FROM media WHERE sha256 IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Looks up a media row.
pub fn get_media(conn: &Connection, origin: &str, media_id: &str) -> Result<Option<MediaRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT uploader, sha256, size, content_type, filename, unused_expires_ts
             FROM media WHERE origin = ?1 AND media_id = ?2",
        )?
        .query_row(params![origin, media_id], |r| {
            let sha256: Option<String> = r.get(1)?;
            let size: Option<i64> = r.get(2)?;
            Ok(MediaRow {
                uploader: r.get(0)?,
                blob: sha256.map(|sha256| Blob {
                    sha256,
                    size: size.unwrap_or(0).max(0) as u64,
                }),
                content_type: r.get(3)?,
                filename: r.get(4)?,
                unused_expires_ts: r.get(5)?,
            })
        })
        .optional()?)
}

/// Identifies a thumbnail: the content it was made from and the request that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThumbnailKey {
    /// SHA-256 of the source content.
    pub source_sha256: String,
    /// Width of the thumbnail.
    pub width: u32,
    /// Height of the thumbnail.
    pub height: u32,
    /// `scale` or `crop`, with `-animated` when animation was asked for.
    pub method: String,
}

/// A stored thumbnail.
#[derive(Debug, Clone)]
pub struct ThumbnailRow {
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its bytes.
    pub blob: Blob,
}

/// Looks up a generated thumbnail.
pub fn get_thumbnail(conn: &Connection, key: &ThumbnailKey) -> Result<Option<ThumbnailRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT content_type, sha256, size FROM media_thumbnails
             WHERE source_sha256 = ?1 AND width = ?2 AND height = ?3 AND method = ?4",
        )?
        .query_row(
            params![key.source_sha256, key.width, key.height, key.method],
            |r| {
                let size: i64 = r.get(2)?;
                Ok(ThumbnailRow {
                    content_type: r.get(0)?,
                    blob: Blob {
                        sha256: r.get(1)?,
                        size: size.max(0) as u64,
                    },
                })
            },
        )
        .optional()?)
}

/// Records a generated thumbnail (keeping the first if two were made at once).
pub fn insert_thumbnail(
    conn: &Connection,
    key: &ThumbnailKey,
    thumb: &ThumbnailRow,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO media_thumbnails
            (source_sha256, width, height, method, content_type, sha256, size, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key.source_sha256,
        key.width,
        key.height,
        key.method,
        thumb.content_type,
        thumb.blob.sha256,
        thumb.blob.size as i64,
        now,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_share_one_blob_and_interrupted_writes_leave_nothing() {
        let dir = tempfile_dir();
        let store = BlobStore::open(&dir).unwrap();
        let a = store.put(b"hello").unwrap();
        let b = store.put(b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.size, 5);
        assert_eq!(
            a.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let mut w = store.writer().unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.join("media/tmp")).unwrap().count(), 0);
        assert_eq!(
            std::fs::read(store.path(&a.sha256).unwrap()).unwrap(),
            b"hello"
        );
        assert!(store.path("../../etc/passwd").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "neurite-blobs-{}",
            data_encoding::HEXLOWER.encode(&name)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
