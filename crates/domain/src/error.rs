//! Domain errors and the reasons clients branch on.
//!
//! Reasons follow Clerk's error codes in UPPER_SNAKE form; the server puts
//! them in `google.rpc.ErrorInfo.reason`.

use std::fmt;

/// Reasons carried by errors, stable across releases.
pub mod reason {
    /// A value does not have the expected format.
    pub const FORM_PARAM_FORMAT_INVALID: &str = "FORM_PARAM_FORMAT_INVALID";
    /// A required value is missing.
    pub const FORM_PARAM_MISSING: &str = "FORM_PARAM_MISSING";
    /// A value is longer than allowed.
    pub const FORM_PARAM_MAX_LENGTH_EXCEEDED: &str = "FORM_PARAM_MAX_LENGTH_EXCEEDED";
    /// A value is not one of the allowed ones.
    pub const FORM_PARAM_VALUE_INVALID: &str = "FORM_PARAM_VALUE_INVALID";
    /// A username is too short or too long.
    pub const FORM_USERNAME_INVALID_LENGTH: &str = "FORM_USERNAME_INVALID_LENGTH";
    /// A username has a character outside letters, digits, `_`, `-`, `.`.
    pub const FORM_USERNAME_INVALID_CHARACTER: &str = "FORM_USERNAME_INVALID_CHARACTER";
    /// A password is shorter than the minimum.
    pub const FORM_PASSWORD_LENGTH_TOO_SHORT: &str = "FORM_PASSWORD_LENGTH_TOO_SHORT";
    /// A password is longer than the maximum.
    pub const FORM_PASSWORD_LENGTH_TOO_LONG: &str = "FORM_PASSWORD_LENGTH_TOO_LONG";
    /// The named identifier does not belong to the user.
    pub const FORM_IDENTIFIER_NOT_FOUND: &str = "FORM_IDENTIFIER_NOT_FOUND";
    /// The same identifier appears twice in one request.
    pub const FORM_IDENTIFIER_DUPLICATE: &str = "FORM_IDENTIFIER_DUPLICATE";
    /// Metadata is not a JSON object, too deep, or over the size limit.
    pub const METADATA_INVALID: &str = "METADATA_INVALID";
    /// The three metadata objects together exceed 8 KiB.
    pub const METADATA_TOO_LARGE: &str = "METADATA_TOO_LARGE";
    /// A page token is malformed, tampered with, or from another query.
    pub const PAGE_TOKEN_INVALID: &str = "PAGE_TOKEN_INVALID";
    /// An identifier (email, phone, username, external id) belongs to
    /// another user.
    pub const IDENTIFIER_EXISTS: &str = "IDENTIFIER_EXISTS";
    /// A primary identifier must be verified.
    pub const PRIMARY_NOT_VERIFIED: &str = "PRIMARY_NOT_VERIFIED";
    /// The primary identifier cannot be unset while verified ones exist.
    pub const PRIMARY_REQUIRED: &str = "PRIMARY_REQUIRED";
    /// A second factor must be a verified phone number.
    pub const SECOND_FACTOR_NOT_VERIFIED: &str = "SECOND_FACTOR_NOT_VERIFIED";
    /// The change would leave the user without any identifier.
    pub const LAST_IDENTIFIER: &str = "LAST_IDENTIFIER";
    /// The user has no password to verify against.
    pub const PASSWORD_NOT_SET: &str = "PASSWORD_NOT_SET";
    /// The resource does not exist.
    pub const RESOURCE_NOT_FOUND: &str = "RESOURCE_NOT_FOUND";
    /// The verification code is wrong.
    pub const CODE_INCORRECT: &str = "CODE_INCORRECT";
    /// The verification code expired; prepare a new one.
    pub const VERIFICATION_EXPIRED: &str = "VERIFICATION_EXPIRED";
    /// Too many wrong codes; prepare a new one.
    pub const VERIFICATION_FAILED: &str = "VERIFICATION_FAILED";
    /// The identifier is verified already.
    pub const VERIFICATION_ALREADY_VERIFIED: &str = "VERIFICATION_ALREADY_VERIFIED";
    /// No code was prepared for the identifier.
    pub const VERIFICATION_NOT_PREPARED: &str = "VERIFICATION_NOT_PREPARED";
    /// No way to deliver a code is configured on the server.
    pub const DELIVERY_NOT_CONFIGURED: &str = "DELIVERY_NOT_CONFIGURED";
    /// A new code was asked for before the resend cooldown ended.
    pub const VERIFICATION_RESEND_TOO_SOON: &str = "VERIFICATION_RESEND_TOO_SOON";
    /// Too many codes were sent to an identifier or a user in the send
    /// window.
    pub const VERIFICATION_SEND_LIMIT: &str = "VERIFICATION_SEND_LIMIT";
    /// A wrong password (or no such account: the two are not told apart).
    pub const FORM_PASSWORD_INCORRECT: &str = "FORM_PASSWORD_INCORRECT";
    /// A profile image is larger than the upload limit (10 MB).
    pub const AVATAR_FILE_SIZE_EXCEEDED: &str = "AVATAR_FILE_SIZE_EXCEEDED";
    /// A profile image's bytes are not a JPEG, PNG, GIF or WebP image, or
    /// one too large or damaged to decode.
    pub const AVATAR_FILE_TYPE_INVALID: &str = "AVATAR_FILE_TYPE_INVALID";
    /// The server is receiving as many uploads as it buffers at once.
    pub const UPLOADS_BUSY: &str = "UPLOADS_BUSY";
    /// The user is banned and cannot sign in.
    pub const USER_BANNED: &str = "USER_BANNED";
    /// The user is locked and cannot sign in.
    pub const USER_LOCKED: &str = "USER_LOCKED";
    /// The sign-up is complete already.
    pub const SIGN_UP_COMPLETE: &str = "SIGN_UP_COMPLETE";
    /// The sign-up was abandoned (it expired unfinished).
    pub const SIGN_UP_EXPIRED: &str = "SIGN_UP_EXPIRED";
    /// The sign-in was abandoned (it expired unfinished).
    pub const SIGN_IN_EXPIRED: &str = "SIGN_IN_EXPIRED";
    /// The sign-in is complete already.
    pub const SIGN_IN_COMPLETE: &str = "SIGN_IN_COMPLETE";
    /// The strategy is not one of the sign-in's supported first factors.
    pub const STRATEGY_NOT_ALLOWED: &str = "STRATEGY_NOT_ALLOWED";
    /// The server does not let users delete their own accounts.
    pub const SELF_DELETE_DISABLED: &str = "SELF_DELETE_DISABLED";
    /// The password changed between its check and the update.
    pub const PASSWORD_CHANGED: &str = "PASSWORD_CHANGED";
    /// Public or private metadata written from the Frontend API.
    pub const METADATA_NOT_WRITABLE: &str = "METADATA_NOT_WRITABLE";
    /// The session is revoked, ended or expired.
    pub const SESSION_NOT_ACTIVE: &str = "SESSION_NOT_ACTIVE";
    /// The code could not be delivered; no code is outstanding.
    pub const DELIVERY_FAILED: &str = "DELIVERY_FAILED";
}

/// One bad field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, for example `email_addresses[1]`.
    pub field: String,
    /// One of [`reason`].
    pub reason: &'static str,
    /// Human-readable description, lowercase, no trailing period.
    pub description: String,
}

impl FieldViolation {
    pub fn new(
        field: impl Into<String>,
        reason: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason,
            description: description.into(),
        }
    }

    /// The same violation reported under a path prefixed by `parent`.
    #[must_use]
    pub fn nested(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Every bad field of a request, collected so the client sees all at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// Records the error of `result` under `field` and returns its value.
    pub fn check<T>(&mut self, field: &str, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.push(violation.nested(field));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[FieldViolation] {
        &self.0
    }

    /// `Ok(())` when nothing was recorded, the collected violations otherwise.
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self))
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

/// Why a domain operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input is malformed; nothing was changed.
    #[error("invalid argument: {0}")]
    Invalid(Violations),
    /// The named resource does not exist.
    #[error("{resource} not found: {id}")]
    NotFound { resource: &'static str, id: String },
    /// An identifier is already taken.
    #[error("{field} already exists")]
    AlreadyExists { field: String },
    /// The current state forbids the operation.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    /// A verification code was wrong; the attempt was counted.
    #[error("incorrect code; {attempts_left} attempts left")]
    CodeIncorrect { attempts_left: u32 },
    /// The caller may not do this (a banned or locked user signing in).
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    /// Too many failed sign-in attempts: the user is locked out for this
    /// long.
    #[error("too many failed attempts; the account is locked")]
    LockedOut { retry_after_ms: i64 },
    /// Too soon or too often; retry after the delay.
    #[error("{message}")]
    RateLimited {
        reason: &'static str,
        message: String,
        retry_after_ms: i64,
    },
}

impl DomainError {
    /// A single-field [`DomainError::Invalid`].
    pub fn invalid(
        field: impl Into<String>,
        reason: &'static str,
        description: impl Into<String>,
    ) -> Self {
        let mut v = Violations::new();
        v.push(FieldViolation::new(field, reason, description));
        Self::Invalid(v)
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            resource,
            id: id.into(),
        }
    }
}

impl From<Vec<FieldViolation>> for DomainError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        let mut v = Violations::new();
        for violation in violations {
            v.push(violation);
        }
        Self::Invalid(v)
    }
}

impl From<FieldViolation> for DomainError {
    fn from(violation: FieldViolation) -> Self {
        let mut v = Violations::new();
        v.push(violation);
        Self::Invalid(v)
    }
}
