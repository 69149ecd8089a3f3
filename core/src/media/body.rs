//! Media bytes as streams, both ways: an upload's chunks written to a new blob as they
//! arrive, and a stored blob read back in chunks (on the blocking pool) for a response.
//!
//! The service sees only [`ByteStream`]s; turning an HTTP request body into one, and one
//! back into a response body, is the HTTP layer's job.

use std::{fs::File, io::Read, sync::Arc};

use axum::body::Bytes;
use futures::{
    StreamExt,
    stream::{self, BoxStream},
};

use super::Room;
use crate::{
    error::{Error, MatrixError, Result},
    storage::media::{Blob, BlobStore},
};

/// Uploaded bytes are written to disk in batches of about this size.
const WRITE_BATCH: usize = 256 * 1024;
/// Downloads are read from disk in chunks of this size; smaller files are read at once.
const READ_CHUNK: usize = 256 * 1024;

/// Bytes arriving or leaving in chunks: an upload's body, or stored content being served.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Stored content ready to stream, with its exact length (so responses carry
/// `Content-Length`).
pub struct ContentBody {
    /// How many bytes `chunks` yields in all.
    pub len: u64,
    /// The bytes.
    pub chunks: ByteStream,
}

impl ContentBody {
    /// A body of bytes already in memory.
    pub(super) fn bytes(bytes: Bytes) -> Self {
        Self {
            len: bytes.len() as u64,
            chunks: stream::iter((!bytes.is_empty()).then_some(Ok(bytes))).boxed(),
        }
    }

    /// A body read from `file`, which holds `size` bytes, one chunk at a time on the blocking
    /// pool.
    fn file(file: File, size: u64) -> Self {
        let chunks = stream::try_unfold((file, size), |(mut file, remaining)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let (file, buf) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                file.read_exact(&mut buf).map(|()| (file, buf))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            Ok(Some((Bytes::from(buf), (file, remaining - want as u64))))
        });
        Self {
            len: size,
            chunks: chunks.boxed(),
        }
    }
}

/// Opens a blob for streaming; small ones are read at once.
pub(super) async fn open(blobs: &Arc<BlobStore>, blob: Blob) -> Result<ContentBody> {
    let blobs = blobs.clone();
    tokio::task::spawn_blocking(move || {
        let mut file = blobs.open_blob(&blob.sha256)?;
        if blob.size <= READ_CHUNK as u64 {
            let mut bytes = Vec::with_capacity(blob.size as usize);
            file.read_to_end(&mut bytes)?;
            return Ok(ContentBody::bytes(Bytes::from(bytes)));
        }
        Ok(ContentBody::file(file, blob.size))
    })
    .await?
}

/// Reads an upload into a new blob, refusing it as soon as it is larger than `room` allows
/// (so an upload over quota never reaches the disk whole).
pub(super) async fn receive(
    blobs: &Arc<BlobStore>,
    declared_len: Option<u64>,
    mut body: ByteStream,
    room: Room,
) -> Result<Blob> {
    let max = room.bytes();
    if declared_len.is_some_and(|n| n > max) {
        return Err(room.refusal().into());
    }
    let blobs = blobs.clone();
    let mut writer = tokio::task::spawn_blocking(move || blobs.writer()).await??;
    let mut batch: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    while let Some(data) = body.next().await {
        let data =
            data.map_err(|e| MatrixError::bad_request(format!("Could not read the upload: {e}")))?;
        total += data.len() as u64;
        if total > max {
            return Err(room.refusal().into());
        }
        batch.extend_from_slice(&data);
        if batch.len() >= WRITE_BATCH {
            let chunk = std::mem::take(&mut batch);
            writer = tokio::task::spawn_blocking(move || {
                writer.write(&chunk)?;
                Ok::<_, Error>(writer)
            })
            .await??;
        }
    }
    tokio::task::spawn_blocking(move || {
        writer.write(&batch)?;
        writer.finish()
    })
    .await?
}
