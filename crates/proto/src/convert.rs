//! Conversions between `roster.v1` messages and domain values.
//!
//! Requests are parsed whole: every bad field is collected into one
//! [`DomainError::Invalid`], with field paths as the request spells them
//! (`email_addresses[1]`, `user.username`, `filter.phone_numbers[0]`).

use prost_types::value::Kind;
use prost_types::{FieldMask, ListValue, Struct, Value};
use roster_domain::query::{MAX_FILTER_VALUES, MAX_QUERY_CHARS, OrderBy, UserFilter};
use roster_domain::{
    Channel, DomainError, Email, EmailAddress, ExternalId, FieldViolation, IdentificationId,
    Locale, Metadata, MetadataKind, Name, NewIdentifiers, NewUser, Password, Phone, PhoneNumber,
    ProfileChange, ProfileImage, SendWindow, Session, SessionId, SessionStatus, SignInId, SignUp,
    SignUpFields, SignUpId, SignUpRequirements, SignUpStatus, Timestamp, User, UserId, UserUpdate,
    Username, Verification, VerificationStatus, VerificationStrategy, Violations, reason,
};
use serde_json::Value as Json;

use crate::v1;

/// Most identifiers one CreateUser may carry.
pub const MAX_IDENTIFIERS: usize = 100;

// ---------------------------------------------------------------------------
// Values

/// A domain timestamp as a protobuf one.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.as_millis();
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        // The remainder is below 1000, so the product fits.
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds (sub-millisecond parts dropped).
pub fn from_timestamp(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_millis(
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000),
    )
}

fn json_to_value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(object_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

fn object_to_struct(map: serde_json::Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn value_to_json(value: Value) -> Result<Json, FieldViolation> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // protobuf numbers are doubles; whole ones read back as integers.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                Json::from(n as i64)
            } else {
                serde_json::Number::from_f64(n)
                    .map(Json::Number)
                    .ok_or_else(|| {
                        FieldViolation::new(
                            "",
                            reason::METADATA_INVALID,
                            "metadata numbers must be finite",
                        )
                    })?
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .into_iter()
                .map(value_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => struct_to_json(s)?,
    })
}

fn struct_to_json(s: Struct) -> Result<Json, FieldViolation> {
    Ok(Json::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| Ok((k, value_to_json(v)?)))
            .collect::<Result<_, FieldViolation>>()?,
    ))
}

/// Metadata as a protobuf `Struct`.
pub fn metadata_to_struct(metadata: Metadata) -> Struct {
    object_to_struct(metadata.into_map())
}

/// A protobuf `Struct` as metadata.
pub fn metadata_from_struct(s: Struct) -> Result<Metadata, FieldViolation> {
    Metadata::parse(struct_to_json(s)?)
}

// ---------------------------------------------------------------------------
// Domain -> proto

pub fn verification(v: &Verification) -> v1::Verification {
    v1::Verification {
        status: match v.status {
            VerificationStatus::Unverified => v1::VerificationStatus::Unverified,
            VerificationStatus::Verified => v1::VerificationStatus::Verified,
            VerificationStatus::Failed => v1::VerificationStatus::Failed,
            VerificationStatus::Expired => v1::VerificationStatus::Expired,
        }
        .into(),
        strategy: match v.strategy {
            None => v1::VerificationStrategy::Unspecified,
            Some(VerificationStrategy::Admin) => v1::VerificationStrategy::Admin,
            Some(VerificationStrategy::EmailCode) => v1::VerificationStrategy::EmailCode,
            Some(VerificationStrategy::PhoneCode) => v1::VerificationStrategy::PhoneCode,
            Some(VerificationStrategy::Oauth) => v1::VerificationStrategy::Oauth,
        }
        .into(),
        attempts: i32::try_from(v.attempts).unwrap_or(i32::MAX),
        expire_at: v.expire_at.map(timestamp),
    }
}

fn opt_string<T: ToString>(value: Option<&T>) -> String {
    value.map(ToString::to_string).unwrap_or_default()
}

/// An email address of `user` as the API shows it.
pub fn email_address(user: &User, e: &EmailAddress) -> v1::EmailAddress {
    email_address_of(
        user.id.as_str(),
        user.primary_email_address_id.as_ref(),
        e.clone(),
    )
}

/// An email address of the user `user_id`, whose primary one is `primary`.
fn email_address_of(
    user_id: &str,
    primary: Option<&IdentificationId>,
    e: EmailAddress,
) -> v1::EmailAddress {
    v1::EmailAddress {
        primary: primary == Some(&e.id),
        id: e.id.into_string(),
        user_id: user_id.to_owned(),
        email_address: e.email.into_string(),
        verification: Some(verification(&e.verification)),
        created_at: Some(timestamp(e.created_at)),
        updated_at: Some(timestamp(e.updated_at)),
    }
}

/// A phone number of `user` as the API shows it.
pub fn phone_number(user: &User, p: &PhoneNumber) -> v1::PhoneNumber {
    phone_number_of(
        user.id.as_str(),
        user.primary_phone_number_id.as_ref(),
        p.clone(),
    )
}

/// A phone number of the user `user_id`, whose primary one is `primary`.
fn phone_number_of(
    user_id: &str,
    primary: Option<&IdentificationId>,
    p: PhoneNumber,
) -> v1::PhoneNumber {
    v1::PhoneNumber {
        primary: primary == Some(&p.id),
        id: p.id.into_string(),
        user_id: user_id.to_owned(),
        phone_number: p.phone.into_string(),
        verification: Some(verification(&p.verification)),
        reserved_for_second_factor: p.reserved_for_second_factor,
        default_second_factor: p.default_second_factor,
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

/// A session as the API shows it, its status judged at `now`.
pub fn session(s: &Session, now: Timestamp) -> v1::Session {
    let a = &s.activity;
    let status = match s.status_at(now) {
        SessionStatus::Active => v1::SessionStatus::Active,
        SessionStatus::Revoked => v1::SessionStatus::Revoked,
        SessionStatus::Ended => v1::SessionStatus::Ended,
        SessionStatus::Expired => v1::SessionStatus::Expired,
    };
    v1::Session {
        id: s.id.to_string(),
        user_id: s.user_id.to_string(),
        status: status.into(),
        last_active_at: Some(timestamp(s.last_active_at)),
        expire_at: Some(timestamp(s.expire_at)),
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        latest_activity: Some(v1::SessionActivity {
            ip_address: opt_string(a.ip_address.as_ref()),
            user_agent: opt_string(a.user_agent.as_ref()),
            browser_name: opt_string(a.browser_name.as_ref()),
            browser_version: opt_string(a.browser_version.as_ref()),
            device_type: opt_string(a.device_type.as_ref()),
            is_mobile: a.is_mobile,
        }),
    }
}

/// Parses a session status filter: `None` for unspecified (any status).
pub fn session_status_filter(
    field: &str,
    value: i32,
) -> Result<Option<SessionStatus>, DomainError> {
    match v1::SessionStatus::try_from(value) {
        Ok(v1::SessionStatus::Unspecified) => Ok(None),
        Ok(v1::SessionStatus::Active) => Ok(Some(SessionStatus::Active)),
        Ok(v1::SessionStatus::Revoked) => Ok(Some(SessionStatus::Revoked)),
        Ok(v1::SessionStatus::Ended) => Ok(Some(SessionStatus::Ended)),
        Ok(v1::SessionStatus::Expired) => Ok(Some(SessionStatus::Expired)),
        Err(_) => Err(DomainError::invalid(
            field,
            reason::FORM_PARAM_VALUE_INVALID,
            "unknown session status",
        )),
    }
}

/// Parses a session id given in `field`.
pub fn session_id(field: &str, text: &str) -> Result<SessionId, DomainError> {
    SessionId::parse(text).map_err(|v| v.nested(field).into())
}

/// Parses a sign-in id given in `field`.
pub fn sign_in_id(field: &str, text: &str) -> Result<SignInId, DomainError> {
    SignInId::parse(text).map_err(|v| v.nested(field).into())
}

/// Where a user's profile image is served: the uploaded image at
/// `{public_url}/images/img_….png`, else the default avatar at
/// `{public_url}/avatars/user_….svg?initials=AB`.
pub fn image_url(u: &User, public_url: &str) -> String {
    use std::fmt::Write as _;
    let base = public_url.trim_end_matches('/');
    if let Some(image) = &u.image {
        return format!("{base}/images/{}", image.file_name());
    }
    let initials = u.initials();
    if initials.is_empty() {
        return format!("{base}/avatars/{}.svg", u.id);
    }
    let mut query = String::new();
    for c in initials.chars() {
        if c.is_ascii_alphanumeric() {
            query.push(c);
        } else {
            let mut bytes = [0; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                let _ = write!(query, "%{b:02X}");
            }
        }
    }
    format!("{base}/avatars/{}.svg?initials={query}", u.id)
}

/// A user as the Backend API shows it; image URLs start with `public_url`.
/// Its texts move into the message.
pub fn user(u: User, public_url: &str) -> v1::User {
    let image_url = image_url(&u, public_url);
    let has_image = u.has_image();
    let two_factor_enabled = u.two_factor_enabled();
    let User {
        id,
        external_id,
        first_name,
        last_name,
        username,
        locale,
        primary_email_address_id,
        primary_phone_number_id,
        email_addresses,
        phone_numbers,
        password_enabled,
        public_metadata,
        private_metadata,
        unsafe_metadata,
        banned,
        locked,
        image: _,
        created_at,
        updated_at,
        last_sign_in_at,
    } = u;
    let id = id.into_string();
    let email_addresses = email_addresses
        .into_iter()
        .map(|e| email_address_of(&id, primary_email_address_id.as_ref(), e))
        .collect();
    let phone_numbers = phone_numbers
        .into_iter()
        .map(|p| phone_number_of(&id, primary_phone_number_id.as_ref(), p))
        .collect();
    v1::User {
        id,
        external_id: or_empty(external_id, ExternalId::into_string),
        first_name: or_empty(first_name, Name::into_string),
        last_name: or_empty(last_name, Name::into_string),
        username: or_empty(username, Username::into_string),
        locale: or_empty(locale, Locale::into_string),
        image_url,
        has_image,
        primary_email_address_id: or_empty(primary_email_address_id, IdentificationId::into_string),
        primary_phone_number_id: or_empty(primary_phone_number_id, IdentificationId::into_string),
        email_addresses,
        phone_numbers,
        external_accounts: Vec::new(),
        password_enabled,
        two_factor_enabled,
        public_metadata: Some(metadata_to_struct(public_metadata)),
        private_metadata: Some(metadata_to_struct(private_metadata)),
        unsafe_metadata: Some(metadata_to_struct(unsafe_metadata)),
        banned,
        locked,
        created_at: Some(timestamp(created_at)),
        updated_at: Some(timestamp(updated_at)),
        last_sign_in_at: last_sign_in_at.map(timestamp),
    }
}

/// The text of an optional value, empty where there is none.
fn or_empty<T>(value: Option<T>, into_string: impl FnOnce(T) -> String) -> String {
    value.map_or_else(String::new, into_string)
}

/// A user as the Frontend API shows it to the user: no private metadata
/// (the message has no field for it), and no backend-only state.
pub fn account(mut u: User, public_url: &str) -> v1::Account {
    // Taken out first, so that it is not even converted.
    u.private_metadata = Metadata::default();
    let u = user(u, public_url);
    v1::Account {
        id: u.id,
        first_name: u.first_name,
        last_name: u.last_name,
        username: u.username,
        locale: u.locale,
        image_url: u.image_url,
        has_image: u.has_image,
        primary_email_address_id: u.primary_email_address_id,
        primary_phone_number_id: u.primary_phone_number_id,
        email_addresses: u.email_addresses,
        phone_numbers: u.phone_numbers,
        password_enabled: u.password_enabled,
        two_factor_enabled: u.two_factor_enabled,
        public_metadata: u.public_metadata,
        unsafe_metadata: u.unsafe_metadata,
        created_at: u.created_at,
        updated_at: u.updated_at,
        last_sign_in_at: u.last_sign_in_at,
    }
}

/// A sign-up as the Frontend API shows it.
pub fn sign_up(s: &SignUp, required: &SignUpRequirements, now: Timestamp) -> v1::SignUp {
    let status = match s.status_at(now) {
        SignUpStatus::MissingRequirements => v1::SignUpStatus::MissingRequirements,
        SignUpStatus::Complete => v1::SignUpStatus::Complete,
        SignUpStatus::Abandoned => v1::SignUpStatus::Abandoned,
    };
    let required_fields = [
        ("email_address", required.email_address),
        ("phone_number", required.phone_number),
        ("username", required.username),
        ("password", required.password),
    ]
    .into_iter()
    .filter(|(_, r)| *r)
    .map(|(f, _)| f.to_owned())
    .collect();
    v1::SignUp {
        id: s.id.to_string(),
        status: status.into(),
        required_fields,
        missing_fields: s
            .missing_fields(required)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        unverified_fields: s
            .unverified_fields()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        email_address: s
            .email
            .as_ref()
            .map(|e| e.value.to_string())
            .unwrap_or_default(),
        email_address_verification: s.email.as_ref().map(|e| verification(&e.verification)),
        phone_number: s
            .phone
            .as_ref()
            .map(|p| p.value.to_string())
            .unwrap_or_default(),
        phone_number_verification: s.phone.as_ref().map(|p| verification(&p.verification)),
        username: opt_string(s.username.as_ref()),
        password_enabled: s.password_hash.is_some(),
        first_name: opt_string(s.first_name.as_ref()),
        last_name: opt_string(s.last_name.as_ref()),
        unsafe_metadata: Some(metadata_to_struct(s.unsafe_metadata.clone())),
        created_user_id: opt_string(s.created_user_id.as_ref()),
        created_session_id: opt_string(s.created_session_id.as_ref()),
        created_at: Some(timestamp(s.created_at)),
        expire_at: Some(timestamp(s.expire_at)),
    }
}

/// Sign-up fields parsed from a request, with the password still to hash.
pub struct SignUpInput {
    pub fields: SignUpFields,
    pub password: Option<Password>,
}

/// Parses the fields of CreateSignUp or UpdateSignUp; empty ones are
/// left unset.
#[allow(clippy::too_many_arguments)]
pub fn sign_up_input(
    email_address: &str,
    phone_number: &str,
    username: &str,
    password: &str,
    first_name: &str,
    last_name: &str,
    unsafe_metadata: Option<Struct>,
) -> Result<SignUpInput, DomainError> {
    let mut v = Violations::new();
    let mut fields = SignUpFields {
        email: if email_address.is_empty() {
            None
        } else {
            v.check("email_address", Email::parse(email_address))
        },
        phone: if phone_number.is_empty() {
            None
        } else {
            v.check("phone_number", Phone::parse(phone_number))
        },
        username: if username.is_empty() {
            None
        } else {
            v.check("username", Username::parse(username))
        },
        ..SignUpFields::default()
    };
    if !first_name.is_empty() {
        fields.first_name = v.check("first_name", Name::parse(first_name)).flatten();
    }
    if !last_name.is_empty() {
        fields.last_name = v.check("last_name", Name::parse(last_name)).flatten();
    }
    fields.unsafe_metadata = metadata_field(&mut v, "unsafe_metadata", unsafe_metadata);
    let password = if password.is_empty() {
        None
    } else {
        v.check("password", Password::parse(password))
    };
    v.into_result()?;
    Ok(SignUpInput { fields, password })
}

/// Parses a sign-up id given in `field`.
pub fn sign_up_id(field: &str, text: &str) -> Result<SignUpId, DomainError> {
    SignUpId::parse(text).map_err(|v| v.nested(field).into())
}

/// The channel of a sign-up verification strategy.
pub fn code_channel(field: &str, strategy: i32) -> Result<Channel, DomainError> {
    match v1::VerificationStrategy::try_from(strategy) {
        Ok(v1::VerificationStrategy::EmailCode) => Ok(Channel::Email),
        Ok(v1::VerificationStrategy::PhoneCode) => Ok(Channel::Phone),
        _ => Err(DomainError::invalid(
            field,
            reason::FORM_PARAM_VALUE_INVALID,
            "the strategy must be VERIFICATION_STRATEGY_EMAIL_CODE or VERIFICATION_STRATEGY_PHONE_CODE",
        )),
    }
}

// ---------------------------------------------------------------------------
// Proto -> domain: requests

/// Parses a user id given in `field`.
pub fn user_id(field: &str, text: &str) -> Result<UserId, DomainError> {
    UserId::parse(text).map_err(|v| v.nested(field).into())
}

/// Parses an email address or phone number id given in `field`.
pub fn identification_id(field: &str, text: &str) -> Result<IdentificationId, DomainError> {
    IdentificationId::parse(text).map_err(|v| v.nested(field).into())
}

fn check_count(violations: &mut Violations, field: &str, len: usize, max: usize) {
    if len > max {
        violations.push(FieldViolation::new(
            field,
            reason::FORM_PARAM_MAX_LENGTH_EXCEEDED,
            format!("at most {max} values are allowed"),
        ));
    }
}

fn non_empty<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, FieldViolation>,
) -> Result<Option<T>, FieldViolation> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

fn metadata_field(
    violations: &mut Violations,
    field: &str,
    value: Option<Struct>,
) -> Option<Metadata> {
    value.and_then(|s| violations.check(field, metadata_from_struct(s)))
}

/// Parses CreateUser into a new user and its password (if any).
pub fn create_user(req: v1::CreateUserRequest) -> Result<(NewUser, Option<Password>), DomainError> {
    let mut v = Violations::new();
    check_count(
        &mut v,
        "email_addresses",
        req.email_addresses.len(),
        MAX_IDENTIFIERS,
    );
    check_count(
        &mut v,
        "phone_numbers",
        req.phone_numbers.len(),
        MAX_IDENTIFIERS,
    );
    let emails: Vec<Email> = req
        .email_addresses
        .iter()
        .enumerate()
        .filter_map(|(i, e)| v.check(&format!("email_addresses[{i}]"), Email::parse(e)))
        .collect();
    let phones: Vec<Phone> = req
        .phone_numbers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| v.check(&format!("phone_numbers[{i}]"), Phone::parse(p)))
        .collect();
    let username = v
        .check("username", non_empty(&req.username, Username::parse))
        .flatten();
    let external_id = v
        .check("external_id", ExternalId::parse(&req.external_id))
        .flatten();
    let first_name = v
        .check("first_name", Name::parse(&req.first_name))
        .flatten();
    let last_name = v.check("last_name", Name::parse(&req.last_name)).flatten();
    let locale = v.check("locale", Locale::parse(&req.locale)).flatten();
    let password = v
        .check("password", non_empty(&req.password, Password::parse))
        .flatten();
    let public_metadata =
        metadata_field(&mut v, "public_metadata", req.public_metadata).unwrap_or_default();
    let private_metadata =
        metadata_field(&mut v, "private_metadata", req.private_metadata).unwrap_or_default();
    let unsafe_metadata =
        metadata_field(&mut v, "unsafe_metadata", req.unsafe_metadata).unwrap_or_default();
    v.into_result()?;
    let new = NewUser {
        identifiers: NewIdentifiers {
            emails,
            phones,
            verified: !req.unverified_identifiers,
        },
        username,
        external_id,
        first_name,
        last_name,
        locale,
        public_metadata: public_metadata.without_nulls(),
        private_metadata: private_metadata.without_nulls(),
        unsafe_metadata: unsafe_metadata.without_nulls(),
    };
    Ok((new, password))
}

fn lowercase_list(v: &mut Violations, field: &str, values: Vec<String>) -> Vec<String> {
    check_count(v, field, values.len(), MAX_FILTER_VALUES);
    values
        .into_iter()
        .map(|s| s.trim().to_lowercase())
        .collect()
}

/// Parses a ListUsers/CountUsers filter (absent: all users).
pub fn user_filter(filter: Option<v1::UserFilter>) -> Result<UserFilter, DomainError> {
    let Some(f) = filter else {
        return Ok(UserFilter::default());
    };
    let mut v = Violations::new();
    check_count(
        &mut v,
        "filter.user_ids",
        f.user_ids.len(),
        MAX_FILTER_VALUES,
    );
    let user_ids = f
        .user_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| v.check(&format!("filter.user_ids[{i}]"), UserId::parse(id)))
        .collect();
    check_count(
        &mut v,
        "filter.phone_numbers",
        f.phone_numbers.len(),
        MAX_FILTER_VALUES,
    );
    let phone_numbers = f
        .phone_numbers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| v.check(&format!("filter.phone_numbers[{i}]"), Phone::parse(p)))
        .collect();
    let email_addresses = lowercase_list(&mut v, "filter.email_addresses", f.email_addresses);
    let usernames = lowercase_list(&mut v, "filter.usernames", f.usernames);
    check_count(
        &mut v,
        "filter.external_ids",
        f.external_ids.len(),
        MAX_FILTER_VALUES,
    );
    let query = f.query.trim().to_lowercase();
    if query.chars().any(char::is_control) {
        v.push(FieldViolation::new(
            "filter.query",
            reason::FORM_PARAM_FORMAT_INVALID,
            "query contains control characters",
        ));
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        v.push(FieldViolation::new(
            "filter.query",
            reason::FORM_PARAM_MAX_LENGTH_EXCEEDED,
            format!("query is longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    v.into_result()?;
    Ok(UserFilter {
        user_ids,
        email_addresses,
        phone_numbers,
        usernames,
        external_ids: f.external_ids,
        query: Some(query).filter(|q| !q.is_empty()),
        banned: f.banned,
        created_after: f.created_after.as_ref().map(from_timestamp),
        created_before: f.created_before.as_ref().map(from_timestamp),
    })
}

/// Parses `order_by`.
pub fn order_by(text: &str) -> Result<OrderBy, DomainError> {
    OrderBy::parse(text).map_err(|v| v.nested("order_by").into())
}

const UPDATE_USER_PATHS: [&str; 11] = [
    "first_name",
    "last_name",
    "username",
    "external_id",
    "locale",
    "primary_email_address_id",
    "primary_phone_number_id",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
    "password",
];

/// Checks a mask against the paths a method accepts; an absent or empty
/// mask is `None`.
fn mask_paths(
    mask: Option<&FieldMask>,
    allowed: &[&str],
    v: &mut Violations,
) -> Option<Vec<String>> {
    let paths = mask.map(|m| m.paths.clone()).filter(|p| !p.is_empty())?;
    for path in &paths {
        if !allowed.contains(&path.as_str()) {
            v.push(FieldViolation::new(
                "update_mask",
                reason::FORM_PARAM_VALUE_INVALID,
                format!(
                    "cannot update {path:?}; updatable fields are {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Some(paths)
}

/// A validated UpdateUser: the user, the change, and the new password
/// (`Some(None)` removes it).
pub type UpdateUserParts = (UserId, UserUpdate, Option<Option<Password>>);

/// Parses UpdateUser. Without a mask, every non-empty field is updated
/// (AIP-134's implied mask).
pub fn update_user(req: v1::UpdateUserRequest) -> Result<UpdateUserParts, DomainError> {
    let mut v = Violations::new();
    let Some(u) = req.user else {
        return Err(DomainError::invalid(
            "user",
            reason::FORM_PARAM_MISSING,
            "user is required",
        ));
    };
    let id = v.check("user.id", UserId::parse(&u.id));
    let paths =
        mask_paths(req.update_mask.as_ref(), &UPDATE_USER_PATHS, &mut v).unwrap_or_else(|| {
            let present = [
                ("first_name", !u.first_name.is_empty()),
                ("last_name", !u.last_name.is_empty()),
                ("username", !u.username.is_empty()),
                ("external_id", !u.external_id.is_empty()),
                ("locale", !u.locale.is_empty()),
                (
                    "primary_email_address_id",
                    !u.primary_email_address_id.is_empty(),
                ),
                (
                    "primary_phone_number_id",
                    !u.primary_phone_number_id.is_empty(),
                ),
                ("public_metadata", u.public_metadata.is_some()),
                ("private_metadata", u.private_metadata.is_some()),
                ("unsafe_metadata", u.unsafe_metadata.is_some()),
                ("password", !req.password.is_empty()),
            ];
            present
                .iter()
                .filter(|(_, set)| *set)
                .map(|(p, _)| (*p).to_owned())
                .collect()
        });
    let has = |p: &str| paths.iter().any(|x| x == p);
    let mut update = UserUpdate::default();
    let mut profile = ProfileChange::default();
    if has("first_name") {
        profile.first_name = v.check("user.first_name", Name::parse(&u.first_name));
    }
    if has("last_name") {
        profile.last_name = v.check("user.last_name", Name::parse(&u.last_name));
    }
    if has("external_id") {
        profile.external_id = v.check("user.external_id", ExternalId::parse(&u.external_id));
    }
    if has("locale") {
        profile.locale = v.check("user.locale", Locale::parse(&u.locale));
    }
    update.profile = profile;
    if has("username") {
        update.username = v.check("user.username", non_empty(&u.username, Username::parse));
    }
    if has("primary_email_address_id") {
        update.primary_email_address_id = v.check(
            "user.primary_email_address_id",
            non_empty(&u.primary_email_address_id, IdentificationId::parse),
        );
    }
    if has("primary_phone_number_id") {
        update.primary_phone_number_id = v.check(
            "user.primary_phone_number_id",
            non_empty(&u.primary_phone_number_id, IdentificationId::parse),
        );
    }
    for (kind, value) in [
        (MetadataKind::Public, u.public_metadata),
        (MetadataKind::Private, u.private_metadata),
        (MetadataKind::Unsafe, u.unsafe_metadata),
    ] {
        if has(kind.field()) {
            let parsed = metadata_field(&mut v, &format!("user.{}", kind.field()), value);
            update.metadata.push((kind, parsed.unwrap_or_default()));
        }
    }
    let password = if has("password") {
        v.check("password", non_empty(&req.password, Password::parse))
    } else {
        None
    };
    if paths.is_empty() {
        v.push(FieldViolation::new(
            "update_mask",
            reason::FORM_PARAM_MISSING,
            "nothing to update",
        ));
    }
    v.into_result()?;
    let id = id.ok_or_else(|| {
        DomainError::invalid("user.id", reason::FORM_PARAM_MISSING, "user id is required")
    })?;
    Ok((id, update, password))
}

/// Fields a user may update on their own account.
const UPDATE_ACCOUNT_PATHS: [&str; 7] = [
    "first_name",
    "last_name",
    "username",
    "locale",
    "primary_email_address_id",
    "primary_phone_number_id",
    "unsafe_metadata",
];

/// Parses UpdateAccount (Frontend API). The mask is required; naming public
/// or private metadata is PERMISSION_DENIED, other unknown fields
/// INVALID_ARGUMENT.
pub fn update_account(req: v1::UpdateAccountRequest) -> Result<UserUpdate, DomainError> {
    let mask = req.update_mask.unwrap_or_default();
    if mask
        .paths
        .iter()
        .any(|p| p == "public_metadata" || p == "private_metadata")
    {
        return Err(DomainError::PermissionDenied {
            reason: reason::METADATA_NOT_WRITABLE,
            message: "public and private metadata are written by the Backend API only".to_owned(),
        });
    }
    let mut v = Violations::new();
    let paths = mask_paths(Some(&mask), &UPDATE_ACCOUNT_PATHS, &mut v).unwrap_or_default();
    if paths.is_empty() {
        v.push(FieldViolation::new(
            "update_mask",
            reason::FORM_PARAM_MISSING,
            "name the fields to update",
        ));
    }
    let a = req.account.unwrap_or_default();
    let has = |p: &str| paths.iter().any(|x| x == p);
    let mut update = UserUpdate::default();
    if has("first_name") {
        update.profile.first_name = v.check("account.first_name", Name::parse(&a.first_name));
    }
    if has("last_name") {
        update.profile.last_name = v.check("account.last_name", Name::parse(&a.last_name));
    }
    if has("locale") {
        update.profile.locale = v.check("account.locale", Locale::parse(&a.locale));
    }
    if has("username") {
        update.username = v.check("account.username", non_empty(&a.username, Username::parse));
    }
    if has("primary_email_address_id") {
        update.primary_email_address_id = v.check(
            "account.primary_email_address_id",
            non_empty(&a.primary_email_address_id, IdentificationId::parse),
        );
    }
    if has("primary_phone_number_id") {
        update.primary_phone_number_id = v.check(
            "account.primary_phone_number_id",
            non_empty(&a.primary_phone_number_id, IdentificationId::parse),
        );
    }
    if has("unsafe_metadata") {
        let parsed = metadata_field(&mut v, "account.unsafe_metadata", a.unsafe_metadata);
        update
            .metadata
            .push((MetadataKind::Unsafe, parsed.unwrap_or_default()));
    }
    v.into_result()?;
    Ok(update)
}

/// Parses UpdateUnsafeMetadata (Frontend API) into the patch to merge.
pub fn update_unsafe_metadata(
    req: v1::UpdateUnsafeMetadataRequest,
) -> Result<Metadata, DomainError> {
    let mut v = Violations::new();
    let Some(patch) = req.unsafe_metadata else {
        return Err(DomainError::invalid(
            "unsafe_metadata",
            reason::FORM_PARAM_MISSING,
            "unsafe_metadata is required",
        ));
    };
    let parsed = metadata_field(&mut v, "unsafe_metadata", Some(patch));
    v.into_result()?;
    Ok(parsed.unwrap_or_default())
}

/// Parses UpdateUserMetadata into the patches to merge.
pub fn update_user_metadata(
    req: v1::UpdateUserMetadataRequest,
) -> Result<(UserId, Vec<(MetadataKind, Metadata)>), DomainError> {
    let mut v = Violations::new();
    let id = v.check("user_id", UserId::parse(&req.user_id));
    let mut patches = Vec::new();
    for (kind, value) in [
        (MetadataKind::Public, req.public_metadata),
        (MetadataKind::Private, req.private_metadata),
        (MetadataKind::Unsafe, req.unsafe_metadata),
    ] {
        if let Some(patch) = metadata_field(&mut v, kind.field(), value) {
            patches.push((kind, patch));
        }
    }
    v.into_result()?;
    let id = id.ok_or_else(|| {
        DomainError::invalid("user_id", reason::FORM_PARAM_MISSING, "user id is required")
    })?;
    Ok((id, patches))
}

/// Parses CreateEmailAddress: owner, address, `verified`, `primary`.
pub fn create_email_address(
    req: &v1::CreateEmailAddressRequest,
) -> Result<(UserId, Email), DomainError> {
    let mut v = Violations::new();
    let id = v.check("user_id", UserId::parse(&req.user_id));
    let email = v.check("email_address", Email::parse(&req.email_address));
    v.into_result()?;
    match (id, email) {
        (Some(id), Some(email)) => Ok((id, email)),
        _ => Err(DomainError::invalid(
            "user_id",
            reason::FORM_PARAM_MISSING,
            "user id is required",
        )),
    }
}

/// Parses CreatePhoneNumber: owner and number.
pub fn create_phone_number(
    req: &v1::CreatePhoneNumberRequest,
) -> Result<(UserId, Phone), DomainError> {
    let mut v = Violations::new();
    let id = v.check("user_id", UserId::parse(&req.user_id));
    let phone = v.check("phone_number", Phone::parse(&req.phone_number));
    v.into_result()?;
    match (id, phone) {
        (Some(id), Some(phone)) => Ok((id, phone)),
        _ => Err(DomainError::invalid(
            "user_id",
            reason::FORM_PARAM_MISSING,
            "user id is required",
        )),
    }
}

/// Parses the id and the required mask of an identifier update; returns the
/// id and the mask's paths, each one of `allowed`.
pub fn identifier_update(
    id: &str,
    mask: Option<&FieldMask>,
    allowed: &[&str],
) -> Result<(IdentificationId, Vec<String>), DomainError> {
    let mut v = Violations::new();
    let id = v.check("id", IdentificationId::parse(id));
    let paths = mask_paths(mask, allowed, &mut v);
    if paths.is_none() {
        v.push(FieldViolation::new(
            "update_mask",
            reason::FORM_PARAM_MISSING,
            format!("name the fields to update: {}", allowed.join(", ")),
        ));
    }
    v.into_result()?;
    match (id, paths) {
        (Some(id), Some(paths)) => Ok((id, paths)),
        _ => Err(DomainError::invalid(
            "id",
            reason::FORM_PARAM_MISSING,
            "id is required",
        )),
    }
}

// ---------------------------------------------------------------------------
// Proto -> domain: responses (for clients)

fn parse_verification(v: Option<v1::Verification>) -> Verification {
    let Some(v) = v else {
        return Verification::unverified();
    };
    Verification {
        status: match v.status() {
            v1::VerificationStatus::Verified => VerificationStatus::Verified,
            v1::VerificationStatus::Failed => VerificationStatus::Failed,
            v1::VerificationStatus::Expired => VerificationStatus::Expired,
            v1::VerificationStatus::Unverified | v1::VerificationStatus::Unspecified => {
                VerificationStatus::Unverified
            }
        },
        strategy: match v.strategy() {
            v1::VerificationStrategy::Unspecified => None,
            v1::VerificationStrategy::Admin => Some(VerificationStrategy::Admin),
            v1::VerificationStrategy::EmailCode => Some(VerificationStrategy::EmailCode),
            v1::VerificationStrategy::PhoneCode => Some(VerificationStrategy::PhoneCode),
            v1::VerificationStrategy::Oauth => Some(VerificationStrategy::Oauth),
        },
        attempts: u32::try_from(v.attempts).unwrap_or(0),
        expire_at: v.expire_at.as_ref().map(from_timestamp),
        code: None,
        sends: SendWindow::default(),
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> Timestamp {
    t.map_or(Timestamp::from_millis(0), from_timestamp)
}

fn nested<T>(field: &str, result: Result<T, FieldViolation>) -> Result<T, FieldViolation> {
    result.map_err(|v| v.nested(field))
}

/// An email address received from Roster, as a domain value.
pub fn email_from_proto(e: &v1::EmailAddress) -> Result<EmailAddress, FieldViolation> {
    Ok(EmailAddress {
        id: nested("id", IdentificationId::parse(&e.id))?,
        email: nested("email_address", Email::parse(&e.email_address))?,
        created_at: time(e.created_at.as_ref()),
        updated_at: time(e.updated_at.as_ref()),
        verification: parse_verification(e.verification),
    })
}

/// A phone number received from Roster, as a domain value.
pub fn phone_from_proto(p: &v1::PhoneNumber) -> Result<PhoneNumber, FieldViolation> {
    Ok(PhoneNumber {
        id: nested("id", IdentificationId::parse(&p.id))?,
        phone: nested("phone_number", Phone::parse(&p.phone_number))?,
        reserved_for_second_factor: p.reserved_for_second_factor,
        default_second_factor: p.default_second_factor,
        created_at: time(p.created_at.as_ref()),
        updated_at: time(p.updated_at.as_ref()),
        verification: parse_verification(p.verification),
    })
}

/// A user received from Roster, as a domain value. Fails on values Roster
/// never sends (an invalid email, say).
pub fn user_from_proto(u: v1::User) -> Result<User, DomainError> {
    let mut v = Violations::new();
    let id = v.check("id", UserId::parse(&u.id));
    let email_addresses = u
        .email_addresses
        .iter()
        .enumerate()
        .filter_map(|(i, e)| v.check(&format!("email_addresses[{i}]"), email_from_proto(e)))
        .collect();
    let phone_numbers = u
        .phone_numbers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| v.check(&format!("phone_numbers[{i}]"), phone_from_proto(p)))
        .collect();
    let user = User {
        id: id.unwrap_or_else(|| UserId::generate(Timestamp::from_millis(0))),
        external_id: v
            .check("external_id", ExternalId::parse(&u.external_id))
            .flatten(),
        first_name: v.check("first_name", Name::parse(&u.first_name)).flatten(),
        last_name: v.check("last_name", Name::parse(&u.last_name)).flatten(),
        username: v
            .check("username", non_empty(&u.username, Username::parse))
            .flatten(),
        locale: v.check("locale", Locale::parse(&u.locale)).flatten(),
        primary_email_address_id: v
            .check(
                "primary_email_address_id",
                non_empty(&u.primary_email_address_id, IdentificationId::parse),
            )
            .flatten(),
        primary_phone_number_id: v
            .check(
                "primary_phone_number_id",
                non_empty(&u.primary_phone_number_id, IdentificationId::parse),
            )
            .flatten(),
        email_addresses,
        phone_numbers,
        password_enabled: u.password_enabled,
        public_metadata: metadata_field(&mut v, "public_metadata", u.public_metadata)
            .unwrap_or_default(),
        private_metadata: metadata_field(&mut v, "private_metadata", u.private_metadata)
            .unwrap_or_default(),
        unsafe_metadata: metadata_field(&mut v, "unsafe_metadata", u.unsafe_metadata)
            .unwrap_or_default(),
        banned: u.banned,
        locked: u.locked,
        // The image's file name is the last segment of its URL.
        image: if u.has_image {
            let name = u.image_url.rsplit('/').next().unwrap_or_default();
            let image = ProfileImage::parse_file_name(name);
            if image.is_none() {
                v.push(FieldViolation::new(
                    "image_url",
                    reason::FORM_PARAM_FORMAT_INVALID,
                    "not a profile image URL",
                ));
            }
            image
        } else {
            None
        },
        created_at: time(u.created_at.as_ref()),
        updated_at: time(u.updated_at.as_ref()),
        last_sign_in_at: u.last_sign_in_at.as_ref().map(from_timestamp),
    };
    v.into_result()?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_round_trips_through_struct() {
        let m = Metadata::parse(json!({"a": 1, "b": 1.5, "c": [true, null, "x"], "d": {"e": -3}}))
            .unwrap();
        let back = metadata_from_struct(metadata_to_struct(m.clone())).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(
                from_timestamp(&timestamp(Timestamp::from_millis(ms))).as_millis(),
                ms
            );
        }
    }

    #[test]
    fn create_user_collects_every_violation() {
        let err = create_user(v1::CreateUserRequest {
            email_addresses: vec!["ok@example.com".into(), "bad".into()],
            phone_numbers: vec!["123".into()],
            username: "a@b".into(),
            password: "short".into(),
            locale: "!!".into(),
            ..v1::CreateUserRequest::default()
        })
        .unwrap_err();
        let DomainError::Invalid(v) = err else {
            panic!()
        };
        let fields: Vec<&str> = v.as_slice().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "email_addresses[1]",
                "phone_numbers[0]",
                "username",
                "locale",
                "password"
            ]
        );
    }

    #[test]
    fn update_mask_is_checked_and_implied() {
        let id = UserId::generate(Timestamp::from_millis(1)).to_string();
        let req = |mask: Option<Vec<&str>>, user: v1::User| v1::UpdateUserRequest {
            user: Some(user),
            update_mask: mask.map(|m| FieldMask {
                paths: m.into_iter().map(String::from).collect(),
            }),
            password: String::new(),
            keep_sessions: false,
        };
        let err = update_user(req(
            Some(vec!["banned"]),
            v1::User {
                id: id.clone(),
                ..v1::User::default()
            },
        ))
        .unwrap_err();
        assert!(matches!(err, DomainError::Invalid(_)));
        let (_, update, password) = update_user(req(
            None,
            v1::User {
                id: id.clone(),
                first_name: "Ada".into(),
                ..v1::User::default()
            },
        ))
        .unwrap();
        assert_eq!(update.profile.first_name, Some(Name::parse("Ada").unwrap()));
        assert!(
            update.profile.last_name.is_none() && update.username.is_none() && password.is_none()
        );
        let (_, update, _) = update_user(req(
            Some(vec!["username"]),
            v1::User {
                id,
                ..v1::User::default()
            },
        ))
        .unwrap();
        assert_eq!(update.username, Some(None));
    }

    #[test]
    fn users_round_trip_to_the_client() {
        let mut u = User::create(
            NewUser {
                identifiers: NewIdentifiers {
                    emails: vec![Email::parse("a@example.com").unwrap()],
                    phones: vec![Phone::parse("+14155550101").unwrap()],
                    verified: true,
                },
                public_metadata: Metadata::parse(json!({"role": "admin"})).unwrap(),
                ..NewUser::default()
            },
            Timestamp::from_millis(1_700_000_000_123),
        )
        .unwrap();
        u.last_sign_in_at = Some(Timestamp::from_millis(1_700_000_000_999));
        let base = "https://roster.example/";
        let shown = user(u.clone(), base);
        assert_eq!(
            shown.image_url,
            format!("https://roster.example/avatars/{}.svg?initials=A", u.id)
        );
        assert_eq!(user_from_proto(shown).unwrap(), u);

        let image = roster_domain::ProfileImage {
            id: roster_domain::ImageId::generate(u.created_at),
            format: roster_domain::ImageFormat::Png,
        };
        u.set_image(image.clone(), u.created_at);
        let shown = user(u.clone(), base);
        assert!(shown.has_image);
        assert_eq!(
            shown.image_url,
            format!("https://roster.example/images/{}", image.file_name())
        );
        assert_eq!(user_from_proto(shown).unwrap(), u);
    }

    #[test]
    fn default_avatar_urls_carry_escaped_initials() {
        let mut u = User::create(
            NewUser {
                username: Some(Username::parse("nobody").unwrap()),
                ..NewUser::default()
            },
            Timestamp::from_millis(1),
        )
        .unwrap();
        assert_eq!(
            image_url(&u, "http://h"),
            format!("http://h/avatars/{}.svg?initials=N", u.id)
        );
        u.username = None;
        assert_eq!(
            image_url(&u, "http://h"),
            format!("http://h/avatars/{}.svg", u.id)
        );
        u.first_name = Some(Name::parse("élodie").unwrap().unwrap());
        u.last_name = Some(Name::parse("zola").unwrap().unwrap());
        assert_eq!(
            image_url(&u, "http://h"),
            format!("http://h/avatars/{}.svg?initials=%C3%89Z", u.id)
        );
    }
}
