-- Sign-ups in progress, one JSON document each (read and written whole).
CREATE TABLE sign_ups (
    id        TEXT   NOT NULL PRIMARY KEY,
    expire_at INTEGER NOT NULL,
    data      TEXT   NOT NULL
);
