-- Users with their email addresses and phone numbers.
--
-- Times are Unix milliseconds. Absent names are '' so they sort without
-- NULL handling; `*_normalized` and `primary_email_sort` are derived
-- columns the store keeps for case-insensitive uniqueness and ordering.

CREATE TABLE users (
    id                       TEXT    NOT NULL PRIMARY KEY,
    external_id              TEXT,
    first_name               TEXT    NOT NULL DEFAULT '',
    last_name                TEXT    NOT NULL DEFAULT '',
    username                 TEXT,
    username_normalized      TEXT,
    locale                   TEXT,
    primary_email_address_id TEXT,
    primary_phone_number_id  TEXT,
    primary_email_sort       TEXT    NOT NULL DEFAULT '',
    password_hash            TEXT,
    public_metadata          TEXT    NOT NULL DEFAULT '{}',
    private_metadata         TEXT    NOT NULL DEFAULT '{}',
    unsafe_metadata          TEXT    NOT NULL DEFAULT '{}',
    banned                   INTEGER NOT NULL DEFAULT 0,
    locked                   INTEGER NOT NULL DEFAULT 0,
    has_image                INTEGER NOT NULL DEFAULT 0,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    last_sign_in_at          INTEGER,
    -- What the `query` filter searches (see `User::search_text`).
    search_text              TEXT    NOT NULL DEFAULT ''
);

CREATE UNIQUE INDEX users_external_id_unique ON users (external_id);
CREATE UNIQUE INDEX users_username_unique ON users (username_normalized);
-- One index per ordering, each ending in id for keyset pagination.
CREATE INDEX users_created_at ON users (created_at, id);
CREATE INDEX users_updated_at ON users (updated_at, id);
CREATE INDEX users_last_sign_in_at ON users (COALESCE(last_sign_in_at, 0), id);
CREATE INDEX users_primary_email_sort ON users (primary_email_sort, id);
CREATE INDEX users_username_sort ON users (COALESCE(username_normalized, ''), id);
CREATE INDEX users_first_name ON users (first_name, id);
CREATE INDEX users_last_name ON users (last_name, id);
CREATE INDEX users_banned ON users (banned, created_at);

-- Substring search: an FTS5 trigram index over search_text, kept in step
-- with the users table by triggers.
CREATE VIRTUAL TABLE users_search USING fts5(
    search_text,
    content = 'users',
    content_rowid = 'rowid',
    tokenize = 'trigram'
);
CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search (rowid, search_text) VALUES (new.rowid, new.search_text);
END;
CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    INSERT INTO users_search (users_search, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
END;
CREATE TRIGGER users_search_update AFTER UPDATE OF search_text ON users BEGIN
    INSERT INTO users_search (users_search, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
    INSERT INTO users_search (rowid, search_text) VALUES (new.rowid, new.search_text);
END;

CREATE TABLE email_addresses (
    id                     TEXT    NOT NULL PRIMARY KEY,
    user_id                TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email_address          TEXT    NOT NULL,
    email_normalized       TEXT    NOT NULL,
    verification_status    TEXT    NOT NULL,
    verification_strategy  TEXT,
    verification_attempts  INTEGER NOT NULL DEFAULT 0,
    verification_expire_at INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

CREATE UNIQUE INDEX email_addresses_unique ON email_addresses (email_normalized);
CREATE INDEX email_addresses_user_id ON email_addresses (user_id);

CREATE TABLE phone_numbers (
    id                         TEXT    NOT NULL PRIMARY KEY,
    user_id                    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone_number               TEXT    NOT NULL,
    verification_status        TEXT    NOT NULL,
    verification_strategy      TEXT,
    verification_attempts      INTEGER NOT NULL DEFAULT 0,
    verification_expire_at     INTEGER,
    reserved_for_second_factor INTEGER NOT NULL DEFAULT 0,
    default_second_factor      INTEGER NOT NULL DEFAULT 0,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL
);

CREATE UNIQUE INDEX phone_numbers_unique ON phone_numbers (phone_number);
CREATE INDEX phone_numbers_user_id ON phone_numbers (user_id);
