//! The media repository: uploads, asynchronous uploads, downloads and thumbnails.
//!
//! Bytes are streamed to a temporary file while they arrive (never held whole in memory),
//! hashed on the way, and kept under their SHA-256 (see [`crate::storage::media`]); SQLite
//! only records which `mxc://` id points at which blob. This module is the service: ids,
//! quotas and waiting for asynchronous uploads. The bytes travel as streams ([`body`]), and
//! thumbnails are made and kept in [`thumbnails`].

mod body;
mod thumbnails;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use ruma::UserId;
use tokio::sync::{Semaphore, watch};

pub use self::{
    body::{ByteStream, ContentBody},
    thumbnails::{
        MAX_THUMBNAIL_DECODE_BYTES, MAX_THUMBNAIL_SOURCE_PIXELS, MAX_THUMBNAIL_SOURCE_SIDE,
        ResizeMethod, THUMBNAIL_SIZES, ThumbnailRequest, snap_thumbnail,
    },
};
use crate::{
    accounts::random_string,
    error::{Error, ErrorCode, MatrixError, Result},
    notifier::Notifier,
    storage::{
        Db,
        media::{self as store, BlobStore, NewContent},
        now_ms,
    },
};

/// Length of generated media ids (62 symbols each: about 190 bits).
pub const MEDIA_ID_LEN: usize = 32;
/// How long a media id from `POST /create` waits for its content.
pub const PENDING_UPLOAD_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How many created-but-not-uploaded media ids a user may hold at once.
pub const MAX_PENDING_UPLOADS: i64 = 16;
/// How long a download waits for a pending upload when the client does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
/// The longest a download waits for a pending upload, whatever the client asks.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The `Content-Type` of media uploaded without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Longest accepted file name or content type, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// An upload as it arrives: its metadata and the body still to be read.
pub struct Upload {
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `filename` query parameter, if any.
    pub filename: Option<String>,
    /// The `Content-Length` header, if any (checked against the limit before reading).
    pub declared_len: Option<u64>,
    /// The bytes, as they arrive.
    pub body: ByteStream,
}

/// Stored bytes ready to be served.
pub struct Content {
    /// Their `Content-Type`.
    pub content_type: String,
    /// The file name given at upload, if any.
    pub filename: Option<String>,
    /// The bytes, streamed from disk.
    pub body: ContentBody,
}

/// How many bytes of uploads the node keeps.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Per user, all their uploads together.
    pub per_user: u64,
    /// All users together.
    pub total: u64,
}

/// The media repository service.
#[derive(Clone)]
pub struct Media {
    db: Db,
    blobs: Arc<BlobStore>,
    server_name: String,
    max_upload_bytes: u64,
    quotas: Quotas,
    /// Bumped whenever a pending upload receives its content.
    uploaded: Arc<watch::Sender<u64>>,
    notifier: Arc<Notifier>,
    /// One thumbnail is generated at a time: decoding a photo takes tens of MB.
    thumbnailer: Arc<Semaphore>,
}

impl Media {
    /// Opens the media folder under `data_dir` (blocking: it creates folders and removes
    /// temporary files of interrupted uploads).
    pub fn open(
        db: Db,
        data_dir: &std::path::Path,
        server_name: &str,
        max_upload_bytes: u64,
        quotas: Quotas,
        notifier: Arc<Notifier>,
    ) -> Result<Self> {
        Ok(Self {
            db,
            blobs: Arc::new(BlobStore::open(data_dir)?),
            server_name: server_name.to_owned(),
            max_upload_bytes,
            quotas,
            uploaded: Arc::new(watch::channel(0).0),
            notifier,
            thumbnailer: Arc::new(Semaphore::new(1)),
        })
    }

    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// `POST /upload`: stores the content and returns its `mxc://` URI.
    pub async fn upload(&self, uploader: &UserId, upload: Upload) -> Result<String> {
        let (content_type, filename) = check_metadata(&upload)?;
        let room = self.room_left(uploader).await?;
        let blob = body::receive(&self.blobs, upload.declared_len, upload.body, room).await?;
        let media_id = random_string(MEDIA_ID_LEN);
        let (origin, id, user) = (
            self.server_name.clone(),
            media_id.clone(),
            uploader.to_string(),
        );
        let quotas = self.quotas;
        self.db
            .write(move |txn| {
                check_quota(txn, &user, blob.size, quotas)?;
                let content = NewContent {
                    blob: &blob,
                    content_type: &content_type,
                    filename: filename.as_deref(),
                    ts: now_ms(),
                };
                store::insert_media(txn, &origin, &id, &user, &content)
            })
            .await?;
        Ok(self.mxc(&media_id))
    }

    /// `POST /create`: reserves a media id for content uploaded later. Returns its `mxc://`
    /// URI and when the reservation expires (ms since the epoch).
    pub async fn create(&self, uploader: &UserId) -> Result<(String, i64)> {
        let media_id = random_string(MEDIA_ID_LEN);
        let now = now_ms();
        let expires = now + PENDING_UPLOAD_LIFETIME.as_millis() as i64;
        let (origin, id, user) = (
            self.server_name.clone(),
            media_id.clone(),
            uploader.to_string(),
        );
        self.db
            .write(move |txn| {
                store::delete_expired_pending(txn, now)?;
                if store::count_pending(txn, &user, now)? >= MAX_PENDING_UPLOADS {
                    return Err(MatrixError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::LimitExceeded,
                        "Too many pending uploads: upload content to the media ids you created first",
                    )
                    .with_field("retry_after_ms", serde_json::json!(60_000))
                    .into());
                }
                store::insert_pending(txn, &origin, &id, &user, now, expires)
            })
            .await?;
        Ok((self.mxc(&media_id), expires))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of a media id from [`Media::create`].
    pub async fn upload_pending(
        &self,
        uploader: &UserId,
        server_name: &str,
        media_id: &str,
        upload: Upload,
    ) -> Result<()> {
        self.check_local(server_name, media_id)?;
        let (origin, id) = (self.server_name.clone(), media_id.to_owned());
        let row = self
            .db
            .read(move |c| store::get_media(c, &origin, &id))
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown media id"))?;
        if row.uploader != uploader.as_str() {
            return Err(MatrixError::forbidden("This media id was created by another user").into());
        }
        if row.blob.is_some() {
            return Err(cannot_overwrite().into());
        }
        if row.unused_expires_ts.is_some_and(|t| t < now_ms()) {
            return Err(MatrixError::not_found("This media id has expired").into());
        }
        let (content_type, filename) = check_metadata(&upload)?;
        let room = self.room_left(uploader).await?;
        let blob = body::receive(&self.blobs, upload.declared_len, upload.body, room).await?;
        let (origin, id, user) = (
            self.server_name.clone(),
            media_id.to_owned(),
            uploader.to_string(),
        );
        let quotas = self.quotas;
        let stored = self
            .db
            .write(move |txn| {
                check_quota(txn, &user, blob.size, quotas)?;
                let content = NewContent {
                    blob: &blob,
                    content_type: &content_type,
                    filename: filename.as_deref(),
                    ts: now_ms(),
                };
                store::complete_pending(txn, &origin, &id, &content)
            })
            .await?;
        if !stored {
            return Err(cannot_overwrite().into());
        }
        self.uploaded.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// `GET /download/{serverName}/{mediaId}`: the content, waiting up to `wait` for an
    /// asynchronous upload to arrive.
    pub async fn download(
        &self,
        server_name: &str,
        media_id: &str,
        wait: Option<Duration>,
    ) -> Result<Content> {
        let row = self.resolve(server_name, media_id, wait).await?;
        let Some(blob) = row.blob else {
            return Err(Error::Task("resolved media without content".into()));
        };
        let body = body::open(&self.blobs, blob).await?;
        Ok(Content {
            content_type: row
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            filename: row.filename,
            body,
        })
    }

    fn mxc(&self, media_id: &str) -> String {
        format!("mxc://{}/{media_id}", self.server_name)
    }

    /// Media of other servers cannot be fetched yet (no federation), and a media id is only
    /// ever `[A-Za-z0-9_-]`: anything else cannot exist here.
    fn check_local(&self, server_name: &str, media_id: &str) -> Result<()> {
        if server_name != self.server_name {
            return Err(MatrixError::not_found(
                "Media of other servers is not available on this node",
            )
            .into());
        }
        let valid = !media_id.is_empty()
            && media_id.len() <= 255
            && media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(MatrixError::not_found("Media not found").into());
        }
        Ok(())
    }

    /// The media row, once it has content; waits up to `wait` for a pending upload.
    async fn resolve(
        &self,
        server_name: &str,
        media_id: &str,
        wait: Option<Duration>,
    ) -> Result<store::MediaRow> {
        self.check_local(server_name, media_id)?;
        let deadline = tokio::time::Instant::now() + wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        // Subscribe before looking, so an upload finishing in between is not missed.
        let mut uploaded = self.uploaded.subscribe();
        let mut closing = self.notifier.subscribe();
        loop {
            let (origin, id) = (self.server_name.clone(), media_id.to_owned());
            let row = self
                .db
                .read(move |c| store::get_media(c, &origin, &id))
                .await?
                .ok_or_else(|| MatrixError::not_found("Media not found"))?;
            if row.blob.is_some() {
                return Ok(row);
            }
            if row.unused_expires_ts.is_some_and(|t| t < now_ms()) {
                return Err(MatrixError::not_found("Media not found").into());
            }
            if self.notifier.is_closing() || tokio::time::Instant::now() >= deadline {
                return Err(MatrixError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorCode::NotYetUploaded,
                    "Content has not yet been uploaded",
                )
                .into());
            }
            tokio::select! {
                changed = uploaded.changed() => if changed.is_err() { return Err(Error::Task("media service closed".into())) },
                _ = closing.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// How much more `uploader` may upload now: the largest upload, or what is left of their
    /// quota or the node's if that is less.
    async fn room_left(&self, uploader: &UserId) -> Result<Room> {
        let user = uploader.to_string();
        let (mine, all) = self
            .db
            .read(move |c| {
                Ok((
                    store::uploaded_bytes(c, &user)?,
                    store::uploaded_bytes_total(c)?,
                ))
            })
            .await?;
        let user_left = self.quotas.per_user.saturating_sub(mine);
        let node_left = self.quotas.total.saturating_sub(all);
        Ok(if self.max_upload_bytes <= user_left.min(node_left) {
            Room::Upload(self.max_upload_bytes)
        } else if user_left <= node_left {
            Room::UserQuota(user_left)
        } else {
            Room::NodeQuota(node_left)
        })
    }
}

fn too_large(max: u64) -> MatrixError {
    MatrixError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        format!("Uploads may be at most {max} bytes"),
    )
}

/// What bounds the next upload of a user.
#[derive(Debug, Clone, Copy)]
enum Room {
    /// The largest upload the node takes.
    Upload(u64),
    /// What is left of the user's quota.
    UserQuota(u64),
    /// What is left of the node's.
    NodeQuota(u64),
}

impl Room {
    fn bytes(self) -> u64 {
        match self {
            Self::Upload(n) | Self::UserQuota(n) | Self::NodeQuota(n) => n,
        }
    }

    fn refusal(self) -> MatrixError {
        match self {
            Self::Upload(max) => too_large(max),
            Self::UserQuota(left) => over_quota(format!(
                "This upload would exceed your media quota ({left} bytes left)"
            )),
            Self::NodeQuota(left) => over_quota(format!(
                "This upload would exceed the server's media storage ({left} bytes left)"
            )),
        }
    }
}

/// `413 M_TOO_LARGE` for an upload over a quota.
fn over_quota(message: String) -> MatrixError {
    MatrixError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message)
}

/// Checks, in the transaction that records an upload of `size` bytes, that it fits the
/// uploader's quota and the node's (uploads running at once were each checked before alone).
fn check_quota(
    txn: &rusqlite::Connection,
    uploader: &str,
    size: u64,
    quotas: Quotas,
) -> Result<()> {
    let mine = store::uploaded_bytes(txn, uploader)?;
    if mine.saturating_add(size) > quotas.per_user {
        return Err(Room::UserQuota(quotas.per_user.saturating_sub(mine))
            .refusal()
            .into());
    }
    let all = store::uploaded_bytes_total(txn)?;
    if all.saturating_add(size) > quotas.total {
        return Err(Room::NodeQuota(quotas.total.saturating_sub(all))
            .refusal()
            .into());
    }
    Ok(())
}

fn cannot_overwrite() -> MatrixError {
    MatrixError::new(
        StatusCode::CONFLICT,
        ErrorCode::CannotOverwriteMedia,
        "Media already uploaded",
    )
}

/// The content type and file name an upload is stored with.
fn check_metadata(upload: &Upload) -> Result<(String, Option<String>)> {
    let content_type = upload
        .content_type
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    if content_type.len() > MAX_NAME_BYTES {
        return Err(MatrixError::invalid_param("Content-Type is too long").into());
    }
    let filename = upload.filename.as_deref().filter(|f| !f.is_empty());
    if filename.is_some_and(|f| f.len() > MAX_NAME_BYTES) {
        return Err(MatrixError::invalid_param("filename is too long").into());
    }
    Ok((content_type.to_owned(), filename.map(str::to_owned)))
}
