//! One-time verification codes: generation, keyed hashing, and the policy
//! that bounds them.
//!
//! A code is 6 digits drawn uniformly from the operating system's CSPRNG.
//! Only its keyed hash is stored: HMAC-SHA256 under a server key, bound to
//! the identifier it was sent to, so a leaked database row neither reveals
//! the code nor can be brute-forced offline without the key, and a hash is
//! worthless for any other identifier. Plain codes never appear in `Debug`
//! output.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{DomainError, FieldViolation, reason};
use crate::id::IdentificationId;
use crate::time::Timestamp;

/// Limits on codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePolicy {
    /// How long a code is accepted, in milliseconds.
    pub ttl_ms: i64,
    /// Wrong codes accepted per prepared code before it fails.
    pub max_attempts: u32,
    /// Least time between two codes for one identifier, in milliseconds.
    pub resend_cooldown_ms: i64,
    /// Codes sent to one identifier per send window.
    pub identifier_send_limit: u32,
    /// Codes sent to all of one user's identifiers per send window.
    pub user_send_limit: u32,
    /// The window the send limits count in, in milliseconds.
    pub send_window_ms: i64,
}

impl Default for CodePolicy {
    /// Clerk's figures: 10 minutes, 5 attempts, 30 seconds; and at most 5
    /// codes per identifier and 10 per user in an hour.
    fn default() -> Self {
        Self {
            ttl_ms: 10 * 60 * 1000,
            max_attempts: 5,
            resend_cooldown_ms: 30 * 1000,
            identifier_send_limit: 5,
            user_send_limit: 10,
            send_window_ms: 60 * 60 * 1000,
        }
    }
}

/// Codes sent in a fixed window: counts sends against a limit, and says
/// when the window reopens once it is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendWindow {
    /// When the current window began.
    pub started_at: Timestamp,
    /// Codes sent since then.
    pub count: u32,
}

impl SendWindow {
    /// Counts one more send, or refuses with the delay until the window
    /// reopens. A window older than `window_ms` starts afresh.
    pub fn admit(
        &mut self,
        limit: u32,
        window_ms: i64,
        now: Timestamp,
        what: &str,
    ) -> Result<(), DomainError> {
        let reopens_at = self.started_at.plus_millis(window_ms);
        if now >= reopens_at || now < self.started_at {
            *self = Self {
                started_at: now,
                count: 0,
            };
        } else if self.count >= limit {
            return Err(DomainError::RateLimited {
                reason: reason::VERIFICATION_SEND_LIMIT,
                message: format!("too many codes were sent to {what}; try again later"),
                retry_after_ms: reopens_at.as_millis() - now.as_millis(),
            });
        }
        self.count += 1;
        Ok(())
    }
}

/// A 6-digit code.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationCode(String);

impl fmt::Debug for VerificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerificationCode(<redacted>)")
    }
}

impl VerificationCode {
    /// A fresh code, uniform over 000000-999999.
    pub fn generate() -> Self {
        // Rejection sampling keeps the distribution uniform.
        const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
        loop {
            let mut bytes = [0u8; 4];
            // Without a CSPRNG codes would be guessable; not recoverable.
            #[allow(clippy::expect_used)]
            getrandom::fill(&mut bytes).expect("operating system random source unavailable");
            let n = u32::from_le_bytes(bytes);
            if n < LIMIT {
                return Self(format!("{:06}", n % 1_000_000));
            }
        }
    }

    /// Parses a code a user typed: 6 digits, surrounding white space ignored.
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let text = text.trim();
        if text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(FieldViolation::new(
                "",
                reason::FORM_PARAM_FORMAT_INVALID,
                "a code is 6 digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The server key codes are hashed under.
#[derive(Clone)]
pub struct CodeKey(Vec<u8>);

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl CodeKey {
    /// A key from configured secret bytes (at least 16).
    pub fn new(secret: &[u8]) -> Option<Self> {
        (secret.len() >= 16).then(|| Self(secret.to_vec()))
    }

    /// A random key, for a single process with no configured key.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut key).expect("operating system random source unavailable");
        Self(key)
    }

    fn mac(&self, identifier: &IdentificationId, code: &VerificationCode) -> [u8; 32] {
        // HMAC accepts keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(identifier.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(code.as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The stored form of `code` sent to `identifier`.
    pub fn hash(&self, identifier: &IdentificationId, code: &VerificationCode) -> CodeHash {
        use std::fmt::Write as _;
        let hex =
            self.mac(identifier, code)
                .iter()
                .fold(String::with_capacity(64), |mut hex, b| {
                    let _ = write!(hex, "{b:02x}");
                    hex
                });
        CodeHash(hex)
    }

    /// Whether `code` is the one `hash` was made from, in constant time.
    pub fn matches(
        &self,
        hash: &CodeHash,
        identifier: &IdentificationId,
        code: &VerificationCode,
    ) -> bool {
        self.hash(identifier, code)
            .0
            .as_bytes()
            .ct_eq(hash.0.as_bytes())
            .into()
    }
}

/// A keyed code hash, hex-encoded as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeHash(String);

impl CodeHash {
    /// Wraps a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The code outstanding for an identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCode {
    pub hash: CodeHash,
    /// When it was prepared, for the resend cooldown.
    pub sent_at: Timestamp,
}

/// What an attempt found. Every outcome is recorded before it is reported,
/// so wrong and expired attempts count even though the caller gets an
/// error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The code was right; the identifier is verified.
    Verified,
    /// The code was wrong; this many attempts remain (0: it has failed).
    Incorrect { attempts_left: u32 },
    /// The code expired before it was used.
    Expired,
    /// Too many wrong codes; a new one must be prepared.
    Failed,
    /// The identifier was verified already.
    AlreadyVerified,
    /// No code was prepared.
    NotPrepared,
}

impl AttemptOutcome {
    /// The outcome as the caller sees it: success, or the error to report.
    pub fn into_result(self) -> Result<(), DomainError> {
        let precondition = |reason, message: &str| Err(DomainError::precondition(reason, message));
        match self {
            Self::Verified => Ok(()),
            Self::Incorrect { attempts_left } => Err(DomainError::CodeIncorrect { attempts_left }),
            Self::Expired => precondition(
                reason::VERIFICATION_EXPIRED,
                "the code expired; prepare a new one",
            ),
            Self::Failed => precondition(
                reason::VERIFICATION_FAILED,
                "too many incorrect codes; prepare a new one",
            ),
            Self::AlreadyVerified => {
                precondition(reason::VERIFICATION_ALREADY_VERIFIED, "already verified")
            }
            Self::NotPrepared => precondition(
                reason::VERIFICATION_NOT_PREPARED,
                "no code was prepared; prepare one first",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_hashes_bind_to_the_identifier() {
        let key = CodeKey::generate();
        let a = IdentificationId::generate(Timestamp::from_millis(1));
        let b = IdentificationId::generate(Timestamp::from_millis(1));
        let code = VerificationCode::generate();
        assert_eq!(code.as_str().len(), 6);
        let hash = key.hash(&a, &code);
        assert!(key.matches(&hash, &a, &code));
        assert!(!key.matches(&hash, &b, &code));
        assert!(!CodeKey::generate().matches(&hash, &a, &code));
        assert!(!format!("{code:?}").contains(code.as_str()));
        assert!(!hash.as_str().contains(code.as_str()) || hash.as_str().len() == 64);
    }

    #[test]
    fn codes_parse_strictly() {
        assert!(VerificationCode::parse(" 012345 ").is_ok());
        for bad in ["12345", "1234567", "12a456", "", "１２３４５６"] {
            assert!(VerificationCode::parse(bad).is_err(), "{bad}");
        }
        assert!(CodeKey::new(b"short").is_none());
    }

    #[test]
    fn send_windows_count_and_reopen() {
        let mut window = SendWindow::default();
        let t = |ms: i64| Timestamp::from_millis(1_000_000 + ms);
        for i in 0..3 {
            window.admit(3, 1000, t(i), "it").unwrap();
        }
        match window.admit(3, 1000, t(400), "it") {
            Err(DomainError::RateLimited {
                retry_after_ms,
                reason,
                ..
            }) => {
                assert_eq!(retry_after_ms, 600);
                assert_eq!(reason, reason::VERIFICATION_SEND_LIMIT);
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert_eq!(window.count, 3, "a refused send is not counted");
        window.admit(3, 1000, t(1000), "it").unwrap();
        assert_eq!((window.started_at, window.count), (t(1000), 1));
    }

    #[test]
    fn generated_codes_vary() {
        let codes: std::collections::HashSet<String> = (0..200)
            .map(|_| VerificationCode::generate().as_str().to_owned())
            .collect();
        assert!(codes.len() > 190);
    }
}
