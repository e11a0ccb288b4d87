//! Rows as both SQL schemas store them, and their conversion to and from
//! the domain. Backends only move these between the database and Rust; the
//! mapping itself lives here once.

use roster_domain::{
    CodeHash, Email, EmailAddress, ExternalId, IdentificationId, Locale, Lockout, Metadata, Name,
    PasswordHash, PendingCode, Phone, PhoneNumber, ProfileImage, SendWindow, Timestamp, User,
    UserId, UserRecord, Username, Verification, VerificationStatus, VerificationStrategy,
};

use std::borrow::Cow;

use crate::StorageError;
use crate::sql::{Bind, Dialect};

/// A row of `users`.
#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: String,
    pub external_id: Option<String>,
    /// Empty when absent, so it sorts without NULL handling.
    pub first_name: String,
    pub last_name: String,
    pub username: Option<String>,
    pub locale: Option<String>,
    pub primary_email_address_id: Option<String>,
    pub primary_phone_number_id: Option<String>,
    pub password_hash: Option<String>,
    pub public_metadata: String,
    pub private_metadata: String,
    pub unsafe_metadata: String,
    pub banned: bool,
    pub locked: bool,
    /// The profile image's file name (`img_….png`).
    pub image: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_sign_in_at: Option<i64>,
    /// Start of the window the user's code sends count in.
    pub code_window_start: i64,
    /// Codes sent to the user's identifiers in that window.
    pub code_window_sends: i64,
    /// Failed sign-in attempts since the last success or lockout.
    pub failed_sign_ins: i64,
    /// When the current lockout ends.
    pub locked_until: Option<i64>,
}

/// A row of `email_addresses`.
#[derive(Clone, Debug)]
pub struct EmailRow {
    pub id: String,
    pub user_id: String,
    pub email_address: String,
    pub verification: VerificationColumns,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A row of `phone_numbers`.
#[derive(Clone, Debug)]
pub struct PhoneRow {
    pub id: String,
    pub user_id: String,
    pub phone_number: String,
    pub verification: VerificationColumns,
    pub reserved_for_second_factor: bool,
    pub default_second_factor: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The verification columns shared by both identifier tables; their texts
/// owned (`String`), or borrowed from the JSON a user was read with.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VerificationColumns<S = String> {
    pub status: S,
    pub strategy: Option<S>,
    pub attempts: i64,
    pub expire_at: Option<i64>,
    /// Keyed hash of the outstanding code.
    pub code_hash: Option<S>,
    /// When the outstanding code was sent.
    pub sent_at: Option<i64>,
    /// Start of the window the identifier's code sends count in.
    pub window_start: i64,
    /// Codes sent to the identifier in that window.
    pub window_sends: i64,
}

/// How many columns [`VerificationColumns`] spans.
pub const VERIFICATION_COLUMN_COUNT: usize = 8;

fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::internal(format!("stored {what} is invalid: {value:?}"))
}

fn invalid_json(what: &str, error: &serde_json::Error) -> StorageError {
    StorageError::internal(format!("stored {what} are invalid: {error}"))
}

fn metadata(text: &str) -> Result<Metadata, StorageError> {
    Metadata::from_json_text(text).map_err(StorageError::internal)
}

fn optional<T, E>(
    value: Option<&String>,
    parse: impl Fn(&str) -> Result<Option<T>, E>,
    what: &str,
) -> Result<Option<T>, StorageError> {
    match value {
        None => Ok(None),
        Some(v) => parse(v).map_err(|_| corrupt(what, v)),
    }
}

fn identification_id(value: &str) -> Result<IdentificationId, StorageError> {
    IdentificationId::parse(value).map_err(|_| corrupt("identification id", value))
}

impl VerificationColumns {
    pub(crate) fn from_domain(v: &Verification) -> Self {
        Self {
            status: v.status.as_str().to_owned(),
            strategy: v.strategy.map(|s| s.as_str().to_owned()),
            attempts: i64::from(v.attempts),
            expire_at: v.expire_at.map(Timestamp::as_millis),
            code_hash: v.code.as_ref().map(|c| c.hash.as_str().to_owned()),
            sent_at: v.code.as_ref().map(|c| c.sent_at.as_millis()),
            window_start: v.sends.started_at.as_millis(),
            window_sends: i64::from(v.sends.count),
        }
    }

    fn binds(&self) -> [Bind; VERIFICATION_COLUMN_COUNT] {
        [
            Bind::Text(self.status.clone()),
            opt_text(self.strategy.as_ref()),
            Bind::Int(self.attempts),
            opt_int(self.expire_at),
            opt_text(self.code_hash.as_ref()),
            opt_int(self.sent_at),
            Bind::Int(self.window_start),
            Bind::Int(self.window_sends),
        ]
    }
}

impl<S: AsRef<str>> VerificationColumns<S> {
    pub(crate) fn to_domain(&self) -> Result<Verification, StorageError> {
        let status = self.status.as_ref();
        Ok(Verification {
            status: VerificationStatus::from_name(status)
                .ok_or_else(|| corrupt("verification status", status))?,
            strategy: match &self.strategy {
                None => None,
                Some(s) => Some(
                    VerificationStrategy::from_name(s.as_ref())
                        .ok_or_else(|| corrupt("verification strategy", s.as_ref()))?,
                ),
            },
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            expire_at: self.expire_at.map(Timestamp::from_millis),
            code: match (&self.code_hash, self.sent_at) {
                (Some(hash), Some(sent_at)) => Some(PendingCode {
                    hash: CodeHash::from_stored(hash.as_ref().to_owned()),
                    sent_at: Timestamp::from_millis(sent_at),
                }),
                _ => None,
            },
            sends: send_window(self.window_start, self.window_sends),
        })
    }
}

fn send_window(start: i64, sends: i64) -> SendWindow {
    SendWindow {
        started_at: Timestamp::from_millis(start),
        count: u32::try_from(sends).unwrap_or(u32::MAX),
    }
}

/// A nullable text value: SQL NULL is typed, so PostgreSQL infers it.
fn opt_text(value: Option<&String>) -> Bind {
    value.map_or(Bind::NullText, |v| Bind::Text(v.clone()))
}

fn opt_int(value: Option<i64>) -> Bind {
    value.map_or(Bind::NullInt, Bind::Int)
}

impl UserRow {
    pub fn from_record(record: &UserRecord) -> Self {
        let u = &record.user;
        Self {
            id: u.id.to_string(),
            external_id: u.external_id.as_ref().map(ToString::to_string),
            first_name: u
                .first_name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            last_name: u
                .last_name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            username: u.username.as_ref().map(ToString::to_string),
            locale: u.locale.as_ref().map(ToString::to_string),
            primary_email_address_id: u.primary_email_address_id.as_ref().map(ToString::to_string),
            primary_phone_number_id: u.primary_phone_number_id.as_ref().map(ToString::to_string),
            password_hash: record.password_hash().map(|h| h.as_str().to_owned()),
            public_metadata: u.public_metadata.to_json_text(),
            private_metadata: u.private_metadata.to_json_text(),
            unsafe_metadata: u.unsafe_metadata.to_json_text(),
            banned: u.banned,
            locked: u.locked,
            image: u.image.as_ref().map(ProfileImage::file_name),
            created_at: u.created_at.as_millis(),
            updated_at: u.updated_at.as_millis(),
            last_sign_in_at: u.last_sign_in_at.map(Timestamp::as_millis),
            code_window_start: record.code_sends.started_at.as_millis(),
            code_window_sends: i64::from(record.code_sends.count),
            failed_sign_ins: i64::from(record.lockout.failed_attempts),
            locked_until: record.lockout.locked_until.map(Timestamp::as_millis),
        }
    }

    /// Values for [`crate::sql::user_write_columns`] of `dialect`, in
    /// order. The derived sort, uniqueness and search columns come from
    /// `user`.
    pub fn binds(&self, user: &User, dialect: Dialect) -> Vec<Bind> {
        let search_text = user.search_text();
        let search_keys = (dialect == Dialect::Postgres)
            .then(|| Bind::Ints(crate::search::index_keys(&search_text)));
        let mut binds = vec![
            Bind::Text(self.id.clone()),
            opt_text(self.external_id.as_ref()),
            Bind::Text(self.first_name.clone()),
            Bind::Text(self.last_name.clone()),
            opt_text(self.username.as_ref()),
            opt_text(user.username.as_ref().map(Username::normalized).as_ref()),
            opt_text(self.locale.as_ref()),
            opt_text(self.primary_email_address_id.as_ref()),
            opt_text(self.primary_phone_number_id.as_ref()),
            Bind::Text(
                user.primary_email()
                    .map(|e| e.email.normalized())
                    .unwrap_or_default(),
            ),
            opt_text(self.password_hash.as_ref()),
            Bind::Json(self.public_metadata.clone()),
            Bind::Json(self.private_metadata.clone()),
            Bind::Json(self.unsafe_metadata.clone()),
            Bind::Bool(self.banned),
            Bind::Bool(self.locked),
            opt_text(self.image.as_ref()),
            Bind::Int(self.created_at),
            Bind::Int(self.updated_at),
            opt_int(self.last_sign_in_at),
            Bind::Text(search_text),
            Bind::Int(self.code_window_start),
            Bind::Int(self.code_window_sends),
            Bind::Int(self.failed_sign_ins),
            opt_int(self.locked_until),
            email_rows(user),
            phone_rows(user),
        ];
        binds.extend(search_keys);
        binds
    }

    /// Joins the row with its identifiers, oldest first, into a record.
    fn into_record(
        self,
        email_addresses: Vec<EmailAddress>,
        phone_numbers: Vec<PhoneNumber>,
    ) -> Result<UserRecord, StorageError> {
        let name = |text: &str| Name::parse(text).map_err(|_| corrupt("name", text));
        let user = User {
            id: UserId::parse(&self.id).map_err(|_| corrupt("user id", &self.id))?,
            external_id: optional(self.external_id.as_ref(), ExternalId::parse, "external id")?,
            first_name: name(&self.first_name)?,
            last_name: name(&self.last_name)?,
            username: optional(
                self.username.as_ref(),
                |u| Username::parse(u).map(Some),
                "username",
            )?,
            locale: optional(self.locale.as_ref(), Locale::parse, "locale")?,
            primary_email_address_id: self
                .primary_email_address_id
                .as_deref()
                .map(identification_id)
                .transpose()?,
            primary_phone_number_id: self
                .primary_phone_number_id
                .as_deref()
                .map(identification_id)
                .transpose()?,
            email_addresses,
            phone_numbers,
            password_enabled: self.password_hash.is_some(),
            public_metadata: metadata(&self.public_metadata)?,
            private_metadata: metadata(&self.private_metadata)?,
            unsafe_metadata: metadata(&self.unsafe_metadata)?,
            banned: self.banned,
            locked: self.locked,
            image: self
                .image
                .as_deref()
                .map(|name| {
                    ProfileImage::parse_file_name(name).ok_or_else(|| corrupt("image", name))
                })
                .transpose()?,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            last_sign_in_at: self.last_sign_in_at.map(Timestamp::from_millis),
        };
        let mut record = UserRecord::new(user, self.password_hash.map(PasswordHash::from_stored));
        record.code_sends = send_window(self.code_window_start, self.code_window_sends);
        record.lockout = Lockout {
            failed_attempts: u32::try_from(self.failed_sign_ins).unwrap_or(u32::MAX),
            locked_until: self.locked_until.map(Timestamp::from_millis),
        };
        Ok(record)
    }
}

impl EmailRow {
    pub fn from_domain(user_id: &UserId, e: &EmailAddress) -> Self {
        Self {
            id: e.id.to_string(),
            user_id: user_id.to_string(),
            email_address: e.email.to_string(),
            verification: VerificationColumns::from_domain(&e.verification),
            created_at: e.created_at.as_millis(),
            updated_at: e.updated_at.as_millis(),
        }
    }

    /// Values for [`crate::sql::EMAIL_WRITE_COLUMNS`], in order.
    pub fn binds(&self) -> Vec<Bind> {
        let mut binds = vec![
            Bind::Text(self.id.clone()),
            Bind::Text(self.user_id.clone()),
            Bind::Text(self.email_address.clone()),
            Bind::Text(self.email_address.to_lowercase()),
        ];
        binds.extend(self.verification.binds());
        binds.extend([Bind::Int(self.created_at), Bind::Int(self.updated_at)]);
        binds
    }
}

impl PhoneRow {
    pub fn from_domain(user_id: &UserId, p: &PhoneNumber) -> Self {
        Self {
            id: p.id.to_string(),
            user_id: user_id.to_string(),
            phone_number: p.phone.to_string(),
            verification: VerificationColumns::from_domain(&p.verification),
            reserved_for_second_factor: p.reserved_for_second_factor,
            default_second_factor: p.default_second_factor,
            created_at: p.created_at.as_millis(),
            updated_at: p.updated_at.as_millis(),
        }
    }

    /// Values for [`crate::sql::PHONE_WRITE_COLUMNS`], in order.
    pub fn binds(&self) -> Vec<Bind> {
        let mut binds = vec![
            Bind::Text(self.id.clone()),
            Bind::Text(self.user_id.clone()),
            Bind::Text(self.phone_number.clone()),
        ];
        binds.extend(self.verification.binds());
        binds.extend([
            Bind::Bool(self.reserved_for_second_factor),
            Bind::Bool(self.default_second_factor),
            Bind::Int(self.created_at),
            Bind::Int(self.updated_at),
        ]);
        binds
    }
}

/// [`VerificationColumns`] as a JSON array, in their order: the shape of
/// the verification in [`StoredUser`]'s rows.
struct VerificationArray<'a>(&'a VerificationColumns);

impl serde::Serialize for VerificationArray<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple as _;
        let v = self.0;
        let mut t = serializer.serialize_tuple(VERIFICATION_COLUMN_COUNT)?;
        t.serialize_element(&v.status)?;
        t.serialize_element(&v.strategy)?;
        t.serialize_element(&v.attempts)?;
        t.serialize_element(&v.expire_at)?;
        t.serialize_element(&v.code_hash)?;
        t.serialize_element(&v.sent_at)?;
        t.serialize_element(&v.window_start)?;
        t.serialize_element(&v.window_sends)?;
        t.end()
    }
}

/// JSON of rows made of strings, numbers and options, which serialize
/// without fail; were one to fail, NULL, which is read from the
/// identifier tables instead.
fn json_rows(rows: &impl serde::Serialize) -> Bind {
    serde_json::to_string(rows).map_or(Bind::NullText, Bind::Text)
}

/// `user`'s email addresses as [`StoredUser::emails`] holds them: the
/// rows of `email_addresses`, as [`EmailJson`].
fn email_rows(user: &User) -> Bind {
    #[derive(serde::Serialize)]
    struct Row<'a>(&'a str, &'a str, VerificationArray<'a>, i64, i64);
    let rows: Vec<EmailRow> = user
        .email_addresses
        .iter()
        .map(|e| EmailRow::from_domain(&user.id, e))
        .collect();
    let json: Vec<Row<'_>> = rows
        .iter()
        .map(|r| {
            Row(
                &r.id,
                &r.email_address,
                VerificationArray(&r.verification),
                r.created_at,
                r.updated_at,
            )
        })
        .collect();
    json_rows(&json)
}

/// `user`'s phone numbers as [`StoredUser::phones`] holds them: the rows
/// of `phone_numbers`, as [`PhoneJson`].
fn phone_rows(user: &User) -> Bind {
    #[derive(serde::Serialize)]
    struct Row<'a>(
        &'a str,
        &'a str,
        VerificationArray<'a>,
        bool,
        bool,
        i64,
        i64,
    );
    let rows: Vec<PhoneRow> = user
        .phone_numbers
        .iter()
        .map(|p| PhoneRow::from_domain(&user.id, p))
        .collect();
    let json: Vec<Row<'_>> = rows
        .iter()
        .map(|r| {
            Row(
                &r.id,
                &r.phone_number,
                VerificationArray(&r.verification),
                r.reserved_for_second_factor,
                r.default_second_factor,
                r.created_at,
                r.updated_at,
            )
        })
        .collect();
    json_rows(&json)
}

/// A user row as read with [`crate::sql::user_columns`]: its email
/// addresses and phone numbers are kept on it as JSON arrays of rows
/// ([`UserRow::binds`] writes them with every change to the user, beside
/// the identifier tables that settle uniqueness), so a user is one row.
#[derive(Clone, Debug)]
pub struct StoredUser {
    pub row: UserRow,
    /// `[[id, email_address, [verification…], created_at, updated_at], …]`
    pub emails: String,
    /// `[[id, phone_number, [verification…], reserved_for_second_factor,
    /// default_second_factor, created_at, updated_at], …]`
    pub phones: String,
}

/// One element of [`StoredUser::emails`], as [`email_rows`] writes it:
/// id, address, verification (an array in [`VerificationColumns`] order),
/// created, updated.
///
/// Its texts are borrowed from the JSON (the id and address where they
/// hold no escapes; the verification's status, strategy and hex code hash
/// never need any): the domain values copy them once, as they check them.
#[derive(serde::Deserialize)]
struct EmailJson<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] VerificationColumns<&'a str>,
    i64,
    i64,
);

impl EmailJson<'_> {
    fn to_domain(&self) -> Result<EmailAddress, StorageError> {
        let Self(id, email, verification, created_at, updated_at) = self;
        Ok(EmailAddress {
            id: identification_id(id)?,
            email: Email::from_stored(email).ok_or_else(|| corrupt("email address", email))?,
            verification: verification.to_domain()?,
            created_at: Timestamp::from_millis(*created_at),
            updated_at: Timestamp::from_millis(*updated_at),
        })
    }
}

/// One element of [`StoredUser::phones`], as [`phone_rows`] writes it:
/// id, number, verification, the two second-factor flags, created,
/// updated.
#[derive(serde::Deserialize)]
struct PhoneJson<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] VerificationColumns<&'a str>,
    Flag,
    Flag,
    i64,
    i64,
);

impl PhoneJson<'_> {
    fn to_domain(&self) -> Result<PhoneNumber, StorageError> {
        let Self(id, phone, verification, reserved, default, created_at, updated_at) = self;
        Ok(PhoneNumber {
            id: identification_id(id)?,
            phone: Phone::from_stored(phone).ok_or_else(|| corrupt("phone number", phone))?,
            verification: verification.to_domain()?,
            reserved_for_second_factor: reserved.get(),
            default_second_factor: default.get(),
            created_at: Timestamp::from_millis(*created_at),
            updated_at: Timestamp::from_millis(*updated_at),
        })
    }
}

/// A boolean column in JSON: `true` as the store writes it, or `1` as
/// SQLite's JSON functions gather it (`migrations/sqlite/0011`, and reads
/// of a row without its arrays).
///
/// Read by a visitor that takes either, rather than an untagged enum,
/// which buffers the value and builds an error for each shape it is not.
struct Flag(bool);

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a boolean or an integer")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Flag, E> {
                Ok(Flag(v != 0))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Flag, E> {
                Ok(Flag(v != 0))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Flag {
    fn get(&self) -> bool {
        self.0
    }
}

impl StoredUser {
    /// The user with its identifiers and credentials.
    pub fn into_record(self) -> Result<UserRecord, StorageError> {
        let mut emails: Vec<EmailJson<'_>> =
            serde_json::from_str(&self.emails).map_err(|e| invalid_json("email rows", &e))?;
        let mut phones: Vec<PhoneJson<'_>> =
            serde_json::from_str(&self.phones).map_err(|e| invalid_json("phone rows", &e))?;
        // Oldest first; the arrays come in no order.
        emails.sort_by(|a, b| (a.3, &a.0).cmp(&(b.3, &b.0)));
        phones.sort_by(|a, b| (a.5, &a.0).cmp(&(b.5, &b.0)));
        let emails = emails
            .iter()
            .map(EmailJson::to_domain)
            .collect::<Result<_, _>>()?;
        let phones = phones
            .iter()
            .map(PhoneJson::to_domain)
            .collect::<Result<_, _>>()?;
        self.row.into_record(emails, phones)
    }
}

#[cfg(test)]
mod tests {
    use super::{Flag, StoredUser, UserRow, email_rows, phone_rows};
    use crate::sql::Bind;
    use roster_domain::{Email, NewIdentifiers, NewUser, Phone, Timestamp, User, UserRecord};

    fn text(bind: Bind) -> String {
        match bind {
            Bind::Text(text) => text,
            other => panic!("not a text: {other:?}"),
        }
    }

    #[test]
    fn identifiers_read_back_in_order_whether_their_texts_are_escaped_or_not() {
        let user = User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: vec![
                        Email::parse("a@example.com").unwrap(),
                        Email::parse("b@example.com").unwrap(),
                    ],
                    phones: vec![
                        Phone::parse("+14155550101").unwrap(),
                        Phone::parse("+14155550102").unwrap(),
                    ],
                    verified: true,
                },
                ..NewUser::default()
            },
            Timestamp::from_millis(1_700_000_000_000),
        )
        .unwrap();
        let record = UserRecord::new(user.clone(), None);
        let (emails, phones) = (text(email_rows(&user)), text(phone_rows(&user)));
        let reversed = |json: &str| {
            let mut rows: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
            rows.reverse();
            serde_json::to_string(&rows).unwrap()
        };
        let stored = |emails: String, phones: String| StoredUser {
            row: UserRow::from_record(&record),
            emails,
            phones,
        };
        // As written; in reverse order; with texts that must be unescaped.
        let escaped = reversed(&emails).replace("b@example", "b\\u0040example");
        assert!(escaped.contains("\\u0040"), "{escaped}");
        for (emails, phones) in [
            (emails.clone(), phones.clone()),
            (reversed(&emails), reversed(&phones)),
            (escaped, phones.replace("+1415", "\\u002B1415")),
        ] {
            let read = stored(emails, phones).into_record().unwrap();
            assert_eq!(read.user, user);
        }
        // A verification status no store writes is refused, not guessed.
        let unknown = emails.replace("\"verified\"", "\"verif\\u0069ed\"");
        assert_ne!(unknown, emails);
        assert!(stored(unknown, phones).into_record().is_err());
    }

    #[test]
    fn flags_read_as_booleans_or_integers() {
        let read = |json| serde_json::from_str::<Flag>(json).map(|f| f.get());
        assert!(read("true").unwrap());
        assert!(!read("false").unwrap());
        assert!(read("1").unwrap());
        assert!(!read("0").unwrap());
        assert!(read("\"1\"").is_err());
        assert!(read("null").is_err());
    }
}
