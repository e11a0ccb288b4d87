//! Listing users: keyset cursors and page tokens over the domain's
//! filters and orderings.
//!
//! Pages are keyset pages: a page token carries the sort value and id of the
//! last user of the previous page, and the next page starts strictly after
//! that pair. Tokens are opaque to clients and bound to the query that made
//! them: a checksum over the token and the query's filter and order rejects
//! tokens that were altered or replayed against another query.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use roster_domain::query::{OrderBy, SortValue, UserFilter};
use roster_domain::{FieldViolation, User, reason};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: usize = 10;
/// Largest page size; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 500;

/// Where a page starts: after this sort value and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub value: SortValue,
    pub id: String,
}

/// One request for a page of users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: UserFilter,
    pub order: OrderBy,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// A page of users and the token of the next one.
#[derive(Clone, Debug)]
pub struct Page {
    pub users: Vec<User>,
    pub next_page_token: Option<String>,
}

/// The number of rows a request's `page_size` asks for: the default for
/// 0, at most [`MAX_PAGE_SIZE`]; a negative size is recorded in
/// `violations`.
pub fn page_limit(page_size: i32, violations: &mut Vec<FieldViolation>) -> usize {
    match usize::try_from(page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
        Err(_) => {
            violations.push(FieldViolation::new(
                "page_size",
                reason::FORM_PARAM_VALUE_INVALID,
                "page_size must not be negative",
            ));
            DEFAULT_PAGE_SIZE
        }
    }
}

fn token_error() -> FieldViolation {
    FieldViolation::new(
        "",
        reason::PAGE_TOKEN_INVALID,
        "page token is malformed or belongs to another filter or order",
    )
}

impl ListQuery {
    /// Builds a query from a request's page size and token.
    pub fn new(
        filter: UserFilter,
        order: OrderBy,
        page_size: i32,
        page_token: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let limit = page_limit(page_size, &mut violations);
        let mut query = Self {
            filter,
            order,
            after: None,
            limit,
        };
        if !page_token.is_empty() {
            match query.decode_token(page_token) {
                Some(cursor) => query.after = Some(cursor),
                None => violations.push(token_error().nested("page_token")),
            }
        }
        if violations.is_empty() {
            Ok(query)
        } else {
            Err(violations)
        }
    }

    fn checksum(&self, payload: &[u8]) -> [u8; 12] {
        let mut hasher = Sha256::new();
        hasher.update(format!("{:?}|{:?}|", self.filter, self.order).as_bytes());
        hasher.update(payload);
        let digest = hasher.finalize();
        let mut out = [0u8; 12];
        out.copy_from_slice(&digest[..12]);
        out
    }

    /// The token of the page that starts after `last`.
    pub fn next_token(&self, last: &User) -> String {
        let value = match self.order.field.value_of(last) {
            SortValue::Int(i) => json!({ "i": i }),
            SortValue::Text(t) => json!({ "t": t }),
        };
        let payload = json!({ "v": 1, "k": value, "id": last.id.as_str() }).to_string();
        let checksum = self.checksum(payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(checksum)
        )
    }

    fn decode_token(&self, token: &str) -> Option<Cursor> {
        let (payload, checksum) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let checksum = URL_SAFE_NO_PAD.decode(checksum).ok()?;
        if checksum != self.checksum(&payload) {
            return None;
        }
        let value: Value = serde_json::from_slice(&payload).ok()?;
        if value.get("v")?.as_i64()? != 1 {
            return None;
        }
        let key = value.get("k")?;
        let sort = match (
            key.get("i").and_then(Value::as_i64),
            key.get("t").and_then(Value::as_str),
        ) {
            (Some(i), None) => SortValue::Int(i),
            (None, Some(t)) => SortValue::Text(t.to_owned()),
            _ => return None,
        };
        let id = value.get("id")?.as_str()?.to_owned();
        Some(Cursor { value: sort, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_domain::query::OrderBy;
    use roster_domain::{Email, NewIdentifiers, NewUser, Timestamp};

    fn user() -> User {
        User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: vec![Email::parse("A@example.com").unwrap()],
                    verified: true,
                    ..NewIdentifiers::default()
                },
                ..NewUser::default()
            },
            Timestamp::from_millis(42),
        )
        .unwrap()
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering_and_other_queries() {
        let q = ListQuery::new(
            UserFilter::default(),
            OrderBy::parse("email_address").unwrap(),
            5,
            "",
        )
        .unwrap();
        let u = user();
        let token = q.next_token(&u);
        let next = ListQuery::new(UserFilter::default(), q.order, 5, &token).unwrap();
        assert_eq!(
            next.after,
            Some(Cursor {
                value: SortValue::Text("a@example.com".into()),
                id: u.id.to_string()
            })
        );

        let other_filter = UserFilter {
            banned: Some(true),
            ..UserFilter::default()
        };
        assert!(ListQuery::new(other_filter, q.order, 5, &token).is_err());
        assert!(ListQuery::new(UserFilter::default(), OrderBy::default(), 5, &token).is_err());
        let mut tampered = token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert!(
            ListQuery::new(
                UserFilter::default(),
                q.order,
                5,
                &String::from_utf8(tampered).unwrap()
            )
            .is_err()
        );
        assert!(ListQuery::new(UserFilter::default(), q.order, 5, "garbage").is_err());
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(
            ListQuery::new(UserFilter::default(), OrderBy::default(), 0, "")
                .unwrap()
                .limit,
            10
        );
        assert_eq!(
            ListQuery::new(UserFilter::default(), OrderBy::default(), 9999, "")
                .unwrap()
                .limit,
            500
        );
        assert!(ListQuery::new(UserFilter::default(), OrderBy::default(), -1, "").is_err());
    }
}
