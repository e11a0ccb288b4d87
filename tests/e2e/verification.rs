//! Verification codes over gRPC: prepare with `return_code`, attempts,
//! expiry (with the server's clock moved, not slept), cooldown, and counting
//! under concurrency.

use roster_client::{Client, v1};
use roster_domain::{IdentificationId, User, VerificationStatus};
use tonic::Code;
use tonic_types::StatusExt as _;

use roster_server::delivery::Deliveries;
use roster_server::delivery::webhook::{WebhookDelivery, WebhookSecret};

use crate::harness::{Backend, TestServer, failure, on_both_backends};

async fn unverified_user(c: &mut Client) -> (User, IdentificationId, IdentificationId) {
    let user = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["code@example.com".into()],
            phone_numbers: vec!["+14155550123".into()],
            unverified_identifiers: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (email, phone) = (
        user.email_addresses[0].id.clone(),
        user.phone_numbers[0].id.clone(),
    );
    (user, email, phone)
}

fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn a_returned_code_verifies_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let (user, email, phone) = unverified_user(&mut c).await;

    let (prepared, code) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    let code = code.expect("return_code returns the code");
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(prepared.verification.status, VerificationStatus::Unverified);
    assert_eq!(
        prepared.verification.strategy,
        Some(roster_domain::VerificationStrategy::EmailCode)
    );
    assert!(prepared.verification.expire_at.is_some());
    // The stored code is a hash: it never comes back, and is never the code.
    assert!(prepared.verification.code.is_none());

    let err = c
        .attempt_email_address_verification(&email, &wrong(&code))
        .await
        .unwrap_err();
    let ClientError::Status(status) = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        (
            info.reason.as_str(),
            info.metadata.get("attempts_remaining").map(String::as_str)
        ),
        ("CODE_INCORRECT", Some("4"))
    );
    let (code_err, reason) = failure(c.attempt_email_address_verification(&email, "12ab56").await);
    assert_eq!(
        (code_err, reason.as_str()),
        (Code::InvalidArgument, "FORM_PARAM_FORMAT_INVALID")
    );

    let verified = c
        .attempt_email_address_verification(&email, &code)
        .await
        .unwrap();
    assert!(verified.verification.is_verified());
    assert_eq!(verified.verification.attempts, 2);
    let after = c.get_user(&user.id).await.unwrap();
    assert_eq!(
        after.primary_email_address_id,
        Some(email.clone()),
        "the first verified address becomes primary"
    );
    assert_eq!(
        failure(c.attempt_email_address_verification(&email, &code).await),
        (
            Code::FailedPrecondition,
            "VERIFICATION_ALREADY_VERIFIED".into()
        )
    );

    // Phones work the same way; without return_code (and no delivery
    // configured yet) nothing is sent and nothing changes.
    assert_eq!(
        failure(c.prepare_phone_number_verification(&phone, false).await).1,
        "DELIVERY_NOT_CONFIGURED"
    );
    assert_eq!(
        failure(c.attempt_phone_number_verification(&phone, "000000").await).1,
        "VERIFICATION_NOT_PREPARED"
    );
    let (_, code) = c
        .prepare_phone_number_verification(&phone, true)
        .await
        .unwrap();
    let phone_now = c
        .attempt_phone_number_verification(&phone, &code.unwrap())
        .await
        .unwrap();
    assert!(phone_now.verification.is_verified());
    assert_eq!(
        c.get_user(&user.id).await.unwrap().primary_phone_number_id,
        Some(phone)
    );
    server.stop().await;
}

use roster_client::ClientError;

async fn codes_expire_resends_wait_and_new_codes_replace_old(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let (_, email, _) = unverified_user(&mut c).await;
    let (_, first) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();

    // A second code within 30 s is refused with the time to wait.
    let err = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap_err();
    let ClientError::Status(status) = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "VERIFICATION_RESEND_TOO_SOON"
    );
    let delay = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(delay.as_secs() <= 30 && delay.as_secs() >= 29, "{delay:?}");

    // After the cooldown a new code replaces the first.
    server.clock.advance(30_000);
    let (_, second) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    let (first, second) = (first.unwrap(), second.unwrap());
    if first != second {
        assert_eq!(
            failure(c.attempt_email_address_verification(&email, &first).await).1,
            "CODE_INCORRECT"
        );
    }
    // Ten minutes later the code has expired, and the status says so.
    server.clock.advance(10 * 60 * 1000);
    assert_eq!(
        failure(c.attempt_email_address_verification(&email, &second).await),
        (Code::FailedPrecondition, "VERIFICATION_EXPIRED".into())
    );
    assert_eq!(
        c.get_email_address(&email)
            .await
            .unwrap()
            .verification
            .status,
        VerificationStatus::Expired
    );
    let (_, third) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    assert!(
        c.attempt_email_address_verification(&email, &third.unwrap())
            .await
            .unwrap()
            .verification
            .is_verified()
    );
    server.stop().await;
}

async fn concurrent_attempts_are_counted_one_by_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let (_, email, phone) = unverified_user(&mut c).await;
    let (_, code) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    let bad = wrong(&code.unwrap());
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (mut c, email, bad) = (c.clone(), email.clone(), bad.clone());
            tokio::spawn(async move { c.attempt_email_address_verification(&email, &bad).await })
        })
        .collect();
    let (mut incorrect, mut failed) = (0, 0);
    for call in calls {
        match failure(call.await.unwrap()).1.as_str() {
            "CODE_INCORRECT" => incorrect += 1,
            "VERIFICATION_FAILED" => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (incorrect, failed),
        (5, 15),
        "20 concurrent wrong codes evaluate exactly 5"
    );
    let v = c.get_email_address(&email).await.unwrap().verification;
    assert_eq!((v.status, v.attempts), (VerificationStatus::Failed, 5));

    // The right code sent twice at once verifies once.
    let (_, code) = c
        .prepare_phone_number_verification(&phone, true)
        .await
        .unwrap();
    let code = code.unwrap();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (mut c, phone, code) = (c.clone(), phone.clone(), code.clone());
            tokio::spawn(async move { c.attempt_phone_number_verification(&phone, &code).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let refused = results.into_iter().find(Result::is_err).unwrap();
    assert_eq!(failure(refused).1, "VERIFICATION_ALREADY_VERIFIED");
    server.stop().await;
}

/// The `ErrorInfo.reason` and `RetryInfo` delay of a refused call.
fn rate_limit<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (String, u64) {
    let err = result.unwrap_err();
    let ClientError::Status(status) = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a retry delay");
    (
        status.get_details_error_info().unwrap().reason,
        delay.as_secs(),
    )
}

async fn send_limits_per_identifier_and_per_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec![
                "a@example.com".into(),
                "b@example.com".into(),
                "c@example.com".into(),
            ],
            unverified_identifiers: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = user.email_addresses.iter().map(|e| e.id.clone()).collect();
    // Five codes each to a and b, 30 s apart: the most one identifier gets
    // in an hour.
    for round in 0..5 {
        for id in &ids[..2] {
            c.prepare_email_address_verification(id, true)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        server.clock.advance(30_000);
    }
    let (reason, delay) = rate_limit(c.prepare_email_address_verification(&ids[0], true).await);
    assert_eq!(reason, "VERIFICATION_SEND_LIMIT");
    // The window opened with the first send, 150 s ago.
    assert!((3440..=3450).contains(&delay), "{delay}");
    // c has had no code, but the user has had ten: the eleventh is refused,
    // and c's verification is untouched.
    let (reason, _) = rate_limit(c.prepare_email_address_verification(&ids[2], true).await);
    assert_eq!(reason, "VERIFICATION_SEND_LIMIT");
    let untouched = c.get_email_address(&ids[2]).await.unwrap().verification;
    assert_eq!((untouched.strategy, untouched.expire_at), (None, None));
    // An hour after the first send, both windows reopen.
    server.clock.advance(60 * 60 * 1000);
    let (_, code) = c
        .prepare_email_address_verification(&ids[2], true)
        .await
        .unwrap();
    assert!(
        c.attempt_email_address_verification(&ids[2], &code.unwrap())
            .await
            .unwrap()
            .verification
            .is_verified()
    );
    server.stop().await;
}

async fn unverified_copies_are_removed_when_another_user_verifies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let unverified = |emails: &[&str], phones: &[&str]| v1::CreateUserRequest {
        email_addresses: emails.iter().map(|e| (*e).to_owned()).collect(),
        phone_numbers: phones.iter().map(|p| (*p).to_owned()).collect(),
        unverified_identifiers: true,
        ..Default::default()
    };
    // Two accounts hold the same unverified address: neither blocks the
    // other.
    let squatter = c
        .create_user(unverified(&["Shared@example.com"], &["+14155550100"]))
        .await
        .unwrap();
    let owner = c
        .create_user(unverified(&["shared@example.com"], &[]))
        .await
        .unwrap();
    let email = owner.email_addresses[0].id.clone();
    let (_, code) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    c.attempt_email_address_verification(&email, &code.unwrap())
        .await
        .unwrap();
    // The owner proved it: it is primary there, and gone from the squatter.
    assert_eq!(
        c.get_user(&owner.id)
            .await
            .unwrap()
            .primary_email_address_id,
        Some(email)
    );
    let squatter_now = c.get_user(&squatter.id).await.unwrap();
    assert!(squatter_now.email_addresses.is_empty());
    assert_eq!(squatter_now.phone_numbers.len(), 1);
    assert_eq!(
        failure(c.get_email_address(&squatter.email_addresses[0].id).await).0,
        Code::NotFound
    );
    // A verified address is unique: no one may add even an unverified copy.
    assert_eq!(
        failure(
            c.create_email_address(v1::CreateEmailAddressRequest {
                user_id: squatter.id.to_string(),
                email_address: "SHARED@example.com".into(),
                ..Default::default()
            })
            .await
        ),
        (Code::AlreadyExists, "IDENTIFIER_EXISTS".into())
    );
    assert_eq!(
        failure(
            c.create_user(unverified(&["shared@example.com"], &[]))
                .await
        )
        .1,
        "IDENTIFIER_EXISTS"
    );
    server.stop().await;
}

async fn concurrent_verifiers_of_one_address_one_wins(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    for round in 0..3 {
        let address = format!("race{round}@example.com");
        let mut holders = Vec::new();
        for _ in 0..2 {
            let user = c
                .create_user(v1::CreateUserRequest {
                    email_addresses: vec![address.clone()],
                    unverified_identifiers: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            let email = user.email_addresses[0].id.clone();
            let (_, code) = c
                .prepare_email_address_verification(&email, true)
                .await
                .unwrap();
            holders.push((user.id, email, code.unwrap()));
        }
        let calls: Vec<_> = holders
            .iter()
            .map(|(_, email, code)| {
                let (mut c, email, code) = (c.clone(), email.clone(), code.clone());
                tokio::spawn(
                    async move { c.attempt_email_address_verification(&email, &code).await },
                )
            })
            .collect();
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.unwrap().map(|_| ()).map_err(|e| e.code()));
        }
        assert_eq!(
            outcomes.iter().filter(|o| o.is_ok()).count(),
            1,
            "{outcomes:?}"
        );
        for outcome in &outcomes {
            if let Err(code) = outcome {
                assert!(
                    matches!(code, Some(Code::AlreadyExists | Code::NotFound)),
                    "{outcomes:?}"
                );
            }
        }
        // Exactly one user holds the address now, verified.
        let mut held = Vec::new();
        for (user, _, _) in &holders {
            held.extend(c.get_user(user).await.unwrap().email_addresses);
        }
        assert_eq!(held.len(), 1, "{held:?}");
        assert!(held[0].verification.is_verified());
    }
    server.stop().await;
}

/// A webhook delivery to a port nothing listens on.
fn unreachable_webhook() -> Deliveries {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let webhook = WebhookDelivery::new(
        &format!("http://127.0.0.1:{port}/codes"),
        secret,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    Deliveries {
        email: Some(std::sync::Arc::new(webhook)),
        sms: None,
    }
}

async fn a_failed_delivery_leaves_no_code(backend: Backend) {
    let server = TestServer::start_with_delivery(backend, unreachable_webhook()).await;
    let mut c = server.client().await;
    let (_, email, phone) = unverified_user(&mut c).await;
    for _ in 0..2 {
        // UNAVAILABLE, and no cooldown either: the code was withdrawn.
        assert_eq!(
            failure(c.prepare_email_address_verification(&email, false).await),
            (Code::Unavailable, "DELIVERY_FAILED".into())
        );
        let v = c.get_email_address(&email).await.unwrap().verification;
        assert_eq!(
            (v.status, v.strategy, v.expire_at),
            (VerificationStatus::Unverified, None, None)
        );
        assert_eq!(
            failure(c.attempt_email_address_verification(&email, "000000").await).1,
            "VERIFICATION_NOT_PREPARED"
        );
    }
    // SMS delivery is not configured here; return_code still works.
    assert_eq!(
        failure(c.prepare_phone_number_verification(&phone, false).await).1,
        "DELIVERY_NOT_CONFIGURED"
    );
    let (_, code) = c
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    assert!(code.is_some());
    server.stop().await;
}

on_both_backends!(
    a_returned_code_verifies_once,
    codes_expire_resends_wait_and_new_codes_replace_old,
    concurrent_attempts_are_counted_one_by_one,
    send_limits_per_identifier_and_per_user,
    unverified_copies_are_removed_when_another_user_verifies,
    a_failed_delivery_leaves_no_code,
    concurrent_verifiers_of_one_address_one_wins,
);
