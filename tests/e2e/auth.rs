//! The Backend API's secret keys, from the outside.

use roster_client::v1;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{Backend, TestServer, failure};

#[tokio::test]
async fn backend_api_needs_a_configured_key() {
    let server = TestServer::start_with_keys(Backend::Sqlite, &["sk_old_key", "sk_new_key"]).await;
    let create = || v1::CreateUserRequest {
        username: "someone".into(),
        ..Default::default()
    };

    let mut anonymous = server.client_with(None).await;
    assert_eq!(
        failure(anonymous.create_user(create()).await),
        (Code::Unauthenticated, "AUTHORIZATION_MISSING".into())
    );
    let mut wrong = server.client_with(Some("sk_old_key_but_longer")).await;
    assert_eq!(
        failure(wrong.count_users(None).await),
        (Code::Unauthenticated, "SECRET_KEY_INVALID".into())
    );

    // Both keys work, so keys can be rotated without downtime.
    let mut old = server.client_with(Some("sk_old_key")).await;
    let user = old.create_user(create()).await.unwrap();
    let mut new = server.client_with(Some("sk_new_key")).await;
    assert_eq!(new.get_user(&user.id).await.unwrap(), user);
    // Refused calls changed nothing.
    assert_eq!(new.count_users(None).await.unwrap(), 1);

    // Health needs no key: Kubernetes probes carry none.
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "roster.v1.UserService".into(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");
    server.stop().await;
}
