//! The user aggregate and its rules.
//!
//! A [`User`] owns its email addresses and phone numbers; every change to
//! them goes through a method here, so the invariants hold whichever store
//! or API surface made the change:
//! - a primary email (phone) is always a verified address (number) of the
//!   same user, and a user with any verified one always has a primary;
//! - the first verified identifier becomes primary automatically, and
//!   deleting the primary promotes the oldest remaining verified one;
//! - a user keeps at least one identifier (email, phone or username);
//! - a second-factor phone is verified, and the oldest reserved number is
//!   the default second factor;
//! - the three metadata objects together stay within 8 KiB.
//!
//! Uniqueness across users is the store's job (it lives in the database).

use crate::code::{
    AttemptOutcome, CodeHash, CodeKey, CodePolicy, PendingCode, SendWindow, VerificationCode,
};
use crate::error::{DomainError, FieldViolation, Violations, reason};
use crate::id::{IdentificationId, UserId};
use crate::image::ProfileImage;
use crate::metadata::{self, Metadata};
use crate::password::PasswordHash;
use crate::time::Timestamp;
use crate::values::{Email, ExternalId, Locale, Name, Phone, Username};

/// Where the proof of an identifier stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationStatus {
    Unverified,
    Verified,
    Failed,
    Expired,
}

/// How an identifier was, or is being, verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationStrategy {
    Admin,
    EmailCode,
    PhoneCode,
    Oauth,
}

impl VerificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "unverified",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Unverified,
            Self::Verified,
            Self::Failed,
            Self::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl VerificationStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::EmailCode => "email_code",
            Self::PhoneCode => "phone_code",
            Self::Oauth => "oauth",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Admin, Self::EmailCode, Self::PhoneCode, Self::Oauth]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// Which kind of identifier a code goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Phone,
}

impl Channel {
    /// The verification strategy of codes sent this way.
    pub fn strategy(self) -> VerificationStrategy {
        match self {
            Self::Email => VerificationStrategy::EmailCode,
            Self::Phone => VerificationStrategy::PhoneCode,
        }
    }

    /// What the identifier is called in messages.
    pub fn what(self) -> &'static str {
        match self {
            Self::Email => "email address",
            Self::Phone => "phone number",
        }
    }
}

/// An identifier a change added or verified; see
/// [`User::identifier_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifierChange {
    pub channel: Channel,
    /// The form uniqueness is decided on.
    pub normalized: String,
    pub verified: bool,
}

/// The proof state of an identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub status: VerificationStatus,
    pub strategy: Option<VerificationStrategy>,
    /// Codes tried against the current verification.
    pub attempts: u32,
    /// When the outstanding code expires.
    pub expire_at: Option<Timestamp>,
    /// The outstanding code's hash; never shown by the API.
    pub code: Option<PendingCode>,
    /// Codes sent in the current send window; never shown by the API.
    pub sends: SendWindow,
}

impl Verification {
    /// Never verified, no code outstanding.
    pub fn unverified() -> Self {
        Self {
            status: VerificationStatus::Unverified,
            strategy: None,
            attempts: 0,
            expire_at: None,
            code: None,
            sends: SendWindow::default(),
        }
    }

    /// Verified on a backend caller's word.
    pub fn admin() -> Self {
        Self {
            status: VerificationStatus::Verified,
            strategy: Some(VerificationStrategy::Admin),
            attempts: 0,
            expire_at: None,
            code: None,
            sends: SendWindow::default(),
        }
    }

    fn from_flag(verified: bool) -> Self {
        if verified {
            Self::admin()
        } else {
            Self::unverified()
        }
    }

    pub fn is_verified(&self) -> bool {
        self.status == VerificationStatus::Verified
    }

    /// Starts a new code verification, replacing any outstanding code.
    pub fn prepare(
        &mut self,
        strategy: VerificationStrategy,
        hash: CodeHash,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if self.is_verified() {
            return Err(DomainError::precondition(
                reason::VERIFICATION_ALREADY_VERIFIED,
                "already verified",
            ));
        }
        if let Some(pending) = &self.code {
            let ready_at = pending.sent_at.plus_millis(policy.resend_cooldown_ms);
            if now < ready_at {
                return Err(DomainError::RateLimited {
                    reason: reason::VERIFICATION_RESEND_TOO_SOON,
                    message: "a code was sent moments ago; wait before asking for another"
                        .to_owned(),
                    retry_after_ms: ready_at.as_millis() - now.as_millis(),
                });
            }
        }
        let mut sends = self.sends;
        sends.admit(
            policy.identifier_send_limit,
            policy.send_window_ms,
            now,
            "this identifier",
        )?;
        *self = Self {
            status: VerificationStatus::Unverified,
            strategy: Some(strategy),
            attempts: 0,
            expire_at: Some(now.plus_millis(policy.ttl_ms)),
            code: Some(PendingCode { hash, sent_at: now }),
            sends,
        };
        Ok(())
    }

    /// Withdraws the outstanding code if it is the one hashed as `hash`
    /// (its delivery failed): no code is left to attempt, and a new one may
    /// be prepared at once. The send still counts against the limits.
    /// Returns whether the code was withdrawn.
    pub fn withdraw(&mut self, hash: &CodeHash) -> bool {
        if self.code.as_ref().is_none_or(|c| &c.hash != hash) {
            return false;
        }
        *self = Self {
            sends: self.sends,
            ..Self::unverified()
        };
        true
    }

    /// Checks a code for the identifier `id`, recording the attempt.
    pub fn attempt(
        &mut self,
        id: &IdentificationId,
        code: &VerificationCode,
        key: &CodeKey,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> AttemptOutcome {
        if self.is_verified() {
            return AttemptOutcome::AlreadyVerified;
        }
        let Some(pending) = &self.code else {
            return AttemptOutcome::NotPrepared;
        };
        match self.status {
            VerificationStatus::Failed => return AttemptOutcome::Failed,
            VerificationStatus::Expired => return AttemptOutcome::Expired,
            _ => {}
        }
        if self.expire_at.is_none_or(|at| now >= at) {
            self.status = VerificationStatus::Expired;
            return AttemptOutcome::Expired;
        }
        self.attempts += 1;
        if key.matches(&pending.hash, id, code) {
            self.status = VerificationStatus::Verified;
            self.expire_at = None;
            self.code = None;
            return AttemptOutcome::Verified;
        }
        let attempts_left = policy.max_attempts.saturating_sub(self.attempts);
        if attempts_left == 0 {
            self.status = VerificationStatus::Failed;
        }
        AttemptOutcome::Incorrect { attempts_left }
    }
}

/// An email address of a user.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailAddress {
    pub id: IdentificationId,
    pub email: Email,
    pub verification: Verification,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A phone number of a user.
#[derive(Clone, Debug, PartialEq)]
pub struct PhoneNumber {
    pub id: IdentificationId,
    pub phone: Phone,
    pub verification: Verification,
    pub reserved_for_second_factor: bool,
    pub default_second_factor: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user as every API surface sees it. Credentials are not part of it: the
/// store keeps them in [`UserRecord`].
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: UserId,
    pub external_id: Option<ExternalId>,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub username: Option<Username>,
    pub locale: Option<Locale>,
    pub primary_email_address_id: Option<IdentificationId>,
    pub primary_phone_number_id: Option<IdentificationId>,
    /// Oldest first: ordered by (`created_at`, `id`), as stored.
    pub email_addresses: Vec<EmailAddress>,
    /// Oldest first: ordered by (`created_at`, `id`), as stored.
    pub phone_numbers: Vec<PhoneNumber>,
    pub password_enabled: bool,
    pub public_metadata: Metadata,
    pub private_metadata: Metadata,
    pub unsafe_metadata: Metadata,
    pub banned: bool,
    pub locked: bool,
    /// The profile image the user uploaded, if any.
    pub image: Option<ProfileImage>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_sign_in_at: Option<Timestamp>,
}

/// Which of a user's metadata objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataKind {
    Public,
    Private,
    Unsafe,
}

impl MetadataKind {
    /// Field name in the API.
    pub fn field(self) -> &'static str {
        match self {
            Self::Public => "public_metadata",
            Self::Private => "private_metadata",
            Self::Unsafe => "unsafe_metadata",
        }
    }
}

/// Identifiers for a new user, in request order: the first of each becomes
/// primary when verified.
#[derive(Clone, Debug, Default)]
pub struct NewIdentifiers {
    pub emails: Vec<Email>,
    pub phones: Vec<Phone>,
    /// Create them verified (the backend caller vouches for them).
    pub verified: bool,
}

/// Everything needed to create a user, validated.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub identifiers: NewIdentifiers,
    pub username: Option<Username>,
    pub external_id: Option<ExternalId>,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub locale: Option<Locale>,
    pub public_metadata: Metadata,
    pub private_metadata: Metadata,
    pub unsafe_metadata: Metadata,
}

/// A creation time and id for a new identifier that sorts after every one
/// in `existing` (lists are ordered by `(created_at, id)`). When the newest
/// was made in this same millisecond (or the clock stepped back), the new
/// one is dated a millisecond after it: its id then has a later time prefix
/// and keeps all its random bits.
fn next_slot(
    existing: impl Iterator<Item = Timestamp>,
    now: Timestamp,
) -> (Timestamp, IdentificationId) {
    let at = match existing.max() {
        Some(newest) if newest >= now => newest.plus_millis(1),
        _ => now,
    };
    (at, IdentificationId::generate(at))
}

fn not_found(what: &'static str, id: &IdentificationId) -> DomainError {
    DomainError::not_found(what, id.as_str())
}

impl User {
    /// Creates a user from validated input at `now`.
    pub fn create(new: NewUser, now: Timestamp) -> Result<Self, DomainError> {
        let mut violations = Violations::new();
        let NewUser {
            identifiers,
            username,
            external_id,
            first_name,
            last_name,
            locale,
            ..
        } = new;
        for (i, email) in identifiers.emails.iter().enumerate() {
            if identifiers.emails[..i]
                .iter()
                .any(|e| e.normalized() == email.normalized())
            {
                violations.push(FieldViolation::new(
                    format!("email_addresses[{i}]"),
                    reason::FORM_IDENTIFIER_DUPLICATE,
                    "the same email address is given twice",
                ));
            }
        }
        for (i, phone) in identifiers.phones.iter().enumerate() {
            if identifiers.phones[..i].contains(phone) {
                violations.push(FieldViolation::new(
                    format!("phone_numbers[{i}]"),
                    reason::FORM_IDENTIFIER_DUPLICATE,
                    "the same phone number is given twice",
                ));
            }
        }
        if identifiers.emails.is_empty() && identifiers.phones.is_empty() && username.is_none() {
            violations.push(FieldViolation::new(
                "email_addresses",
                reason::FORM_PARAM_MISSING,
                "a user needs at least one email address, phone number or username",
            ));
        }
        if let Err(v) = metadata::check_total_size([
            &new.public_metadata,
            &new.private_metadata,
            &new.unsafe_metadata,
        ]) {
            violations.push(v.nested("metadata"));
        }
        violations.into_result()?;

        let verification = Verification::from_flag(identifiers.verified);
        // Identifiers are listed by (created_at, id); ids made in the same
        // millisecond are handed out in sorted order so the lists keep the
        // request's order.
        let mut ids: Vec<IdentificationId> = (0..identifiers.emails.len()
            + identifiers.phones.len())
            .map(|_| IdentificationId::generate(now))
            .collect();
        ids.sort();
        let mut ids = ids.into_iter();
        let mut next_id = || {
            ids.next()
                .unwrap_or_else(|| IdentificationId::generate(now))
        };
        let email_addresses: Vec<EmailAddress> = identifiers
            .emails
            .into_iter()
            .map(|email| EmailAddress {
                id: next_id(),
                email,
                verification: verification.clone(),
                created_at: now,
                updated_at: now,
            })
            .collect();
        let phone_numbers: Vec<PhoneNumber> = identifiers
            .phones
            .into_iter()
            .map(|phone| PhoneNumber {
                id: next_id(),
                phone,
                verification: verification.clone(),
                reserved_for_second_factor: false,
                default_second_factor: false,
                created_at: now,
                updated_at: now,
            })
            .collect();
        let mut user = Self {
            id: UserId::generate(now),
            external_id,
            first_name,
            last_name,
            username,
            locale,
            primary_email_address_id: None,
            primary_phone_number_id: None,
            email_addresses,
            phone_numbers,
            password_enabled: false,
            public_metadata: new.public_metadata,
            private_metadata: new.private_metadata,
            unsafe_metadata: new.unsafe_metadata,
            banned: false,
            locked: false,
            image: None,
            created_at: now,
            updated_at: now,
            last_sign_in_at: None,
        };
        user.ensure_primaries();
        Ok(user)
    }

    /// What the `query` filter searches, lowercased: id, names, username,
    /// external id, email addresses and phone numbers, one per line. Values
    /// cannot contain line breaks, so a match never spans two of them.
    pub fn search_text(&self) -> String {
        let mut parts: Vec<String> = vec![self.id.to_string()];
        parts.extend(self.first_name.iter().map(|n| n.as_str().to_lowercase()));
        parts.extend(self.last_name.iter().map(|n| n.as_str().to_lowercase()));
        parts.extend(self.username.iter().map(Username::normalized));
        parts.extend(self.external_id.iter().map(|e| e.as_str().to_lowercase()));
        parts.extend(self.email_addresses.iter().map(|e| e.email.normalized()));
        parts.extend(self.phone_numbers.iter().map(|p| p.phone.to_string()));
        parts.join("\n")
    }

    /// Whether the user has a second factor.
    pub fn two_factor_enabled(&self) -> bool {
        self.phone_numbers
            .iter()
            .any(|p| p.reserved_for_second_factor)
    }

    pub fn email(&self, id: &IdentificationId) -> Option<&EmailAddress> {
        self.email_addresses.iter().find(|e| &e.id == id)
    }

    pub fn phone(&self, id: &IdentificationId) -> Option<&PhoneNumber> {
        self.phone_numbers.iter().find(|p| &p.id == id)
    }

    /// The primary email address, if any.
    pub fn primary_email(&self) -> Option<&EmailAddress> {
        self.primary_email_address_id
            .as_ref()
            .and_then(|id| self.email(id))
    }

    fn email_mut(&mut self, id: &IdentificationId) -> Result<&mut EmailAddress, DomainError> {
        self.email_addresses
            .iter_mut()
            .find(|e| &e.id == id)
            .ok_or_else(|| not_found("email address", id))
    }

    fn phone_mut(&mut self, id: &IdentificationId) -> Result<&mut PhoneNumber, DomainError> {
        self.phone_numbers
            .iter_mut()
            .find(|p| &p.id == id)
            .ok_or_else(|| not_found("phone number", id))
    }

    fn identifier_count(&self) -> usize {
        self.email_addresses.len() + self.phone_numbers.len() + usize::from(self.username.is_some())
    }

    fn ensure_identifier_left(&self) -> Result<(), DomainError> {
        if self.identifier_count() <= 1 {
            return Err(DomainError::precondition(
                reason::LAST_IDENTIFIER,
                "this is the user's last email address, phone number or username; add another one first",
            ));
        }
        Ok(())
    }

    /// Gives the user a primary email and phone when it has verified ones
    /// and none is primary: the oldest verified one.
    fn ensure_primaries(&mut self) {
        if self.primary_email().is_none() {
            self.primary_email_address_id = self
                .email_addresses
                .iter()
                .find(|e| e.verification.is_verified())
                .map(|e| e.id.clone());
        }
        let has_primary_phone = self
            .primary_phone_number_id
            .as_ref()
            .is_some_and(|id| self.phone(id).is_some());
        if !has_primary_phone {
            self.primary_phone_number_id = self
                .phone_numbers
                .iter()
                .find(|p| p.verification.is_verified())
                .map(|p| p.id.clone());
        }
        let needs_default = self
            .phone_numbers
            .iter()
            .any(|p| p.reserved_for_second_factor)
            && !self.phone_numbers.iter().any(|p| p.default_second_factor);
        if needs_default
            && let Some(first) = self
                .phone_numbers
                .iter_mut()
                .find(|p| p.reserved_for_second_factor)
        {
            first.default_second_factor = true;
        }
    }

    fn touch(&mut self, now: Timestamp) {
        self.updated_at = now;
    }

    /// Sets or removes the username; removing it must leave an identifier.
    pub fn set_username(
        &mut self,
        username: Option<Username>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if username.is_none() && self.username.is_some() {
            self.ensure_identifier_left()?;
        }
        self.username = username;
        self.touch(now);
        Ok(())
    }

    /// Sets the profile fields that carry no rule beyond their own format.
    pub fn set_profile(&mut self, change: ProfileChange, now: Timestamp) {
        let ProfileChange {
            first_name,
            last_name,
            external_id,
            locale,
        } = change;
        if let Some(v) = first_name {
            self.first_name = v;
        }
        if let Some(v) = last_name {
            self.last_name = v;
        }
        if let Some(v) = external_id {
            self.external_id = v;
        }
        if let Some(v) = locale {
            self.locale = v;
        }
        self.touch(now);
    }

    /// Makes a verified email address of this user primary. `None` is only
    /// accepted when the user has no verified address (there is nothing to
    /// be primary).
    pub fn set_primary_email(
        &mut self,
        id: Option<&IdentificationId>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        const FIELD: &str = "primary_email_address_id";
        match id {
            None if self.primary_email_address_id.is_some() => Err(DomainError::precondition(
                reason::PRIMARY_REQUIRED,
                "a user with a verified email address must have a primary one",
            )),
            None => Ok(()),
            Some(id) => {
                let email = self.email(id).ok_or_else(|| {
                    DomainError::invalid(
                        FIELD,
                        reason::FORM_IDENTIFIER_NOT_FOUND,
                        "not an email address of this user",
                    )
                })?;
                if !email.verification.is_verified() {
                    return Err(DomainError::precondition(
                        reason::PRIMARY_NOT_VERIFIED,
                        "only a verified email address can be primary",
                    ));
                }
                self.primary_email_address_id = Some(id.clone());
                self.touch(now);
                Ok(())
            }
        }
    }

    /// Makes a verified phone number of this user primary; see
    /// [`Self::set_primary_email`].
    pub fn set_primary_phone(
        &mut self,
        id: Option<&IdentificationId>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        const FIELD: &str = "primary_phone_number_id";
        match id {
            None if self.primary_phone_number_id.is_some() => Err(DomainError::precondition(
                reason::PRIMARY_REQUIRED,
                "a user with a verified phone number must have a primary one",
            )),
            None => Ok(()),
            Some(id) => {
                let phone = self.phone(id).ok_or_else(|| {
                    DomainError::invalid(
                        FIELD,
                        reason::FORM_IDENTIFIER_NOT_FOUND,
                        "not a phone number of this user",
                    )
                })?;
                if !phone.verification.is_verified() {
                    return Err(DomainError::precondition(
                        reason::PRIMARY_NOT_VERIFIED,
                        "only a verified phone number can be primary",
                    ));
                }
                self.primary_phone_number_id = Some(id.clone());
                self.touch(now);
                Ok(())
            }
        }
    }

    /// Adds an email address. It becomes primary when asked (it must then
    /// be verified) or when it is the user's first verified one.
    pub fn add_email(
        &mut self,
        email: Email,
        verified: bool,
        primary: bool,
        now: Timestamp,
    ) -> Result<IdentificationId, DomainError> {
        if self
            .email_addresses
            .iter()
            .any(|e| e.email.normalized() == email.normalized())
        {
            return Err(DomainError::AlreadyExists {
                field: "email_address".into(),
            });
        }
        if primary && !verified {
            return Err(DomainError::precondition(
                reason::PRIMARY_NOT_VERIFIED,
                "only a verified email address can be primary",
            ));
        }
        let (created_at, id) = next_slot(self.email_addresses.iter().map(|e| e.created_at), now);
        self.email_addresses.push(EmailAddress {
            id: id.clone(),
            email,
            verification: Verification::from_flag(verified),
            created_at,
            updated_at: now,
        });
        if primary {
            self.primary_email_address_id = Some(id.clone());
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(id)
    }

    /// Adds a phone number; see [`Self::add_email`]. A reserved number must
    /// be verified.
    pub fn add_phone(
        &mut self,
        phone: Phone,
        verified: bool,
        primary: bool,
        reserved_for_second_factor: bool,
        now: Timestamp,
    ) -> Result<IdentificationId, DomainError> {
        if self.phone_numbers.iter().any(|p| p.phone == phone) {
            return Err(DomainError::AlreadyExists {
                field: "phone_number".into(),
            });
        }
        if primary && !verified {
            return Err(DomainError::precondition(
                reason::PRIMARY_NOT_VERIFIED,
                "only a verified phone number can be primary",
            ));
        }
        if reserved_for_second_factor && !verified {
            return Err(DomainError::precondition(
                reason::SECOND_FACTOR_NOT_VERIFIED,
                "only a verified phone number can be a second factor",
            ));
        }
        let (created_at, id) = next_slot(self.phone_numbers.iter().map(|p| p.created_at), now);
        self.phone_numbers.push(PhoneNumber {
            id: id.clone(),
            phone,
            verification: Verification::from_flag(verified),
            reserved_for_second_factor,
            default_second_factor: false,
            created_at,
            updated_at: now,
        });
        if primary {
            self.primary_phone_number_id = Some(id.clone());
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(id)
    }

    /// Marks an email address verified or unverified by a backend caller's
    /// word. The primary address cannot be unverified.
    pub fn set_email_verified(
        &mut self,
        id: &IdentificationId,
        verified: bool,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !verified && self.primary_email_address_id.as_ref() == Some(id) {
            return Err(DomainError::precondition(
                reason::PRIMARY_NOT_VERIFIED,
                "the primary email address must stay verified; make another address primary first",
            ));
        }
        let email = self.email_mut(id)?;
        if email.verification.is_verified() != verified {
            email.verification = Verification::from_flag(verified);
            email.updated_at = now;
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(())
    }

    /// Marks a phone number verified or unverified by a backend caller's
    /// word. The primary and reserved numbers cannot be unverified.
    pub fn set_phone_verified(
        &mut self,
        id: &IdentificationId,
        verified: bool,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !verified && self.primary_phone_number_id.as_ref() == Some(id) {
            return Err(DomainError::precondition(
                reason::PRIMARY_NOT_VERIFIED,
                "the primary phone number must stay verified; make another number primary first",
            ));
        }
        let phone = self.phone_mut(id)?;
        if !verified && phone.reserved_for_second_factor {
            return Err(DomainError::precondition(
                reason::SECOND_FACTOR_NOT_VERIFIED,
                "a second-factor phone number must stay verified; release it first",
            ));
        }
        if phone.verification.is_verified() != verified {
            phone.verification = Verification::from_flag(verified);
            phone.updated_at = now;
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(())
    }

    /// Applies `primary` to an email address: `true` makes it primary,
    /// `false` is refused on the primary (another must be chosen instead).
    pub fn set_email_primary_flag(
        &mut self,
        id: &IdentificationId,
        primary: bool,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let is_primary = self.primary_email_address_id.as_ref() == Some(id);
        self.email_mut(id)?;
        match (primary, is_primary) {
            (true, _) => self.set_primary_email(Some(id), now),
            (false, true) => Err(DomainError::precondition(
                reason::PRIMARY_REQUIRED,
                "make another email address primary instead of unsetting this one",
            )),
            (false, false) => Ok(()),
        }
    }

    /// Applies `primary` to a phone number; see
    /// [`Self::set_email_primary_flag`].
    pub fn set_phone_primary_flag(
        &mut self,
        id: &IdentificationId,
        primary: bool,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let is_primary = self.primary_phone_number_id.as_ref() == Some(id);
        self.phone_mut(id)?;
        match (primary, is_primary) {
            (true, _) => self.set_primary_phone(Some(id), now),
            (false, true) => Err(DomainError::precondition(
                reason::PRIMARY_REQUIRED,
                "make another phone number primary instead of unsetting this one",
            )),
            (false, false) => Ok(()),
        }
    }

    /// Reserves a verified phone number for second-factor verification, or
    /// releases it. The default second factor moves to the oldest other
    /// reserved number when its own is released.
    pub fn set_phone_reserved(
        &mut self,
        id: &IdentificationId,
        reserved: bool,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let phone = self.phone_mut(id)?;
        if reserved && !phone.verification.is_verified() {
            return Err(DomainError::precondition(
                reason::SECOND_FACTOR_NOT_VERIFIED,
                "only a verified phone number can be a second factor",
            ));
        }
        if phone.reserved_for_second_factor != reserved {
            phone.reserved_for_second_factor = reserved;
            if !reserved {
                phone.default_second_factor = false;
            }
            phone.updated_at = now;
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(())
    }

    /// Removes an email address, promoting the oldest remaining verified
    /// one when it was primary.
    pub fn remove_email(
        &mut self,
        id: &IdentificationId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.email_mut(id)?;
        self.ensure_identifier_left()?;
        self.email_addresses.retain(|e| &e.id != id);
        if self.primary_email_address_id.as_ref() == Some(id) {
            self.primary_email_address_id = None;
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(())
    }

    /// Removes a phone number, promoting the oldest remaining verified one
    /// when it was primary and passing on the default second factor.
    pub fn remove_phone(
        &mut self,
        id: &IdentificationId,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.phone_mut(id)?;
        self.ensure_identifier_left()?;
        self.phone_numbers.retain(|p| &p.id != id);
        if self.primary_phone_number_id.as_ref() == Some(id) {
            self.primary_phone_number_id = None;
        }
        self.ensure_primaries();
        self.touch(now);
        Ok(())
    }

    fn verification_mut(
        &mut self,
        channel: Channel,
        id: &IdentificationId,
    ) -> Result<(&mut Verification, &mut Timestamp), DomainError> {
        Ok(match channel {
            Channel::Email => {
                let e = self.email_mut(id)?;
                (&mut e.verification, &mut e.updated_at)
            }
            Channel::Phone => {
                let p = self.phone_mut(id)?;
                (&mut p.verification, &mut p.updated_at)
            }
        })
    }

    /// Prepares a code verification of the email address or phone number
    /// `id`, replacing any outstanding code.
    pub fn prepare_verification(
        &mut self,
        channel: Channel,
        id: &IdentificationId,
        hash: CodeHash,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let (verification, updated_at) = self.verification_mut(channel, id)?;
        verification.prepare(channel.strategy(), hash, policy, now)?;
        *updated_at = now;
        self.touch(now);
        Ok(())
    }

    /// Withdraws the code hashed as `hash` from the email address or phone
    /// number `id`, if it is still the outstanding one (see
    /// [`Verification::withdraw`]).
    pub fn withdraw_verification(
        &mut self,
        channel: Channel,
        id: &IdentificationId,
        hash: &CodeHash,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let (verification, updated_at) = self.verification_mut(channel, id)?;
        if verification.withdraw(hash) {
            *updated_at = now;
            self.touch(now);
        }
        Ok(())
    }

    /// The identifiers that are new or newly verified since `before` (all
    /// of them for a new user), as (channel, normalized form, verified).
    /// The store checks these against other users: verified ones claim the
    /// identifier, unverified ones must not be verified elsewhere.
    pub fn identifier_changes(&self, before: Option<&User>) -> Vec<IdentifierChange> {
        let was_verified = |channel: Channel, id: &IdentificationId| -> Option<bool> {
            let before = before?;
            match channel {
                Channel::Email => before.email(id).map(|e| e.verification.is_verified()),
                Channel::Phone => before.phone(id).map(|p| p.verification.is_verified()),
            }
        };
        let emails = self.email_addresses.iter().map(|e| {
            (
                Channel::Email,
                &e.id,
                e.email.normalized(),
                e.verification.is_verified(),
            )
        });
        let phones = self.phone_numbers.iter().map(|p| {
            (
                Channel::Phone,
                &p.id,
                p.phone.as_str().to_owned(),
                p.verification.is_verified(),
            )
        });
        emails
            .chain(phones)
            .filter_map(|(channel, id, normalized, verified)| {
                let changed = match was_verified(channel, id) {
                    None => true,
                    Some(was) => verified && !was,
                };
                changed.then_some(IdentifierChange {
                    channel,
                    normalized,
                    verified,
                })
            })
            .collect()
    }

    /// Removes the unverified copies of an email address or phone number
    /// (by its normalized form) because another user verified it. Unlike
    /// [`User::remove_email`] this may leave the user without identifiers:
    /// the other user proved ownership, this one never did. Returns whether
    /// anything was removed.
    pub fn release_unverified(
        &mut self,
        channel: Channel,
        normalized: &str,
        now: Timestamp,
    ) -> bool {
        let before = self.identifier_count();
        match channel {
            Channel::Email => self
                .email_addresses
                .retain(|e| e.verification.is_verified() || e.email.normalized() != normalized),
            Channel::Phone => self
                .phone_numbers
                .retain(|p| p.verification.is_verified() || p.phone.as_str() != normalized),
        }
        if self.identifier_count() == before {
            return false;
        }
        // Only verified identifiers are primary, so no primary went; the
        // call keeps the invariant obvious all the same.
        self.ensure_primaries();
        self.touch(now);
        true
    }

    /// Checks a code sent to the email address or phone number `id`. The
    /// attempt is recorded whatever its outcome; a verified identifier
    /// becomes primary when the user has none of its kind.
    pub fn attempt_verification(
        &mut self,
        channel: Channel,
        id: &IdentificationId,
        code: &VerificationCode,
        key: &CodeKey,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<AttemptOutcome, DomainError> {
        let (verification, updated_at) = self.verification_mut(channel, id)?;
        let outcome = verification.attempt(id, code, key, policy, now);
        *updated_at = now;
        self.ensure_primaries();
        self.touch(now);
        Ok(outcome)
    }

    /// Replaces one metadata object whole.
    pub fn replace_metadata(
        &mut self,
        kind: MetadataKind,
        value: Metadata,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let value = value.without_nulls();
        let mut next = self.clone();
        *next.metadata_mut(kind) = value;
        next.check_metadata_size()?;
        *self = next;
        self.touch(now);
        Ok(())
    }

    /// Deep-merges patches into the metadata objects given.
    pub fn merge_metadata(
        &mut self,
        patches: Vec<(MetadataKind, Metadata)>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let mut next = self.clone();
        for (kind, patch) in patches {
            next.metadata_mut(kind).merge(patch);
        }
        next.check_metadata_size()?;
        *self = next;
        self.touch(now);
        Ok(())
    }

    fn metadata_mut(&mut self, kind: MetadataKind) -> &mut Metadata {
        match kind {
            MetadataKind::Public => &mut self.public_metadata,
            MetadataKind::Private => &mut self.private_metadata,
            MetadataKind::Unsafe => &mut self.unsafe_metadata,
        }
    }

    fn check_metadata_size(&self) -> Result<(), DomainError> {
        metadata::check_total_size([
            &self.public_metadata,
            &self.private_metadata,
            &self.unsafe_metadata,
        ])
        .map_err(|v| DomainError::from(v.nested("metadata")))
    }

    /// Records a completed sign-in.
    pub fn record_sign_in(&mut self, now: Timestamp) {
        self.last_sign_in_at = Some(now);
        self.touch(now);
    }

    /// Refuses a sign-in of a banned or locked user.
    pub fn ensure_can_sign_in(&self) -> Result<(), DomainError> {
        if self.banned {
            return Err(DomainError::PermissionDenied {
                reason: reason::USER_BANNED,
                message: "this account is banned".to_owned(),
            });
        }
        if self.locked {
            return Err(DomainError::PermissionDenied {
                reason: reason::USER_LOCKED,
                message: "this account is locked".to_owned(),
            });
        }
        Ok(())
    }

    pub fn set_banned(&mut self, banned: bool, now: Timestamp) {
        self.banned = banned;
        self.touch(now);
    }

    pub fn set_locked(&mut self, locked: bool, now: Timestamp) {
        self.locked = locked;
        self.touch(now);
    }

    /// Whether the user uploaded a profile image.
    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }

    /// Makes `image` the profile image and returns the one it replaces,
    /// whose stored object the caller removes once this is committed.
    pub fn set_image(&mut self, image: ProfileImage, now: Timestamp) -> Option<ProfileImage> {
        let previous = self.image.replace(image);
        self.touch(now);
        previous
    }

    /// Removes the profile image and returns it; a user without one is
    /// left unchanged.
    pub fn remove_image(&mut self, now: Timestamp) -> Option<ProfileImage> {
        let previous = self.image.take();
        if previous.is_some() {
            self.touch(now);
        }
        previous
    }

    /// Up to two letters for a default avatar: the first letters of the
    /// first and last name, else of the username, else of the primary email
    /// address; empty when there is nothing to take them from.
    pub fn initials(&self) -> String {
        let first = |text: &str| text.chars().find(|c| c.is_alphanumeric());
        let names: String = [self.first_name.as_ref(), self.last_name.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|n| first(n.as_str()))
            .collect();
        let initials = if names.is_empty() {
            self.username
                .as_ref()
                .and_then(|u| first(u.as_str()))
                .or_else(|| self.primary_email().and_then(|e| first(e.email.as_str())))
                .map(String::from)
                .unwrap_or_default()
        } else {
            names
        };
        initials
            .chars()
            .flat_map(char::to_uppercase)
            .take(2)
            .collect()
    }
}

/// A validated UpdateUser: each `Some` is applied, `Some(None)` clears.
/// The password travels separately because it is hashed first, off the
/// request's thread.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    pub profile: ProfileChange,
    pub username: Option<Option<Username>>,
    pub primary_email_address_id: Option<Option<IdentificationId>>,
    pub primary_phone_number_id: Option<Option<IdentificationId>>,
    /// Metadata objects to replace whole.
    pub metadata: Vec<(MetadataKind, Metadata)>,
}

impl User {
    /// Applies an update; on error the user is unchanged.
    pub fn apply_update(&mut self, update: UserUpdate, now: Timestamp) -> Result<(), DomainError> {
        let mut next = self.clone();
        if let Some(username) = update.username {
            next.set_username(username, now)?;
        }
        next.set_profile(update.profile, now);
        if let Some(id) = update.primary_email_address_id {
            next.set_primary_email(id.as_ref(), now)?;
        }
        if let Some(id) = update.primary_phone_number_id {
            next.set_primary_phone(id.as_ref(), now)?;
        }
        for (kind, value) in update.metadata {
            next.replace_metadata(kind, value, now)?;
        }
        *self = next;
        Ok(())
    }
}

/// Profile fields to change: `Some(None)` clears, `None` leaves alone.
#[derive(Clone, Debug, Default)]
pub struct ProfileChange {
    pub first_name: Option<Option<Name>>,
    pub last_name: Option<Option<Name>>,
    pub external_id: Option<Option<ExternalId>>,
    pub locale: Option<Option<Locale>>,
}

/// A user together with its credentials, as the store keeps it. Only the
/// store and the password checks see this; API surfaces see [`User`].
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user: User,
    password_hash: Option<PasswordHash>,
    /// Codes sent to any of the user's identifiers in the current window.
    pub code_sends: SendWindow,
    /// Failed sign-in attempts and the lockout they led to.
    pub lockout: Lockout,
    /// Sessions to end with this change, in its transaction (set by a
    /// mutation, for example a password change; never stored).
    pub sign_out: Option<SignOut>,
    /// A session to begin with this change, in its transaction (a
    /// completed sign-in; stored in the sessions table).
    pub start_session: Option<crate::session::Session>,
}

/// Ends a user's active sessions together with a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignOut {
    /// A session to keep: the caller's own, when a signed-in user changes
    /// their password.
    pub except: Option<crate::id::SessionId>,
}

/// How many failed sign-in attempts lock a user out, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_attempts: u32,
    pub duration_ms: i64,
}

impl Default for LockoutPolicy {
    /// Clerk's defaults: 10 failed attempts lock the user out for an hour.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            duration_ms: 60 * 60 * 1000,
        }
    }
}

/// Failed sign-in attempts since the last success or lockout, and the
/// lockout's end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lockout {
    pub failed_attempts: u32,
    pub locked_until: Option<Timestamp>,
}

impl Lockout {
    /// Refuses while locked out, saying how long remains.
    pub fn ensure_open(&self, now: Timestamp) -> Result<(), DomainError> {
        match self.locked_until {
            Some(until) if now < until => Err(DomainError::LockedOut {
                retry_after_ms: until.as_millis() - now.as_millis(),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt; the one that reaches the policy's limit
    /// locks out and starts the count afresh.
    pub fn record_failure(&mut self, policy: &LockoutPolicy, now: Timestamp) {
        if self.locked_until.is_some_and(|until| now >= until) {
            *self = Self::default();
        }
        self.failed_attempts += 1;
        if self.failed_attempts >= policy.max_attempts {
            *self = Self {
                failed_attempts: 0,
                locked_until: Some(now.plus_millis(policy.duration_ms)),
            };
        }
    }

    /// Admits one attempt about to be checked: refused while locked out,
    /// otherwise counted as failed until it succeeds. Counting before
    /// checking bounds the guesses any burst of concurrent attempts can
    /// have evaluated to the policy's limit.
    pub fn admit(&mut self, policy: &LockoutPolicy, now: Timestamp) -> Result<(), DomainError> {
        self.ensure_open(now)?;
        self.record_failure(policy, now);
        Ok(())
    }
}

impl UserRecord {
    /// Joins a user with its password hash, keeping `password_enabled`
    /// true to the hash.
    pub fn new(mut user: User, password_hash: Option<PasswordHash>) -> Self {
        user.password_enabled = password_hash.is_some();
        Self {
            user,
            password_hash,
            code_sends: SendWindow::default(),
            lockout: Lockout::default(),
            sign_out: None,
            start_session: None,
        }
    }

    pub fn password_hash(&self) -> Option<&PasswordHash> {
        self.password_hash.as_ref()
    }

    /// Sets or removes the password.
    pub fn set_password(&mut self, hash: Option<PasswordHash>, now: Timestamp) {
        self.user.password_enabled = hash.is_some();
        self.password_hash = hash;
        self.user.updated_at = now;
    }

    /// Refuses while the user is locked out, saying how long remains.
    pub fn ensure_not_locked_out(&self, now: Timestamp) -> Result<(), DomainError> {
        self.lockout.ensure_open(now)
    }

    /// Counts a failed sign-in attempt (see [`Lockout::record_failure`]).
    pub fn record_failed_attempt(&mut self, policy: &LockoutPolicy, now: Timestamp) {
        self.lockout.record_failure(policy, now);
    }

    /// Admits one sign-in attempt (see [`Lockout::admit`]).
    pub fn admit_attempt(
        &mut self,
        policy: &LockoutPolicy,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.lockout.admit(policy, now)
    }

    /// A successful sign-in: the count of failures starts afresh.
    pub fn record_successful_sign_in(&mut self, now: Timestamp) {
        self.lockout = Lockout::default();
        self.user.record_sign_in(now);
    }

    /// Lifts a backend lock and any lockout.
    pub fn unlock(&mut self, now: Timestamp) {
        self.lockout = Lockout::default();
        self.user.set_locked(false, now);
    }

    /// Prepares a code verification of the email address or phone number
    /// `id` (see [`User::prepare_verification`]), counting the send against
    /// the user's limit as well as the identifier's.
    pub fn prepare_verification(
        &mut self,
        channel: Channel,
        id: &IdentificationId,
        hash: CodeHash,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.user
            .prepare_verification(channel, id, hash, policy, now)?;
        self.code_sends.admit(
            policy.user_send_limit,
            policy.send_window_ms,
            now,
            "this user",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn phone(s: &str) -> Phone {
        Phone::parse(s).unwrap()
    }

    fn user(emails: &[&str], phones: &[&str], verified: bool) -> User {
        User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: emails.iter().map(|e| email(e)).collect(),
                    phones: phones.iter().map(|p| phone(p)).collect(),
                    verified,
                },
                ..NewUser::default()
            },
            T0,
        )
        .unwrap()
    }

    fn reason_of(err: DomainError) -> &'static str {
        match err {
            DomainError::FailedPrecondition { reason, .. } => reason,
            DomainError::Invalid(v) => v.as_slice()[0].reason,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn first_identifiers_become_primary_when_verified() {
        let u = user(&["a@example.com", "b@example.com"], &["+14155550101"], true);
        assert_eq!(
            u.primary_email_address_id.as_ref(),
            Some(&u.email_addresses[0].id)
        );
        assert_eq!(
            u.primary_phone_number_id.as_ref(),
            Some(&u.phone_numbers[0].id)
        );
        let u = user(&["a@example.com"], &[], false);
        assert_eq!(u.primary_email_address_id, None);
    }

    #[test]
    fn create_needs_an_identifier_and_rejects_duplicates() {
        let err = User::create(NewUser::default(), T0).unwrap_err();
        assert_eq!(reason_of(err), reason::FORM_PARAM_MISSING);
        let err = User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: vec![email("a@example.com"), email("A@EXAMPLE.com")],
                    ..NewIdentifiers::default()
                },
                ..NewUser::default()
            },
            T0,
        )
        .unwrap_err();
        let DomainError::Invalid(v) = err else {
            panic!()
        };
        assert_eq!(v.as_slice()[0].field, "email_addresses[1]");
    }

    #[test]
    fn first_verified_email_becomes_primary_later() {
        let mut u = user(&["a@example.com"], &[], false);
        let t1 = T0.plus_millis(1);
        let id = u.email_addresses[0].id.clone();
        u.set_email_verified(&id, true, t1).unwrap();
        assert_eq!(u.primary_email_address_id.as_ref(), Some(&id));
        assert_eq!(u.updated_at, t1);
    }

    #[test]
    fn primary_must_be_verified_and_own() {
        let mut u = user(&["a@example.com"], &[], true);
        let unverified = u
            .add_email(email("b@example.com"), false, false, T0)
            .unwrap();
        assert_eq!(
            reason_of(u.set_primary_email(Some(&unverified), T0).unwrap_err()),
            reason::PRIMARY_NOT_VERIFIED
        );
        let other = IdentificationId::generate(T0);
        assert_eq!(
            reason_of(u.set_primary_email(Some(&other), T0).unwrap_err()),
            reason::FORM_IDENTIFIER_NOT_FOUND
        );
        assert_eq!(
            reason_of(
                u.add_email(email("c@example.com"), false, true, T0)
                    .unwrap_err()
            ),
            reason::PRIMARY_NOT_VERIFIED
        );
        let primary = u.primary_email_address_id.clone().unwrap();
        assert_eq!(
            reason_of(u.set_email_verified(&primary, false, T0).unwrap_err()),
            reason::PRIMARY_NOT_VERIFIED
        );
        assert_eq!(
            reason_of(u.set_primary_email(None, T0).unwrap_err()),
            reason::PRIMARY_REQUIRED
        );
    }

    #[test]
    fn deleting_primary_promotes_oldest_verified() {
        let mut u = user(&["a@example.com"], &[], true);
        let _unverified = u
            .add_email(email("b@example.com"), false, false, T0.plus_millis(1))
            .unwrap();
        let second_verified = u
            .add_email(email("c@example.com"), true, false, T0.plus_millis(2))
            .unwrap();
        let third_verified = u
            .add_email(email("d@example.com"), true, false, T0.plus_millis(3))
            .unwrap();
        let primary = u.primary_email_address_id.clone().unwrap();
        u.remove_email(&primary, T0.plus_millis(4)).unwrap();
        assert_eq!(u.primary_email_address_id, Some(second_verified.clone()));
        u.remove_email(&second_verified, T0.plus_millis(5)).unwrap();
        assert_eq!(u.primary_email_address_id, Some(third_verified));
    }

    #[test]
    fn last_identifier_cannot_go() {
        let mut u = user(&["a@example.com"], &[], true);
        let id = u.email_addresses[0].id.clone();
        assert_eq!(
            reason_of(u.remove_email(&id, T0).unwrap_err()),
            reason::LAST_IDENTIFIER
        );
        u.set_username(Some(Username::parse("ada_l").unwrap()), T0)
            .unwrap();
        u.remove_email(&id, T0).unwrap();
        assert_eq!(u.primary_email_address_id, None);
        assert_eq!(
            reason_of(u.set_username(None, T0).unwrap_err()),
            reason::LAST_IDENTIFIER
        );
    }

    #[test]
    fn second_factor_rules() {
        let mut u = user(&[], &["+14155550101", "+14155550102"], true);
        let unverified = u
            .add_phone(phone("+14155550103"), false, false, false, T0)
            .unwrap();
        assert_eq!(
            reason_of(u.set_phone_reserved(&unverified, true, T0).unwrap_err()),
            reason::SECOND_FACTOR_NOT_VERIFIED
        );
        let id_of = |u: &User, number: &str| {
            u.phone_numbers
                .iter()
                .find(|p| p.phone.as_str() == number)
                .unwrap()
                .id
                .clone()
        };
        let (a, b) = (id_of(&u, "+14155550101"), id_of(&u, "+14155550102"));
        u.set_phone_reserved(&b, true, T0).unwrap();
        u.set_phone_reserved(&a, true, T0).unwrap();
        assert!(u.phone(&b).unwrap().default_second_factor);
        assert!(!u.phone(&a).unwrap().default_second_factor);
        assert!(u.two_factor_enabled());
        u.set_phone_reserved(&b, false, T0).unwrap();
        assert!(u.phone(&a).unwrap().default_second_factor);
        assert_eq!(
            reason_of(u.set_phone_verified(&a, false, T0).unwrap_err()),
            reason::PRIMARY_NOT_VERIFIED
        );
        u.remove_phone(&a, T0).unwrap();
        assert!(!u.two_factor_enabled());
        assert_eq!(u.primary_phone_number_id, Some(b));
    }

    #[test]
    fn metadata_limits_are_all_or_nothing() {
        let mut u = user(&["a@example.com"], &[], true);
        let big = Metadata::parse(serde_json::json!({"k": "x".repeat(5000)})).unwrap();
        u.merge_metadata(vec![(MetadataKind::Public, big.clone())], T0)
            .unwrap();
        let before = u.clone();
        let err = u
            .merge_metadata(vec![(MetadataKind::Private, big)], T0)
            .unwrap_err();
        assert_eq!(reason_of(err), reason::METADATA_TOO_LARGE);
        assert_eq!(u, before);
    }

    #[test]
    fn identifiers_added_in_the_same_millisecond_keep_their_order() {
        let mut u = user(&["a@example.com"], &["+14155550101"], true);
        for i in 0..20 {
            u.add_email(email(&format!("e{i}@example.com")), true, false, T0)
                .unwrap();
            u.add_phone(
                phone(&format!("+1415555{:04}", 110 + i)),
                true,
                false,
                false,
                T0,
            )
            .unwrap();
        }
        let emails: Vec<&str> = u.email_addresses.iter().map(|e| e.email.as_str()).collect();
        let expected: Vec<String> = std::iter::once("a@example.com".to_owned())
            .chain((0..20).map(|i| format!("e{i}@example.com")))
            .collect();
        assert_eq!(emails, expected);
        let sorted =
            |keys: Vec<(Timestamp, IdentificationId)>| keys.windows(2).all(|w| w[0] < w[1]);
        assert!(sorted(
            u.email_addresses
                .iter()
                .map(|e| (e.created_at, e.id.clone()))
                .collect()
        ));
        assert!(sorted(
            u.phone_numbers
                .iter()
                .map(|p| (p.created_at, p.id.clone()))
                .collect()
        ));
    }

    fn prepared(
        u: &mut User,
        key: &CodeKey,
        at: Timestamp,
    ) -> (IdentificationId, VerificationCode) {
        let id = u.email_addresses[0].id.clone();
        let code = VerificationCode::generate();
        u.prepare_verification(
            Channel::Email,
            &id,
            key.hash(&id, &code),
            &CodePolicy::default(),
            at,
        )
        .unwrap();
        (id, code)
    }

    #[test]
    fn a_withdrawn_code_leaves_nothing_to_attempt_and_no_cooldown() {
        let key = CodeKey::generate();
        let policy = CodePolicy::default();
        let mut u = user(&["a@example.com"], &[], false);
        let (id, code) = prepared(&mut u, &key, T0);
        // Another code's hash withdraws nothing.
        let stale = key.hash(&id, &other_code(&code));
        u.withdraw_verification(Channel::Email, &id, &stale, T0)
            .unwrap();
        assert!(u.email(&id).unwrap().verification.code.is_some());
        u.withdraw_verification(Channel::Email, &id, &key.hash(&id, &code), T0)
            .unwrap();
        let v = &u.email(&id).unwrap().verification;
        assert_eq!(
            (v.status, v.code.as_ref(), v.expire_at),
            (VerificationStatus::Unverified, None, None)
        );
        assert_eq!(v.sends.count, 1, "the failed send still counts");
        assert_eq!(
            u.attempt_verification(Channel::Email, &id, &code, &key, &policy, T0)
                .unwrap(),
            AttemptOutcome::NotPrepared
        );
        // No cooldown: a new code may be prepared at once.
        prepared(&mut u, &key, T0);
    }

    #[test]
    fn the_user_send_limit_spans_identifiers() {
        let key = CodeKey::generate();
        let policy = CodePolicy {
            user_send_limit: 2,
            ..CodePolicy::default()
        };
        let mut record = UserRecord::new(
            user(
                &["a@example.com", "b@example.com", "c@example.com"],
                &[],
                false,
            ),
            None,
        );
        let ids: Vec<_> = record
            .user
            .email_addresses
            .iter()
            .map(|e| e.id.clone())
            .collect();
        let code = VerificationCode::generate();
        for id in &ids[..2] {
            record
                .prepare_verification(Channel::Email, id, key.hash(id, &code), &policy, T0)
                .unwrap();
        }
        let err = record
            .prepare_verification(
                Channel::Email,
                &ids[2],
                key.hash(&ids[2], &code),
                &policy,
                T0,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            DomainError::RateLimited { reason: reason::VERIFICATION_SEND_LIMIT, retry_after_ms, .. }
                if retry_after_ms == policy.send_window_ms
        ));
    }

    #[test]
    fn failed_attempts_lock_out_for_a_while() {
        let policy = LockoutPolicy {
            max_attempts: 3,
            duration_ms: 1000,
        };
        let mut r = UserRecord::new(user(&["a@example.com"], &[], true), None);
        for i in 0..2 {
            r.record_failed_attempt(&policy, T0.plus_millis(i));
            r.ensure_not_locked_out(T0.plus_millis(i)).unwrap();
        }
        r.record_failed_attempt(&policy, T0.plus_millis(2));
        assert_eq!(
            r.ensure_not_locked_out(T0.plus_millis(500)),
            Err(DomainError::LockedOut {
                retry_after_ms: 502
            })
        );
        r.ensure_not_locked_out(T0.plus_millis(1002)).unwrap();
        // After the lockout the count starts afresh.
        r.record_failed_attempt(&policy, T0.plus_millis(1100));
        assert_eq!(
            (r.lockout.failed_attempts, r.lockout.locked_until),
            (1, None)
        );
        r.record_successful_sign_in(T0.plus_millis(1200));
        assert_eq!(r.lockout, Lockout::default());
        assert_eq!(r.user.last_sign_in_at, Some(T0.plus_millis(1200)));
    }

    #[test]
    fn identifier_changes_name_what_was_added_or_verified() {
        let before = user(
            &["a@example.com", "b@example.com"],
            &["+14155550101"],
            false,
        );
        assert_eq!(before.identifier_changes(None).len(), 3);
        let mut after = before.clone();
        assert!(after.identifier_changes(Some(&before)).is_empty());
        let b = after.email_addresses[1].id.clone();
        after.set_email_verified(&b, true, T0).unwrap();
        after
            .add_phone(phone("+14155550102"), false, false, false, T0)
            .unwrap();
        assert_eq!(
            after.identifier_changes(Some(&before)),
            vec![
                IdentifierChange {
                    channel: Channel::Email,
                    normalized: "b@example.com".into(),
                    verified: true,
                },
                IdentifierChange {
                    channel: Channel::Phone,
                    normalized: "+14155550102".into(),
                    verified: false,
                },
            ]
        );
        // Releasing removes only unverified copies.
        assert!(!after.release_unverified(Channel::Email, "b@example.com", T0));
        assert!(after.release_unverified(Channel::Email, "a@example.com", T0));
        assert_eq!(after.email_addresses.len(), 1);
    }

    fn other_code(code: &VerificationCode) -> VerificationCode {
        let n: u32 = code.as_str().parse().unwrap();
        VerificationCode::parse(&format!("{:06}", (n + 1) % 1_000_000)).unwrap()
    }

    #[test]
    fn a_right_code_verifies_and_makes_primary() {
        let (key, policy) = (CodeKey::generate(), CodePolicy::default());
        let mut u = user(&["a@example.com"], &[], false);
        let (id, code) = prepared(&mut u, &key, T0);
        assert_eq!(
            u.email(&id).unwrap().verification.strategy,
            Some(VerificationStrategy::EmailCode)
        );
        assert_eq!(
            u.email(&id).unwrap().verification.expire_at,
            Some(T0.plus_millis(policy.ttl_ms))
        );
        let outcome = u
            .attempt_verification(Channel::Email, &id, &code, &key, &policy, T0.plus_millis(1))
            .unwrap();
        assert_eq!(outcome, AttemptOutcome::Verified);
        let v = &u.email(&id).unwrap().verification;
        assert!(v.is_verified() && v.code.is_none() && v.attempts == 1);
        assert_eq!(u.primary_email_address_id, Some(id.clone()));
        // Single use: the same code again is refused.
        let again = u
            .attempt_verification(Channel::Email, &id, &code, &key, &policy, T0.plus_millis(2))
            .unwrap();
        assert_eq!(again, AttemptOutcome::AlreadyVerified);
        let err = u
            .prepare_verification(
                Channel::Email,
                &id,
                key.hash(&id, &code),
                &policy,
                T0.plus_millis(60_000),
            )
            .unwrap_err();
        assert!(
            matches!(err, DomainError::FailedPrecondition { reason: r, .. } if r == reason::VERIFICATION_ALREADY_VERIFIED)
        );
    }

    #[test]
    fn five_wrong_codes_fail_the_verification() {
        let (key, policy) = (CodeKey::generate(), CodePolicy::default());
        let mut u = user(&["a@example.com"], &[], false);
        let (id, code) = prepared(&mut u, &key, T0);
        let wrong = other_code(&code);
        for left in (0..5).rev() {
            let outcome = u
                .attempt_verification(Channel::Email, &id, &wrong, &key, &policy, T0)
                .unwrap();
            assert_eq!(
                outcome,
                AttemptOutcome::Incorrect {
                    attempts_left: left
                }
            );
        }
        assert_eq!(
            u.email(&id).unwrap().verification.status,
            VerificationStatus::Failed
        );
        // Even the right code is no longer evaluated.
        assert_eq!(
            u.attempt_verification(Channel::Email, &id, &code, &key, &policy, T0)
                .unwrap(),
            AttemptOutcome::Failed
        );
        assert_eq!(u.email(&id).unwrap().verification.attempts, 5);
        // A new code starts over.
        let (_, fresh) = prepared(&mut u, &key, T0.plus_millis(policy.resend_cooldown_ms));
        let outcome = u
            .attempt_verification(
                Channel::Email,
                &id,
                &fresh,
                &key,
                &policy,
                T0.plus_millis(policy.resend_cooldown_ms),
            )
            .unwrap();
        assert_eq!(outcome, AttemptOutcome::Verified);
    }

    #[test]
    fn codes_expire_and_are_replaced_and_resends_wait() {
        let (key, policy) = (CodeKey::generate(), CodePolicy::default());
        let mut u = user(&["a@example.com"], &[], false);
        let (id, first) = prepared(&mut u, &key, T0);
        // Within the cooldown a new code is refused, with the time to wait.
        let code = VerificationCode::generate();
        let err = u
            .prepare_verification(
                Channel::Email,
                &id,
                key.hash(&id, &code),
                &policy,
                T0.plus_millis(10_000),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::RateLimited {
                    retry_after_ms: 20_000,
                    ..
                }
            ),
            "{err:?}"
        );
        // After it, the new code replaces the old one.
        let later = T0.plus_millis(policy.resend_cooldown_ms);
        let (_, second) = prepared(&mut u, &key, later);
        if first != second {
            assert!(matches!(
                u.attempt_verification(Channel::Email, &id, &first, &key, &policy, later)
                    .unwrap(),
                AttemptOutcome::Incorrect { .. }
            ));
        }
        // At expiry the code stops working, and the status says so.
        let expired_at = later.plus_millis(policy.ttl_ms);
        assert_eq!(
            u.attempt_verification(Channel::Email, &id, &second, &key, &policy, expired_at)
                .unwrap(),
            AttemptOutcome::Expired
        );
        assert_eq!(
            u.email(&id).unwrap().verification.status,
            VerificationStatus::Expired
        );
        let never = User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: vec![email("b@example.com")],
                    ..NewIdentifiers::default()
                },
                ..NewUser::default()
            },
            T0,
        )
        .unwrap();
        let mut never = never;
        let nid = never.email_addresses[0].id.clone();
        assert_eq!(
            never
                .attempt_verification(Channel::Email, &nid, &second, &key, &policy, T0)
                .unwrap(),
            AttemptOutcome::NotPrepared
        );
    }

    #[test]
    fn record_keeps_password_enabled_true() {
        let u = user(&["a@example.com"], &[], true);
        let mut r = UserRecord::new(u, None);
        assert!(!r.user.password_enabled);
        r.set_password(Some(PasswordHash::from_stored("$argon2id$x".into())), T0);
        assert!(r.user.password_enabled);
    }
}
