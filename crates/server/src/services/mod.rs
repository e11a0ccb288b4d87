//! The Backend API services. Each handler parses its request once
//! (`roster_proto::convert`), applies domain rules through the store's
//! transactional mutation, and converts the result back.

pub mod email_addresses;
pub mod phone_numbers;
pub mod users;

use roster_domain::{DomainError, IdentificationId, User};
use tonic::{Response, Status};

use crate::AppState;
use crate::error::ApiError;

/// Turns a handler's result into a gRPC response.
pub(crate) fn respond<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

/// The user owning an email address or phone number, read fresh.
pub(crate) async fn owner_of(
    state: &AppState,
    id: &IdentificationId,
    what: &'static str,
) -> Result<User, ApiError> {
    let not_found = || ApiError::Domain(DomainError::not_found(what, id.as_str()));
    let owner = state
        .users
        .find_identification_owner(id)
        .await?
        .ok_or_else(not_found)?;
    state.users.get_user(&owner).await?.ok_or_else(not_found)
}
