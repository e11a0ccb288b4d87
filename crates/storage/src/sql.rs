//! SQL shared by the PostgreSQL and SQLite backends.
//!
//! Both schemas use the same table and column names, so listing and
//! counting differ only in placeholders (`$1` against `?`). Building the
//! statements once here keeps the two backends' filtering and ordering
//! semantics identical; the contract suite checks they are.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::LazyLock;

use roster_domain::{Channel, EmailAddress, IdentificationId, IdentifierChange, PhoneNumber};

use crate::query::ListQuery;
use roster_domain::query::{OrderField, SortValue, UserFilter};

/// Which placeholder syntax to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A value bound to a placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Bool(bool),
    /// A JSON document given as text (`jsonb` in PostgreSQL, text in
    /// SQLite).
    Json(String),
    /// NULL of a text column.
    NullText,
    /// NULL of an integer column.
    NullInt,
    /// An array of integers (`integer[]`): PostgreSQL only.
    Ints(Vec<i32>),
}

/// SQL text with its bound values, in placeholder order. The text of a
/// statement run on every call of a hot path is a `'static` one, neither
/// built nor copied per call.
#[derive(Clone, Debug)]
pub struct Statement {
    pub sql: Cow<'static, str>,
    pub binds: Vec<Bind>,
}

impl Statement {
    /// SQL with nothing to bind.
    pub fn unbound(sql: &str) -> Self {
        Self {
            sql: Cow::Owned(sql.to_owned()),
            binds: Vec::new(),
        }
    }
}

/// Columns of `users u` every backend selects to build a user, in this
/// order.
/// Metadata is read as text in both dialects.
pub const USER_COLUMNS: &str = "u.id, u.external_id, u.first_name, u.last_name, u.username, u.locale, \
     u.primary_email_address_id, u.primary_phone_number_id, u.password_hash, \
     CAST(u.public_metadata AS TEXT), CAST(u.private_metadata AS TEXT), CAST(u.unsafe_metadata AS TEXT), \
     u.banned, u.locked, u.image, u.created_at, u.updated_at, u.last_sign_in_at, \
     u.code_window_start, u.code_window_sends, u.failed_sign_ins, u.locked_until";

/// [`USER_COLUMNS`] followed by the user's email addresses and phone
/// numbers as JSON arrays of rows, the shape [`crate::rows::StoredUser`]
/// reads: whole users from one table, one row each. The arrays are kept
/// on the user's row (`email_rows`, `phone_rows`, which
/// [`crate::rows::UserRow::binds`] writes with every change to the user);
/// where they are not (NULL: a user written by an earlier version of the
/// store, on PostgreSQL, until [`fill_identifier_rows`] runs), they are
/// gathered from the identifier tables instead.
pub fn user_columns(dialect: Dialect) -> &'static str {
    fn columns(dialect: Dialect) -> String {
        let (emails, phones) = gathered_identifier_rows(dialect);
        format!(
            "{USER_COLUMNS}, COALESCE(u.email_rows, {emails}), COALESCE(u.phone_rows, {phones})"
        )
    }
    static POSTGRES: LazyLock<String> = LazyLock::new(|| columns(Dialect::Postgres));
    static SQLITE: LazyLock<String> = LazyLock::new(|| columns(Dialect::Sqlite));
    match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Sqlite => &SQLITE,
    }
}

/// Expressions of `users u`'s email addresses and phone numbers as JSON
/// arrays of rows, gathered from the identifier tables.
fn gathered_identifier_rows(dialect: Dialect) -> (String, String) {
    const VERIFICATION: &str = "verification_status, verification_strategy, \
        verification_attempts, verification_expire_at, verification_code_hash, \
        verification_sent_at, verification_window_start, verification_window_sends";
    let (aggregate, array) = match dialect {
        Dialect::Postgres => ("json_agg", "json_build_array"),
        Dialect::Sqlite => ("json_group_array", "json_array"),
    };
    (
        format!(
            "CAST(COALESCE((SELECT {aggregate}({array}(id, email_address, {array}({VERIFICATION}), \
             created_at, updated_at)) FROM email_addresses WHERE user_id = u.id), '[]') AS TEXT)"
        ),
        format!(
            "CAST(COALESCE((SELECT {aggregate}({array}(id, phone_number, {array}({VERIFICATION}), \
             reserved_for_second_factor, default_second_factor, created_at, updated_at)) \
             FROM phone_numbers WHERE user_id = u.id), '[]') AS TEXT)"
        ),
    )
}

/// `UPDATE` that keeps on their rows the email addresses and phone
/// numbers of the users `ids` (PostgreSQL; see [`user_columns`]).
pub fn fill_identifier_rows(ids: &[String]) -> Statement {
    let (emails, phones) = gathered_identifier_rows(Dialect::Postgres);
    let mut b = Builder::new(
        Dialect::Postgres,
        &format!("UPDATE users u SET email_rows = {emails}, phone_rows = {phones} WHERE u.id IN "),
    );
    b.bind_list(ids.iter().map(|id| Bind::Text(id.clone())));
    b.finish()
}

/// `SELECT … FOR UPDATE` of the ids of up to `limit` users after `after`,
/// in id order, whose email addresses and phone numbers are not kept on
/// their rows (PostgreSQL).
pub fn users_without_identifier_rows(after: &str, limit: usize) -> Statement {
    let mut b = Builder::new(
        Dialect::Postgres,
        "SELECT id FROM users WHERE (email_rows IS NULL OR phone_rows IS NULL) AND id > ",
    );
    b.bind(Bind::Text(after.to_owned()));
    b.push(&format!(" ORDER BY id LIMIT {limit} FOR UPDATE"));
    b.finish()
}

/// Columns [`crate::rows::UserRow::binds`] writes, in order: all of them
/// on PostgreSQL, all but the last, `search_terms`, on SQLite (see
/// [`user_write_columns`]).
pub const USER_WRITE_COLUMNS: [&str; 28] = [
    "id",
    "external_id",
    "first_name",
    "last_name",
    "username",
    "username_normalized",
    "locale",
    "primary_email_address_id",
    "primary_phone_number_id",
    "primary_email_sort",
    "password_hash",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
    "banned",
    "locked",
    "image",
    "created_at",
    "updated_at",
    "last_sign_in_at",
    "search_text",
    "code_window_start",
    "code_window_sends",
    "failed_sign_ins",
    "locked_until",
    "email_rows",
    "phone_rows",
    "search_terms",
];

/// The columns a user row writes on `dialect`. PostgreSQL's users table
/// holds the keys of its search index (`search::index_keys`); SQLite
/// keeps its index of search terms in a table of its own.
pub fn user_write_columns(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Postgres => &USER_WRITE_COLUMNS,
        Dialect::Sqlite => &USER_WRITE_COLUMNS[..USER_WRITE_COLUMNS.len() - 1],
    }
}

/// Columns [`crate::rows::EmailRow::binds`] writes, in order.
pub const EMAIL_WRITE_COLUMNS: [&str; 14] = [
    "id",
    "user_id",
    "email_address",
    "email_normalized",
    "verification_status",
    "verification_strategy",
    "verification_attempts",
    "verification_expire_at",
    "verification_code_hash",
    "verification_sent_at",
    "verification_window_start",
    "verification_window_sends",
    "created_at",
    "updated_at",
];

/// Columns [`crate::rows::PhoneRow::binds`] writes, in order.
pub const PHONE_WRITE_COLUMNS: [&str; 15] = [
    "id",
    "user_id",
    "phone_number",
    "verification_status",
    "verification_strategy",
    "verification_attempts",
    "verification_expire_at",
    "verification_code_hash",
    "verification_sent_at",
    "verification_window_start",
    "verification_window_sends",
    "reserved_for_second_factor",
    "default_second_factor",
    "created_at",
    "updated_at",
];

pub(crate) struct Builder {
    dialect: Dialect,
    sql: String,
    binds: Vec<Bind>,
}

impl Builder {
    pub(crate) fn new(dialect: Dialect, sql: &str) -> Self {
        Self {
            dialect,
            sql: sql.to_owned(),
            binds: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    pub(crate) fn bind(&mut self, value: Bind) {
        let json = matches!(value, Bind::Json(_));
        self.binds.push(value);
        match self.dialect {
            Dialect::Postgres if json => {
                let _ = write!(self.sql, "CAST(${} AS jsonb)", self.binds.len());
            }
            Dialect::Postgres => {
                let _ = write!(self.sql, "${}", self.binds.len());
            }
            Dialect::Sqlite => self.sql.push('?'),
        }
    }

    fn bind_list<I: IntoIterator<Item = Bind>>(&mut self, values: I) {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self.push(")");
    }

    pub(crate) fn finish(self) -> Statement {
        Statement {
            sql: Cow::Owned(self.sql),
            binds: self.binds,
        }
    }
}

/// The expression a field sorts on; indexes exist on each (see the
/// migrations), and [`OrderField::value_of`] computes the same in Rust.
pub fn sort_expression(field: OrderField) -> &'static str {
    match field {
        OrderField::CreatedAt => "u.created_at",
        OrderField::UpdatedAt => "u.updated_at",
        OrderField::LastSignInAt => "COALESCE(u.last_sign_in_at, 0)",
        OrderField::EmailAddress => "u.primary_email_sort",
        OrderField::Username => "COALESCE(u.username_normalized, '')",
        OrderField::FirstName => "u.first_name",
        OrderField::LastName => "u.last_name",
    }
}

/// Escapes `LIKE` wildcards so a query matches literally.
fn like_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn texts<'a, I: IntoIterator<Item = &'a String>>(values: I) -> impl Iterator<Item = Bind> {
    values
        .into_iter()
        .map(|v| Bind::Text(v.clone()))
        .collect::<Vec<_>>()
        .into_iter()
}

/// The `WHERE` clause of `filter`. A `query` is narrowed by the trigram
/// index to the users holding all of `trigrams` (some of the query's, see
/// [`crate::search`]); none means no narrowing.
fn push_filter(b: &mut Builder, filter: &UserFilter, trigrams: &[String]) {
    b.push(" WHERE 1 = 1");
    if !filter.user_ids.is_empty() {
        b.push(" AND u.id IN ");
        b.bind_list(filter.user_ids.iter().map(|id| Bind::Text(id.to_string())));
    }
    if !filter.email_addresses.is_empty() {
        b.push(
            " AND u.id IN (SELECT e.user_id FROM email_addresses e WHERE e.email_normalized IN ",
        );
        b.bind_list(texts(&filter.email_addresses));
        b.push(")");
    }
    if !filter.phone_numbers.is_empty() {
        b.push(" AND u.id IN (SELECT p.user_id FROM phone_numbers p WHERE p.phone_number IN ");
        b.bind_list(
            filter
                .phone_numbers
                .iter()
                .map(|p| Bind::Text(p.to_string())),
        );
        b.push(")");
    }
    if !filter.usernames.is_empty() {
        b.push(" AND u.username_normalized IN ");
        b.bind_list(texts(&filter.usernames));
    }
    if !filter.external_ids.is_empty() {
        b.push(" AND u.external_id IN ");
        b.bind_list(texts(&filter.external_ids));
    }
    if let Some(query) = &filter.query {
        // `search_text` holds the searched fields, lowercased (see
        // `User::search_text`). The index narrows the candidates to the
        // users holding the terms `search::match_terms` (SQLite) or the
        // keys `search::match_keys` (PostgreSQL) makes of the query and
        // `trigrams`; comparing the whole query keeps the match exact.
        if !trigrams.is_empty() {
            match b.dialect {
                Dialect::Sqlite => {
                    // Terms are letters and digits (`search::match_terms`):
                    // nothing in them needs quoting.
                    let terms = crate::search::match_terms(query, trigrams);
                    b.push(
                        " AND u.rowid IN (SELECT rowid FROM users_search_terms \
                         WHERE users_search_terms MATCH ",
                    );
                    b.bind(Bind::Text(terms.join(" AND ")));
                    b.push(")");
                }
                Dialect::Postgres => {
                    // Users without keys are those the store has yet to
                    // compute them for (`migrations/postgres/0008`): few,
                    // and found by their own partial index.
                    b.push(" AND (u.search_terms @> ");
                    b.bind(Bind::Ints(crate::search::match_keys(query, trigrams)));
                    b.push(" OR u.search_terms IS NULL)");
                }
            }
        }
        push_like(b, "u.search_text", query);
    }
    if let Some(banned) = filter.banned {
        b.push(" AND u.banned = ");
        b.bind(Bind::Bool(banned));
    }
    if let Some(after) = filter.created_after {
        b.push(" AND u.created_at >= ");
        b.bind(Bind::Int(after.as_millis()));
    }
    if let Some(before) = filter.created_before {
        b.push(" AND u.created_at < ");
        b.bind(Bind::Int(before.as_millis()));
    }
}

/// `SELECT` of one page of users ([`user_columns`]); `trigrams` as
/// [`push_filter`] takes them.
pub fn list_users(query: &ListQuery, trigrams: &[String], dialect: Dialect) -> Statement {
    let columns = user_columns(dialect);
    let mut b = Builder::new(dialect, &format!("SELECT {columns} FROM users u"));
    push_filter(&mut b, &query.filter, trigrams);
    push_page(&mut b, query, query.limit);
    b.finish()
}

/// `SELECT` of the first page of users matching the query's `query`
/// among only the first `window` users the rest of the query selects, in
/// its order. When that finds a full page, it is the page: the matches
/// found are the first in order. A `query` that many users match is
/// answered this way from a few rows instead of from a long posting list.
pub fn list_users_in_window(query: &ListQuery, window: usize, dialect: Dialect) -> Statement {
    let columns = user_columns(dialect);
    let mut b = Builder::new(
        dialect,
        &format!("SELECT {columns} FROM (SELECT * FROM users u"),
    );
    let others = UserFilter {
        query: None,
        ..query.filter.clone()
    };
    push_filter(&mut b, &others, &[]);
    push_page(&mut b, query, window);
    b.push(") u WHERE 1 = 1");
    if let Some(text) = &query.filter.query {
        push_like(&mut b, "u.search_text", text);
    }
    let unbounded = ListQuery {
        after: None,
        ..query.clone()
    };
    push_page(&mut b, &unbounded, query.limit);
    b.finish()
}

/// The keyset condition after `query`'s cursor, its order and `limit`.
fn push_page(b: &mut Builder, query: &ListQuery, limit: usize) {
    let sort = sort_expression(query.order.field);
    let (cmp, dir) = if query.order.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(cursor) = &query.after {
        b.push(&format!(" AND ({sort}, u.id) {cmp} ("));
        b.bind(match &cursor.value {
            SortValue::Int(i) => Bind::Int(*i),
            SortValue::Text(t) => Bind::Text(t.clone()),
        });
        b.push(", ");
        b.bind(Bind::Text(cursor.id.clone()));
        b.push(")");
    }
    b.push(&format!(" ORDER BY {sort} {dir}, u.id {dir}"));
    push_limit(b, limit);
}

/// ` LIMIT n`. On SQLite `n` is written into the SQL: SQLite compiles a
/// statement whose `LIMIT` is a parameter again each time the parameter
/// is bound (it plans with the bound value), so a parameter would
/// recompile every page read; a literal leaves one compiled statement per
/// page size, which the connection's statement cache keeps. PostgreSQL
/// gets a parameter: with a literal small limit its planner prefers
/// walking an ordering index and filtering, which for a rare `query`
/// reads the whole table (572 against 2 659 searches/s at 10 000 users).
fn push_limit(b: &mut Builder, limit: usize) {
    match b.dialect {
        Dialect::Sqlite => b.push(&format!(" LIMIT {limit}")),
        Dialect::Postgres => {
            b.push(" LIMIT ");
            b.bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
    }
}

/// `AND <text>` holds the substring `query`, matched literally.
///
/// SQLite compares with `instr`, not `LIKE`: a statement whose `LIKE`
/// pattern is a parameter is compiled again on every run with a new
/// pattern (the pattern may allow an index), and a page of users is a
/// long statement to compile. Both sides are lowercase (see
/// `User::search_text`), which is all `LIKE`'s case folding added.
fn push_like(b: &mut Builder, text: &str, query: &str) {
    b.push(" AND ");
    match b.dialect {
        Dialect::Sqlite => {
            b.push("instr(");
            b.push(text);
            b.push(", ");
            b.bind(Bind::Text(query.to_owned()));
            b.push(") > 0");
        }
        Dialect::Postgres => {
            b.push(text);
            b.push(" LIKE ");
            b.bind(Bind::Text(like_pattern(query)));
        }
    }
}

/// `SELECT count(*)` of the users matching a filter; `trigrams` as
/// [`push_filter`] takes them.
pub fn count_users(filter: &UserFilter, trigrams: &[String], dialect: Dialect) -> Statement {
    let mut b = Builder::new(dialect, "SELECT count(*) FROM users u");
    push_filter(&mut b, filter, trigrams);
    b.finish()
}

/// `INSERT` of one row; `binds` follow `columns`.
pub fn insert(table: &str, columns: &[&str], binds: Vec<Bind>, dialect: Dialect) -> Statement {
    insert_rows(table, columns, [binds], dialect)
}

/// `INSERT` of several rows in one statement; each row's binds follow
/// `columns`.
pub fn insert_rows(
    table: &str,
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<Bind>>,
    dialect: Dialect,
) -> Statement {
    let mut b = Builder::new(dialect, "");
    push_insert_rows(&mut b, table, columns, rows);
    b.finish()
}

fn push_insert_rows(
    b: &mut Builder,
    table: &str,
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<Bind>>,
) {
    b.push(&format!(
        "INSERT INTO {table} ({}) VALUES ",
        columns.join(", ")
    ));
    push_rows(b, rows);
}

/// Rows of values, `(…), (…)`.
fn push_rows(b: &mut Builder, rows: impl IntoIterator<Item = Vec<Bind>>) {
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.bind_list(row);
    }
}

/// `first`, then `next`, in one call: SQLite runs the statements of one
/// string in sequence, binding values in order (its placeholders are
/// not numbered).
pub fn then(first: Statement, next: Statement) -> Statement {
    let Statement { mut sql, mut binds } = first;
    sql.to_mut().push_str("; ");
    sql.to_mut().push_str(&next.sql);
    binds.extend(next.binds);
    Statement { sql, binds }
}

/// Rows for one table: its name, the columns, and each row's binds.
#[derive(Clone, Debug)]
pub struct TableRows<'a> {
    pub table: &'a str,
    pub columns: &'a [&'a str],
    pub rows: Vec<Vec<Bind>>,
}

/// A new user's rows, then [`identifier_holders`] of its `changes`, in one
/// call to the database: on PostgreSQL one statement whose `INSERT`s are
/// data-modifying `WITH` clauses of the `SELECT`; on SQLite, which has no
/// such clauses, the statements in sequence in one string (sqlx runs them
/// all in one call to the connection's thread, binding values in order).
/// The holders are read from before the inserts (PostgreSQL runs a
/// statement's clauses on one snapshot), and exclude `user_id` anyway.
pub fn insert_then_holders(
    tables: Vec<TableRows<'_>>,
    changes: &[IdentifierChange],
    user_id: &str,
    dialect: Dialect,
) -> Statement {
    let mut b = Builder::new(dialect, "");
    let tables: Vec<_> = tables.into_iter().filter(|t| !t.rows.is_empty()).collect();
    match dialect {
        Dialect::Postgres => {
            // Without holders to read, the last INSERT is the statement.
            let clauses = if changes.is_empty() {
                tables.len().saturating_sub(1)
            } else {
                tables.len()
            };
            for (i, t) in tables.into_iter().enumerate() {
                if i < clauses {
                    b.push(if i == 0 { "WITH " } else { ", " });
                    b.push(&format!("w{i} AS ("));
                    push_insert_rows(&mut b, t.table, t.columns, t.rows);
                    b.push(")");
                } else {
                    b.push(" ");
                    push_insert_rows(&mut b, t.table, t.columns, t.rows);
                }
            }
            b.push(" ");
        }
        Dialect::Sqlite => {
            for (i, t) in tables.into_iter().enumerate() {
                if i > 0 {
                    b.push("; ");
                }
                push_insert_rows(&mut b, t.table, t.columns, t.rows);
            }
            if !changes.is_empty() && !b.sql.is_empty() {
                b.push("; ");
            }
        }
    }
    if !changes.is_empty() {
        push_identifier_holders(&mut b, changes, user_id);
    }
    b.finish()
}

/// On PostgreSQL, a new user's rows inserted only if no other user holds
/// any of its identifiers (`changes`), and those holders, in one statement
/// that needs no transaction around it: `WITH h AS (holders), w0 AS (INSERT
/// … SELECT … WHERE NOT EXISTS (SELECT 1 FROM h)), … SELECT * FROM h`.
/// Rows come back only when nothing was inserted. `None` on SQLite, which
/// has no data-modifying `WITH` clauses.
pub fn insert_unless_held(
    tables: Vec<TableRows<'_>>,
    changes: &[IdentifierChange],
    user_id: &str,
    dialect: Dialect,
) -> Option<Statement> {
    if dialect != Dialect::Postgres {
        return None;
    }
    let mut b = Builder::new(dialect, "WITH h AS (");
    if changes.is_empty() {
        // No identifiers: no holders, and the same shape of answer.
        b.push("SELECT '', '', '', '' WHERE false");
    } else {
        push_identifier_holders(&mut b, changes, user_id);
    }
    b.push(")");
    for (i, t) in tables
        .into_iter()
        .filter(|t| !t.rows.is_empty())
        .enumerate()
    {
        b.push(&format!(
            ", w{i} AS (INSERT INTO {} ({}) SELECT * FROM (VALUES ",
            t.table,
            t.columns.join(", ")
        ));
        push_rows(&mut b, t.rows);
        b.push(") AS v WHERE NOT EXISTS (SELECT 1 FROM h))");
    }
    b.push(" SELECT * FROM h");
    Some(b.finish())
}

/// `UPDATE` of one row by id; `binds` follow `columns`, whose first is `id`.
pub fn update_by_id(
    table: &str,
    columns: &[&str],
    binds: Vec<Bind>,
    dialect: Dialect,
) -> Statement {
    let mut b = Builder::new(dialect, &format!("UPDATE {table} SET "));
    let mut binds = binds.into_iter();
    let id = binds.next();
    for (i, (column, value)) in columns.iter().skip(1).zip(binds).enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push(column);
        b.push(" = ");
        b.bind(value);
    }
    b.push(" WHERE id = ");
    b.bind(id.unwrap_or(Bind::NullText));
    b.finish()
}

/// `DELETE` of rows by id.
pub fn delete_by_ids(table: &str, ids: &[&IdentificationId], dialect: Dialect) -> Statement {
    let mut b = Builder::new(dialect, &format!("DELETE FROM {table} WHERE id IN "));
    b.bind_list(ids.iter().map(|id| Bind::Text(id.to_string())));
    b.finish()
}

/// `SELECT` of the first and last `created_at` of all users.
pub fn creation_range() -> Statement {
    Statement::unbound("SELECT min(created_at), max(created_at) FROM users")
}

/// `SELECT` of the search texts of the `count` users created first at or
/// after `at`.
pub fn search_texts_from(at: i64, count: usize, dialect: Dialect) -> Statement {
    let mut b = Builder::new(
        dialect,
        "SELECT search_text FROM users WHERE created_at >= ",
    );
    b.bind(Bind::Int(at));
    b.push(" ORDER BY created_at");
    push_limit(&mut b, count);
    b.finish()
}

/// Adds new users, given by id and search text, to SQLite's full-text
/// index of search terms (`search::index_terms`), which the store keeps
/// itself (see `migrations/sqlite/0010`): `None` on PostgreSQL, whose
/// trigram index is an index of the users table, or for no users.
pub fn index_new_users(users: &[(&str, &str)], dialect: Dialect) -> Option<Statement> {
    if dialect != Dialect::Sqlite || users.is_empty() {
        return None;
    }
    let mut b = Builder::new(
        dialect,
        "INSERT INTO users_search_terms (rowid, terms) SELECT u.rowid, v.column2 FROM (VALUES ",
    );
    for (i, (id, text)) in users.iter().enumerate() {
        b.push(if i == 0 { "(" } else { ", (" });
        b.bind(Bind::Text((*id).to_owned()));
        b.push(", ");
        b.bind(Bind::Text(crate::search::index_terms(text)));
        b.push(")");
    }
    // FTS5 writes out its pending entries whenever a rowid comes lower
    // than the one before.
    b.push(") AS v JOIN users u ON u.id = v.column1 ORDER BY u.rowid");
    Some(b.finish())
}

/// `SELECT` of the rowids and search texts of up to `count` users after
/// rowid `after`, in rowid order: what SQLite's index of search terms is
/// filled from when it is new.
pub fn search_texts_after(after: i64, count: usize) -> Statement {
    let mut b = Builder::new(
        Dialect::Sqlite,
        "SELECT rowid, search_text FROM users WHERE rowid > ",
    );
    b.bind(Bind::Int(after));
    b.push(" ORDER BY rowid");
    push_limit(&mut b, count);
    b.finish()
}

/// `INSERT` of search terms into SQLite's index, by rowid, in the order
/// given (which should be rowid order).
pub fn index_rows(rows: &[(i64, &str)]) -> Statement {
    let mut b = Builder::new(
        Dialect::Sqlite,
        "INSERT INTO users_search_terms (rowid, terms) VALUES ",
    );
    for (i, (rowid, text)) in rows.iter().enumerate() {
        b.push(if i == 0 { "(" } else { ", (" });
        b.bind(Bind::Int(*rowid));
        b.push(", ");
        b.bind(Bind::Text(crate::search::index_terms(text)));
        b.push(")");
    }
    b.finish()
}

/// `SELECT` of the ids and search texts of up to `count` users after id
/// `after`, in id order, whose search keys PostgreSQL's users table does
/// not hold yet (`migrations/postgres/0008`).
pub fn unkeyed_users_after(after: &str, count: usize) -> Statement {
    let mut b = Builder::new(
        Dialect::Postgres,
        "SELECT id, search_text FROM users WHERE search_terms IS NULL AND id > ",
    );
    b.bind(Bind::Text(after.to_owned()));
    b.push(" ORDER BY id");
    push_limit(&mut b, count);
    b.finish()
}

/// `UPDATE` giving users, by id, the search keys of the search text they
/// were read with (`search::index_keys`) on PostgreSQL. A user whose text
/// has changed since, or who was given keys since, is left as it is.
pub fn set_search_keys(users: &[(&str, &str)]) -> Statement {
    let mut b = Builder::new(
        Dialect::Postgres,
        "UPDATE users u SET search_terms = v.keys FROM (VALUES ",
    );
    for (i, (id, text)) in users.iter().enumerate() {
        b.push(if i == 0 { "(" } else { ", (" });
        b.bind(Bind::Text((*id).to_owned()));
        b.push(", ");
        b.bind(Bind::Text((*text).to_owned()));
        b.push(", ");
        b.bind(Bind::Ints(crate::search::index_keys(text)));
        b.push(")");
    }
    b.push(
        ") AS v (id, text, keys) WHERE u.id = v.id AND u.search_text = v.text \
         AND u.search_terms IS NULL",
    );
    b.finish()
}

/// Takes a user out of SQLite's index of search terms, before its search
/// text changes: `None` on PostgreSQL.
pub fn unindex_user(id: &str, dialect: Dialect) -> Option<Statement> {
    if dialect != Dialect::Sqlite {
        return None;
    }
    let mut b = Builder::new(
        dialect,
        "DELETE FROM users_search_terms WHERE rowid = (SELECT rowid FROM users WHERE id = ",
    );
    b.bind(Bind::Text(id.to_owned()));
    b.push(")");
    Some(b.finish())
}

/// `DELETE` of one user.
pub fn delete_user(id: &str, dialect: Dialect) -> Statement {
    let mut b = Builder::new(dialect, "DELETE FROM users WHERE id = ");
    b.bind(Bind::Text(id.to_owned()));
    b.finish()
}

/// `SELECT` of the owner of an email address or phone number.
pub fn identification_owner(id: &str, dialect: Dialect) -> Statement {
    let mut b = Builder::new(dialect, "SELECT user_id FROM email_addresses WHERE id = ");
    b.bind(Bind::Text(id.to_owned()));
    b.push(" UNION ALL SELECT user_id FROM phone_numbers WHERE id = ");
    b.bind(Bind::Text(id.to_owned()));
    b.finish()
}

/// Where an identifier of `channel` is stored: its table and the column
/// uniqueness is decided on.
fn identifier_column(channel: Channel) -> (&'static str, &'static str) {
    match channel {
        Channel::Email => ("email_addresses", "email_normalized"),
        Channel::Phone => ("phone_numbers", "phone_number"),
    }
}

/// How [`identifier_holders`] rows name a channel.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Phone => "phone",
    }
}

/// `SELECT` of the other users (than `user_id`) holding any of the
/// `changes`' identifiers, as rows of (channel, see [`channel_name`],
/// normalized identifier, holder, verification status); in holder order,
/// so concurrent claimers lock in the same order. `None` without changes.
pub fn identifier_holders(
    changes: &[IdentifierChange],
    user_id: &str,
    dialect: Dialect,
) -> Option<Statement> {
    if changes.is_empty() {
        return None;
    }
    let mut b = Builder::new(dialect, "");
    push_identifier_holders(&mut b, changes, user_id);
    Some(b.finish())
}

fn push_identifier_holders(b: &mut Builder, changes: &[IdentifierChange], user_id: &str) {
    let mut first = true;
    for channel in [Channel::Email, Channel::Phone] {
        let values: Vec<Bind> = changes
            .iter()
            .filter(|c| c.channel == channel)
            .map(|c| Bind::Text(c.normalized.clone()))
            .collect();
        if values.is_empty() {
            continue;
        }
        if !first {
            b.push(" UNION ");
        }
        first = false;
        let name = channel_name(channel);
        let (table, column) = identifier_column(channel);
        b.push(&format!(
            "SELECT '{name}', {column}, user_id, verification_status FROM {table} WHERE {column} IN "
        ));
        b.bind_list(values);
        b.push(" AND user_id <> ");
        b.bind(Bind::Text(user_id.to_owned()));
    }
    b.push(" ORDER BY 3");
}

/// `SELECT` of one user by id ([`user_columns`]).
pub fn user_by_id(id: &str, dialect: Dialect) -> Statement {
    fn select(dialect: Dialect) -> String {
        let columns = user_columns(dialect);
        let id = match dialect {
            Dialect::Postgres => "$1",
            Dialect::Sqlite => "?",
        };
        format!("SELECT {columns} FROM users u WHERE u.id = {id}")
    }
    static POSTGRES: LazyLock<String> = LazyLock::new(|| select(Dialect::Postgres));
    static SQLITE: LazyLock<String> = LazyLock::new(|| select(Dialect::Sqlite));
    let sql: &'static str = match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Sqlite => &SQLITE,
    };
    Statement {
        sql: Cow::Borrowed(sql),
        binds: vec![Bind::Text(id.to_owned())],
    }
}

/// `SELECT … FOR UPDATE` of one user row, on PostgreSQL; `None` on SQLite,
/// whose write transactions lock the whole database.
pub fn lock_user(id: &str, dialect: Dialect) -> Option<Statement> {
    if dialect == Dialect::Sqlite {
        return None;
    }
    let mut b = Builder::new(dialect, "SELECT id FROM users WHERE id = ");
    b.bind(Bind::Text(id.to_owned()));
    b.push(" FOR UPDATE");
    Some(b.finish())
}

/// Rows of one user's (or page's) identifiers to delete, insert and update
/// so that the stored ones become `new`.
#[derive(Debug)]
pub struct Diff<'a, T> {
    pub removed: Vec<&'a IdentificationId>,
    pub added: Vec<&'a T>,
    pub changed: Vec<&'a T>,
}

/// Something with an identification id.
pub trait Identified: PartialEq {
    fn identification_id(&self) -> &IdentificationId;
}

impl Identified for EmailAddress {
    fn identification_id(&self) -> &IdentificationId {
        &self.id
    }
}

impl Identified for PhoneNumber {
    fn identification_id(&self) -> &IdentificationId {
        &self.id
    }
}

/// Compares stored identifiers with the mutated ones by id.
pub fn diff<'a, T: Identified>(old: &'a [T], new: &'a [T]) -> Diff<'a, T> {
    let find =
        |list: &'a [T], id: &IdentificationId| list.iter().find(|x| x.identification_id() == id);
    Diff {
        removed: old
            .iter()
            .filter(|o| find(new, o.identification_id()).is_none())
            .map(Identified::identification_id)
            .collect(),
        added: new
            .iter()
            .filter(|n| find(old, n.identification_id()).is_none())
            .collect(),
        changed: new
            .iter()
            .filter(|n| find(old, n.identification_id()).is_some_and(|o| o != *n))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Cursor;
    use roster_domain::query::OrderBy;

    #[test]
    fn placeholders_follow_the_dialect() {
        let filter = UserFilter {
            usernames: vec!["a".into(), "b".into()],
            banned: Some(false),
            ..UserFilter::default()
        };
        let pg = count_users(&filter, &[], Dialect::Postgres);
        assert!(
            pg.sql.contains("u.username_normalized IN ($1, $2)")
                && pg.sql.contains("u.banned = $3"),
            "{}",
            pg.sql
        );
        let lite = count_users(&filter, &[], Dialect::Sqlite);
        assert!(lite.sql.contains("IN (?, ?)"));
        assert_eq!(lite.binds.len(), 3);
    }

    fn new_user_tables() -> Vec<TableRows<'static>> {
        vec![
            TableRows {
                table: "users",
                columns: &["id", "created_at"],
                rows: vec![vec![Bind::Text("user_a".into()), Bind::Int(1)]],
            },
            TableRows {
                table: "email_addresses",
                columns: &["id", "user_id"],
                rows: vec![
                    vec![Bind::Text("idn_1".into()), Bind::Text("user_a".into())],
                    vec![Bind::Text("idn_2".into()), Bind::Text("user_a".into())],
                ],
            },
            TableRows {
                table: "phone_numbers",
                columns: &["id", "user_id"],
                rows: Vec::new(),
            },
        ]
    }

    #[test]
    fn a_new_user_and_its_holders_are_one_call() {
        let changes = [IdentifierChange {
            channel: Channel::Email,
            normalized: "a@example.com".into(),
            verified: true,
        }];
        let lite = insert_then_holders(new_user_tables(), &changes, "user_a", Dialect::Sqlite);
        assert_eq!(
            lite.sql,
            "INSERT INTO users (id, created_at) VALUES (?, ?); \
             INSERT INTO email_addresses (id, user_id) VALUES (?, ?), (?, ?); \
             SELECT 'email', email_normalized, user_id, verification_status FROM email_addresses \
             WHERE email_normalized IN (?) AND user_id <> ? ORDER BY 3"
        );
        assert_eq!(lite.binds.len(), 8);
        let pg = insert_then_holders(new_user_tables(), &changes, "user_a", Dialect::Postgres);
        assert!(
            pg.sql.starts_with(
                "WITH w0 AS (INSERT INTO users (id, created_at) VALUES ($1, $2)), \
                 w1 AS (INSERT INTO email_addresses (id, user_id) VALUES ($3, $4), ($5, $6)) SELECT"
            ),
            "{}",
            pg.sql
        );
        // Without identifiers there is nothing to ask: the insert alone.
        let alone = insert_then_holders(
            new_user_tables()[..1].to_vec(),
            &[],
            "user_a",
            Dialect::Postgres,
        );
        assert_eq!(
            alone.sql.trim(),
            "INSERT INTO users (id, created_at) VALUES ($1, $2)"
        );
    }

    #[test]
    fn a_new_user_goes_in_unless_held_in_one_statement() {
        let changes = [IdentifierChange {
            channel: Channel::Email,
            normalized: "a@example.com".into(),
            verified: false,
        }];
        assert!(
            insert_unless_held(new_user_tables(), &changes, "user_a", Dialect::Sqlite).is_none()
        );
        let pg =
            insert_unless_held(new_user_tables(), &changes, "user_a", Dialect::Postgres).unwrap();
        assert_eq!(pg.binds.len(), 8);
        assert!(
            pg.sql.starts_with("WITH h AS (SELECT 'email'"),
            "{}",
            pg.sql
        );
        assert_eq!(
            pg.sql.matches("WHERE NOT EXISTS (SELECT 1 FROM h)").count(),
            2,
            "every table with rows waits on the holders: {}",
            pg.sql
        );
        assert!(pg.sql.ends_with(" SELECT * FROM h"));
    }

    #[test]
    fn keyset_direction_matches_order() {
        let q = ListQuery {
            filter: UserFilter::default(),
            order: OrderBy {
                field: OrderField::Username,
                descending: true,
            },
            after: Some(Cursor {
                value: SortValue::Text("m".into()),
                id: "user_x".into(),
            }),
            limit: 3,
        };
        let s = list_users(&q, &[], Dialect::Postgres);
        assert!(
            s.sql
                .contains("(COALESCE(u.username_normalized, ''), u.id) < ($1, $2)"),
            "{}",
            s.sql
        );
        assert!(
            s.sql
                .ends_with("ORDER BY COALESCE(u.username_normalized, '') DESC, u.id DESC LIMIT $3")
        );
        // SQLite would compile a bound LIMIT again on every call.
        let lite = list_users(&q, &[], Dialect::Sqlite);
        assert!(lite.sql.ends_with(" u.id DESC LIMIT 3"), "{}", lite.sql);
        assert_eq!(lite.binds.len(), 2);
    }

    #[test]
    fn queries_are_narrowed_by_the_trigrams_given() {
        let filter = UserFilter {
            query: Some("ab\"cd".into()),
            ..UserFilter::default()
        };
        let picked = ["ab\"".to_owned(), "\"cd".to_owned()];
        let lite = count_users(&filter, &picked, Dialect::Sqlite);
        assert!(
            lite.sql.contains("users_search_terms MATCH ?"),
            "{}",
            lite.sql
        );
        assert_eq!(
            lite.binds[0],
            Bind::Text(crate::search::match_terms("ab\"cd", &picked).join(" AND "))
        );
        assert!(
            lite.sql.ends_with(" AND instr(u.search_text, ?) > 0"),
            "{}",
            lite.sql
        );
        assert_eq!(lite.binds[1], Bind::Text("ab\"cd".into()));
        let unindexed = count_users(&filter, &[], Dialect::Sqlite);
        assert!(!unindexed.sql.contains("MATCH"));
        assert!(!unindexed.sql.contains("LIKE"), "{}", unindexed.sql);
        let pg = count_users(&filter, &picked, Dialect::Postgres);
        assert!(
            pg.sql.ends_with(
                " AND (u.search_terms @> $1 OR u.search_terms IS NULL) AND u.search_text LIKE $2"
            ),
            "{}",
            pg.sql
        );
        assert_eq!(
            pg.binds[0],
            Bind::Ints(crate::search::match_keys("ab\"cd", &picked))
        );
        assert_eq!(pg.binds[1], Bind::Text("%ab\"cd%".into()));
        let pg = count_users(&filter, &[], Dialect::Postgres);
        assert!(pg.sql.ends_with(" u.search_text LIKE $1"), "{}", pg.sql);
    }

    #[test]
    fn new_users_enter_the_full_text_index_on_sqlite_only() {
        assert!(index_new_users(&[("user_a", "a")], Dialect::Postgres).is_none());
        assert!(index_new_users(&[], Dialect::Sqlite).is_none());
        let lite =
            index_new_users(&[("user_a", "abc"), ("user_b", "xyz")], Dialect::Sqlite).unwrap();
        assert_eq!(
            lite.sql,
            "INSERT INTO users_search_terms (rowid, terms) SELECT u.rowid, v.column2 \
             FROM (VALUES (?, ?), (?, ?)) AS v JOIN users u ON u.id = v.column1 ORDER BY u.rowid"
        );
        assert_eq!(
            lite.binds,
            [
                Bind::Text("user_a".into()),
                Bind::Text(crate::search::index_terms("abc")),
                Bind::Text("user_b".into()),
                Bind::Text(crate::search::index_terms("xyz")),
            ]
        );
        assert!(unindex_user("user_a", Dialect::Postgres).is_none());
        let out = unindex_user("user_a", Dialect::Sqlite).unwrap();
        assert!(
            out.sql.starts_with("DELETE FROM users_search_terms"),
            "{}",
            out.sql
        );
    }

    #[test]
    fn like_wildcards_are_literal() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }
}
