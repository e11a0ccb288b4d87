//! Sign-ups: a new user gathering what the instance requires (which
//! identifiers, whether a password), proving their email address or phone
//! number with a code, and becoming a user with a session once everything
//! is there.
//!
//! A sign-up is `missing_requirements` until every required field is
//! present and every given email or phone is verified; then it is
//! complete, and the store creates the user (with the sign-up's unsafe
//! metadata) and a session in one transaction. An unfinished sign-up is
//! abandoned after 24 hours.

use crate::code::{AttemptOutcome, CodeHash, CodeKey, CodePolicy, VerificationCode};
use crate::error::{DomainError, reason};
use crate::id::{IdentificationId, SessionId, SignUpId, UserId};
use crate::metadata::Metadata;
use crate::password::PasswordHash;
use crate::time::Timestamp;
use crate::user::{Channel, NewIdentifiers, NewUser, User, UserRecord, Verification};
use crate::values::{Email, Name, Phone, Username};

/// How long an unfinished sign-up lives.
pub const SIGN_UP_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// What a sign-up must gather before it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignUpRequirements {
    pub email_address: bool,
    pub phone_number: bool,
    pub username: bool,
    pub password: bool,
}

impl Default for SignUpRequirements {
    /// An email address and a password.
    fn default() -> Self {
        Self {
            email_address: true,
            phone_number: false,
            username: false,
            password: true,
        }
    }
}

/// An identifier a sign-up is proving, with the id its codes are bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingIdentifier<T> {
    /// Binds codes to this sign-up's identifier; not the user's future id.
    pub id: IdentificationId,
    pub value: T,
    pub verification: Verification,
}

/// Where a sign-up stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignUpStatus {
    MissingRequirements,
    Complete,
    Abandoned,
}

/// Fields of a sign-up a caller sets; `None` leaves one as it is.
#[derive(Clone, Debug, Default)]
pub struct SignUpFields {
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub username: Option<Username>,
    pub password_hash: Option<PasswordHash>,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub unsafe_metadata: Option<Metadata>,
}

/// A sign-up in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct SignUp {
    pub id: SignUpId,
    pub email: Option<PendingIdentifier<Email>>,
    pub phone: Option<PendingIdentifier<Phone>>,
    pub username: Option<Username>,
    pub password_hash: Option<PasswordHash>,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub unsafe_metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expire_at: Timestamp,
    pub created_user_id: Option<UserId>,
    pub created_session_id: Option<SessionId>,
}

impl SignUp {
    /// A new sign-up with `fields`.
    pub fn start(fields: SignUpFields, now: Timestamp) -> Self {
        let mut sign_up = Self {
            id: SignUpId::generate(now),
            email: None,
            phone: None,
            username: None,
            password_hash: None,
            first_name: None,
            last_name: None,
            unsafe_metadata: Metadata::default(),
            created_at: now,
            updated_at: now,
            expire_at: now.plus_millis(SIGN_UP_TTL_MS),
            created_user_id: None,
            created_session_id: None,
        };
        sign_up.apply(fields, now);
        sign_up
    }

    /// Sets the given fields. A changed email or phone must be verified
    /// afresh.
    fn apply(&mut self, fields: SignUpFields, now: Timestamp) {
        if let Some(email) = fields.email
            && self
                .email
                .as_ref()
                .is_none_or(|e| e.value.normalized() != email.normalized())
        {
            self.email = Some(PendingIdentifier {
                id: IdentificationId::generate(now),
                value: email,
                verification: Verification::unverified(),
            });
        }
        if let Some(phone) = fields.phone
            && self.phone.as_ref().is_none_or(|p| p.value != phone)
        {
            self.phone = Some(PendingIdentifier {
                id: IdentificationId::generate(now),
                value: phone,
                verification: Verification::unverified(),
            });
        }
        if fields.username.is_some() {
            self.username = fields.username;
        }
        if fields.password_hash.is_some() {
            self.password_hash = fields.password_hash;
        }
        if fields.first_name.is_some() {
            self.first_name = fields.first_name;
        }
        if fields.last_name.is_some() {
            self.last_name = fields.last_name;
        }
        if let Some(metadata) = fields.unsafe_metadata {
            self.unsafe_metadata = metadata;
        }
        self.updated_at = now;
    }

    /// The status at `now`.
    pub fn status_at(&self, now: Timestamp) -> SignUpStatus {
        if self.created_user_id.is_some() {
            SignUpStatus::Complete
        } else if now >= self.expire_at {
            SignUpStatus::Abandoned
        } else {
            SignUpStatus::MissingRequirements
        }
    }

    /// Refuses changes to a complete or abandoned sign-up.
    pub fn ensure_open(&self, now: Timestamp) -> Result<(), DomainError> {
        match self.status_at(now) {
            SignUpStatus::MissingRequirements => Ok(()),
            SignUpStatus::Complete => Err(DomainError::precondition(
                reason::SIGN_UP_COMPLETE,
                "this sign-up is complete",
            )),
            SignUpStatus::Abandoned => Err(DomainError::precondition(
                reason::SIGN_UP_EXPIRED,
                "this sign-up was abandoned; start a new one",
            )),
        }
    }

    /// Updates an open sign-up.
    pub fn update(&mut self, fields: SignUpFields, now: Timestamp) -> Result<(), DomainError> {
        self.ensure_open(now)?;
        self.apply(fields, now);
        Ok(())
    }

    /// Required fields not given yet, by API name.
    pub fn missing_fields(&self, required: &SignUpRequirements) -> Vec<&'static str> {
        [
            (
                "email_address",
                required.email_address && self.email.is_none(),
            ),
            (
                "phone_number",
                required.phone_number && self.phone.is_none(),
            ),
            ("username", required.username && self.username.is_none()),
            (
                "password",
                required.password && self.password_hash.is_none(),
            ),
        ]
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(name, _)| name)
        .collect()
    }

    /// Given identifiers not verified yet, by API name.
    pub fn unverified_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self
            .email
            .as_ref()
            .is_some_and(|e| !e.verification.is_verified())
        {
            fields.push("email_address");
        }
        if self
            .phone
            .as_ref()
            .is_some_and(|p| !p.verification.is_verified())
        {
            fields.push("phone_number");
        }
        fields
    }

    /// Whether everything required is there and verified.
    pub fn is_ready(&self, required: &SignUpRequirements) -> bool {
        self.missing_fields(required).is_empty() && self.unverified_fields().is_empty()
    }

    fn pending_mut(
        &mut self,
        channel: Channel,
    ) -> Result<(&IdentificationId, &mut Verification), DomainError> {
        let missing = || {
            DomainError::precondition(
                reason::VERIFICATION_NOT_PREPARED,
                match channel {
                    Channel::Email => "this sign-up has no email address to verify",
                    Channel::Phone => "this sign-up has no phone number to verify",
                },
            )
        };
        match channel {
            Channel::Email => self
                .email
                .as_mut()
                .map(|e| (&e.id, &mut e.verification))
                .ok_or_else(missing),
            Channel::Phone => self
                .phone
                .as_mut()
                .map(|p| (&p.id, &mut p.verification))
                .ok_or_else(missing),
        }
    }

    /// The normalized email address or phone number codes for `channel`
    /// go to, for limits that span sign-ups.
    pub fn normalized_target(&self, channel: Channel) -> Option<String> {
        match channel {
            Channel::Email => self.email.as_ref().map(|e| e.value.normalized()),
            Channel::Phone => self.phone.as_ref().map(|p| p.value.to_string()),
        }
    }

    /// The id codes for `channel` are bound to, and where they go.
    pub fn code_target(&self, channel: Channel) -> Option<(IdentificationId, String)> {
        match channel {
            Channel::Email => self
                .email
                .as_ref()
                .map(|e| (e.id.clone(), e.value.to_string())),
            Channel::Phone => self
                .phone
                .as_ref()
                .map(|p| (p.id.clone(), p.value.to_string())),
        }
    }

    /// Prepares a code for the sign-up's email address or phone number.
    pub fn prepare_verification(
        &mut self,
        channel: Channel,
        hash: CodeHash,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.ensure_open(now)?;
        let (_, verification) = self.pending_mut(channel)?;
        verification.prepare(channel.strategy(), hash, policy, now)?;
        self.updated_at = now;
        Ok(())
    }

    /// Withdraws an undelivered code.
    pub fn withdraw_verification(&mut self, channel: Channel, hash: &CodeHash, now: Timestamp) {
        if let Ok((_, verification)) = self.pending_mut(channel)
            && verification.withdraw(hash)
        {
            self.updated_at = now;
        }
    }

    /// Checks a code; the attempt is recorded whatever its outcome.
    pub fn attempt_verification(
        &mut self,
        channel: Channel,
        code: &VerificationCode,
        key: &CodeKey,
        policy: &CodePolicy,
        now: Timestamp,
    ) -> Result<AttemptOutcome, DomainError> {
        self.ensure_open(now)?;
        let (id, verification) = self.pending_mut(channel)?;
        let id = id.clone();
        let outcome = verification.attempt(&id, code, key, policy, now);
        self.updated_at = now;
        Ok(outcome)
    }

    /// The user this sign-up becomes: its identifiers verified as they
    /// were (by code), its password, names and unsafe metadata.
    pub fn to_user(&self, now: Timestamp) -> Result<UserRecord, DomainError> {
        let new = NewUser {
            identifiers: NewIdentifiers {
                emails: self.email.iter().map(|e| e.value.clone()).collect(),
                phones: self.phone.iter().map(|p| p.value.clone()).collect(),
                verified: true,
            },
            username: self.username.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            unsafe_metadata: self.unsafe_metadata.clone(),
            ..NewUser::default()
        };
        let mut user = User::create(new, now)?;
        // Verified by the code the user typed, not on a backend's word.
        if let (Some(pending), Some(email)) = (&self.email, user.email_addresses.first_mut()) {
            email.verification = pending.verification.clone();
        }
        if let (Some(pending), Some(phone)) = (&self.phone, user.phone_numbers.first_mut()) {
            phone.verification = pending.verification.clone();
        }
        user.record_sign_in(now);
        Ok(UserRecord::new(user, self.password_hash.clone()))
    }
}
