//! Prefixed, time-sortable, unguessable identifiers.
//!
//! An id is a prefix (`user_`, `idn_`) followed by 26 lowercase Crockford
//! base32 characters encoding 128 bits: a 48-bit millisecond timestamp (so
//! ids sort by creation time, which keeps B-tree inserts local) and 80 random
//! bits from the operating system's CSPRNG (so ids cannot be guessed).

use std::fmt;

use crate::error::{FieldViolation, reason};
use crate::time::Timestamp;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ENCODED_LEN: usize = 26;

fn encode(value: u128) -> String {
    let mut out = [0u8; ENCODED_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (ENCODED_LEN - 1 - i);
        *slot = ALPHABET[usize::try_from((value >> shift) & 0x1f).unwrap_or(0)];
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Each byte's digit in [`ALPHABET`], or [`NOT_A_DIGIT`].
const DIGITS: [u8; 256] = {
    let mut digits = [NOT_A_DIGIT; 256];
    let mut digit: u8 = 0;
    while (digit as usize) < ALPHABET.len() {
        digits[ALPHABET[digit as usize] as usize] = digit;
        digit += 1;
    }
    digits
};
const NOT_A_DIGIT: u8 = u8::MAX;

fn decode(text: &str) -> Option<u128> {
    if text.len() != ENCODED_LEN {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in text.bytes().enumerate() {
        let digit = DIGITS[usize::from(c)];
        // The first character carries only the top 3 bits of 128.
        if digit == NOT_A_DIGIT || (i == 0 && digit > 7) {
            return None;
        }
        value = (value << 5) | u128::from(digit);
    }
    Some(value)
}

fn generate(prefix: &str, now: Timestamp) -> String {
    let mut random = [0u8; 10];
    // The OS CSPRNG failing is not recoverable: ids would be guessable.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut random).expect("operating system random source unavailable");
    let ms = u128::from(u64::try_from(now.as_millis()).unwrap_or(0) & 0xffff_ffff_ffff);
    let mut value = ms << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    format!("{prefix}{}", encode(value))
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new id for a resource created at `now`.
            pub fn generate(now: Timestamp) -> Self {
                Self(generate(Self::PREFIX, now))
            }

            /// Parses an id given by a client.
            pub fn parse(text: &str) -> Result<Self, FieldViolation> {
                if text.is_empty() {
                    return Err(FieldViolation::new("", reason::FORM_PARAM_MISSING, concat!($what, " id is required")));
                }
                let valid = text
                    .strip_prefix(Self::PREFIX)
                    .is_some_and(|rest| decode(rest).is_some());
                if valid {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(FieldViolation::new(
                        "",
                        reason::FORM_PARAM_FORMAT_INVALID,
                        concat!("not a ", $what, " id (", $prefix, "…)"),
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// Id of a user.
    UserId, "user_", "user"
);
prefixed_id!(
    /// Id of an identification: an email address or a phone number.
    IdentificationId, "idn_", "email address or phone number"
);
prefixed_id!(
    /// Id of a session of a signed-in user.
    SessionId, "sess_", "session"
);
prefixed_id!(
    /// Id of a sign-in attempt.
    SignInId, "sia_", "sign-in"
);
prefixed_id!(
    /// Id of a sign-up attempt.
    SignUpId, "sua_", "sign-up"
);
prefixed_id!(
    /// Id of a stored profile image. A new upload gets a new id, so an
    /// image's URL names its content for good.
    ImageId, "img_", "image"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a = UserId::generate(Timestamp::from_millis(1_700_000_000_000));
        let b = UserId::generate(Timestamp::from_millis(1_700_000_000_001));
        assert!(a < b);
        assert_eq!(UserId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.as_str().len(), 5 + 26);
    }

    #[test]
    fn ids_are_unguessable() {
        let now = Timestamp::from_millis(1);
        assert_ne!(UserId::generate(now), UserId::generate(now));
    }

    #[test]
    fn wrong_prefix_or_alphabet_is_rejected() {
        let id = IdentificationId::generate(Timestamp::from_millis(5));
        assert!(UserId::parse(id.as_str()).is_err());
        assert!(UserId::parse("user_").is_err());
        assert!(UserId::parse("user_0000000000000000000000000u").is_err());
        assert!(UserId::parse("user_8zzzzzzzzzzzzzzzzzzzzzzzzz").is_err());
        assert!(UserId::parse("").is_err());
    }
}
