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

#[tokio::test]
async fn reflection_v1_lists_the_services_without_a_key() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start_with_keys(Backend::Sqlite, &["sk_only"]).await;
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in [
        "roster.v1.UserService",
        "roster.v1.EmailAddressService",
        "roster.v1.PhoneNumberService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
    server.stop().await;
}
