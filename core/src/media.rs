//! The media repository: uploads, asynchronous uploads, downloads and thumbnails.
//!
//! Bytes are streamed to a temporary file while they arrive (never held whole in memory),
//! hashed on the way, and kept under their SHA-256 (see [`crate::storage::media`]); SQLite
//! only records which `mxc://` id points at which blob. Thumbnails are made on first request,
//! one at a time, from images whose dimensions are checked before anything is decoded, and
//! kept as blobs too.

use std::{
    fs::File,
    future::Future,
    io::{BufReader, Read},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Bytes, http::StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use ruma::UserId;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::{
    accounts::random_string,
    error::{Error, ErrorCode, MatrixError, Result},
    notifier::Notifier,
    storage::{
        Db,
        media::{self as store, Blob, BlobStore, NewContent, ThumbnailKey, ThumbnailRow},
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
/// Largest image (width × height) a thumbnail is made from. 4096 × 4096 covers the 12 MP
/// photos phone cameras save; bigger images are refused before they are decoded.
pub const MAX_THUMBNAIL_SOURCE_PIXELS: u64 = 4096 * 4096;
/// Largest width or height of an image a thumbnail is made from.
pub const MAX_THUMBNAIL_SOURCE_SIDE: u32 = 16_384;
/// Most memory the decoder of one image may allocate. Thumbnails are made one at a time, so
/// this bounds the memory thumbnailing takes.
pub const MAX_THUMBNAIL_DECODE_BYTES: u64 = 80 * 1024 * 1024;
/// The `Content-Type` of media uploaded without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Longest accepted file name or content type, in bytes.
const MAX_NAME_BYTES: usize = 1024;
/// Uploaded bytes are written to disk in batches of about this size.
const WRITE_BATCH: usize = 256 * 1024;
/// Downloads are read from disk in chunks of this size; smaller files are read at once.
const READ_CHUNK: usize = 256 * 1024;

/// How a thumbnail fits the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMethod {
    /// Keep the aspect ratio; the result is at least as large as the request in both
    /// dimensions (unless the image is smaller).
    Scale,
    /// The requested size exactly (unless the image is smaller), cut from the centre.
    Crop,
}

impl ResizeMethod {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Crop => "crop",
        }
    }
}

/// The only thumbnail sizes made and kept (the sizes the spec suggests). A request is
/// answered with the smallest of them that covers it, so that asking for every size under the
/// sun (the legacy thumbnail route needs no token) cannot fill the disk: a source has at most
/// ten thumbnails (each size, static and animated).
pub const THUMBNAIL_SIZES: [(u32, u32, ResizeMethod); 5] = [
    (32, 32, ResizeMethod::Crop),
    (96, 96, ResizeMethod::Crop),
    (320, 240, ResizeMethod::Scale),
    (640, 480, ResizeMethod::Scale),
    (800, 600, ResizeMethod::Scale),
];

/// The size in [`THUMBNAIL_SIZES`] that answers a request: the smallest of the same method
/// that covers it, else the smallest of any method that covers it, else the largest.
pub fn snap_thumbnail(request: ThumbnailRequest) -> ThumbnailRequest {
    let covers =
        |&&(w, h, _): &&(u32, u32, ResizeMethod)| w >= request.width && h >= request.height;
    let area = |&&(w, h, _): &&(u32, u32, ResizeMethod)| u64::from(w) * u64::from(h);
    let chosen = THUMBNAIL_SIZES
        .iter()
        .filter(|s| s.2 == request.method)
        .filter(covers)
        .min_by_key(area)
        .or_else(|| THUMBNAIL_SIZES.iter().filter(covers).min_by_key(area))
        .or_else(|| THUMBNAIL_SIZES.iter().max_by_key(area));
    match chosen {
        Some(&(width, height, method)) => ThumbnailRequest {
            width,
            height,
            method,
            animated: request.animated,
        },
        None => request,
    }
}

/// A thumbnail request.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailRequest {
    /// Desired width (at least 1).
    pub width: u32,
    /// Desired height (at least 1).
    pub height: u32,
    /// Desired method.
    pub method: ResizeMethod,
    /// Whether an animated thumbnail may be returned.
    pub animated: bool,
}

/// An upload as it arrives: its metadata and the body still to be read.
pub struct Upload {
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `filename` query parameter, if any.
    pub filename: Option<String>,
    /// The `Content-Length` header, if any (checked against the limit before reading).
    pub declared_len: Option<u64>,
    /// The request body.
    pub body: axum::body::Body,
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
        let blob = self.receive(upload.declared_len, upload.body, room).await?;
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
        let blob = self.receive(upload.declared_len, upload.body, room).await?;
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
        let body = self.open_body(blob).await?;
        Ok(Content {
            content_type: row
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            filename: row.filename,
            body,
        })
    }

    /// `GET /thumbnail/{serverName}/{mediaId}`: a thumbnail of an image (PNG, JPEG, GIF or
    /// WebP), made on first request and kept. Images no larger than the request are served
    /// as they are (animated ones only when `animated` is asked for).
    pub async fn thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        request: ThumbnailRequest,
        wait: Option<Duration>,
    ) -> Result<Content> {
        let request = snap_thumbnail(request);
        let row = self.resolve(server_name, media_id, wait).await?;
        let Some(source) = row.blob else {
            return Err(Error::Task("resolved media without content".into()));
        };
        let key = ThumbnailKey {
            source_sha256: source.sha256.clone(),
            width: request.width,
            height: request.height,
            // An animated request may get the (animated) original where a static one gets a
            // still frame, so they are cached apart. Both are blobs: equal bytes share a file.
            method: if request.animated {
                format!("{}-animated", request.method.as_str())
            } else {
                request.method.as_str().to_owned()
            },
        };
        if let Some(found) = self.cached_thumbnail(&key).await? {
            return self.thumbnail_content(found).await;
        }
        // One at a time; whoever waited may find the thumbnail made by the one before.
        let _permit = self
            .thumbnailer
            .acquire()
            .await
            .map_err(|_| Error::Task("thumbnailer closed".into()))?;
        if let Some(found) = self.cached_thumbnail(&key).await? {
            return self.thumbnail_content(found).await;
        }
        let blobs = self.blobs.clone();
        let source_sha = source.sha256.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<Made> {
            let file = blobs.open_blob(&source_sha)?;
            Ok(match make_thumbnail(file, request)? {
                Thumbnail::Original(content_type) => Made::Original(content_type),
                Thumbnail::Generated(content_type, bytes) => Made::New {
                    content_type,
                    blob: blobs.put(&bytes)?,
                    bytes,
                },
            })
        })
        .await??;
        match made {
            Made::Original(content_type) => Ok(Content {
                content_type: content_type.to_owned(),
                filename: None,
                body: self.open_body(source).await?,
            }),
            Made::New {
                content_type,
                blob,
                bytes,
            } => {
                let row = ThumbnailRow {
                    content_type: content_type.to_owned(),
                    blob,
                };
                self.db
                    .write(move |txn| store::insert_thumbnail(txn, &key, &row, now_ms()))
                    .await?;
                Ok(Content {
                    content_type: content_type.to_owned(),
                    filename: None,
                    body: ContentBody::bytes(Bytes::from(bytes)),
                })
            }
        }
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

    /// Reads a request body into a new blob, refusing it as soon as it is larger than `room`
    /// allows (so an upload over quota never reaches the disk whole).
    async fn receive(
        &self,
        declared_len: Option<u64>,
        mut body: axum::body::Body,
        room: Room,
    ) -> Result<Blob> {
        let max = room.bytes();
        if declared_len.is_some_and(|n| n > max) {
            return Err(room.refusal().into());
        }
        let blobs = self.blobs.clone();
        let mut writer = tokio::task::spawn_blocking(move || blobs.writer()).await??;
        let mut batch: Vec<u8> = Vec::new();
        let mut total: u64 = 0;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    return Err(MatrixError::bad_request(format!(
                        "Could not read the upload: {e}"
                    ))
                    .into());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
            };
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

    async fn cached_thumbnail(&self, key: &ThumbnailKey) -> Result<Option<ThumbnailRow>> {
        let key = key.clone();
        self.db.read(move |c| store::get_thumbnail(c, &key)).await
    }

    async fn thumbnail_content(&self, row: ThumbnailRow) -> Result<Content> {
        Ok(Content {
            content_type: row.content_type,
            filename: None,
            body: self.open_body(row.blob).await?,
        })
    }

    /// Opens a blob for streaming; small ones are read at once.
    async fn open_body(&self, blob: Blob) -> Result<ContentBody> {
        let blobs = self.blobs.clone();
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

// ---------------------------------------------------------------- thumbnails

/// What [`make_thumbnail`] decided.
enum Thumbnail {
    /// The source itself is the answer (it is no larger than asked); its real content type.
    Original(&'static str),
    /// A new thumbnail: content type and bytes.
    Generated(&'static str, Vec<u8>),
}

/// A thumbnail once its bytes are stored.
enum Made {
    Original(&'static str),
    New {
        content_type: &'static str,
        blob: Blob,
        bytes: Vec<u8>,
    },
}

fn format_mime(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Png => Some("image/png"),
        ImageFormat::Jpeg => Some("image/jpeg"),
        ImageFormat::Gif => Some("image/gif"),
        ImageFormat::WebP => Some("image/webp"),
        _ => None,
    }
}

fn cannot_thumbnail() -> Error {
    MatrixError::bad_request("Cannot generate a thumbnail for this content").into()
}

fn too_large_to_thumbnail() -> Error {
    MatrixError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        "Content is too large to thumbnail",
    )
    .into()
}

/// Decoding failures are the content's fault (a truncated or corrupt image reads as an I/O
/// error too); only the memory and size limits have their own answer.
fn image_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(_) => too_large_to_thumbnail(),
        other => {
            tracing::debug!(error = %other, "cannot thumbnail");
            cannot_thumbnail()
        }
    }
}

/// The size a thumbnail of a `w`×`h` image gets, never larger than the image.
fn target_size(w: u32, h: u32, request: &ThumbnailRequest) -> (u32, u32) {
    let (rw, rh) = (request.width, request.height);
    match request.method {
        ResizeMethod::Crop => (rw.min(w), rh.min(h)),
        ResizeMethod::Scale => {
            if w <= rw || h <= rh {
                // Shrinking would make one side smaller than asked for.
                return (w, h);
            }
            let (w64, h64, rw64, rh64) = (w as u64, h as u64, rw as u64, rh as u64);
            // The smallest size with the image's aspect ratio that covers the request.
            if rw64 * h64 >= rh64 * w64 {
                (rw, h64.saturating_mul(rw64).div_ceil(w64).min(h64) as u32)
            } else {
                (w64.saturating_mul(rh64).div_ceil(h64).min(w64) as u32, rh)
            }
        }
    }
}

/// Makes a thumbnail of an image file (blocking). Refuses images that are too large before
/// decoding them, and decodes under memory limits.
fn make_thumbnail(file: File, request: ThumbnailRequest) -> Result<Thumbnail> {
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(Error::Io)?;
    let format = reader.format().ok_or_else(cannot_thumbnail)?;
    let mime = format_mime(format).ok_or_else(cannot_thumbnail)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_THUMBNAIL_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_THUMBNAIL_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_THUMBNAIL_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_THUMBNAIL_SOURCE_PIXELS
        || decoder.total_bytes() > MAX_THUMBNAIL_DECODE_BYTES
    {
        return Err(too_large_to_thumbnail());
    }
    let may_animate = matches!(format, ImageFormat::Gif | ImageFormat::WebP);
    if target_size(w, h, &request) == (w, h) && (request.animated || !may_animate) {
        return Ok(Thumbnail::Original(mime));
    }
    let orientation = decoder.orientation().map_err(image_error)?;
    let image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    // Work on 8-bit RGB, or RGBA when there is transparency: two pixel types instead of every
    // one the decoders produce keeps the code (and the binary) small. JPEG has no alpha.
    let mut out = std::io::Cursor::new(Vec::new());
    let content_type = if image.color().has_alpha() && format != ImageFormat::Jpeg {
        let thumb = resize(orient(image.into_rgba8(), orientation), &request);
        let encoder = image::codecs::png::PngEncoder::new(&mut out);
        encode(encoder, &thumb, image::ExtendedColorType::Rgba8)?;
        "image/png"
    } else {
        let thumb = resize(orient(image.into_rgb8(), orientation), &request);
        if format == ImageFormat::Jpeg {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
            encode(encoder, &thumb, image::ExtendedColorType::Rgb8)?;
            "image/jpeg"
        } else {
            let encoder = image::codecs::png::PngEncoder::new(&mut out);
            encode(encoder, &thumb, image::ExtendedColorType::Rgb8)?;
            "image/png"
        }
    };
    Ok(Thumbnail::Generated(content_type, out.into_inner()))
}

/// An 8-bit image buffer with `P` pixels.
type Buffer<P> = image::ImageBuffer<P, Vec<u8>>;

/// Turns an image upright as its EXIF orientation says (phone photos are stored sideways).
fn orient<P: image::Pixel<Subpixel = u8> + 'static>(
    image: Buffer<P>,
    orientation: image::metadata::Orientation,
) -> Buffer<P> {
    use image::{imageops, metadata::Orientation};
    match orientation {
        Orientation::NoTransforms => image,
        Orientation::Rotate90 => imageops::rotate90(&image),
        Orientation::Rotate180 => imageops::rotate180(&image),
        Orientation::Rotate270 => imageops::rotate270(&image),
        Orientation::FlipHorizontal => imageops::flip_horizontal(&image),
        Orientation::FlipVertical => imageops::flip_vertical(&image),
        Orientation::Rotate90FlipH => imageops::flip_horizontal(&imageops::rotate90(&image)),
        Orientation::Rotate270FlipH => imageops::flip_horizontal(&imageops::rotate270(&image)),
    }
}

/// Resizes an upright image for `request`: scaled to cover it, and for `crop` cut to it.
fn resize<P: image::Pixel<Subpixel = u8> + 'static>(
    image: Buffer<P>,
    request: &ThumbnailRequest,
) -> Buffer<P> {
    use image::{GenericImageView, imageops};
    let (w, h) = image.dimensions();
    let (tw, th) = target_size(w, h, request);
    if (tw, th) == (w, h) {
        return image;
    }
    match request.method {
        ResizeMethod::Scale => imageops::thumbnail(&image, tw, th),
        ResizeMethod::Crop => {
            let cover = ThumbnailRequest {
                width: tw,
                height: th,
                method: ResizeMethod::Scale,
                animated: false,
            };
            let (sw, sh) = target_size(w, h, &cover);
            let scaled = imageops::thumbnail(&image, sw.max(tw), sh.max(th));
            let (x, y) = ((scaled.width() - tw) / 2, (scaled.height() - th) / 2);
            scaled.view(x, y, tw, th).to_image()
        }
    }
}

fn encode<P: image::Pixel<Subpixel = u8>>(
    encoder: impl image::ImageEncoder,
    image: &Buffer<P>,
    color: image::ExtendedColorType,
) -> Result<()> {
    encoder
        .write_image(image.as_raw(), image.width(), image.height(), color)
        .map_err(image_error)
}

// ---------------------------------------------------------------- streaming

/// A response body that streams a blob from disk, reading each chunk on the blocking pool.
/// It knows its exact length, so responses carry `Content-Length`.
pub struct ContentBody {
    state: BodyState,
    remaining: u64,
}

enum BodyState {
    Bytes(Option<Bytes>),
    Idle(File),
    Reading(JoinHandle<(File, std::io::Result<Vec<u8>>)>),
    Done,
}

impl ContentBody {
    /// A body of bytes already in memory.
    pub fn bytes(bytes: Bytes) -> Self {
        Self {
            remaining: bytes.len() as u64,
            state: BodyState::Bytes(Some(bytes)),
        }
    }

    /// A body read from `file`, which holds `size` bytes.
    pub fn file(file: File, size: u64) -> Self {
        Self {
            remaining: size,
            state: BodyState::Idle(file),
        }
    }
}

impl HttpBody for ContentBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, BodyState::Done) {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Bytes(bytes) => {
                    this.remaining = 0;
                    return Poll::Ready(
                        bytes.filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))),
                    );
                }
                BodyState::Idle(file) => {
                    if this.remaining == 0 {
                        return Poll::Ready(None);
                    }
                    let want = this.remaining.min(READ_CHUNK as u64) as usize;
                    this.state = BodyState::Reading(tokio::task::spawn_blocking(move || {
                        let mut file = file;
                        let mut buf = vec![0u8; want];
                        let result = file.read_exact(&mut buf).map(|()| buf);
                        (file, result)
                    }));
                }
                BodyState::Reading(mut handle) => match Pin::new(&mut handle).poll(cx) {
                    Poll::Pending => {
                        this.state = BodyState::Reading(handle);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))));
                    }
                    Poll::Ready(Ok((_, Err(e)))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok((file, Ok(buf)))) => {
                        this.remaining -= buf.len() as u64;
                        this.state = BodyState::Idle(file);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done) || self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(width: u32, height: u32, method: ResizeMethod) -> ThumbnailRequest {
        ThumbnailRequest {
            width,
            height,
            method,
            animated: false,
        }
    }

    #[test]
    fn scale_covers_the_request_and_keeps_the_aspect_ratio() {
        assert_eq!(
            target_size(640, 480, &req(64, 64, ResizeMethod::Scale)),
            (86, 64)
        );
        assert_eq!(
            target_size(480, 640, &req(64, 64, ResizeMethod::Scale)),
            (64, 86)
        );
        assert_eq!(
            target_size(1000, 500, &req(320, 240, ResizeMethod::Scale)),
            (480, 240)
        );
        // Never upscaled, never smaller than asked when the image allows it.
        assert_eq!(
            target_size(100, 80, &req(320, 240, ResizeMethod::Scale)),
            (100, 80)
        );
        assert_eq!(
            target_size(1000, 50, &req(100, 100, ResizeMethod::Scale)),
            (1000, 50)
        );
    }

    /// Encodes a gradient in `format` into a temporary file and thumbnails it.
    fn thumbnail_of(format: ImageFormat, w: u32, h: u32, request: ThumbnailRequest) -> Thumbnail {
        let image = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255])
        }));
        let image = if format == ImageFormat::Jpeg {
            DynamicImage::ImageRgb8(image.to_rgb8())
        } else {
            image
        };
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).unwrap();
        let path = std::env::temp_dir().join(format!(
            "neurite-thumb-{}",
            data_encoding::HEXLOWER.encode(&name)
        ));
        std::fs::write(&path, bytes.into_inner()).unwrap();
        let result = make_thumbnail(File::open(&path).unwrap(), request);
        let _ = std::fs::remove_file(&path);
        result.unwrap_or_else(|e| panic!("thumbnail of {format:?}: {e}"))
    }

    fn decoded(thumb: Thumbnail) -> (&'static str, ImageFormat, (u32, u32)) {
        let Thumbnail::Generated(content_type, bytes) = thumb else {
            panic!("expected a generated thumbnail");
        };
        let format = image::guess_format(&bytes).unwrap();
        let image = image::load_from_memory(&bytes).unwrap();
        (content_type, format, (image.width(), image.height()))
    }

    #[test]
    fn every_supported_format_is_thumbnailed() {
        let jpeg = thumbnail_of(ImageFormat::Jpeg, 400, 300, req(96, 96, ResizeMethod::Crop));
        assert_eq!(decoded(jpeg), ("image/jpeg", ImageFormat::Jpeg, (96, 96)));
        for format in [ImageFormat::Png, ImageFormat::Gif, ImageFormat::WebP] {
            let thumb = thumbnail_of(format, 400, 300, req(64, 64, ResizeMethod::Scale));
            assert_eq!(
                decoded(thumb),
                ("image/png", ImageFormat::Png, (86, 64)),
                "{format:?}"
            );
        }
    }

    #[test]
    fn small_images_are_served_as_they_are_unless_they_may_animate() {
        let big = req(500, 500, ResizeMethod::Scale);
        for (format, mime) in [
            (ImageFormat::Png, "image/png"),
            (ImageFormat::Jpeg, "image/jpeg"),
        ] {
            assert!(
                matches!(thumbnail_of(format, 40, 30, big), Thumbnail::Original(m) if m == mime)
            );
        }
        // A GIF may be animated: a static frame unless animation is asked for.
        let thumb = thumbnail_of(ImageFormat::Gif, 40, 30, big);
        assert_eq!(decoded(thumb), ("image/png", ImageFormat::Png, (40, 30)));
        let animated = ThumbnailRequest {
            animated: true,
            ..big
        };
        assert!(matches!(
            thumbnail_of(ImageFormat::Gif, 40, 30, animated),
            Thumbnail::Original("image/gif")
        ));
    }

    #[test]
    fn sideways_photos_are_turned_upright() {
        use image::metadata::Orientation;
        let wide = image::RgbImage::from_fn(4, 2, |x, _| image::Rgb([x as u8, 0, 0]));
        assert_eq!(
            orient(wide.clone(), Orientation::Rotate90).dimensions(),
            (2, 4)
        );
        assert_eq!(
            orient(wide.clone(), Orientation::Rotate270FlipH).dimensions(),
            (2, 4)
        );
        let flipped = orient(wide.clone(), Orientation::FlipHorizontal);
        assert_eq!(flipped.get_pixel(0, 0).0[0], 3);
        assert_eq!(orient(wide.clone(), Orientation::NoTransforms), wide);
    }

    #[test]
    fn requests_snap_to_the_fixed_sizes() {
        let snapped = |w, h, m| {
            let r = snap_thumbnail(req(w, h, m));
            (r.width, r.height, r.method)
        };
        use ResizeMethod::{Crop, Scale};
        assert_eq!(snapped(1, 1, Crop), (32, 32, Crop));
        assert_eq!(snapped(32, 32, Crop), (32, 32, Crop));
        assert_eq!(snapped(33, 20, Crop), (96, 96, Crop));
        assert_eq!(snapped(32, 32, Scale), (320, 240, Scale));
        assert_eq!(snapped(321, 100, Scale), (640, 480, Scale));
        assert_eq!(snapped(800, 600, Scale), (800, 600, Scale));
        // No crop covers 200×200: the smallest scaled size that does.
        assert_eq!(snapped(200, 200, Crop), (320, 240, Scale));
        // Nothing covers: the largest.
        assert_eq!(snapped(5000, 5000, Crop), (800, 600, Scale));
        assert_eq!(snapped(u32::MAX, 1, Scale), (800, 600, Scale));
        // Every request lands on one of the five.
        for w in (1..2000).step_by(37) {
            for h in (1..2000).step_by(41) {
                for m in [Crop, Scale] {
                    assert!(THUMBNAIL_SIZES.contains(&snapped(w, h, m)));
                }
            }
        }
    }

    #[test]
    fn crop_is_the_requested_size_unless_the_image_is_smaller() {
        assert_eq!(
            target_size(640, 480, &req(96, 96, ResizeMethod::Crop)),
            (96, 96)
        );
        assert_eq!(
            target_size(640, 40, &req(96, 96, ResizeMethod::Crop)),
            (96, 40)
        );
    }
}
