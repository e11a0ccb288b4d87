//! Roster's domain: the `User` aggregate, the validated values it is made of,
//! and the rules that keep it consistent (primary selection, the last
//! identifier, second factors, metadata merge and limits).
//!
//! Layout:
//! - [`id`]: prefixed, time-sortable, unguessable ids (`user_…`, `idn_…`).
//! - [`time`]: millisecond timestamps and the [`time::Clock`] every rule reads.
//! - [`values`]: newtypes that validate on `parse` (email, phone, username, …).
//! - [`code`]: one-time verification codes and their keyed hashes.
//! - [`metadata`]: JSON-object metadata, deep merge and size limits.
//! - [`query`]: which users to list or count, and in what order.
//! - [`password`]: argon2id hashing and verification (synchronous; callers
//!   run it off their async threads).
//! - [`user`]: the aggregate and its rules.
//! - [`image`]: profile images: id and format.
//! - [`session`]: sessions of signed-in users and their secrets.
//! - [`error`]: [`DomainError`], field violations and the reasons clients
//!   branch on.
//!
//! Nothing here knows about transport or SQL.

pub mod code;
pub mod error;
pub mod id;
pub mod image;
pub mod metadata;
pub mod password;
pub mod query;
pub mod session;
pub mod sign_up;
pub mod time;
pub mod user;
pub mod values;

pub use code::{
    AttemptOutcome, CodeHash, CodeKey, CodePolicy, PendingCode, SendWindow, VerificationCode,
};
pub use error::{DomainError, FieldViolation, Violations, reason};
pub use id::{IdentificationId, ImageId, SessionId, SignInId, SignUpId, UserId};
pub use image::{ImageFormat, ProfileImage};
pub use metadata::Metadata;
pub use password::{Password, PasswordHash};
pub use session::{Session, SessionActivity, SessionSecret, SessionStatus};
pub use sign_up::{SignUp, SignUpFields, SignUpRequirements, SignUpStatus};
pub use time::{Clock, SystemClock, Timestamp};
pub use user::{
    Channel, EmailAddress, IdentifierChange, Lockout, LockoutPolicy, MetadataKind, NewIdentifiers,
    NewUser, PhoneNumber, ProfileChange, SignOut, User, UserRecord, UserUpdate, Verification,
    VerificationStatus, VerificationStrategy,
};
pub use values::{Email, ExternalId, Locale, Name, Phone, Username};
