//! Verification codes over gRPC: prepare with `return_code`, attempts,
//! expiry (with the server's clock moved, not slept), cooldown, and counting
//! under concurrency.

use roster_client::{Client, v1};
use roster_domain::{IdentificationId, User, VerificationStatus};
use tonic::Code;
use tonic_types::StatusExt as _;

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

on_both_backends!(
    a_returned_code_verifies_once,
    codes_expire_resends_wait_and_new_codes_replace_old,
    concurrent_attempts_are_counted_one_by_one,
);
