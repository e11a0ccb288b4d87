//! Typed Rust client for Roster's Backend API.
//!
//! [`Client`] attaches the secret key to every call and returns domain
//! values (`roster_domain::User`, …) rather than protobuf messages. Errors
//! keep the gRPC status and expose the `ErrorInfo` reason clients branch on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roster_client::ClientError> {
//! let mut roster = roster_client::Client::connect("http://127.0.0.1:50051", Some("sk_live_…".into())).await?;
//! let user = roster
//!     .create_user(roster_client::v1::CreateUserRequest {
//!         email_addresses: vec!["ada@example.com".into()],
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", user.id);
//! # Ok(()) }
//! ```

use roster_domain::{
    DomainError, EmailAddress, FieldViolation, IdentificationId, PhoneNumber, User, UserId,
};
use roster_proto::convert;
pub use roster_proto::v1;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt as _;
use v1::email_address_service_client::EmailAddressServiceClient;
use v1::phone_number_service_client::PhoneNumberServiceClient;
use v1::session_service_client::SessionServiceClient;
use v1::user_service_client::UserServiceClient;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint could not be reached or is malformed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Roster answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The secret key cannot be sent as a header.
    #[error("the secret key is not a valid header value")]
    InvalidKey,
    /// Roster's answer did not hold what the contract promises.
    #[error("unexpected response: {0}")]
    InvalidResponse(String),
}

impl ClientError {
    /// The `ErrorInfo.reason` of a status error, such as
    /// `IDENTIFIER_EXISTS`.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Status(status) => status.get_details_error_info().map(|info| info.reason),
            _ => None,
        }
    }

    /// The gRPC code of a status error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// Attaches `authorization: Bearer <key>`.
#[derive(Clone, Debug)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Auth>;

/// A Backend API client. Cloning is cheap and shares the connection.
#[derive(Clone, Debug)]
pub struct Client {
    users: UserServiceClient<Authed>,
    emails: EmailAddressServiceClient<Authed>,
    phones: PhoneNumberServiceClient<Authed>,
    sessions: SessionServiceClient<Authed>,
}

fn missing(what: &str) -> ClientError {
    ClientError::InvalidResponse(format!("response without {what}"))
}

fn user_of(user: Option<v1::User>) -> Result<User, ClientError> {
    convert::user_from_proto(user.ok_or_else(|| missing("user"))?)
        .map_err(|e: DomainError| ClientError::InvalidResponse(e.to_string()))
}

#[allow(clippy::needless_pass_by_value, reason = "used as a map_err adapter")]
fn invalid(v: FieldViolation) -> ClientError {
    ClientError::InvalidResponse(format!("{}: {}", v.field, v.description))
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`), sending `secret_key`
    /// with every call.
    pub async fn connect(
        endpoint: impl Into<String>,
        secret_key: Option<String>,
    ) -> Result<Self, ClientError> {
        let channel = Endpoint::from_shared(endpoint.into())?.connect().await?;
        Self::with_channel(channel, secret_key)
    }

    /// Uses an existing channel.
    pub fn with_channel(channel: Channel, secret_key: Option<String>) -> Result<Self, ClientError> {
        let header = secret_key
            .map(|k| {
                format!("Bearer {k}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::InvalidKey)
            })
            .transpose()?;
        let auth = Auth(header);
        Ok(Self {
            users: UserServiceClient::with_interceptor(channel.clone(), auth.clone()),
            emails: EmailAddressServiceClient::with_interceptor(channel.clone(), auth.clone()),
            phones: PhoneNumberServiceClient::with_interceptor(channel.clone(), auth.clone()),
            sessions: SessionServiceClient::with_interceptor(channel, auth),
        })
    }

    /// The SessionService client (sessions and their tokens).
    pub fn sessions(&mut self) -> &mut SessionServiceClient<Authed> {
        &mut self.sessions
    }

    /// The raw UserService client, for calls this wrapper does not cover.
    pub fn users(&mut self) -> &mut UserServiceClient<Authed> {
        &mut self.users
    }

    pub async fn create_user(
        &mut self,
        request: v1::CreateUserRequest,
    ) -> Result<User, ClientError> {
        user_of(self.users.create_user(request).await?.into_inner().user)
    }

    pub async fn get_user(&mut self, id: &UserId) -> Result<User, ClientError> {
        user_of(
            self.users
                .get_user(v1::GetUserRequest { id: id.to_string() })
                .await?
                .into_inner()
                .user,
        )
    }

    /// One page of users and the token of the next page, if any.
    pub async fn list_users(
        &mut self,
        request: v1::ListUsersRequest,
    ) -> Result<(Vec<User>, Option<String>), ClientError> {
        let page = self.users.list_users(request).await?.into_inner();
        let users = page
            .users
            .into_iter()
            .map(|u| user_of(Some(u)))
            .collect::<Result<_, _>>()?;
        Ok((users, Some(page.next_page_token).filter(|t| !t.is_empty())))
    }

    pub async fn count_users(
        &mut self,
        filter: Option<v1::UserFilter>,
    ) -> Result<u64, ClientError> {
        let count = self
            .users
            .count_users(v1::CountUsersRequest { filter })
            .await?
            .into_inner()
            .total_count;
        u64::try_from(count).map_err(|_| ClientError::InvalidResponse("negative count".into()))
    }

    pub async fn update_user(
        &mut self,
        request: v1::UpdateUserRequest,
    ) -> Result<User, ClientError> {
        user_of(self.users.update_user(request).await?.into_inner().user)
    }

    pub async fn update_user_metadata(
        &mut self,
        request: v1::UpdateUserMetadataRequest,
    ) -> Result<User, ClientError> {
        user_of(
            self.users
                .update_user_metadata(request)
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn delete_user(&mut self, id: &UserId) -> Result<(), ClientError> {
        self.users
            .delete_user(v1::DeleteUserRequest { id: id.to_string() })
            .await?;
        Ok(())
    }

    pub async fn ban_user(&mut self, id: &UserId) -> Result<User, ClientError> {
        user_of(
            self.users
                .ban_user(v1::BanUserRequest {
                    user_id: id.to_string(),
                })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn unban_user(&mut self, id: &UserId) -> Result<User, ClientError> {
        user_of(
            self.users
                .unban_user(v1::UnbanUserRequest {
                    user_id: id.to_string(),
                })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn lock_user(&mut self, id: &UserId) -> Result<User, ClientError> {
        user_of(
            self.users
                .lock_user(v1::LockUserRequest {
                    user_id: id.to_string(),
                })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn unlock_user(&mut self, id: &UserId) -> Result<User, ClientError> {
        user_of(
            self.users
                .unlock_user(v1::UnlockUserRequest {
                    user_id: id.to_string(),
                })
                .await?
                .into_inner()
                .user,
        )
    }

    /// Whether `password` is the user's password.
    pub async fn verify_password(
        &mut self,
        id: &UserId,
        password: &str,
    ) -> Result<bool, ClientError> {
        let request = v1::VerifyPasswordRequest {
            user_id: id.to_string(),
            password: password.to_owned(),
        };
        Ok(self
            .users
            .verify_password(request)
            .await?
            .into_inner()
            .verified)
    }

    pub async fn create_email_address(
        &mut self,
        request: v1::CreateEmailAddressRequest,
    ) -> Result<EmailAddress, ClientError> {
        let e = self
            .emails
            .create_email_address(request)
            .await?
            .into_inner()
            .email_address;
        convert::email_from_proto(&e.ok_or_else(|| missing("email address"))?).map_err(invalid)
    }

    pub async fn get_email_address(
        &mut self,
        id: &IdentificationId,
    ) -> Result<EmailAddress, ClientError> {
        let e = self
            .emails
            .get_email_address(v1::GetEmailAddressRequest { id: id.to_string() })
            .await?
            .into_inner()
            .email_address;
        convert::email_from_proto(&e.ok_or_else(|| missing("email address"))?).map_err(invalid)
    }

    pub async fn update_email_address(
        &mut self,
        request: v1::UpdateEmailAddressRequest,
    ) -> Result<EmailAddress, ClientError> {
        let e = self
            .emails
            .update_email_address(request)
            .await?
            .into_inner()
            .email_address;
        convert::email_from_proto(&e.ok_or_else(|| missing("email address"))?).map_err(invalid)
    }

    /// Deletes an email address; returns its user as it is afterwards.
    pub async fn delete_email_address(
        &mut self,
        id: &IdentificationId,
    ) -> Result<User, ClientError> {
        user_of(
            self.emails
                .delete_email_address(v1::DeleteEmailAddressRequest { id: id.to_string() })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn create_phone_number(
        &mut self,
        request: v1::CreatePhoneNumberRequest,
    ) -> Result<PhoneNumber, ClientError> {
        let p = self
            .phones
            .create_phone_number(request)
            .await?
            .into_inner()
            .phone_number;
        convert::phone_from_proto(&p.ok_or_else(|| missing("phone number"))?).map_err(invalid)
    }

    pub async fn get_phone_number(
        &mut self,
        id: &IdentificationId,
    ) -> Result<PhoneNumber, ClientError> {
        let p = self
            .phones
            .get_phone_number(v1::GetPhoneNumberRequest { id: id.to_string() })
            .await?
            .into_inner()
            .phone_number;
        convert::phone_from_proto(&p.ok_or_else(|| missing("phone number"))?).map_err(invalid)
    }

    pub async fn update_phone_number(
        &mut self,
        request: v1::UpdatePhoneNumberRequest,
    ) -> Result<PhoneNumber, ClientError> {
        let p = self
            .phones
            .update_phone_number(request)
            .await?
            .into_inner()
            .phone_number;
        convert::phone_from_proto(&p.ok_or_else(|| missing("phone number"))?).map_err(invalid)
    }

    /// Deletes a phone number; returns its user as it is afterwards.
    pub async fn delete_phone_number(
        &mut self,
        id: &IdentificationId,
    ) -> Result<User, ClientError> {
        user_of(
            self.phones
                .delete_phone_number(v1::DeletePhoneNumberRequest { id: id.to_string() })
                .await?
                .into_inner()
                .user,
        )
    }

    /// Starts a code verification of an email address; with `return_code`
    /// the code comes back instead of being delivered.
    pub async fn prepare_email_address_verification(
        &mut self,
        id: &IdentificationId,
        return_code: bool,
    ) -> Result<(EmailAddress, Option<String>), ClientError> {
        let request = v1::PrepareEmailAddressVerificationRequest {
            id: id.to_string(),
            return_code,
        };
        let response = self
            .emails
            .prepare_email_address_verification(request)
            .await?
            .into_inner();
        let email = response
            .email_address
            .ok_or_else(|| missing("email address"))?;
        Ok((
            convert::email_from_proto(&email).map_err(invalid)?,
            Some(response.code).filter(|c| !c.is_empty()),
        ))
    }

    /// Checks a code sent to an email address.
    pub async fn attempt_email_address_verification(
        &mut self,
        id: &IdentificationId,
        code: &str,
    ) -> Result<EmailAddress, ClientError> {
        let request = v1::AttemptEmailAddressVerificationRequest {
            id: id.to_string(),
            code: code.to_owned(),
        };
        let e = self
            .emails
            .attempt_email_address_verification(request)
            .await?
            .into_inner()
            .email_address;
        convert::email_from_proto(&e.ok_or_else(|| missing("email address"))?).map_err(invalid)
    }

    /// Starts a code verification of a phone number; see
    /// [`Self::prepare_email_address_verification`].
    pub async fn prepare_phone_number_verification(
        &mut self,
        id: &IdentificationId,
        return_code: bool,
    ) -> Result<(PhoneNumber, Option<String>), ClientError> {
        let request = v1::PreparePhoneNumberVerificationRequest {
            id: id.to_string(),
            return_code,
        };
        let response = self
            .phones
            .prepare_phone_number_verification(request)
            .await?
            .into_inner();
        let phone = response
            .phone_number
            .ok_or_else(|| missing("phone number"))?;
        Ok((
            convert::phone_from_proto(&phone).map_err(invalid)?,
            Some(response.code).filter(|c| !c.is_empty()),
        ))
    }

    /// Checks a code sent to a phone number.
    pub async fn attempt_phone_number_verification(
        &mut self,
        id: &IdentificationId,
        code: &str,
    ) -> Result<PhoneNumber, ClientError> {
        let request = v1::AttemptPhoneNumberVerificationRequest {
            id: id.to_string(),
            code: code.to_owned(),
        };
        let p = self
            .phones
            .attempt_phone_number_verification(request)
            .await?
            .into_inner()
            .phone_number;
        convert::phone_from_proto(&p.ok_or_else(|| missing("phone number"))?).map_err(invalid)
    }
}
