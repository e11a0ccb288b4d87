//! Profile images: receiving uploads, checking and re-encoding them, keeping
//! them in an object store (a local directory or S3), and the default
//! avatar served when a user has none.
//!
//! An upload is read into memory up to [`MAX_UPLOAD_BYTES`] (and refused the
//! moment it passes that), decoded under dimension and allocation limits,
//! and re-encoded in its own format, which drops EXIF, GPS and every other
//! metadata block. The object is written under a new image id before the
//! user row points to it; the row's previous image is removed once the
//! change is committed, and the new object is removed again if the change
//! fails, so no object outlives its reference.

use std::io::Cursor;
use std::sync::Arc;

use image::{DynamicImage, ImageDecoder as _, ImageReader, Limits};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use roster_domain::{
    DomainError, ImageFormat, ImageId, ProfileImage, User, UserId, UserRecord, reason,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Streaming;

use crate::AppState;
use crate::error::ApiError;

/// Largest upload accepted: 10 MiB, Clerk's limit.
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// Longest side of an accepted image, in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Most pixels an accepted image may have: 25 megapixels.
pub const MAX_PIXELS: u64 = 25_000_000;
/// Most memory one decode may allocate, so a small file that claims huge
/// dimensions (a decompression bomb) is refused instead of decoded.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Longest file name accepted with an upload.
const MAX_FILE_NAME_BYTES: usize = 255;
/// Most uploads received at once. Each buffers up to [`MAX_UPLOAD_BYTES`],
/// so this bounds their memory (160 MiB); more are refused with
/// RESOURCE_EXHAUSTED (`UPLOADS_BUSY`) rather than queued.
const MAX_CONCURRENT_UPLOADS: usize = 16;
/// Quality re-encoded JPEGs are written at.
const JPEG_QUALITY: u8 = 90;

/// Why the image store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("creating the image directory {path}: {source}")]
    Directory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the image store URL must be a directory path or s3://bucket[/prefix], not {0:?}")]
    Url(String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// Where profile images are kept and how their URLs begin.
#[derive(Clone, Debug)]
pub struct Images {
    store: Arc<dyn ObjectStore>,
    /// Prefix of every object's path.
    root: ObjectPath,
    /// Base of every image URL: where Roster's HTTP port is reachable.
    public_url: String,
    /// Bounds the decodes running at once, and so their memory.
    decoding: Arc<Semaphore>,
    /// Bounds the uploads being received and processed at once.
    uploads: Arc<Semaphore>,
}

/// A received upload's bytes, holding its slot until they are stored.
#[derive(Debug)]
pub struct Upload {
    bytes: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

impl Images {
    /// Images in `store` under `root`, linked from `public_url`.
    pub fn new(store: Arc<dyn ObjectStore>, root: ObjectPath, public_url: &str) -> Self {
        Self {
            store,
            root,
            public_url: public_url.trim_end_matches('/').to_owned(),
            // One decode at a time: each may take up to MAX_DECODE_BYTES,
            // plus a copy when EXIF orientation rotates it.
            decoding: Arc::new(Semaphore::new(1)),
            uploads: Arc::new(Semaphore::new(MAX_CONCURRENT_UPLOADS)),
        }
    }

    /// Opens the store `location` names: `s3://bucket[/prefix]` (endpoint,
    /// region and credentials from the standard `AWS_*` variables) or a
    /// local directory, created if missing.
    pub fn open(location: &str, public_url: &str) -> Result<Self, ImageStoreError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ImageStoreError::Url(location.to_owned()));
            }
            crate::delivery::ensure_crypto_provider();
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            let root = ObjectPath::parse(prefix.trim_matches('/'))
                .map_err(|_| ImageStoreError::Url(location.to_owned()))?;
            return Ok(Self::new(Arc::new(store), root, public_url));
        }
        if location.contains("://") {
            return Err(ImageStoreError::Url(location.to_owned()));
        }
        let dir = std::path::PathBuf::from(location);
        std::fs::create_dir_all(&dir).map_err(|source| ImageStoreError::Directory {
            path: dir.clone(),
            source,
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
        Ok(Self::new(
            Arc::new(store),
            ObjectPath::default(),
            public_url,
        ))
    }

    /// The base URL images and avatars are linked from.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    fn path(&self, image: &ProfileImage) -> ObjectPath {
        self.root.clone().join(image.file_name())
    }

    /// Checks and re-encodes an upload off the async threads, one at a
    /// time.
    pub async fn reencode(&self, bytes: Vec<u8>) -> Result<(ImageFormat, Vec<u8>), ApiError> {
        let _permit = self
            .decoding
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("image decoding semaphore closed"))?;
        Ok(tokio::task::spawn_blocking(move || reencode(&bytes)).await??)
    }

    /// Stores an image's bytes.
    pub async fn put(&self, image: &ProfileImage, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.store
            .put(&self.path(image), PutPayload::from(bytes))
            .await
            .map_err(ApiError::ImageStore)?;
        Ok(())
    }

    /// An image's bytes; `None` once it is removed.
    pub async fn get(&self, image: &ProfileImage) -> Result<Option<bytes::Bytes>, ApiError> {
        match self.store.get(&self.path(image)).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(ApiError::ImageStore)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ApiError::ImageStore(e)),
        }
    }

    /// Removes an image's object. A failure is logged, not returned: the
    /// change that dropped the image is committed already.
    pub async fn remove(&self, image: &ProfileImage) {
        match self.store.delete(&self.path(image)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, image = %image.id, "removing a profile image failed; its object is left behind");
            }
        }
    }

    /// Makes `bytes` the user's profile image: re-encodes them, stores the
    /// object, points the user at it and removes the image it replaces.
    pub async fn set(
        &self,
        state: &AppState,
        user_id: &UserId,
        upload: Upload,
    ) -> Result<User, ApiError> {
        let (format, encoded) = self.reencode(upload.bytes).await?;
        let now = state.clock.now();
        let image = ProfileImage {
            id: ImageId::generate(now),
            format,
        };
        self.put(&image, encoded).await?;
        // From here on the work runs in a task of its own, so a caller who
        // hangs up cannot leave the new object (or the replaced one)
        // behind.
        let (images, state, user_id) = (self.clone(), state.clone(), user_id.clone());
        tokio::spawn(async move {
            let mut replaced = None;
            let new = image.clone();
            let updated = state
                .users
                .update_user(
                    &user_id,
                    Box::new(|record: &mut UserRecord| {
                        replaced = record.user.set_image(new, now);
                        Ok(())
                    }),
                )
                .await;
            match updated {
                Ok(user) => {
                    if let Some(old) = replaced {
                        images.remove(&old).await;
                    }
                    tracing::info!(user_id = %user.id, image = %image.id, "profile image set");
                    Ok(user)
                }
                Err(e) => {
                    images.remove(&image).await;
                    Err(e.into())
                }
            }
        })
        .await?
    }

    /// Removes the user's profile image, if any, and its object.
    pub async fn delete(&self, state: &AppState, user_id: &UserId) -> Result<User, ApiError> {
        let now = state.clock.now();
        let mut removed = None;
        let user = state
            .users
            .update_user(
                user_id,
                Box::new(|record: &mut UserRecord| {
                    removed = record.user.remove_image(now);
                    Ok(())
                }),
            )
            .await?;
        if let Some(image) = removed {
            self.remove(&image).await;
            tracing::info!(user_id = %user.id, image = %image.id, "profile image removed");
        }
        Ok(user)
    }
}

/// A message of an upload stream, as the two services' types split.
#[derive(Debug)]
pub enum Part {
    /// The first message, with the file's name (possibly empty).
    Upload {
        file_name: String,
    },
    Chunk(Vec<u8>),
    /// A message with neither set.
    Empty,
}

/// Reads an upload stream: a first `upload` message, then chunks, refusing
/// it as soon as it passes [`MAX_UPLOAD_BYTES`].
pub async fn receive<M>(
    images: &Images,
    mut stream: Streaming<M>,
    mut split: impl FnMut(M) -> Result<Part, ApiError>,
) -> Result<Upload, ApiError> {
    let slot = images.uploads.clone().try_acquire_owned().map_err(|_| {
        ApiError::from(DomainError::RateLimited {
            reason: reason::UPLOADS_BUSY,
            message: "the server is receiving as many uploads as it can; retry shortly".to_owned(),
            retry_after_ms: 1000,
        })
    })?;
    let invalid = |field: &str, reason: &'static str, message: &str| -> ApiError {
        DomainError::invalid(field, reason, message).into()
    };
    let first = stream.message().await.map_err(ApiError::Stream)?;
    match first.map(&mut split).transpose()? {
        Some(Part::Upload { file_name }) if file_name.len() > MAX_FILE_NAME_BYTES => {
            return Err(invalid(
                "upload.file_name",
                reason::FORM_PARAM_FORMAT_INVALID,
                "the file name is longer than 255 bytes",
            ));
        }
        Some(Part::Upload { .. }) => {}
        _ => {
            return Err(invalid(
                "upload",
                reason::FORM_PARAM_MISSING,
                "the first message must be `upload`",
            ));
        }
    }
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await.map_err(ApiError::Stream)? {
        match split(message)? {
            Part::Chunk(chunk) => {
                if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
                    return Err(invalid(
                        "chunk",
                        reason::AVATAR_FILE_SIZE_EXCEEDED,
                        "the image is larger than 10 MiB",
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Part::Upload { .. } | Part::Empty => {
                return Err(invalid(
                    "chunk",
                    reason::FORM_PARAM_VALUE_INVALID,
                    "only the first message may be `upload`; the rest must be `chunk`s",
                ));
            }
        }
    }
    if bytes.is_empty() {
        return Err(invalid(
            "chunk",
            reason::FORM_PARAM_MISSING,
            "the image is empty",
        ));
    }
    Ok(Upload { bytes, _slot: slot })
}

fn type_invalid(message: impl Into<String>) -> DomainError {
    DomainError::invalid("chunk", reason::AVATAR_FILE_TYPE_INVALID, message)
}

/// Decodes `bytes` as whatever format their content is (never what a name
/// or a client says), within the limits, and encodes the image again in
/// that format. Only pixels survive: EXIF (its orientation applied first),
/// GPS, ICC and text chunks are gone, and an animated GIF keeps its first
/// frame.
pub fn reencode(bytes: &[u8]) -> Result<(ImageFormat, Vec<u8>), DomainError> {
    let unreadable = || type_invalid("the file is not a JPEG, PNG, GIF or WebP image");
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| unreadable())?;
    let format = match reader.format() {
        Some(image::ImageFormat::Jpeg) => ImageFormat::Jpeg,
        Some(image::ImageFormat::Png) => ImageFormat::Png,
        Some(image::ImageFormat::Gif) => ImageFormat::Gif,
        Some(image::ImageFormat::WebP) => ImageFormat::Webp,
        _ => return Err(unreadable()),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let too_large = || {
        type_invalid(format!(
            "the image is larger than {MAX_SIDE} pixels a side or {} megapixels",
            MAX_PIXELS / 1_000_000
        ))
    };
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        _ => unreadable(),
    })?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(too_large());
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut pixels = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        _ => unreadable(),
    })?;
    pixels.apply_orientation(orientation);
    let mut out = Cursor::new(Vec::new());
    let written = match format {
        ImageFormat::Jpeg => pixels.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY),
        ),
        ImageFormat::Png => pixels.write_to(&mut out, image::ImageFormat::Png),
        ImageFormat::Gif => pixels.write_to(&mut out, image::ImageFormat::Gif),
        ImageFormat::Webp => pixels.write_to(&mut out, image::ImageFormat::WebP),
    };
    written.map_err(|_| unreadable())?;
    Ok((format, out.into_inner()))
}

/// The default avatar: `initials` (already at most two letters) in white on
/// a circle whose hue comes from the user id, so it is stable per user.
pub fn avatar_svg(user_id: &str, initials: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(user_id.as_bytes());
    let hue = u16::from_be_bytes([digest[0], digest[1]]) % 360;
    let text: String = initials
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(2)
        .collect();
    format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">"#,
            r#"<rect width="128" height="128" fill="hsl({hue},55%,45%)"/>"#,
            r#"<text x="64" y="64" dy=".35em" text-anchor="middle" fill="white" "#,
            r#"font-family="Helvetica,Arial,sans-serif" font-size="52" font-weight="600">{text}</text>"#,
            "</svg>"
        ),
        hue = hue,
        text = text,
    )
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test pixels are reduced modulo 256 first"
)]
mod tests {
    use super::*;
    use image::{ImageEncoder as _, Rgb, RgbImage, Rgba, RgbaImage};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbaImage::from_fn(width, height, |x, y| {
            Rgba([(x * 7 % 256) as u8, (y * 13 % 256) as u8, 200, 255])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn png_pixels_survive_and_text_chunks_do_not() {
        let original = png(40, 30);
        // A tEXt chunk with a secret, inserted after IHDR.
        let mut with_text = original[..33].to_vec();
        let data = b"Comment\0GPS 52.5200 13.4050";
        with_text.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut chunk = b"tEXt".to_vec();
        chunk.extend_from_slice(data);
        with_text.extend_from_slice(&chunk);
        with_text.extend_from_slice(&crc32(&chunk).to_be_bytes());
        with_text.extend_from_slice(&original[33..]);
        assert!(image::load_from_memory(&with_text).is_ok());

        let (format, stored) = reencode(&with_text).unwrap();
        assert_eq!(format, ImageFormat::Png);
        assert!(!stored.windows(3).any(|w| w == b"GPS"));
        let a = image::load_from_memory(&original).unwrap().to_rgba8();
        let b = image::load_from_memory(&stored).unwrap().to_rgba8();
        assert_eq!(a, b);
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffff_u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn the_type_is_what_the_bytes_are() {
        for bytes in [
            b"just some text, named avatar.png".to_vec(),
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
            // A PNG signature followed by garbage.
            [b"\x89PNG\r\n\x1a\n".as_slice(), &[0u8; 64]].concat(),
        ] {
            let err = reencode(&bytes).unwrap_err();
            assert!(
                matches!(&err, DomainError::Invalid(v) if v.as_slice()[0].reason == reason::AVATAR_FILE_TYPE_INVALID),
                "{err:?}"
            );
        }
    }

    #[test]
    fn every_format_round_trips_in_its_own_format() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 8, |x, _| {
            Rgb([(x * 15 % 256) as u8, 0, 0])
        }));
        for (format, ours) in [
            (image::ImageFormat::Jpeg, ImageFormat::Jpeg),
            (image::ImageFormat::Png, ImageFormat::Png),
            (image::ImageFormat::Gif, ImageFormat::Gif),
            (image::ImageFormat::WebP, ImageFormat::Webp),
        ] {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).unwrap();
            let (detected, stored) = reencode(&out.into_inner()).unwrap();
            assert_eq!(detected, ours);
            let back = image::load_from_memory(&stored).unwrap();
            assert_eq!((back.width(), back.height()), (16, 8), "{format:?}");
        }
    }

    #[test]
    fn decompression_bombs_are_refused_before_decoding() {
        // A 20000 x 20000 PNG header: 1.6 GB of pixels claimed by a file of
        // a few hundred bytes.
        let mut out = Cursor::new(Vec::new());
        let encoder = image::codecs::png::PngEncoder::new(&mut out);
        let row = vec![0u8; 20_000];
        let mut all = Vec::new();
        for _ in 0..64 {
            all.extend_from_slice(&row);
        }
        encoder
            .write_image(&all, 20_000, 64, image::ExtendedColorType::L8)
            .unwrap();
        let mut bytes = out.into_inner();
        // Rewrite IHDR's height to 20000 (and its CRC) to claim the rest.
        bytes[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = reencode(&bytes).unwrap_err();
        assert!(err.to_string().contains("pixels a side"), "{err}");
    }

    #[test]
    fn exif_orientation_is_applied_then_dropped() {
        // A 4 x 2 JPEG with an EXIF block saying "rotate 90°" and a GPS tag.
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 2, Rgb([10, 200, 30])));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        let jpeg = out.into_inner();
        let exif = exif_rotate_90_with_gps();
        let mut app1 = vec![0xff, 0xe1];
        app1.extend_from_slice(&u16::try_from(exif.len() + 2).unwrap().to_be_bytes());
        app1.extend_from_slice(&exif);
        let tagged = [&jpeg[..2], &app1, &jpeg[2..]].concat();
        let (_, stored) = reencode(&tagged).unwrap();
        assert!(!stored.windows(4).any(|w| w == b"Exif"));
        let back = image::load_from_memory(&stored).unwrap();
        assert_eq!((back.width(), back.height()), (2, 4));
    }

    /// `Exif\0\0` + a little-endian TIFF with Orientation = 6 and a
    /// GPSInfo pointer.
    fn exif_rotate_90_with_gps() -> Vec<u8> {
        let mut t = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
        t.extend_from_slice(&2u16.to_le_bytes()); // two entries
        // Orientation (0x0112), SHORT, 1, value 6.
        t.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        // GPSInfo (0x8825), LONG, 1, offset 38 (an empty IFD).
        t.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 38, 0, 0, 0]);
        t.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        t.extend_from_slice(&0u16.to_le_bytes()); // the GPS IFD: no entries
        t.extend_from_slice(&0u32.to_le_bytes());
        t
    }

    #[test]
    fn avatars_escape_nothing_because_they_keep_only_letters() {
        let svg = avatar_svg("user_x", "<a&");
        assert!(svg.contains(">A<") || svg.contains(">a<"), "{svg}");
        assert!(!svg.contains("<a&"));
        assert_eq!(avatar_svg("user_x", "JD"), avatar_svg("user_x", "JD"));
        assert_ne!(avatar_svg("user_x", "JD"), avatar_svg("user_y", "JD"));
    }
}
