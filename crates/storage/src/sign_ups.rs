//! Sign-ups in progress: kept as one JSON document per row (they are
//! read and written whole, and never queried by their fields), and
//! completed in one transaction with the user and session they create.

use async_trait::async_trait;
use roster_domain::sign_up::PendingIdentifier;
use roster_domain::{
    DomainError, Email, IdentificationId, Lockout, LockoutPolicy, Metadata, Name, PasswordHash,
    Phone, SendWindow, Session, SessionId, SignUp, SignUpId, Timestamp, UserId, UserRecord,
    Username,
};
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::exec::{SqlDatabase, insert_user};
use crate::rows::VerificationColumns;
use crate::sessions::{ColumnType, Value};
use crate::sql::{self, Bind, Builder, Dialect, Statement};

/// A change to one sign-up, applied to the locked row.
pub type SignUpMutation<'a> = Box<dyn FnOnce(&mut SignUp) -> Result<(), DomainError> + Send + 'a>;

/// The store of sign-ups.
#[async_trait]
pub trait SignUpStore: Send + Sync + std::fmt::Debug {
    async fn insert_sign_up(&self, sign_up: &SignUp) -> Result<(), StorageError>;
    async fn get_sign_up(&self, id: &SignUpId) -> Result<Option<SignUp>, StorageError>;
    /// Locks the sign-up, applies `mutation` and writes it back.
    async fn update_sign_up(
        &self,
        id: &SignUpId,
        mutation: SignUpMutation<'_>,
    ) -> Result<SignUp, StorageError>;
    /// Counts one code sent to `target` (a normalized email address or
    /// phone number) against `limit` per `window_ms`, or refuses with the
    /// wait. Bounds the codes sign-ups can send to one identifier, however
    /// many sign-ups name it.
    async fn admit_code_send(
        &self,
        target: &str,
        limit: u32,
        window_ms: i64,
        now: Timestamp,
    ) -> Result<(), StorageError>;
    /// Admits a sign-in attempt on an identifier that names no user, with
    /// the lockout a user would have (see `UserRecord::admit_attempt`), so
    /// answers do not tell unknown identifiers from known ones.
    async fn admit_unknown_attempt(
        &self,
        target: &str,
        policy: &LockoutPolicy,
        now: Timestamp,
    ) -> Result<(), StorageError>;
    /// In one transaction: checks the sign-up is still open, creates its
    /// user (uniqueness as for any new user) and session, and marks it
    /// complete. Returns the completed sign-up.
    async fn complete_sign_up(
        &self,
        id: &SignUpId,
        record: &UserRecord,
        session: &Session,
        now: Timestamp,
    ) -> Result<SignUp, StorageError>;
}

#[derive(Serialize, Deserialize)]
struct PendingDoc {
    id: String,
    value: String,
    verification: VerificationColumns,
}

#[derive(Serialize, Deserialize)]
struct SignUpDoc {
    email: Option<PendingDoc>,
    phone: Option<PendingDoc>,
    username: Option<String>,
    password_hash: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    unsafe_metadata: String,
    created_at: i64,
    updated_at: i64,
    created_user_id: Option<String>,
    created_session_id: Option<String>,
}

fn corrupt(what: &str) -> StorageError {
    StorageError::internal(format!("stored sign-up has an invalid {what}"))
}

fn pending_doc<T: ToString>(p: &PendingIdentifier<T>) -> PendingDoc {
    PendingDoc {
        id: p.id.to_string(),
        value: p.value.to_string(),
        verification: VerificationColumns::from_domain(&p.verification),
    }
}

fn pending<T, E>(
    doc: &PendingDoc,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<PendingIdentifier<T>, StorageError> {
    Ok(PendingIdentifier {
        id: IdentificationId::parse(&doc.id).map_err(|_| corrupt("identifier id"))?,
        value: parse(&doc.value).map_err(|_| corrupt("identifier"))?,
        verification: doc.verification.to_domain()?,
    })
}

fn encode(s: &SignUp) -> Result<String, StorageError> {
    let doc = SignUpDoc {
        email: s.email.as_ref().map(pending_doc),
        phone: s.phone.as_ref().map(pending_doc),
        username: s.username.as_ref().map(ToString::to_string),
        password_hash: s.password_hash.as_ref().map(|h| h.as_str().to_owned()),
        first_name: s.first_name.as_ref().map(ToString::to_string),
        last_name: s.last_name.as_ref().map(ToString::to_string),
        unsafe_metadata: s.unsafe_metadata.to_json_text(),
        created_at: s.created_at.as_millis(),
        updated_at: s.updated_at.as_millis(),
        created_user_id: s.created_user_id.as_ref().map(ToString::to_string),
        created_session_id: s.created_session_id.as_ref().map(ToString::to_string),
    };
    serde_json::to_string(&doc).map_err(StorageError::internal)
}

fn name(text: Option<String>) -> Result<Option<Name>, StorageError> {
    match text {
        None => Ok(None),
        Some(t) => Name::parse(&t).map_err(|_| corrupt("name")),
    }
}

fn decode(id: &str, expire_at: i64, data: &str) -> Result<SignUp, StorageError> {
    let doc: SignUpDoc = serde_json::from_str(data).map_err(StorageError::internal)?;
    Ok(SignUp {
        id: SignUpId::parse(id).map_err(|_| corrupt("id"))?,
        email: doc
            .email
            .as_ref()
            .map(|d| pending(d, Email::parse))
            .transpose()?,
        phone: doc
            .phone
            .as_ref()
            .map(|d| pending(d, Phone::parse))
            .transpose()?,
        username: doc
            .username
            .map(|u| Username::parse(&u).map_err(|_| corrupt("username")))
            .transpose()?,
        password_hash: doc.password_hash.map(PasswordHash::from_stored),
        first_name: name(doc.first_name)?,
        last_name: name(doc.last_name)?,
        unsafe_metadata: Metadata::from_json_text(&doc.unsafe_metadata)
            .map_err(StorageError::internal)?,
        created_at: Timestamp::from_millis(doc.created_at),
        updated_at: Timestamp::from_millis(doc.updated_at),
        expire_at: Timestamp::from_millis(expire_at),
        created_user_id: doc
            .created_user_id
            .map(|u| UserId::parse(&u).map_err(|_| corrupt("user id")))
            .transpose()?,
        created_session_id: doc
            .created_session_id
            .map(|s| SessionId::parse(&s).map_err(|_| corrupt("session id")))
            .transpose()?,
    })
}

const COLUMNS: [&str; 3] = ["id", "expire_at", "data"];
const TYPES: [ColumnType; 3] = [ColumnType::Text, ColumnType::Int, ColumnType::Text];

fn binds(s: &SignUp) -> Result<Vec<Bind>, StorageError> {
    Ok(vec![
        Bind::Text(s.id.to_string()),
        Bind::Int(s.expire_at.as_millis()),
        Bind::Text(encode(s)?),
    ])
}

fn select(id: &SignUpId, lock: bool, dialect: Dialect) -> Statement {
    let mut b = Builder::new(
        dialect,
        "SELECT id, expire_at, data FROM sign_ups WHERE id = ",
    );
    b.bind(Bind::Text(id.to_string()));
    if lock && dialect == Dialect::Postgres {
        b.push(" FOR UPDATE");
    }
    b.finish()
}

fn from_values(values: &[Value]) -> Result<SignUp, StorageError> {
    match values {
        [
            Value::Text(Some(id)),
            Value::Int(Some(expire_at)),
            Value::Text(Some(data)),
        ] => decode(id, *expire_at, data),
        _ => Err(corrupt("row")),
    }
}

async fn load(
    conn: &mut dyn crate::exec::SqlConn,
    id: &SignUpId,
    lock: bool,
) -> Result<SignUp, StorageError> {
    let statement = select(id, lock, conn.dialect());
    conn.fetch_values(statement, &TYPES)
        .await?
        .into_iter()
        .next()
        .map(|values| from_values(&values))
        .transpose()?
        .ok_or_else(|| DomainError::not_found("sign-up", id.as_str()).into())
}

async fn write(conn: &mut dyn crate::exec::SqlConn, s: &SignUp) -> Result<(), StorageError> {
    let dialect = conn.dialect();
    conn.execute(sql::update_by_id("sign_ups", &COLUMNS, binds(s)?, dialect))
        .await?;
    Ok(())
}

#[async_trait]
impl<D: SqlDatabase> SignUpStore for D {
    #[tracing::instrument(name = "store.insert_sign_up", skip_all)]
    async fn insert_sign_up(&self, sign_up: &SignUp) -> Result<(), StorageError> {
        let mut conn = self.connection().await?;
        let dialect = conn.dialect();
        conn.execute(sql::insert("sign_ups", &COLUMNS, binds(sign_up)?, dialect))
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.get_sign_up", skip_all)]
    async fn get_sign_up(&self, id: &SignUpId) -> Result<Option<SignUp>, StorageError> {
        let mut conn = self.connection().await?;
        match load(conn.as_mut(), id, false).await {
            Ok(s) => Ok(Some(s)),
            Err(StorageError::Rejected(DomainError::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(name = "store.update_sign_up", skip_all)]
    async fn update_sign_up(
        &self,
        id: &SignUpId,
        mutation: SignUpMutation<'_>,
    ) -> Result<SignUp, StorageError> {
        let mut tx = self.begin_write().await?;
        let mut sign_up = load(tx.as_mut(), id, true).await?;
        mutation(&mut sign_up)?;
        write(tx.as_mut(), &sign_up).await?;
        tx.commit().await?;
        Ok(sign_up)
    }

    #[tracing::instrument(name = "store.admit_code_send", skip_all)]
    async fn admit_code_send(
        &self,
        target: &str,
        limit: u32,
        window_ms: i64,
        now: Timestamp,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        let dialect = tx.dialect();
        let mut b = Builder::new(
            dialect,
            "SELECT window_start, sends FROM code_send_windows WHERE target = ",
        );
        b.bind(Bind::Text(target.to_owned()));
        if dialect == Dialect::Postgres {
            b.push(" FOR UPDATE");
        }
        let rows = tx
            .fetch_values(b.finish(), &[ColumnType::Int, ColumnType::Int])
            .await?;
        let mut window = match rows.first().map(Vec::as_slice) {
            Some([Value::Int(Some(start)), Value::Int(Some(sends))]) => SendWindow {
                started_at: Timestamp::from_millis(*start),
                count: u32::try_from(*sends).unwrap_or(u32::MAX),
            },
            _ => SendWindow::default(),
        };
        window.admit(limit, window_ms, now, "this identifier")?;
        let mut b = Builder::new(
            dialect,
            "INSERT INTO code_send_windows (target, window_start, sends) VALUES (",
        );
        b.bind(Bind::Text(target.to_owned()));
        b.push(", ");
        b.bind(Bind::Int(window.started_at.as_millis()));
        b.push(", ");
        b.bind(Bind::Int(i64::from(window.count)));
        b.push(
            ") ON CONFLICT (target) DO UPDATE SET window_start = excluded.window_start, \
             sends = excluded.sends",
        );
        tx.execute(b.finish()).await?;
        tx.commit().await
    }

    #[tracing::instrument(name = "store.admit_unknown_attempt", skip_all)]
    async fn admit_unknown_attempt(
        &self,
        target: &str,
        policy: &LockoutPolicy,
        now: Timestamp,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        let dialect = tx.dialect();
        let mut b = Builder::new(
            dialect,
            "SELECT failed_attempts, locked_until FROM shadow_lockouts WHERE target = ",
        );
        b.bind(Bind::Text(target.to_owned()));
        if dialect == Dialect::Postgres {
            b.push(" FOR UPDATE");
        }
        let rows = tx
            .fetch_values(b.finish(), &[ColumnType::Int, ColumnType::Int])
            .await?;
        let mut lockout = match rows.first().map(Vec::as_slice) {
            Some([Value::Int(Some(failed)), Value::Int(until)]) => Lockout {
                failed_attempts: u32::try_from(*failed).unwrap_or(u32::MAX),
                locked_until: until.map(Timestamp::from_millis),
            },
            _ => Lockout::default(),
        };
        // The same rules as a user's.
        lockout.admit(policy, now)?;
        let mut b = Builder::new(
            dialect,
            "INSERT INTO shadow_lockouts (target, failed_attempts, locked_until) VALUES (",
        );
        b.bind(Bind::Text(target.to_owned()));
        b.push(", ");
        b.bind(Bind::Int(i64::from(lockout.failed_attempts)));
        b.push(", ");
        b.bind(
            lockout
                .locked_until
                .map_or(Bind::NullInt, |t| Bind::Int(t.as_millis())),
        );
        b.push(
            ") ON CONFLICT (target) DO UPDATE SET failed_attempts = excluded.failed_attempts, \
             locked_until = excluded.locked_until",
        );
        tx.execute(b.finish()).await?;
        tx.commit().await
    }

    #[tracing::instrument(name = "store.complete_sign_up", skip_all)]
    async fn complete_sign_up(
        &self,
        id: &SignUpId,
        record: &UserRecord,
        session: &Session,
        now: Timestamp,
    ) -> Result<SignUp, StorageError> {
        let mut tx = self.begin_write().await?;
        let mut sign_up = load(tx.as_mut(), id, true).await?;
        sign_up.ensure_open(now)?;
        insert_user(tx.as_mut(), record).await?;
        let dialect = tx.dialect();
        tx.execute(crate::sessions::insert_session_statement(session, dialect))
            .await?;
        sign_up.created_user_id = Some(record.user.id.clone());
        sign_up.created_session_id = Some(session.id.clone());
        sign_up.updated_at = now;
        write(tx.as_mut(), &sign_up).await?;
        tx.commit().await?;
        Ok(sign_up)
    }
}
