//! Signing up through the Frontend API: the email address is proven with
//! a code delivered by webhook to a real HTTP receiver, and completion
//! creates the user (with the sign-up's unsafe metadata), a session and a
//! token that opens the account.

use roster_client::v1;
use tonic::Code;
use tonic::metadata::MetadataValue;
use v1::account_service_client::AccountServiceClient;
use v1::sign_up_service_client::SignUpServiceClient;

use crate::harness::{Backend, TestServer, code_sent_to, on_both_backends, webhook_receiver};

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn metadata(json: serde_json::Value) -> prost_types::Struct {
    roster_proto::convert::metadata_to_struct(roster_domain::Metadata::parse(json).unwrap())
}

async fn sign_up_with_an_email_code_and_a_password(backend: Backend) {
    let (received, delivery) = webhook_receiver().await;
    let server = TestServer::start_with_delivery(backend, delivery).await;
    let mut up = SignUpServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let created = up
        .create_sign_up(v1::CreateSignUpRequest {
            email_address: "Grace@Example.com".into(),
            password: "a long enough password".into(),
            first_name: "Grace".into(),
            unsafe_metadata: Some(metadata(serde_json::json!({"referrer": "newsletter"}))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.completion.is_none());
    let sign_up = created.sign_up.unwrap();
    assert_eq!(sign_up.status(), v1::SignUpStatus::MissingRequirements);
    assert_eq!(sign_up.required_fields, ["email_address", "password"]);
    assert!(sign_up.missing_fields.is_empty());
    assert_eq!(sign_up.unverified_fields, ["email_address"]);
    assert!(sign_up.password_enabled);
    let id = sign_up.id.clone();

    let attempt = |code: &str| v1::AttemptSignUpVerificationRequest {
        id: id.clone(),
        strategy: v1::VerificationStrategy::EmailCode.into(),
        code: code.into(),
    };
    let early = up
        .attempt_sign_up_verification(attempt("123456"))
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "VERIFICATION_NOT_PREPARED");
    up.prepare_sign_up_verification(v1::PrepareSignUpVerificationRequest {
        id: id.clone(),
        strategy: v1::VerificationStrategy::EmailCode.into(),
    })
    .await
    .unwrap();
    let code = code_sent_to(&received, "Grace@example.com");
    {
        let messages = received.lock().unwrap();
        assert!(
            messages[0]["user_id"].is_null(),
            "a sign-up has no user yet"
        );
    }
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let refused = up
        .attempt_sign_up_verification(attempt(&wrong))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CODE_INCORRECT");
    let done = up
        .attempt_sign_up_verification(attempt(&code))
        .await
        .unwrap()
        .into_inner();
    let sign_up = done.sign_up.unwrap();
    assert_eq!(sign_up.status(), v1::SignUpStatus::Complete);
    let completion = done.completion.unwrap();
    let session = completion.session.unwrap();
    assert_eq!(sign_up.created_session_id, session.id);
    assert_eq!(sign_up.created_user_id, session.user_id);

    // The token opens the new account; the unsafe metadata came along.
    let mut request = tonic::Request::new(v1::GetAccountRequest {});
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {}", completion.session_token)).unwrap(),
    );
    let account = AccountServiceClient::connect(server.endpoint())
        .await
        .unwrap()
        .get_account(request)
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(account.id, sign_up.created_user_id);
    assert_eq!(account.first_name, "Grace");
    assert_eq!(
        account.unsafe_metadata.unwrap(),
        metadata(serde_json::json!({"referrer": "newsletter"}))
    );
    let email = &account.email_addresses[0];
    assert!(email.primary);
    let verification = email.verification.as_ref().unwrap();
    assert_eq!(
        (verification.status(), verification.strategy()),
        (
            v1::VerificationStatus::Verified,
            v1::VerificationStrategy::EmailCode
        )
    );
    assert!(account.password_enabled && account.last_sign_in_at.is_some());

    // Done once: the sign-up takes no more changes, and the address is
    // now taken.
    let again = up
        .attempt_sign_up_verification(attempt(&code))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "SIGN_UP_COMPLETE");
    let taken = up
        .create_sign_up(v1::CreateSignUpRequest {
            email_address: "grace@example.com".into(),
            password: "another long password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (taken.code(), reason(&taken).as_str()),
        (Code::AlreadyExists, "IDENTIFIER_EXISTS")
    );
    server.stop().await;
}

async fn sign_ups_gather_requirements_and_expire(backend: Backend) {
    let (received, delivery) = webhook_receiver().await;
    let server = TestServer::start_with_delivery(backend, delivery).await;
    let mut up = SignUpServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let sign_up = up
        .create_sign_up(v1::CreateSignUpRequest {
            email_address: "late@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sign_up
        .unwrap();
    assert_eq!(sign_up.missing_fields, ["password"]);
    let bad = up
        .create_sign_up(v1::CreateSignUpRequest {
            email_address: "not an address".into(),
            password: "short".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Verify first, then add the password: that completes it.
    up.prepare_sign_up_verification(v1::PrepareSignUpVerificationRequest {
        id: sign_up.id.clone(),
        strategy: v1::VerificationStrategy::EmailCode.into(),
    })
    .await
    .unwrap();
    let code = code_sent_to(&received, "late@example.com");
    let verified = up
        .attempt_sign_up_verification(v1::AttemptSignUpVerificationRequest {
            id: sign_up.id.clone(),
            strategy: v1::VerificationStrategy::EmailCode.into(),
            code,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        verified.completion.is_none(),
        "the password is still missing"
    );
    let no_phone = up
        .prepare_sign_up_verification(v1::PrepareSignUpVerificationRequest {
            id: sign_up.id.clone(),
            strategy: v1::VerificationStrategy::PhoneCode.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&no_phone), "VERIFICATION_NOT_PREPARED");
    let completed = up
        .update_sign_up(v1::UpdateSignUpRequest {
            id: sign_up.id.clone(),
            password: "a long enough password".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        completed.sign_up.unwrap().status(),
        v1::SignUpStatus::Complete
    );
    assert!(completed.completion.is_some());

    // An unfinished sign-up is abandoned after a day.
    let stale = up
        .create_sign_up(v1::CreateSignUpRequest {
            email_address: "stale@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sign_up
        .unwrap();
    server.clock.advance(24 * 60 * 60 * 1000);
    let got = up
        .get_sign_up(v1::GetSignUpRequest {
            id: stale.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .sign_up
        .unwrap();
    assert_eq!(got.status(), v1::SignUpStatus::Abandoned);
    let expired = up
        .update_sign_up(v1::UpdateSignUpRequest {
            id: stale.id,
            password: "a long enough password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&expired), "SIGN_UP_EXPIRED");
    server.stop().await;
}

async fn sign_ups_cannot_flood_one_address(backend: Backend) {
    let (received, delivery) = webhook_receiver().await;
    let server = TestServer::start_with_delivery(backend, delivery).await;
    let mut up = SignUpServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        // A fresh sign-up each time: its own limits start empty.
        let sign_up = up
            .create_sign_up(v1::CreateSignUpRequest {
                email_address: "victim@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .sign_up
            .unwrap();
        outcomes.push(
            up.prepare_sign_up_verification(v1::PrepareSignUpVerificationRequest {
                id: sign_up.id,
                strategy: v1::VerificationStrategy::EmailCode.into(),
            })
            .await
            .map(|_| ())
            .map_err(|e| (e.code(), reason(&e))),
        );
    }
    assert!(outcomes[..5].iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        outcomes[5],
        Err((
            Code::ResourceExhausted,
            "VERIFICATION_SEND_LIMIT".to_owned()
        ))
    );
    assert_eq!(received.lock().unwrap().len(), 5);
    server.stop().await;
}

on_both_backends!(
    sign_ups_cannot_flood_one_address,
    sign_up_with_an_email_code_and_a_password,
    sign_ups_gather_requirements_and_expire,
);
