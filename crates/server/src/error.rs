//! The one place domain and storage errors become gRPC statuses.
//!
//! Every status carries `google.rpc.ErrorInfo` (domain `roster.dev`, an
//! UPPER_SNAKE reason clients branch on) and, for bad input,
//! `google.rpc.BadRequest` naming each field. Internal failures are logged
//! with their cause and reach the client as a bare INTERNAL.

use std::collections::HashMap;

use roster_domain::{DomainError, reason};
use roster_storage::StorageError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every Roster error.
pub const ERROR_DOMAIN: &str = "roster.dev";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Storage(StorageError),
    /// Credentials missing or wrong.
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    /// A verification code could not be delivered.
    #[error("code delivery failed")]
    Delivery(#[source] crate::delivery::DeliveryError),
    /// The image store failed to keep or remove an object.
    #[error("image store failed")]
    ImageStore(#[source] object_store::Error),
    /// The client's stream broke off or sent something unreadable.
    #[error("request stream failed")]
    Stream(#[source] Status),
    /// A background task failed (panicked or was cancelled).
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
    /// A broken invariant of the server itself.
    #[error("{0}")]
    Internal(&'static str),
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Rejected(domain) => Self::Domain(domain),
            other => Self::Storage(other),
        }
    }
}

fn status(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

fn describe_field(field: &str) -> &str {
    match field {
        "email_address" => "email address",
        "phone_number" => "phone number",
        "external_id" => "external id",
        other => other,
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Domain(DomainError::Invalid(violations)) => {
                let first = violations
                    .as_slice()
                    .first()
                    .map_or(reason::FORM_PARAM_VALUE_INVALID, |v| v.reason);
                let mut details = ErrorDetails::new();
                let metadata: HashMap<String, String> = violations
                    .as_slice()
                    .iter()
                    .map(|v| (v.field.clone(), v.reason.to_owned()))
                    .collect();
                details.set_error_info(first, ERROR_DOMAIN, metadata);
                for v in violations.as_slice() {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid argument: {violations}"),
                    details,
                )
            }
            ApiError::Domain(DomainError::NotFound { resource, id }) => status(
                Code::NotFound,
                format!("{resource} not found"),
                reason::RESOURCE_NOT_FOUND,
                HashMap::from([
                    ("resource".to_owned(), resource.to_owned()),
                    ("id".to_owned(), id),
                ]),
            ),
            ApiError::Domain(DomainError::AlreadyExists { field })
            | ApiError::Storage(StorageError::Conflict { field }) => {
                let message = format!("that {} is taken", describe_field(&field));
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    reason::IDENTIFIER_EXISTS,
                    ERROR_DOMAIN,
                    HashMap::from([("field".to_owned(), field.clone())]),
                );
                details.add_bad_request_violation(field, message.clone());
                Status::with_error_details(Code::AlreadyExists, message, details)
            }
            ApiError::Domain(DomainError::FailedPrecondition { reason, message }) => {
                status(Code::FailedPrecondition, message, reason, HashMap::new())
            }
            ApiError::Domain(DomainError::LockedOut { retry_after_ms }) => {
                let seconds = (retry_after_ms + 999) / 1000;
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    reason::USER_LOCKED,
                    ERROR_DOMAIN,
                    HashMap::from([("lockout_expires_in_seconds".to_owned(), seconds.to_string())]),
                );
                details.set_retry_info(Some(std::time::Duration::from_millis(
                    u64::try_from(retry_after_ms).unwrap_or(0),
                )));
                Status::with_error_details(
                    Code::PermissionDenied,
                    format!(
                        "too many failed attempts; the account is locked for {seconds} more seconds"
                    ),
                    details,
                )
            }
            ApiError::Domain(DomainError::PermissionDenied { reason, message }) => {
                status(Code::PermissionDenied, message, reason, HashMap::new())
            }
            ApiError::Domain(DomainError::CodeIncorrect { attempts_left }) => {
                let message = format!("incorrect code; {attempts_left} attempts left");
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    reason::CODE_INCORRECT,
                    ERROR_DOMAIN,
                    HashMap::from([("attempts_remaining".to_owned(), attempts_left.to_string())]),
                );
                details.add_bad_request_violation("code", message.clone());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Domain(DomainError::RateLimited {
                reason,
                message,
                retry_after_ms,
            }) => {
                let mut details = ErrorDetails::new();
                details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
                let delay =
                    std::time::Duration::from_millis(u64::try_from(retry_after_ms).unwrap_or(0));
                details.set_retry_info(Some(delay));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Unauthenticated { reason, message } => {
                status(Code::Unauthenticated, message, reason, HashMap::new())
            }
            ApiError::Storage(StorageError::Unavailable(cause)) => {
                tracing::warn!(error = %cause, "database unavailable");
                status(
                    Code::Unavailable,
                    "the database is unavailable; retry later",
                    "STORAGE_UNAVAILABLE",
                    HashMap::new(),
                )
            }
            ApiError::Storage(StorageError::Aborted(cause)) => {
                tracing::info!(error = %cause, "transaction aborted by a concurrent one");
                status(
                    Code::Aborted,
                    "a concurrent change got in the way; retry",
                    "CONCURRENT_UPDATE",
                    HashMap::new(),
                )
            }
            ApiError::Delivery(cause) => {
                tracing::warn!(error = %cause, "code delivery failed");
                status(
                    Code::Unavailable,
                    "the code could not be delivered; no code is outstanding, retry later",
                    reason::DELIVERY_FAILED,
                    HashMap::new(),
                )
            }
            ApiError::ImageStore(cause) => {
                tracing::warn!(error = %cause, "image store unavailable");
                status(
                    Code::Unavailable,
                    "the image store is unavailable; nothing was changed, retry later",
                    "IMAGE_STORE_UNAVAILABLE",
                    HashMap::new(),
                )
            }
            // Already a status (a cancelled or malformed stream): as tonic
            // reported it.
            ApiError::Stream(status) => status,
            ApiError::Storage(error @ (StorageError::Internal(_) | StorageError::Rejected(_))) => {
                tracing::error!(error = ?error, "storage failure");
                Status::internal("internal error")
            }
            ApiError::Task(error) => {
                tracing::error!(error = %error, "background task failed");
                Status::internal("internal error")
            }
            ApiError::Internal(what) => {
                tracing::error!(error = what, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status: Status =
            ApiError::Storage(StorageError::internal("relation \"users\" does not exist")).into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(status.details().is_empty());
    }

    #[test]
    fn conflicts_name_the_field() {
        let status: Status = ApiError::from(StorageError::Conflict {
            field: "email_address".into(),
        })
        .into();
        assert_eq!(status.code(), Code::AlreadyExists);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "IDENTIFIER_EXISTS");
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "email_address"
        );
    }
}
