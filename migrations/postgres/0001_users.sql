-- Users with their email addresses and phone numbers.
--
-- Times are Unix milliseconds. Absent names are '' so they sort without
-- NULL handling; `*_normalized` and `primary_email_sort` are derived
-- columns the store keeps for case-insensitive uniqueness and ordering.
-- Text that is sorted uses the "C" collation, so PostgreSQL orders (and
-- compares page cursors) bytewise, exactly as SQLite does.

CREATE TABLE users (
    id                       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    external_id              TEXT,
    first_name               TEXT COLLATE "C" NOT NULL DEFAULT '',
    last_name                TEXT COLLATE "C" NOT NULL DEFAULT '',
    username                 TEXT,
    username_normalized      TEXT COLLATE "C",
    locale                   TEXT,
    primary_email_address_id TEXT,
    primary_phone_number_id  TEXT,
    primary_email_sort       TEXT COLLATE "C" NOT NULL DEFAULT '',
    password_hash            TEXT,
    public_metadata          JSONB   NOT NULL DEFAULT '{}',
    private_metadata         JSONB   NOT NULL DEFAULT '{}',
    unsafe_metadata          JSONB   NOT NULL DEFAULT '{}',
    banned                   BOOLEAN NOT NULL DEFAULT FALSE,
    locked                   BOOLEAN NOT NULL DEFAULT FALSE,
    has_image                BOOLEAN NOT NULL DEFAULT FALSE,
    created_at               BIGINT  NOT NULL,
    updated_at               BIGINT  NOT NULL,
    last_sign_in_at          BIGINT,
    -- What the `query` filter searches (see `User::search_text`).
    search_text              TEXT    NOT NULL DEFAULT '',
    CONSTRAINT users_external_id_unique UNIQUE (external_id),
    CONSTRAINT users_username_unique UNIQUE (username_normalized)
);

-- One index per ordering, each ending in id for keyset pagination.
CREATE INDEX users_created_at ON users (created_at, id);
CREATE INDEX users_updated_at ON users (updated_at, id);
CREATE INDEX users_last_sign_in_at ON users ((COALESCE(last_sign_in_at, 0)), id);
CREATE INDEX users_primary_email_sort ON users (primary_email_sort, id);
CREATE INDEX users_username_sort ON users ((COALESCE(username_normalized, '')), id);
CREATE INDEX users_first_name ON users (first_name, id);
CREATE INDEX users_last_name ON users (last_name, id);
CREATE INDEX users_banned ON users (banned, created_at);
-- Substring search: a trigram index answers `search_text LIKE '%…%'`.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_search ON users USING gin (search_text gin_trgm_ops);

CREATE TABLE email_addresses (
    id                     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id                TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email_address          TEXT    NOT NULL,
    email_normalized       TEXT COLLATE "C" NOT NULL,
    verification_status    TEXT    NOT NULL,
    verification_strategy  TEXT,
    verification_attempts  BIGINT  NOT NULL DEFAULT 0,
    verification_expire_at BIGINT,
    created_at             BIGINT  NOT NULL,
    updated_at             BIGINT  NOT NULL,
    CONSTRAINT email_addresses_unique UNIQUE (email_normalized)
);

CREATE INDEX email_addresses_user_id ON email_addresses (user_id);

CREATE TABLE phone_numbers (
    id                         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id                    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone_number               TEXT COLLATE "C" NOT NULL,
    verification_status        TEXT    NOT NULL,
    verification_strategy      TEXT,
    verification_attempts      BIGINT  NOT NULL DEFAULT 0,
    verification_expire_at     BIGINT,
    reserved_for_second_factor BOOLEAN NOT NULL DEFAULT FALSE,
    default_second_factor      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at                 BIGINT  NOT NULL,
    updated_at                 BIGINT  NOT NULL,
    CONSTRAINT phone_numbers_unique UNIQUE (phone_number)
);

CREATE INDEX phone_numbers_user_id ON phone_numbers (user_id);
