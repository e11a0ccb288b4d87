//! Sessions, sign-ins and token signing keys: their store trait and its
//! one implementation for every SQL backend.
//!
//! Rows travel as [`Value`] vectors ([`SqlConn::fetch_values`]), so a
//! backend decodes them without knowing these tables.

use async_trait::async_trait;
use roster_domain::{
    DomainError, IdentificationId, Session, SessionActivity, SessionId, SessionStatus, SignInId,
    Timestamp, UserId, Verification,
};

use crate::rows::VerificationColumns;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use roster_domain::{FieldViolation, reason};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::StorageError;
use crate::exec::{SqlConn, SqlDatabase};
use crate::query::page_limit;
use crate::sql::{self, Bind, Builder, Dialect, Statement};

/// The type of a column read by [`SqlConn::fetch_values`]; every one may
/// be NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int,
    Bool,
}

/// A column value read by [`SqlConn::fetch_values`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

/// A change to one session, applied to the locked row.
pub type SessionMutation<'a> = Box<dyn FnOnce(&mut Session) -> Result<(), DomainError> + Send + 'a>;

/// A token signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id (`kid`).
    pub kid: String,
    /// `RS256` or `EdDSA`.
    pub algorithm: String,
    /// The private key, PKCS#8 PEM.
    pub private_key_pem: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A sign-in in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub id: SignInId,
    /// The identifier as the user typed it.
    pub identifier: String,
    /// The user it names; `None` when it names no one (the sign-in goes on
    /// all the same, so callers cannot tell).
    pub user_id: Option<UserId>,
    /// `needs_first_factor` or `complete`.
    pub status: String,
    pub created_at: Timestamp,
    pub expire_at: Timestamp,
    /// The session it created, once complete.
    pub session_id: Option<SessionId>,
    /// The one-time code of a code first factor, once prepared.
    pub code: Option<SignInCode>,
}

/// A sign-in's one-time code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInCode {
    /// The identifier the code was sent to (a stand-in when the sign-in
    /// names no user); the code's hash is bound to it.
    pub target: IdentificationId,
    pub verification: Verification,
}

/// A change to one sign-in, applied to the locked row.
pub type SignInMutation<'a> = Box<dyn FnOnce(&mut SignIn) -> Result<(), DomainError> + Send + 'a>;

/// Which sessions to list.
#[derive(Clone, Debug)]
pub struct SessionQuery {
    pub user_id: UserId,
    pub status: Option<SessionStatus>,
    /// Statuses are judged at this time (an active session past its expiry
    /// is expired).
    pub now: Timestamp,
    /// Only sessions before this (created_at, id), newest first.
    pub before: Option<(Timestamp, SessionId)>,
    pub limit: usize,
}

impl SessionQuery {
    /// Builds a query from a request's page size and token; the token must
    /// have been made for the same user and status.
    pub fn new(
        user_id: UserId,
        status: Option<SessionStatus>,
        now: Timestamp,
        page_size: i32,
        page_token: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let limit = page_limit(page_size, &mut violations);
        let mut query = Self {
            user_id,
            status,
            now,
            before: None,
            limit,
        };
        if !page_token.is_empty() {
            match query.decode_token(page_token) {
                Some(cursor) => query.before = Some(cursor),
                None => violations.push(FieldViolation::new(
                    "page_token",
                    reason::PAGE_TOKEN_INVALID,
                    "page token is malformed or belongs to another user or status",
                )),
            }
        }
        if violations.is_empty() {
            Ok(query)
        } else {
            Err(violations)
        }
    }

    fn checksum(&self, payload: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("sessions|{}|{:?}|", self.user_id, self.status).as_bytes());
        hasher.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
    }

    /// The token of the page after `last`.
    pub fn next_token(&self, last: &Session) -> String {
        let payload = format!("{}.{}", last.created_at.as_millis(), last.id);
        let checksum = self.checksum(&payload);
        format!("{}.{checksum}", URL_SAFE_NO_PAD.encode(payload))
    }

    fn decode_token(&self, token: &str) -> Option<(Timestamp, SessionId)> {
        let (payload, checksum) = token.split_once('.')?;
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if !bool::from(
            self.checksum(&payload)
                .as_bytes()
                .ct_eq(checksum.as_bytes()),
        ) {
            return None;
        }
        let (at, id) = payload.split_once('.')?;
        Some((
            Timestamp::from_millis(at.parse().ok()?),
            SessionId::parse(id).ok()?,
        ))
    }
}

/// Reads one page of sessions and the token of the next.
pub async fn session_page(
    store: &dyn SessionStore,
    mut query: SessionQuery,
) -> Result<(Vec<Session>, Option<String>), StorageError> {
    let page_size = query.limit;
    query.limit = page_size + 1;
    let mut sessions = store.list_sessions(&query).await?;
    let next = if sessions.len() > page_size {
        sessions.truncate(page_size);
        sessions.last().map(|last| query.next_token(last))
    } else {
        None
    };
    Ok((sessions, next))
}

/// The store of sessions, sign-ins and signing keys.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    async fn insert_session(&self, session: &Session) -> Result<(), StorageError>;
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StorageError>;
    /// Locks the session, applies `mutation` and writes it back.
    /// `Rejected(NotFound)` when it does not exist.
    async fn update_session(
        &self,
        id: &SessionId,
        mutation: SessionMutation<'_>,
    ) -> Result<Session, StorageError>;
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<Session>, StorageError>;
    /// The session whose secret hashes to `secret_hash`.
    async fn find_session_by_secret(
        &self,
        secret_hash: &str,
    ) -> Result<Option<Session>, StorageError>;

    async fn insert_sign_in(&self, sign_in: &SignIn) -> Result<(), StorageError>;
    async fn get_sign_in(&self, id: &SignInId) -> Result<Option<SignIn>, StorageError>;
    /// Locks the sign-in, applies `mutation` and writes it back.
    async fn update_sign_in(
        &self,
        id: &SignInId,
        mutation: SignInMutation<'_>,
    ) -> Result<SignIn, StorageError>;
    /// Marks a sign-in complete with the session it is about to begin; a
    /// sign-in completes once. `false` if it was complete already.
    async fn complete_sign_in(
        &self,
        id: &SignInId,
        session_id: &SessionId,
    ) -> Result<bool, StorageError>;

    /// Every signing key, newest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StorageError>;
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StorageError>;
}

const SESSION_COLUMNS: [&str; 14] = [
    "id",
    "user_id",
    "status",
    "created_at",
    "updated_at",
    "last_active_at",
    "expire_at",
    "ip_address",
    "user_agent",
    "browser_name",
    "browser_version",
    "device_type",
    "is_mobile",
    "secret_hash",
];

const SESSION_TYPES: [ColumnType; 14] = {
    use ColumnType::{Bool, Int, Text};
    [
        Text, Text, Text, Int, Int, Int, Int, Text, Text, Text, Text, Text, Bool, Text,
    ]
};

const SIGN_IN_COLUMNS: [&str; 9] = [
    "id",
    "identifier",
    "user_id",
    "status",
    "created_at",
    "expire_at",
    "session_id",
    "code_target",
    "code",
];

const SIGN_IN_TYPES: [ColumnType; 9] = {
    use ColumnType::{Int, Text};
    [Text, Text, Text, Text, Int, Int, Text, Text, Text]
};

const KEY_COLUMNS: [&str; 4] = ["kid", "algorithm", "private_key_pem", "created_at"];

const KEY_TYPES: [ColumnType; 4] = {
    use ColumnType::{Int, Text};
    [Text, Text, Text, Int]
};

fn corrupt(what: &str) -> StorageError {
    StorageError::internal(format!("stored {what} is invalid"))
}

/// Reads a row's values in order.
struct Cells(std::vec::IntoIter<Value>);

impl Cells {
    fn text(&mut self) -> Result<Option<String>, StorageError> {
        match self.0.next() {
            Some(Value::Text(t)) => Ok(t),
            _ => Err(corrupt("row (text expected)")),
        }
    }

    fn required_text(&mut self) -> Result<String, StorageError> {
        self.text()?.ok_or_else(|| corrupt("row (NULL text)"))
    }

    fn int(&mut self) -> Result<i64, StorageError> {
        match self.0.next() {
            Some(Value::Int(Some(i))) => Ok(i),
            _ => Err(corrupt("row (integer expected)")),
        }
    }

    fn time(&mut self) -> Result<Timestamp, StorageError> {
        self.int().map(Timestamp::from_millis)
    }

    fn bool(&mut self) -> Result<bool, StorageError> {
        match self.0.next() {
            Some(Value::Bool(Some(b))) => Ok(b),
            _ => Err(corrupt("row (boolean expected)")),
        }
    }
}

fn user_id(text: &str) -> Result<UserId, StorageError> {
    UserId::parse(text).map_err(|_| corrupt("user id"))
}

fn session_id(text: &str) -> Result<SessionId, StorageError> {
    SessionId::parse(text).map_err(|_| corrupt("session id"))
}

fn session_from(values: Vec<Value>) -> Result<Session, StorageError> {
    let mut c = Cells(values.into_iter());
    Ok(Session {
        id: session_id(&c.required_text()?)?,
        user_id: user_id(&c.required_text()?)?,
        status: SessionStatus::from_name(&c.required_text()?)
            .ok_or_else(|| corrupt("session status"))?,
        created_at: c.time()?,
        updated_at: c.time()?,
        last_active_at: c.time()?,
        expire_at: c.time()?,
        activity: SessionActivity {
            ip_address: c.text()?,
            user_agent: c.text()?,
            browser_name: c.text()?,
            browser_version: c.text()?,
            device_type: c.text()?,
            is_mobile: c.bool()?,
        },
        secret_hash: c.required_text()?,
    })
}

fn opt_text(value: Option<&String>) -> Bind {
    value.map_or(Bind::NullText, |v| Bind::Text(v.clone()))
}

fn session_binds(s: &Session) -> Vec<Bind> {
    let a = &s.activity;
    vec![
        Bind::Text(s.id.to_string()),
        Bind::Text(s.user_id.to_string()),
        Bind::Text(s.status.as_str().to_owned()),
        Bind::Int(s.created_at.as_millis()),
        Bind::Int(s.updated_at.as_millis()),
        Bind::Int(s.last_active_at.as_millis()),
        Bind::Int(s.expire_at.as_millis()),
        opt_text(a.ip_address.as_ref()),
        opt_text(a.user_agent.as_ref()),
        opt_text(a.browser_name.as_ref()),
        opt_text(a.browser_version.as_ref()),
        opt_text(a.device_type.as_ref()),
        Bind::Bool(a.is_mobile),
        Bind::Text(s.secret_hash.clone()),
    ]
}

fn sign_in_from(values: Vec<Value>) -> Result<SignIn, StorageError> {
    let mut c = Cells(values.into_iter());
    Ok(SignIn {
        id: SignInId::parse(&c.required_text()?).map_err(|_| corrupt("sign-in id"))?,
        identifier: c.required_text()?,
        user_id: c.text()?.as_deref().map(user_id).transpose()?,
        status: c.required_text()?,
        created_at: c.time()?,
        expire_at: c.time()?,
        session_id: c.text()?.as_deref().map(session_id).transpose()?,
        code: match (c.text()?, c.text()?) {
            (Some(target), Some(json)) => Some(SignInCode {
                target: IdentificationId::parse(&target).map_err(|_| corrupt("code target"))?,
                verification: serde_json::from_str::<VerificationColumns>(&json)
                    .map_err(StorageError::internal)?
                    .to_domain()?,
            }),
            _ => None,
        },
    })
}

fn sign_in_binds(sign_in: &SignIn) -> Result<Vec<Bind>, StorageError> {
    let code = match &sign_in.code {
        Some(code) => Some(
            serde_json::to_string(&VerificationColumns::from_domain(&code.verification))
                .map_err(StorageError::internal)?,
        ),
        None => None,
    };
    Ok(vec![
        Bind::Text(sign_in.id.to_string()),
        Bind::Text(sign_in.identifier.clone()),
        opt_text(sign_in.user_id.as_ref().map(ToString::to_string).as_ref()),
        Bind::Text(sign_in.status.clone()),
        Bind::Int(sign_in.created_at.as_millis()),
        Bind::Int(sign_in.expire_at.as_millis()),
        opt_text(
            sign_in
                .session_id
                .as_ref()
                .map(ToString::to_string)
                .as_ref(),
        ),
        opt_text(sign_in.code.as_ref().map(|c| c.target.to_string()).as_ref()),
        opt_text(code.as_ref()),
    ])
}

fn key_from(values: Vec<Value>) -> Result<StoredKey, StorageError> {
    let mut c = Cells(values.into_iter());
    Ok(StoredKey {
        kid: c.required_text()?,
        algorithm: c.required_text()?,
        private_key_pem: c.required_text()?,
        created_at: c.time()?,
    })
}

fn select(columns: &[&str], table: &str, dialect: Dialect) -> Builder {
    Builder::new(
        dialect,
        &format!("SELECT {} FROM {table} WHERE ", columns.join(", ")),
    )
}

fn by_id(columns: &[&str], table: &str, id: &str, lock: bool, dialect: Dialect) -> Statement {
    let mut b = select(columns, table, dialect);
    b.push("id = ");
    b.bind(Bind::Text(id.to_owned()));
    if lock && dialect == Dialect::Postgres {
        b.push(" FOR UPDATE");
    }
    b.finish()
}

fn list_statement(query: &SessionQuery, dialect: Dialect) -> Statement {
    let mut b = select(&SESSION_COLUMNS, "sessions", dialect);
    b.push("user_id = ");
    b.bind(Bind::Text(query.user_id.to_string()));
    let now = || Bind::Int(query.now.as_millis());
    match query.status {
        None => {}
        Some(SessionStatus::Active) => {
            b.push(" AND status = 'active' AND expire_at > ");
            b.bind(now());
        }
        Some(SessionStatus::Expired) => {
            b.push(" AND (status = 'expired' OR (status = 'active' AND expire_at <= ");
            b.bind(now());
            b.push("))");
        }
        Some(other) => {
            b.push(" AND status = ");
            b.bind(Bind::Text(other.as_str().to_owned()));
        }
    }
    if let Some((at, id)) = &query.before {
        b.push(" AND (created_at < ");
        b.bind(Bind::Int(at.as_millis()));
        b.push(" OR (created_at = ");
        b.bind(Bind::Int(at.as_millis()));
        b.push(" AND id < ");
        b.bind(Bind::Text(id.to_string()));
        b.push("))");
    }
    b.push(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT {}",
        query.limit
    ));
    b.finish()
}

async fn fetch_one<T>(
    conn: &mut dyn SqlConn,
    statement: Statement,
    types: &[ColumnType],
    from: fn(Vec<Value>) -> Result<T, StorageError>,
) -> Result<Option<T>, StorageError> {
    conn.fetch_values(statement, types)
        .await?
        .into_iter()
        .next()
        .map(from)
        .transpose()
}

#[async_trait]
impl<D: SqlDatabase> SessionStore for D {
    #[tracing::instrument(name = "store.insert_session", skip_all)]
    async fn insert_session(&self, session: &Session) -> Result<(), StorageError> {
        let mut conn = self.connection().await?;
        let dialect = conn.dialect();
        conn.execute(sql::insert(
            "sessions",
            &SESSION_COLUMNS,
            session_binds(session),
            dialect,
        ))
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.get_session", skip_all)]
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StorageError> {
        let mut conn = self.connection().await?;
        let statement = by_id(
            &SESSION_COLUMNS,
            "sessions",
            id.as_str(),
            false,
            conn.dialect(),
        );
        fetch_one(conn.as_mut(), statement, &SESSION_TYPES, session_from).await
    }

    #[tracing::instrument(name = "store.update_session", skip_all)]
    async fn update_session(
        &self,
        id: &SessionId,
        mutation: SessionMutation<'_>,
    ) -> Result<Session, StorageError> {
        let mut tx = self.begin_write().await?;
        let dialect = tx.dialect();
        let statement = by_id(&SESSION_COLUMNS, "sessions", id.as_str(), true, dialect);
        let mut session = fetch_one(tx.as_mut(), statement, &SESSION_TYPES, session_from)
            .await?
            .ok_or_else(|| DomainError::not_found("session", id.as_str()))?;
        mutation(&mut session)?;
        tx.execute(sql::update_by_id(
            "sessions",
            &SESSION_COLUMNS,
            session_binds(&session),
            dialect,
        ))
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    #[tracing::instrument(name = "store.list_sessions", skip_all)]
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<Session>, StorageError> {
        let mut conn = self.scan_connection().await?;
        let statement = list_statement(query, conn.dialect());
        conn.fetch_values(statement, &SESSION_TYPES)
            .await?
            .into_iter()
            .map(session_from)
            .collect()
    }

    #[tracing::instrument(name = "store.find_session_by_secret", skip_all)]
    async fn find_session_by_secret(
        &self,
        secret_hash: &str,
    ) -> Result<Option<Session>, StorageError> {
        let mut conn = self.connection().await?;
        let mut b = select(&SESSION_COLUMNS, "sessions", conn.dialect());
        b.push("secret_hash = ");
        b.bind(Bind::Text(secret_hash.to_owned()));
        fetch_one(conn.as_mut(), b.finish(), &SESSION_TYPES, session_from).await
    }

    #[tracing::instrument(name = "store.insert_sign_in", skip_all)]
    async fn insert_sign_in(&self, sign_in: &SignIn) -> Result<(), StorageError> {
        let mut conn = self.connection().await?;
        let dialect = conn.dialect();
        conn.execute(sql::insert(
            "sign_ins",
            &SIGN_IN_COLUMNS,
            sign_in_binds(sign_in)?,
            dialect,
        ))
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.update_sign_in", skip_all)]
    async fn update_sign_in(
        &self,
        id: &SignInId,
        mutation: SignInMutation<'_>,
    ) -> Result<SignIn, StorageError> {
        let mut tx = self.begin_write().await?;
        let dialect = tx.dialect();
        let statement = by_id(&SIGN_IN_COLUMNS, "sign_ins", id.as_str(), true, dialect);
        let mut sign_in = fetch_one(tx.as_mut(), statement, &SIGN_IN_TYPES, sign_in_from)
            .await?
            .ok_or_else(|| DomainError::not_found("sign-in", id.as_str()))?;
        mutation(&mut sign_in)?;
        tx.execute(sql::update_by_id(
            "sign_ins",
            &SIGN_IN_COLUMNS,
            sign_in_binds(&sign_in)?,
            dialect,
        ))
        .await?;
        tx.commit().await?;
        Ok(sign_in)
    }

    #[tracing::instrument(name = "store.get_sign_in", skip_all)]
    async fn get_sign_in(&self, id: &SignInId) -> Result<Option<SignIn>, StorageError> {
        let mut conn = self.connection().await?;
        let statement = by_id(
            &SIGN_IN_COLUMNS,
            "sign_ins",
            id.as_str(),
            false,
            conn.dialect(),
        );
        fetch_one(conn.as_mut(), statement, &SIGN_IN_TYPES, sign_in_from).await
    }

    #[tracing::instrument(name = "store.complete_sign_in", skip_all)]
    async fn complete_sign_in(
        &self,
        id: &SignInId,
        session_id: &SessionId,
    ) -> Result<bool, StorageError> {
        let mut conn = self.connection().await?;
        let mut b = Builder::new(
            conn.dialect(),
            "UPDATE sign_ins SET status = 'complete', session_id = ",
        );
        b.bind(Bind::Text(session_id.to_string()));
        b.push(" WHERE status <> 'complete' AND id = ");
        b.bind(Bind::Text(id.to_string()));
        Ok(conn.execute(b.finish()).await? == 1)
    }

    #[tracing::instrument(name = "store.signing_keys", skip_all)]
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StorageError> {
        let mut conn = self.connection().await?;
        let mut b = Builder::new(
            conn.dialect(),
            &format!("SELECT {} FROM signing_keys", KEY_COLUMNS.join(", ")),
        );
        b.push(" ORDER BY created_at DESC, kid DESC");
        conn.fetch_values(b.finish(), &KEY_TYPES)
            .await?
            .into_iter()
            .map(key_from)
            .collect()
    }

    #[tracing::instrument(name = "store.insert_signing_key", skip_all)]
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StorageError> {
        let mut conn = self.connection().await?;
        let dialect = conn.dialect();
        let binds = vec![
            Bind::Text(key.kid.clone()),
            Bind::Text(key.algorithm.clone()),
            Bind::Text(key.private_key_pem.clone()),
            Bind::Int(key.created_at.as_millis()),
        ];
        conn.execute(sql::insert("signing_keys", &KEY_COLUMNS, binds, dialect))
            .await?;
        Ok(())
    }
}

/// The `INSERT` of a session.
pub(crate) fn insert_session_statement(session: &Session, dialect: Dialect) -> Statement {
    sql::insert(
        "sessions",
        &SESSION_COLUMNS,
        session_binds(session),
        dialect,
    )
}

/// Revokes every active session of a user but `except`, inside a user's
/// transaction.
pub(crate) async fn revoke_user_sessions(
    conn: &mut dyn SqlConn,
    user_id: &UserId,
    now: Timestamp,
    except: Option<&SessionId>,
) -> Result<u64, StorageError> {
    let mut b = Builder::new(
        conn.dialect(),
        "UPDATE sessions SET status = 'revoked', updated_at = ",
    );
    b.bind(Bind::Int(now.as_millis()));
    b.push(" WHERE status = 'active' AND user_id = ");
    b.bind(Bind::Text(user_id.to_string()));
    if let Some(except) = except {
        b.push(" AND id <> ");
        b.bind(Bind::Text(except.to_string()));
    }
    conn.execute(b.finish()).await
}
