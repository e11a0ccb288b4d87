//! Load shedding: past the limit of calls in flight, calls are refused at
//! once with UNAVAILABLE (`SERVER_OVERLOADED`) and a retry delay, while
//! health keeps answering; the refusals show in the metrics.

use roster_client::v1;
use tonic_types::StatusExt as _;
use v1::user_service_client::UserServiceClient;

use crate::harness::{Backend, Setup, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_limit_are_shed_at_once() {
    roster_server::delivery::ensure_crypto_provider();
    let server = TestServer::start_with(
        Backend::Sqlite,
        Setup {
            max_in_flight: 1,
            ..Setup::default()
        },
    )
    .await;
    let mut c = server.client().await;
    let user = c
        .create_user(v1::CreateUserRequest {
            username: "held_open".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // An upload whose stream stays open holds the one slot.
    let (send, receive) = tokio::sync::mpsc::channel(4);
    send.send(v1::SetProfileImageRequest {
        part: Some(v1::set_profile_image_request::Part::Upload(
            v1::ProfileImageUpload {
                user_id: user.id.to_string(),
                file_name: String::new(),
            },
        )),
    })
    .await
    .unwrap();
    let mut uploader = UserServiceClient::connect(server.endpoint()).await.unwrap();
    let held = tokio::spawn(async move {
        uploader
            .set_profile_image(tokio_stream::wrappers::ReceiverStream::new(receive))
            .await
    });
    wait_for_in_flight(&server, 1).await;

    let mut users = UserServiceClient::connect(server.endpoint()).await.unwrap();
    let refused = users
        .get_user(v1::GetUserRequest {
            id: user.id.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    let details = refused.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "SERVER_OVERLOADED");
    assert!(details.retry_info().unwrap().retry_delay.is_some());

    // Health is never shed.
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The upload finishes; its slot frees, and calls are served again.
    send.send(v1::SetProfileImageRequest {
        part: Some(v1::set_profile_image_request::Part::Chunk(
            crate::images::png(4, 4),
        )),
    })
    .await
    .unwrap();
    drop(send);
    assert!(
        held.await
            .unwrap()
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .has_image
    );
    // The slot frees when the server is done with the upload's response,
    // which may be just after the client has it.
    wait_for_in_flight(&server, 0).await;
    users
        .get_user(v1::GetUserRequest {
            id: user.id.to_string(),
        })
        .await
        .unwrap();

    let metrics = metrics(&server).await;
    assert!(
        metrics.contains("roster_grpc_requests_shed_total{reason=\"overloaded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "roster_grpc_requests_total{service=\"roster.v1.UserService\",method=\"GetUser\",code=\"UNAVAILABLE\"} 1"
    ));
    server.stop().await;
}

/// Waits (bounded) until the metrics count `calls` in flight.
async fn wait_for_in_flight(server: &TestServer, calls: u32) {
    let expected = format!("roster_grpc_requests_in_flight {calls}\n");
    for _ in 0..200 {
        if metrics(server).await.contains(&expected) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never {calls} calls in flight");
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
