//! EmailAddressService and PhoneNumberService over gRPC, and the primary
//! and last-identifier rules.

use prost_types::FieldMask;
use roster_client::v1;
use tonic::Code;

use crate::harness::{Backend, TestServer, failure, on_both_backends};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

async fn email_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["first@example.com".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let first = user.email_addresses[0].id.clone();
    let other = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["other@example.com".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let add = |email: &str, verified: bool, primary: bool| v1::CreateEmailAddressRequest {
        user_id: user.id.to_string(),
        email_address: email.into(),
        verified,
        primary,
    };
    let (code, reason) = failure(
        c.create_email_address(add("OTHER@example.com", true, false))
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::AlreadyExists, "IDENTIFIER_EXISTS")
    );
    assert_eq!(
        failure(
            c.create_email_address(add("x@example.com", false, true))
                .await
        )
        .1,
        "PRIMARY_NOT_VERIFIED"
    );
    assert_eq!(
        failure(
            c.create_email_address(add("bad address", true, false))
                .await
        )
        .1,
        "FORM_PARAM_FORMAT_INVALID"
    );

    let second = c
        .create_email_address(add("second@example.com", false, false))
        .await
        .unwrap();
    assert!(!second.verification.is_verified());
    assert_eq!(c.get_email_address(&second.id).await.unwrap(), second);
    // Making an unverified address primary is refused, through either API.
    let make_primary = v1::UpdateEmailAddressRequest {
        id: second.id.to_string(),
        primary: true,
        update_mask: mask(&["primary"]),
        ..Default::default()
    };
    assert_eq!(
        failure(c.update_email_address(make_primary.clone()).await).1,
        "PRIMARY_NOT_VERIFIED"
    );
    let via_user = v1::UpdateUserRequest {
        user: Some(v1::User {
            id: user.id.to_string(),
            primary_email_address_id: second.id.to_string(),
            ..Default::default()
        }),
        update_mask: mask(&["primary_email_address_id"]),
        password: String::new(),
        keep_sessions: false,
    };
    assert_eq!(
        failure(c.update_user(via_user.clone()).await),
        (Code::FailedPrecondition, "PRIMARY_NOT_VERIFIED".into())
    );
    // Another user's address is not this user's to choose.
    let mut foreign = via_user.clone();
    foreign.user.as_mut().unwrap().primary_email_address_id =
        other.email_addresses[0].id.to_string();
    assert_eq!(
        failure(c.update_user(foreign).await),
        (Code::InvalidArgument, "FORM_IDENTIFIER_NOT_FOUND".into())
    );

    // Verify and promote in one call.
    let verify_and_promote = v1::UpdateEmailAddressRequest {
        id: second.id.to_string(),
        verified: true,
        primary: true,
        update_mask: mask(&["verified", "primary"]),
    };
    c.update_email_address(verify_and_promote).await.unwrap();
    let after = c.get_user(&user.id).await.unwrap();
    assert_eq!(after.primary_email_address_id.as_ref(), Some(&second.id));
    // Unverifying the primary is refused.
    let unverify = v1::UpdateEmailAddressRequest {
        id: second.id.to_string(),
        verified: false,
        update_mask: mask(&["verified"]),
        ..Default::default()
    };
    assert_eq!(
        failure(c.update_email_address(unverify).await).1,
        "PRIMARY_NOT_VERIFIED"
    );
    let (code, reason) = failure(
        c.update_email_address(v1::UpdateEmailAddressRequest {
            id: second.id.to_string(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "FORM_PARAM_MISSING")
    );

    // Deleting the primary promotes the oldest remaining verified address.
    let third = c
        .create_email_address(add("third@example.com", true, false))
        .await
        .unwrap();
    let after = c.delete_email_address(&second.id).await.unwrap();
    assert_eq!(after.primary_email_address_id.as_ref(), Some(&first));
    assert_eq!(
        failure(c.get_email_address(&second.id).await).0,
        Code::NotFound
    );
    c.delete_email_address(&first).await.unwrap();
    let last = c.get_user(&user.id).await.unwrap();
    assert_eq!(last.primary_email_address_id.as_ref(), Some(&third.id));
    assert_eq!(
        failure(c.delete_email_address(&third.id).await),
        (Code::FailedPrecondition, "LAST_IDENTIFIER".into())
    );
    assert_eq!(c.get_user(&user.id).await.unwrap(), last);
    server.stop().await;
}

async fn phone_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            username: "phone_owner".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let add = |phone: &str, verified: bool, reserved: bool| v1::CreatePhoneNumberRequest {
        user_id: user.id.to_string(),
        phone_number: phone.into(),
        verified,
        primary: false,
        reserved_for_second_factor: reserved,
    };
    assert_eq!(
        failure(
            c.create_phone_number(add("+14155550101", false, true))
                .await
        )
        .1,
        "SECOND_FACTOR_NOT_VERIFIED"
    );
    assert_eq!(
        failure(c.create_phone_number(add("4155550101", true, false)).await).1,
        "FORM_PARAM_FORMAT_INVALID"
    );
    let a = c
        .create_phone_number(add("+1 415 555 0101", true, true))
        .await
        .unwrap();
    assert_eq!(a.phone.as_str(), "+14155550101");
    assert!(a.reserved_for_second_factor && a.default_second_factor);
    let b = c
        .create_phone_number(add("+44 20 7946 0958", false, false))
        .await
        .unwrap();
    let u = c.get_user(&user.id).await.unwrap();
    assert!(u.two_factor_enabled() && u.primary_phone_number_id.as_ref() == Some(&a.id));
    assert_eq!(
        failure(
            c.create_phone_number(add("+14155550101", true, false))
                .await
        )
        .0,
        Code::AlreadyExists
    );

    // Verify and reserve b; releasing a passes the default to b.
    let b2 = c
        .update_phone_number(v1::UpdatePhoneNumberRequest {
            id: b.id.to_string(),
            verified: true,
            reserved_for_second_factor: true,
            update_mask: mask(&["verified", "reserved_for_second_factor"]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(b2.reserved_for_second_factor && !b2.default_second_factor);
    c.update_phone_number(v1::UpdatePhoneNumberRequest {
        id: a.id.to_string(),
        update_mask: mask(&["reserved_for_second_factor"]),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        c.get_phone_number(&b.id)
            .await
            .unwrap()
            .default_second_factor
    );
    // Deleting the primary number promotes the other verified one.
    let after = c.delete_phone_number(&a.id).await.unwrap();
    assert_eq!(after.primary_phone_number_id.as_ref(), Some(&b.id));
    assert_eq!(failure(c.get_phone_number(&a.id).await).0, Code::NotFound);
    server.stop().await;
}

async fn unverified_identifiers_are_not_primary(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["later@example.com".into()],
            phone_numbers: vec!["+14155550109".into()],
            unverified_identifiers: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(user.primary_email_address_id.is_none() && user.primary_phone_number_id.is_none());
    let verified = c
        .update_email_address(v1::UpdateEmailAddressRequest {
            id: user.email_addresses[0].id.to_string(),
            verified: true,
            update_mask: mask(&["verified"]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        c.get_user(&user.id).await.unwrap().primary_email_address_id,
        Some(verified.id)
    );
    server.stop().await;
}

on_both_backends!(
    email_rules,
    phone_rules,
    unverified_identifiers_are_not_primary
);
