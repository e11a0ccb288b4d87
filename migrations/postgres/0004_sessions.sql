-- Sessions of signed-in users, sign-ins in progress, and the keys session
-- tokens are signed with.

CREATE TABLE sessions (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    last_active_at  BIGINT  NOT NULL,
    expire_at       BIGINT  NOT NULL,
    ip_address      TEXT,
    user_agent      TEXT,
    browser_name    TEXT,
    browser_version TEXT,
    device_type     TEXT,
    is_mobile       BOOLEAN NOT NULL DEFAULT FALSE,
    -- SHA-256 of the session secret, hex; never the secret.
    secret_hash     TEXT    NOT NULL
);

-- A user's sessions, newest first (keyset pages).
CREATE INDEX sessions_user ON sessions (user_id, created_at DESC, id DESC);
-- A session found by its secret (when a client refreshes its token).
CREATE UNIQUE INDEX sessions_secret ON sessions (secret_hash);

CREATE TABLE sign_ins (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    identifier  TEXT   NOT NULL,
    -- NULL when the identifier names no user.
    user_id     TEXT COLLATE "C" REFERENCES users (id) ON DELETE CASCADE,
    status      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expire_at   BIGINT NOT NULL,
    session_id  TEXT COLLATE "C",
    -- A code first factor: the identifier the code is bound to, and its
    -- verification state (JSON; the code only as a keyed hash).
    code_target TEXT,
    code        TEXT
);

CREATE TABLE signing_keys (
    kid             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    algorithm       TEXT   NOT NULL,
    -- PKCS#8 PEM. Whoever reads this table can mint session tokens:
    -- restrict access to the database accordingly.
    private_key_pem TEXT   NOT NULL,
    created_at      BIGINT NOT NULL
);
