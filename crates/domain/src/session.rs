//! Sessions: one signed-in user on one device, and the secret that proves
//! it.
//!
//! A session starts active and lasts until `expire_at` (7 days by
//! default), unless it is revoked (by a backend caller, a ban or a password
//! change) or ended by its user first. Its status is decided against the
//! clock when read, so an expired session needs no sweeper to stop working.
//! The session secret the client keeps has 256 random bits; only its
//! SHA-256 is stored (an unguessable secret needs no slow hash).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::{DomainError, reason};
use crate::id::{SessionId, UserId};
use crate::time::Timestamp;

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    Active,
    Revoked,
    Ended,
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Ended => "ended",
            Self::Expired => "expired",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Active, Self::Revoked, Self::Ended, Self::Expired]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// The device and network a session was started from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionActivity {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub browser_name: Option<String>,
    pub browser_version: Option<String>,
    /// `desktop`, `mobile`, `tablet` or `bot`.
    pub device_type: Option<String>,
    pub is_mobile: bool,
}

/// A session of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    /// The stored status; see [`Session::status_at`] for the effective one.
    pub status: SessionStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_active_at: Timestamp,
    pub expire_at: Timestamp,
    pub activity: SessionActivity,
    /// SHA-256 of the session secret, hex.
    pub secret_hash: String,
}

impl Session {
    /// Starts an active session for `user_id`, valid for `lifetime_ms`;
    /// returns it with the secret to hand to the client (not stored).
    pub fn start(
        user_id: UserId,
        activity: SessionActivity,
        lifetime_ms: i64,
        now: Timestamp,
    ) -> (Self, SessionSecret) {
        let secret = SessionSecret::generate();
        let session = Self {
            id: SessionId::generate(now),
            user_id,
            status: SessionStatus::Active,
            created_at: now,
            updated_at: now,
            last_active_at: now,
            expire_at: now.plus_millis(lifetime_ms),
            activity,
            secret_hash: secret.hash(),
        };
        (session, secret)
    }

    /// The status at `now`: an active session past its expiry is expired.
    pub fn status_at(&self, now: Timestamp) -> SessionStatus {
        if self.status == SessionStatus::Active && now >= self.expire_at {
            SessionStatus::Expired
        } else {
            self.status
        }
    }

    /// Refuses unless the session is active at `now`.
    pub fn ensure_active(&self, now: Timestamp) -> Result<(), DomainError> {
        match self.status_at(now) {
            SessionStatus::Active => Ok(()),
            status => Err(DomainError::precondition(
                reason::SESSION_NOT_ACTIVE,
                format!("the session is {}", status.as_str()),
            )),
        }
    }

    /// Revokes an active session.
    pub fn revoke(&mut self, now: Timestamp) -> Result<(), DomainError> {
        self.ensure_active(now)?;
        self.status = SessionStatus::Revoked;
        self.updated_at = now;
        Ok(())
    }

    /// Ends an active session: its user signed out.
    pub fn end(&mut self, now: Timestamp) -> Result<(), DomainError> {
        self.ensure_active(now)?;
        self.status = SessionStatus::Ended;
        self.updated_at = now;
        Ok(())
    }

    /// Records that the session was used (a token was minted).
    pub fn touch(&mut self, now: Timestamp) -> Result<(), DomainError> {
        self.ensure_active(now)?;
        self.last_active_at = now;
        self.updated_at = now;
        Ok(())
    }

    /// Whether `secret` is this session's, in constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        SessionSecret(secret.to_owned())
            .hash()
            .as_bytes()
            .ct_eq(self.secret_hash.as_bytes())
            .into()
    }
}

/// The credential a client keeps for its session: 256 random bits,
/// base64url. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret(String);

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

impl SessionSecret {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes).expect("operating system random source unavailable");
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A secret as a client presented it.
    pub fn from_client(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The stored form: SHA-256, hex.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_by_the_clock_and_revoke_once() {
        let now = Timestamp::from_millis(1_000);
        let user = UserId::generate(now);
        let (mut s, secret) = Session::start(user, SessionActivity::default(), 500, now);
        assert!(s.id.as_str().starts_with("sess_"));
        assert!(s.secret_matches(secret.as_str()));
        assert!(!s.secret_matches("guess"));
        assert!(!s.secret_hash.contains(secret.as_str()));
        assert!(!format!("{secret:?}").contains(secret.as_str()));
        assert_eq!(
            s.status_at(Timestamp::from_millis(1_499)),
            SessionStatus::Active
        );
        assert_eq!(
            s.status_at(Timestamp::from_millis(1_500)),
            SessionStatus::Expired
        );
        assert!(s.touch(Timestamp::from_millis(1_500)).is_err());
        s.revoke(Timestamp::from_millis(1_100)).unwrap();
        assert_eq!(
            s.status_at(Timestamp::from_millis(1_200)),
            SessionStatus::Revoked
        );
        assert!(s.revoke(Timestamp::from_millis(1_200)).is_err());
    }
}
