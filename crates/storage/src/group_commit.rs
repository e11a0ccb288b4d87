//! Group commit: new users whose inserts arrive while another insert's
//! transaction runs wait, and then share one write transaction.
//!
//! A backend with one writer at a time (SQLite) pays for every transaction
//! more than its rows cost: the full-text index writes a new segment at
//! each commit, and the write lock passes from one caller to the next. So
//! inserts queue here, and whoever takes the next turn commits every
//! insert waiting (up to [`MOST_PER_TRANSACTION`]) in one transaction.
//!
//! - Each insert runs inside a savepoint of its own: one refused insert (a
//!   username taken, by the store or by an insert earlier in the same
//!   transaction) rolls back its own rows only, and is answered with its
//!   own error.
//! - No caller is answered before the commit: a user reported created is
//!   durable, and when the commit fails every insert of the transaction
//!   fails with it.
//! - The transaction runs in a task of its own, so a caller that goes away
//!   (a cancelled call) cannot abandon the others' inserts halfway. An
//!   insert whose caller went away before its turn is not made.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use roster_domain::{UserId, UserRecord};
use tokio::sync::oneshot;

use crate::StorageError;
use crate::exec::{
    SqlConn, SqlDatabase, index_new_users, insert_unindexed, insert_user, unindexed,
};
use crate::sql::Statement;

/// Most inserts one transaction takes: enough to share a commit among
/// every caller of a busy server, few enough that other writers wait for
/// one transaction of bounded length.
pub const MOST_PER_TRANSACTION: usize = 64;

/// The queue of inserts waiting for a write transaction (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct GroupCommit {
    waiting: Mutex<Vec<Waiting>>,
    /// Held by the task that runs a transaction of waiting inserts, from
    /// taking them until all are answered.
    turn: Arc<tokio::sync::Mutex<()>>,
    transactions: AtomicU64,
    inserts: AtomicU64,
}

/// What a [`GroupCommit`] has done since the store opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions begun for waiting inserts.
    pub transactions: u64,
    /// Inserts those transactions took.
    pub inserts: u64,
}

/// An insert waiting for its transaction, and where its answer goes.
#[derive(Debug)]
struct Waiting {
    record: UserRecord,
    answer: oneshot::Sender<Result<(), StorageError>>,
}

impl GroupCommit {
    /// Inserts waiting for a transaction now.
    pub fn waiting(&self) -> usize {
        self.queue().len()
    }

    /// Transactions begun and inserts taken so far.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.transactions.load(Relaxed),
            inserts: self.inserts.load(Relaxed),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // The queue is only pushed to and drained; a panic elsewhere
        // cannot leave it half changed.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts `record` in a transaction shared with the inserts waiting
    /// with it, as [`crate::UserStore::insert_user`] does alone.
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
            turn = self.turn.clone().lock_owned() => {
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
                    tokio::spawn(async move {
                        commit_together(&db, batch).await;
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

/// Inserts `batch` in one write transaction, each insert in a savepoint,
/// and answers each once the transaction has ended.
#[tracing::instrument(name = "store.insert_users_together", skip_all, fields(count = batch.len()))]
async fn commit_together<D: SqlDatabase>(db: &D, batch: Vec<Waiting>) {
    let mut tx = match db.begin_write().await {
        Ok(tx) => tx,
        Err(error) => return answer_all(batch, &error),
    };
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
