//! Which users to list or count, and in what order.
//!
//! Filtering and ordering are domain concepts: the SQL stores implement them
//! (and the storage contract suite checks they agree with
//! [`OrderField::value_of`]).

use crate::error::{FieldViolation, reason};
use crate::id::UserId;
use crate::time::Timestamp;
use crate::user::User;
use crate::values::Phone;

/// Most values one filter list may hold.
pub const MAX_FILTER_VALUES: usize = 100;
/// Longest `query` substring, in characters.
pub const MAX_QUERY_CHARS: usize = 256;

/// Which users to list or count. Lists match any of their values; set
/// conditions all apply. Values are already normalized as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub user_ids: Vec<UserId>,
    /// Lowercased email addresses.
    pub email_addresses: Vec<String>,
    pub phone_numbers: Vec<Phone>,
    /// Lowercased usernames.
    pub usernames: Vec<String>,
    pub external_ids: Vec<String>,
    /// Lowercased substring.
    pub query: Option<String>,
    pub banned: Option<bool>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

/// A field users can be ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderField {
    CreatedAt,
    UpdatedAt,
    LastSignInAt,
    EmailAddress,
    Username,
    FirstName,
    LastName,
}

impl OrderField {
    const ALL: [Self; 7] = [
        Self::CreatedAt,
        Self::UpdatedAt,
        Self::LastSignInAt,
        Self::EmailAddress,
        Self::Username,
        Self::FirstName,
        Self::LastName,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::LastSignInAt => "last_sign_in_at",
            Self::EmailAddress => "email_address",
            Self::Username => "username",
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
        }
    }

    /// The user's sort value, exactly as the SQL sort expression computes
    /// it (see [`crate::sql`]): absent values sort as `0` or `""`.
    pub fn value_of(self, user: &User) -> SortValue {
        let text = |s: Option<String>| SortValue::Text(s.unwrap_or_default());
        match self {
            Self::CreatedAt => SortValue::Int(user.created_at.as_millis()),
            Self::UpdatedAt => SortValue::Int(user.updated_at.as_millis()),
            Self::LastSignInAt => {
                SortValue::Int(user.last_sign_in_at.map_or(0, Timestamp::as_millis))
            }
            Self::EmailAddress => text(user.primary_email().map(|e| e.email.normalized())),
            Self::Username => text(
                user.username
                    .as_ref()
                    .map(crate::values::Username::normalized),
            ),
            Self::FirstName => text(user.first_name.as_ref().map(|n| n.as_str().to_owned())),
            Self::LastName => text(user.last_name.as_ref().map(|n| n.as_str().to_owned())),
        }
    }
}

/// An ordering: a field and a direction; ties are broken by id in the same
/// direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderBy {
    pub field: OrderField,
    pub descending: bool,
}

impl Default for OrderBy {
    /// Newest first, as Clerk lists.
    fn default() -> Self {
        Self {
            field: OrderField::CreatedAt,
            descending: true,
        }
    }
}

impl OrderBy {
    /// Parses `field`, `field asc|desc`, `-field` or `+field`; empty is the
    /// default order.
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        let (name, descending) = if let Some(rest) = text.strip_prefix('-') {
            (rest, true)
        } else if let Some(rest) = text.strip_prefix('+') {
            (rest, false)
        } else {
            match text.split_once(char::is_whitespace) {
                Some((name, dir)) if dir.trim().eq_ignore_ascii_case("desc") => (name, true),
                Some((name, dir)) if dir.trim().eq_ignore_ascii_case("asc") => (name, false),
                Some(_) => return Err(bad_order()),
                None => (text, false),
            }
        };
        let field = OrderField::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(bad_order)?;
        Ok(Self { field, descending })
    }
}

fn bad_order() -> FieldViolation {
    let names: Vec<&str> = OrderField::ALL.iter().map(|f| f.name()).collect();
    FieldViolation::new(
        "",
        reason::FORM_PARAM_VALUE_INVALID,
        format!(
            "order_by must be one of {} with an optional ' asc' or ' desc'",
            names.join(", ")
        ),
    )
}

/// A value users are sorted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortValue {
    Int(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_forms() {
        assert_eq!(OrderBy::parse("").unwrap(), OrderBy::default());
        assert_eq!(
            OrderBy::parse("-username").unwrap(),
            OrderBy {
                field: OrderField::Username,
                descending: true
            }
        );
        assert_eq!(
            OrderBy::parse("first_name DESC").unwrap(),
            OrderBy {
                field: OrderField::FirstName,
                descending: true
            }
        );
        assert_eq!(
            OrderBy::parse("email_address").unwrap(),
            OrderBy {
                field: OrderField::EmailAddress,
                descending: false
            }
        );
        assert!(OrderBy::parse("password").is_err());
        assert!(OrderBy::parse("created_at sideways").is_err());
    }
}
