//! Profile images through the Frontend API: a signed-in user sets and
//! removes their own image, which the HTTP port then serves (or no longer
//! serves). The Backend API's uploads, both stores and the refusals are
//! covered by tests/python/test_profile_images.py.

use std::io::Cursor;

use roster_client::v1;
use v1::account_service_client::AccountServiceClient;
use v1::account_service_set_profile_image_request::Part;

use crate::account::{signed_in, user, with_auth};
use crate::harness::{Backend, TestServer, on_both_backends};

/// A `width` x `height` PNG of distinct pixels.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(width, height, |x, y| {
        let byte = |v: u32| u8::try_from(v % 256).unwrap();
        image::Rgba([byte(x * 9), byte(y * 5), byte(x ^ y), 255])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// An AccountService upload of `bytes`, in 1 KiB chunks.
pub fn account_upload(bytes: &[u8]) -> Vec<v1::AccountServiceSetProfileImageRequest> {
    let first = v1::AccountServiceSetProfileImageRequest {
        part: Some(Part::Upload(v1::AccountProfileImageUpload {
            file_name: "me.png".into(),
        })),
    };
    std::iter::once(first)
        .chain(
            bytes
                .chunks(1024)
                .map(|c| v1::AccountServiceSetProfileImageRequest {
                    part: Some(Part::Chunk(c.to_vec())),
                }),
        )
        .collect()
}

async fn a_signed_in_user_sets_and_removes_their_image(backend: Backend) {
    roster_server::delivery::ensure_crypto_provider();
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let me = user(&mut c, "ines@example.com").await;
    let other = user(&mut c, "olaf@example.com").await;
    let session = signed_in(&server, "ines@example.com").await;
    let auth = format!("Bearer {}", session.session_token);
    let mut account = AccountServiceClient::connect(server.endpoint())
        .await
        .unwrap();

    let file = png(40, 30);
    let shown = account
        .set_profile_image(with_auth(
            tokio_stream::iter(account_upload(&file)),
            Some(&auth),
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(shown.has_image);
    let prefix = format!("http://{}/images/img_", server.http_addr);
    assert!(shown.image_url.starts_with(&prefix), "{}", shown.image_url);
    // The Backend API sees the same image; the other user is untouched.
    let seen = c.get_user(&me.id).await.unwrap();
    assert!(seen.has_image());
    assert!(!c.get_user(&other.id).await.unwrap().has_image());

    let response = reqwest::get(&shown.image_url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let pixels = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    let sent = image::load_from_memory(&file).unwrap();
    assert_eq!(pixels.to_rgba8(), sent.to_rgba8());

    let removed = account
        .delete_profile_image(with_auth(
            v1::AccountServiceDeleteProfileImageRequest {},
            Some(&auth),
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(!removed.has_image);
    assert!(
        removed.image_url.contains("/avatars/"),
        "{}",
        removed.image_url
    );
    assert_eq!(reqwest::get(&shown.image_url).await.unwrap().status(), 404);
    server.stop().await;
}

on_both_backends!(a_signed_in_user_sets_and_removes_their_image);
