//! What the load generator reads of each answer.
//!
//! The load generator shares the machine with the server it measures, so
//! the CPU it spends on an answer is taken from the server. Decoding
//! Roster's answer to GetUser (a whole user: its email addresses and
//! phone numbers, three metadata `Struct`s, times) into the generated
//! messages cost the load generator about 5 µs per call more than reading
//! it as below, work the `select` baseline's answer of two fields does not
//! need, and in the ratio of the two that showed as if it were the
//! server's. So the calls are made with the messages below in place of the
//! answers' own: they hold what the load generator checks, under the same
//! field numbers, and prost steps over every other field by its length
//! without building it. The answer is still received whole and read field
//! by field at its top levels; a malformed one fails to decode.

use http::uri::PathAndQuery;
use roster_proto::v1::{
    CreateEmailAddressRequest, CreateUserRequest, GetUserRequest, ListUsersRequest,
    UpdateUserMetadataRequest,
};
use tonic::client::Grpc;
use tonic::transport::Channel;

/// `User`, as far as the load generator checks it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "5")]
    pub username: String,
}

/// `GetUserResponse`, `CreateUserResponse` and `UpdateUserMetadataResponse`,
/// which all hold one user in field 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OneUser {
    #[prost(message, optional, tag = "1")]
    pub user: Option<User>,
}

/// `ListUsersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserPage {
    #[prost(message, repeated, tag = "1")]
    pub users: Vec<User>,
}

/// `EmailAddress`, as far as the load generator checks it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EmailAddress {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub user_id: String,
}

/// `CreateEmailAddressResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OneEmailAddress {
    #[prost(message, optional, tag = "1")]
    pub email_address: Option<EmailAddress>,
}

/// The calls the scenarios make, over one channel.
#[derive(Clone, Debug)]
pub struct Calls(Grpc<Channel>);

impl Calls {
    pub fn new(channel: Channel) -> Self {
        Self(Grpc::new(channel))
    }

    async fn unary<Q, A>(&mut self, path: &'static str, request: Q) -> Result<A, tonic::Status>
    where
        Q: prost::Message + 'static,
        A: prost::Message + Default + 'static,
    {
        self.0
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        self.0
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get_user(&mut self, request: GetUserRequest) -> Result<OneUser, tonic::Status> {
        self.unary("/roster.v1.UserService/GetUser", request).await
    }

    pub async fn create_user(
        &mut self,
        request: CreateUserRequest,
    ) -> Result<OneUser, tonic::Status> {
        self.unary("/roster.v1.UserService/CreateUser", request)
            .await
    }

    pub async fn list_users(
        &mut self,
        request: ListUsersRequest,
    ) -> Result<UserPage, tonic::Status> {
        self.unary("/roster.v1.UserService/ListUsers", request)
            .await
    }

    pub async fn update_user_metadata(
        &mut self,
        request: UpdateUserMetadataRequest,
    ) -> Result<OneUser, tonic::Status> {
        self.unary("/roster.v1.UserService/UpdateUserMetadata", request)
            .await
    }

    pub async fn create_email_address(
        &mut self,
        request: CreateEmailAddressRequest,
    ) -> Result<OneEmailAddress, tonic::Status> {
        self.unary("/roster.v1.EmailAddressService/CreateEmailAddress", request)
            .await
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use roster_proto::v1;

    use super::*;

    fn full_user() -> v1::User {
        v1::User {
            id: "user_1".into(),
            first_name: "Ada".into(),
            username: "ada".into(),
            email_addresses: vec![v1::EmailAddress {
                id: "idn_1".into(),
                user_id: "user_1".into(),
                email_address: "ada@example.com".into(),
                ..Default::default()
            }],
            public_metadata: Some(prost_types::Struct {
                fields: [(
                    "plan".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue("free".into())),
                    },
                )]
                .into(),
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn answers_read_back_what_the_load_generator_checks() {
        let user = full_user();
        let expected = User {
            id: "user_1".into(),
            username: "ada".into(),
        };
        let one = v1::GetUserResponse {
            user: Some(user.clone()),
        }
        .encode_to_vec();
        assert_eq!(
            OneUser::decode(one.as_slice()).unwrap().user,
            Some(expected.clone())
        );
        for bytes in [
            v1::CreateUserResponse {
                user: Some(user.clone()),
            }
            .encode_to_vec(),
            v1::UpdateUserMetadataResponse {
                user: Some(user.clone()),
            }
            .encode_to_vec(),
        ] {
            assert_eq!(bytes, one, "the same message, field for field");
        }
        let page = v1::ListUsersResponse {
            users: vec![user.clone(), v1::User::default()],
            next_page_token: "next".into(),
        }
        .encode_to_vec();
        assert_eq!(
            UserPage::decode(page.as_slice()).unwrap().users,
            vec![expected, User::default()]
        );
        let email = v1::CreateEmailAddressResponse {
            email_address: Some(user.email_addresses[0].clone()),
        }
        .encode_to_vec();
        assert_eq!(
            OneEmailAddress::decode(email.as_slice())
                .unwrap()
                .email_address,
            Some(EmailAddress {
                id: "idn_1".into(),
                user_id: "user_1".into(),
            })
        );
    }

    #[test]
    fn a_malformed_answer_fails_to_decode() {
        let mut bytes = v1::GetUserResponse {
            user: Some(full_user()),
        }
        .encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(OneUser::decode(bytes.as_slice()).is_err());
    }
}
