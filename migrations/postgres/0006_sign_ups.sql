-- Sign-ups in progress, one JSON document each (read and written whole).
CREATE TABLE sign_ups (
    id        TEXT   NOT NULL PRIMARY KEY,
    expire_at BIGINT NOT NULL,
    data      TEXT   NOT NULL
);

-- Codes sent to an identifier (normalized) outside any user, in a fixed
-- window: bounds what sign-ups can send to one address or number.
CREATE TABLE code_send_windows (
    target       TEXT   NOT NULL PRIMARY KEY,
    window_start BIGINT NOT NULL,
    sends        BIGINT NOT NULL
);

-- Failed sign-in attempts on identifiers that name no user, counted like
-- a user's so that a lockout does not tell which identifiers exist.
CREATE TABLE shadow_lockouts (
    target          TEXT   NOT NULL PRIMARY KEY,
    failed_attempts BIGINT NOT NULL,
    locked_until    BIGINT
);
