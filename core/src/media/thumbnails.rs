//! Thumbnails: the fixed sizes a request snaps to, and making one from a stored image.
//!
//! A thumbnail is made on first request, one at a time, from an image whose dimensions are
//! checked before anything is decoded, and kept as a blob like any upload.

use std::{fs::File, io::BufReader, time::Duration};

use axum::{body::Bytes, http::StatusCode};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::{
    Content, Media,
    body::{self, ContentBody},
};
use crate::{
    error::{Error, ErrorCode, MatrixError, Result},
    storage::{
        media::{self as store, Blob, ThumbnailKey, ThumbnailRow},
        now_ms,
    },
};

/// Largest image (width × height) a thumbnail is made from. 4096 × 4096 covers the 12 MP
/// photos phone cameras save; bigger images are refused before they are decoded.
pub const MAX_THUMBNAIL_SOURCE_PIXELS: u64 = 4096 * 4096;
/// Largest width or height of an image a thumbnail is made from.
pub const MAX_THUMBNAIL_SOURCE_SIDE: u32 = 16_384;
/// Most memory the decoder of one image may allocate. Thumbnails are made one at a time, so
/// this bounds the memory thumbnailing takes.
pub const MAX_THUMBNAIL_DECODE_BYTES: u64 = 80 * 1024 * 1024;

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

impl Media {
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
                body: body::open(&self.blobs, source).await?,
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

    async fn cached_thumbnail(&self, key: &ThumbnailKey) -> Result<Option<ThumbnailRow>> {
        let key = key.clone();
        self.db.read(move |c| store::get_thumbnail(c, &key)).await
    }

    async fn thumbnail_content(&self, row: ThumbnailRow) -> Result<Content> {
        Ok(Content {
            content_type: row.content_type,
            filename: None,
            body: body::open(&self.blobs, row.blob).await?,
        })
    }
}

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
