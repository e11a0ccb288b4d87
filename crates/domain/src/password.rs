//! Passwords: policy, argon2id hashing, verification.
//!
//! Hashing costs tens of milliseconds of CPU by design; these functions are
//! synchronous and callers run them on a bounded blocking pool. Plain
//! passwords never leave this module except as the caller's own input, and
//! their `Debug` output is redacted.

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{FieldViolation, reason};

/// A plain password that satisfies the policy: 8-128 characters.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub const MIN_CHARS: usize = 8;
    /// Bounds hashing work per request.
    pub const MAX_CHARS: usize = 128;

    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let chars = text.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(FieldViolation::new(
                "",
                reason::FORM_PASSWORD_LENGTH_TOO_SHORT,
                format!("password must be {} characters or more", Self::MIN_CHARS),
            ));
        }
        if chars > Self::MAX_CHARS {
            return Err(FieldViolation::new(
                "",
                reason::FORM_PASSWORD_LENGTH_TOO_LONG,
                format!("password must be {} characters or fewer", Self::MAX_CHARS),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// Hashes the password with argon2id and the OWASP parameters
    /// (19 MiB memory, 2 iterations, 1 lane) and a random 128-bit salt.
    pub fn hash(&self) -> PasswordHash {
        let mut salt = [0u8; 16];
        // Without a CSPRNG salts would repeat; that is not recoverable.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut salt).expect("operating system random source unavailable");
        #[allow(clippy::expect_used)]
        let salt = SaltString::encode_b64(&salt).expect("16-byte salt encodes");
        #[allow(clippy::expect_used)]
        let hash = hasher()
            .hash_password(self.0.as_bytes(), &salt)
            .expect("argon2 accepts policy-conforming passwords");
        PasswordHash(hash.to_string())
    }
}

fn hasher() -> Argon2<'static> {
    #[allow(clippy::expect_used)]
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2id parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A password hash in PHC string form (`$argon2id$v=19$m=…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

impl PasswordHash {
    /// Wraps a hash read back from storage.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the password this hash was made from. Any
    /// candidate is accepted as input (no policy check), and the comparison
    /// is constant-time.
    pub fn verify(&self, candidate: &str) -> bool {
        let Ok(parsed) = argon2::password_hash::PasswordHash::new(&self.0) else {
            return false;
        };
        hasher()
            .verify_password(candidate.as_bytes(), &parsed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_right_password() {
        let hash = Password::parse("correct horse battery").unwrap().hash();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hash.verify("correct horse battery"));
        assert!(!hash.verify("correct horse battery!"));
        assert!(!PasswordHash::from_stored("garbage".into()).verify("x"));
    }

    #[test]
    fn policy_and_redaction() {
        assert_eq!(
            Password::parse("short").unwrap_err().reason,
            reason::FORM_PASSWORD_LENGTH_TOO_SHORT
        );
        assert!(Password::parse(&"x".repeat(129)).is_err());
        let p = Password::parse("s3cret-password").unwrap();
        assert!(!format!("{p:?}").contains("s3cret"));
        assert!(!format!("{:?}", p.hash()).contains("argon2"));
    }

    #[test]
    fn salts_differ() {
        let p = Password::parse("same password").unwrap();
        assert_ne!(p.hash(), p.hash());
    }
}
