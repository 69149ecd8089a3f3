//! The media repository: uploads, downloads over the authenticated and the deprecated
//! endpoints, asynchronous uploads, thumbnails, limits, and media surviving a restart.
//!
//! Ports these Complement scenarios (matrix-org/complement): `TestMediaWithoutFileName`
//! (tests/media_nofilename_test.go), `TestContent` and `TestContentCSAPIMediaV1`
//! (tests/csapi/apidoc_content_test.go), `TestMediaFilenames` (tests/media_filename_test.go,
//! Complement's upload-and-download-by-name scenarios; it has no `TestUploadFile`),
//! `TestAsyncUpload` (tests/csapi/media_async_uploads_test.go), `TestMediaConfig`
//! (tests/csapi/media_misc_test.go) and `TestLocalPngThumbnail`
//! (tests/media_thumbnail_test.go). Their federation halves wait for federation; until then
//! media of another server is a 404.

use std::path::Path;

use neurite_tests::{
    RawResponse, TestNode, User, assert_error, enc,
    png::{gradient_png, png_size, png_with},
    split_mxc,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V1: &str = "/_matrix/client/v1/media";
const V3: &str = "/_matrix/media/v3";

fn download_path(base: &str, mxc: &str, filename: Option<&str>) -> String {
    let (server, media) = split_mxc(mxc);
    let mut path = format!("{base}/download/{}/{}", enc(&server), enc(&media));
    if let Some(name) = filename {
        path.push('/');
        path.push_str(&enc(name));
    }
    path
}

fn thumbnail_path(base: &str, mxc: &str, query: &str) -> String {
    let (server, media) = split_mxc(mxc);
    format!("{base}/thumbnail/{}/{}?{query}", enc(&server), enc(&media))
}

/// The MIME type of a `Content-Type` header, without parameters.
fn mime(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses a `Content-Disposition` header like Go's `mime.ParseMediaType` does for Complement:
/// returns the disposition type and the file name (`filename*` decoded, if present).
fn disposition(header: &str) -> (String, Option<String>) {
    let (kind, mut rest) = header.split_once(';').unwrap_or((header, ""));
    let mut filename = None;
    let mut filename_star = None;
    loop {
        rest = rest.trim_start_matches([' ', ';']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=').expect("parameter has a value");
        let key = key.trim().to_ascii_lowercase();
        let value;
        if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().expect("escaped char").1),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end..];
        } else {
            let end = after.find(';').unwrap_or(after.len());
            value = after[..end].trim().to_owned();
            rest = &after[end..];
        }
        match key.as_str() {
            "filename" => filename = Some(value),
            "filename*" => {
                let encoded = value
                    .strip_prefix("utf-8''")
                    .or_else(|| value.strip_prefix("UTF-8''"))
                    .expect("filename* in UTF-8");
                filename_star = Some(
                    percent_encoding::percent_decode_str(encoded)
                        .decode_utf8()
                        .expect("utf-8 file name")
                        .into_owned(),
                );
            }
            _ => {}
        }
    }
    (kind.trim().to_ascii_lowercase(), filename_star.or(filename))
}

/// Checks the headers every served piece of media carries.
#[track_caller]
fn assert_media_headers(resp: &RawResponse) {
    let csp = resp.header("content-security-policy");
    assert!(
        csp.starts_with("sandbox;") && csp.contains("default-src 'none'"),
        "CSP: {csp}"
    );
    assert_eq!(resp.header("cross-origin-resource-policy"), "cross-origin");
    assert_eq!(resp.header("x-content-type-options"), "nosniff");
}

/// Every file under a folder, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn create_media(user: &User) -> String {
    let body = user.post_ok("/_matrix/media/v1/create", json!({})).await;
    assert!(body["unused_expires_at"].is_i64(), "{body}");
    body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned()
}

async fn upload_to(user: &User, mxc: &str, bytes: &[u8], name: &str, ct: &str) -> RawResponse {
    let (server, media) = split_mxc(mxc);
    user.raw(
        Method::PUT,
        &format!(
            "{V3}/upload/{}/{}?filename={}",
            enc(&server),
            enc(&media),
            enc(name)
        ),
        &[("content-type", ct)],
        Some(bytes.to_vec()),
    )
    .await
}

// ---------------------------------------------------------------- Complement ports

/// TestMediaWithoutFileName: upload without a file name; download it locally.
#[tokio::test]
async fn upload_and_download_without_a_file_name() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let file = b"Hello World!";
    let mxc = alice.upload_ok(file, None, Some("text/plain")).await;
    let (server, media) = split_mxc(&mxc);
    assert_eq!(server, node.server_name());
    assert!(
        media.len() >= 24
            && media
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "media id {media}"
    );
    for resp in [
        node.raw(Method::GET, &download_path(V3, &mxc, None), None, &[], None)
            .await,
        alice.get_raw(&download_path(V1, &mxc, None)).await,
    ] {
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(mime(&resp.header("content-type")), "text/plain");
        assert_eq!(resp.body, file);
        assert_eq!(
            disposition(&resp.header("content-disposition")),
            ("inline".into(), None)
        );
        assert_media_headers(&resp);
    }
}

/// TestContent and TestContentCSAPIMediaV1: the bytes and content type round-trip, and the
/// authenticated endpoint needs a token.
#[tokio::test]
async fn content_round_trips_and_authenticated_download_needs_a_token() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let png = gradient_png(16, 16);
    let mxc = alice
        .upload_ok(&png, Some("test.png"), Some("image/png"))
        .await;
    let resp = node
        .raw(Method::GET, &download_path(V3, &mxc, None), None, &[], None)
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, png);
    assert_eq!(resp.header("content-type"), "image/png");
    assert_eq!(resp.header("content-length"), png.len().to_string());

    // The content type comes back exactly as uploaded, even a wrong one.
    let mxc = alice
        .upload_ok(&png, Some("test.png"), Some("img/png"))
        .await;
    let resp = alice.get_raw(&download_path(V1, &mxc, None)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, png);
    assert_eq!(resp.header("content-type"), "img/png");

    // Without a token, or with a wrong one, the authenticated endpoints answer 401.
    for path in [
        download_path(V1, &mxc, None),
        download_path(V1, &mxc, Some("other.png")),
        thumbnail_path(V1, &mxc, "width=32&height=32&method=scale"),
        format!("{V1}/config"),
    ] {
        let resp = node.raw(Method::GET, &path, None, &[], None).await;
        assert_error(&resp.as_error(), 401, "M_MISSING_TOKEN");
        let resp = node
            .raw(Method::GET, &path, Some("not-a-token"), &[], None)
            .await;
        assert_error(&resp.as_error(), 401, "M_UNKNOWN_TOKEN");
    }
    // Uploading needs a token too.
    let resp = node
        .raw(Method::POST, &format!("{V3}/upload"), None, &[], Some(png))
        .await;
    assert_error(&resp.as_error(), 401, "M_MISSING_TOKEN");
}

/// TestMediaFilenames: file names survive the round trip (ASCII, with spaces and semicolons,
/// Unicode), can be replaced at download, and decide nothing about inline/attachment: the
/// content type does.
#[tokio::test]
async fn file_names_round_trip_and_unsafe_types_are_attachments() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let png = gradient_png(8, 8);
    for name in [
        "ascii",
        "name with spaces",
        "name;with;semicolons",
        "\u{1F414}",
    ] {
        let mxc = alice.upload_ok(&png, Some(name), Some("image/png")).await;
        for base in [V3, V1] {
            let resp = alice.get_raw(&download_path(base, &mxc, None)).await;
            assert_eq!(resp.status, StatusCode::OK);
            let (kind, filename) = disposition(&resp.header("content-disposition"));
            assert_eq!(kind, "inline", "{name} over {base}");
            assert_eq!(filename.as_deref(), Some(name), "over {base}");
        }
        // A different name given in the path replaces the uploaded one.
        for other in ["file.png", "\u{2615}"] {
            for base in [V3, V1] {
                let resp = alice.get_raw(&download_path(base, &mxc, Some(other))).await;
                assert_eq!(resp.status, StatusCode::OK);
                assert_eq!(resp.body, png);
                let (_, filename) = disposition(&resp.header("content-disposition"));
                assert_eq!(filename.as_deref(), Some(other));
            }
        }
    }

    // Safe types with parameters and odd case are inline; others are attachments.
    let cases = [
        ("Text/Plain; charset=utf-8", "inline"),
        ("image/png", "inline"),
        ("image/svg", "attachment"),
        ("image/svg+xml", "attachment"),
        ("text/html", "attachment"),
        ("application/octet-stream", "attachment"),
    ];
    for (content_type, expected) in cases {
        let mxc = alice.upload_ok(b"<svg/>", None, Some(content_type)).await;
        for base in [V3, V1] {
            let resp = alice.get_raw(&download_path(base, &mxc, None)).await;
            assert_eq!(resp.header("content-type"), content_type);
            let (kind, filename) = disposition(&resp.header("content-disposition"));
            assert_eq!(kind, expected, "{content_type} over {base}");
            assert_eq!(filename, None);
            assert_media_headers(&resp);
        }
    }

    // Without a Content-Type header, media is served as application/octet-stream.
    let mxc = alice.upload_ok(b"bytes", None, None).await;
    let resp = alice.get_raw(&download_path(V1, &mxc, None)).await;
    assert_eq!(resp.header("content-type"), "application/octet-stream");
    assert_eq!(
        disposition(&resp.header("content-disposition")).0,
        "attachment"
    );
}

/// TestMediaConfig: the upload limit is advertised on both config endpoints.
#[tokio::test]
async fn media_config_advertises_the_upload_limit() {
    let node = TestNode::start_with(|c| c.max_upload_bytes = 12_345).await;
    let alice = node.register("alice").await;
    for path in [
        format!("{V1}/config"),
        format!("{V3}/config"),
        "/_matrix/media/r0/config".to_owned(),
    ] {
        let body = alice.get_ok(&path).await;
        assert_eq!(body["m.upload.size"], 12_345, "{path}");
    }
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let body = alice.get_ok(&format!("{V1}/config")).await;
    assert_eq!(body["m.upload.size"], 50 * 1024 * 1024);
    // Clients learn from /versions that the authenticated endpoints exist.
    let (_, versions) = node
        .request(Method::GET, "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(
        versions["unstable_features"]["org.matrix.msc3916.stable"],
        true
    );
}

/// TestAsyncUpload: create an mxc id, find it not yet uploaded, upload to it once only, then
/// download it.
#[tokio::test]
async fn async_upload_creates_then_uploads_once() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let png = gradient_png(4, 4);

    let mxc = create_media(&alice).await;
    let (server, _) = split_mxc(&mxc);
    assert_eq!(server, node.server_name());
    let resp = alice
        .get_raw(&format!("{}?timeout_ms=100", download_path(V3, &mxc, None)))
        .await;
    assert_error(&resp.as_error(), 504, "M_NOT_YET_UPLOADED");
    let resp = alice
        .get_raw(&format!(
            "{}&timeout_ms=100",
            thumbnail_path(V1, &mxc, "width=8&height=8")
        ))
        .await;
    assert_error(&resp.as_error(), 504, "M_NOT_YET_UPLOADED");

    // Only the creator may upload; unknown ids are 404.
    let resp = upload_to(&bob, &mxc, &png, "test.png", "image/png").await;
    assert_error(&resp.as_error(), 403, "M_FORBIDDEN");
    let unknown = format!("mxc://{}/NoSuchMediaId", node.server_name());
    let resp = upload_to(&alice, &unknown, &png, "test.png", "image/png").await;
    assert_error(&resp.as_error(), 404, "M_NOT_FOUND");

    // A download waiting for the content gets it as soon as it is uploaded.
    let listening = node.listeners();
    let waiting = {
        let alice = alice.clone();
        let path = format!("{}?timeout_ms=15000", download_path(V1, &mxc, None));
        tokio::spawn(async move { alice.get_raw(&path).await })
    };
    node.until_listening(listening).await;
    let resp = upload_to(&alice, &mxc, &png, "test.png", "image/png").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json(), json!({}));
    let resp = waiting.await.expect("waiting download");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, png);
    assert_eq!(resp.header("content-type"), "image/png");
    let (_, filename) = disposition(&resp.header("content-disposition"));
    assert_eq!(filename.as_deref(), Some("test.png"));

    // Uploading again to the same id is refused, whatever the body.
    let resp = upload_to(&alice, &mxc, b"other", "x", "text/plain").await;
    assert_error(&resp.as_error(), 409, "M_CANNOT_OVERWRITE_MEDIA");
    let resp = alice.get_raw(&download_path(V3, &mxc, None)).await;
    assert_eq!(resp.body, png);
}

/// TestLocalPngThumbnail: a PNG can be thumbnailed over both endpoints.
#[tokio::test]
async fn png_thumbnails_have_the_requested_bounds() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let png = gradient_png(640, 480);
    let mxc = alice
        .upload_ok(&png, Some("test.png"), Some("image/png"))
        .await;

    for base in [V1, V3] {
        // crop: exactly the requested size.
        let resp = alice
            .get_raw(&thumbnail_path(
                base,
                &mxc,
                "width=96&height=96&method=crop",
            ))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(resp.header("content-type"), "image/png");
        assert_eq!(png_size(&resp.body), (96, 96));
        let (kind, filename) = disposition(&resp.header("content-disposition"));
        assert_eq!(kind, "inline");
        assert_eq!(filename.as_deref(), Some("thumbnail.png"));
        assert_media_headers(&resp);

        // scale: the aspect ratio kept, never smaller than asked for. Sizes snap to the
        // fixed set: 32×32 scaled is the 320×240 thumbnail.
        let resp = alice
            .get_raw(&thumbnail_path(
                base,
                &mxc,
                "width=32&height=32&method=scale",
            ))
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(png_size(&resp.body), (320, 240));
        let resp = alice
            .get_raw(&thumbnail_path(base, &mxc, "width=320&height=100"))
            .await;
        assert_eq!(png_size(&resp.body), (320, 240));
    }

    // Asking for more than the image has returns the image itself: never upscaled.
    let resp = alice
        .get_raw(&thumbnail_path(
            V1,
            &mxc,
            "width=800&height=600&method=scale",
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, png);
    assert_eq!(resp.header("content-type"), "image/png");

    // A second request is served from the cache, byte for byte.
    let first = alice
        .get_raw(&thumbnail_path(V1, &mxc, "width=96&height=96&method=crop"))
        .await;
    let again = alice
        .get_raw(&thumbnail_path(V1, &mxc, "width=96&height=96&method=crop"))
        .await;
    assert_eq!(first.body, again.body);
    // Thumbnails are blobs too: the original and the two distinct thumbnails (96×96 crop,
    // 320×240 scale).
    assert_eq!(files_under(&node.dir.path().join("media/blobs")).len(), 3);
}

// ---------------------------------------------------------------- our own scenarios

#[tokio::test]
async fn thumbnail_requests_are_validated() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let png = gradient_png(64, 64);
    let mxc = alice.upload_ok(&png, None, Some("image/png")).await;
    let cases = [
        ("height=32", 400, "M_MISSING_PARAM"),
        ("width=32", 400, "M_MISSING_PARAM"),
        ("width=abc&height=32", 400, "M_INVALID_PARAM"),
        ("width=-1&height=32", 400, "M_INVALID_PARAM"),
        ("width=0&height=32", 400, "M_INVALID_PARAM"),
        ("width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"),
        ("width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM"),
    ];
    for (query, status, errcode) in cases {
        let resp = alice.get_raw(&thumbnail_path(V1, &mxc, query)).await;
        assert_error(&resp.as_error(), status, errcode);
    }
    // Content that is not an image cannot be thumbnailed.
    let text = alice
        .upload_ok(b"just text", None, Some("text/plain"))
        .await;
    let resp = alice
        .get_raw(&thumbnail_path(V1, &text, "width=32&height=32"))
        .await;
    assert_error(&resp.as_error(), 400, "M_UNKNOWN");
    // An image that claims a wrong type is thumbnailed by what it is.
    let disguised = alice.upload_ok(&png, None, Some("text/plain")).await;
    let resp = alice
        .get_raw(&thumbnail_path(
            V1,
            &disguised,
            "width=32&height=32&method=crop",
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-type"), "image/png");
    assert_eq!(png_size(&resp.body), (32, 32));
}

#[tokio::test]
async fn gifs_are_animated_only_when_asked() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // The classic 43-byte 1×1 GIF.
    let gif: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";
    let mxc = alice
        .upload_ok(gif, Some("dot.gif"), Some("image/gif"))
        .await;
    for (query, content_type) in [
        ("width=32&height=32", "image/png"),
        ("width=32&height=32&animated=true", "image/gif"),
        ("width=32&height=32&animated=false", "image/png"),
        ("width=32&height=32&animated=true", "image/gif"),
    ] {
        let resp = alice.get_raw(&thumbnail_path(V1, &mxc, query)).await;
        assert_eq!(resp.status, StatusCode::OK, "{query}");
        assert_eq!(resp.header("content-type"), content_type, "{query}");
        if content_type == "image/gif" {
            assert_eq!(resp.body, gif);
        } else {
            assert_eq!(png_size(&resp.body), (1, 1));
        }
    }
}

#[tokio::test]
async fn decompression_bombs_are_refused_before_decoding() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // A few hundred bytes that claim to be 100 000 × 100 000 pixels (30 GB decoded), and one
    // whose sides are each allowed but whose area is not.
    for (w, h) in [(100_000, 100_000), (16_000, 16_000)] {
        let bomb = png_with(w, h, &[0; 64]);
        let mxc = alice.upload_ok(&bomb, None, Some("image/png")).await;
        let resp = alice
            .get_raw(&thumbnail_path(V1, &mxc, "width=32&height=32"))
            .await;
        assert_error(&resp.as_error(), 413, "M_TOO_LARGE");
    }
    // A corrupt image is a 400, not a 500 (cropped, so that it is decoded: a scaled
    // thumbnail of a 64×64 image is the image itself).
    let broken = png_with(64, 64, &[0; 10]);
    let mxc = alice.upload_ok(&broken, None, Some("image/png")).await;
    let resp = alice
        .get_raw(&thumbnail_path(V1, &mxc, "width=32&height=32&method=crop"))
        .await;
    assert_error(&resp.as_error(), 400, "M_UNKNOWN");
}

#[tokio::test]
async fn oversize_uploads_are_refused_with_too_large() {
    let node = TestNode::start_with(|c| c.max_upload_bytes = 1024).await;
    let alice = node.register("alice").await;
    let (status, body) = alice.upload(&[7u8; 1025], Some("big"), None).await;
    assert_error(&(status, body), 413, "M_TOO_LARGE");
    // Exactly the limit is fine.
    let mxc = alice.upload_ok(&[7u8; 1024], Some("ok"), None).await;
    let resp = alice.get_raw(&download_path(V1, &mxc, None)).await;
    assert_eq!(resp.body.len(), 1024);
    // Async uploads have the same limit.
    let created = create_media(&alice).await;
    let resp = upload_to(&alice, &created, &[7u8; 2048], "big", "text/plain").await;
    assert_error(&resp.as_error(), 413, "M_TOO_LARGE");

    // A chunked body (no Content-Length) is cut off once it passes the limit.
    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {V3}/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.token
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    for _ in 0..3 {
        stream
            .write_all(format!("{:x}\r\n", 512).as_bytes())
            .await
            .expect("chunk size");
        stream.write_all(&[1u8; 512]).await.expect("chunk");
        stream.write_all(b"\r\n").await.expect("chunk end");
    }
    stream.write_all(b"0\r\n\r\n").await.expect("last chunk");
    let mut response = Vec::new();
    tokio::time::timeout(neurite_tests::WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("M_TOO_LARGE"), "{response}");
    // Nothing of the refused uploads is left behind.
    assert!(files_under(&node.dir.path().join("media/tmp")).is_empty());
    assert_eq!(files_under(&node.dir.path().join("media/blobs")).len(), 1);
}

#[tokio::test]
async fn uploads_are_not_bound_by_the_json_body_limit() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // Larger than the 1 MiB JSON limit, and than one write batch.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mxc = alice
        .upload_ok(&big, Some("big.bin"), Some("application/octet-stream"))
        .await;
    let resp = alice.get_raw(&download_path(V1, &mxc, None)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-length"), big.len().to_string());
    assert!(resp.body == big, "downloaded bytes differ");
}

#[tokio::test]
async fn unknown_and_remote_media_are_not_found() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let local = format!("mxc://{}/NoSuchMediaId", node.server_name());
    // Another node's media: there is no federation yet.
    let other = TestNode::start().await;
    let bob = other.register("bob").await;
    let remote = bob
        .upload_ok(b"Hello from the other side", None, Some("text/plain"))
        .await;
    let malformed = format!("mxc://{}/..%2F..%2Fneurite.db", node.server_name());
    for mxc in [&local, &remote, &malformed] {
        for base in [V1, V3] {
            let resp = alice.get_raw(&download_path(base, mxc, None)).await;
            assert_error(&resp.as_error(), 404, "M_NOT_FOUND");
            let resp = alice
                .get_raw(&download_path(base, mxc, Some("name.txt")))
                .await;
            assert_error(&resp.as_error(), 404, "M_NOT_FOUND");
            let resp = alice
                .get_raw(&thumbnail_path(base, mxc, "width=32&height=32"))
                .await;
            assert_error(&resp.as_error(), 404, "M_NOT_FOUND");
        }
    }
}

#[tokio::test]
async fn identical_uploads_are_stored_once() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let bytes = b"the same bytes, twice".to_vec();
    let first = alice
        .upload_ok(&bytes, Some("a.txt"), Some("text/plain"))
        .await;
    let second = bob.upload_ok(&bytes, Some("b.bin"), None).await;
    assert_ne!(first, second, "each upload gets its own media id");
    let blobs = files_under(&node.dir.path().join("media/blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(std::fs::read(&blobs[0]).expect("blob"), bytes);
    assert!(files_under(&node.dir.path().join("media/tmp")).is_empty());
    // Each keeps its own metadata.
    let a = alice.get_raw(&download_path(V1, &first, None)).await;
    let b = alice.get_raw(&download_path(V1, &second, None)).await;
    assert_eq!((a.body.clone(), b.body.clone()), (bytes.clone(), bytes));
    assert_eq!(a.header("content-type"), "text/plain");
    assert_eq!(b.header("content-type"), "application/octet-stream");
    assert_eq!(
        disposition(&a.header("content-disposition")).1.as_deref(),
        Some("a.txt")
    );
    assert_eq!(
        disposition(&b.header("content-disposition")).1.as_deref(),
        Some("b.bin")
    );
}

#[tokio::test]
async fn media_survives_a_restart() {
    let node = TestNode::start().await;
    let server_name = node.server_name();
    let alice = node.register("alice").await;
    let png = gradient_png(200, 100);
    let mxc = alice
        .upload_ok(&png, Some("photo.png"), Some("image/png"))
        .await;
    let thumb = alice
        .get_raw(&thumbnail_path(V1, &mxc, "width=96&height=96&method=crop"))
        .await;
    assert_eq!(png_size(&thumb.body), (96, 96));
    let pending = create_media(&alice).await;

    let dir = node.stop().await;
    let node = TestNode::start_in(dir, |_| {}).await;
    assert_eq!(node.server_name(), server_name);
    let alice = node.login("alice", "correct horse").await;
    let resp = alice.get_raw(&download_path(V1, &mxc, None)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, png);
    assert_eq!(resp.header("content-type"), "image/png");
    assert_eq!(
        disposition(&resp.header("content-disposition"))
            .1
            .as_deref(),
        Some("photo.png")
    );
    let again = alice
        .get_raw(&thumbnail_path(V1, &mxc, "width=96&height=96&method=crop"))
        .await;
    assert_eq!(again.body, thumb.body);
    // A pending upload made before the restart can still be completed.
    let resp = upload_to(&alice, &pending, b"later", "later.txt", "text/plain").await;
    assert_eq!(resp.status, StatusCode::OK);
    let resp = alice.get_raw(&download_path(V1, &pending, None)).await;
    assert_eq!(resp.body, b"later");
}
