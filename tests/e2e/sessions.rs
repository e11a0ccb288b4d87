//! Signing in, sessions and session tokens over gRPC and HTTP: a password
//! sign-in starts a session; its token verifies with the published JWKS
//! (fetched over HTTP and checked by the `jsonwebtoken` library, not by
//! Roster's own code); the Backend API lists, revokes and mints tokens for
//! sessions; and nothing tells an unknown identifier from a wrong password.

use std::time::{Duration, Instant};

use roster_client::{Client, v1};
use roster_domain::User;
use tonic::Code;
use tonic::transport::Channel;
use v1::jwks_service_client::JwksServiceClient;
use v1::sign_in_service_client::SignInServiceClient;

use crate::harness::{Backend, TestServer, on_both_backends};

const PASSWORD: &str = "correct horse battery";

async fn user_with_password(c: &mut Client, email: &str) -> User {
    c.create_user(v1::CreateUserRequest {
        email_addresses: vec![email.into()],
        password: PASSWORD.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn frontend(server: &TestServer) -> SignInServiceClient<Channel> {
    SignInServiceClient::connect(server.endpoint())
        .await
        .unwrap()
}

/// Signs in with `identifier` and `password`; the status or the response.
async fn sign_in(
    front: &mut SignInServiceClient<Channel>,
    identifier: &str,
    password: &str,
) -> Result<v1::AttemptFirstFactorResponse, tonic::Status> {
    let sign_in = front
        .create_sign_in(v1::CreateSignInRequest {
            identifier: identifier.into(),
        })
        .await?
        .into_inner()
        .sign_in
        .unwrap();
    assert_eq!(sign_in.status(), v1::SignInStatus::NeedsFirstFactor);
    assert_eq!(
        sign_in.supported_first_factors[0],
        i32::from(v1::SignInStrategy::Password)
    );
    front
        .attempt_first_factor(v1::AttemptFirstFactorRequest {
            sign_in_id: sign_in.id,
            strategy: v1::SignInStrategy::Password.into(),
            password: password.into(),
            code: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// Verifies a token with the JWKS served over HTTP, as a third-party
/// service would.
async fn verify_with_jwks(server: &TestServer, token: &str) -> Claims {
    roster_server::delivery::ensure_crypto_provider();
    let url = format!("http://{}/.well-known/jwks.json", server.http_addr);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&["https://roster.test"]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .unwrap()
        .claims
}

async fn password_sign_in_starts_a_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = user_with_password(&mut c, "ada@example.com").await;
    let mut front = frontend(&server).await;

    let wrong = sign_in(&mut front, "ada@example.com", "not the password")
        .await
        .unwrap_err();
    assert_eq!(
        (wrong.code(), reason(&wrong).as_str()),
        (Code::InvalidArgument, "FORM_PASSWORD_INCORRECT")
    );

    let signed_in = sign_in(&mut front, " ADA@example.com ", PASSWORD)
        .await
        .unwrap();
    let session = signed_in.session.unwrap();
    assert!(session.id.starts_with("sess_"));
    assert_eq!(session.user_id, user.id.to_string());
    assert_eq!(session.status(), v1::SessionStatus::Active);
    let activity = session.latest_activity.unwrap();
    assert_eq!(activity.ip_address, "127.0.0.1");
    assert!(activity.user_agent.contains("tonic"), "{activity:?}");
    // 256 bits, base64url.
    assert_eq!(signed_in.session_secret.len(), 43);
    let complete = signed_in.sign_in.unwrap();
    assert_eq!(complete.status(), v1::SignInStatus::Complete);
    assert_eq!(complete.created_session_id, session.id);

    let claims = verify_with_jwks(&server, &signed_in.session_token).await;
    assert_eq!(
        (claims.sub.as_str(), claims.sid.as_str()),
        (user.id.as_str(), session.id.as_str())
    );
    assert_eq!(claims.iss, "https://roster.test");
    assert_eq!((claims.exp - claims.iat, claims.iat - claims.nbf), (60, 5));
    // The gRPC JWKS holds the same key.
    let jwks = JwksServiceClient::connect(server.endpoint())
        .await
        .unwrap()
        .get_jwks(v1::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kid = jsonwebtoken::decode_header(&signed_in.session_token)
        .unwrap()
        .kid
        .unwrap();
    assert!(jwks.keys.iter().any(|k| k.kid == kid && k.r#use == "sig"));

    // A completed sign-in cannot complete again.
    let again = front
        .attempt_first_factor(v1::AttemptFirstFactorRequest {
            sign_in_id: complete.id.clone(),
            strategy: v1::SignInStrategy::Password.into(),
            password: PASSWORD.into(),
            code: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "SIGN_IN_COMPLETE");
    assert!(
        c.get_user(&user.id)
            .await
            .unwrap()
            .last_sign_in_at
            .is_some()
    );
    server.stop().await;
}

async fn backend_lists_revokes_and_mints(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = user_with_password(&mut c, "grace@example.com").await;
    let mut front = frontend(&server).await;
    let first = sign_in(&mut front, "grace@example.com", PASSWORD)
        .await
        .unwrap();
    server.clock.advance(1);
    let second = sign_in(&mut front, "grace@example.com", PASSWORD)
        .await
        .unwrap();
    let (first, second) = (first.session.unwrap(), second.session.unwrap());

    let list = |status: v1::SessionStatus, page_token: String| v1::ListSessionsRequest {
        user_id: user.id.to_string(),
        status: status.into(),
        page_size: 1,
        page_token,
    };
    let page = c
        .sessions()
        .list_sessions(list(v1::SessionStatus::Unspecified, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.sessions[0].id, second.id, "newest first");
    let next = c
        .sessions()
        .list_sessions(list(
            v1::SessionStatus::Unspecified,
            page.next_page_token.clone(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.sessions[0].id, first.id);
    assert!(next.next_page_token.is_empty());
    // A token from one listing does not page another.
    let foreign = c
        .sessions()
        .list_sessions(list(v1::SessionStatus::Revoked, page.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&foreign), "PAGE_TOKEN_INVALID");

    let mint = |seconds| v1::CreateSessionTokenRequest {
        session_id: first.id.clone(),
        expires_in_seconds: seconds,
        template: String::new(),
    };
    // The built-in Hasura template adds its claims; Roster's stay.
    let hasura = c
        .sessions()
        .create_session_token(v1::CreateSessionTokenRequest {
            template: "hasura".into(),
            ..mint(0)
        })
        .await
        .unwrap()
        .into_inner()
        .jwt;
    let claims = verify_with_jwks(&server, &hasura).await;
    assert_eq!(
        (claims.sub.as_str(), claims.exp - claims.iat),
        (user.id.as_str(), 60)
    );
    let body: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            hasura.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        body["https://hasura.io/jwt/claims"]["x-hasura-user-id"],
        user.id.to_string()
    );
    let unknown = c
        .sessions()
        .create_session_token(v1::CreateSessionTokenRequest {
            template: "nope".into(),
            ..mint(0)
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let jwt = c
        .sessions()
        .create_session_token(mint(3600))
        .await
        .unwrap()
        .into_inner()
        .jwt;
    let claims = verify_with_jwks(&server, &jwt).await;
    assert_eq!(
        (claims.sid.as_str(), claims.exp - claims.iat),
        (first.id.as_str(), 3600)
    );
    let short = c
        .sessions()
        .create_session_token(mint(10))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);

    let revoked = c
        .sessions()
        .revoke_session(v1::RevokeSessionRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(revoked.status(), v1::SessionStatus::Revoked);
    for refused in [
        c.sessions()
            .create_session_token(mint(0))
            .await
            .unwrap_err(),
        c.sessions()
            .revoke_session(v1::RevokeSessionRequest {
                id: first.id.clone(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "SESSION_NOT_ACTIVE")
        );
    }
    let active = c
        .sessions()
        .list_sessions(v1::ListSessionsRequest {
            user_id: user.id.to_string(),
            status: v1::SessionStatus::Active.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.sessions.len(), 1);

    // Seven days on, the other session has expired by itself.
    server.clock.advance(7 * 24 * 60 * 60 * 1000);
    let expired = c
        .sessions()
        .get_session(v1::GetSessionRequest {
            id: second.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(expired.status(), v1::SessionStatus::Expired);
    let missing = c
        .sessions()
        .get_session(v1::GetSessionRequest {
            id: "sess_00000000000000000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

async fn bans_and_locks_stop_sign_ins_and_bans_end_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = user_with_password(&mut c, "ban@example.com").await;
    let mut front = frontend(&server).await;
    let session = sign_in(&mut front, "ban@example.com", PASSWORD)
        .await
        .unwrap()
        .session
        .unwrap();
    c.ban_user(&user.id).await.unwrap();
    let after = c
        .sessions()
        .get_session(v1::GetSessionRequest { id: session.id })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        after.status(),
        v1::SessionStatus::Revoked,
        "a ban signs the user out"
    );
    // Only a caller with the password learns of the ban.
    let wrong = sign_in(&mut front, "ban@example.com", "wrong password")
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong), "FORM_PASSWORD_INCORRECT");
    let banned = sign_in(&mut front, "ban@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(
        (banned.code(), reason(&banned).as_str()),
        (Code::PermissionDenied, "USER_BANNED")
    );
    c.unban_user(&user.id).await.unwrap();
    let before_lock = sign_in(&mut front, "ban@example.com", PASSWORD)
        .await
        .unwrap()
        .session
        .unwrap();
    c.lock_user(&user.id).await.unwrap();
    let locked_out = c
        .sessions()
        .get_session(v1::GetSessionRequest { id: before_lock.id })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        locked_out.status(),
        v1::SessionStatus::Revoked,
        "a lock signs the user out"
    );
    let locked = sign_in(&mut front, "ban@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(
        (locked.code(), reason(&locked).as_str()),
        (Code::PermissionDenied, "USER_LOCKED")
    );
    c.unlock_user(&user.id).await.unwrap();
    sign_in(&mut front, "ban@example.com", PASSWORD)
        .await
        .unwrap();
    server.stop().await;
}

/// `n` concurrent wrong-password sign-ins; their failure reasons.
async fn concurrent_wrong(
    front: &SignInServiceClient<Channel>,
    email: &str,
    n: usize,
) -> Vec<String> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let (mut front, email) = (front.clone(), email.to_owned());
            tokio::spawn(async move { sign_in(&mut front, &email, "wrong password").await })
        })
        .collect();
    let mut reasons = Vec::new();
    for call in calls {
        reasons.push(reason(&call.await.unwrap().unwrap_err()));
    }
    reasons
}

async fn failed_sign_ins_lock_out_counted_under_concurrency(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = user_with_password(&mut c, "lock@example.com").await;
    let mut front = frontend(&server).await;

    // Nine concurrent failures, all counted, lock nothing; a success
    // starts the count afresh.
    let reasons = concurrent_wrong(&front, "lock@example.com", 9).await;
    assert!(
        reasons.iter().all(|r| r == "FORM_PASSWORD_INCORRECT"),
        "{reasons:?}"
    );
    sign_in(&mut front, "lock@example.com", PASSWORD)
        .await
        .unwrap();
    // Ten concurrent failures are ten: the right password is now refused.
    let reasons = concurrent_wrong(&front, "lock@example.com", 10).await;
    assert!(
        reasons.iter().all(|r| r == "FORM_PASSWORD_INCORRECT"),
        "{reasons:?}"
    );
    let locked = sign_in(&mut front, "lock@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(
        (locked.code(), reason(&locked).as_str()),
        (Code::PermissionDenied, "USER_LOCKED")
    );
    {
        use tonic_types::StatusExt as _;
        let info = locked.get_details_error_info().unwrap();
        assert_eq!(info.metadata["lockout_expires_in_seconds"], "3600");
        let delay = locked
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert_eq!(delay.as_secs(), 3600);
    }
    // An hour later the lockout has ended.
    server.clock.advance(60 * 60 * 1000);
    sign_in(&mut front, "lock@example.com", PASSWORD)
        .await
        .unwrap();
    // A burst gets no more guesses evaluated than the lockout allows: of
    // twelve at once, ten are checked and two refused unchecked.
    let mut reasons = concurrent_wrong(&front, "lock@example.com", 12).await;
    reasons.sort();
    assert_eq!(
        reasons,
        [
            vec!["FORM_PASSWORD_INCORRECT".to_owned(); 10],
            vec!["USER_LOCKED".to_owned(); 2]
        ]
        .concat()
    );
    // UnlockUser ends a lockout early.
    assert_eq!(
        reason(
            &sign_in(&mut front, "lock@example.com", PASSWORD)
                .await
                .unwrap_err()
        ),
        "USER_LOCKED"
    );
    c.unlock_user(&user.id).await.unwrap();
    sign_in(&mut front, "lock@example.com", PASSWORD)
        .await
        .unwrap();
    server.stop().await;
}

/// Median times of seven calls each of `a` and `b`, taken in alternation
/// so that a busy spell of the machine slows both alike.
async fn median_times<A, B, FutA, FutB>(mut a: A, mut b: B) -> (Duration, Duration)
where
    A: FnMut() -> FutA,
    B: FnMut() -> FutB,
    FutA: std::future::Future<Output = ()>,
    FutB: std::future::Future<Output = ()>,
{
    let (mut a_times, mut b_times) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let start = Instant::now();
        a().await;
        a_times.push(start.elapsed());
        let start = Instant::now();
        b().await;
        b_times.push(start.elapsed());
    }
    a_times.sort();
    b_times.sort();
    (a_times[3], b_times[3])
}

async fn unknown_identifiers_look_like_wrong_passwords(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    user_with_password(&mut c, "known@example.com").await;
    // An address only held unverified signs nobody in either.
    c.create_user(v1::CreateUserRequest {
        email_addresses: vec!["unverified@example.com".into()],
        password: PASSWORD.into(),
        unverified_identifiers: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut front = frontend(&server).await;
    let known = sign_in(&mut front, "known@example.com", "wrong password")
        .await
        .unwrap_err();
    for identifier in [
        "nobody@example.com",
        "unverified@example.com",
        "no_such_user",
    ] {
        let unknown = sign_in(&mut front, identifier, PASSWORD).await.unwrap_err();
        assert_eq!(
            (unknown.code(), unknown.message(), reason(&unknown)),
            (known.code(), known.message(), reason(&known)),
            "{identifier}"
        );
    }
    // Both paths hash: their times are alike (a bound loose enough for a
    // busy machine, tight enough to catch a missing hash, which is ~50x
    // faster).
    let (known_time, unknown_time) = median_times(
        || {
            let mut f = front.clone();
            async move {
                let _ = sign_in(&mut f, "known@example.com", "wrong password").await;
            }
        },
        || {
            let mut f = front.clone();
            async move {
                let _ = sign_in(&mut f, "nobody@example.com", "wrong password").await;
            }
        },
    )
    .await;
    let ratio = unknown_time.as_secs_f64() / known_time.as_secs_f64();
    assert!(
        (0.25..4.0).contains(&ratio),
        "known {known_time:?}, unknown {unknown_time:?}"
    );
    server.stop().await;
}

/// Waits (bounded) for a code delivered to `to` in the background.
async fn wait_for_code(received: &std::sync::Mutex<Vec<serde_json::Value>>, to: &str) -> String {
    for _ in 0..100 {
        if received.lock().unwrap().iter().any(|m| m["to"] == to) {
            return crate::harness::code_sent_to(received, to);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no code reached {to}");
}

async fn sign_in_with_an_email_code(backend: Backend) {
    let (received, delivery) = crate::harness::webhook_receiver().await;
    let server = TestServer::start_with_delivery(backend, delivery).await;
    let mut c = server.client().await;
    let user = user_with_password(&mut c, "code@example.com").await;
    let mut front = frontend(&server).await;
    let start = |front: &mut SignInServiceClient<Channel>, identifier: &'static str| {
        let mut front = front.clone();
        async move {
            front
                .create_sign_in(v1::CreateSignInRequest {
                    identifier: identifier.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .sign_in
                .unwrap()
        }
    };
    let known = start(&mut front, "code@example.com").await;
    assert_eq!(
        known.supported_first_factors,
        vec![
            i32::from(v1::SignInStrategy::Password),
            i32::from(v1::SignInStrategy::EmailCode)
        ]
    );
    let prepare = |id: &str| v1::PrepareFirstFactorRequest {
        sign_in_id: id.into(),
        strategy: v1::SignInStrategy::EmailCode.into(),
    };
    let attempt = |id: &str, code: &str| v1::AttemptFirstFactorRequest {
        sign_in_id: id.into(),
        strategy: v1::SignInStrategy::EmailCode.into(),
        code: code.into(),
        ..Default::default()
    };
    front
        .prepare_first_factor(prepare(&known.id))
        .await
        .unwrap();
    let code = wait_for_code(&received, "code@example.com").await;
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let known_wrong = front
        .attempt_first_factor(attempt(&known.id, &wrong))
        .await
        .unwrap_err();
    assert_eq!(
        (known_wrong.code(), reason(&known_wrong).as_str()),
        (Code::InvalidArgument, "CODE_INCORRECT")
    );

    // An unknown address: the same answers, and nothing is sent.
    let unknown = start(&mut front, "nobody@example.com").await;
    assert_eq!(
        unknown.supported_first_factors,
        known.supported_first_factors
    );
    front
        .prepare_first_factor(prepare(&unknown.id))
        .await
        .unwrap();
    let unknown_wrong = front
        .attempt_first_factor(attempt(&unknown.id, &wrong))
        .await
        .unwrap_err();
    assert_eq!(
        (
            unknown_wrong.code(),
            unknown_wrong.message(),
            reason(&unknown_wrong)
        ),
        (
            known_wrong.code(),
            known_wrong.message(),
            reason(&known_wrong)
        )
    );
    // A resend within 30 seconds waits, for both alike.
    for id in [&known.id, &unknown.id] {
        let soon = front.prepare_first_factor(prepare(id)).await.unwrap_err();
        assert_eq!(reason(&soon), "VERIFICATION_RESEND_TOO_SOON");
    }

    let signed_in = front
        .attempt_first_factor(attempt(&known.id, &code))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed_in.session.unwrap().user_id, user.id.to_string());
    assert!(
        received
            .lock()
            .unwrap()
            .iter()
            .all(|m| m["to"] != "nobody@example.com")
    );
    // A username has no code factor.
    let by_name = start(&mut front, "some_username").await;
    let refused = front
        .prepare_first_factor(prepare(&by_name.id))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "STRATEGY_NOT_ALLOWED");
    server.stop().await;
}

async fn lockouts_do_not_reveal_accounts(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    user_with_password(&mut c, "real@example.com").await;
    let mut front = frontend(&server).await;
    let mut answers = Vec::new();
    for identifier in ["real@example.com", "ghost@example.com"] {
        for _ in 0..10 {
            let wrong = sign_in(&mut front, identifier, "wrong password")
                .await
                .unwrap_err();
            assert_eq!(reason(&wrong), "FORM_PASSWORD_INCORRECT", "{identifier}");
        }
        let locked = sign_in(&mut front, identifier, "wrong password")
            .await
            .unwrap_err();
        answers.push((
            locked.code(),
            locked.message().to_owned(),
            reason(&locked),
            tonic_types::StatusExt::get_details_error_info(&locked)
                .unwrap()
                .metadata["lockout_expires_in_seconds"]
                .clone(),
        ));
    }
    assert_eq!(
        answers[0], answers[1],
        "a lockout looks the same with or without an account"
    );
    assert_eq!(answers[0].2, "USER_LOCKED");
    server.stop().await;
}

on_both_backends!(
    lockouts_do_not_reveal_accounts,
    sign_in_with_an_email_code,
    password_sign_in_starts_a_session,
    backend_lists_revokes_and_mints,
    bans_and_locks_stop_sign_ins_and_bans_end_sessions,
    unknown_identifiers_look_like_wrong_passwords,
    failed_sign_ins_lock_out_counted_under_concurrency,
);
