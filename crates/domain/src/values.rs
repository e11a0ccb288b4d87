//! Validated values. Each has a private field and a `parse` that is the only
//! way to build it, so a value in the domain is valid by construction.
//!
//! `parse` errors are [`FieldViolation`]s with an empty field; the caller
//! nests them under the request path (see [`crate::Violations::check`]).

use std::fmt;

use crate::error::{FieldViolation, reason};

fn violation(reason: &'static str, description: impl Into<String>) -> FieldViolation {
    FieldViolation::new("", reason, description)
}

fn check_length(text: &str, max: usize, what: &str) -> Result<(), FieldViolation> {
    if text.chars().count() > max {
        return Err(violation(
            reason::FORM_PARAM_MAX_LENGTH_EXCEEDED,
            format!("{what} is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn check_no_control(text: &str, what: &str) -> Result<(), FieldViolation> {
    if text.chars().any(char::is_control) {
        return Err(violation(
            reason::FORM_PARAM_FORMAT_INVALID,
            format!("{what} contains control characters"),
        ));
    }
    Ok(())
}

macro_rules! string_value {
    ($name:ident) => {
        impl $name {
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

/// An email address: a practical subset of RFC 5322 (dot-atom local part,
/// DNS host name domain), with the domain lowercased.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);
string_value!(Email);

impl Email {
    /// Longest address deliverable over SMTP (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let text = text.trim();
        let invalid = |why: &str| {
            violation(
                reason::FORM_PARAM_FORMAT_INVALID,
                format!("not a valid email address: {why}"),
            )
        };
        if text.is_empty() {
            return Err(violation(
                reason::FORM_PARAM_MISSING,
                "email address is required",
            ));
        }
        if text.len() > Self::MAX_LEN {
            return Err(violation(
                reason::FORM_PARAM_MAX_LENGTH_EXCEEDED,
                "email address is longer than 254 characters",
            ));
        }
        let (local, domain) = text.rsplit_once('@').ok_or_else(|| invalid("no @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before @ must be 1-64 characters"));
        }
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        if !local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
        {
            return Err(invalid(
                "the part before @ has a character or dot that is not allowed",
            ));
        }
        let domain = domain.to_ascii_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(invalid("the domain is not a valid host name"));
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid("the domain is not a valid host name"));
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// An address read back from storage, which holds only what [`parse`]
    /// produced. Checked for an address's shape (a non-empty local part,
    /// `@`, a domain, no spaces, at most [`Self::MAX_LEN`] bytes) but not
    /// parsed again: reading a user should not redo every write's work.
    ///
    /// [`parse`]: Self::parse
    pub fn from_stored(text: &str) -> Option<Self> {
        let (local, domain) = text.rsplit_once('@')?;
        let shaped = !local.is_empty()
            && !domain.is_empty()
            && text.len() <= Self::MAX_LEN
            && !text.contains(char::is_whitespace);
        shaped.then(|| Self(text.to_owned()))
    }

    /// The form uniqueness is decided on: the whole address lowercased.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A phone number in E.164 form (`+14155550101`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phone(String);
string_value!(Phone);

impl Phone {
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let text = text.trim();
        if text.is_empty() {
            return Err(violation(
                reason::FORM_PARAM_MISSING,
                "phone number is required",
            ));
        }
        if text.len() > 64 {
            return Err(violation(
                reason::FORM_PARAM_MAX_LENGTH_EXCEEDED,
                "phone number is longer than 64 characters",
            ));
        }
        let invalid = || {
            violation(
                reason::FORM_PARAM_FORMAT_INVALID,
                "not a valid phone number: give it with + and the country code, for example +14155550101",
            )
        };
        if !text.starts_with('+') {
            return Err(invalid());
        }
        let number = phonenumber::parse(None, text).map_err(|_| invalid())?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid());
        }
        Ok(Self(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// A number read back from storage, which holds only what [`parse`]
    /// produced. Checked for E.164's shape (`+` and 4 to 15 digits) but not
    /// against the numbering plan again: that check costs more than the
    /// rest of reading a user.
    ///
    /// [`parse`]: Self::parse
    pub fn from_stored(text: &str) -> Option<Self> {
        let digits = text.strip_prefix('+')?;
        ((4..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(text.to_owned()))
    }
}

/// A username: 4-64 ASCII letters, digits, `_`, `-` or `.`. It can never
/// contain `@`, so it is never mistaken for an email address at sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);
string_value!(Username);

impl Username {
    pub const MIN_LEN: usize = 4;
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let text = text.trim();
        if !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(violation(
                reason::FORM_USERNAME_INVALID_CHARACTER,
                "username may contain only letters, digits, '_', '-' and '.'",
            ));
        }
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&text.len()) {
            return Err(violation(
                reason::FORM_USERNAME_INVALID_LENGTH,
                "username must be 4-64 characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The form uniqueness is decided on.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A first or last name: up to 256 characters, no control characters,
/// surrounding white space removed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(String);
string_value!(Name);

impl Name {
    pub const MAX_LEN: usize = 256;

    /// Parses a name; an empty (or blank) name is `None`: no name.
    pub fn parse(text: &str) -> Result<Option<Self>, FieldViolation> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        check_length(text, Self::MAX_LEN, "name")?;
        check_no_control(text, "name")?;
        Ok(Some(Self(text.to_owned())))
    }
}

/// The caller's own id for a user: up to 255 characters, no white space or
/// control characters. Compared exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExternalId(String);
string_value!(ExternalId);

impl ExternalId {
    pub const MAX_LEN: usize = 255;

    /// Parses an external id; empty is `None`.
    pub fn parse(text: &str) -> Result<Option<Self>, FieldViolation> {
        if text.is_empty() {
            return Ok(None);
        }
        check_length(text, Self::MAX_LEN, "external id")?;
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(violation(
                reason::FORM_PARAM_FORMAT_INVALID,
                "external id may not contain white space",
            ));
        }
        Ok(Some(Self(text.to_owned())))
    }
}

/// A BCP 47 language tag such as `en` or `pt-BR`: a 2-3 letter language and
/// up to 35 characters of alphanumeric subtags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Locale(String);
string_value!(Locale);

impl Locale {
    /// Parses a locale; empty is `None`.
    pub fn parse(text: &str) -> Result<Option<Self>, FieldViolation> {
        if text.is_empty() {
            return Ok(None);
        }
        let mut parts = text.split(['-', '_']);
        let language_ok = parts.next().is_some_and(|l| {
            (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic())
        });
        let subtags_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if text.len() > 35 || !language_ok || !subtags_ok {
            return Err(violation(
                reason::FORM_PARAM_FORMAT_INVALID,
                "not a BCP 47 language tag such as en-US",
            ));
        }
        Ok(Some(Self(text.replace('_', "-"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_lowercases_domain_only() {
        let e = Email::parse(" Ada.Lovelace+x@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Ada.Lovelace+x@example.com");
        assert_eq!(e.normalized(), "ada.lovelace+x@example.com");
    }

    #[test]
    fn email_rejects_malformed() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a..b@example.com",
            ".a@example.com",
            "a@-x.com",
            "a@x-.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@example.123",
            "a@@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
    }

    #[test]
    fn phone_is_stored_as_e164() {
        assert_eq!(
            Phone::parse("+1 (415) 555-0101").unwrap().as_str(),
            "+14155550101"
        );
        assert_eq!(
            Phone::parse("+44 20 7946 0958").unwrap().as_str(),
            "+442079460958"
        );
        assert!(Phone::parse("4155550101").is_err());
        assert!(Phone::parse("+1 123").is_err());
        assert!(Phone::parse("+999 1234567").is_err());
    }

    #[test]
    fn stored_emails_are_read_back_by_shape() {
        let parsed = Email::parse("Ada.Lovelace@Example.COM").unwrap();
        assert_eq!(Email::from_stored(parsed.as_str()), Some(parsed));
        let long = format!("{}@example.com", "a".repeat(250));
        for corrupt in [
            "",
            "@",
            "ada@",
            "@example.com",
            "ada example.com",
            "a da@x.io",
            &long,
        ] {
            assert_eq!(Email::from_stored(corrupt), None, "{corrupt:?}");
        }
    }

    #[test]
    fn stored_phones_are_read_back_by_shape() {
        let parsed = Phone::parse("+44 20 7946 0958").unwrap();
        assert_eq!(Phone::from_stored(parsed.as_str()), Some(parsed));
        for corrupt in [
            "",
            "+",
            "442079460958",
            "+44 20",
            "+1234567890123456",
            "+12a4567",
        ] {
            assert_eq!(Phone::from_stored(corrupt), None, "{corrupt:?}");
        }
    }

    #[test]
    fn parsers_never_panic_on_hostile_input() {
        // A small xorshift generator keeps the inputs reproducible.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = "+0123456789 ()-.#*xext=;@a\u{0}\u{feff}é\u{1F600}"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = usize::try_from(next() % 40).unwrap();
            let mut text: String = (0..len)
                .map(|_| alphabet[usize::try_from(next() % alphabet.len() as u64).unwrap()])
                .collect();
            // Half start like a phone number, to get past the first check.
            if next() % 2 == 0 {
                text.insert(0, '+');
            }
            let _ = Phone::parse(&text);
            let _ = Email::parse(&text);
            let _ = Username::parse(&text);
            let _ = Locale::parse(&text);
        }
    }

    #[test]
    fn username_rules() {
        assert!(Username::parse("ada_l.love-lace").is_ok());
        assert_eq!(
            Username::parse("abc").unwrap_err().reason,
            reason::FORM_USERNAME_INVALID_LENGTH
        );
        assert_eq!(
            Username::parse(&"a".repeat(65)).unwrap_err().reason,
            reason::FORM_USERNAME_INVALID_LENGTH
        );
        assert_eq!(
            Username::parse("ada@home").unwrap_err().reason,
            reason::FORM_USERNAME_INVALID_CHARACTER
        );
        assert_eq!(Username::parse("AdaL").unwrap().normalized(), "adal");
    }

    #[test]
    fn names_ids_locales() {
        assert_eq!(Name::parse("  ").unwrap(), None);
        assert!(Name::parse(&"x".repeat(257)).is_err());
        assert!(Name::parse("a\u{0}b").is_err());
        assert!(ExternalId::parse("has space").is_err());
        assert!(ExternalId::parse(&"x".repeat(256)).is_err());
        assert_eq!(Locale::parse("pt_BR").unwrap().unwrap().as_str(), "pt-BR");
        assert!(Locale::parse("english!").is_err());
    }
}
