//! The Frontend API's AccountService: a signed-in user reads and updates
//! their own account with a session token; every other credential is
//! refused and changes nothing; private metadata never reaches a user and
//! public metadata cannot be written from the frontend.

use base64::Engine as _;
use roster_client::{Client, v1};
use roster_domain::User;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use v1::account_service_client::AccountServiceClient;
use v1::sign_in_service_client::SignInServiceClient;

use crate::harness::{
    Backend, Setup, TestServer, code_sent_to, on_both_backends, webhook_receiver,
};

const PASSWORD: &str = "correct horse battery";
/// A value only the private metadata holds; no Frontend API response may
/// contain it.
const PRIVATE_MARK: &str = "private-mark-7e1f";

fn metadata(json: serde_json::Value) -> prost_types::Struct {
    roster_proto::convert::metadata_to_struct(roster_domain::Metadata::parse(json).unwrap())
}

fn json_of(m: &roster_domain::Metadata) -> serde_json::Value {
    serde_json::Value::Object(m.as_map().clone())
}

pub(crate) async fn user(c: &mut Client, email: &str) -> User {
    user_with_phones(c, email, &[]).await
}

async fn user_with_phones(c: &mut Client, email: &str, phones: &[&str]) -> User {
    c.create_user(v1::CreateUserRequest {
        email_addresses: vec![email.into()],
        phone_numbers: phones.iter().map(|p| (*p).to_owned()).collect(),
        password: PASSWORD.into(),
        public_metadata: Some(metadata(serde_json::json!({"role": "admin"}))),
        private_metadata: Some(metadata(serde_json::json!({"stripe": PRIVATE_MARK}))),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Signs in; the response (session, secret, token).
pub(crate) async fn signed_in(server: &TestServer, email: &str) -> v1::AttemptFirstFactorResponse {
    let mut front = SignInServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let sign_in = front
        .create_sign_in(v1::CreateSignInRequest {
            identifier: email.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sign_in
        .unwrap();
    front
        .attempt_first_factor(v1::AttemptFirstFactorRequest {
            sign_in_id: sign_in.id,
            strategy: v1::SignInStrategy::Password.into(),
            password: PASSWORD.into(),
            code: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn with_auth<T>(message: T, auth: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(auth) = auth {
        request
            .metadata_mut()
            .insert("authorization", MetadataValue::try_from(auth).unwrap());
    }
    request
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// Every AccountService RPC, called with `auth`; the encoded response or
/// the status. Mutating calls carry real changes, so a call let through
/// would show in the account.
/// A response, encoded (to search it for what it must not hold), or the
/// status.
fn ok<T: prost::Message>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> Result<Vec<u8>, tonic::Status> {
    r.map(|r| r.into_inner().encode_to_vec())
}

/// Another user's ids, for calls that name one.
struct Targets {
    session: String,
    email: String,
    phone: String,
}

/// RPCs that name one of the [`Targets`].
const TARGETED: [&str; 7] = [
    "RevokeSession",
    "DeleteEmailAddress",
    "PrepareEmailAddressVerification",
    "AttemptEmailAddressVerification",
    "DeletePhoneNumber",
    "PreparePhoneNumberVerification",
    "AttemptPhoneNumberVerification",
];

async fn every_rpc(
    account: &mut AccountServiceClient<Channel>,
    auth: Option<&str>,
    targets: &Targets,
) -> Vec<(&'static str, Result<Vec<u8>, tonic::Status>)> {
    let other_session = targets.session.as_str();
    let (email, phone) = (targets.email.clone(), targets.phone.clone());
    vec![
        (
            "GetAccount",
            ok(account
                .get_account(with_auth(v1::GetAccountRequest {}, auth))
                .await),
        ),
        (
            "UpdateAccount",
            ok(account
                .update_account(with_auth(
                    v1::UpdateAccountRequest {
                        account: Some(v1::Account {
                            first_name: "Mallory".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["first_name".into()],
                        }),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "UpdateUnsafeMetadata",
            ok(account
                .update_unsafe_metadata(with_auth(
                    v1::UpdateUnsafeMetadataRequest {
                        unsafe_metadata: Some(metadata(serde_json::json!({"pwned": true}))),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "ListSessions",
            ok(account
                .list_sessions(with_auth(v1::AccountServiceListSessionsRequest {}, auth))
                .await),
        ),
        (
            "RevokeSession",
            ok(account
                .revoke_session(with_auth(
                    v1::AccountServiceRevokeSessionRequest {
                        id: other_session.into(),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "GetToken",
            ok(account
                .get_token(with_auth(v1::GetTokenRequest::default(), auth))
                .await),
        ),
        (
            "ChangePassword",
            ok(account
                .change_password(with_auth(
                    v1::ChangePasswordRequest {
                        current_password: PASSWORD.into(),
                        new_password: "a brand new password".into(),
                        keep_other_sessions: true,
                    },
                    auth,
                ))
                .await),
        ),
        (
            "CreateEmailAddress",
            ok(account
                .create_email_address(with_auth(
                    v1::AccountServiceCreateEmailAddressRequest {
                        email_address: "added@example.com".into(),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "DeleteEmailAddress",
            ok(account
                .delete_email_address(with_auth(
                    v1::AccountServiceDeleteEmailAddressRequest { id: email.clone() },
                    auth,
                ))
                .await),
        ),
        (
            "PrepareEmailAddressVerification",
            ok(account
                .prepare_email_address_verification(with_auth(
                    v1::AccountServicePrepareEmailAddressVerificationRequest { id: email.clone() },
                    auth,
                ))
                .await),
        ),
        (
            "AttemptEmailAddressVerification",
            ok(account
                .attempt_email_address_verification(with_auth(
                    v1::AccountServiceAttemptEmailAddressVerificationRequest {
                        id: email,
                        code: "123456".into(),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "CreatePhoneNumber",
            ok(account
                .create_phone_number(with_auth(
                    v1::AccountServiceCreatePhoneNumberRequest {
                        phone_number: "+14155550177".into(),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "DeletePhoneNumber",
            ok(account
                .delete_phone_number(with_auth(
                    v1::AccountServiceDeletePhoneNumberRequest { id: phone.clone() },
                    auth,
                ))
                .await),
        ),
        (
            "PreparePhoneNumberVerification",
            ok(account
                .prepare_phone_number_verification(with_auth(
                    v1::AccountServicePreparePhoneNumberVerificationRequest { id: phone.clone() },
                    auth,
                ))
                .await),
        ),
        (
            "AttemptPhoneNumberVerification",
            ok(account
                .attempt_phone_number_verification(with_auth(
                    v1::AccountServiceAttemptPhoneNumberVerificationRequest {
                        id: phone,
                        code: "123456".into(),
                    },
                    auth,
                ))
                .await),
        ),
        (
            "SetProfileImage",
            ok(account
                .set_profile_image(with_auth(
                    tokio_stream::iter(crate::images::account_upload(&crate::images::png(12, 12))),
                    auth,
                ))
                .await),
        ),
        (
            "DeleteProfileImage",
            ok(account
                .delete_profile_image(with_auth(
                    v1::AccountServiceDeleteProfileImageRequest {},
                    auth,
                ))
                .await),
        ),
        // Last: these end the caller's session, then account.
        (
            "SignOut",
            ok(account
                .sign_out(with_auth(v1::SignOutRequest {}, auth))
                .await),
        ),
        (
            "DeleteAccount",
            ok(account
                .delete_account(with_auth(v1::DeleteAccountRequest {}, auth))
                .await),
        ),
    ]
}

async fn a_signed_in_user_manages_their_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let ada = user(&mut c, "ada@example.com").await;
    let signed = signed_in(&server, "ada@example.com").await;
    let bearer = format!("Bearer {}", signed.session_token);
    let auth = Some(bearer.as_str());
    let mut account = AccountServiceClient::connect(server.endpoint())
        .await
        .unwrap();

    let got = account
        .get_account(with_auth(v1::GetAccountRequest {}, auth))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(got.id, ada.id.to_string());
    assert_eq!(got.email_addresses[0].email_address, "ada@example.com");
    assert_eq!(
        got.public_metadata.unwrap().fields["role"],
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("admin".into()))
        }
    );

    let updated = account
        .update_account(with_auth(
            v1::UpdateAccountRequest {
                account: Some(v1::Account {
                    first_name: "Ada".into(),
                    unsafe_metadata: Some(metadata(
                        serde_json::json!({"theme": {"mode": "dark", "size": 2}}),
                    )),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["first_name".into(), "unsafe_metadata".into()],
                }),
            },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(updated.first_name, "Ada");
    let merged = account
        .update_unsafe_metadata(with_auth(
            v1::UpdateUnsafeMetadataRequest {
                unsafe_metadata: Some(metadata(
                    serde_json::json!({"theme": {"size": null, "font": "serif"}}),
                )),
            },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    let unsafe_json =
        roster_proto::convert::metadata_from_struct(merged.unsafe_metadata.unwrap()).unwrap();
    assert_eq!(
        json_of(&unsafe_json),
        serde_json::json!({"theme": {"mode": "dark", "font": "serif"}})
    );

    // Public and private metadata are the backend's.
    for path in ["public_metadata", "private_metadata"] {
        let refused = account
            .update_account(with_auth(
                v1::UpdateAccountRequest {
                    account: Some(v1::Account::default()),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![path.into(), "first_name".into()],
                    }),
                },
                auth,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::PermissionDenied, "METADATA_NOT_WRITABLE")
        );
    }
    let unknown = account
        .update_account(with_auth(
            v1::UpdateAccountRequest {
                account: Some(v1::Account::default()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["banned".into()],
                }),
            },
            auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let backend_view = c.get_user(&ada.id).await.unwrap();
    assert_eq!(
        backend_view
            .first_name
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("Ada")
    );
    assert_eq!(
        json_of(&backend_view.public_metadata),
        serde_json::json!({"role": "admin"})
    );
    assert_eq!(
        json_of(&backend_view.private_metadata),
        serde_json::json!({"stripe": PRIVATE_MARK})
    );

    // Tokens: a fresh one from the token, and from the session secret once
    // the token has expired; the secret opens nothing else.
    let mut with_origin = with_auth(v1::GetTokenRequest::default(), auth);
    with_origin.metadata_mut().insert(
        "origin",
        MetadataValue::from_static("https://app.example.com"),
    );
    let fresh = account
        .get_token(with_origin)
        .await
        .unwrap()
        .into_inner()
        .jwt;
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(fresh.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["azp"], "https://app.example.com");
    server.clock.advance(2 * 60 * 1000);
    let expired = account
        .get_account(with_auth(v1::GetAccountRequest {}, auth))
        .await
        .unwrap_err();
    assert_eq!(
        (expired.code(), reason(&expired).as_str()),
        (Code::Unauthenticated, "SESSION_TOKEN_EXPIRED")
    );
    let secret = format!("Session {}", signed.session_secret);
    let renewed = account
        .get_token(with_auth(v1::GetTokenRequest::default(), Some(&secret)))
        .await
        .unwrap()
        .into_inner()
        .jwt;
    let renewed_auth = format!("Bearer {renewed}");
    account
        .get_account(with_auth(v1::GetAccountRequest {}, Some(&renewed_auth)))
        .await
        .unwrap();
    let secret_elsewhere = account
        .get_account(with_auth(v1::GetAccountRequest {}, Some(&secret)))
        .await
        .unwrap_err();
    assert_eq!(secret_elsewhere.code(), Code::Unauthenticated);

    // Sessions: the user sees their active ones and can sign one out.
    let other_device = signed_in(&server, "ada@example.com").await;
    let sessions = account
        .list_sessions(with_auth(
            v1::AccountServiceListSessionsRequest {},
            Some(&renewed_auth),
        ))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 2);
    let other_id = other_device.session.unwrap().id;
    account
        .revoke_session(with_auth(
            v1::AccountServiceRevokeSessionRequest {
                id: other_id.clone(),
            },
            Some(&renewed_auth),
        ))
        .await
        .unwrap();
    let other_auth = format!("Bearer {}", other_device.session_token);
    let signed_out = account
        .get_account(with_auth(v1::GetAccountRequest {}, Some(&other_auth)))
        .await
        .unwrap_err();
    assert_eq!(
        (signed_out.code(), reason(&signed_out).as_str()),
        (Code::Unauthenticated, "SESSION_NOT_ACTIVE")
    );

    // Signing out ends the calling session.
    let ended = account
        .sign_out(with_auth(v1::SignOutRequest {}, Some(&renewed_auth)))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(ended.status(), v1::SessionStatus::Ended);
    let after = account
        .get_account(with_auth(v1::GetAccountRequest {}, Some(&renewed_auth)))
        .await
        .unwrap_err();
    assert_eq!(reason(&after), "SESSION_NOT_ACTIVE");
    server.stop().await;
}

async fn every_rpc_refuses_every_bad_credential(backend: Backend) {
    let server = TestServer::start_with_keys(backend, &["sk_test_backend"]).await;
    let mut c = server.client_with(Some("sk_test_backend")).await;
    let victim = user_with_phones(&mut c, "victim@example.com", &["+14155550166"]).await;
    let victim_session = signed_in(&server, "victim@example.com").await;
    let victim_session_id = victim_session.session.as_ref().unwrap().id.clone();
    let targets = Targets {
        session: victim_session_id.clone(),
        email: victim.email_addresses[0].id.to_string(),
        phone: victim.phone_numbers[0].id.to_string(),
    };
    user(&mut c, "mallory@example.com").await;
    let mallory = signed_in(&server, "mallory@example.com").await;
    let mut account = AccountServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let before = c.get_user(&victim.id).await.unwrap();

    // Tokens that must not pass.
    let token = victim_session.session_token.clone();
    let (head, rest) = token.split_once('.').unwrap();
    let (body, signature) = rest.split_once('.').unwrap();
    let flipped = if signature.ends_with('A') { "B" } else { "A" };
    let bad_signature = format!(
        "{head}.{body}.{}{flipped}",
        &signature[..signature.len() - 1]
    );
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none_header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{body}.");
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(body).unwrap()).unwrap();
    claims["sub"] = serde_json::Value::String(victim.id.to_string());
    let mallory_body: serde_json::Value = serde_json::from_slice(
        &b64.decode(mallory.session_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    claims["sid"] = mallory_body["sid"].clone();
    let swapped = format!("{head}.{}.{signature}", b64.encode(claims.to_string()));
    // A revoked session's token.
    let doomed = signed_in(&server, "victim@example.com").await;
    c.sessions()
        .revoke_session(v1::RevokeSessionRequest {
            id: doomed.session.unwrap().id,
        })
        .await
        .unwrap();

    let credentials: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("malformed", Some("Bearer not-a-jwt".into())),
        ("not bearer", Some(format!("Basic {token}"))),
        ("bad signature", Some(format!("Bearer {bad_signature}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("claims swapped", Some(format!("Bearer {swapped}"))),
        (
            "revoked session",
            Some(format!("Bearer {}", doomed.session_token)),
        ),
        ("backend secret key", Some("Bearer sk_test_backend".into())),
        (
            "unknown session secret",
            Some("Session AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
    ];
    for (what, auth) in &credentials {
        for (rpc, result) in every_rpc(&mut account, auth.as_deref(), &targets).await {
            let status = result.expect_err(&format!("{rpc} with {what} must be refused"));
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc} with {what}: {status:?}"
            );
        }
    }
    // An expired token: two minutes later.
    server.clock.advance(2 * 60 * 1000);
    let expired = format!("Bearer {token}");
    for (rpc, result) in every_rpc(&mut account, Some(&expired), &targets).await {
        let status = result.expect_err(rpc);
        assert_eq!((rpc, status.code()), (rpc, Code::Unauthenticated));
    }

    // Mallory, properly signed in, cannot reach the victim's session, and
    // no answer to her carries private metadata.
    let mallory_auth = format!("Bearer {}", {
        let mut front = AccountServiceClient::connect(server.endpoint())
            .await
            .unwrap();
        front
            .get_token(with_auth(
                v1::GetTokenRequest::default(),
                Some(&format!("Session {}", mallory.session_secret)),
            ))
            .await
            .unwrap()
            .into_inner()
            .jwt
    });
    let mallory_primary = account
        .update_account(with_auth(
            v1::UpdateAccountRequest {
                account: Some(v1::Account {
                    primary_email_address_id: victim.email_addresses[0].id.to_string(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["primary_email_address_id".into()],
                }),
            },
            Some(&mallory_auth),
        ))
        .await
        .unwrap_err();
    // Refused exactly as an id that names nothing.
    assert_eq!(
        (mallory_primary.code(), reason(&mallory_primary).as_str()),
        (Code::InvalidArgument, "FORM_IDENTIFIER_NOT_FOUND")
    );

    for (rpc, result) in every_rpc(&mut account, Some(&mallory_auth), &targets).await {
        if TARGETED.contains(&rpc) {
            assert_eq!(result.unwrap_err().code(), Code::NotFound, "{rpc}");
        } else if rpc == "DeleteAccount" {
            // Mallory signed out just before.
            let status = result.unwrap_err();
            assert_eq!(reason(&status), "SESSION_NOT_ACTIVE");
        } else {
            let bytes = result.unwrap_or_else(|e| panic!("{rpc}: {e:?}"));
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(PRIVATE_MARK) && !text.contains("stripe"),
                "{rpc} leaked private metadata"
            );
        }
    }
    // Nothing of the victim changed.
    let after = c.get_user(&victim.id).await.unwrap();
    assert_eq!(after, before);
    let still = c
        .sessions()
        .get_session(v1::GetSessionRequest {
            id: victim_session_id,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(still.status(), v1::SessionStatus::Active);
    server.stop().await;
}

async fn a_user_changes_password_and_identifiers(backend: Backend) {
    let (received, delivery) = webhook_receiver().await;
    let server = TestServer::start_with_delivery(backend, delivery).await;
    let mut c = server.client().await;
    let ada = user(&mut c, "ada@example.com").await;
    let here = signed_in(&server, "ada@example.com").await;
    let there = signed_in(&server, "ada@example.com").await;
    let here_auth = format!("Bearer {}", here.session_token);
    let auth = Some(here_auth.as_str());
    let there_auth = format!("Bearer {}", there.session_token);
    let mut account = AccountServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let change = |current: &str, new: &str, keep: bool| v1::ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
        keep_other_sessions: keep,
    };

    let wrong = account
        .change_password(with_auth(change("not it", "a new password 1", false), auth))
        .await
        .unwrap_err();
    assert_eq!(
        (wrong.code(), reason(&wrong).as_str()),
        (Code::InvalidArgument, "FORM_PASSWORD_INCORRECT")
    );
    let weak = account
        .change_password(with_auth(change(PASSWORD, "short", false), auth))
        .await
        .unwrap_err();
    assert_eq!(weak.code(), Code::InvalidArgument);
    account
        .change_password(with_auth(change(PASSWORD, "a new password 1", false), auth))
        .await
        .unwrap();
    // This session stays signed in; the other one is signed out.
    account
        .get_account(with_auth(v1::GetAccountRequest {}, auth))
        .await
        .unwrap();
    let out = account
        .get_account(with_auth(v1::GetAccountRequest {}, Some(&there_auth)))
        .await
        .unwrap_err();
    assert_eq!(reason(&out), "SESSION_NOT_ACTIVE");
    assert!(
        c.verify_password(&ada.id, "a new password 1")
            .await
            .unwrap()
    );

    // A new address, verified with the code the webhook carried.
    let added = account
        .create_email_address(with_auth(
            v1::AccountServiceCreateEmailAddressRequest {
                email_address: "ada.new@example.com".into(),
            },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap();
    assert_eq!(
        added.verification.as_ref().unwrap().status(),
        v1::VerificationStatus::Unverified
    );
    let prepared = account
        .prepare_email_address_verification(with_auth(
            v1::AccountServicePrepareEmailAddressVerificationRequest {
                id: added.id.clone(),
            },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap();
    assert_eq!(
        prepared.verification.unwrap().strategy(),
        v1::VerificationStrategy::EmailCode
    );
    let code = code_sent_to(&received, "ada.new@example.com");
    let verified = account
        .attempt_email_address_verification(with_auth(
            v1::AccountServiceAttemptEmailAddressVerificationRequest {
                id: added.id.clone(),
                code,
            },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap();
    assert_eq!(
        verified.verification.unwrap().status(),
        v1::VerificationStatus::Verified
    );

    // A phone number, by SMS (the same webhook here).
    let phone = account
        .create_phone_number(with_auth(
            v1::AccountServiceCreatePhoneNumberRequest {
                phone_number: "+1 415 555 0142".into(),
            },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .phone_number
        .unwrap();
    account
        .prepare_phone_number_verification(with_auth(
            v1::AccountServicePreparePhoneNumberVerificationRequest {
                id: phone.id.clone(),
            },
            auth,
        ))
        .await
        .unwrap();
    let code = code_sent_to(&received, "+14155550142");
    account
        .attempt_phone_number_verification(with_auth(
            v1::AccountServiceAttemptPhoneNumberVerificationRequest {
                id: phone.id.clone(),
                code,
            },
            auth,
        ))
        .await
        .unwrap();
    let now = account
        .delete_email_address(with_auth(
            v1::AccountServiceDeleteEmailAddressRequest { id: added.id },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(now.email_addresses.len(), 1);
    assert_eq!(now.phone_numbers.len(), 1);
    assert_eq!(now.primary_phone_number_id, phone.id);

    // The Backend API's password change signs the user out everywhere,
    // unless told to keep sessions.
    let set_password = |keep_sessions| v1::UpdateUserRequest {
        user: Some(v1::User {
            id: ada.id.to_string(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["password".into()],
        }),
        password: "a new password 2".into(),
        keep_sessions,
    };
    c.users().update_user(set_password(true)).await.unwrap();
    account
        .get_account(with_auth(v1::GetAccountRequest {}, auth))
        .await
        .unwrap();
    c.users().update_user(set_password(false)).await.unwrap();
    let out = account
        .get_account(with_auth(v1::GetAccountRequest {}, auth))
        .await
        .unwrap_err();
    assert_eq!(reason(&out), "SESSION_NOT_ACTIVE");
    server.stop().await;
}

async fn users_delete_their_account_only_when_allowed(backend: Backend) {
    for allowed in [false, true] {
        let server = TestServer::start_with(
            backend,
            Setup {
                self_delete: allowed,
                ..Setup::default()
            },
        )
        .await;
        let mut c = server.client().await;
        let ada = user(&mut c, "ada@example.com").await;
        let auth = format!(
            "Bearer {}",
            signed_in(&server, "ada@example.com").await.session_token
        );
        let mut account = AccountServiceClient::connect(server.endpoint())
            .await
            .unwrap();
        let result = account
            .delete_account(with_auth(v1::DeleteAccountRequest {}, Some(&auth)))
            .await;
        if allowed {
            result.unwrap();
            assert_eq!(
                c.get_user(&ada.id).await.unwrap_err().code(),
                Some(Code::NotFound)
            );
            // Its sessions went with it.
            let gone = account
                .get_account(with_auth(v1::GetAccountRequest {}, Some(&auth)))
                .await
                .unwrap_err();
            assert_eq!(gone.code(), Code::Unauthenticated);
        } else {
            let refused = result.unwrap_err();
            assert_eq!(
                (refused.code(), reason(&refused).as_str()),
                (Code::PermissionDenied, "SELF_DELETE_DISABLED")
            );
            c.get_user(&ada.id).await.unwrap();
        }
        server.stop().await;
    }
}

on_both_backends!(
    a_signed_in_user_manages_their_account,
    every_rpc_refuses_every_bad_credential,
    a_user_changes_password_and_identifiers,
    users_delete_their_account_only_when_allowed,
);
