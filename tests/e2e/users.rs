//! UserService over gRPC.

use prost_types::{FieldMask, Struct};
use roster_client::v1;
use roster_domain::UserId;
use serde_json::json;
use tonic::Code;

use crate::harness::{Backend, TestServer, failure, on_both_backends, violated_fields};

fn metadata(value: serde_json::Value) -> Option<Struct> {
    Some(roster_proto::convert::metadata_to_struct(
        roster_domain::Metadata::parse(value).unwrap(),
    ))
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

async fn create_get_update_list_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["Ada@Example.COM".into(), "ada@work.example".into()],
            phone_numbers: vec!["+1 (415) 555-0101".into()],
            username: "ada_l".into(),
            external_id: "crm-42".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            locale: "en-GB".into(),
            password: "correct horse battery".into(),
            public_metadata: metadata(json!({"role": "admin"})),
            private_metadata: metadata(json!({"stripe": "cus_1"})),
            unsafe_metadata: metadata(json!({"theme": "dark"})),
            ..v1::CreateUserRequest::default()
        })
        .await
        .unwrap();
    assert!(user.id.as_str().starts_with("user_"));
    assert_eq!(user.email_addresses[0].email.as_str(), "Ada@example.com");
    assert_eq!(
        user.primary_email_address_id.as_ref(),
        Some(&user.email_addresses[0].id)
    );
    assert_eq!(user.phone_numbers[0].phone.as_str(), "+14155550101");
    assert_eq!(
        user.primary_phone_number_id.as_ref(),
        Some(&user.phone_numbers[0].id)
    );
    assert!(
        user.email_addresses
            .iter()
            .all(|e| e.verification.is_verified())
    );
    assert!(user.password_enabled);
    assert_eq!(
        user.private_metadata.as_map().get("stripe"),
        Some(&json!("cus_1"))
    );

    assert_eq!(c.get_user(&user.id).await.unwrap(), user);
    assert!(
        c.verify_password(&user.id, "correct horse battery")
            .await
            .unwrap()
    );
    assert!(
        !c.verify_password(&user.id, "wrong horse battery")
            .await
            .unwrap()
    );

    let updated = c
        .update_user(v1::UpdateUserRequest {
            user: Some(v1::User {
                id: user.id.to_string(),
                first_name: "Augusta".into(),
                username: "countess".into(),
                last_name: "ignored: not in the mask".into(),
                private_metadata: metadata(json!({"plan": "pro"})),
                ..v1::User::default()
            }),
            update_mask: mask(&["first_name", "username", "private_metadata"]),
            password: String::new(),
            keep_sessions: false,
        })
        .await
        .unwrap();
    assert_eq!(updated.first_name.as_ref().unwrap().as_str(), "Augusta");
    assert_eq!(updated.last_name.as_ref().unwrap().as_str(), "Lovelace");
    assert_eq!(updated.username.as_ref().unwrap().as_str(), "countess");
    assert_eq!(
        serde_json::Value::Object(updated.private_metadata.as_map().clone()),
        json!({"plan": "pro"})
    );
    assert!(updated.updated_at >= user.updated_at);

    let (page, next) = c
        .list_users(v1::ListUsersRequest {
            filter: Some(v1::UserFilter {
                email_addresses: vec!["ADA@example.com".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page, vec![updated.clone()]);
    assert!(next.is_none());
    assert_eq!(
        c.count_users(Some(v1::UserFilter {
            query: "COUNTESS".into(),
            ..Default::default()
        }))
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        c.count_users(Some(v1::UserFilter {
            banned: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap(),
        0
    );

    c.delete_user(&user.id).await.unwrap();
    assert_eq!(
        failure(c.get_user(&user.id).await),
        (Code::NotFound, "RESOURCE_NOT_FOUND".into())
    );
    assert_eq!(failure(c.delete_user(&user.id).await).0, Code::NotFound);
    // Its identifiers are free again.
    c.create_user(v1::CreateUserRequest {
        email_addresses: vec!["ada@example.com".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    server.stop().await;
}

async fn bad_input_is_rejected_whole(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let result = c
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["good@example.com".into(), "not-an-email".into()],
            phone_numbers: vec!["555-0101".into()],
            username: "has@sign".into(),
            password: "short".into(),
            public_metadata: Some(Struct {
                fields: [(
                    "n".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(
        violated_fields(result),
        [
            "email_addresses[1]",
            "phone_numbers[0]",
            "username",
            "password",
            "public_metadata"
        ]
    );
    let big = metadata(json!({"blob": "x".repeat(9000)}));
    let (code, reason) = failure(
        c.create_user(v1::CreateUserRequest {
            email_addresses: vec!["good@example.com".into()],
            unsafe_metadata: big,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "METADATA_TOO_LARGE")
    );
    let (code, reason) = failure(c.create_user(v1::CreateUserRequest::default()).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "FORM_PARAM_MISSING")
    );
    assert_eq!(
        failure(
            c.get_user(&UserId::generate(roster_domain::Timestamp::from_millis(1)))
                .await
        )
        .0,
        Code::NotFound
    );
    let (code, _) = failure(
        c.users()
            .get_user(v1::GetUserRequest {
                id: "usr_nope".into(),
            })
            .await
            .map_err(Into::into),
    );
    assert_eq!(code, Code::InvalidArgument);
    // Nothing was written by any refused call.
    assert_eq!(c.count_users(None).await.unwrap(), 0);
    server.stop().await;
}

async fn concurrent_creators_one_wins(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = server.client().await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.create_user(v1::CreateUserRequest {
                    email_addresses: vec![
                        if i % 2 == 0 {
                            "race@example.com"
                        } else {
                            "RACE@example.com"
                        }
                        .into(),
                    ],
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    let mut created = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(Code::AlreadyExists));
                assert_eq!(e.reason().as_deref(), Some("IDENTIFIER_EXISTS"));
            }
        }
    }
    assert_eq!(created, 1);
    let mut c = c;
    assert_eq!(c.count_users(None).await.unwrap(), 1);
    server.stop().await;
}

async fn metadata_merges_deeply(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            username: "meta_user".into(),
            public_metadata: metadata(
                json!({"a": {"b": 1, "c": {"d": 2}}, "list": [1, 2], "drop": true}),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let merged = c
        .update_user_metadata(v1::UpdateUserMetadataRequest {
            user_id: user.id.to_string(),
            public_metadata: metadata(
                json!({"a": {"c": {"d": null, "e": 3}}, "list": [9], "drop": null}),
            ),
            unsafe_metadata: metadata(json!({"seen": true})),
            private_metadata: None,
        })
        .await
        .unwrap();
    assert_eq!(
        serde_json::Value::Object(merged.public_metadata.as_map().clone()),
        json!({"a": {"b": 1, "c": {"e": 3}}, "list": [9]})
    );
    assert_eq!(
        serde_json::Value::Object(merged.unsafe_metadata.as_map().clone()),
        json!({"seen": true})
    );
    let (code, reason) = failure(
        c.update_user_metadata(v1::UpdateUserMetadataRequest {
            user_id: user.id.to_string(),
            private_metadata: metadata(json!({"blob": "x".repeat(8200)})),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "METADATA_TOO_LARGE")
    );
    assert_eq!(c.get_user(&user.id).await.unwrap(), merged);
    server.stop().await;
}

async fn pages_follow_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    for i in 0..25 {
        c.create_user(v1::CreateUserRequest {
            username: format!("user_{i:02}"),
            first_name: if i % 5 == 0 {
                "Fifth".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (users, next) = c
            .list_users(v1::ListUsersRequest {
                page_size: 10,
                page_token: token.clone(),
                order_by: "username desc".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        names.extend(
            users
                .iter()
                .map(|u| u.username.clone().unwrap().to_string()),
        );
        all.extend(users);
        match next {
            Some(t) => token = t,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).rev().map(|i| format!("user_{i:02}")).collect();
    assert_eq!(names, expected);

    let (first, next) = c
        .list_users(v1::ListUsersRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let newest = all
        .iter()
        .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
        .unwrap();
    assert_eq!(&first[0], newest, "newest first by default");
    let token = next.unwrap();
    let (code, reason) = failure(
        c.list_users(v1::ListUsersRequest {
            page_size: 2,
            page_token: format!("x{token}"),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "PAGE_TOKEN_INVALID")
    );
    let other_filter = Some(v1::UserFilter {
        query: "fifth".into(),
        ..Default::default()
    });
    let (code, _) = failure(
        c.list_users(v1::ListUsersRequest {
            filter: other_filter.clone(),
            page_size: 2,
            page_token: token,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(c.count_users(other_filter).await.unwrap(), 5);
    let (code, reason) = failure(
        c.list_users(v1::ListUsersRequest {
            order_by: "password".into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "FORM_PARAM_VALUE_INVALID")
    );
    server.stop().await;
}

async fn ban_lock_and_passwords(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            username: "no_password".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!user.password_enabled);
    assert_eq!(
        failure(c.verify_password(&user.id, "anything at all").await),
        (Code::FailedPrecondition, "PASSWORD_NOT_SET".into())
    );
    assert!(c.ban_user(&user.id).await.unwrap().banned);
    assert_eq!(
        c.count_users(Some(v1::UserFilter {
            banned: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap(),
        1
    );
    assert!(!c.unban_user(&user.id).await.unwrap().banned);
    assert!(c.lock_user(&user.id).await.unwrap().locked);
    assert!(!c.unlock_user(&user.id).await.unwrap().locked);

    let with_password = c
        .update_user(v1::UpdateUserRequest {
            user: Some(v1::User {
                id: user.id.to_string(),
                ..Default::default()
            }),
            update_mask: mask(&["password"]),
            password: "a brand new password".into(),
            keep_sessions: false,
        })
        .await
        .unwrap();
    assert!(with_password.password_enabled);
    assert!(
        c.verify_password(&user.id, "a brand new password")
            .await
            .unwrap()
    );
    let removed = c
        .update_user(v1::UpdateUserRequest {
            user: Some(v1::User {
                id: user.id.to_string(),
                ..Default::default()
            }),
            update_mask: mask(&["password"]),
            password: String::new(),
            keep_sessions: false,
        })
        .await
        .unwrap();
    assert!(!removed.password_enabled);
    let (code, reason) = failure(
        c.update_user(v1::UpdateUserRequest {
            user: Some(v1::User {
                id: user.id.to_string(),
                ..Default::default()
            }),
            update_mask: mask(&["banned"]),
            password: String::new(),
            keep_sessions: false,
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "FORM_PARAM_VALUE_INVALID")
    );
    // Removing the only identifier is refused.
    let (code, reason) = failure(
        c.update_user(v1::UpdateUserRequest {
            user: Some(v1::User {
                id: user.id.to_string(),
                ..Default::default()
            }),
            update_mask: mask(&["username"]),
            password: String::new(),
            keep_sessions: false,
        })
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "LAST_IDENTIFIER")
    );
    server.stop().await;
}

on_both_backends!(
    create_get_update_list_delete,
    bad_input_is_rejected_whole,
    concurrent_creators_one_wins,
    metadata_merges_deeply,
    pages_follow_tokens,
    ban_lock_and_passwords,
);
