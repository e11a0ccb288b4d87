//! Group commit: new users whose inserts arrive while the store is busy
//! with others wait, and then go to the database together.
//!
//! Every insert costs the database more than its rows: on SQLite, which
//! has one writer at a time, a commit writes a new segment of the
//! full-text index and hands the write lock to the next caller; on
//! PostgreSQL, a statement is a round trip, an executor started and a
//! transaction committed. So inserts queue here, and whoever takes the
//! next turn sends every insert waiting (up to [`MOST_PER_TRANSACTION`])
//! at once:
//!
//! - SQLite (one turn at a time): one write transaction, and in it one
//!   call to the writer's thread with every user's rows, their entries in
//!   the search index and a read of who else holds their identifiers, in
//!   a savepoint ([`crate::exec`]'s `insert_and_index_unless_held`). When
//!   another user holds one, or a row is refused (a username taken), the
//!   savepoint is rolled back, and each insert runs again inside a
//!   savepoint of its own in the same transaction, so that one refused
//!   insert (by the store or by an insert earlier in the transaction)
//!   rolls back its own rows only, and is answered with its own error.
//! - PostgreSQL (several turns at once, each on a connection of its own):
//!   one statement inserting every user, which inserts nothing when
//!   another user holds one of their email addresses or phone numbers
//!   ([`crate::exec`]'s `insert_all_unless_held`). When it inserts nothing,
//!   or is refused, each insert runs again alone, as it would without a
//!   queue, and gets its own answer.
//!
//! On both backends, two inserts of one group that name the same email
//! address or phone number run one at a time from the start: one read of
//! holders cannot settle an identifier between two of its own users.
//!
//! In both:
//! - No caller is answered before the commit: a user reported created is
//!   durable, and when the commit fails every insert of the transaction
//!   fails with it.
//! - The inserts run in a task of their own, so a caller that goes away
//!   (a cancelled call) cannot abandon the others' inserts halfway. An
//!   insert whose caller went away before its turn is not made.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use roster_domain::{UserId, UserRecord};
use tokio::sync::oneshot;

use crate::StorageError;
use crate::exec::{
    SqlConn, SqlDatabase, SqlTransaction, index_new_users, insert_all_unless_held, insert_alone,
    insert_and_index_unless_held, insert_unindexed, insert_user, unindexed,
};
use crate::sql::{Dialect, Statement};

/// Most inserts one group takes: enough to share a commit among every
/// caller of a busy server, few enough that other writers wait for one
/// transaction of bounded length, and that a group's statement stays
/// under the database's limit of bound values.
pub const MOST_PER_TRANSACTION: usize = 64;

/// The queue of inserts waiting for a turn (see the module
/// documentation).
#[derive(Debug)]
pub struct GroupCommit {
    waiting: Mutex<Vec<Waiting>>,
    /// Turns: one is held by each task that runs a group of waiting
    /// inserts, from taking them until all are answered.
    turns: Arc<tokio::sync::Semaphore>,
    transactions: AtomicU64,
    inserts: AtomicU64,
    /// Shared with the tasks that run the inserts.
    alone: Arc<AtomicU64>,
}

/// One turn at a time, as a backend with one writer needs.
impl Default for GroupCommit {
    fn default() -> Self {
        Self::new(1)
    }
}

/// What a [`GroupCommit`] has done since the store opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Groups of waiting inserts sent to the database: a transaction each
    /// on SQLite, a statement each on PostgreSQL.
    pub transactions: u64,
    /// Inserts those groups took.
    pub inserts: u64,
    /// Inserts of groups of several that went to the database one at a
    /// time after all: another user held an identifier of their group, a
    /// row was refused, or two of them named one identifier.
    pub alone: u64,
}

/// An insert waiting for its transaction, and where its answer goes.
#[derive(Debug)]
struct Waiting {
    record: UserRecord,
    answer: oneshot::Sender<Result<(), StorageError>>,
}

impl GroupCommit {
    /// A queue whose inserts go to the database in up to `turns` groups
    /// at once (at least one).
    pub fn new(turns: usize) -> Self {
        Self {
            waiting: Mutex::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(turns.max(1))),
            transactions: AtomicU64::default(),
            inserts: AtomicU64::default(),
            alone: Arc::default(),
        }
    }

    /// Inserts waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.queue().len()
    }

    /// Groups sent and inserts taken so far.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.transactions.load(Relaxed),
            inserts: self.inserts.load(Relaxed),
            alone: self.alone.load(Relaxed),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // The queue is only pushed to and drained; a panic elsewhere
        // cannot leave it half changed.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts `record` together with the inserts waiting with it, as
    /// [`crate::UserStore::insert_user`] does alone.
    pub(crate) async fn insert<D>(&self, db: &D, record: &UserRecord) -> Result<(), StorageError>
    where
        D: SqlDatabase + Clone + 'static,
    {
        let (answer, answered) = oneshot::channel();
        self.queue().push(Waiting {
            record: record.clone(),
            answer,
        });
        let mut answered = std::pin::pin!(answered);
        tokio::select! {
            biased;
            // An earlier turn took this insert and has answered it.
            result = &mut answered => return result.unwrap_or_else(|_| Err(unanswered())),
            // The semaphore is never closed: every acquisition gets a turn.
            Ok(turn) = self.turns.clone().acquire_owned() => {
                let batch: Vec<Waiting> = {
                    let mut queue = self.queue();
                    let end = queue.len().min(MOST_PER_TRANSACTION);
                    queue.drain(..end).collect()
                };
                if batch.is_empty() {
                    drop(turn);
                } else {
                    self.transactions.fetch_add(1, Relaxed);
                    self.inserts.fetch_add(batch.len() as u64, Relaxed);
                    let db = db.clone();
                    let alone = Arc::clone(&self.alone);
                    tokio::spawn(async move {
                        commit_together(&db, batch, &alone).await;
                        drop(turn);
                    });
                }
            }
        }
        answered.await.unwrap_or_else(|_| Err(unanswered()))
    }
}

fn unanswered() -> StorageError {
    StorageError::internal("an insert's transaction ended without answering it")
}

/// Inserts `batch` together, as its backend does (see the module
/// documentation), and answers each insert once it is committed; adds to
/// `alone` how many run again alone, before any of them is answered, so
/// that a caller who has its answer sees them counted.
#[tracing::instrument(name = "store.insert_users_together", skip_all, fields(count = batch.len()))]
async fn commit_together<D: SqlDatabase>(db: &D, batch: Vec<Waiting>, alone: &AtomicU64) {
    // A caller that went away before its turn needs no insert.
    let batch: Vec<Waiting> = batch
        .into_iter()
        .filter(|w| !w.answer.is_closed())
        .collect();
    // Two inserts naming one identifier settle it one after the other.
    let together = batch.len() > 1 && !shares_identifier(&batch);
    match db.dialect() {
        Dialect::Sqlite => commit_in_one_transaction(db, batch, together, alone).await,
        Dialect::Postgres => insert_in_one_statement(db, batch, together, alone).await,
    }
}

/// The records of `batch`.
fn records(batch: &[Waiting]) -> Vec<&UserRecord> {
    batch.iter().map(|w| &w.record).collect()
}

/// Answers every insert of `batch`: inserted.
fn answer_inserted(batch: Vec<Waiting>) {
    for waiting in batch {
        // A caller that went away needs no answer.
        let _ = waiting.answer.send(Ok(()));
    }
}

/// PostgreSQL: `batch` in one statement when it may go `together`, or,
/// when that inserts nothing or is refused, each insert alone; counts in
/// `alone` how many ran alone, of a group of several.
async fn insert_in_one_statement<D: SqlDatabase>(
    db: &D,
    batch: Vec<Waiting>,
    together: bool,
    alone: &AtomicU64,
) {
    if together {
        match insert_all_unless_held(db, &records(&batch)).await {
            Ok(true) => {
                answer_inserted(batch);
                return;
            }
            // Another user holds an identifier, or one insert was
            // refused (a username taken) or lost a race: alone, each
            // settles its own identifiers and gets its own answer.
            Ok(false) | Err(StorageError::Conflict { .. } | StorageError::Aborted(_)) => {}
            // The database failed the statement itself: it would fail
            // each insert alone too.
            Err(error) => {
                answer_all(batch, &error);
                return;
            }
        }
    }
    count_alone(alone, &batch);
    for waiting in batch {
        let outcome = insert_alone(db, &waiting.record).await;
        let _ = waiting.answer.send(outcome);
    }
}

/// Counts in `alone` the inserts of `batch` that run alone, when it is a
/// group of several.
fn count_alone(alone: &AtomicU64, batch: &[Waiting]) {
    if batch.len() > 1 {
        alone.fetch_add(batch.len() as u64, Relaxed);
    }
}

/// Whether two inserts of `batch` name the same email address or phone
/// number. One statement reads the other holders of its identifiers from
/// before its inserts, so it would not see the other insert's copy, which
/// the two must settle between them (only verified identifiers are
/// unique, and a verified one takes the unverified copies away).
fn shares_identifier(batch: &[Waiting]) -> bool {
    let mut seen = std::collections::HashSet::new();
    batch.iter().any(|w| {
        let mut own = std::collections::HashSet::new();
        w.record
            .user
            .identifier_changes(None)
            .into_iter()
            .filter(|c| own.insert((c.channel, c.normalized.clone())))
            .any(|c| !seen.insert((c.channel, c.normalized)))
    })
}

/// The savepoint of a group's inserts on SQLite.
const GROUP_SAVEPOINT: &str = "new_users";

/// SQLite: `batch` in one write transaction: all of it in one call when
/// it may go `together`, or, when another user holds an identifier of
/// its users or a row is refused, each insert in a savepoint of its own;
/// counts in `alone` how many ran alone, of a group of several.
async fn commit_in_one_transaction<D: SqlDatabase>(
    db: &D,
    batch: Vec<Waiting>,
    together: bool,
    alone: &AtomicU64,
) {
    let mut tx = match db.begin_write().await {
        Ok(tx) => tx,
        Err(error) => {
            answer_all(batch, &error);
            return;
        }
    };
    if together {
        match insert_and_index_unless_held(tx.as_mut(), &records(&batch), GROUP_SAVEPOINT).await {
            Ok(true) => {
                match tx.commit().await {
                    Ok(()) => answer_inserted(batch),
                    Err(error) => answer_all(batch, &error),
                }
                return;
            }
            // Held by another user, or refused: nothing of it remains,
            // and each insert runs in a savepoint of its own below.
            Ok(false) => {}
            Err(error) => {
                answer_all(batch, &error);
                return;
            }
        }
    }
    count_alone(alone, &batch);
    insert_each_in_savepoints(tx, batch).await;
}

/// SQLite: `batch` in the open write transaction `tx`, each insert in a
/// savepoint of its own, then commits.
async fn insert_each_in_savepoints(mut tx: Box<dyn SqlTransaction + '_>, batch: Vec<Waiting>) {
    let mut waiting = batch.into_iter();
    let mut done = Vec::with_capacity(waiting.len());
    let mut inserts = Inserts::default();
    let ended = loop {
        let Some(next) = waiting.next() else {
            break index_new_users(tx.as_mut(), &inserts.unindexed).await;
        };
        if next.answer.is_closed() {
            continue;
        }
        match inserts.insert(tx.as_mut(), &next.record).await {
            Ok(outcome) => done.push((next, outcome)),
            Err(error) => {
                done.push((next, Ok(())));
                break Err(error);
            }
        }
    };
    let ended = match ended {
        Ok(()) => tx.commit().await,
        Err(error) => Err(error),
    };
    match ended {
        Ok(()) => {
            for (waiting, outcome) in done {
                // A caller that went away needs no answer.
                let _ = waiting.answer.send(outcome);
            }
        }
        // The transaction itself failed: nothing of it is kept.
        Err(error) => answer_all(done.into_iter().map(|(w, _)| w).chain(waiting), &error),
    }
}

/// The inserts of one shared transaction so far.
#[derive(Default)]
struct Inserts {
    /// Savepoints begun: the next one's number.
    savepoints: usize,
    /// The savepoint of the last insert, if it succeeded: the next insert
    /// releases it, in the same call, or the commit does.
    open: Option<usize>,
    /// Users inserted and not yet in the search index.
    unindexed: Vec<(UserId, String)>,
}

impl Inserts {
    /// Runs one insert in a savepoint of its own: `Ok` with the insert's
    /// own outcome (a refusal rolled back to the savepoint), or `Err` when
    /// the transaction can go no further.
    ///
    /// Each savepoint has its own name, so that rolling back to one that
    /// failed to begin is an error of the transaction, never a rollback of
    /// an earlier insert. Its beginning, and the release of the previous
    /// one, travel with the insert's statements: one call to the database
    /// per insert.
    ///
    /// Its user enters the search index with the others, at the end (see
    /// [`index_new_users`]). Unless another user holds one of its
    /// identifiers: settling that may rewrite the other user, and an
    /// update of a user's search text takes out its old entry, which must
    /// then be there. So everyone inserted so far enters the index first,
    /// and this insert runs again whole, as it would alone.
    async fn insert(
        &mut self,
        conn: &mut dyn SqlConn,
        record: &UserRecord,
    ) -> Result<Result<(), StorageError>, StorageError> {
        let mut savepoint = self.begin();
        let outcome = match insert_unindexed(conn, record, &savepoint.sql).await {
            Ok((_, holders)) if holders.is_empty() => {
                self.open = Some(savepoint.number);
                self.unindexed.push(unindexed(&record.user));
                return Ok(Ok(()));
            }
            Ok(_) => {
                conn.execute(Statement::unbound(&savepoint.roll_back()))
                    .await?;
                index_new_users(conn, &self.unindexed).await?;
                self.unindexed.clear();
                savepoint = self.begin();
                conn.execute(Statement::unbound(&savepoint.sql)).await?;
                insert_user(conn, record).await
            }
            Err(refused) => Err(refused),
        };
        let end = if outcome.is_ok() {
            format!("RELEASE {}", savepoint.name())
        } else {
            savepoint.roll_back()
        };
        conn.execute(Statement::unbound(&end)).await?;
        Ok(outcome)
    }

    /// The next savepoint, and the SQL that releases the open one and
    /// begins it.
    fn begin(&mut self) -> Savepoint {
        let number = self.savepoints;
        self.savepoints += 1;
        let release = self
            .open
            .take()
            .map(|open| format!("RELEASE {}; ", Savepoint::named(open)));
        let sql = format!(
            "{}SAVEPOINT {}; ",
            release.unwrap_or_default(),
            Savepoint::named(number)
        );
        Savepoint { number, sql }
    }
}

/// A savepoint of one insert.
struct Savepoint {
    number: usize,
    /// What begins it.
    sql: String,
}

impl Savepoint {
    fn named(number: usize) -> String {
        format!("new_user_{number}")
    }

    fn name(&self) -> String {
        Self::named(self.number)
    }

    /// SQL that undoes the insert, and ends the savepoint.
    fn roll_back(&self) -> String {
        format!("ROLLBACK TO {0}; RELEASE {0}", self.name())
    }
}

/// Answers every insert of `waiting` with `error`, the failure of the
/// transaction they shared.
fn answer_all(waiting: impl IntoIterator<Item = Waiting>, error: &StorageError) {
    tracing::warn!(error = %error_chain(error), "a shared insert transaction failed");
    for w in waiting {
        let _ = w.answer.send(Err(copy(error)));
    }
}

/// `error` with its causes, as one line.
fn error_chain(error: &StorageError) -> String {
    match causes(error) {
        Some(causes) => format!("{error}: {causes}"),
        None => error.to_string(),
    }
}

/// The causes of `error`, as one line.
fn causes(error: &StorageError) -> Option<String> {
    let mut source = std::error::Error::source(error)?;
    let mut text = source.to_string();
    while let Some(cause) = source.source() {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause;
    }
    Some(text)
}

/// An error of the same kind as `error`, for one more caller: the
/// transaction's failure is every one of its inserts' failure.
fn copy(error: &StorageError) -> StorageError {
    let cause = || causes(error).unwrap_or_else(|| error.to_string()).into();
    match error {
        StorageError::Conflict { field } => StorageError::Conflict {
            field: field.clone(),
        },
        StorageError::Rejected(refusal) => StorageError::Rejected(refusal.clone()),
        StorageError::Aborted(_) => StorageError::Aborted(cause()),
        StorageError::Unavailable(_) => StorageError::Unavailable(cause()),
        StorageError::Internal(_) => StorageError::Internal(cause()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_the_kind_and_the_causes() {
        let io = std::io::Error::other("disk I/O error");
        let copied = copy(&StorageError::Unavailable(Box::new(io)));
        assert!(matches!(copied, StorageError::Unavailable(_)));
        assert_eq!(error_chain(&copied), "database unavailable: disk I/O error");
        let copied = copy(&StorageError::internal("corrupt"));
        assert!(matches!(copied, StorageError::Internal(_)));
        assert_eq!(error_chain(&copied), "storage failure: corrupt");
        let copied = copy(&StorageError::Conflict {
            field: "username".to_owned(),
        });
        assert!(matches!(copied, StorageError::Conflict { field } if field == "username"));
    }
}
